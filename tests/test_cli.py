"""The command line, run for real: ``python -m orchestrator ...`` in a subprocess against the test Redis and
database (or, for the demo, with nothing configured at all)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from orchestrator import auth
from orchestrator import contact_log as store
from orchestrator.identifiers import luhn_check_digit
from orchestrator.portfolio import CSV_COLUMNS
from orchestrator.sandbox.demo import ALWAYS_OPEN_RULES
from orchestrator.settings import Settings
from tests.conftest import drain, make_client

CLI_TIMEOUT_S = 120


# ---- running the CLI ----


def base_env() -> dict[str, str]:
    """``os.environ`` without any ORCH_* setting of the caller's, so that only what a test sets counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}


def cli_env(settings: Settings) -> dict[str, str]:
    """The subprocess sees the same state dir, Redis, database and queue as ``settings``."""
    assert settings.redis_url is not None
    assert settings.database_url is not None
    return {
        **base_env(),
        "ORCH_STATE_DIR": str(settings.state_dir),
        "ORCH_REDIS_URL": settings.redis_url,
        "ORCH_DATABASE_URL": settings.database_url,
        "ORCH_HTTP_PORT": "0",
        "ORCH_QUEUE_NAME": settings.queue_name,
    }


def embedded_env(state_dir: Path) -> dict[str, str]:
    """Nothing configured: embedded Redis and SQLite in a fresh state dir."""
    return {
        **base_env(),
        "ORCH_STATE_DIR": str(state_dir),
        "ORCH_HTTP_PORT": "0",
        "ORCH_QUEUE_NAME": f"test-cli:{uuid.uuid4().hex}",
    }


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def arun_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, env=env, cwd=cwd)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# ---- portfolio files ----


def kid(n: int) -> str:
    payload = f"{n:08d}"
    return payload + str(luhn_check_digit(payload))


def portfolio_row(run: str, i: int, **overrides: str) -> dict[str, str]:
    """A valid CSV row; every 3rd asks for SMS, every 10th (from 7) for a letter, the rest go by e-mail."""
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update(
        idempotency_key=f"{run}/{i}/reminder",
        kind="reminder",
        channel="sms" if i % 3 == 0 else "letter" if i % 10 == 7 else "",
        debtor_id=f"{run}-D-{i}",
        debtor_name=f"Kari Nordmann {i}",
        address_line1=f"Storgata {i + 1}",
        postal_code="0155",
        city="OSLO",
        phones=f"+47{91000000 + i}",
        emails=f"debtor{i}@example.no",
        case_id=f"{run}-C-{i}",
        creditor_name="Eksempel Kreditt AS",
        creditor_organisation_number="974760673",
        reference=f"Faktura {1000 + i}",
        principal="1250.00",
        reminder_fee="35.00",
        due_date="2026-10-01",
        kid=kid(1000 + i),
        account_number="86011117947",
    )
    if i == 4:
        row.update(debtor_type="organisation", debtor_name="Fjordkafeen AS", organisation_number="984851006")
    if i == 5:
        row.update(
            phones=f"+47{91000000 + i}; 41234567",
            other_costs="collection_fee=70.00;legal_fee=100.00",
            interest_rate_percent="12.50",
            interest_from="2026-09-01",
            address_line2="oppgang B, 2. etasje",  # a comma inside a (quoted) cell
        )
    row.update(overrides)
    return row


