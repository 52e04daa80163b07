"""The console's reports from real flows: contacts through the API and the worker to a real SMTP server (one
refused with 550, one bounced by a real DSN to the bounce receiver), the Link Mobility sandbox (delivery
reports back through our webhook) and the letter outbox (returns through the returned-mail loop);
experiments over the API measured on case events. Then the report page, its charts and its CSV files show
the numbers those flows made, for a viewer, and every export is in the access log."""

from __future__ import annotations

import csv
import io
import re
import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiosmtplib
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from orchestrator import auth
from orchestrator.db import write_session
from orchestrator.experiments.assign import assign
from orchestrator.experiments.spec import ExperimentSpec
from orchestrator.experiments.stats import newcombe_difference, wilson
from orchestrator.models import (
    Attempt,
    Case,
    ConsoleAudit,
    Contact,
    Debtor,
    ReturnedLetter,
    new_id,
    ulid_floor,
)
from orchestrator.policy.rules import load_rules
from orchestrator.policy.windows import is_open
from orchestrator.sandbox.linkmobility import LinkMobilitySandbox, serve
from orchestrator.settings import Settings
from tests.conftest import SmtpRecorder, bearer, drain
from tests.console.conftest import Console, signed_in
from tests.factories import contact_payload, open_clock
from webhooks.ingress import event_rows, record_events
from webhooks.returns import CARRIER, ReturnRow, return_event

OSLO = ZoneInfo("Europe/Oslo")
SVG = "{http://www.w3.org/2000/svg}"
GATE = "REPORTS"
SECRET = "reports-webhook-secret-1"
BOUNCES = Path(__file__).parent.parent / "webhooks" / "bounces"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def link_server() -> AsyncIterator[tuple[LinkMobilitySandbox, str]]:
    state = LinkMobilitySandbox()
    async with serve(state) as url:
        yield state, url


@pytest.fixture
def link(link_server: tuple[LinkMobilitySandbox, str]) -> LinkMobilitySandbox:
    return link_server[0]


@pytest.fixture
def settings(
    settings: Settings, smtp_server: SmtpRecorder, link_server: tuple[LinkMobilitySandbox, str]
) -> Settings:
    """Every carrier for real: the SMTP server, a bounce receiver, Link Mobility with delivery reports back to
    our webhook, letters to the outbox."""
    link, url = link_server
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_server.port,
            "smtp_security": "none",
            "bounce_smtp_port": _free_port(),
            "linkmobility_url": url,
            "linkmobility_username": link.username,
            "linkmobility_password": SecretStr(link.password),
            "linkmobility_platform_id": link.platform_id,
            "linkmobility_platform_partner_id": link.platform_partner_id,
            "linkmobility_delivery_report_gate": GATE,
            "linkmobility_rate_per_s": 0,
            "linkmobility_webhook_username": "gate",
            "linkmobility_webhook_password": SecretStr(SECRET),
            "linkmobility_webhook_secret": SecretStr(SECRET),
        }
    )


@pytest.fixture
async def vera(console_factory: Any, operators: dict[str, str], link: LinkMobilitySandbox) -> Console:
    """The viewer, signed in; the sandbox's delivery reports go to this very server."""
    console = await signed_in(console_factory, "vera")
    port = console.client.server.port
    link.add_gate(
        GATE, f"http://127.0.0.1:{port}/webhooks/linkmobility/{SECRET}", username="gate", password=SECRET
    )
    return console


# ---- reading what the page shows ----


