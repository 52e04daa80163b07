"""The debtor page, its timeline and the contact page, over contacts sent for real: the API, the worker, a
real SMTP server, the Link Mobility sandbox calling our webhooks, the outbox's letters and Posten's returns.
What is asserted is what an operator reads on the page."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import select

from orchestrator.identifiers import mask_national_id
from orchestrator.jobs import sweep
from orchestrator.models import ConsoleAudit, Debtor
from orchestrator.sandbox import linkmobility
from orchestrator.settings import Settings
from orchestrator.web import create_app
from orchestrator.worker import shutdown, startup
from tests.conftest import SmtpRecorder, bearer, drain
from tests.console.conftest import Console, signed_in
from tests.factories import contact_payload, national_id, open_clock
from webhooks.ingress import event_rows, record_events
from webhooks.returns import CARRIER, ReturnRow, return_event

# ------------------------------------------------------------------------------------------- reading pages

_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


@dataclass
class Element:
    """An element of a page that carries ``data-testid``: its attributes and its text."""

    tag: str
    attrs: dict[str, str]
    parts: list[str] = field(default_factory=list)

    @property
    def raw(self) -> str:
        """The text exactly (character references decoded), for ``<pre>``."""
        return "".join(self.parts)

    @property
    def text(self) -> str:
        """The text as a reader sees it: whitespace collapsed, and a space where one element ends."""
        return " ".join(" ".join(self.parts).split())


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[Element] = []
        self.stack: list[tuple[str, int | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        index = None
        if "data-testid" in values:
            self.found.append(Element(tag, values))
            index = len(self.found) - 1
        if tag not in _VOID:
            self.stack.append((tag, index))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if "data-testid" in values:
            self.found.append(Element(tag, values))

    def handle_data(self, data: str) -> None:
        for _tag, index in self.stack:
            if index is not None:
                self.found[index].parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


def by_testid(page: str, testid: str) -> list[Element]:
    """Every element with ``data-testid=testid``, in page order."""
    parser = _Collector()
    parser.feed(page)
    return [e for e in parser.found if e.attrs["data-testid"] == testid]


def one(page: str, testid: str) -> Element:
    [found] = by_testid(page, testid)
    return found


def urls(page: str) -> list[str]:
    """Every URL the page links, loads or posts to."""
    return re.findall(r'\s(?:href|src|action|data)="([^"]*)"', page)


def assert_no_personal_data_in_urls(page: str, payload: dict[str, Any]) -> None:
    debtor = payload["debtor"]
    personal = [
        debtor["id"],
        payload["case"]["id"],
        *(word for word in debtor["name"].split() if not word.isdigit()),
        *debtor["phones"],
        *debtor["emails"],
    ]
    personal += [p.removeprefix("+47") for p in debtor["phones"]]
    if debtor.get("national_id"):
        personal += [debtor["national_id"], debtor["national_id"][:6]]
    for url in urls(page):
        for value in personal:
            assert value not in url, f"{value!r} in the URL {url!r}"


def assert_no_inline_code(page: str) -> None:
    """The console's Content-Security-Policy forbids inline scripts, styles and handlers: a page that had
    them would break in the browser."""
    assert "<script" not in page and " style=" not in page and not re.search(r"\son[a-z]+=", page)


def entries(page: str) -> list[Element]:
    return by_testid(page, "timeline-entry")


def of_type(page: str, type_: str) -> list[Element]:
    return [e for e in entries(page) if e.attrs["data-type"] == type_]


async def assert_csrf_in_every_form(console: Console, path: str) -> None:
    page = await console.page(path)
    forms = re.findall(r"<form\b.*?</form>", page, flags=re.S)
    assert forms
    for form in forms:
        assert 'name="csrf_token"' in form, form[:200]


# ------------------------------------------------------------------------------------------- driving flows


async def post_contact(client: Any, api_key: str, payload: dict[str, Any]) -> str:
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert r.status == 202, await r.text()
    contact_id: str = (await r.json())["id"]
    return contact_id


async def contact_json(client: Any, api_key: str, contact_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))
    assert r.status == 200
    body: dict[str, Any] = await r.json()
    return body


async def debtor_ref(sessions: Any, debtor_id: str) -> str:
    async with sessions() as session:
        debtor = await session.get(Debtor, debtor_id)
    assert debtor is not None
    return debtor.ref


def paper_only(n: int, **changes: Any) -> dict[str, Any]:
    return contact_payload(
        n,
        channel="letter",
        debtor__phones=[],
        debtor__emails=[],
        debtor__electronic_notice_evidence=[],
        **changes,
    )


async def return_letter(
    sessions: Any, redis: Any, settings: Settings, contact_id: str, attempt_id: str, new_address: Any = None
) -> None:
    """Posten sends the letter back (as the print provider's returns file would say), then the worker."""
    row = ReturnRow(
        line=1,
        reference=f"{contact_id}.{attempt_id}",
        reason="returned_moved",
        returned_at=datetime.now(UTC),
        new_address=new_address,
    )
    await record_events(sessions, redis, settings.queue_name, event_rows(CARRIER, [return_event(row)], {}))
    await drain(settings, clock=open_clock())


# ------------------------------------------------------------------------------------------------ e-mail


async def test_the_debtor_page_shows_who_the_debtor_is_with_the_national_id_masked_and_their_cases(
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
    client: Any,
    api_key: str,
    sessions: Any,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    fnr = national_id("060763", "120")
    payload = contact_payload(1, debtor__national_id=fnr)
    contact_id = await post_contact(client, api_key, payload)
    await drain(smtp_settings, clock=open_clock())
    assert len(smtp_server.messages) == 1
    ref = await debtor_ref(sessions, "D-1")

    otto = await signed_in(console_factory, "otto")
    page = await otto.page(f"/console/debtors/{ref}")

    assert one(page, "debtor-name").text == "Kari Nordmann 1"
    assert one(page, "national-id").text == mask_national_id(fnr) == "060763*****"
    assert fnr not in page
    facts = one(page, "debtor-facts").text
    assert "D-1" in facts and "person" in facts  # upstream's id is fine in the page body
    points = {e.text for e in by_testid(page, "contact-point")}
    assert any("Storgata 1" in p and "0155 OSLO" in p for p in points)
    assert any("+4791000001" in p and "Mobile" in p for p in points)
    assert any("debtor1@example.no" in p and "debtor used address" in p for p in points)

    [case] = by_testid(page, "case")
    assert case.attrs["data-case-status"] == "open"
    assert "Eksempel AS" in case.text and "Faktura 1001" in case.text
    assert "1 250,00 kr" in case.text and "1 285,00 kr" in case.text  # principal; with the fee, the total
    [row] = by_testid(page, "contact-row")
    assert "reminder" in row.text and "e-mail" in row.text and "sent" in row.text
    assert f'href="/console/contacts/{contact_id}"' in page
    # an open case can be held by an operator; no dispute to resolve
    assert by_testid(page, "hold-case") and not by_testid(page, "resolve-dispute")
    assert by_testid(page, "correct-address")
    await assert_csrf_in_every_form(otto, f"/console/debtors/{ref}")
    assert_no_personal_data_in_urls(page, payload)
    assert_no_inline_code(page)

    # a viewer reads the same page without a single form to act with
    vera = await signed_in(console_factory, "vera")
    seen = await vera.page(f"/console/debtors/{ref}")
    assert one(seen, "debtor-name").text == "Kari Nordmann 1"
    for form in ("hold-case", "resolve-dispute", "release-hold", "correct-address"):
        assert not by_testid(seen, form), form

    async with sessions() as session:
        found = await session.execute(select(ConsoleAudit).where(ConsoleAudit.action == "view_timeline"))
        audit = list(found.scalars())
    assert {row.debtor_id for row in audit} == {"D-1"}
    assert {row.operator_id for row in audit} == {operators["otto"], operators["vera"]}


async def test_the_timeline_shows_the_decision_its_reasons_the_rejected_channels_the_attempt_and_the_hold(
    smtp_settings: Settings,
    smtp_server: SmtpRecorder,
    client: Any,
    api_key: str,
    sessions: Any,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    payload = contact_payload(2)
    contact_id = await post_contact(client, api_key, payload)
    await drain(smtp_settings, clock=open_clock())
    r = await client.post(
        "/v1/cases/C-2/events",
        json={"type": "dispute_raised", "at": datetime.now(UTC).isoformat(), "note": "Never ordered it"},
        headers=bearer(api_key),
    )
    assert r.status == 201, await r.text()
    ref = await debtor_ref(sessions, "D-2")

    otto = await signed_in(console_factory, "otto")
    page = await otto.page(f"/console/debtors/{ref}")

    timeline = one(page, "timeline")
    assert timeline.tag == "ol"
    assert [e.attrs["data-type"] for e in entries(page)] == [
        "contact_received",
        "decision",
        "attempt",
        "case_dispute_raised",
    ]  # oldest first
    [decision] = of_type(page, "decision")
    assert "Decision: send by e-mail through smtp" in decision.text
    assert "the cheapest lawful channel that reaches the debtor" in decision.text
    assert "cheapest_lawful_reachable_channel" in decision.text  # the code beside the words
    rule_version = (await contact_json(client, api_key, contact_id))["decision"]["rule_version"]
    assert f"Rule version {rule_version}" in decision.text
    rejected = {e.text for e in by_testid(page, "rejected-channel")}
    assert any(t.startswith("SMS: ranked lower than the chosen channel") for t in rejected), rejected
    assert any(t.startswith("letter: ranked lower") for t in rejected), rejected
    assert any(t.startswith("digital mailbox: no carrier is configured") for t in rejected), rejected

    [attempt] = of_type(page, "attempt")
    assert attempt.attrs["class"] == "carrier"
    assert "Handed to smtp (e-mail)" in attempt.text
    assert "debtor2@example.no" in attempt.text
    assert "250" in attempt.text  # the SMTP server's answer
    attempt_id = (await contact_json(client, api_key, contact_id))["attempts"][0]["id"]
    assert f'href="/console/attempts/{attempt_id}/preview"' in page

    [hold] = of_type(page, "case_dispute_raised")
    assert hold.attrs["class"] == "hold"
    assert "Dispute raised (from upstream)" in hold.text and "Never ordered it" in hold.text

    [case] = by_testid(page, "case")
    assert case.attrs["data-case-status"] == "held"
    assert "a dispute (R4)" in case.text
    form = one(page, "resolve-dispute")
    assert form.attrs["action"] == "/console/actions/resolve-dispute"
    assert re.search(r'name="case_id" value="C-2"', page)
    assert not by_testid(page, "hold-case")  # held already
    assert_no_personal_data_in_urls(page, payload)

    vera = await signed_in(console_factory, "vera")
    assert not by_testid(await vera.page(f"/console/debtors/{ref}"), "resolve-dispute")

    # the contact page: its decision and its attempt with the preview link
    contact_page = await otto.page(f"/console/contacts/{contact_id}")
    decision_box = one(contact_page, "decision")
    assert "the cheapest lawful channel that reaches the debtor" in decision_box.text
    assert "digital mailbox: no carrier is configured for this channel" in decision_box.text
    [shown] = by_testid(contact_page, "attempt")
    assert attempt_id in shown.text and "smtp" in shown.text and "debtor2@example.no" in shown.text
    link = one(contact_page, "preview-link")
    assert link.attrs["href"] == f"/console/attempts/{attempt_id}/preview"
    assert one(contact_page, "debtor-link").attrs["href"] == f"/console/debtors/{ref}"
    assert_no_personal_data_in_urls(contact_page, payload)
    assert_no_inline_code(contact_page)
    assert_no_inline_code(page)


async def test_an_operators_hold_shows_on_the_case_and_in_the_timeline_with_who_did_it(
    client: Any, api_key: str, sessions: Any, operators: dict[str, str], console_factory: Any
) -> None:
    payload = contact_payload(8, not_before="2030-01-07T09:00:00+01:00")  # scheduled: something to hold
    await post_contact(client, api_key, payload)
    ref = await debtor_ref(sessions, "D-8")
    otto = await signed_in(console_factory, "otto")
    await otto.page(f"/console/debtors/{ref}")

    response = await otto.post(
        "/console/actions/hold-case", {"case_id": "C-8", "note": "Debtor in hospital, call back in May"}
    )
    assert response.status == 200, await response.text()
    assert str(response.url).endswith(f"/console/debtors/{ref}?done=case_held")
    page = await response.text()

    assert "The case is on hold" in one(page, "done").text
    [case] = by_testid(page, "case")
    assert case.attrs["data-case-status"] == "held" and "held by an operator" in case.text
    assert by_testid(page, "release-hold") and not by_testid(page, "hold-case")
    [held] = of_type(page, "operator_case_held")
    assert held.attrs["class"] == "operator"
    assert "Operator action: case held" in held.text
    assert "By otto (operator)" in held.text and "Debtor in hospital, call back in May" in held.text
    [event] = of_type(page, "case_operator_hold")
    assert event.attrs["class"] == "operator" and "Case put on hold (from an operator)" in event.text
    assert_no_personal_data_in_urls(page, payload)


async def test_done_says_what_the_action_did_and_unknown_codes_say_nothing(
    client: Any,
    api_key: str,
    settings: Settings,
    sessions: Any,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    await post_contact(client, api_key, contact_payload(3))
    ref = await debtor_ref(sessions, "D-3")
    otto = await signed_in(console_factory, "otto")
    assert (
        "The case is on hold" in one(await otto.page(f"/console/debtors/{ref}?done=case_held"), "done").text
    )
    assert (
        "address is stored"
        in one(await otto.page(f"/console/debtors/{ref}?done=address_corrected"), "done").text
    )
    assert not by_testid(await otto.page(f"/console/debtors/{ref}?done=<script>"), "done")
    # queued, not decided yet: the contact page says so
    [row] = by_testid(await otto.page(f"/console/debtors/{ref}"), "contact-row")
    assert "queued" in row.text


async def test_a_long_timeline_comes_in_pages_of_500_oldest_first(
    client: Any, api_key: str, sessions: Any, operators: dict[str, str], console_factory: Any
) -> None:
    await post_contact(client, api_key, contact_payload(7))
    for n in range(500):  # 500 payments of 1 krone: with the contact received, 501 entries
        r = await client.post(
            "/v1/cases/C-7/events",
            json={"type": "payment_received", "at": datetime.now(UTC).isoformat(), "amount": f"{n + 1}.00"},
            headers=bearer(api_key),
        )
        assert r.status == 201
    ref = await debtor_ref(sessions, "D-7")
    vera = await signed_in(console_factory, "vera")

    first = await vera.page(f"/console/debtors/{ref}")
    shown = entries(first)
    assert len(shown) == 500
    assert shown[0].attrs["data-type"] == "contact_received"
    assert "Payment received (from upstream)" in shown[1].text and "1,00 kr" in shown[1].text
    later = one(first, "timeline-next").attrs["href"]
    assert later.startswith(f"/console/debtors/{ref}?after=")
    second = await vera.page(later)
    [last] = entries(second)
    assert "500,00 kr" in last.text
    assert not by_testid(second, "timeline-next")
    assert (await vera.get(f"/console/debtors/{ref}?after=not-an-id")).status == 400


async def test_unknown_debtors_contacts_and_attempts_are_404_pages(
    sessions: Any, operators: dict[str, str], console_factory: Any
) -> None:
    vera = await signed_in(console_factory, "vera")
    for path in (
        "/console/debtors/01JQ7ZK3W5N8T4HZ2V6XYPM0RA",
        "/console/debtors/D-1",  # upstream's id is not how the console names a debtor
        "/console/contacts/01JQ7ZK3W5N8T4HZ2V6XYPM0RA",
        "/console/attempts/01JQ7ZK3W5N8T4HZ2V6XYPM0RA/preview",
        "/console/attempts/01JQ7ZK3W5N8T4HZ2V6XYPM0RA/letter.pdf",
        "/console/attempts/01JQ7ZK3W5N8T4HZ2V6XYPM0RA/email.html",
    ):
        page = await vera.page(path, status=404)
        assert "Not found" in page and "no " in one(page, "error-message").text, path


# ------------------------------------------------------------------------------------------ SMS, replies

SECRET = "dlr-and-mo-secret"
HOOK_USER = "gate-user"
HOOK_PASSWORD = "gate-password"
GATE = "orchestrator-gate"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SmsEnv:
    worker: Settings
    link: linkmobility.LinkMobilitySandbox


@pytest.fixture
async def sms_env(settings: Settings, sessions: Any) -> AsyncIterator[SmsEnv]:
    """Our app on a known port taking Link Mobility's delivery reports and replies; the worker sends
    through the Link Mobility sandbox and asks for reports on our gate."""
    port = _free_port()
    state = linkmobility.LinkMobilitySandbox(report_delay_s=0.01)
    state.add_gate(
        GATE,
        f"http://127.0.0.1:{port}/webhooks/linkmobility/{SECRET}",
        username=HOOK_USER,
        password=HOOK_PASSWORD,
    )
    hooks = settings.model_copy(
        update={
            "linkmobility_webhook_username": HOOK_USER,
            "linkmobility_webhook_password": SecretStr(HOOK_PASSWORD),
            "linkmobility_webhook_secret": SecretStr(SECRET),
        }
    )
    assert hooks.redis_url is not None
    async with linkmobility.serve(state) as url:
        app: TestClient[Any, Any] = TestClient(
            TestServer(create_app(hooks, redis_url=hooks.redis_url), port=port)
        )
        await app.start_server()
        try:
            worker = hooks.model_copy(
                update={
                    "linkmobility_url": url,
                    "linkmobility_username": state.username,
                    "linkmobility_password": SecretStr(state.password),
                    "linkmobility_platform_id": state.platform_id,
                    "linkmobility_platform_partner_id": state.platform_partner_id,
                    "linkmobility_delivery_report_gate": GATE,
                }
            )
            yield SmsEnv(worker, state)
        finally:
            await app.close()


async def test_the_timeline_shows_the_carriers_report_and_the_debtors_reply_and_opt_out(
    sms_env: SmsEnv, client: Any, api_key: str, sessions: Any, operators: dict[str, str], console_factory: Any
) -> None:
    payload = contact_payload(4, channel="sms")
    contact_id = await post_contact(client, api_key, payload)
    clock = open_clock()
    await drain(sms_env.worker, clock=clock)
    await sms_env.link.wait_for_reports(1)
    await drain(sms_env.worker, clock=clock)
    reply = await sms_env.link.reply(payload["debtor"]["phones"][0], "STOPP")
    assert reply.status == 200
    await drain(sms_env.worker, clock=clock)
    ref = await debtor_ref(sessions, "D-4")

    vera = await signed_in(console_factory, "vera")
    page = await vera.page(f"/console/debtors/{ref}")

    types = [e.attrs["data-type"] for e in entries(page)]
    assert types[:4] == ["contact_received", "decision", "attempt", "carrier_event"], types
    [decision] = of_type(page, "decision")
    assert "the channel upstream asked for" in decision.text
    [report] = of_type(page, "carrier_event")
    assert report.attrs["class"] == "carrier"
    assert "Report from linkmobility: delivered" in report.text
    [inbound] = of_type(page, "inbound_reply")
    assert inbound.attrs["class"] == "inbound"
    assert "Reply from the debtor by SMS: an opt-out" in inbound.text
    assert one(page, "reply-text").raw == "STOPP"
    [opted] = of_type(page, "opted_out")
    assert "Opted out of SMS to their mobile" in opted.text and opted.attrs["class"] == "inbound"
    mobile = next(p for p in by_testid(page, "contact-point") if "+4791000004" in p.text)
    assert "opted out" in mobile.text
    [row] = by_testid(page, "contact-row")
    assert "delivered" in row.text
    assert_no_personal_data_in_urls(page, payload)

    contact_page = await vera.page(f"/console/contacts/{contact_id}")
    [attempt] = by_testid(contact_page, "attempt")
    assert attempt.attrs["data-attempt-status"] == "delivered"
    assert "GSM-7, 1 segment" in attempt.text and "linkmobility" in attempt.text
    events = [e.attrs["data-type"] for e in entries(contact_page)]
    assert events == ["attempt", "carrier_event"], events  # the reply belongs to the debtor, not the attempt
    # delivered: there is nothing for an operator to try again or settle
    otto = await signed_in(console_factory, "otto")
    delivered = await otto.page(f"/console/contacts/{contact_id}")
    assert not by_testid(delivered, "retry-contact") and not by_testid(delivered, "settle")


# ------------------------------------------------------------------- letters, returned mail, tasks, forms


async def test_a_returned_letter_shows_the_lookups_the_new_address_the_resend_and_then_the_task(
    settings: Settings,
    client: Any,
    api_key: str,
    sessions: Any,
    redis: Any,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    fnr = national_id("010190", "120")
    payload = paper_only(5, debtor__national_id=fnr)
    contact_id = await post_contact(client, api_key, payload)
    await drain(settings, clock=open_clock())
    first = (await contact_json(client, api_key, contact_id))["attempts"][0]["id"]
    moved_to = {"lines": ["Nyveien 7"], "postal_code": "5003", "city": "BERGEN", "country": "NO"}
    await return_letter(sessions, redis, settings, contact_id, first, new_address=moved_to)
    second = (await contact_json(client, api_key, contact_id))["attempts"][1]["id"]
    await return_letter(sessions, redis, settings, contact_id, second)  # back again: never a third time
    ref = await debtor_ref(sessions, "D-5")

    otto = await signed_in(console_factory, "otto")
    page = await otto.page(f"/console/debtors/{ref}")

    steps = [e.text for e in of_type(page, "returned_mail")]
    assert any("Returned letter, folkeregisteret: skipped: not configured" in s for s in steps), steps
    assert any("Returned letter, posten: reported a new address with the return" in s for s in steps), steps
    [resent] = of_type(page, "address_updated_resent")
    assert (
        "Sent again to the address found (posten)" in resent.text and "Nyveien 7, 5003 BERGEN" in resent.text
    )
    assert len(of_type(page, "attempt")) == 2
    reports = [e.text for e in of_type(page, "carrier_event")]
    assert len(reports) == 2 and all("returned" in r for r in reports)
    [task_entry] = of_type(page, "operator_task")
    assert "Task for an operator: no address found" in task_entry.text
    [task] = by_testid(page, "task-row")
    assert "no new address, and no e-mail or mobile to ask for one" in task.text
    [found] = by_testid(page, "found-address")
    assert "Nyveien 7, 5003 BERGEN" in found.text and "posten" in found.text and "unusable" in found.text
    original = next(p for p in by_testid(page, "contact-point") if "Storgata 5" in p.text)
    assert "unusable: bounced or returned" in original.text
    assert one(page, "national-id").text == mask_national_id(fnr)
    assert fnr not in page
    assert_no_personal_data_in_urls(page, payload)

    # the contact came back twice: an operator may try it again (another channel, another address)
    contact_page = await otto.page(f"/console/contacts/{contact_id}")
    assert [a.attrs["data-attempt-status"] for a in by_testid(contact_page, "attempt")] == [
        "returned",
        "returned",
    ]
    form = one(contact_page, "retry-contact")
    assert form.attrs["action"] == "/console/actions/retry-contact"
    assert f'name="contact_id" value="{contact_id}"' in contact_page
    assert not by_testid(contact_page, "settle")
    await assert_csrf_in_every_form(otto, f"/console/contacts/{contact_id}")
    vera = await signed_in(console_factory, "vera")
    assert not by_testid(await vera.page(f"/console/contacts/{contact_id}"), "retry-contact")


async def test_a_contact_with_no_delivery_report_offers_operators_to_settle_it(
    settings: Settings,
    client: Any,
    api_key: str,
    sessions: Any,
    redis: Any,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    payload = contact_payload(
        6, channel="sms", debtor__addresses=[], debtor__emails=[], debtor__electronic_notice_evidence=[]
    )
    contact_id = await post_contact(client, api_key, payload)
    clock = open_clock()
    await drain(settings, clock=clock)  # to the outbox: no carrier will ever report on it
    impatient = settings.model_copy(update={"delivery_report_timeout_s": {"sms": 0.0}})
    ctx: dict[str, Any] = {"settings": impatient, "redis": redis, "clock": clock}
    await startup(ctx)
    try:
        await sweep(ctx)
    finally:
        await shutdown(ctx)
    ref = await debtor_ref(sessions, "D-6")

    otto = await signed_in(console_factory, "otto")
    contact_page = await otto.page(f"/console/contacts/{contact_id}")
    assert one(contact_page, "contact-status").text == "sent"
    assert "the carrier never reported on it" in one(contact_page, "contact").text
    form = one(contact_page, "settle")
    assert form.attrs["action"] == "/console/actions/settle"
    assert 'name="outcome" value="sent"' in contact_page and 'name="outcome" value="not_sent"' in contact_page
    assert "it is recorded as sent" in form.text and "the orchestrator may send it again" in form.text
    assert not by_testid(contact_page, "retry-contact")
    await assert_csrf_in_every_form(otto, f"/console/contacts/{contact_id}")
    vera = await signed_in(console_factory, "vera")
    assert not by_testid(await vera.page(f"/console/contacts/{contact_id}"), "settle")

    page = await otto.page(f"/console/debtors/{ref}")
    [flag] = of_type(page, "needs_reconciliation")
    assert "we do not know whether the carrier took it" in flag.text
    assert "no sms delivery report within 0 s" in flag.text
