"""Opt-outs (issue 5) end to end: a debtor's SMS reply through the real Link Mobility and Twilio sandboxes,
our real webhook routes and the worker; the e-mail's one-click unsubscribe link. An opt-out stops
non-statutory messages on that reach only; statutory notices still go on their lawful channel."""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import select

from channels.sms.twilio import twilio_signature
from orchestrator.models import CarrierEvent, ChatLink, Debtor
from orchestrator.opt_outs import is_opt_out, normalise_reply, sender_number
from orchestrator.policy.rules import load_rules
from orchestrator.policy.windows import is_open, next_opening
from orchestrator.sandbox import linkmobility, twilio
from orchestrator.settings import Settings
from orchestrator.web import create_app
from tests.conftest import bearer, drain
from tests.factories import contact_payload, national_id, with_
from webhooks.events import MalformedPayload
from webhooks.linkmobility import LinkMobilityWebhook
from webhooks.twilio import TwilioWebhook

SECRET = "mo-and-dlr-secret"
HOOK_USER = "common"
HOOK_PASSWORD = "gate-password"
GATE = "orchestrator-gate"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clocks(n: int) -> list[Callable[[], datetime]]:
    """``n`` worker clocks inside the default contact windows, each on its own day (the pressure cap lets
    one non-statutory message a day through), with an hour of the window left."""
    windows = load_rules().contact_windows
    zone = windows.zone
    now = datetime.now(UTC)
    offsets: list[timedelta] = []
    start = now
    for _ in range(n):
        target = next_opening(start, windows)
        while not is_open(target + timedelta(hours=1), windows):
            target = next_opening(target + timedelta(hours=1), windows)
        offsets.append(target - now)
        start = datetime.combine(target.astimezone(zone).date() + timedelta(days=1), time(0), zone)
    return [lambda offset=offset: datetime.now(UTC) + offset for offset in offsets]


@dataclass
class Env:
    settings: Settings  # the app's: webhooks configured, no SMS gateway
    client: TestClient[Any, Any]
    link: linkmobility.LinkMobilitySandbox
    link_url: str
    twilio: twilio.TwilioSandbox
    twilio_url: str

    def via_link(self) -> Settings:
        """The worker's settings with Link Mobility as the SMS gateway."""
        return self.settings.model_copy(
            update={
                "linkmobility_url": self.link_url,
                "linkmobility_username": self.link.username,
                "linkmobility_password": SecretStr(self.link.password),
                "linkmobility_platform_id": self.link.platform_id,
                "linkmobility_platform_partner_id": self.link.platform_partner_id,
            }
        )

    def via_twilio(self) -> Settings:
        """The worker's settings with Twilio as the SMS gateway."""
        return self.settings.model_copy(
            update={"twilio_url": self.twilio_url, "twilio_account_sid": self.twilio.account_sid}
        )


@pytest.fixture
async def env(settings: Settings, sessions: Any) -> AsyncIterator[Env]:
    """Our app on a known port (the URL Twilio signs is the URL we verify), both SMS sandboxes calling it."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    link_state = linkmobility.LinkMobilitySandbox()
    link_state.add_gate(
        GATE, f"{base}/webhooks/linkmobility/{SECRET}", username=HOOK_USER, password=HOOK_PASSWORD
    )
    twilio_state = twilio.TwilioSandbox(callback_delay_s=0.01)
    twilio_state.inbound_url = f"{base}/webhooks/twilio/inbound"
    configured = settings.model_copy(
        update={
            "public_base_url": base,
            "twilio_auth_token": SecretStr(twilio_state.auth_token),
            "twilio_status_callback_url": f"{base}/webhooks/twilio",
            "linkmobility_webhook_username": HOOK_USER,
            "linkmobility_webhook_password": SecretStr(HOOK_PASSWORD),
            "linkmobility_webhook_secret": SecretStr(SECRET),
        }
    )
    assert configured.redis_url is not None
    async with linkmobility.serve(link_state) as link_url, twilio.serve(twilio_state) as twilio_url:
        client: TestClient[Any, Any] = TestClient(
            TestServer(create_app(configured, redis_url=configured.redis_url), port=port)
        )
        await client.start_server()
        try:
            yield Env(configured, client, link_state, link_url, twilio_state, twilio_url)
        finally:
            await client.close()


async def _contact(env: Env, key: str, payload: dict[str, Any]) -> str:
    r = await env.client.post("/v1/contacts", json=payload, headers=bearer(key))
    assert r.status == 202, await r.text()
    contact_id: str = (await r.json())["id"]
    return contact_id


async def _get(env: Env, key: str, contact_id: str) -> dict[str, Any]:
    r = await env.client.get(f"/v1/contacts/{contact_id}", headers=bearer(key))
    assert r.status == 200
    body: dict[str, Any] = await r.json()
    return body


async def _timeline(env: Env, key: str, debtor_id: str) -> list[dict[str, Any]]:
    r = await env.client.get(f"/v1/debtors/{debtor_id}/timeline", headers=bearer(key))
    assert r.status == 200
    items: list[dict[str, Any]] = (await r.json())["items"]
    return items


async def _opted_out(sessions: Any, debtor_id: str) -> list[str]:
    async with sessions() as session:
        debtor = (await session.execute(select(Debtor).where(Debtor.id == debtor_id))).scalar_one()
    return sorted(item["reach"] for item in debtor.opted_out or [])


def _another(payload: dict[str, Any], tag: str, **changes: Any) -> dict[str, Any]:
    """Another contact for the same debtor, in a case of its own."""
    out = with_(payload, "idempotency_key", f"{payload['idempotency_key']}/{tag}")
    out = with_(out, "case.id", f"{payload['case']['id']}-{tag}")
    for path, value in changes.items():
        out = with_(out, path.replace("__", "."), value)
    return out


def _emails(settings: Settings) -> dict[str, EmailMessage]:
    """The outbox's e-mails by contact id."""
    found: dict[str, EmailMessage] = {}
    for path in sorted(Path(settings.resolved_outbox_dir, "email").glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=email_policy.default)
        assert isinstance(message, EmailMessage)
        found[str(message["X-Orchestrator-Contact"]).strip()] = message
    return found


