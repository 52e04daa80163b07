"""webhooks.returns: returned letters by the print provider's signed callback and by return files in each
layout, which must become the very same events; the route for real; and the print sandbox's returns end to
end (letter → SFTP → "returned" → signed callback → worker → attempt ``returned``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from orchestrator import contact_log as store
from orchestrator.db import write_session
from orchestrator.models import CarrierEvent as CarrierEventRow
from orchestrator.sandbox.print_provider import ReturnedLetter, serve_print_sandbox
from orchestrator.settings import Settings
from tests.conftest import assert_problem, bearer, drain, make_client
from tests.factories import contact_payload, open_clock
from webhooks import ingress
from webhooks.events import BadCredentials, CarrierEvent, CarrierWebhook, MalformedPayload, MissingCredentials
from webhooks.returns import (
    LAYOUTS,
    RETURN_REASONS,
    SIGNATURE_HEADER,
    JsonLinesLayout,
    PostenEaLayout,
    PrintCsvLayout,
    PrintReturnsWebhook,
    ReturnRow,
    ReturnsLayout,
    RowError,
    UnknownEndpoint,
    UnknownLayout,
    map_reason,
    read_returns,
    return_event,
    sign,
)

SECRET = "print-returns-secret-9a2b"
URL = "https://orchestrator.example.no/webhooks/letters/returns"
CONTACT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RA"
ATTEMPT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RB"
REFERENCE = f"{CONTACT}.{ATTEMPT}"
OTHER = "01JQ7ZK3W5N8T4HZ2V6XYPM0RC.01JQ7ZK3W5N8T4HZ2V6XYPM0RD"


@pytest.fixture
def hook_settings() -> Settings:
    return Settings(print_returns_webhook_secret=SecretStr(SECRET))


def entry(reference: str = REFERENCE, reason: str = "returned_moved", **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"reference": reference, "reason": reason, "returned_at": "2026-03-02"}
    item.update(changes)
    return item


def body_of(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"returns": list(entries)}).encode()


def genuine_signature(body: bytes, secret: str = SECRET) -> str:
    """Computed here independently of the module: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def parse(body: bytes, url: str = URL) -> list[CarrierEvent]:
    return PrintReturnsWebhook().parse(url=url, headers={}, body=body)


def verify(body: bytes, headers: dict[str, str], settings: Settings, url: str = URL) -> None:
    PrintReturnsWebhook().verify(url=url, headers=headers, body=body, settings=settings)


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# --------------------------------------------------------------------------------------------- protocol


def test_implements_the_protocol(hook_settings: Settings) -> None:
    hook = PrintReturnsWebhook()
    assert isinstance(hook, CarrierWebhook)
    assert hook.name == "letters"
    assert hook.configured(hook_settings)
    assert not hook.configured(Settings(print_returns_webhook_secret=None))
    assert not hook.configured(Settings(print_returns_webhook_secret=SecretStr("")))


def test_layouts_implement_their_protocol() -> None:
    assert list(LAYOUTS) == ["print-csv", "jsonl", "posten-ea"]
    for layout in LAYOUTS.values():
        assert isinstance(layout, ReturnsLayout)


def test_sign_is_hmac_sha256_of_the_raw_body() -> None:
    body = body_of(entry())
    assert sign(body, SECRET) == genuine_signature(body)


# ------------------------------------------------------------------------------------------------ verify


def test_a_genuine_signature_verifies(hook_settings: Settings) -> None:
    body = body_of(entry())
    verify(body, {SIGNATURE_HEADER: genuine_signature(body)}, hook_settings)
    verify(body, {"x-signature": genuine_signature(body).upper()}, hook_settings)
    verify(body, {SIGNATURE_HEADER: genuine_signature(body)}, hook_settings, url=URL.removesuffix("/returns"))


