"""A local print provider: a real SFTP server (asyncssh) that takes letter batches, and a reader for them.

``PrintProviderSandbox(root)`` listens on ``127.0.0.1`` (port 0 unless told otherwise) with a freshly
generated ed25519 host key and an SFTP subsystem rooted at ``root/sftp`` (nothing else: no shell, no exec, no
SCP). Log in as ``username`` with ``password`` (generated when neither a password nor authorized keys are
given) or with one of ``authorized_keys``. ``root/known_hosts`` holds the host key in OpenSSH format for the
client's host-key check, so ``sandbox.delivery()`` is an :class:`channels.print_provider.SftpDelivery` ready
to use — the very class production uses, only the host, port and credentials differ.

``read_batches(folder)`` (also for a drop folder) parses every delivered batch: ``manifest.json`` and
``manifest.csv`` must agree with each other and with the PDFs (file names, sha256); half-written batches
(``.incoming-*``) are not batches and are skipped.

Faults, for the error paths (``sandbox.fault``): ``"disconnect_on_upload"`` drops the connection on the first
write (nothing is published: a transient error for the client, a ``.incoming-*`` folder left on the server);
``"disconnect_on_rename"`` publishes the batch and drops the connection before answering the rename (the
client cannot know: an uncertain delivery).

Returned mail: ``process_returns()`` decides once per delivered letter whether it "comes back" — a
deterministic share ``return_share`` of the references, chosen by hash with ``seed``, or any letter
that ``return_if`` (a predicate on the :class:`DeliveredLetter`, e.g. "to a street nobody lives in") picks
— and calls ``on_return`` (sync or async) with a :class:`ReturnedLetter` for each one that does. Call it
periodically, as Posten's returns trickle in.

Run it with ``async with serve_print_sandbox(tmp_path) as sandbox:`` or ``await sandbox.start()`` /
``await sandbox.stop()``.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import inspect
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import asyncssh

from channels.print_provider import (
    CSV_FIELDS,
    MANIFEST_CSV,
    MANIFEST_FORMAT,
    MANIFEST_JSON,
    SftpDelivery,
)

__all__ = [
    "DeliveredBatch",
    "DeliveredLetter",
    "PrintProviderSandbox",
    "ReturnPredicate",
    "ReturnedLetter",
    "read_batch",
    "read_batches",
    "serve_print_sandbox",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ reading batches


@dataclass(frozen=True)
class DeliveredLetter:
    reference: str
    contact_id: str
    attempt_id: str
    recipient_name: str
    address_lines: tuple[str, ...]
    postal_code: str
    city: str
    country: str
    pages: int
    sha256: str
    file: str
    path: Path


@dataclass(frozen=True)
class DeliveredBatch:
    batch_id: str
    path: Path
    created_at: datetime
    letters: tuple[DeliveredLetter, ...]


class BatchError(ValueError):
    """A delivered batch whose manifests and files do not agree."""


def _json_rows(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    manifest = json.loads((folder / MANIFEST_JSON).read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise BatchError(f"{folder}: unknown manifest format {manifest.get('format')!r}")
    rows = manifest["letters"]
    if manifest.get("count") != len(rows):
        raise BatchError(f"{folder}: count {manifest.get('count')} but {len(rows)} letters")
    return manifest, rows


def _csv_rows(folder: Path) -> list[dict[str, str]]:
    text = (folder / MANIFEST_CSV).read_bytes().decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != CSV_FIELDS:
        raise BatchError(f"{folder}: unexpected CSV header {reader.fieldnames}")
    return list(reader)


def read_batch(folder: Path) -> DeliveredBatch:
    """Parse and check one delivered batch folder."""
    manifest, rows = _json_rows(folder)
    csv_rows = _csv_rows(folder)
    if manifest["batch_id"] != folder.name:
        raise BatchError(f"{folder}: manifest names batch {manifest['batch_id']!r}")
    if len(csv_rows) != len(rows):
        raise BatchError(f"{folder}: {len(rows)} rows in {MANIFEST_JSON}, {len(csv_rows)} in {MANIFEST_CSV}")
    letters: list[DeliveredLetter] = []
    for row, flat in zip(rows, csv_rows, strict=True):
        lines = tuple(flat[f"address_line_{n}"] for n in range(1, 5) if flat[f"address_line_{n}"])
        as_csv = {key: str(value) for key, value in row.items() if key != "address_lines"}
        if tuple(row["address_lines"]) != lines or any(flat[key] != value for key, value in as_csv.items()):
            raise BatchError(f"{folder}: {MANIFEST_JSON} and {MANIFEST_CSV} disagree on {row['reference']}")
        path = folder / row["file"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != row["sha256"]:
            raise BatchError(
                f"{folder}: {row['file']} has sha256 {digest}, the manifest says {row['sha256']}"
            )
        letters.append(
            DeliveredLetter(
                reference=row["reference"],
                contact_id=row["contact_id"],
                attempt_id=row["attempt_id"],
                recipient_name=row["recipient_name"],
                address_lines=lines,
                postal_code=row["postal_code"],
                city=row["city"],
                country=row["country"],
                pages=int(row["pages"]),
                sha256=row["sha256"],
                file=row["file"],
                path=path,
            )
        )
    expected = {letter.file for letter in letters} | {MANIFEST_JSON, MANIFEST_CSV}
    present = {path.name for path in folder.iterdir()}
    if present != expected:
        raise BatchError(f"{folder}: files {sorted(present ^ expected)} are not in the manifest")
    return DeliveredBatch(
        batch_id=folder.name,
        path=folder,
        created_at=datetime.fromisoformat(manifest["created_at"]),
        letters=tuple(letters),
    )


def read_batches(folder: Path) -> list[DeliveredBatch]:
    """Every complete batch under ``folder`` (a drop folder or the sandbox's SFTP root), oldest first."""
    if not folder.is_dir():
        return []
    return [
        read_batch(path)
        for path in sorted(folder.iterdir())
        if path.is_dir() and not path.name.startswith(".")  # ".incoming-*": not (yet) a batch
    ]


# ------------------------------------------------------------------------------------------ the SFTP server


@dataclass(frozen=True)
class ReturnedLetter:
    """A letter the sandbox "returns" (as Posten would: undeliverable, back to the sender)."""

    reference: str
    contact_id: str
    attempt_id: str
    batch_id: str
    reason: str


ReturnHook = Callable[[ReturnedLetter], Awaitable[None] | None]
ReturnPredicate = Callable[[DeliveredLetter], bool]
Fault = Literal["none", "disconnect_on_upload", "disconnect_on_rename"]


class _SandboxAuth(asyncssh.SSHServer):
    def __init__(self, sandbox: PrintProviderSandbox) -> None:
        self._sandbox = sandbox

    def begin_auth(self, username: str) -> bool:
        return True  # always authenticate, whoever asks

    def password_auth_supported(self) -> bool:
        return self._sandbox.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        expected = self._sandbox.password
        if expected is None:
            return False
        same_password = hmac.compare_digest(password.encode(), expected.encode())
        return same_password and username == self._sandbox.username

    def public_key_auth_supported(self) -> bool:
        return bool(self._sandbox.authorized_keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        allowed = {authorized.public_data for authorized in self._sandbox.authorized_keys}
        return username == self._sandbox.username and key.public_data in allowed


class _SandboxSftp(asyncssh.SFTPServer):
    """The standard asyncssh SFTP server rooted at the drop folder, with the sandbox's faults."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], sandbox: PrintProviderSandbox) -> None:
        super().__init__(chan, chroot=str(sandbox.drop_dir).encode())
        self._sandbox = sandbox

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if self._sandbox.fault == "disconnect_on_upload":
            self.connection.abort()
        written = super().write(file_obj, offset, data)
        assert isinstance(written, int)  # the base class writes synchronously
        return written

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        super().rename(oldpath, newpath)  # synchronous in the base class: os.rename
        if self._sandbox.fault == "disconnect_on_rename":
            self.connection.abort()  # done, but the client never hears so


class PrintProviderSandbox:
    """The print provider's SFTP server, on loopback. See the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        username: str = "print",
        password: str | None = None,
        authorized_keys: Sequence[asyncssh.SSHKey] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        return_share: float = 0.0,
        return_reason: str = "returned_unknown_addressee",
        seed: int = 0,
        on_return: ReturnHook | None = None,
        return_if: ReturnPredicate | None = None,
        fault: Fault = "none",
    ) -> None:
        if not 0.0 <= return_share <= 1.0:
            raise ValueError("return_share is a share: 0.0 to 1.0")
        self.root = Path(root)
        self.drop_dir = self.root / "sftp"
        self.known_hosts_path = self.root / "known_hosts"
        self.username = username
        self.authorized_keys = tuple(key.convert_to_public() for key in authorized_keys)
        if password is None and not authorized_keys:
            password = secrets.token_urlsafe(16)
        self.password = password
        self.host = host
        self.return_share = return_share
        self.return_reason = return_reason
        self.seed = seed
        self.on_return = on_return
        self.return_if = return_if
        self.fault: Fault = fault
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._requested_port = port
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._judged: set[str] = set()
        self.returned: list[ReturnedLetter] = []

    def __repr__(self) -> str:
        return f"PrintProviderSandbox(root={str(self.root)!r}, port={self.port if self._acceptor else None})"

    @property
    def port(self) -> int:
        if self._acceptor is None:
            raise RuntimeError("the print provider sandbox is not running")
        return self._acceptor.get_port()

    def known_hosts_line(self) -> str:
        public = self.host_key.export_public_key("openssh").decode().split()
        return f"[{self.host}]:{self.port} {public[0]} {public[1]}\n"

    def _sftp_server(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return _SandboxSftp(chan, self)

    async def start(self) -> PrintProviderSandbox:
        if self._acceptor is not None:
            return self
        self.drop_dir.mkdir(parents=True, exist_ok=True)
        self._acceptor = await asyncssh.listen(
            self.host,
            self._requested_port,
            server_factory=lambda: _SandboxAuth(self),
            server_host_keys=[self.host_key],
            sftp_factory=self._sftp_server,
            allow_scp=False,
            config=[],
            login_timeout=30,
        )
        self.known_hosts_path.write_text(self.known_hosts_line(), encoding="utf-8")
        log.info("print provider sandbox on sftp://%s:%d (%s)", self.host, self.port, self.drop_dir)
        return self

    async def stop(self) -> None:
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
            await acceptor.wait_closed()

    async def __aenter__(self) -> PrintProviderSandbox:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def delivery(self, **overrides: Any) -> SftpDelivery:
        """An ``SftpDelivery`` to this sandbox (password login unless ``overrides`` say otherwise)."""
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "known_hosts": self.known_hosts_path,
            "password": self.password,
            "connect_timeout_s": 10.0,
        }
        options.update(overrides)
        return SftpDelivery(**options)

    def batches(self) -> list[DeliveredBatch]:
        """Every batch delivered so far, oldest first."""
        return read_batches(self.drop_dir)

    def _comes_back(self, letter: DeliveredLetter) -> bool:
        if self.return_if is not None and self.return_if(letter):
            return True
        digest = hashlib.sha256(f"{self.seed}:{letter.reference}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.return_share

    async def process_returns(self) -> list[ReturnedLetter]:
        """Judge every letter delivered since the last call; the ones that come back go to ``on_return``."""
        came_back: list[ReturnedLetter] = []
        for batch in self.batches():
            for letter in batch.letters:
                if letter.reference in self._judged:
                    continue
                self._judged.add(letter.reference)
                if not self._comes_back(letter):
                    continue
                returned = ReturnedLetter(
                    reference=letter.reference,
                    contact_id=letter.contact_id,
                    attempt_id=letter.attempt_id,
                    batch_id=batch.batch_id,
                    reason=self.return_reason,
                )
                came_back.append(returned)
                self.returned.append(returned)
                if self.on_return is not None:
                    outcome = self.on_return(returned)
                    if inspect.isawaitable(outcome):
                        await outcome
        return came_back


@asynccontextmanager
async def serve_print_sandbox(root: Path, **options: Any) -> AsyncIterator[PrintProviderSandbox]:
    """Run a :class:`PrintProviderSandbox` for the duration of the block."""
    sandbox = PrintProviderSandbox(root, **options)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()