def _rejected(contact: dict[str, Any]) -> dict[str, str]:
    return {r["channel"]: r["reason"] for r in contact["decision"]["rejected"]}


# ----------------------------------------------------------------------------------------- SMS replies


async def _stop_flow(env: Env, sessions: Any, api_key: str, n: int, worker: Settings, reply: Any) -> None:
    """A reminder by SMS; the debtor answers with ``reply``; then another reminder asking for SMS and an
    inkassovarsel: neither goes by SMS, both are sent."""
    day1, day2, day3 = _clocks(3)
    payload = contact_payload(n, channel="sms")
    first = await _contact(env, api_key, payload)
    await drain(worker, clock=day1)
    sent = await _get(env, api_key, first)
    assert (sent["status"], sent["channel"]) in {("sent", "sms"), ("delivered", "sms")}

    answer = await reply(payload["debtor"]["phones"][0])
    assert answer.status == 200, answer
    await drain(worker, clock=day1)

    assert await _opted_out(sessions, f"D-{n}") == ["mobile"]
    timeline = await _timeline(env, api_key, f"D-{n}")
    [inbound] = [item for item in timeline if item["type"] == "inbound_reply"]
    [opted] = [item for item in timeline if item["type"] == "opted_out"]
    assert inbound["detail"]["outcome"] == "opted_out"
    assert inbound["detail"]["in_reply_to"] == sent["attempts"][0]["id"]
    assert inbound["detail"]["from"] == payload["debtor"]["phones"][0]
    assert (opted["detail"]["reach"], opted["detail"]["source"]) == ("mobile", "sms_reply")

    again = await _contact(env, api_key, _another(payload, "again"))
    await drain(worker, clock=day2)
    contact = await _get(env, api_key, again)
    assert _rejected(contact)["sms"] == "opted_out"
    assert contact["channel"] == "email" and contact["status"] == "sent"

    notice = await _contact(env, api_key, _another(payload, "varsel", kind="inkassovarsel", channel="auto"))
    await drain(worker, clock=day3)
    contact = await _get(env, api_key, notice)
    assert contact["status"] == "sent"
    assert contact["channel"] in {"email", "letter", "digital_mailbox"}


async def test_stopp_through_link_mobility_stops_sms_but_not_other_messages(
    env: Env, sessions: Any, api_key: str
) -> None:
    async def reply(number: str) -> linkmobility.MoPost:
        return await env.link.reply(number, "  Stopp! ")

    await _stop_flow(env, sessions, api_key, 1, env.via_link(), reply)
    [post] = env.link.mo_posts
    assert post.body["userData"] == "  Stopp! "


async def test_stop_through_twilio_signed_stops_sms_but_not_other_messages(
    env: Env, sessions: Any, api_key: str
) -> None:
    async def reply(number: str) -> twilio.StatusCallbackRecord:
        return await env.twilio.reply(number, "STOP")

    await _stop_flow(env, sessions, api_key, 2, env.via_twilio(), reply)
    [record] = env.twilio.replies
    assert record.params["To"] == env.twilio.messages[0].from_  # answered the number that texted them
    assert record.signature