def test_a_missing_signature_is_missing_credentials_400(hook_settings: Settings) -> None:
    with pytest.raises(MissingCredentials) as caught:
        verify(body_of(entry()), {}, hook_settings)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda body: genuine_signature(body, "another-secret"), id="wrong-secret"),
        pytest.param(lambda body: genuine_signature(body + b"\n"), id="other-body"),
        pytest.param(lambda body: genuine_signature(body).removeprefix("sha256="), id="no-prefix"),
        pytest.param(lambda body: "sha256=" + "0" * 64, id="zeros"),
    ],
)
def test_a_forged_signature_is_bad_credentials_401(hook_settings: Settings, forge: Any) -> None:
    body = body_of(entry())
    with pytest.raises(BadCredentials) as caught:
        verify(body, {SIGNATURE_HEADER: forge(body)}, hook_settings)
    assert caught.value.status == 401


def test_another_sub_path_is_404(hook_settings: Settings) -> None:
    body = body_of(entry())
    with pytest.raises(UnknownEndpoint) as caught:
        verify(body, {SIGNATURE_HEADER: genuine_signature(body)}, hook_settings, url=URL + "x")
    assert caught.value.status == 404


# -------------------------------------------------------------------------------------- the JSON callback


def test_a_return_becomes_one_returned_event() -> None:
    address = {"name": "Kari Nordmann", "lines": ["Ny gate 5"], "postal_code": "5003", "city": "BERGEN"}
    [event] = parse(body_of(entry(returned_at="2026-03-02T09:30:00+01:00", new_address=address)))
    assert event == CarrierEvent(
        carrier="letters",
        event_id=f"return:{REFERENCE}",
        status="returned",
        at=datetime(2026, 3, 2, 8, 30, tzinfo=UTC),
        attempt_id=ATTEMPT,
        provider_message_id=REFERENCE,
        reason="returned_moved",
        detail={
            "reference": REFERENCE,
            "reason_code": "returned_moved",
            "new_address": {**address, "country": "NO"},
        },
    )


def test_returned_at_as_a_date_is_oslo_midnight() -> None:
    [event] = parse(body_of(entry(returned_at="2026-07-01")))
    assert event.at == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
    [event] = parse(body_of(entry(returned_at="01.07.2026")))
    assert event.at == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        *[(ours, ours) for ours in RETURN_REASONS],
        ("unknown_addressee", "returned_unknown_addressee"),
        ("Adressat ukjent", "returned_unknown_addressee"),
        ("UKJENT", "returned_unknown_addressee"),
        ("moved", "returned_moved"),
        ("Flyttet", "returned_moved"),
        ("refused", "returned_refused"),
        ("Nektet mottatt", "returned_refused"),
        ("insufficient address", "returned_insufficient_address"),
        ("Mangelfull adresse", "returned_insufficient_address"),
        ("no-such-address", "returned_insufficient_address"),
        ("deceased", "returned_deceased"),
        ("Død", "returned_deceased"),
        ("AVDØD", "returned_deceased"),
        ("annet", "returned_other"),
    ],
)
def test_reason_mapping(code: str, reason: str) -> None:
    assert map_reason(code) == reason
    [event] = parse(body_of(entry(reason=code)))
    assert (event.reason, event.detail["reason_code"]) == (reason, code)


@pytest.mark.parametrize("code", ["X17", "ikke hentet", "returned_not_collected", "???"])
def test_an_unknown_reason_is_returned_other_with_the_original_code(code: str) -> None:
    [event] = parse(body_of(entry(reason=code)))
    assert event.status == "returned"
    assert event.reason == "returned_other"
    assert event.detail["reason_code"] == code


def test_a_forwarded_letter_is_not_a_return() -> None:
    address = {"lines": ["Ny gate 5"], "postal_code": "5003", "city": "BERGEN"}
    [event] = parse(body_of(entry(reason="forwarded_new_address", new_address=address)))
    assert (event.status, event.reason, event.event_id) == (
        "sent",
        "forwarded_new_address",
        f"forwarded:{REFERENCE}",
    )
    assert event.detail["new_address"] == {**address, "country": "NO"}


