"""Print batches: a drop folder and a real SFTP server (the sandbox on port 0), manifests that match the PDFs,
atomic delivery, the error tree, and the print letter channel end to end."""

from __future__ import annotations

import asyncio
import copy
import csv
import hashlib
import io
import json
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from pypdf import PdfReader

from channels.base import (
    Channel,
    ChannelConfigurationError,
    Outgoing,
    PermanentChannelError,
    PostalAddress,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.letter import PdfRenderer, PrintLetterChannel
from channels.print_provider import (
    CSV_FIELDS,
    MANIFEST_FORMAT,
    BatchIds,
    FolderDelivery,
    PrintBatcher,
    PrintLetter,
    SftpDelivery,
    new_batch_id,
)
from orchestrator.rendering import SAMPLE_CONTEXT, Renderer
from orchestrator.sandbox.print_provider import (
    BatchError,
    PrintProviderSandbox,
    ReturnedLetter,
    read_batch,
    read_batches,
    serve_print_sandbox,
)

ADDRESS = PostalAddress(
    lines=("Bjørnøya gate 12 B", "Postboks 123 Sentrum"), postal_code="9990", city="BÅTSFJORD"
)


@pytest.fixture(scope="module")
def sample_pdfs() -> list[tuple[bytes, int]]:
    """Five real PDFs (one of them two pages long) and their page counts, rendered once for the module."""

    async def render() -> list[tuple[bytes, int]]:
        renderer = PdfRenderer(workers=2)
        try:
            htmls = [f"<html><body><p>Brev {n} til Kåre Ærø</p></body></html>" for n in range(4)]
            htmls.append(
                "<html><body><p>Første side</p><p style='break-before: page'>Andre</p></body></html>"
            )
            rendered = await asyncio.gather(*(renderer.render(html) for html in htmls))
        finally:
            await renderer.close()
        return [(r.pdf, r.pages) for r in rendered]

    return asyncio.run(render())


def letter(n: int, sample_pdfs: list[tuple[bytes, int]], **overrides: Any) -> PrintLetter:
    pdf, pages = sample_pdfs[n % len(sample_pdfs)]
    fields: dict[str, Any] = {
        "reference": f"ct{n:04d}.at{n:04d}",
        "contact_id": f"ct{n:04d}",
        "attempt_id": f"at{n:04d}",
        "recipient_name": f"Kåre Ærø {n}",
        "address": ADDRESS,
        "pdf": pdf,
        "pages": pages,
    }
    fields.update(overrides)
    return PrintLetter(**fields)


def visible_dirs(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))


