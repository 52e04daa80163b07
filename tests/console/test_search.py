"""Searching the contact log in the console: contacts made through the real API and sent by a real worker,
found again by each filter, page by page and as CSV, with no personal data in any URL."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from orchestrator.console.pages import OSLO
from orchestrator.models import ConsoleAudit, ConsoleSearch
from orchestrator.schemas import CHANNELS, KINDS, STATUSES
from orchestrator.settings import Settings
from tests.conftest import bearer, drain
from tests.console.conftest import Console, signed_in
from tests.factories import contact_payload, national_id, open_clock

SEARCH_URL = re.compile(r"^/console/search/[A-Za-z0-9_-]{22}$")
CONTACT_LINK = re.compile(r'href="/console/contacts/([0-9A-Z]{26})"')
URLS = re.compile(r'(?:href|action|src)="([^"]*)"')
KARI_ID = national_id("010190", "120")


async def create(client: TestClient[Any, Any], key: str, n: int, **overrides: Any) -> str:
    r = await client.post("/v1/contacts", json=contact_payload(n, **overrides), headers=bearer(key))
    assert r.status == 202, await r.text()
    contact_id: str = (await r.json())["id"]
    return contact_id


async def contact(client: TestClient[Any, Any], key: str, contact_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/contacts/{contact_id}", headers=bearer(key))
    assert r.status == 200
    body: dict[str, Any] = await r.json()
    return body


async def search(console: Console, **criteria: str) -> str:
    """POST the search form; the search's URL."""
    await console.page("/console/search")
    response = await console.post("/console/search", criteria, allow_redirects=False)
    assert response.status == 303, await response.text()
    location: str = response.headers["Location"]
    assert SEARCH_URL.match(location), location
    return location


async def found(console: Console, **criteria: str) -> list[str]:
    """The contact ids on the first page of results, in the order shown."""
    page = await console.page(await search(console, **criteria))
    return CONTACT_LINK.findall(page)


def message_beside(page: str, field: str) -> str:
    """The message shown inside the label of ``field`` (beside the input)."""
    label = re.search(
        rf'<label class="invalid">(?:(?!</label>).)*name="{field}"(?:(?!</label>).)*</label>', page, re.S
    )
    assert label is not None, f"no message beside {field}"
    found = re.search(rf'data-testid="error-{field}">([^<]*)<', label.group(0))
    assert found is not None, f"no message beside {field}"
    return html.unescape(found.group(1))


async def make_log(client: TestClient[Any, Any], key: str, settings: Settings) -> dict[str, str]:
    """Five contacts of four debtors, sent (or held) by a real worker."""
    ids = {
        "kari_reminder": await create(
            client,
            key,
            1,
            channel="email",
            debtor__name="Kari Nordmann",
            debtor__national_id=KARI_ID,
            debtor__emails=["kari.nordmann@example.no"],
            debtor__electronic_notice_evidence=[],
        ),
        "kari_varsel": await create(
            client,
            key,
            1,
            idempotency_key="eksempel-as/inv-1/inkassovarsel",
            kind="inkassovarsel",
            channel="letter",
            debtor__name="Kari Nordmann",
            debtor__national_id=KARI_ID,
            debtor__emails=["kari.nordmann@example.no"],
            debtor__electronic_notice_evidence=[],
        ),
        "ola": await create(client, key, 2, channel="sms", debtor__name="Ola Nordmann-Berg"),
        "ase": await create(
            client, key, 3, channel="email", kind="payment_plan_offer", debtor__name="Åse Ødegård"
        ),
        "per": await create(client, key, 4, debtor__name="Per Hansen"),
    }
    r = await client.post(
        "/v1/cases/C-4/events",
        json={"type": "dispute_raised", "at": datetime.now(OSLO).isoformat()},
        headers=bearer(key),
    )
    assert r.status == 201, await r.text()
    await drain(settings, clock=open_clock())
    return ids


