"""Batches of letters for the print provider, delivered to a drop folder or an SFTP server.

A batch is one folder named by its batch id, holding the letters as ``<reference>.pdf`` (``reference`` is
``<contact id>.<attempt id>``) and two manifests with one row per letter, in the same order:

- ``manifest.json``: ``{"format": "orchestrator-print-batch/1", "batch_id", "created_at", "count",
  "letters": [{"reference", "contact_id", "attempt_id", "recipient_name", "address_lines": [...],
  "postal_code", "city", "country", "pages", "sha256", "file"}]}``
- ``manifest.csv``: UTF-8, comma-separated, CRLF, a header row, the same fields with the address lines as
  ``address_line_1`` … ``address_line_4`` (empty when absent).

Delivery is atomic: the batch is written under ``.incoming-<batch id>`` next to its final place and renamed to
``<batch id>`` once complete, on the local file system (:class:`FolderDelivery`) or on the SFTP server
(:class:`SftpDelivery`, where the rename is the server's). The provider picks up folders whose names do not
start with a dot and never sees half a batch. A write that fails before the rename leaves at most a dot-folder
behind (removed when possible) and nothing the provider would print.

Batching (:class:`PrintBatcher`), kept simple on purpose:

- letters join the *open* batch; it is flushed when it holds ``max_letters``, ``max_wait_s`` after its first
  letter, on ``flush()`` and on ``close()``. One flush delivers exactly one batch, and a new batch opens for
  the letters that arrive meanwhile;
- ``submit`` returns the batch id only once the whole batch is delivered, so a letter is reported sent only
  when it is durably with the provider; when delivery fails every letter of the batch gets the same error
  (transient: the letters are tried again in a later batch; uncertain: the rename may have happened, so the
  contacts wait for reconciliation instead of being printed twice);
- inside a batch a letter is keyed by its reference: the same attempt submitted twice (a retry racing the
  first try) is one file and one manifest row; a letter whose sender gave up before the flush leaves the
  batch;
- batch ids are time-ordered and unique across processes: ``YYYYMMDDTHHMMSSffffffZ-<8 hex>`` (UTC, strictly
  increasing within a process). Every worker process batches on its own, so N processes flush up to N batches
  per interval.

Errors follow ``channels.base``: the provider unreachable or the connection lost before the rename →
``TransientChannelError``; authentication, an unknown host key, a missing key file or remote folder →
``ChannelConfigurationError``; the connection lost during the rename → ``UncertainDeliveryError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, Protocol

import asyncssh

from channels.base import (
    ChannelConfigurationError,
    ChannelError,
    PermanentChannelError,
    PostalAddress,
    TransientChannelError,
    UncertainDeliveryError,
)

__all__ = [
    "CSV_FIELDS",
    "INCOMING_PREFIX",
    "MANIFEST_CSV",
    "MANIFEST_FORMAT",
    "MANIFEST_JSON",
    "BatchIds",
    "FolderDelivery",
    "PrintBatcher",
    "PrintDelivery",
    "PrintLetter",
    "SftpDelivery",
    "build_batch_files",
    "manifest_rows",
    "new_batch_id",
]

log = logging.getLogger(__name__)

MANIFEST_FORMAT: Final = "orchestrator-print-batch/1"
MANIFEST_JSON: Final = "manifest.json"
MANIFEST_CSV: Final = "manifest.csv"
INCOMING_PREFIX: Final = ".incoming-"
CSV_ADDRESS_LINES: Final = 4
CSV_FIELDS: Final = (
    "reference",
    "contact_id",
    "attempt_id",
    "recipient_name",
    *(f"address_line_{n}" for n in range(1, CSV_ADDRESS_LINES + 1)),
    "postal_code",
    "city",
    "country",
    "pages",
    "sha256",
    "file",
)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,159}")
_DIR_MODE = 0o750  # the provider's pickup job may read through a shared group; nobody else
_FILE_MODE = 0o640


# --------------------------------------------------------------------------------------------- letters


@dataclass(frozen=True)
class PrintLetter:
    """One rendered letter bound for the print provider."""

    reference: str  # "<contact id>.<attempt id>": the file name and what a returned letter is matched by
    contact_id: str
    attempt_id: str
    recipient_name: str
    address: PostalAddress
    pdf: bytes = field(repr=False)
    pages: int
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        if not _SAFE_NAME.fullmatch(self.reference):
            raise ValueError(f"invalid letter reference {self.reference[:80]!r}")
        object.__setattr__(self, "sha256", hashlib.sha256(self.pdf).hexdigest())

    @property
    def file_name(self) -> str:
        return f"{self.reference}.pdf"


def manifest_rows(letters: Sequence[PrintLetter]) -> list[dict[str, object]]:
    """The manifest's rows (JSON shape: ``address_lines`` is a list)."""
    return [
        {
            "reference": letter.reference,
            "contact_id": letter.contact_id,
            "attempt_id": letter.attempt_id,
            "recipient_name": letter.recipient_name,
            "address_lines": list(letter.address.lines),
            "postal_code": letter.address.postal_code,
            "city": letter.address.city,
            "country": letter.address.country or "NO",
            "pages": letter.pages,
            "sha256": letter.sha256,
            "file": letter.file_name,
        }
        for letter in letters
    ]