def test_a_replay_is_the_same_event_and_a_letter_listed_twice_counts_once() -> None:
    body = body_of(entry(), entry(reference=OTHER, reason="deceased"))
    assert parse(body) == parse(body)
    events = parse(body_of(entry(), entry(), entry(reference=OTHER)))
    assert [e.event_id for e in events] == [f"return:{REFERENCE}", f"return:{OTHER}"]
    assert parse(body_of()) == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"{not json", "", id="not-json"),
        pytest.param(b'{"returns": {}}', "returns", id="returns-not-a-list"),
        pytest.param(b'{"letters": []}', "", id="no-returns"),
        pytest.param(body_of(entry(reference="no-dot")), "returns[0]", id="bad-reference"),
        pytest.param(body_of(entry(reference="a.b.c")), "returns[0]", id="three-parts"),
        pytest.param(body_of(entry(), entry(reason="")), "returns[1]", id="no-reason"),
        pytest.param(body_of(entry(returned_at="soon")), "returned_at", id="bad-returned-at"),
        pytest.param(body_of(entry(returned_at=None)), "returned_at", id="no-returned-at"),
        pytest.param(body_of(entry(new_address="Storgata 1")), "new_address", id="address-not-an-object"),
        pytest.param(body_of(entry(new_address={"lines": "x", "city": 5})), "city", id="address-bad-city"),
        pytest.param(json.dumps({"returns": ["x"]}).encode(), "returns[0]", id="entry-not-an-object"),
    ],
)
def test_authentic_but_unreadable_is_malformed_with_status_200(body: bytes, says: str) -> None:
    with pytest.raises(MalformedPayload) as caught:
        parse(body)
    assert caught.value.status == 200
    assert says in str(caught.value)


# ----------------------------------------------------------------------------------- files, every layout

NEW_ADDRESS = {"lines": ["Ny gate 5", "H0201"], "postal_code": "5003", "city": "BERGEN", "country": "NO"}


def _all_four_ways(tmp_path: Path) -> dict[str, list[CarrierEvent]]:
    """The same two returned letters (one with a new address) as callback and in each file layout."""
    callback = body_of(
        entry(REFERENCE, "returned_moved", returned_at="2026-03-02", new_address=NEW_ADDRESS),
        entry(OTHER, "returned_unknown_addressee", returned_at="2026-03-03"),
    )
    csv_file = write(
        tmp_path,
        "retur.csv",
        "reference;reason;returned_at;new_address_line_1;new_address_line_2;new_postal_code;new_city\n"
        f"{REFERENCE};returned_moved;2026-03-02;Ny gate 5;H0201;5003;BERGEN\n"
        f"{OTHER};returned_unknown_addressee;2026-03-03;;;;\n",
    )
    jsonl_file = write(
        tmp_path,
        "retur.jsonl",
        json.dumps(entry(REFERENCE, "returned_moved", returned_at="2026-03-02", new_address=NEW_ADDRESS))
        + "\n\n"
        + json.dumps(entry(OTHER, "returned_unknown_addressee", returned_at="2026-03-03"))
        + "\n",
    )
    posten_file = write(
        tmp_path,
        "ea.txt",
        "reference;reason;address_line_1;address_line_2;address_line_3;postal_code;city;date;country\n"
        f"{REFERENCE};FLYTTET;Ny gate 5;H0201;;5003;BERGEN;02.03.2026;NO\n"
        f"{OTHER};UKJENT;;;;;;20260303\n",
        encoding="cp1252",
    )
    return {
        "callback": parse(callback),
        "print-csv": read_returns(csv_file).events,
        "jsonl": read_returns(jsonl_file).events,
        "posten-ea": read_returns(posten_file).events,
    }


def test_callback_and_every_file_layout_give_identical_events(tmp_path: Path) -> None:
    ways = _all_four_ways(tmp_path)
    expected = ways["callback"]
    assert len(expected) == 2
    assert expected[0].detail["new_address"] == NEW_ADDRESS
    assert "new_address" not in expected[1].detail
    for name, events in ways.items():
        assert events == expected, name