async def test_the_search_page_shows_the_form_and_the_newest_contacts_to_a_viewer(
    client: TestClient[Any, Any],
    api_key: str,
    settings: Settings,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    ids = await make_log(client, api_key, settings)
    console = await signed_in(console_factory, "vera")
    page = await console.page("/console/search")
    assert 'data-testid="search-form"' in page
    for name in ("debtor_id", "case_id", "name", "phone", "email", "status", "channel", "kind"):
        assert f'name="{name}"' in page
    assert 'name="since" type="date"' in page and 'name="until" type="date"' in page
    for value in (*STATUSES, *CHANNELS, *KINDS):
        assert f'<option value="{value}"' in page
    # newest first, without searching
    assert CONTACT_LINK.findall(page) == sorted(ids.values(), reverse=True)
    assert page.count('data-testid="result-row"') == 5
    assert "Kari Nordmann" in page and "Åse Ødegård" in page
    assert KARI_ID not in page and KARI_ID[:6] not in page


async def test_each_filter_finds_its_contacts(
    client: TestClient[Any, Any],
    api_key: str,
    settings: Settings,
    operators: dict[str, str],
    console_factory: Any,
) -> None:
    ids = await make_log(client, api_key, settings)
    every = {name: await contact(client, api_key, cid) for name, cid in ids.items()}
    assert every["ola"]["decision"]["channel"] == "sms"
    assert every["kari_varsel"]["decision"]["channel"] == "letter"
    assert every["per"]["status"] == "held"
    console = await signed_in(console_factory, "vera")

    def newest_first(*names: str) -> list[str]:
        return sorted((ids[n] for n in names), reverse=True)

    today = datetime.now(OSLO).date()
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({}, newest_first(*ids)),
        ({"debtor_id": "D-1"}, newest_first("kari_reminder", "kari_varsel")),
        ({"debtor_id": "d-1"}, []),  # exact: upstream's ids are case-sensitive
        ({"case_id": "C-2"}, newest_first("ola")),
        ({"name": "nordmann"}, newest_first("kari_reminder", "kari_varsel", "ola")),
        ({"name": "NORD"}, newest_first("kari_reminder", "kari_varsel", "ola")),
        ({"name": "Nordmann Berg"}, newest_first("ola")),
        ({"name": "kari nordmann"}, newest_first("kari_reminder", "kari_varsel")),
        ({"name": "berg kari"}, []),  # every word must match the same debtor
        ({"name": "ÅSE ØDEG"}, newest_first("ase")),  # æøå are letters of their own, folded by case only
        ({"name": "Åse Ødegård"}, newest_first("ase")),
        ({"name": "K Hansen"}, newest_first("per")),  # one-letter words are left out
        ({"phone": "910 00 002"}, newest_first("ola")),
        ({"phone": "+47 91000002"}, newest_first("ola")),
        ({"phone": "91000009"}, []),
        ({"email": "kari.nordmann@example.no"}, newest_first("kari_reminder", "kari_varsel")),
        ({"email": "KARI.NORDMANN@EXAMPLE.NO"}, newest_first("kari_reminder", "kari_varsel")),
        ({"email": "kari.nord"}, newest_first("kari_reminder", "kari_varsel")),
        ({"email": "debtor"}, newest_first("ola", "ase", "per")),
        ({"email": "debtor3@"}, newest_first("ase")),
        ({"email": "kari.nordmann@example.n"}, []),  # a whole address is matched exactly
        ({"status": "held"}, newest_first("per")),
        ({"status": every["ola"]["status"], "channel": "sms"}, newest_first("ola")),
        ({"channel": "letter"}, newest_first("kari_varsel")),
        ({"channel": "email"}, newest_first("kari_reminder", "ase")),
        ({"kind": "inkassovarsel"}, newest_first("kari_varsel")),
        ({"kind": "payment_plan_offer", "name": "åse"}, newest_first("ase")),
        (
            {"kind": "reminder", "debtor_id": "D-1", "channel": "any", "status": "any"},
            newest_first("kari_reminder"),
        ),
        ({"since": today.isoformat(), "until": today.isoformat()}, newest_first(*ids)),
        ({"since": today.isoformat()}, newest_first(*ids)),
        ({"until": today.isoformat(), "name": "hansen"}, newest_first("per")),
        ({"since": (today + timedelta(days=1)).isoformat()}, []),
        ({"until": (today - timedelta(days=1)).isoformat()}, []),
    ]
    for criteria, expected in cases:
        assert await found(console, **criteria) == expected, criteria

    page = await console.page(await search(console, name="nordmann", channel="letter"))
    criteria_shown = page.split('data-testid="criteria"', 1)[1].split("</dl>", 1)[0]
    assert "“nordmann”" in criteria_shown and "letter" in criteria_shown
    assert 'value="nordmann"' in page  # the form keeps what was searched, to refine it
    assert 'data-testid="no-results"' in await console.page(await search(console, name="nobody"))