def _csv(rows: list[dict[str, object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        flat = {key: value for key, value in row.items() if key != "address_lines"}
        lines = row["address_lines"]
        assert isinstance(lines, list)
        if len(lines) > CSV_ADDRESS_LINES:
            raise ValueError(f"{row['reference']}: {len(lines)} address lines, at most {CSV_ADDRESS_LINES}")
        for n in range(CSV_ADDRESS_LINES):
            flat[f"address_line_{n + 1}"] = lines[n] if n < len(lines) else ""
        writer.writerow(flat)
    return buffer.getvalue().encode("utf-8")


def build_batch_files(
    batch_id: str, letters: Sequence[PrintLetter], *, created_at: datetime
) -> dict[str, bytes]:
    """Every file of a batch by name: the PDFs, then ``manifest.json`` and ``manifest.csv``."""
    rows = manifest_rows(letters)
    manifest = {
        "format": MANIFEST_FORMAT,
        "batch_id": batch_id,
        "created_at": created_at.astimezone(UTC).isoformat(),
        "count": len(rows),
        "letters": rows,
    }
    files = {letter.file_name: letter.pdf for letter in letters}
    if len(files) != len(letters):
        raise ValueError("two letters of one batch share a reference")
    files[MANIFEST_JSON] = (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    files[MANIFEST_CSV] = _csv(rows)
    return files


# ------------------------------------------------------------------------------------------- batch ids


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BatchIds:
    """Batch ids ``YYYYMMDDTHHMMSSffffffZ-<8 hex>``: they sort by time (UTC, to the microsecond), the random
    suffix keeps them unique across processes, and one generator never repeats or goes back in time, even
    when asked twice in a microsecond or when the clock steps back."""

    def __init__(self) -> None:
        self._last: datetime | None = None

    def __call__(self, now: datetime | None = None) -> str:
        moment = (now or _utcnow()).astimezone(UTC)
        if self._last is not None and moment <= self._last:
            moment = self._last + timedelta(microseconds=1)
        self._last = moment
        return f"{moment:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}"


new_batch_id: Final = BatchIds()  # the process's generator; PrintBatcher uses it unless given another


def _check_batch_id(batch_id: str) -> None:
    if not _SAFE_NAME.fullmatch(batch_id):
        raise ValueError(f"invalid batch id {batch_id[:80]!r}")


# ------------------------------------------------------------------------------------------- deliveries


class PrintDelivery(Protocol):
    """Puts one complete batch where the print provider picks it up, atomically, or raises a ChannelError."""

    async def deliver(self, batch_id: str, files: Mapping[str, bytes]) -> None: ...

    async def close(self) -> None: ...


class FolderDelivery:
    """Batches as folders in a local (or mounted) drop folder: ``<root>/<batch id>/``."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    def __repr__(self) -> str:
        return f"FolderDelivery(root={str(self._root)!r})"

    @property
    def root(self) -> Path:
        return self._root

    async def deliver(self, batch_id: str, files: Mapping[str, bytes]) -> None:
        _check_batch_id(batch_id)
        await asyncio.to_thread(self._deliver, batch_id, files)

    def _deliver(self, batch_id: str, files: Mapping[str, bytes]) -> None:
        final = self._root / batch_id
        incoming = self._root / f"{INCOMING_PREFIX}{batch_id}"
        renamed = False
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            if final.exists():
                raise UncertainDeliveryError(
                    "print_batch_exists", f"batch {batch_id} is already in the drop folder {self._root}"
                )
            incoming.mkdir(mode=_DIR_MODE)
            for name, data in files.items():
                _write_durably(incoming / _safe_file_name(name), data)
            _fsync_dir(incoming)
            os.rename(incoming, final)  # atomic on one file system: the provider sees all of it or nothing
            renamed = True
            _fsync_dir(self._root)
        except OSError as exc:
            if renamed:  # visible, but perhaps not on disk yet
                raise UncertainDeliveryError(
                    "print_drop_sync_failed", f"batch {batch_id} renamed but not synced: {exc}"
                ) from exc
            _remove_quietly(incoming)
            if isinstance(exc, PermissionError):
                raise ChannelConfigurationError(
                    "print_drop_not_writable", f"cannot write to the print drop folder {self._root}: {exc}"
                ) from exc
            raise TransientChannelError(
                "print_drop_write_failed", f"cannot write batch {batch_id} to {self._root}: {exc}"
            ) from exc

    async def close(self) -> None:
        return None


def _safe_file_name(name: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"invalid file name in a batch: {name[:80]!r}")
    return name


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path)


Stage = Literal["connect", "upload", "rename"]


class SftpDelivery:
    """Batches over SFTP (asyncssh): upload to ``<remote_dir>/.incoming-<batch>``, then rename to
    ``<remote_dir>/<batch>`` (the SFTP rename, which never overwrites and is atomic on the server).

    The server's host key must be in ``known_hosts`` (an OpenSSH known_hosts file; ``[host]:port`` entries for
    a port other than 22). Log in with ``password`` or private key files (``client_keys``, with an optional
    ``passphrase``) or both; no ssh-agent and no ``~/.ssh/config`` are consulted. One connection per batch.
    """

    def __init__(
        self,
        *,
        host: str,
        username: str,
        known_hosts: Path,
        port: int = 22,
        remote_dir: str = ".",
        password: str | None = None,
        client_keys: Sequence[Path] = (),
        passphrase: str | None = None,
        connect_timeout_s: float = 30.0,
        timeout_s: float = 300.0,
    ) -> None:
        if password is None and not client_keys:
            raise ValueError("SFTP delivery needs a password or a client key")
        self._host = host
        self._port = port
        self._username = username
        self._known_hosts_path = Path(known_hosts)
        self._remote_dir = remote_dir.rstrip("/") or "/"
        self._password = password
        self._client_key_paths = tuple(Path(path) for path in client_keys)
        self._passphrase = passphrase
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s

    def __repr__(self) -> str:  # never the password
        return f"SftpDelivery(host={self._host!r}, port={self._port}, username={self._username!r})"

    def _credentials(self) -> tuple[asyncssh.SSHKnownHosts, list[asyncssh.SSHKey] | None]:
        try:
            known_hosts = asyncssh.read_known_hosts(str(self._known_hosts_path))
        except (OSError, ValueError) as exc:
            raise ChannelConfigurationError(
                "print_provider_known_hosts_unreadable",
                f"cannot read the SFTP known_hosts file {self._known_hosts_path}: {exc}",
            ) from exc
        keys: list[asyncssh.SSHKey] | None = None
        if self._client_key_paths:
            keys = []
            for path in self._client_key_paths:
                try:
                    keys.append(asyncssh.read_private_key(str(path), self._passphrase))
                except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
                    raise ChannelConfigurationError(
                        "print_provider_key_unreadable", f"cannot load the SFTP client key {path}: {exc}"
                    ) from exc
        return known_hosts, keys

    async def deliver(self, batch_id: str, files: Mapping[str, bytes]) -> None:
        _check_batch_id(batch_id)
        for name in files:
            _safe_file_name(name)
        known_hosts, keys = await asyncio.to_thread(self._credentials)  # key files may need a slow KDF
        stage: list[Stage] = ["connect"]
        where = f"sftp://{self._host}:{self._port}"
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._deliver(batch_id, files, known_hosts, keys, stage)
        except ChannelError:
            raise
        except asyncssh.PermissionDenied as exc:
            raise ChannelConfigurationError(
                "print_provider_auth_failed", f"{where} refused our login as {self._username!r}: {exc.reason}"
            ) from exc
        except asyncssh.HostKeyNotVerifiable as exc:
            raise ChannelConfigurationError(
                "print_provider_host_key_unknown",
                f"{where}: host key not in {self._known_hosts_path}: {exc.reason}",
            ) from exc
        except asyncssh.ChannelOpenError as exc:
            raise ChannelConfigurationError(
                "print_provider_no_sftp", f"{where} offers no SFTP subsystem: {exc.reason}"
            ) from exc
        except (asyncssh.SFTPPermissionDenied, asyncssh.SFTPNoSuchFile) as exc:
            if stage[0] == "rename":
                raise TransientChannelError(
                    "print_provider_rename_failed",
                    f"{where} refused to publish batch {batch_id}: {exc.reason}",
                ) from exc
            raise ChannelConfigurationError(
                "print_provider_remote_dir",
                f"{where}: cannot write batch {batch_id} under {self._remote_dir!r}: {exc.reason}",
            ) from exc
        except asyncssh.SFTPError as exc:  # the server answered: nothing was published
            raise TransientChannelError(
                "print_provider_sftp_error", f"{where} failed batch {batch_id} ({stage[0]}): {exc.reason}"
            ) from exc
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            if stage[0] == "rename":
                raise UncertainDeliveryError(
                    "print_provider_lost_during_rename",
                    f"{where}: connection lost while publishing batch {batch_id}; it may be there: {detail}",
                ) from exc
            reason = "print_provider_unreachable" if stage[0] == "connect" else "print_provider_disconnected"
            raise TransientChannelError(reason, f"{where} ({stage[0]}): {detail}") from exc

    async def _deliver(
        self,
        batch_id: str,
        files: Mapping[str, bytes],
        known_hosts: asyncssh.SSHKnownHosts,
        keys: list[asyncssh.SSHKey] | None,
        stage: list[Stage],
    ) -> None:
        incoming = posixpath.join(self._remote_dir, f"{INCOMING_PREFIX}{batch_id}")
        final = posixpath.join(self._remote_dir, batch_id)
        async with (
            asyncssh.connect(
                self._host,
                self._port,
                username=self._username,
                password=self._password,
                client_keys=keys,
                known_hosts=known_hosts,
                agent_path=None,
                config=[],
                connect_timeout=self._connect_timeout_s,
                login_timeout=self._connect_timeout_s,
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            stage[0] = "upload"
            await sftp.mkdir(incoming)
            try:
                for name, data in files.items():
                    async with sftp.open(posixpath.join(incoming, name), "wb") as remote:
                        await remote.write(data)
                        with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                            await remote.fsync()  # fsync@openssh.com where the server offers it
                stage[0] = "rename"
                await sftp.rename(incoming, final)
            except asyncssh.SFTPError:  # the server answered: nothing is published, tidy up
                with contextlib.suppress(asyncssh.Error, OSError):
                    await sftp.rmtree(incoming)
                raise

    async def close(self) -> None:
        return None


# ------------------------------------------------------------------------------------------- the batcher


class _Batch:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.letters: dict[str, PrintLetter] = {}
        self.waiters: dict[str, int] = {}  # senders waiting, per reference
        self.done: asyncio.Future[str] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        # Nobody may be left waiting (every sender gave up): do not log "exception was never retrieved".
        self.done.add_done_callback(lambda fut: None if fut.cancelled() else fut.exception())


class PrintBatcher:
    """Collects letters into batches and delivers each batch once (see the module docstring)."""

    def __init__(
        self,
        delivery: PrintDelivery,
        *,
        max_letters: int = 100,
        max_wait_s: float = 20.0,
        clock: Callable[[], datetime] | None = None,
        batch_ids: Callable[[datetime], str] | None = None,
    ) -> None:
        if max_letters < 1:
            raise ValueError("max_letters must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self._delivery = delivery
        self._max_letters = max_letters
        self._max_wait_s = max_wait_s
        self._clock = clock or _utcnow
        self._batch_ids = batch_ids or new_batch_id
        self._open: _Batch | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"PrintBatcher(delivery={self._delivery!r}, max_letters={self._max_letters}, "
            f"max_wait_s={self._max_wait_s})"
        )

    @property
    def delivery(self) -> PrintDelivery:
        return self._delivery

    @property
    def pending(self) -> int:
        """Letters in the open batch (not yet being delivered)."""
        return len(self._open.letters) if self._open is not None else 0

    async def submit(self, letter: PrintLetter) -> str:
        """Add a letter to the open batch; returns the batch id once that batch is delivered."""
        if len(letter.address.lines) > CSV_ADDRESS_LINES:  # refused here: one letter never spoils a batch
            raise PermanentChannelError(
                "invalid_postal_address",
                f"{len(letter.address.lines)} address lines; the manifest has room for {CSV_ADDRESS_LINES}",
            )
        if self._closed:
            raise TransientChannelError("print_batcher_closed", "the print batcher is shutting down")
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None:
            batch = self._open = _Batch(loop)
            batch.timer = loop.call_later(self._max_wait_s, self._start_flush, batch)
        reference = letter.reference
        batch.letters[reference] = letter  # the same attempt twice is one letter (the latest rendering)
        batch.waiters[reference] = batch.waiters.get(reference, 0) + 1
        if len(batch.letters) >= self._max_letters:
            self._start_flush(batch)
        try:
            return await asyncio.shield(batch.done)
        except asyncio.CancelledError:
            batch.waiters[reference] -= 1
            if batch is self._open and not batch.waiters[reference]:
                del batch.letters[reference]  # not flushed yet: never printed
                if not batch.letters:
                    self._discard_open(batch)
            raise

    def _discard_open(self, batch: _Batch) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
        self._open = None
        batch.done.cancel()

    def _start_flush(self, batch: _Batch) -> asyncio.Task[None] | None:
        if batch is not self._open:
            return None
        self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._deliver(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)
        return task

    async def _deliver(self, batch: _Batch) -> None:
        letters = list(batch.letters.values())
        now = self._clock()
        batch_id = self._batch_ids(now)
        try:
            files = build_batch_files(batch_id, letters, created_at=now)
        except ValueError as exc:  # nothing has left this process
            log.exception("print batch %s cannot be built", batch_id)
            not_built = TransientChannelError("print_batch_build_failed", f"batch {batch_id}: {exc}")
            not_built.__cause__ = exc
            batch.done.set_exception(not_built)
            return
        try:
            await self._delivery.deliver(batch_id, files)
        except ChannelError as exc:
            log.warning("print batch %s (%d letters) not delivered: %s", batch_id, len(letters), exc.reason)
            batch.done.set_exception(exc)
        except Exception as exc:  # a bug or an unforeseen failure: the batch may or may not be there
            log.exception("print batch %s failed unexpectedly", batch_id)
            unknown = UncertainDeliveryError("print_delivery_failed", f"{type(exc).__name__}: {exc}")
            unknown.__cause__ = exc
            batch.done.set_exception(unknown)
        else:
            log.info("print batch %s delivered: %d letters", batch_id, len(letters))
            batch.done.set_result(batch_id)

    async def flush(self) -> str | None:
        """Deliver the open batch now; its id, or None if no letter was waiting."""
        batch = self._open
        if batch is None or not batch.letters:
            return None
        task = self._start_flush(batch)
        if task is not None:
            await asyncio.wait([task])
        return await asyncio.shield(batch.done)

    async def close(self) -> None:
        """Deliver what is waiting, wait for every batch on its way, then close the delivery."""
        self._closed = True
        try:
            if self._open is not None and self._open.letters:
                with contextlib.suppress(ChannelError):  # the senders waiting on it get the error
                    await self.flush()
            if self._flushing:
                await asyncio.wait(list(self._flushing))
        finally:
            await self._delivery.close()
