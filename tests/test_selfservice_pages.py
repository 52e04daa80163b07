"""The self-service page in the language of the contact that issued the link, and commitment on it: the debtor
chooses the date they will pay or proposes a payment plan, each recorded once as a case event."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from orchestrator import chat_links, commitments, selfservice
from orchestrator import contact_log as store
from orchestrator.db import write_session
from orchestrator.models import CaseEvent, ChatLink
from orchestrator.rendering import date_en, date_no
from orchestrator.settings import Settings
from tests.conftest import bearer, drain
from tests.factories import contact_payload, open_clock

URL = re.compile(r"https?://\S+/s/[A-Za-z0-9_-]+")
TOTAL = Decimal("1285.00")  # contact_payload: principal 1250.00 and a reminder fee of 35.00


def _sms_texts(settings: Settings) -> list[str]:
    return [
        json.loads(line)["text"]
        for path in sorted(Path(settings.resolved_outbox_dir, "sms").glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def _oslo_today() -> date:
    return commitments.date_window(datetime.now(UTC)).first


async def _link(
    client: TestClient[Any, Any], api_key: str, sessions: Any, n: int, language: str = "nb"
) -> str:
    """A claim link issued for a contact in ``language`` of case C-{n}, as the worker issues it."""
    r = await client.post("/v1/contacts", json=contact_payload(n, language=language), headers=bearer(api_key))
    assert r.status == 202, await r.text()
    issued = chat_links.issue(
        base_url="https://betal.example.no",
        debtor_id=f"D-{n}",
        case_id=f"C-{n}",
        contact_id=(await r.json())["id"],
        now=datetime.now(UTC),
        ttl_days=30,
    )
    async with write_session(sessions) as session:
        await store.insert_chat_link(session, issued.row)
    return urlsplit(issued.url).path


async def _case_events(sessions: Any, case_id: str) -> list[CaseEvent]:
    async with sessions() as session:
        rows = await session.execute(
            select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
        )
        return list(rows.scalars())


async def _timeline(
    client: TestClient[Any, Any], api_key: str, debtor_id: str, type: str
) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/debtors/{debtor_id}/timeline", headers=bearer(api_key))
    assert r.status == 200
    return [item for item in (await r.json())["items"] if item["type"] == type]


# ------------------------------------------------------------------------------------------------ languages


async def test_a_link_sent_to_a_nynorsk_contact_opens_the_page_in_nynorsk(
    client: TestClient[Any, Any], settings: Settings, api_key: str, sessions: Any
) -> None:
    # The whole way: the worker sends the SMS and issues the link for the contact.
    payload = contact_payload(
        1, language="nn", channel="sms", debtor__emails=[], debtor__electronic_notice_evidence=[]
    )
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    assert r.status == 202, await r.text()
    await drain(settings, clock=open_clock())
    [url] = [m.group(0) for text in _sms_texts(settings) if (m := URL.search(text))]

    page = await client.get(urlsplit(url).path)
    assert page.status == 200
    body = await page.text()
    assert '<html lang="nn">' in body
    due = date.fromisoformat(payload["case"]["due_date"])
    for needle in (
        "Hovudstol",
        "Purregebyr",
        f"Forfallsdatoen var {date_no(due)}",
        "1 285,00 kr",
        "Vel datoen du betaler",
        "Foreslå ein nedbetalingsavtale",
        "Eg er usamd i kravet",
    ):
        assert needle in body, needle
    for bokmal in ("Hovedstol", "Velg datoen", "Jeg er uenig"):
        assert bokmal not in body


async def test_the_page_of_an_english_contact_is_in_english_with_english_amounts_and_dates(
    client: TestClient[Any, Any], api_key: str, sessions: Any
) -> None:
    path = await _link(client, api_key, sessions, 2, language="en")
    body = await (await client.get(path)).text()
    assert '<html lang="en">' in body
    due = date.fromisoformat(contact_payload(2)["case"]["due_date"])
    last = _oslo_today() + timedelta(days=30)
    for needle in (
        "Principal",
        "Reminder fee",
        "NOK 1,250.00",
        "NOK 35.00",
        "NOK 1,285.00",
        f"It was due on {date_en(due)}",
        "Choose the date you will pay",
        f"up to and including {date_en(last)} (within 30 days)",
        "Propose a payment plan",
        "3 instalments of NOK 429.00",
        "I disagree with the claim",
    ):
        assert needle in body, needle
    assert not re.search(r"\bkr\b", body)
    assert "Hovedstol" not in body

    answer = await client.post(f"{path}/dispute", data={"note": "Already paid"})
    assert answer.status == 200
    assert '<html lang="en">' in (text := await answer.text())
    assert "We have received your objection" in text


async def test_a_link_without_a_contact_speaks_bokmal(
    client: TestClient[Any, Any], api_key: str, sessions: Any
) -> None:
    path = await _link(client, api_key, sessions, 3, language="en")
    async with write_session(sessions) as session:
        [link] = (await session.execute(select(ChatLink))).scalars().all()
        link.contact_id = None
    body = await (await client.get(path)).text()
    assert '<html lang="nb">' in body
    assert "Hovedstol" in body and "1 285,00 kr" in body


@pytest.mark.parametrize("language", selfservice.LANGUAGES)
@pytest.mark.parametrize(
    "page",
    [
        "case.html",
        "invalid.html",
        "dispute_received.html",
        "address.html",
        "address_saved.html",
        "unsubscribe.html",
        "unsubscribed.html",
        "payment_date_chosen.html",
        "payment_plan_saved.html",
    ],
)
def test_every_page_has_every_word_in_every_language(page: str, language: str) -> None:
    plan = commitments.plan_for(TOTAL, 3)
    context: dict[str, Any] = {
        "creditor": "Eksempel AS",
        "reference": "Faktura 1001",
        "principal": Decimal("1250.00"),
        "costs": [{"label": "Purregebyr", "amount": Decimal("35.00")}],
        "total": TOTAL,
        "due_date": date(2026, 10, 1),
        "kid": "200100000018",
        "account_number": "86011117947",
        "case_open": True,
        "actions": {
            "dispute": "/s/t/dispute",
            "payment_date": "/s/t/payment-date",
            "payment_plan": "/s/t/payment-plan",
        },
        "window": commitments.date_window(datetime(2026, 10, 10, 12, tzinfo=UTC)),
        "chosen_date": date(2026, 10, 20),
        "date_error": commitments.DateProblem("after_horizon", date(2026, 12, 24)),
        "date_value": "2026-12-24",
        "plan": None,
        "plan_choices": commitments.installment_choices(TOTAL),
        "plan_error": True,
        "errors": ["lines", "postal_code", "city"],
        "form": {},
        "chosen": date(2026, 10, 20),
        "proposed_on": None,
        "back": "/s/t",
    }
    variants = [context]
    if page == "payment_plan_saved.html":  # a new plan, and the one proposed before
        variants = [{**context, "plan": plan}, {**context, "plan": plan, "proposed_on": date(2026, 10, 9)}]
    for variant in variants:
        html = selfservice.render(page, language, **variant)
        assert f'<html lang="{language}">' in html
        assert 'lang="en"' not in html.split("<body>", 1)[1]  # the page knows its reader: no English note


def test_a_page_that_cannot_know_its_reader_is_in_bokmal_with_a_line_in_english() -> None:
    html = selfservice.render("invalid.html")
    assert '<html lang="nb">' in html
    assert "Lenken virker ikke lenger" in html
    assert '<p lang="en">This link has expired or is not valid.</p>' in html


# ---------------------------------------------------------------------------------------- a payment date


async def test_choosing_a_date_records_one_case_event_and_a_timeline_entry(
    client: TestClient[Any, Any], api_key: str, sessions: Any
) -> None:
    path = await _link(client, api_key, sessions, 4)
    page = await (await client.get(path)).text()
    today = _oslo_today()
    assert f'min="{today.isoformat()}"' in page
    assert f'max="{(today + timedelta(days=30)).isoformat()}"' in page
    assert f"til og med {date_no(today + timedelta(days=30))} (innen 30 dager)" in page

    chosen = today + timedelta(days=30)  # the last date that may be chosen
    answer = await client.post(f"{path}/payment-date", data={"date": chosen.isoformat()})
    assert answer.status == 200
    text = await answer.text()
    assert "Takk, datoen er lagret" in text
    assert f"Vi har notert at du betaler 1 285,00 kr senest {date_no(chosen)}." in text
    assert "8601 11 17947" in text  # how to pay, right there

    [event] = await _case_events(sessions, "C-4")
    assert event.type == "payment_date_chosen"
    assert event.data == {"date": chosen.isoformat(), "source": "self_service"}
    [entry] = await _timeline(client, api_key, "D-4", "case_payment_date_chosen")
    assert entry["source"] == "self_service"
    assert entry["case_id"] == "C-4"
    assert entry["detail"]["date"] == chosen.isoformat()
    # The page remembers it.
    assert f"Du har sagt at du betaler senest {date_no(chosen)}." in await (await client.get(path)).text()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (-1, "{given} er før i dag. Velg en dato fra i dag ({first}) til og med {last}."),
        (31, "{given} er mer enn 30 dager fram i tid. Velg en dato fra i dag ({first}) til og med {last}."),
        ("neste fredag", "Det er ikke en gyldig dato. Velg en dato fra i dag ({first}) til og med {last}."),
        ("", "Velg en dato fra i dag ({first}) til og med {last}."),
    ],
)
async def test_a_date_outside_the_horizon_is_refused_and_nothing_recorded(
    client: TestClient[Any, Any], api_key: str, sessions: Any, given: int | str, message: str
) -> None:
    path = await _link(client, api_key, sessions, 5)
    today = _oslo_today()
    raw = (today + timedelta(days=given)).isoformat() if isinstance(given, int) else given
    answer = await client.post(f"{path}/payment-date", data={"date": raw})
    assert answer.status == 422
    text = await answer.text()
    expected = message.format(
        given=date_no(date.fromisoformat(raw)) if isinstance(given, int) else "",
        first=date_no(today),
        last=date_no(today + timedelta(days=30)),
    )
    assert expected in text
    assert '<input id="date" name="date" type="date"' in text  # the form back
    if isinstance(given, int):
        assert f'value="{raw}"' in text
    assert await _case_events(sessions, "C-5") == []
    assert await _timeline(client, api_key, "D-5", "case_payment_date_chosen") == []


# ---------------------------------------------------------------------------------------- a payment plan


async def test_a_plan_proposal_records_the_monthly_amount_and_a_second_records_nothing(
    client: TestClient[Any, Any], api_key: str, sessions: Any
) -> None:
    path = await _link(client, api_key, sessions, 6)
    answer = await client.post(f"{path}/payment-plan", data={"installments": "3"})
    assert answer.status == 200
    text = await answer.text()
    assert "Takk, forslaget er mottatt" in text
    # 1 285,00 / 3 = 428,33…, rounded up to whole kroner; the last instalment is what remains.
    assert "du vil betale 1 285,00 kr i 3 månedlige avdrag på 429,00 kr." in text
    assert "Det siste avdraget blir 427,00 kr." in text

    [event] = await _case_events(sessions, "C-6")
    assert event.type == "payment_plan_agreed"
    assert event.data == {
        "installments": 3,
        "monthly_amount": "429.00",
        "proposed_by": "debtor",
        "source": "self_service",
    }
    [entry] = await _timeline(client, api_key, "D-6", "case_payment_plan_agreed")
    assert entry["source"] == "self_service"

    # The same link again, with another plan: the first one stands and is shown.
    again = await client.post(f"{path}/payment-plan", data={"installments": "6"})
    assert again.status == 200
    text = await again.text()
    assert "Du har allerede foreslått en nedbetalingsavtale" in text
    assert "3 månedlige avdrag på 429,00 kr" in text
    assert len(await _case_events(sessions, "C-6")) == 1
    assert len(await _timeline(client, api_key, "D-6", "case_payment_plan_agreed")) == 1
    # The page shows the plan instead of the form.
    page = await (await client.get(path)).text()
    assert "Du har foreslått en nedbetalingsavtale: 3 månedlige avdrag på 429,00 kr." in page
    assert 'name="installments"' not in page


async def test_a_plan_proposal_in_english(client: TestClient[Any, Any], api_key: str, sessions: Any) -> None:
    path = await _link(client, api_key, sessions, 7, language="en")
    text = await (await client.post(f"{path}/payment-plan", data={"installments": "12"})).text()
    assert "you will pay NOK 1,285.00 in 12 monthly instalments of NOK 108.00." in text
    assert "The last instalment will be NOK 97.00." in text
    [event] = await _case_events(sessions, "C-7")
    assert (event.data["installments"], event.data["monthly_amount"]) == (12, "108.00")


@pytest.mark.parametrize("installments", ["1", "13", "0", "tre", ""])
async def test_a_plan_the_page_does_not_offer_is_refused(
    client: TestClient[Any, Any], api_key: str, sessions: Any, installments: str
) -> None:
    path = await _link(client, api_key, sessions, 8)
    answer = await client.post(f"{path}/payment-plan", data={"installments": installments})
    assert answer.status == 422
    text = await answer.text()
    assert "Velg et antall avdrag mellom 2 og 12." in text
    assert 'name="installments"' in text
    assert await _case_events(sessions, "C-8") == []


@pytest.mark.parametrize(
    ("total", "most"),
    [
        (Decimal("1285.00"), 12),
        (Decimal("122.00"), 12),
        (Decimal("100.00"), 10),  # 11 instalments of 10 kr would leave nothing for the last
        (Decimal("3.00"), 3),
        (Decimal("1.00"), None),
    ],
)
def test_a_plan_never_adds_up_to_more_than_the_claim(total: Decimal, most: int | None) -> None:
    choices = commitments.installment_choices(total)
    assert [plan.installments for plan in choices] == (list(range(2, most + 1)) if most else [])
    for plan in choices:
        assert plan.monthly_amount == plan.monthly_amount.to_integral_value()
        assert 0 < plan.last_amount <= plan.monthly_amount
        assert plan.monthly_amount * (plan.installments - 1) + plan.last_amount == total


# ------------------------------------------------------------------------------------- nothing recorded


async def test_a_held_case_or_a_revoked_link_records_nothing(
    client: TestClient[Any, Any], api_key: str, sessions: Any
) -> None:
    held = await _link(client, api_key, sessions, 9, language="nn")
    assert (await client.post(f"{held}/dispute", data={"note": ""})).status == 200
    revoked = await _link(client, api_key, sessions, 10)
    r = await client.post(
        "/v1/cases/C-10/events",
        json={"type": "paid_in_full", "at": datetime.now(UTC).isoformat()},
        headers=bearer(api_key),
    )
    assert r.status == 201  # revokes the case's links
    date_form = {"date": (_oslo_today() + timedelta(days=3)).isoformat()}
    plan_form = {"installments": "3"}

    for path, case_id in ((held, "C-9"), (revoked, "C-10"), ("/s/" + "A" * 32, None)):
        before = await _case_events(sessions, case_id) if case_id else []
        for action, form in (("payment-date", date_form), ("payment-plan", plan_form)):
            answer = await client.post(f"{path}/{action}", data=form)
            assert answer.status == 410
            text = await answer.text()
            assert "Faktura" not in text and "Eksempel AS" not in text
        if case_id:
            assert [e.type for e in await _case_events(sessions, case_id)] == [e.type for e in before]
    # A held case's own link still works, so that page may be in the contact's language.
    assert (
        "Lenka verkar ikkje lenger"
        in await (await client.post(f"{held}/payment-plan", data=plan_form)).text()
    )
    assert [e.type for e in await _case_events(sessions, "C-9")] == ["dispute_raised"]
    assert [e.type for e in await _case_events(sessions, "C-10")] == ["paid_in_full"]
    # The held page offers neither form.
    page = await (await client.get(held)).text()
    assert "Saka er sett på vent eller avslutta." in page
    assert 'name="date"' not in page and 'name="installments"' not in page
