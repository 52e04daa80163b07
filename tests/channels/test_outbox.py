"""The outbox channels write real files an operator can open."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from channels.base import Channel, Outgoing, PermanentChannelError
from channels.outbox import (
    OutboxEmailChannel,
    OutboxLetterChannel,
    OutboxSmsChannel,
    _append_line,
    outbox_channels,
)
from orchestrator.settings import Settings

# 00:30 in Oslo on 2 March is still 1 March in UTC: the SMS file is named by the UTC date.
NOW = datetime(2026, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=1)))
TEXT = "Hei Kåre Ærø,\n\ndu skylder 1 234,50 kr. æøå ÆØÅ.\n"
HTML = "<html><body><p>Hei Kåre Ærø,</p><p>du skylder 1&nbsp;234,50 kr. æøå ÆØÅ.</p></body></html>\n"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path,
        email_from="Eksempel Inkasso <post@inkasso.test>",
        email_domain="mail.inkasso.test",
        bounce_domain="bounces.inkasso.test",
    )


@pytest.fixture
def outbox(settings: Settings) -> Path:
    return settings.resolved_outbox_dir


def outgoing(n: int = 1, *, channel: str = "email", **overrides: Any) -> Outgoing:
    message = Outgoing(
        contact_id=f"ct{n:04d}",
        attempt_id=f"at{n:04d}",
        channel=channel,
        to="kare@example.no",
        recipient_name="Kåre Ærø",
        text=TEXT,
        subject="Påminnelse: faktura 1001 – æøå",
        html=HTML,
    )
    return replace(message, **overrides)


def crlf_to_lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.endswith(".tmp") or path.name.startswith(".")]


def test_outbox_channels_cover_email_sms_and_letter(settings: Settings) -> None:
    channels = outbox_channels(settings)
    assert sorted(channels) == ["email", "letter", "sms"]
    for name, channel in channels.items():
        assert isinstance(channel, Channel)
        assert (channel.name, channel.provider) == (name, "outbox")
    assert channels["sms"].limits.max_body_chars == 306
    assert channels["letter"].limits.statutory == "always"
    assert channels["email"].limits.statutory == "with_evidence"


# ------------------------------------------------------------------------------------------------------ email


async def test_email_is_written_as_eml_that_parses_back(settings: Settings, outbox: Path) -> None:
    channel = OutboxEmailChannel(settings, clock=lambda: NOW)

    receipt = await channel.send(outgoing())

    path = outbox / "email" / "ct0001.at0001.eml"
    assert receipt.provider == "outbox"
    assert receipt.provider_message_id == "<ct0001.at0001@mail.inkasso.test>"
    assert receipt.detail == {"path": "email/ct0001.at0001.eml"}
    raw = path.read_bytes()
    assert raw.startswith(b"X-Envelope-From: bounce+at0001@bounces.inkasso.test\r\n")

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["X-Envelope-From"] == "bounce+at0001@bounces.inkasso.test"
    assert msg["From"] == "Eksempel Inkasso <post@inkasso.test>"
    assert msg["To"].addresses[0].display_name == "Kåre Ærø"
    assert msg["To"].addresses[0].addr_spec == "kare@example.no"
    assert msg["Subject"] == "Påminnelse: faktura 1001 – æøå"
    assert msg["Message-ID"] == "<ct0001.at0001@mail.inkasso.test>"
    assert msg["X-Orchestrator-Contact"] == "ct0001"
    assert msg["Date"].datetime == NOW
    assert msg.get_content_type() == "multipart/alternative"
    text_part, html_part = msg.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert crlf_to_lf(text_part.get_content()) == TEXT
    assert html_part.get_content_type() == "text/html"
    assert crlf_to_lf(html_part.get_content()) == HTML
    assert leftovers(outbox) == []


async def test_email_retry_of_an_attempt_overwrites_its_file(settings: Settings, outbox: Path) -> None:
    channel = OutboxEmailChannel(settings, clock=lambda: NOW)
    await channel.send(outgoing(subject="first"))
    await channel.send(outgoing(subject="second"))

    files = list((outbox / "email").iterdir())
    assert [path.name for path in files] == ["ct0001.at0001.eml"]
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "second"


async def test_ids_that_are_not_safe_file_names_are_refused(settings: Settings, outbox: Path) -> None:
    channel = OutboxEmailChannel(settings)
    message = outgoing(contact_id="../../etc")
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(message)
    assert caught.value.reason == "invalid_id"
    assert files_under(outbox) == []


# -------------------------------------------------------------------------------------------------------- sms


async def test_fifty_concurrent_sms_are_fifty_json_lines(settings: Settings, outbox: Path) -> None:
    channel = OutboxSmsChannel(settings, clock=lambda: NOW)

    receipts = await asyncio.gather(
        *(
            channel.send(outgoing(n, channel="sms", to="+4791234567", text=f"Påminnelse {n}: æøå"))
            for n in range(50)
        )
    )

    path = outbox / "sms" / "2026-03-01.jsonl"
    assert {receipt.detail["path"] for receipt in receipts} == {"sms/2026-03-01.jsonl"}
    assert receipts[7].provider_message_id == "outbox-sms-at0007"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    records = [json.loads(line) for line in lines]
    assert sorted(record["attempt_id"] for record in records) == [f"at{n:04d}" for n in range(50)]
    seven = next(record for record in records if record["attempt_id"] == "at0007")
    assert seven == {
        "contact_id": "ct0007",
        "attempt_id": "at0007",
        "to": "+4791234567",
        "text": "Påminnelse 7: æøå",
        "at": "2026-03-01T23:30:00+00:00",
    }
    assert leftovers(outbox) == []


def _append_many(path: str, worker: int) -> None:
    for n in range(100):
        record = {"worker": worker, "n": n, "pad": "æøå" * 200}
        _append_line(Path(path), (json.dumps(record, ensure_ascii=False) + "\n").encode())


async def test_sms_appends_are_safe_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "sms" / "shared.jsonl"
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context("spawn")) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, _append_many, str(path), w) for w in range(4)))

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 400
    assert sorted((r["worker"], r["n"]) for r in records) == [(w, n) for w in range(4) for n in range(100)]


async def test_sms_longer_than_the_limit_is_refused(settings: Settings, outbox: Path) -> None:
    channel = OutboxSmsChannel(settings)
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(outgoing(channel="sms", to="+4791234567", text="x" * 307))
    assert caught.value.reason == "sms_too_long"
    assert not (outbox / "sms").exists()


# ----------------------------------------------------------------------------------------------------- letter


@pytest.fixture
async def letters(settings: Settings) -> AsyncIterator[OutboxLetterChannel]:
    channel = OutboxLetterChannel(settings)
    yield channel
    await channel.close()


async def test_letter_is_a_pdf_with_the_recipient_name(letters: OutboxLetterChannel, outbox: Path) -> None:
    html = (
        "<html><head><style>@page { size: A4; margin: 2cm }</style></head><body>"
        "<p>Kåre Ærø<br>Storgata 1<br>0155 Oslo</p><h1>Inkassovarsel</h1><p>Beløp: 1 234,50 kr</p>"
        "</body></html>"
    )
    message = outgoing(channel="letter", to="Kåre Ærø\nStorgata 1\n0155 Oslo", subject=None, html=html)

    receipt = await letters.send(message)

    path = outbox / "letter" / "ct0001.at0001.pdf"
    assert receipt.provider == "outbox"
    assert receipt.provider_message_id == "outbox-letter-at0001"
    assert receipt.detail["path"] == "letter/ct0001.at0001.pdf"
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    assert receipt.detail["bytes"] == len(data)
    text = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert "Kåre Ærø" in text
    assert "Inkassovarsel" in text
    assert leftovers(outbox) == []


async def test_concurrent_letters_all_render(letters: OutboxLetterChannel, outbox: Path) -> None:
    messages = [outgoing(n, channel="letter", html=f"<p>Brev {n} til Kåre Ærø</p>") for n in range(4)]
    await asyncio.gather(*(letters.send(message) for message in messages))
    assert sorted(path.name for path in (outbox / "letter").iterdir()) == [
        f"ct{n:04d}.at{n:04d}.pdf" for n in range(4)
    ]


async def test_letter_without_html_is_refused(letters: OutboxLetterChannel, outbox: Path) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await letters.send(outgoing(channel="letter", html=None))
    assert caught.value.reason == "letter_requires_html"
    assert not (outbox / "letter").exists()


async def test_close_without_any_letter_is_fine(settings: Settings) -> None:
    channels = outbox_channels(settings, clock=lambda: datetime.now(UTC))
    for channel in channels.values():
        await channel.close()