async def test_invalid_input_is_shown_back_with_a_message_beside_each_field(
    operators: dict[str, str], console_factory: Any, sessions: Any
) -> None:
    console = await signed_in(console_factory, "otto")
    await console.page("/console/search")
    typed = {
        "name": "K",
        "phone": "12 34",
        "email": "kari@@example.no",
        "since": "2026-02-30",
        "until": "2026-01-01",
        "status": "lost",
        "debtor_id": "D-77",
    }
    response = await console.post("/console/search", typed)
    assert response.status == 400
    page = await response.text()
    assert 'data-testid="search-form"' in page
    assert "at least one name word of 2 or more letters" in message_beside(page, "name")
    assert "“12 34” is not a valid phone number: type the whole number" in message_beside(page, "phone")
    assert "only one @" in message_beside(page, "email")
    assert "“2026-02-30” is not a date: enter it as YYYY-MM-DD" in message_beside(page, "since")
    assert "Choose a status from the list." in message_beside(page, "status")
    assert 'data-testid="error-debtor_id"' not in page
    for value in ("K", "12 34", "kari@@example.no", "2026-02-30", "D-77"):
        assert f'value="{value}"' in page, value

    response = await console.post("/console/search", {"since": "2026-03-02", "until": "2026-03-01"})
    assert response.status == 400
    assert "The end date is before the start date." in await response.text()
    for email, message in (("a b@example.no", "no spaces"), ("@example.no", "start of the address")):
        response = await console.post("/console/search", {"email": email})
        assert response.status == 400 and message in await response.text()
    response = await console.post("/console/search", {"since": "1899-12-31"})
    assert "Enter a date from 2000-01-01 to 2099-12-31." in await response.text()
    async with sessions() as session:
        assert list((await session.execute(select(ConsoleSearch))).scalars()) == []


async def test_no_personal_data_in_any_url_and_only_field_names_in_the_access_log(
    client: TestClient[Any, Any],
    api_key: str,
    settings: Settings,
    operators: dict[str, str],
    console_factory: Any,
    sessions: Any,
) -> None:
    ids = await make_log(client, api_key, settings)
    console = await signed_in(console_factory, "otto")
    location = await search(
        console, name="Kari Nordmann", phone="910 00 001", email="kari.nordmann@example.no"
    )
    page = await console.page(location)
    assert CONTACT_LINK.findall(page) == sorted([ids["kari_reminder"], ids["kari_varsel"]], reverse=True)
    urls = URLS.findall(page)
    assert f"{location}.csv" in urls
    assert any(url.startswith("/console/debtors/") for url in urls)
    for url in [location, *urls]:
        lowered = url.lower()
        for secret in ("kari", "nordmann", "91000001", "example.no", "D-1", "C-1", KARI_ID):
            assert secret.lower() not in lowered, (secret, url)
    async with sessions() as session:
        audits = list(
            (await session.execute(select(ConsoleAudit).where(ConsoleAudit.action == "search"))).scalars()
        )
    assert [a.detail["fields"] for a in audits] == [["email", "name", "phone"]]
    assert "kari" not in str(audits[0].detail).lower()