def test_layouts_are_sniffed_or_named(tmp_path: Path) -> None:
    csv_file = write(
        tmp_path, "a.csv", f"\ufeffReference;Reason;Returned_at\n{REFERENCE};returned_moved;2026-03-02\n"
    )
    jsonl_file = write(tmp_path, "a.jsonl", json.dumps(entry()) + "\n")
    posten_file = write(tmp_path, "a.txt", f"{REFERENCE};FLYTTET;;;;;;2026-03-02\n")
    assert read_returns(csv_file).layout == "print-csv"
    assert read_returns(jsonl_file).layout == "jsonl"
    assert read_returns(posten_file).layout == "posten-ea"
    assert read_returns(str(jsonl_file), "jsonl").events == read_returns(csv_file, "print-csv").events
    with pytest.raises(UnknownLayout):
        read_returns(csv_file, "excel")
    with pytest.raises(UnknownLayout):
        read_returns(write(tmp_path, "b.txt", "hello\nworld\n"))


def test_a_windows_1252_csv_reads(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", f"reference;reason;returned_at\n{REFERENCE};Død;02.03.2026\n", "cp1252")
    [event] = read_returns(path).events
    assert (event.reason, event.detail["reason_code"]) == ("returned_deceased", "Død")


def test_csv_malformed_rows_are_reported_by_line_and_the_others_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.csv",
        "reference;reason;returned_at\n"  # 1
        f"{REFERENCE};moved;2026-03-02\n"  # 2
        "\n"  # 3 (blank)
        "not-a-reference;moved;2026-03-02\n"  # 4
        f"{OTHER};moved\n"  # 5: a field short
        f"{OTHER};;2026-03-02\n"  # 6: no reason
        f"{OTHER};moved;someday\n"  # 7
        f'"{OTHER}";"X17";"2026-03-04"\n',  # 8: fine (quoted, unknown code)
    )
    result = read_returns(path)
    assert [e.event_id for e in result.events] == [f"return:{REFERENCE}", f"return:{OTHER}"]
    assert result.events[1].reason == "returned_other"
    assert [error.line for error in result.errors] == [4, 5, 6, 7]
    assert "reference" in result.errors[0].message
    assert "fields" in result.errors[1].message


def test_csv_with_a_wrong_header_is_one_error(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", f"reference;reason;returned_at;colour\n{REFERENCE};moved;2026-03-02\n")
    result = read_returns(path, "print-csv")
    assert result.events == []
    [error] = result.errors
    assert error.line == 1
    assert "colour" in error.message


def test_jsonl_malformed_rows_are_reported_by_line_and_the_others_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.jsonl",
        json.dumps(entry()) + "\n"  # 1
        "{broken\n"  # 2
        "\n"  # 3
        + json.dumps(entry(reference="x"))
        + "\n"  # 4
        + json.dumps(entry(OTHER, "refused"))
        + "\n",  # 5
    )
    result = read_returns(path)
    assert [e.event_id for e in result.events] == [f"return:{REFERENCE}", f"return:{OTHER}"]
    assert [error.line for error in result.errors] == [2, 4]


def test_posten_malformed_rows_are_reported_by_line_and_the_others_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ea.txt",
        f"{REFERENCE};FLYTTET;;;;;;2026-03-02\n"  # 1
        f"{OTHER};HVA;;;;;;2026-03-02\n"  # 2: unknown Posten code (a row error there)
        f"{OTHER};NY;Ny gate 5;;;5003;BERGEN;2026-03-02\n",  # 3: forwarded
    )
    result = read_returns(path, "posten-ea")
    assert [e.event_id for e in result.events] == [f"return:{REFERENCE}", f"forwarded:{OTHER}"]
    assert result.events[1].status == "sent"
    assert [error.line for error in result.errors] == [2]