def check_manifests(batch_dir: Path, expected: list[PrintLetter]) -> None:
    """The JSON and CSV manifests list exactly ``expected``, in order, and match the PDFs on disk."""
    manifest = json.loads((batch_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == MANIFEST_FORMAT
    assert manifest["batch_id"] == batch_dir.name
    assert manifest["count"] == len(expected)
    datetime.fromisoformat(manifest["created_at"])
    with (batch_dir / "manifest.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == CSV_FIELDS
        csv_rows = list(reader)
    assert len(manifest["letters"]) == len(csv_rows) == len(expected)
    for row, flat, sent in zip(manifest["letters"], csv_rows, expected, strict=True):
        data = (batch_dir / row["file"]).read_bytes()
        assert row["file"] == flat["file"] == f"{sent.reference}.pdf"
        assert row["reference"] == flat["reference"] == sent.reference
        assert (row["contact_id"], row["attempt_id"]) == (sent.contact_id, sent.attempt_id)
        assert (flat["contact_id"], flat["attempt_id"]) == (sent.contact_id, sent.attempt_id)
        assert row["sha256"] == flat["sha256"] == hashlib.sha256(data).hexdigest() == sent.sha256
        assert row["pages"] == int(flat["pages"]) == len(PdfReader(io.BytesIO(data)).pages) == sent.pages
        assert row["recipient_name"] == flat["recipient_name"] == sent.recipient_name
        assert row["address_lines"] == list(sent.address.lines)
        assert [flat[f"address_line_{n}"] for n in range(1, 5)] == [*sent.address.lines, "", ""][:4]
        assert (row["postal_code"], row["city"], row["country"]) == ("9990", "BÅTSFJORD", "NO")
        assert (flat["postal_code"], flat["city"], flat["country"]) == ("9990", "BÅTSFJORD", "NO")
    on_disk = sorted(path.name for path in batch_dir.iterdir())
    assert on_disk == sorted([*(f"{s.reference}.pdf" for s in expected), "manifest.csv", "manifest.json"])


class Watcher:
    """Polls a folder from a thread while batches land: a visible batch folder must already be complete."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: set[str] = set()
        self.incomplete: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.scan()
        self.scan()

    def scan(self) -> None:
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name.startswith(".") or path.name in self.seen:
                continue
            self.seen.add(path.name)
            try:
                read_batch(path)
            except (OSError, ValueError, KeyError) as exc:
                self.incomplete.append(f"{path.name}: {exc}")

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------- drop folder


async def test_a_batch_lands_in_the_drop_folder_with_matching_manifests(
    tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    drop = tmp_path / "drop"
    batcher = PrintBatcher(FolderDelivery(drop), max_letters=5, max_wait_s=60)
    letters = [letter(n, sample_pdfs) for n in range(5)]

    batch_ids = await asyncio.gather(*(batcher.submit(item) for item in letters))
    await batcher.close()

    assert len(set(batch_ids)) == 1
    (batch_dir,) = visible_dirs(drop)
    assert batch_dir.name == batch_ids[0]
    check_manifests(batch_dir, letters)
    assert [p.name for p in drop.iterdir()] == [batch_dir.name]  # no .incoming-* left behind
    assert [letter.pages for letter in letters].count(2) == 1
    (delivered,) = read_batches(drop)
    assert [d.reference for d in delivered.letters] == [item.reference for item in letters]


async def test_no_partial_batch_is_ever_visible_in_the_drop_folder(
    tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    batcher = PrintBatcher(FolderDelivery(drop), max_letters=3, max_wait_s=60)
    with Watcher(drop) as watcher:
        batch_ids = await asyncio.gather(*(batcher.submit(letter(n, sample_pdfs)) for n in range(30)))
        await batcher.close()
    assert len(set(batch_ids)) == 10
    assert watcher.incomplete == []
    assert watcher.seen == set(batch_ids)
    assert sorted(set(batch_ids)) == [batch.batch_id for batch in read_batches(drop)]


class FailingFiles(Mapping[str, bytes]):
    """A batch whose third file cannot be written (as when the disk fills up mid-batch)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = dict(files)

    def __getitem__(self, key: str) -> bytes:
        return self._files[key]

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[str]:
        for n, name in enumerate(self._files):
            if n == 2:
                raise OSError(28, "No space left on device")
            yield name


async def test_a_failed_write_leaves_nothing_for_the_provider(
    tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    drop = tmp_path / "drop"
    files = {f"ct{n}.at{n}.pdf": sample_pdfs[n][0] for n in range(4)}

    with pytest.raises(TransientChannelError) as caught:
        await FolderDelivery(drop).deliver(new_batch_id(), FailingFiles(files))

    assert caught.value.reason == "print_drop_write_failed"
    assert list(drop.iterdir()) == []  # neither a batch nor the half-written .incoming- folder


async def test_a_batch_flushes_after_max_wait(tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]) -> None:
    batcher = PrintBatcher(FolderDelivery(tmp_path), max_letters=100, max_wait_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first, second = await asyncio.gather(
        batcher.submit(letter(1, sample_pdfs)), batcher.submit(letter(2, sample_pdfs))
    )
    assert first == second
    assert 0.15 <= loop.time() - started < 5
    check_manifests(tmp_path / first, [letter(1, sample_pdfs), letter(2, sample_pdfs)])
    await batcher.close()


async def test_close_delivers_what_is_waiting(tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]) -> None:
    batcher = PrintBatcher(FolderDelivery(tmp_path), max_letters=100, max_wait_s=3600)
    pending = asyncio.create_task(batcher.submit(letter(7, sample_pdfs)))
    await asyncio.sleep(0.05)
    assert not pending.done()
    assert batcher.pending == 1

    await batcher.close()

    batch_id = await pending
    check_manifests(tmp_path / batch_id, [letter(7, sample_pdfs)])
    with pytest.raises(TransientChannelError) as caught:
        await batcher.submit(letter(8, sample_pdfs))
    assert caught.value.reason == "print_batcher_closed"


async def test_the_same_attempt_twice_is_one_letter_in_the_batch(
    tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    batcher = PrintBatcher(FolderDelivery(tmp_path), max_letters=100, max_wait_s=3600)
    first = asyncio.create_task(batcher.submit(letter(1, sample_pdfs)))
    again = asyncio.create_task(batcher.submit(letter(1, sample_pdfs)))  # a retry racing the first try
    other = asyncio.create_task(batcher.submit(letter(2, sample_pdfs)))
    await asyncio.sleep(0.05)
    assert batcher.pending == 2

    batch_id = await batcher.flush()

    assert batch_id is not None
    assert {await first, await again, await other} == {batch_id}
    check_manifests(tmp_path / batch_id, [letter(1, sample_pdfs), letter(2, sample_pdfs)])
    assert await batcher.flush() is None
    await batcher.close()


async def test_a_sender_that_gives_up_before_the_flush_leaves_the_batch(
    tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    batcher = PrintBatcher(FolderDelivery(tmp_path), max_letters=100, max_wait_s=3600)
    gives_up = asyncio.create_task(batcher.submit(letter(1, sample_pdfs)))
    stays = asyncio.create_task(batcher.submit(letter(2, sample_pdfs)))
    await asyncio.sleep(0.05)
    gives_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gives_up

    batch_id = await batcher.flush()

    assert batch_id == await stays
    check_manifests(tmp_path / batch_id, [letter(2, sample_pdfs)])
    await batcher.close()


def test_batch_ids_are_time_ordered_and_unique() -> None:
    base = datetime(2026, 10, 1, 8, 30, tzinfo=UTC)
    clock = [base + timedelta(microseconds=n // 3) for n in range(300)]  # three ids per microsecond
    clock += [base - timedelta(days=1)] * 5  # the clock steps back
    batch_ids = BatchIds()
    ids = [batch_ids(moment) for moment in clock]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert ids[0].startswith("20261001T083000000000Z-")
    assert re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f]{8}", ids[-1])
    assert batch_ids() > ids[-1]
    other_process = BatchIds()  # same microsecond elsewhere: still two ids
    assert other_process(base) != BatchIds()(base)


# ------------------------------------------------------------------------------------------------------ SFTP


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[PrintProviderSandbox]:
    async with serve_print_sandbox(tmp_path / "provider", password="s3cret-print") as running:
        yield running


async def test_a_batch_lands_on_the_sftp_server_atomically(
    sandbox: PrintProviderSandbox, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    batcher = PrintBatcher(sandbox.delivery(), max_letters=5, max_wait_s=60)
    letters = [letter(n, sample_pdfs) for n in range(10)]

    with Watcher(sandbox.drop_dir) as watcher:
        batch_ids = await asyncio.gather(*(batcher.submit(item) for item in letters))
        await batcher.close()

    assert len(set(batch_ids)) == 2
    assert watcher.incomplete == []
    batches = sandbox.batches()
    assert [batch.batch_id for batch in batches] == sorted(set(batch_ids))
    for batch in batches:
        sent = [item for item, batch_id in zip(letters, batch_ids, strict=True) if batch_id == batch.batch_id]
        check_manifests(batch.path, sent)
    assert [path.name for path in sandbox.drop_dir.iterdir() if path.name.startswith(".")] == []


async def test_sftp_login_with_a_key(tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_ed25519"
    key.write_private_key(str(key_file))
    async with serve_print_sandbox(tmp_path / "provider", authorized_keys=[key]) as provider:
        assert provider.password is None
        delivery = provider.delivery(password=None, client_keys=[key_file])
        batch_id = new_batch_id()
        await delivery.deliver(batch_id, {"manifest.json": b"{}"})
        assert (provider.drop_dir / batch_id / "manifest.json").read_bytes() == b"{}"

        stranger = asyncssh.generate_private_key("ssh-ed25519")
        stranger.write_private_key(str(tmp_path / "stranger"))
        with pytest.raises(ChannelConfigurationError) as caught:
            await provider.delivery(password=None, client_keys=[tmp_path / "stranger"]).deliver(
                new_batch_id(), {"manifest.json": b"{}"}
            )
        assert caught.value.reason == "print_provider_auth_failed"

        with pytest.raises(ChannelConfigurationError) as unreadable:
            await provider.delivery(password=None, client_keys=[tmp_path / "no-key"]).deliver(
                new_batch_id(), {"manifest.json": b"{}"}
            )
        assert unreadable.value.reason == "print_provider_key_unreadable"


async def test_a_wrong_password_is_a_configuration_error(sandbox: PrintProviderSandbox) -> None:
    with pytest.raises(ChannelConfigurationError) as caught:
        await sandbox.delivery(password="wrong").deliver(new_batch_id(), {"manifest.json": b"{}"})
    assert caught.value.reason == "print_provider_auth_failed"
    assert "wrong" not in str(caught.value)
    assert sandbox.batches() == []


async def test_every_sender_of_a_failed_batch_gets_the_error(
    sandbox: PrintProviderSandbox, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    batcher = PrintBatcher(sandbox.delivery(password="wrong"), max_letters=3, max_wait_s=60)
    results = await asyncio.gather(
        *(batcher.submit(letter(n, sample_pdfs)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, ChannelConfigurationError) for result in results)
    await batcher.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_closed_port_is_transient(sandbox: PrintProviderSandbox) -> None:
    delivery = sandbox.delivery(port=closed_port())
    with pytest.raises(TransientChannelError) as caught:
        await delivery.deliver(new_batch_id(), {"manifest.json": b"{}"})
    assert caught.value.reason == "print_provider_unreachable"


async def test_an_unknown_host_key_is_a_configuration_error(
    sandbox: PrintProviderSandbox, tmp_path: Path
) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sandbox.port} {impostor[0]} {impostor[1]}\n")
    with pytest.raises(ChannelConfigurationError) as caught:
        await sandbox.delivery(known_hosts=known_hosts).deliver(new_batch_id(), {"manifest.json": b"{}"})
    assert caught.value.reason == "print_provider_host_key_unknown"

    with pytest.raises(ChannelConfigurationError) as missing:
        await sandbox.delivery(known_hosts=tmp_path / "nowhere").deliver(new_batch_id(), {"a.pdf": b"%PDF"})
    assert missing.value.reason == "print_provider_known_hosts_unreadable"


async def test_a_missing_remote_folder_is_a_configuration_error(sandbox: PrintProviderSandbox) -> None:
    with pytest.raises(ChannelConfigurationError) as caught:
        await sandbox.delivery(remote_dir="no/such/folder").deliver(new_batch_id(), {"manifest.json": b"{}"})
    assert caught.value.reason == "print_provider_remote_dir"


async def test_a_connection_lost_mid_upload_is_transient_and_publishes_nothing(
    sandbox: PrintProviderSandbox, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    sandbox.fault = "disconnect_on_upload"
    batcher = PrintBatcher(sandbox.delivery(), max_letters=2, max_wait_s=60)
    results = await asyncio.gather(
        *(batcher.submit(letter(n, sample_pdfs)) for n in range(2)), return_exceptions=True
    )
    await batcher.close()
    assert [getattr(r, "reason", r) for r in results] == ["print_provider_disconnected"] * 2
    assert all(isinstance(r, TransientChannelError) for r in results)
    assert sandbox.batches() == []  # at most an .incoming- folder, which is not a batch


async def test_a_connection_lost_during_the_rename_is_uncertain(
    sandbox: PrintProviderSandbox, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    sandbox.fault = "disconnect_on_rename"
    batcher = PrintBatcher(sandbox.delivery(), max_letters=2, max_wait_s=60)
    results = await asyncio.gather(
        *(batcher.submit(letter(n, sample_pdfs)) for n in range(2)), return_exceptions=True
    )
    await batcher.close()
    assert all(isinstance(r, UncertainDeliveryError) for r in results)
    assert {getattr(r, "reason", None) for r in results} == {"print_provider_lost_during_rename"}
    (batch,) = sandbox.batches()  # it did land: resending blindly would print these letters twice
    assert len(batch.letters) == 2


class BrokenDelivery:
    """A delivery that fails in a way no channel error describes (a bug, say)."""

    def __init__(self) -> None:
        self.closed = False

    async def deliver(self, batch_id: str, files: Mapping[str, bytes]) -> None:
        raise RuntimeError("unexpected")

    async def close(self) -> None:
        self.closed = True


async def test_an_unexpected_delivery_failure_is_uncertain(sample_pdfs: list[tuple[bytes, int]]) -> None:
    delivery = BrokenDelivery()
    batcher = PrintBatcher(delivery, max_letters=1, max_wait_s=60)
    with pytest.raises(UncertainDeliveryError) as caught:
        await batcher.submit(letter(1, sample_pdfs))
    assert caught.value.reason == "print_delivery_failed"
    await batcher.close()
    assert delivery.closed


async def test_a_letter_with_too_many_address_lines_never_joins_a_batch(
    tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    batcher = PrintBatcher(FolderDelivery(tmp_path), max_letters=2, max_wait_s=60)
    too_long = letter(1, sample_pdfs, address=replace(ADDRESS, lines=("a", "b", "c", "d", "e")))
    with pytest.raises(PermanentChannelError) as caught:
        await batcher.submit(too_long)
    assert caught.value.reason == "invalid_postal_address"
    assert batcher.pending == 0
    await batcher.close()


def test_sftp_delivery_needs_credentials(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="password or a client key"):
        SftpDelivery(host="127.0.0.1", username="print", known_hosts=tmp_path / "known_hosts")
    delivery = SftpDelivery(host="h", username="u", known_hosts=tmp_path / "k", password="hunter2")
    assert "hunter2" not in repr(delivery)


# ---------------------------------------------------------------------------------------------- the sandbox


async def test_the_sandbox_returns_a_share_of_letters_once(
    tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    returned: list[ReturnedLetter] = []

    async def on_return(item: ReturnedLetter) -> None:
        returned.append(item)

    async with serve_print_sandbox(
        tmp_path / "provider", return_share=0.5, seed=7, on_return=on_return
    ) as sb:
        batcher = PrintBatcher(sb.delivery(), max_letters=40, max_wait_s=60)
        batch_ids = await asyncio.gather(*(batcher.submit(letter(n, sample_pdfs)) for n in range(40)))
        await batcher.close()

        first = await sb.process_returns()
        assert await sb.process_returns() == []  # every letter is judged once

    assert first == returned == sb.returned
    assert 8 <= len(returned) <= 32  # about half of 40
    assert all(item.batch_id == batch_ids[0] for item in returned)
    assert all(item.reason == "returned_unknown_addressee" for item in returned)
    assert {item.reference for item in returned} <= {f"ct{n:04d}.at{n:04d}" for n in range(40)}


async def test_read_batch_refuses_a_manifest_that_lies(
    tmp_path: Path, sample_pdfs: list[tuple[bytes, int]]
) -> None:
    batcher = PrintBatcher(FolderDelivery(tmp_path), max_letters=2, max_wait_s=60)
    batch_id, _ = await asyncio.gather(*(batcher.submit(letter(n, sample_pdfs)) for n in range(2)))
    await batcher.close()
    read_batch(tmp_path / batch_id)

    (tmp_path / batch_id / "ct0001.at0001.pdf").write_bytes(b"%PDF-tampered")
    with pytest.raises(BatchError, match="sha256"):
        read_batch(tmp_path / batch_id)


# --------------------------------------------------------------------------------------- the letter channel


def outgoing(n: int, **overrides: Any) -> Outgoing:
    message = Outgoing(
        contact_id=f"01JB8Z6Q4M2XK7T9RDW3HV{n:04d}",
        attempt_id=f"01JB8Z7A1B2C3D4E5F6G7H{n:04d}",
        channel="letter",
        to="Kåre Ærø\nBjørnøya gate 12 B\nPostboks 123 Sentrum\n9990 BÅTSFJORD",
        recipient_name=f"Kåre Ærø {n}",
        text="",
        html="<p>Hei</p>",
        postal_address=ADDRESS,
    )
    return replace(message, **overrides)


def letter_html(kind: str) -> str:
    context = copy.deepcopy(SAMPLE_CONTEXT)
    context["kind"] = kind
    rendered = Renderer().render(
        language="nb", kind=kind, variant="neutral", channel="letter", context=context
    )
    assert rendered.html is not None
    return rendered.html


async def test_five_concurrent_letters_make_one_batch_of_five(sandbox: PrintProviderSandbox) -> None:
    channel = PrintLetterChannel(PrintBatcher(sandbox.delivery(), max_letters=5, max_wait_s=60))
    assert isinstance(channel, Channel)
    html = {kind: letter_html(kind) for kind in ("reminder", "inkassovarsel")}
    messages = [outgoing(n, html=html["inkassovarsel" if n % 2 else "reminder"]) for n in range(5)]
    try:
        receipts = await asyncio.gather(*(channel.send(message) for message in messages))
    finally:
        await channel.close()

    (batch,) = sandbox.batches()
    assert len(batch.letters) == 5
    for message, receipt in zip(messages, receipts, strict=True):
        reference = f"{message.contact_id}.{message.attempt_id}"
        assert receipt.provider == "print"
        assert receipt.provider_message_id == reference
        assert receipt.detail == {"batch": batch.batch_id, "pages": 1}
        (delivered,) = [d for d in batch.letters if d.reference == reference]
        assert (delivered.contact_id, delivered.attempt_id) == (message.contact_id, message.attempt_id)
        assert delivered.recipient_name == message.recipient_name
        assert delivered.address_lines == ADDRESS.lines
        assert (delivered.postal_code, delivered.city, delivered.country) == ("9990", "BÅTSFJORD", "NO")
        text = PdfReader(delivered.path).pages[0].extract_text()
        assert f"Ref: {reference}" in text
        assert delivered.pages == receipt.detail["pages"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"html": None}, "letter_requires_html"),
        ({"postal_address": None}, "letter_requires_postal_address"),
        ({"contact_id": "ct.1"}, "invalid_id"),
        ({"postal_address": replace(ADDRESS, lines=("1", "2", "3", "4", "5"))}, "invalid_postal_address"),
        ({"postal_address": replace(ADDRESS, postal_code="99")}, "invalid_postal_address"),
        ({"postal_address": replace(ADDRESS, lines=())}, "invalid_postal_address"),
        ({"recipient_name": "  "}, "invalid_postal_address"),
    ],
)
async def test_letters_the_provider_cannot_print_are_refused(
    tmp_path: Path, overrides: dict[str, Any], reason: str
) -> None:
    channel = PrintLetterChannel(PrintBatcher(FolderDelivery(tmp_path), max_letters=1, max_wait_s=0))
    try:
        with pytest.raises(PermanentChannelError) as caught:
            await channel.send(outgoing(1, **overrides))
    finally:
        await channel.close()
    assert caught.value.reason == reason
    assert read_batches(tmp_path) == []


async def test_a_foreign_address_goes_into_the_manifest(tmp_path: Path) -> None:
    channel = PrintLetterChannel(PrintBatcher(FolderDelivery(tmp_path), max_letters=1, max_wait_s=0))
    abroad = PostalAddress(lines=("Storgatan 1",), postal_code="111 22", city="STOCKHOLM", country="SE")
    try:
        receipt = await channel.send(outgoing(1, html="<p>Hej</p>", postal_address=abroad))
    finally:
        await channel.close()
    (batch,) = read_batches(tmp_path)
    assert batch.batch_id == receipt.detail["batch"]
    assert (batch.letters[0].postal_code, batch.letters[0].country) == ("111 22", "SE")