def write_csv(
    path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] | list[str] = CSV_COLUMNS
) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def outbox_items(outbox: Path) -> tuple[list[Path], list[dict[str, Any]], list[Path]]:
    """(.eml files, SMS lines, .pdf letters) in ``outbox``."""
    emails = sorted((outbox / "email").glob("*.eml"))
    sms = [
        json.loads(line)
        for path in sorted((outbox / "sms").glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    letters = sorted((outbox / "letter").glob("*.pdf"))
    return emails, sms, letters


# Rows of the 50-row CSV that are invalid: index -> (override, expected location). Line = index + 2.
BAD_ROWS = {
    10: ({"phones": "12345"}, "debtor.phones.0"),
    20: ({"kid": "12345678"}, "case.kid"),
    30: ({"due_date": ""}, "case.due_date"),
}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def portfolio_csv(work: Path) -> tuple[Path, list[str]]:
    """50 rows, 3 of them bad; returns the file and the idempotency keys of the 47 good ones."""
    run = f"cli-{uuid.uuid4().hex[:8]}"
    rows = []
    good = []
    for i in range(50):
        override, _ = BAD_ROWS.get(i, ({}, ""))
        row = portfolio_row(run, i, **override)
        rows.append(row)
        if i not in BAD_ROWS:
            good.append(row["idempotency_key"])
    path = work / "portfolio.csv"
    write_csv(path, rows)
    return path, good


# ---- create-api-key, migrate ----


async def test_create_api_key_prints_only_the_key_and_the_key_works(settings: Settings, work: Path) -> None:
    result = await arun_cli(
        "create-api-key", "--scopes", "contacts:write,contacts:read", env=cli_env(settings), cwd=work
    )
    assert result.returncode == 0, explain(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, explain(result)
    key = lines[0]
    assert result.stdout == key + "\n"
    assert key.startswith(auth.PREFIX)
    assert key == key.strip()
    assert len(key) > len(auth.PREFIX) + 20

    client = await make_client(settings)
    try:
        resp = await client.get("/v1/contacts", headers={"Authorization": f"Bearer {key}"})
        assert resp.status == 200, await resp.text()
        assert "items" in await resp.json()
        resp = await client.get("/v1/contacts", headers={"Authorization": "Bearer orch_not-a-key"})
        assert resp.status == 401
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("scopes", "needle"),
    [
        ("contacts:write,bogus:scope", "bogus:scope"),
        ("contacts:read,console,root", "root"),
        (" , ", "at least one"),
    ],
)
async def test_create_api_key_rejects_unknown_scopes(
    settings: Settings, work: Path, scopes: str, needle: str
) -> None:
    result = await arun_cli("create-api-key", "--scopes", scopes, env=cli_env(settings), cwd=work)
    assert result.returncode == 2, explain(result)
    assert result.stdout == ""
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    if needle != "at least one":
        for known in auth.SCOPES:
            assert known in result.stderr


async def test_migrate_exits_zero(settings: Settings, work: Path) -> None:
    result = await arun_cli("migrate", env=cli_env(settings), cwd=work)
    assert result.returncode == 0, explain(result)
    assert "database at head" in result.stderr
    assert result.stdout == ""


def test_migrate_with_nothing_configured_creates_the_sqlite_file(tmp_path: Path, work: Path) -> None:
    state = tmp_path / "fresh" / "state"
    result = run_cli("migrate", env=embedded_env(state), cwd=work)
    assert result.returncode == 0, explain(result)
    assert (state / "orchestrator.sqlite3").is_file()
    second = run_cli("migrate", env=embedded_env(state), cwd=work)
    assert second.returncode == 0, explain(second)


# ---- import ----


async def test_import_csv_queues_good_rows_reports_bad_ones_and_is_idempotent(
    settings: Settings, sessions: Any, redis: Any, work: Path, portfolio_csv: tuple[Path, list[str]]
) -> None:
    path, good = portfolio_csv
    env = cli_env(settings)
    result = await arun_cli("import", str(path), env=env, cwd=work)
    assert result.returncode == 1, explain(result)
    assert "47 queued, 0 already known (idempotency key), 3 rejected" in result.stderr, explain(result)
    # the progress bar, on stderr
    assert "importing portfolio.csv" in result.stderr
    assert "50/50" in result.stderr
    assert result.stdout == ""
    # each bad row with its line and location
    for index, (_, loc) in BAD_ROWS.items():
        assert re.search(rf"line {index + 2}: {re.escape(loc)}: \S", result.stderr), explain(result)
    assert "Traceback" not in result.stderr

    report = path.with_name("portfolio.csv.errors.csv")
    assert report.is_file()
    assert f"every rejected row is listed in {report}" in result.stderr
    rows = read_report(report)
    assert sorted((int(r["line"]), r["location"]) for r in rows) == [
        (index + 2, loc) for index, (_, loc) in sorted(BAD_ROWS.items())
    ]
    assert all(r["problem"] for r in rows)
    by_loc = {r["location"]: r["problem"] for r in rows}
    assert "not a valid phone number" in by_loc["debtor.phones.0"]
    assert "KID" in by_loc["case.kid"]

    async with sessions() as session:
        found = await store.find_contacts_by_keys(session, good)
        assert len(found) == 47
        assert {status for _, _, status in found.values()} == {"queued"}
        assert await store.count_by_status(session) == {"queued": 47}
    assert await redis.zcard(settings.queue_name) == 47

    # a worker on the same queue (and state dir) sends them all to the outbox
    await drain(settings.model_copy(update={"rules_file": ALWAYS_OPEN_RULES}))
    async with sessions() as session:
        found = await store.find_contacts_by_keys(session, good)
        assert {status for _, _, status in found.values()} == {"sent"}
    emails, sms, letters = outbox_items(settings.resolved_outbox_dir)
    assert emails
    assert sms
    assert letters
    assert len(emails) + len(sms) + len(letters) == 47
    assert all(p.read_bytes().startswith(b"%PDF") for p in letters)
    # the row with two phones (';') and the organisation debtor got through too
    async with sessions() as session:
        assert len(await store.list_contacts(session, debtor_id=f"{good[0].split('/')[0]}-D-5")) == 1
        assert len(await store.list_contacts(session, debtor_id=f"{good[0].split('/')[0]}-D-4")) == 1

    # importing the same file again queues nothing new
    again = await arun_cli("import", str(path), env=env, cwd=work)
    assert again.returncode == 1, explain(again)
    assert "0 queued, 47 already known (idempotency key), 3 rejected" in again.stderr, explain(again)
    assert await redis.zcard(settings.queue_name) == 0
    async with sessions() as session:
        assert await store.count_by_status(session) == {"sent": 47}
    assert sorted((int(r["line"]), r["location"]) for r in read_report(report)) == [
        (index + 2, loc) for index, (_, loc) in sorted(BAD_ROWS.items())
    ]


async def test_import_clean_csv_exits_zero_without_report(
    settings: Settings, sessions: Any, work: Path
) -> None:
    run = f"cli-{uuid.uuid4().hex[:8]}"
    rows = [portfolio_row(run, i) for i in range(3)]
    path = work / "clean.csv"
    write_csv(path, rows)
    result = await arun_cli("import", str(path), env=cli_env(settings), cwd=work)
    assert result.returncode == 0, explain(result)
    assert "3 queued, 0 already known (idempotency key), 0 rejected" in result.stderr
    assert not path.with_name("clean.csv.errors.csv").exists()
    async with sessions() as session:
        assert len(await store.find_contacts_by_keys(session, [r["idempotency_key"] for r in rows])) == 3


async def test_import_ndjson_reports_malformed_and_invalid_lines(
    settings: Settings, sessions: Any, work: Path
) -> None:
    from orchestrator.portfolio import csv_row_to_request

    run = f"cli-{uuid.uuid4().hex[:8]}"
    items = [csv_row_to_request(portfolio_row(run, i)) for i in range(5)]
    bad_kind = {**items[3], "kind": "threat_letter"}
    lines = [
        json.dumps(items[0]),  # 1
        json.dumps(items[1]),  # 2
        '{"idempotency_key": "broken", "kind": ',  # 3: not JSON
        "",  # 4: blank, skipped
        json.dumps(items[2]),  # 5
        json.dumps(bad_kind),  # 6: valid JSON, invalid item
        json.dumps(items[4]),  # 7
    ]
    path = work / "portfolio.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = work / "reports" / "rejected.csv"
    report.parent.mkdir()
    result = await arun_cli("import", str(path), "--errors", str(report), env=cli_env(settings), cwd=work)
    assert result.returncode == 1, explain(result)
    assert "4 queued, 0 already known (idempotency key), 2 rejected" in result.stderr, explain(result)
    assert re.search(r"line 3: \(row\): not valid JSON", result.stderr), explain(result)
    assert re.search(r"line 6: kind: \S", result.stderr), explain(result)
    rows = read_report(report)
    assert sorted(int(r["line"]) for r in rows) == [3, 6]
    assert not path.with_name("portfolio.ndjson.errors.csv").exists()
    async with sessions() as session:
        found = await store.find_contacts_by_keys(
            session,
            [items[i]["idempotency_key"] for i in (0, 1, 2, 4)] + [bad_kind["idempotency_key"], "broken"],
        )
    assert set(found) == {items[i]["idempotency_key"] for i in (0, 1, 2, 4)}


async def test_import_csv_with_unknown_column_exits_2(settings: Settings, work: Path) -> None:
    run = f"cli-{uuid.uuid4().hex[:8]}"
    rows = [{**portfolio_row(run, i), "colour": "blue"} for i in range(2)]
    path = work / "typo.csv"
    write_csv(path, rows, [*CSV_COLUMNS, "colour"])
    result = await arun_cli("import", str(path), env=cli_env(settings), cwd=work)
    assert result.returncode == 2, explain(result)
    assert "orchestrator import:" in result.stderr
    assert "colour" in result.stderr
    assert "Traceback" not in result.stderr
    assert not path.with_name("typo.csv.errors.csv").exists()


@pytest.mark.parametrize("name", ["missing.csv", "missing.ndjson", "portfolio.txt"])
async def test_import_of_missing_or_unknown_file_exits_2(settings: Settings, work: Path, name: str) -> None:
    if name.endswith(".txt"):
        (work / name).write_text("idempotency_key\n", encoding="utf-8")
    result = await arun_cli("import", str(work / name), env=cli_env(settings), cwd=work)
    assert result.returncode == 2, explain(result)
    assert "orchestrator import:" in result.stderr
    assert name in result.stderr
    assert "Traceback" not in result.stderr


async def test_import_usage_error_exits_2(settings: Settings, work: Path) -> None:
    result = await arun_cli("import", env=cli_env(settings), cwd=work)
    assert result.returncode == 2
    assert "file" in result.stderr


@pytest.mark.parametrize("bad_row", [0, 39])
async def test_import_of_a_non_utf8_csv_exits_2_with_a_message(
    settings: Settings, sessions: Any, work: Path, bad_row: int
) -> None:
    """Latin-1 (an old Excel export), early in the file or beyond the delimiter sniffer's sample."""
    run = f"cli-{uuid.uuid4().hex[:8]}"
    rows = [
        portfolio_row(run, i, debtor_name="Åse Ødegård" if i == bad_row else "Ase Odegard") for i in range(40)
    ]
    path = work / "latin1.csv"
    with path.open("w", newline="", encoding="latin-1") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    assert path.stat().st_size > 4096
    result = await arun_cli("import", str(path), env=cli_env(settings), cwd=work)
    assert result.returncode == 2, explain(result)
    assert "orchestrator import:" in result.stderr
    assert "not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr
    async with sessions() as session:
        assert await store.find_contacts_by_keys(session, [r["idempotency_key"] for r in rows]) == {}


def test_import_with_nothing_configured_on_a_fresh_state_dir(tmp_path: Path, work: Path) -> None:
    """``import`` brings the SQLite schema up itself and starts (and stops) the embedded Redis."""
    from orchestrator.portfolio import csv_row_to_request

    state = tmp_path / "fresh-state"
    path = work / "one.ndjson"
    path.write_text(json.dumps(csv_row_to_request(portfolio_row("fresh", 1))) + "\n", encoding="utf-8")
    env = embedded_env(state)
    result = run_cli("import", str(path), env=env, cwd=work)
    assert result.returncode == 0, explain(result)
    assert "1 queued, 0 already known (idempotency key), 0 rejected" in result.stderr
    assert (state / "orchestrator.sqlite3").is_file()
    assert not (state / "redis.json").exists()
    again = run_cli("import", str(path), env=env, cwd=work)
    assert again.returncode == 0, explain(again)
    assert "0 queued, 1 already known (idempotency key), 0 rejected" in again.stderr
    assert not (state / "redis.json").exists()


# ---- demo ----


def _assert_redis_gone(state: Path, stderr: str) -> None:
    assert not (state / "redis.json").exists()
    match = re.search(r"embedded redis started\s.*url=(redis://127\.0\.0\.1:\d+/\d+)", stderr)
    assert match, stderr
    client = redis_sync.Redis.from_url(match.group(1), socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        with pytest.raises(redis_sync.ConnectionError):
            client.ping()
    finally:
        client.close()


# The demo with windows always open, and the whole returned-mail and bounce loop it shows: tests/test_demo.py.


def test_demo_without_always_open_sends_or_schedules(tmp_path: Path, work: Path) -> None:
    state = tmp_path / "demo-state"
    result = run_cli("demo", "--exit", env=embedded_env(state), cwd=work)
    assert result.returncode == 0, explain(result)
    out = result.stdout
    outcomes = []
    for n in range(1, 5):
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(f"DEMO-D-{n} ")), None)
        assert line is not None, explain(result)
        match = re.search(r"-> (\w+)", line)
        assert match, line
        outcomes.append(match.group(1))
    assert set(outcomes) <= {"sent", "scheduled"}, outcomes
    if "scheduled" in outcomes:
        assert "wait for the next contact window" in out
        assert "--always-open" in out
    _assert_redis_gone(state, result.stderr)