def test_a_layout_can_be_plugged_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Pipes:
        name = "pipes"

        def sniff(self, first_lines: Any) -> bool:
            return bool(first_lines) and first_lines[0].count("|") == 2

        def parse(self, path: Path) -> Any:
            for number, text in enumerate(path.read_text().splitlines(), start=1):
                reference, reason, when = text.split("|")
                if not when:
                    yield RowError(number, "no date")
                    continue
                yield ReturnRow(number, reference, reason, datetime.fromisoformat(when))

    monkeypatch.setitem(LAYOUTS, "pipes", Pipes())
    path = write(tmp_path, "p.txt", f"{REFERENCE}|moved|2026-03-02T00:00:00+00:00\n{OTHER}|moved|\n")
    result = read_returns(path)
    assert result.layout == "pipes"
    assert [e.reason for e in result.events] == ["returned_moved"]
    assert result.errors == [RowError(2, "no date")]


def test_return_event_is_pure() -> None:
    row = ReturnRow(1, REFERENCE, "moved", datetime(2026, 3, 2, tzinfo=UTC))
    assert return_event(row) == return_event(
        ReturnRow(99, REFERENCE, "moved", datetime(2026, 3, 2, tzinfo=UTC))
    )


def test_the_layout_classes_are_exported() -> None:
    assert isinstance(LAYOUTS["print-csv"], PrintCsvLayout)
    assert isinstance(LAYOUTS["jsonl"], JsonLinesLayout)
    assert isinstance(LAYOUTS["posten-ea"], PostenEaLayout)


# ---------------------------------------------------------------------------- a return file as callback


def test_a_return_file_posted_to_the_callback_reads_like_the_file(tmp_path: Path) -> None:
    ways = _all_four_ways(tmp_path)
    for name in ("print-csv", "jsonl", "posten-ea"):
        path = next(p for p in tmp_path.iterdir() if read_returns(p).layout == name)
        assert parse(path.read_bytes()) == ways["callback"], name
        assert parse(path.read_bytes(), url=f"{URL}?layout={name}") == ways["callback"], name


def test_a_return_file_callback_with_a_bad_row_is_malformed_naming_the_line() -> None:
    body = f"reference;reason;returned_at\n{REFERENCE};moved;2026-03-02\n{OTHER};moved;never\n".encode()
    with pytest.raises(MalformedPayload, match="line 3"):
        parse(body)
    with pytest.raises(MalformedPayload, match="known return file"):
        parse(b"hello")
    with pytest.raises(MalformedPayload):
        parse(body, url=f"{URL}?layout=excel")


# ----------------------------------------------------------------------------------- the route, for real