async def test_a_search_is_only_for_the_operator_who_made_it_and_only_for_a_day(
    operators: dict[str, str], console_factory: Any, sessions: Any
) -> None:
    otto = await signed_in(console_factory, "otto")
    location = await search(otto, name="nordmann")
    assert (await otto.get(location)).status == 200
    vera = await signed_in(console_factory, "vera")
    for path in (location, f"{location}.csv", "/console/search/AAAAAAAAAAAAAAAAAAAAAA"):
        page = await vera.page(path, status=404)
        assert "This search has expired" in page and "Search again" in page
    async with sessions.begin() as session:
        await session.execute(
            update(ConsoleSearch).values(created_at=datetime.now(OSLO) - timedelta(days=1, minutes=1))
        )
    assert "This search has expired" in await otto.page(location, status=404)


async def test_results_come_fifty_a_page_newest_first(
    client: TestClient[Any, Any], api_key: str, operators: dict[str, str], console_factory: Any
) -> None:
    payloads = [contact_payload(n, debtor__name=f"Kari Pagesen {n}") for n in range(1, 121)]
    r = await client.post("/v1/contacts:batch", json={"contacts": payloads}, headers=bearer(api_key))
    assert r.status == 200
    made = sorted((item["id"] for item in (await r.json())["results"]), reverse=True)
    assert len(made) == 120
    console = await signed_in(console_factory, "vera")
    location = await search(console, name="pagesen")
    seen: list[str] = []
    path: str | None = location
    pages_seen = 0
    while path is not None:
        page = await console.page(path)
        pages_seen += 1
        seen += CONTACT_LINK.findall(page)
        if pages_seen > 1:
            assert f'href="{location}" data-testid="first-page"' in page
        following = re.search(r'href="([^"]+)" data-testid="next-page"', page)
        path = following.group(1).replace("&amp;", "&") if following else None
        if path is not None:
            assert path.startswith(f"{location}?page=")
    assert pages_seen == 3
    assert seen == made
    assert (await console.get(f"{location}?page=not-a-cursor")).status == 400


async def test_csv_export_has_every_row_and_no_national_id(
    client: TestClient[Any, Any],
    api_key: str,
    settings: Settings,
    operators: dict[str, str],
    console_factory: Any,
    sessions: Any,
) -> None:
    ids = await make_log(client, api_key, settings)
    formula = await create(client, api_key, 9, debtor__name="=HYPERLINK(1) Nordmann")
    console = await signed_in(console_factory, "vera")
    location = await search(console, name="nordmann")
    response = await console.get(f"{location}.csv")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="search-')
    assert response.headers["Cache-Control"] == "no-store"
    body = (await response.read()).decode("utf-8")
    assert body.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(body[1:])))
    assert rows[0] == [
        "contact_id",
        "created_at",
        "debtor_id",
        "debtor_name",
        "case_id",
        "kind",
        "channel",
        "status",
        "status_reason",
        "send_at",
        "updated_at",
    ]
    expected = sorted([ids["kari_reminder"], ids["kari_varsel"], ids["ola"], formula], reverse=True)
    assert [row[0] for row in rows[1:]] == expected
    by_id = {row[0]: row for row in rows[1:]}
    varsel = await contact(client, api_key, ids["kari_varsel"])
    assert by_id[varsel["id"]][2:9] == [
        "D-1",
        "Kari Nordmann",
        "C-1",
        "inkassovarsel",
        "letter",
        varsel["status"],
        varsel["status_reason"] or "",
    ]
    assert by_id[formula][3] == "'=HYPERLINK(1) Nordmann"  # a spreadsheet must not run it
    assert datetime.fromisoformat(by_id[ids["ola"]][1]).utcoffset() in (
        timedelta(hours=1),
        timedelta(hours=2),
    )
    assert KARI_ID not in body and KARI_ID[:6] not in body
    async with sessions() as session:
        audit = (
            await session.execute(select(ConsoleAudit).where(ConsoleAudit.action == "export_search"))
        ).scalar_one()
    assert audit.detail["rows"] == 4 and audit.detail["fields"] == ["name"]

    empty = await console.get(f"{await search(console, name='nobody')}.csv")
    assert (await empty.read()).decode("utf-8").strip() == "\ufeff" + ",".join(rows[0])
