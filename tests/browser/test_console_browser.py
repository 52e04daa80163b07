"""The console in a real browser: headless Debian Chromium driven by Playwright (``console_flows.mjs``)
against the running app — sign in, search, export CSV, open a timeline, preview a letter, resolve a dispute,
and a viewer who cannot act; screenshots of each step are kept in ``test-artifacts/browser/``.

``make test`` installs Chromium and playwright-core (``scripts/install-browser.sh``); without them these tests
fail, saying how to install them (they never skip).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from orchestrator import contact_log as store
from orchestrator.console import accounts
from orchestrator.settings import Settings
from orchestrator.web import create_app
from tests.conftest import bearer, drain
from tests.factories import contact_payload, national_id, open_clock

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CHROMIUM = os.environ.get("ORCH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("ORCH_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
PASSWORDS = {"otto": "operator-password-1", "vera": "viewer-password-1"}
NAME = "Ingrid Bjørnstad"
NATIONAL_ID = national_id("150385", "123")


def _browser_missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM}"
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed in tests/browser"
    return None


@pytest.fixture(scope="module", autouse=True)
def _need_a_browser() -> None:
    missing = _browser_missing()
    if missing is None:
        return
    pytest.fail(f"{missing}: `make test` (or scripts/install-browser.sh) installs it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _post_json(http: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body, headers=bearer(key)) as response:
        assert response.status in (200, 201, 202), await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def test_an_operator_and_a_viewer_in_a_real_browser(
    smtp_settings: Settings, sessions: Any, api_key: str
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # self-service links on the console's own origin, as in `make demo`: the hardest case for the preview
    settings = smtp_settings.model_copy(update={"public_base_url": base})
    for username, password in PASSWORDS.items():
        role = "operator" if username == "otto" else "viewer"
        await accounts.create_operator(sessions, username=username, role=role, password=password)
    assert settings.redis_url is not None
    server = TestServer(create_app(settings, redis_url=settings.redis_url), host="127.0.0.1", port=port)
    await server.start_server()
    debtor = {"debtor__name": NAME, "debtor__national_id": NATIONAL_ID}
    try:
        async with aiohttp.ClientSession() as http:
            # a letter that goes out, then a second contact that the debtor's dispute holds
            letter = await _post_json(
                http, f"{base}/v1/contacts", api_key, contact_payload(7, channel="letter", **debtor)
            )
            mail = await _post_json(
                http,
                f"{base}/v1/contacts",
                api_key,
                # a plan offer without a fee: R10 allows two fee-bearing messages a claim, and the held
                # reminder must stay lawful when the dispute is resolved
                contact_payload(
                    7,
                    kind="payment_plan_offer",
                    channel="email",
                    idempotency_key="eksempel-as/inv-7/plan-offer-mail",
                    case__costs=[],
                    **debtor,
                ),
            )
            await drain(settings, clock=open_clock())
            second = contact_payload(7, idempotency_key="eksempel-as/inv-7/reminder-2", **debtor)
            held = await _post_json(http, f"{base}/v1/contacts", api_key, second)
            await _post_json(
                http,
                f"{base}/v1/cases/C-7/events",
                api_key,
                {"type": "dispute_raised", "at": "2026-11-20T10:00:00+01:00", "note": "the debtor disputes"},
            )
        async with sessions() as session:
            sent = await store.get_contact(session, letter["id"])
            waiting = await store.get_contact(session, held["id"])
        assert sent is not None and sent.status == "sent" and sent.channel == "letter"
        async with sessions() as session:
            mailed = await store.get_contact(session, mail["id"])
        assert mailed is not None
        assert (mailed.status, mailed.channel, mailed.status_reason) == ("sent", "email", None)
        assert waiting is not None and waiting.status == "held"

        flows_in = ARTIFACTS / "flows-input.json"
        flows_out = ARTIFACTS / "flows-output.json"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        flows_out.unlink(missing_ok=True)
        flows_in.write_text(
            json.dumps(
                {
                    "base_url": base,
                    "chromium": CHROMIUM,
                    "screenshot_dir": str(ARTIFACTS),
                    "operator": {"username": "otto", "password": PASSWORDS["otto"]},
                    "viewer": {"username": "vera", "password": PASSWORDS["vera"]},
                    "search_name": "bjørnstad",
                    "expected_rows": 3,
                    "case_id": "C-7",
                    "resolve_note": "Checked the invoice with the creditor: the claim stands.",
                }
            )
        )
        # asynchronously: the app under test runs in this event loop and must keep answering the browser
        node = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "console_flows.mjs"),
            env={**os.environ, "FLOWS_INPUT": str(flows_in), "FLOWS_OUTPUT": str(flows_out)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(node.communicate(), 180)
    finally:
        await server.close()
    assert flows_out.exists(), f"the browser flow wrote no result:\n{stdout.decode()}\n{stderr.decode()}"
    out = json.loads(flows_out.read_text())
    assert node.returncode == 0 and out["failures"] == [], json.dumps(out["failures"], indent=2)

    # the search found both contacts, and the CSV the browser downloaded holds them
    assert out["result_rows"] == 3
    rows = list(csv.DictReader(io.StringIO(out["csv"].lstrip("\ufeff"))))
    assert {r["contact_id"] for r in rows} == {letter["id"], mail["id"], held["id"]}
    assert out["csv_filename"].endswith(".csv")
    # the timeline shows what happened, the national id only masked
    assert out["timeline_entries"] >= 4
    assert "dispute" in out["timeline_text"].lower()
    assert NATIONAL_ID not in out["debtor_page_text"] and NATIONAL_ID[:6] + "*****" in out["debtor_page_text"]
    # the letter as sent: a PDF
    assert out["pdf_status"] == 200 and out["pdf_content_type"] == "application/pdf"
    assert out["pdf_magic"] == "%PDF-" and out["pdf_bytes"] > 1000
    # resolving the dispute opened the case; the held contact resumes and the worker sends it
    assert out["case_status_after"] == "open"
    await drain(settings, clock=open_clock())
    async with sessions() as session:
        resumed = await store.get_contact(session, held["id"])
        events = await store.timeline(session, "D-7")
    assert resumed is not None
    assert (resumed.status, resumed.status_reason) == ("sent", None)
    operator_entries = [e for e in events if e.source == "operator"]
    # the self-service link clicked inside the e-mail's preview went nowhere: no visit in the debtor's name
    # (Chromium shows its error page in the frame: the console's policy refused the navigation)
    assert out["email_link_clicked"] is True and "/s/" not in out["frame_url_after_click"]
    assert [e for e in events if e.type == "self_service_opened"] == []
    assert any(e.detail.get("operator") == "otto" for e in operator_entries)
    # refusals: a form without its CSRF token, and a viewer's post
    assert out["no_csrf_status"] == 403
    assert out["viewer_sees_resolve_form"] == 0 and out["viewer_sees_hold_form"] == 0
    assert out["viewer_post_status"] == 403
    # no personal data in any URL the browser loaded
    for url in out["urls"]:
        for personal in ("D-7", "C-7", "Ingrid", "rnstad", NATIONAL_ID, "91000007", "debtor7"):
            assert personal not in url, f"{personal!r} in {url}"
    for step in (
        "signed-in",
        "search-results",
        "timeline",
        "letter-preview",
        "email-preview",
        "dispute-resolved",
    ):
        assert (ARTIFACTS / f"{step}.png").stat().st_size > 5000