@pytest.fixture
async def returns_client(
    settings: Settings, sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    monkeypatch.setitem(ingress.WEBHOOKS, "letters", PrintReturnsWebhook())
    configured = settings.model_copy(update={"print_returns_webhook_secret": SecretStr(SECRET)})
    client = await make_client(configured)
    yield client
    await client.close()


async def _stored(sessions: Any) -> list[CarrierEventRow]:
    async with sessions() as session:
        return list((await session.execute(select(CarrierEventRow))).scalars())


async def test_route_records_a_return_once_by_callback_or_file(
    returns_client: Any, sessions: Any, tmp_path: Path
) -> None:
    body = body_of(entry())
    headers = {SIGNATURE_HEADER: genuine_signature(body), "Content-Type": "application/json"}
    first = await returns_client.post("/webhooks/letters/returns", data=body, headers=headers)
    assert (first.status, await first.json()) == (200, {"received": 1, "new": 1})
    replay = await returns_client.post("/webhooks/letters/returns", data=body, headers=headers)
    assert (replay.status, await replay.json()) == (200, {"received": 1, "new": 0})
    [row] = await _stored(sessions)
    assert (row.carrier, row.event_id) == ("letters", f"return:{REFERENCE}")
    assert row.payload["event"]["status"] == "returned"
    assert row.payload["event"]["attempt_id"] == ATTEMPT

    # the same letter again in the print provider's file (as `orchestrator import-returns` records it)
    path = write(tmp_path, "r.csv", f"reference;reason;returned_at\n{REFERENCE};returned_moved;2026-03-02\n")
    [event] = read_returns(path).events
    rows = [
        {
            "id": uuid.uuid4().hex[:26],
            "carrier": event.carrier,
            "event_id": event.event_id,
            "attempt_id": None,
            "payload": {"event": None},
            "received_at": datetime.now(UTC),
            "processed_at": None,
        }
    ]
    async with write_session(sessions) as session:
        assert await store.record_carrier_events(session, rows) == []  # already known: nothing to do
    assert len(await _stored(sessions)) == 1


async def test_route_refuses_forged_401_unsigned_400_and_other_paths_404(
    returns_client: Any, sessions: Any
) -> None:
    body = body_of(entry())
    forged = await returns_client.post(
        "/webhooks/letters/returns", data=body, headers={SIGNATURE_HEADER: genuine_signature(body, "guess")}
    )
    await assert_problem(forged, 401)
    await assert_problem(await returns_client.post("/webhooks/letters/returns", data=body), 400)
    other = await returns_client.post(
        "/webhooks/letters/bounces", data=body, headers={SIGNATURE_HEADER: genuine_signature(body)}
    )
    await assert_problem(other, 404)
    assert await _stored(sessions) == []


async def test_route_keeps_a_signed_but_malformed_body_and_answers_200(
    returns_client: Any, sessions: Any
) -> None:
    body = body_of(entry(reference="nonsense"))
    r = await returns_client.post(
        "/webhooks/letters/returns", data=body, headers={SIGNATURE_HEADER: sign(body, SECRET)}
    )
    assert r.status == 200
    [row] = await _stored(sessions)
    assert row.payload["event"] is None
    assert "returns[0]" in row.payload["error"]


# ------------------------------------------------------------------------------------------ end to end


async def test_the_print_sandbox_returns_a_letter_and_the_attempt_is_returned(
    settings: Settings, sessions: Any, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ingress.WEBHOOKS, "letters", PrintReturnsWebhook())
    async with serve_print_sandbox(tmp_path / "print-provider", return_share=1.0) as printer:
        configured = settings.model_copy(
            update={
                "print_delivery": "sftp",
                "print_sftp_host": printer.host,
                "print_sftp_port": printer.port,
                "print_sftp_username": printer.username,
                "print_sftp_password": SecretStr(str(printer.password)),
                "print_sftp_known_hosts": printer.known_hosts_path,
                "print_batch_max_wait_s": 0.2,
                "letter_render_workers": 1,
                "print_returns_webhook_secret": SecretStr(SECRET),
            }
        )
        client = await make_client(configured)
        try:
            payload = contact_payload(
                8, debtor__phones=[], debtor__emails=[], debtor__electronic_notice_evidence=[]
            )
            payload["kind"] = "inkassovarsel"
            r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
            contact_id = (await r.json())["id"]
            clock = open_clock()
            await drain(configured, clock=clock)

            answers: list[dict[str, Any]] = []

            async def call_back(letter: ReturnedLetter) -> None:  # the print provider's side
                body = body_of(
                    {
                        "reference": letter.reference,
                        "reason": letter.reason,
                        "returned_at": "2026-03-02T12:00:00Z",
                    }
                )
                response = await client.post(
                    "/webhooks/letters/returns", data=body, headers={SIGNATURE_HEADER: sign(body, SECRET)}
                )
                answers.append(await response.json())

            printer.on_return = call_back
            [returned] = await printer.process_returns()
            assert answers == [{"received": 1, "new": 1}]
            await drain(configured, clock=clock)

            contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
            [attempt] = contact["attempts"]
            assert returned.reference == f"{contact_id}.{attempt['id']}"
            assert attempt["status"] == "returned"
            assert contact["status"] == "returned"
        finally:
            await client.close()