class _Tables(HTMLParser):
    """Rows of cell texts of every table with a data-testid."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and found.get("data-testid"):
            self._table = str(found["data-testid"])
            self.tables[self._table] = []
        elif self._table and tag == "tr":
            self._row = []
        elif self._row is not None and tag in ("td", "th"):
            self._cell = []
        elif self._cell is not None and tag == "br":
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(re.sub(r"\s+", " ", "".join(self._cell)).strip())
            self._cell = None
        elif tag == "tr" and self._table and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def chart(html: str, chart_id: str) -> ET.Element:
    found = re.search(rf'<svg [^>]*id="{re.escape(chart_id)}".*?</svg>', html, re.S)
    assert found, f"no chart {chart_id}"
    return ET.fromstring(found.group(0))  # noqa: S314 - our own page


def titles(svg: ET.Element, tag: str = "rect") -> list[str]:
    return [t.text or "" for el in svg.iter(f"{SVG}{tag}") for t in el.findall(f"{SVG}title")]


def legend(svg: ET.Element) -> list[str]:
    group = svg.find(f"{SVG}g[@class='legend']")
    return [] if group is None else [t.text or "" for t in group.findall(f"{SVG}text")]


async def download(console: Console, path: str) -> list[dict[str, str]]:
    response = await console.get(path)
    body = await response.read()
    assert response.status == 200, body.decode("utf-8", "replace")
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    assert body.startswith("\ufeff".encode())  # Excel opens æøå right
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def oslo_today() -> date:
    return datetime.now(UTC).astimezone(OSLO).date()


async def exports(sessions: Any) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = (
            await session.scalars(
                select(ConsoleAudit).where(ConsoleAudit.action == "export_report").order_by(ConsoleAudit.id)
            )
        ).all()
    return [row.detail for row in rows]


# ---- driving the flows ----


async def enqueue(console: Console, key: str, payload: dict[str, Any]) -> str:
    r = await console.client.post("/v1/contacts", json=payload, headers=bearer(key))
    assert r.status == 202, await r.text()
    contact_id: str = (await r.json())["id"]
    return contact_id


async def contact(console: Console, key: str, contact_id: str) -> dict[str, Any]:
    r = await console.client.get(f"/v1/contacts/{contact_id}", headers=bearer(key))
    assert r.status == 200
    body: dict[str, Any] = await r.json()
    return body


async def bounce(settings: Settings, attempt_id: str) -> None:
    """A real DSN (Postfix, 5.1.1 user unknown) to the VERP address of the attempt."""
    sample = (BOUNCES / "postfix_hard_5.1.1.eml").read_text(encoding="utf-8")
    theirs = re.search(r"bounce\+([0-9A-Z]{26})@", sample)
    assert theirs is not None
    sample = re.sub(
        r"^Message-Id: <[^>]+>", f"Message-Id: <dsn-{uuid.uuid4().hex}@relay>", sample, count=1, flags=re.M
    )
    assert settings.bounce_smtp_port is not None
    await aiosmtplib.send(
        sample.replace(theirs.group(1), attempt_id).encode(),
        sender="MAILER-DAEMON@smtp.relay.example",
        recipients=[f"bounce+{attempt_id}@{settings.bounce_domain}"],
        hostname="127.0.0.1",
        port=settings.bounce_smtp_port,
    )


def email_only(n: int) -> dict[str, Any]:
    return contact_payload(n, channel="email", debtor__phones=[], debtor__addresses=[])


def sms_only(n: int) -> dict[str, Any]:
    return contact_payload(
        n,
        channel="sms",
        debtor__emails=[],
        debtor__electronic_notice_evidence=[],
        debtor__addresses=[],
    )


def letter(n: int, *, phones: list[str] | None = None, kind: str = "reminder") -> dict[str, Any]:
    payload = contact_payload(
        n,
        channel="letter",
        debtor__phones=phones or [],
        debtor__emails=[],
        debtor__electronic_notice_evidence=[],
    )
    return {**payload, "kind": kind}


async def test_volume_rates_and_returned_mail_count_what_the_carriers_did(
    settings: Settings,
    vera: Console,
    api_key: str,
    sessions: Any,
    redis: Any,
    smtp_server: SmtpRecorder,
    link: LinkMobilitySandbox,
) -> None:
    first_day = oslo_today()
    clock = open_clock()
    # e-mail: one refused by the recipient's server at once (550), one bounced later by a DSN, three sent
    refused = await enqueue(vera, api_key, email_only(4))
    smtp_server.scripted = ["550 5.1.1 No such user here"]
    await drain(settings, clock=clock)
    assert (await contact(vera, api_key, refused))["status"] == "failed"
    emails = {n: await enqueue(vera, api_key, email_only(n)) for n in (1, 2, 3, 5)}
    # SMS: three delivered, one the handset never got
    sms = {n: await enqueue(vera, api_key, sms_only(n)) for n in (11, 12, 13, 14)}
    link.set_outcome("failed", destination="+4791000014")
    # letters: four to the outbox; three will come back
    letters = {
        21: await enqueue(vera, api_key, letter(21)),  # comes back with Posten's new address: re-sent
        22: await enqueue(
            vera, api_key, letter(22, phones=["+4791000022"], kind="inkassovarsel")
        ),  # asked by SMS
        23: await enqueue(vera, api_key, letter(23)),  # no new address, no phone or e-mail: operator task
        24: await enqueue(vera, api_key, letter(24)),  # stays sent
    }
    await drain(settings, clock=clock)
    await link.wait_for_reports(4, timeout_s=15)
    attempts = {
        n: (await contact(vera, api_key, cid))["attempts"] for n, cid in {**emails, **letters}.items()
    }
    await bounce(settings, attempts[5][0]["id"])
    for n, new_address in (
        (21, {"lines": ["Nygata 21"], "postal_code": "0159", "city": "OSLO"}),
        (22, None),
        (23, None),
    ):
        row = ReturnRow(
            line=n,
            reference=f"{letters[n]}.{attempts[n][0]['id']}",
            reason="returned_moved",
            returned_at=datetime.now(UTC),
            new_address=new_address and {**new_address, "country": "NO"},
        )
        await record_events(
            sessions, redis, settings.queue_name, event_rows(CARRIER, [return_event(row)], {})
        )
    await drain(settings, clock=clock)
    await link.wait_for_reports(5, timeout_s=15)  # the address request's SMS was delivered too
    await drain(settings, clock=clock)
    last_day = oslo_today()

    # what the flows did, as the API tells it (the reports must agree)
    assert [a["status"] for a in (await contact(vera, api_key, emails[5]))["attempts"]] == ["bounced"]
    assert [a["status"] for a in (await contact(vera, api_key, sms[11]))["attempts"]] == ["delivered"]
    assert [a["status"] for a in (await contact(vera, api_key, sms[14]))["attempts"]] == ["failed"]
    assert [a["status"] for a in (await contact(vera, api_key, letters[21]))["attempts"]] == [
        "returned",
        "sent",
    ]
    assert [a["status"] for a in (await contact(vera, api_key, letters[22]))["attempts"]] == ["returned"]
    # expected, from what was created above
    expected = {
        # channel, carrier: attempts, delivered, bounced, returned, failed, pending
        ("letter", "outbox"): (5, 0, 0, 3, 0, 2),  # 4 letters + 1 re-sent; 3 came back
        ("email", "smtp"): (5, 0, 1, 0, 1, 3),  # no delivery reports over plain SMTP: 3 stay sent
        ("sms", "linkmobility"): (5, 4, 0, 0, 1, 0),  # 4 + the address request, all reported
    }

    html = await vera.page("/console/reports")
    for testid in ("report-volume", "report-rates", "report-returned", "report-experiments"):
        assert f'data-testid="{testid}"' in html
    since = first_day - timedelta(days=29)
    assert f'name="since" value="{since}"' in html and f'name="until" value="{last_day}"' in html
    query = f"since={since}&until={last_day}"
    for testid, path in (("csv-volume", "volume"), ("csv-rates", "rates"), ("csv-returned", "returned")):
        assert (
            f'href="/console/reports/{path}.csv?{query.replace("&", "&amp;")}" data-testid="{testid}"' in html
        )

    # 1. volume: every attempt of today, per channel, in the table, the chart and the CSV
    found = tables(html)
    header, *rows, total = found["volume-table"]
    assert header == ["Day", "letter", "email", "sms", "All channels"]
    assert {row[0] for row in rows} <= {first_day.isoformat(), last_day.isoformat()}
    assert total == ["Total", "5", "5", "5", "15"]
    volume_svg = chart(html, "chart-volume")
    assert legend(volume_svg) == ["letter", "email", "sms"]
    drawn: dict[str, int] = {}
    for title in titles(volume_svg):
        day, rest = title.split(" · ")
        channel, count = rest.split(": ")
        assert day in (first_day.isoformat(), last_day.isoformat())
        drawn[channel] = drawn.get(channel, 0) + int(count.removesuffix(" attempts"))
    assert drawn == {"letter": 5, "email": 5, "sms": 5}
    volume = await download(vera, f"/console/reports/volume.csv?{query}")
    assert set(volume[0]) == {"day", "channel", "attempts"}
    per_channel: dict[str, int] = {}
    for line in volume:
        assert line["day"] in (first_day.isoformat(), last_day.isoformat())
        per_channel[line["channel"]] = per_channel.get(line["channel"], 0) + int(line["attempts"])
    assert per_channel == {"letter": 5, "email": 5, "sms": 5}

    # 2. rates per channel and carrier
    header, *rows, total = found["rates-table"]
    shown = {(r[0], r[1]): tuple(int(v) for v in r[2:8]) for r in rows}
    assert shown == expected
    by_key = {(r[0], r[1]): r for r in rows}
    assert by_key[("email", "smtp")][8:] == ["0.0 %", "20.0 %", "0.0 %"]
    assert by_key[("sms", "linkmobility")][8:] == ["80.0 %", "0.0 %", "0.0 %"]
    assert by_key[("letter", "outbox")][8:] == ["0.0 %", "0.0 %", "60.0 %"]
    assert total[:8] == ["all channels", "all carriers", "15", "4", "1", "3", "2", "5"]
    assert "share of <strong>all attempts</strong>" in html  # the definition is on the page
    rates_svg = chart(html, "chart-rates")
    assert legend(rates_svg) == ["delivery rate", "bounce rate", "return rate"]
    assert {
        "sms · linkmobility · delivery rate: 80.0 %",
        "email · smtp · bounce rate: 20.0 %",
        "letter · outbox · return rate: 60.0 %",
    } <= set(titles(rates_svg))
    rates_csv = await download(vera, f"/console/reports/rates.csv?{query}")
    for line in rates_csv:
        attempts_, delivered, bounced, returned, failed, pending = expected[
            (line["channel"], line["carrier"])
        ]
        assert int(line["attempts"]) == attempts_ and int(line["pending"]) == pending
        assert (int(line["delivered"]), int(line["bounced"]), int(line["returned"]), int(line["failed"])) == (
            delivered,
            bounced,
            returned,
            failed,
        )
        assert float(line["delivery_rate"]) == pytest.approx(delivered / attempts_)
        assert float(line["bounce_rate"]) == pytest.approx(bounced / attempts_)
        assert float(line["return_rate"]) == pytest.approx(returned / attempts_)
    assert len(rates_csv) == len(expected)

    # 3. returned mail: re-sent, asked, unresolved
    returned_rows = found["returned-table"]
    groups = {r[0]: int(r[2]) for r in returned_rows[1:] if r[0]}
    assert groups == {
        "Re-sent to a new address": 1,
        "Asked for an address (SMS or e-mail)": 1,
        "Unresolved": 1,
    }
    outcomes = {re.search(r"\((\w+)\)$", r[1]).group(1): int(r[2]) for r in returned_rows[1:] if not r[0]}  # type: ignore[union-attr]
    assert outcomes["resent"] == outcomes["address_request"] == outcomes["no_address_found"] == 1
    assert outcomes["open"] == outcomes["held"] == outcomes["graded_address"] == 0
    returned_svg = chart(html, "chart-returned")
    assert set(titles(returned_svg)) == {
        "Re-sent to a new address · returned letters: 1",
        "Asked for an address (SMS or e-mail) · returned letters: 1",
        "Unresolved · returned letters: 1",
    }
    returned_csv = await download(vera, f"/console/reports/returned.csv?{query}")
    assert {line["outcome"]: int(line["letters"]) for line in returned_csv if int(line["letters"])} == {
        "resent": 1,
        "address_request": 1,
        "no_address_found": 1,
    }
    assert {line["outcome"]: line["group"] for line in returned_csv}["address_request"] == "asked"

    # no experiments: the section says so
    assert 'data-testid="no-experiments"' in html
    # every export is in the access log, with the period it covered
    assert await exports(sessions) == [
        {"report": name, "since": since.isoformat(), "until": last_day.isoformat()}
        for name in ("volume", "rates", "returned")
    ]

    # a period before any of it: nothing, and the charts say so instead of failing
    html = await vera.page("/console/reports?since=2026-01-01&until=2026-01-31")
    assert chart(html, "chart-volume").get("data-empty") == "true"
    assert chart(html, "chart-rates").get("data-empty") == "true"
    assert "volume-table" not in tables(html)
    assert await download(vera, "/console/reports/volume.csv?since=2026-01-01&until=2026-01-31") == []


def _open_moment_days_ago(days: int) -> datetime:
    """10:00 Oslo on the latest day at least ``days`` ago when the default contact windows are open."""
    windows = load_rules().contact_windows
    day = oslo_today() - timedelta(days=days)
    while True:
        moment = datetime(day.year, day.month, day.day, 10, 0, tzinfo=OSLO)
        if is_open(moment, windows) and is_open(moment + timedelta(hours=2), windows):
            return moment.astimezone(UTC)
        day -= timedelta(days=1)


EXPERIMENT: dict[str, Any] = {
    "id": "reminder-tone",
    "name": "Reminder: the debtor's name & a named handler",
    "kinds": ["reminder"],
    "arms": [{"name": "control", "variant": "neutral"}, {"name": "personal", "variant": "personalisation"}],
    "holdout_share": 0.2,
    "window_days": 1,
    "outcome": "paid",
}


async def test_experiments_show_each_arm_with_its_interval_and_the_difference_to_the_baseline(
    settings: Settings, vera: Console, sessions: Any
) -> None:
    key = await auth.create_api_key(
        sessions,
        name="reports",
        scopes=["contacts:write", "contacts:read", "cases:write", "experiments:write"],
    )
    client = vera.client
    assert (await client.post("/v1/experiments", json=EXPERIMENT, headers=bearer(key))).status == 201
    stopped = {
        **EXPERIMENT,
        "id": "plan-offer-tone",
        "name": "Payment plan offers",
        "kinds": ["payment_plan_offer"],
        "outcome": "payment_plan_agreed",
    }
    assert (await client.post("/v1/experiments", json=stopped, headers=bearer(key))).status == 201
    assert (await client.post("/v1/experiments/plan-offer-tone/stop", headers=bearer(key))).status == 200

    sent_at = _open_moment_days_ago(3)  # every one-day window has closed by now
    debtors = range(1, 31)
    for n in debtors:
        await enqueue(vera, key, contact_payload(n))
    await drain(settings, clock=lambda: sent_at)
    paid = [n for n in debtors if n % 2 == 0 or n in (1, 7)]
    for n in paid:
        event = {
            "type": "payment_received",
            "amount": "100.00",
            "at": (sent_at + timedelta(hours=3)).isoformat(),
        }
        assert (await client.post(f"/v1/cases/C-{n}/events", json=event, headers=bearer(key))).status == 201
    too_late = {"type": "paid_in_full", "at": (sent_at + timedelta(days=2)).isoformat()}
    assert (await client.post("/v1/cases/C-3/events", json=too_late, headers=bearer(key))).status == 201
    dispute = {"type": "dispute_raised", "at": (sent_at + timedelta(hours=1)).isoformat()}
    assert (await client.post("/v1/cases/C-5/events", json=dispute, headers=bearer(key))).status == 201

    # expected, from the assignment rule and the events above
    spec = ExperimentSpec.model_validate(EXPERIMENT)

    def group(n: int) -> str:
        a = assign(spec, f"D-{n}")
        return "holdout" if a.holdout else a.arm

    members = {name: [n for n in debtors if group(n) == name] for name in ("control", "personal", "holdout")}
    assert all(members.values())  # every group is exercised
    hits = {name: len([n for n in ns if n in paid]) for name, ns in members.items()}

    html = await vera.page("/console/reports")
    section = html[html.index('data-testid="report-experiments"') :]
    assert (
        'data-testid="experiment-reminder-tone"' in section
        and 'data-testid="experiment-plan-offer-tone"' in section
    )
    assert "Reminder: the debtor&#39;s name &amp; a named handler" in section
    table = tables(html)["experiment-table-reminder-tone"]
    header, *rows = table
    assert header[:5] == ["Arm", "Variant", "Exposed", "Matured", "Pending"]
    by_arm = {row[0].removesuffix(" baseline").strip(): row for row in rows}
    assert set(by_arm) == {"control", "personal", "holdout"}
    paid_column = header.index("paid")
    dispute_column = header.index("dispute")
    for name, row in by_arm.items():
        n, k = len(members[name]), hits[name]
        assert row[2:5] == [str(n), str(n), "0"], name
        low, high = wilson(k, n)
        assert row[paid_column] == f"{k / n * 100:.1f} % {low * 100:.1f} % – {high * 100:.1f} % {k} of {n}", (
            name
        )
        disputes = 1 if group(5) == name else 0
        assert row[dispute_column].endswith(f"{disputes} of {n}"), name
    assert "baseline" in by_arm["holdout"][0] and by_arm["holdout"][-1] == "baseline"
    for name in ("control", "personal"):
        diff, low, high = newcombe_difference(
            hits[name], len(members[name]), hits["holdout"], len(members["holdout"])
        )

        def pp(v: float) -> str:
            return f"{v * 100:+.1f}".replace("-", "−") + " pp"

        assert by_arm[name][-1] == f"{pp(diff)} {pp(low)} to {pp(high)}", name

    # the chart: a point per arm at its rate, a whisker over its interval, the baseline in its own colour
    svg = chart(html, "chart-experiment-reminder-tone")
    dots = {t: c for c in svg.iter(f"{SVG}circle") for t in titles_of(c)}
    assert len(dots) == 3
    for name in ("control", "personal", "holdout"):
        n, k = len(members[name]), hits[name]
        low, high = wilson(k, n)
        [tip] = [t for t in dots if t.startswith(f"{name}: ")]
        assert tip == (
            f"{name}: paid {k / n * 100:.1f} % ({k} of {n} matured), "
            f"95 % interval {low * 100:.1f} % – {high * 100:.1f} %"
        )
        assert dots[tip].get("class") == ("s6" if name == "holdout" else "s0")
    assert legend(svg) == ["arm: rate and 95 % interval", "baseline (holdout)"]
    # the stopped experiment without exposures: said, not drawn
    assert chart(html, "chart-experiment-plan-offer-tone").get("data-empty") == "true"
    assert "stopped" in section[section.index('data-testid="experiment-plan-offer-tone"') :]

    # CSV: the experiments API's columns and numbers
    lines = await download(vera, "/console/reports/experiments/reminder-tone.csv")
    assert 'data-testid="csv-experiment-reminder-tone"' in html
    by_csv = {line["arm"]: line for line in lines}
    assert set(by_csv) == {"control", "personal", "holdout"}
    for name, line in by_csv.items():
        n, k = len(members[name]), hits[name]
        assert (int(line["exposed"]), int(line["matured"]), int(line["paid_successes"])) == (n, n, k)
        assert float(line["paid_ci95_low"]) == pytest.approx(wilson(k, n)[0], abs=1e-6)
    assert by_csv["holdout"]["baseline"] == "true"
    api = await (
        await client.get("/v1/experiments/reminder-tone/report?format=csv", headers=bearer(key))
    ).text()
    assert [dict(row) for row in csv.DictReader(io.StringIO(api))] == lines
    assert (await vera.get("/console/reports/experiments/nope.csv")).status == 404
    assert await exports(sessions) == [{"report": "experiment", "experiment": "reminder-tone"}]


def titles_of(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.findall(f"{SVG}title")]


async def _seed(sessions: Any, moments: list[tuple[datetime, str, str]]) -> list[str]:
    """Attempts recorded at given moments (their ULIDs carry the time): the flows above can only record
    "now", and this is about where midnight falls. One debtor, case and contact hold them."""
    now = datetime.now(UTC)
    ids: list[str] = []
    async with write_session(sessions) as session:
        session.add(
            Debtor(
                id="D-days",
                ref=new_id(),
                type="person",
                name="Kari",
                contact_points={},
                created_at=now,
                updated_at=now,
            )
        )
        await session.flush()
        session.add(
            Case(
                id="C-days",
                debtor_id="D-days",
                status="open",
                creditor_name="Eksempel AS",
                details={},
                created_at=now,
                updated_at=now,
            )
        )
        await session.flush()
        contact_id = new_id()
        session.add(
            Contact(
                id=contact_id,
                idempotency_key="days",
                body_sha256="0" * 64,
                kind="reminder",
                channel_preference="auto",
                language="nb",
                debtor_id="D-days",
                case_id="C-days",
                status="sent",
                variables={},
                created_at=now,
                updated_at=now,
            )
        )
        await session.flush()
        for moment, channel, status in moments:
            attempt_id = ulid_floor(moment)[:10] + new_id()[10:]
            ids.append(attempt_id)
            session.add(
                Attempt(
                    id=attempt_id,
                    contact_id=contact_id,
                    channel=channel,
                    provider="outbox",
                    address="x",
                    status=status,
                    template="t",
                    variant="neutral",
                    rule_version="v",
                    content_sha256="0" * 64,
                    content={},
                    created_at=moment,
                    updated_at=moment,
                )
            )
    return ids


async def test_days_are_oslo_calendar_days_across_midnight_and_summer_time(
    vera: Console, sessions: Any
) -> None:
    utc = UTC
    moments = [
        (datetime(2026, 3, 27, 22, 59, tzinfo=utc), "letter", "sent"),  # 23:59 on the 27th: before the period
        (datetime(2026, 3, 27, 23, 0, tzinfo=utc), "letter", "sent"),  # 00:00 CET on the 28th
        (datetime(2026, 3, 29, 0, 59, tzinfo=utc), "letter", "returned"),  # 01:59 CET on the 29th
        (datetime(2026, 3, 29, 21, 59, tzinfo=utc), "email", "sent"),  # 23:59 CEST on the 29th
        (datetime(2026, 3, 29, 22, 0, tzinfo=utc), "email", "sent"),  # 00:00 CEST on the 30th (UTC: the 29th)
        (datetime(2026, 10, 24, 22, 0, tzinfo=utc), "sms", "delivered"),  # 00:00 CEST on 25 October
        (datetime(2026, 10, 25, 22, 59, tzinfo=utc), "sms", "delivered"),  # 23:59 CET on 25 October
        (datetime(2026, 10, 25, 23, 0, tzinfo=utc), "letter", "returned"),  # 00:00 CET on the 26th
        (datetime(2026, 10, 26, 23, 0, tzinfo=utc), "letter", "sent"),  # 00:00 on the 27th: after the period
    ]
    ids = await _seed(sessions, moments)
    async with write_session(sessions) as session:
        # one returned letter the loop has handled, one it has not (yet)
        session.add(
            ReturnedLetter(attempt_id=ids[2], contact_id="x", outcome="held", created_at=datetime.now(UTC))
        )

    query = "since=2026-03-28&until=2026-10-26"
    volume = await download(vera, f"/console/reports/volume.csv?{query}")
    assert [(line["day"], line["channel"], int(line["attempts"])) for line in volume] == [
        ("2026-03-28", "letter", 1),
        ("2026-03-29", "letter", 1),
        ("2026-03-29", "email", 1),
        ("2026-03-30", "email", 1),
        ("2026-10-25", "sms", 2),
        ("2026-10-26", "letter", 1),
    ]
    returned = await download(vera, f"/console/reports/returned.csv?{query}")
    assert {line["outcome"]: int(line["letters"]) for line in returned if int(line["letters"])} == {
        "held": 1,
        "open": 1,
    }
    html = await vera.page(f"/console/reports?{query}")
    assert "213 days" in html
    rows = tables(html)["returned-table"]
    assert {r[0]: r[2] for r in rows[1:] if r[0]}["Unresolved"] == "2"
    # the one-day period of the summer-time change is 23 hours long and still one day
    one_day = await download(vera, "/console/reports/volume.csv?since=2026-03-29&until=2026-03-29")
    assert [(line["channel"], line["attempts"]) for line in one_day] == [("letter", "1"), ("email", "1")]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "since=yesterday",
            "“since” is “yesterday”, which is not a date: write it as YYYY-MM-DD, for example 2026-11-05.",
        ),
        (
            "until=2026-13-01",
            "“until” is “2026-13-01”, which is not a day of the calendar (month must be in 1..12).",
        ),
        (
            "since=2026-02-30&until=2026-03-01",
            "“since” is “2026-02-30”, which is not a day of the calendar (day is out of range for month).",
        ),
        (
            "since=2026-12-05&until=2026-12-01",
            "“since” (2026-12-05) is after “until” (2026-12-01): the period would be empty.",
        ),
        (
            "since=2025-01-01&until=2026-01-02",
            "The period from 2025-01-01 to 2026-01-02 is 367 days; a report covers at most 366 days. "
            "Choose a shorter period.",
        ),
        (
            "since=1999-12-31&until=2000-01-01",
            "“since” is 1999-12-31; reports cover days from 2000-01-01 to 2999-12-31.",
        ),
        (
            "since=20261101",
            "“since” is “20261101”, which is not a date: write it as YYYY-MM-DD, for example 2026-11-05.",
        ),
    ],
)
async def test_the_period_form_refuses_bad_dates_precisely(vera: Console, query: str, message: str) -> None:
    html = await vera.page(f"/console/reports?{query}", status=400)
    assert re.search(r'data-testid="period-error">([^<]*)<', html).group(1) == message  # type: ignore[union-attr]
    assert 'data-testid="period-form"' in html and 'data-testid="report-volume"' not in html
    response = await vera.get(f"/console/reports/volume.csv?{query}")
    assert response.status == 400
    assert message in await response.text()


async def test_a_viewer_may_see_a_year_and_the_default_is_the_last_30_days(vera: Console) -> None:
    html = await vera.page("/console/reports?since=2025-01-01&until=2026-01-01")
    assert "(viewer)</span>" in html  # signed in as the viewer
    assert "366 days" in html
    today = oslo_today()
    html = await vera.page(f"/console/reports?until={today}")
    assert f'name="since" value="{today - timedelta(days=29)}"' in html
    assert "30 days" in html


async def test_reports_need_a_signed_in_operator(console_factory: Any, operators: dict[str, str]) -> None:
    anonymous = await console_factory()
    for path in ("/console/reports", "/console/reports/volume.csv", "/console/reports/experiments/x.csv"):
        response = await anonymous.client.get(path, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/console/login", path