async def test_a_normal_reply_lands_in_the_timeline_and_changes_nothing(
    env: Env, sessions: Any, api_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = env.via_link()
    day1, day2 = _clocks(2)
    payload = contact_payload(3, channel="sms")
    await _contact(env, api_key, payload)
    await drain(worker, clock=day1)
    fnr = national_id()
    text = f"Jeg vil ikke stoppe betalingen, men trenger utsettelse. Fnr {fnr}"
    post = await env.link.reply(payload["debtor"]["phones"][0], text)
    assert post.status == 200
    await drain(worker, clock=day1)

    assert await _opted_out(sessions, "D-3") == []
    timeline = await _timeline(env, api_key, "D-3")
    [inbound] = [item for item in timeline if item["type"] == "inbound_reply"]
    assert not [item for item in timeline if item["type"] == "opted_out"]
    assert inbound["source"] == "linkmobility"
    assert (inbound["detail"]["outcome"], inbound["detail"]["opt_out_keyword"]) == ("reply", False)
    assert inbound["detail"]["text"].startswith("Jeg vil ikke stoppe betalingen, men trenger utsettelse.")
    assert fnr not in inbound["detail"]["text"]  # R9: masked
    assert fnr[:6] in inbound["detail"]["text"]

    again = await _contact(env, api_key, _another(payload, "again"))
    await drain(worker, clock=day2)
    contact = await _get(env, api_key, again)
    assert contact["channel"] == "sms" and contact["status"] in {"sent", "delivered"}
    assert "utsettelse" not in capsys.readouterr().out  # the text never reaches a log line


async def test_a_reply_from_an_unknown_number_is_kept_but_touches_no_debtor(
    env: Env, sessions: Any, api_key: str
) -> None:
    post = await env.link.reply("+4799999999", "STOP")
    assert post.status == 200
    await drain(env.via_link())
    async with sessions() as session:
        [row] = (await session.execute(select(CarrierEvent))).scalars().all()
    assert row.payload["event"]["status"] == "inbound"
    assert row.processed_at is not None


async def test_forged_inbound_webhooks_are_refused(env: Env, sessions: Any) -> None:
    params = {"MessageSid": "SM" + "0" * 32, "From": "+4791000004", "To": "+4759440000", "Body": "STOP"}
    url = f"{env.settings.resolved_public_base_url}/webhooks/twilio/inbound"
    r = await env.client.post(
        "/webhooks/twilio/inbound",
        data=urlencode(params),
        headers={
            "X-Twilio-Signature": twilio_signature("not-the-token", url, params),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert r.status == 401
    r = await env.client.post(
        "/webhooks/twilio/inbound",
        data=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 400
    wrong = base64.b64encode(f"{HOOK_USER}:guess".encode()).decode()
    mo = {"id": "MO1", "source": "+4791000004", "destination": "2270", "userData": "STOP"}
    r = await env.client.post(
        f"/webhooks/linkmobility/{SECRET}", json=mo, headers={"Authorization": f"Basic {wrong}"}
    )
    assert r.status == 401
    async with sessions() as session:
        assert (await session.execute(select(CarrierEvent))).scalars().all() == []


async def test_a_replayed_reply_is_recorded_once(env: Env, sessions: Any, api_key: str) -> None:
    worker = env.via_twilio()
    [day1] = _clocks(1)
    payload = contact_payload(5, channel="sms")
    await _contact(env, api_key, payload)
    await drain(worker, clock=day1)
    number = payload["debtor"]["phones"][0]
    first = await env.twilio.reply(number, "Hvem er dette?", sid="SM" + "5" * 32)
    second = await env.twilio.reply(number, "Hvem er dette?", sid="SM" + "5" * 32)
    mo_first = await env.link.reply(number, "Ring meg", message_id="MO-5")
    mo_second = await env.link.reply(number, "Ring meg", message_id="MO-5")
    assert [first.status, second.status, mo_first.status, mo_second.status] == [200, 200, 200, 200]
    await drain(worker, clock=day1)

    async with sessions() as session:
        rows = (await session.execute(select(CarrierEvent))).scalars().all()
    inbound = sorted(r.event_id for r in rows if r.payload["event"]["status"] == "inbound")
    assert inbound == sorted(["mo:MO-5", f"SM{'5' * 32}:inbound"])
    timeline = await _timeline(env, api_key, "D-5")
    texts = sorted(item["detail"]["text"] for item in timeline if item["type"] == "inbound_reply")
    assert texts == ["Hvem er dette?", "Ring meg"]


# --------------------------------------------------------------------------------- e-mail unsubscribe

_LIST_UNSUBSCRIBE = re.compile(r"<(https?://[^>]+/u/[A-Za-z0-9_-]+)>")


async def test_email_unsubscribe_one_click_stops_reminders_by_email_but_not_the_statutory_notice(
    env: Env, sessions: Any, api_key: str
) -> None:
    worker = env.settings
    day1, day2, day3 = _clocks(3)
    payload = contact_payload(6)
    first = await _contact(env, api_key, payload)
    await drain(worker, clock=day1)
    assert (await _get(env, api_key, first))["channel"] == "email"
    message = _emails(worker)[first]
    match = _LIST_UNSUBSCRIBE.fullmatch(str(message["List-Unsubscribe"]))
    assert match, message["List-Unsubscribe"]
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    url = match.group(1)
    assert url.startswith(f"{env.settings.resolved_public_base_url}/u/")
    path = urlsplit(url).path
    for personal in ("D-6", "C-6", "Kari", payload["debtor"]["emails"][0]):
        assert personal not in url

    page = await env.client.get(path)  # what a mail scanner does
    assert page.status == 200
    body = await page.text()
    assert '<form method="post">' in body
    for secret in ("Faktura", "Eksempel AS", "1 285", "KID", "Kari", "inkasso"):
        assert secret not in body
    assert await _opted_out(sessions, "D-6") == []
    # The unsubscribe token opens no claim page.
    assert (await env.client.get("/s/" + path.rsplit("/", 1)[1])).status == 410

    for _ in range(2):  # idempotent
        r = await env.client.post(
            path,
            data="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status == 200
        assert "Du er meldt av" in await r.text()
    assert await _opted_out(sessions, "D-6") == ["email"]
    timeline = await _timeline(env, api_key, "D-6")
    [opted] = [item for item in timeline if item["type"] == "opted_out"]
    assert opted["detail"]["reach"] == "email"
    assert opted["detail"]["source"] == "email_unsubscribe"
    assert opted["detail"]["one_click"] is True
    assert (opted["case_id"], opted["contact_id"], opted["source"]) == ("C-6", first, "email_unsubscribe")

    again = await _contact(env, api_key, _another(payload, "again"))
    await drain(worker, clock=day2)
    contact = await _get(env, api_key, again)
    assert _rejected(contact)["email"] == "opted_out"
    assert contact["channel"] == "sms" and contact["status"] == "sent"

    notice = await _contact(env, api_key, _another(payload, "varsel", kind="inkassovarsel"))
    await drain(worker, clock=day3)
    contact = await _get(env, api_key, notice)
    assert (contact["channel"], contact["status"]) == ("email", "sent")  # an opt-out cannot stop it (R3)
    statutory = _emails(worker)[notice]
    assert statutory["List-Unsubscribe"] is None
    assert statutory["List-Unsubscribe-Post"] is None


async def test_an_unknown_or_expired_unsubscribe_link_opts_nobody_out(
    env: Env, sessions: Any, api_key: str
) -> None:
    [day1] = _clocks(1)
    payload = contact_payload(7)
    first = await _contact(env, api_key, payload)
    await drain(env.settings, clock=day1)
    match = _LIST_UNSUBSCRIBE.fullmatch(str(_emails(env.settings)[first]["List-Unsubscribe"]))
    assert match
    path = urlsplit(match.group(1)).path
    async with sessions() as session, session.begin():
        [link] = (
            (await session.execute(select(ChatLink).where(ChatLink.purpose == "unsubscribe"))).scalars().all()
        )
        link.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    for target in (path, "/u/" + "A" * 32):
        assert (await env.client.get(target)).status == 410
        assert (await env.client.post(target)).status == 410
    assert await _opted_out(sessions, "D-7") == []


# --------------------------------------------------------------------------------------------- pieces


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("STOP", True),
        ("stopp", True),
        ("  Stopp!  ", True),
        ("«AVMELD»", True),
        ("avslutt.", True),
        ("Slutt", True),
        ("unsubscribe", True),
        ("stop   all", True),
        ("Meld av", True),
        ("jeg vil ikke stoppe betalingen", False),
        ("STOP sende meg sms", False),
        ("stopper", False),
        ("", False),
    ],
)
def test_only_a_whole_message_keyword_is_an_opt_out(text: str, stop: bool) -> None:
    assert is_opt_out(text) is stop


def test_normalise_and_sender_number() -> None:
    assert normalise_reply(" stop \n all! ") == "STOP ALL"
    assert sender_number("+4791234567") == "+4791234567"
    assert sender_number("4791234567") == "+4791234567"
    assert sender_number("004791234567") == "+4791234567"
    assert sender_number("91234567") == "+4791234567"
    assert sender_number("Betaling") is None
    assert sender_number(None) is None


def test_twilio_incoming_message_parses_by_path_or_shape() -> None:
    params = {
        "MessageSid": "SM1",
        "From": "+4791234567",
        "To": "+4759440000",
        "Body": "Stopp",
        "NumSegments": "1",
    }
    body = urlencode(params).encode()
    webhook = TwilioWebhook(clock=lambda: datetime(2026, 11, 23, 9, tzinfo=UTC))
    for url in ("https://o.example.no/webhooks/twilio/inbound", "https://o.example.no/webhooks/twilio"):
        [event] = webhook.parse(url=url, headers={}, body=body)
        assert (event.status, event.event_id, event.attempt_id) == ("inbound", "SM1:inbound", None)
        assert event.detail == {"from": "+4791234567", "to": "+4759440000", "text": "Stopp", "segments": 1}
    with pytest.raises(MalformedPayload):
        webhook.parse(
            url="https://o.example.no/webhooks/twilio/inbound", headers={}, body=b"MessageSid=SM1&Body=x"
        )


def test_link_mobility_mo_parses_and_a_report_is_still_a_report() -> None:
    webhook = LinkMobilityWebhook()
    mo = {
        "id": "MO1",
        "source": "+4791234567",
        "destination": "2270",
        "userData": "STOPP",
        "operator": "no.telenor",
        "timestamp": "2026-11-23T09:12:00Z",
    }
    [event] = webhook.parse(url="", headers={}, body=json.dumps(mo).encode())
    assert (event.status, event.event_id) == ("inbound", "mo:MO1")
    assert event.at == datetime(2026, 11, 23, 9, 12, tzinfo=UTC)
    assert event.detail == {"from": "+4791234567", "to": "2270", "text": "STOPP", "operator": "no.telenor"}
    for broken in ({**mo, "source": None}, {k: v for k, v in mo.items() if k != "id"}):
        with pytest.raises(MalformedPayload):
            webhook.parse(url="", headers={}, body=json.dumps(broken).encode())
    report = {"refId": "A1", "id": "X1", "resultCode": 1001, "userData": "ignored"}
    [delivered] = webhook.parse(url="", headers={}, body=json.dumps(report).encode())
    assert delivered.status == "delivered"


async def test_the_unsubscribe_link_still_works_after_the_case_is_closed(
    env: Env, sessions: Any, api_key: str
) -> None:
    [day1] = _clocks(1)
    first = await _contact(env, api_key, contact_payload(8))
    await drain(env.settings, clock=day1)
    match = _LIST_UNSUBSCRIBE.fullmatch(str(_emails(env.settings)[first]["List-Unsubscribe"]))
    assert match
    r = await env.client.post(
        "/v1/cases/C-8/events",
        json={"type": "paid_in_full", "at": datetime.now(UTC).isoformat()},
        headers=bearer(api_key),
    )
    assert r.status == 201  # revokes the case's self-service links
    assert (await env.client.post(urlsplit(match.group(1)).path)).status == 200  # no body: fine too
    assert await _opted_out(sessions, "D-8") == ["email"]
    [opted] = [item for item in await _timeline(env, api_key, "D-8") if item["type"] == "opted_out"]
    assert opted["detail"]["one_click"] is False


async def test_the_unsubscribe_pages_speak_the_language_of_the_email(
    env: Env, sessions: Any, api_key: str
) -> None:
    (day1,) = _clocks(1)
    first = await _contact(env, api_key, contact_payload(16, language="en"))
    await drain(env.settings, clock=day1)
    message = _emails(env.settings)[first]
    match = _LIST_UNSUBSCRIBE.fullmatch(str(message["List-Unsubscribe"]))
    assert match, message["List-Unsubscribe"]
    path = urlsplit(match.group(1)).path
    page = await (await env.client.get(path)).text()
    assert '<html lang="en">' in page
    done = await env.client.post(
        path, data="x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    text = await done.text()
    assert done.status == 200 and '<html lang="en">' in text
    assert "Du er meldt av" not in text
    assert await _opted_out(sessions, "D-16") == ["email"]
