"""Previews: each message exactly as it was handed to the carrier. The e-mail as the SMTP server received it,
the SMS as the outbox wrote it with its segments, the letter as the PDF that went out, or rendered again
when that file is gone."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from aiohttp import CookieJar
from aiohttp.test_utils import TestClient, TestServer
from pypdf import PdfReader
from sqlalchemy import select

from channels.sms.encoding import analyse
from orchestrator.console.preview import EMAIL_CSP
from orchestrator.models import ConsoleAudit
from orchestrator.settings import Settings
from orchestrator.web import create_app
from tests.conftest import SmtpRecorder, drain
from tests.console.conftest import Console, _free_port, signed_in
from tests.console.test_debtors import (
    assert_no_inline_code,
    assert_no_personal_data_in_urls,
    by_testid,
    contact_json,
    one,
    paper_only,
    post_contact,
)
from tests.factories import contact_payload, open_clock


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n")


# ------------------------------------------------------------------------------------------------ e-mail


async def test_the_email_preview_is_what_the_smtp_server_received(
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
    client: Any,
    api_key: str,
    sessions: Any,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    payload = contact_payload(11)
    contact_id = await post_contact(client, api_key, payload)
    await drain(smtp_settings, clock=open_clock())
    [(_envelope, message)] = smtp_server.messages
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    [attempt] = (await contact_json(client, api_key, contact_id))["attempts"]

    vera = await signed_in(console_factory, "vera")  # a viewer may show a complaints board what was sent
    page = await vera.page(f"/console/attempts/{attempt['id']}/preview")

    assert one(page, "preview").attrs["data-channel"] == "email"
    assert one(page, "email-subject").text == " ".join(str(message["Subject"]).split())
    shown = one(page, "email-text")
    assert shown.tag == "pre" and "message" in shown.attrs["class"]
    assert shown.raw == _normalise(text_part.get_content())
    assert "Kari Nordmann 11" in shown.raw
    frame = one(page, "email-html")
    assert frame.tag == "iframe" and "sandbox" in frame.attrs and frame.attrs["sandbox"] == ""
    assert frame.attrs["src"] == f"/console/attempts/{attempt['id']}/email.html"
    assert by_testid(page, "sha-matches")
    assert_no_inline_code(page)
    assert_no_personal_data_in_urls(page, payload)
    # the frame may show that HTML and nothing else: a click on the message's self-service link inside it is
    # blocked, so looking at the e-mail never opens the debtor's page as if the debtor had
    page_csp = (await vera.get(f"/console/attempts/{attempt['id']}/preview")).headers[
        "Content-Security-Policy"
    ]
    assert f"frame-src http://127.0.0.1:{vera.client.port}{frame.attrs['src']};" in page_csp

    response = await vera.get(frame.attrs["src"])
    assert response.status == 200
    assert response.content_type == "text/html"
    assert _normalise(await response.text()) == _normalise(html_part.get_content())
    # the message's HTML runs no script and loads nothing, whatever it holds
    assert response.headers["Content-Security-Policy"] == EMAIL_CSP
    assert EMAIL_CSP.startswith("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'")

    # an e-mail has no PDF
    assert (await vera.get(f"/console/attempts/{attempt['id']}/letter.pdf")).status == 404

    async with sessions() as session:
        rows = (await session.execute(select(ConsoleAudit).where(ConsoleAudit.action == "preview"))).scalars()
        audited = [(r.debtor_id, r.detail.get("attempt_id"), r.detail.get("part")) for r in rows]
    assert ("D-11", attempt["id"], None) in audited  # the page
    assert ("D-11", attempt["id"], "email.html") in audited  # and the HTML it framed


# --------------------------------------------------------------------------------------------------- SMS


async def test_the_sms_preview_shows_the_text_the_carrier_got_its_encoding_and_each_segment(
    settings: Settings,
    client: Any,
    api_key: str,
    sessions: Any,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    payload = contact_payload(12, channel="sms")
    contact_id = await post_contact(client, api_key, payload)
    await drain(settings, clock=open_clock())
    [attempt] = (await contact_json(client, api_key, contact_id))["attempts"]
    [line] = [
        json.loads(row)
        for path in (settings.resolved_outbox_dir / "sms").glob("*.jsonl")
        for row in path.read_text(encoding="utf-8").splitlines()
    ]
    assert line["attempt_id"] == attempt["id"]

    otto = await signed_in(console_factory, "otto")
    page = await otto.page(f"/console/attempts/{attempt['id']}/preview")

    assert one(page, "preview").attrs["data-channel"] == "sms"
    assert one(page, "sms-text").raw == line["text"]
    found = analyse(line["text"])
    assert f"Encoding: {found.encoding}" in one(page, "sms-encoding").text
    segments = by_testid(page, "sms-segment")
    assert len(segments) == found.segments
    assert "".join(s.raw for s in segments) == line["text"]
    units = [int(s.attrs["data-units"]) for s in segments]
    assert sum(units) == found.units
    assert all(u <= (160 if len(units) == 1 else 153) for u in units)  # GSM-7: a concatenated part holds 153
    assert_no_inline_code(page)
    assert_no_personal_data_in_urls(page, payload)
    # an SMS has no HTML part
    assert (await otto.get(f"/console/attempts/{attempt['id']}/email.html")).status == 404


# ----------------------------------------------------------------------------------------------- letters


def _text_of(pdf: bytes) -> str:
    """The PDF's text without whitespace: text extraction puts spaces where the layout suggests them."""
    return "".join("".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


async def test_the_letter_preview_serves_the_pdf_that_went_out_and_renders_it_again_when_it_is_gone(
    settings: Settings,
    client: Any,
    api_key: str,
    sessions: Any,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    payload = paper_only(13)
    contact_id = await post_contact(client, api_key, payload)
    await drain(settings, clock=open_clock())
    [attempt] = (await contact_json(client, api_key, contact_id))["attempts"]
    written = settings.resolved_outbox_dir / "letter" / f"{contact_id}.{attempt['id']}.pdf"
    sent = written.read_bytes()

    vera = await signed_in(console_factory, "vera")
    page = await vera.page(f"/console/attempts/{attempt['id']}/preview")
    assert "the file handed to the print provider" in one(page, "letter-source").text
    pdf_url = f"/console/attempts/{attempt['id']}/letter.pdf"
    shown = one(page, "letter-pdf")
    assert (shown.tag, shown.attrs["type"], shown.attrs["data"]) == ("object", "application/pdf", pdf_url)
    assert one(page, "letter-pdf-link").attrs["href"] == pdf_url
    assert_no_inline_code(page)
    assert_no_personal_data_in_urls(page, payload)

    response = await vera.get(pdf_url)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Disposition"] == f'inline; filename="{attempt["id"]}.pdf"'
    assert await response.read() == sent  # the very bytes that went out

    # The outbox is cleaned up (or this web process runs on another host): the stored HTML again.
    written.unlink()
    page = await vera.page(f"/console/attempts/{attempt['id']}/preview")
    says = one(page, "letter-source").text
    assert "rendered again from the stored content" in says
    assert "its SHA-256 matches the one recorded when sent" in says
    response = await vera.get(pdf_url)
    assert response.status == 200 and response.headers["Content-Type"] == "application/pdf"
    again = await response.read()
    assert again.startswith(b"%PDF-")
    text = _text_of(again)
    assert "KariNordmann13" in text and "Storgata13" in text
    assert f"Ref:{contact_id}.{attempt['id']}" in text  # the same reference on the same frame
    assert _text_of(again) == _text_of(sent)  # and the same letter, word for word
    # a letter has no HTML part to frame
    assert (await vera.get(f"/console/attempts/{attempt['id']}/email.html")).status == 404


async def test_a_letter_in_the_print_providers_drop_folder_is_served_from_there(
    settings: Settings,
    tmp_path: Path,
    client: Any,
    api_key: str,
    sessions: Any,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    drop = tmp_path / "print-drop"
    drop.mkdir()
    printing = settings.model_copy(
        update={
            "print_delivery": "folder",
            "print_folder": drop,
            "print_batch_max_wait_s": 0.2,
            "letter_render_workers": 1,
        }
    )
    contact_id = await post_contact(client, api_key, paper_only(14))
    await drain(printing, clock=open_clock())
    [attempt] = (await contact_json(client, api_key, contact_id))["attempts"]
    assert attempt["provider"] == "print"
    [delivered] = drop.glob(f"*/{contact_id}.{attempt['id']}.pdf")

    # this console runs with the worker's settings, so it reads the same drop folder
    assert printing.redis_url is not None
    port = _free_port()
    server = TestServer(create_app(printing, redis_url=printing.redis_url), host="127.0.0.1", port=port)
    jar = CookieJar(unsafe=True, treat_as_secure_origin=[f"http://127.0.0.1:{port}"])
    http: TestClient[Any, Any] = TestClient(server, cookie_jar=jar)
    await http.start_server()
    try:
        otto = Console(http)
        assert (await otto.sign_in("otto")).status == 200
        page = await otto.page(f"/console/attempts/{attempt['id']}/preview")
        assert "the file handed to the print provider" in one(page, "letter-source").text
        response = await otto.get(f"/console/attempts/{attempt['id']}/letter.pdf")
        assert response.status == 200
        assert await response.read() == delivered.read_bytes()
    finally:
        await http.close()
