"""webhooks.digipost: Digipost document events pushed by a relay, HMAC-SHA256 signed, against the module and
through the real ``POST /webhooks/digipost`` route, and one receipt end to end (Digipost sandbox → worker)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from channels.digital_mailbox import document_uuid as digipost_document_uuid
from channels.digital_mailbox import message_uuid as digipost_message_uuid
from orchestrator.models import CarrierEvent as CarrierEventRow
from orchestrator.sandbox import digipost as digipost_sandbox
from orchestrator.settings import Settings
from tests.conftest import assert_problem, bearer, drain, make_client
from tests.factories import contact_payload, national_id, open_clock
from webhooks import ingress
from webhooks.digipost import (
    EVENT_MAP,
    SIGNATURE_HEADER,
    DigipostWebhook,
    document_uuid,
    message_uuid,
    parse_events,
    sign,
)
from webhooks.events import BadCredentials, CarrierWebhook, MalformedPayload, MissingCredentials

SECRET = "digipost-relay-secret-4f1c"
URL = "https://orchestrator.example.no/webhooks/digipost"
ATTEMPT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RB"
MESSAGE_ID = digipost_message_uuid(ATTEMPT)
DOCUMENT_ID = digipost_document_uuid(ATTEMPT)
EVENT_ID = "0b6a3c1e-2f4d-4e55-9a77-5b8f0e2d1c3a"
CREATED = "2026-03-02T10:15:00+01:00"


@pytest.fixture
def hook_settings() -> Settings:
    return Settings(digipost_webhook_secret=SecretStr(SECRET))


def event(type_: str = "OPENED", **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "uuid": EVENT_ID,
        "type": type_,
        "created": CREATED,
        "message_id": MESSAGE_ID,
        "document_uuid": DOCUMENT_ID,
    }
    item.update(changes)
    return {key: value for key, value in item.items() if value is not None}


def body_of(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def genuine_signature(body: bytes, secret: str = SECRET) -> str:
    """Computed here independently of the module: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, headers: dict[str, str], settings: Settings) -> None:
    DigipostWebhook().verify(url=URL, headers=headers, body=body, settings=settings)


# --------------------------------------------------------------------------------------------- protocol


def test_implements_the_protocol(hook_settings: Settings) -> None:
    hook = DigipostWebhook()
    assert isinstance(hook, CarrierWebhook)
    assert hook.name == "digipost"
    assert hook.configured(hook_settings)
    assert not hook.configured(Settings(digipost_webhook_secret=None))
    assert not hook.configured(Settings(digipost_webhook_secret=SecretStr("")))


def test_sign_is_hmac_sha256_of_the_raw_body() -> None:
    body = body_of(event())
    assert sign(body, SECRET) == genuine_signature(body)


def test_the_digipost_ids_are_the_channels_ids() -> None:
    assert message_uuid(ATTEMPT) == MESSAGE_ID == str(uuid.UUID(MESSAGE_ID))
    assert document_uuid(ATTEMPT) == DOCUMENT_ID != MESSAGE_ID


# ------------------------------------------------------------------------------------------------ verify


def test_a_genuine_signature_verifies(hook_settings: Settings) -> None:
    body = body_of(event())
    verify(body, {SIGNATURE_HEADER: genuine_signature(body)}, hook_settings)
    # any header case, upper-case hex
    verify(body, {SIGNATURE_HEADER.lower(): genuine_signature(body).upper()}, hook_settings)


def test_a_missing_signature_is_missing_credentials_400(hook_settings: Settings) -> None:
    with pytest.raises(MissingCredentials) as caught:
        verify(body_of(event()), {"Content-Type": "application/json"}, hook_settings)
    assert caught.value.status == 400
    with pytest.raises(MissingCredentials):
        verify(body_of(event()), {SIGNATURE_HEADER: "  "}, hook_settings)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda body: genuine_signature(body, "another-secret"), id="wrong-secret"),
        pytest.param(lambda body: genuine_signature(body + b" "), id="other-body"),
        pytest.param(lambda body: genuine_signature(body).removeprefix("sha256="), id="no-prefix"),
        pytest.param(lambda body: "sha1=" + hashlib.sha1(body).hexdigest(), id="sha1"),  # noqa: S324
        pytest.param(lambda body: "sha256=æøå", id="not-hex"),
    ],
)
def test_a_forged_signature_is_bad_credentials_401(hook_settings: Settings, forge: Any) -> None:
    body = body_of(event())
    with pytest.raises(BadCredentials) as caught:
        verify(body, {SIGNATURE_HEADER: forge(body)}, hook_settings)
    assert caught.value.status == 401


def test_a_tampered_body_fails(hook_settings: Settings) -> None:
    body = body_of(event("OPENED"))
    tampered = body_of(event("PRINT_FAILED"))
    with pytest.raises(BadCredentials):
        verify(tampered, {SIGNATURE_HEADER: genuine_signature(body)}, hook_settings)


def test_without_a_secret_nothing_verifies() -> None:
    body = body_of(event())
    with pytest.raises(BadCredentials):
        verify(body, {SIGNATURE_HEADER: genuine_signature(body)}, Settings(digipost_webhook_secret=None))


# ------------------------------------------------------------------------------------------------- parse


@pytest.mark.parametrize(
    ("digipost_type", "status", "reason", "detail"),
    [
        ("DELIVERED", "delivered", None, {"delivery": "digital"}),
        ("OPENED", "read", None, {"delivery": "digital"}),
        ("READ", "read", None, {"delivery": "digital"}),
        ("opened", "read", None, {"delivery": "digital"}),
        ("POSTMARKED", "sent", None, {"delivery": "print", "printed": True}),
        ("PRINTED", "sent", None, {"delivery": "print", "printed": True}),
        ("PRINT_FAILED", "failed", "print_failed", {"delivery": "print"}),
        ("print-failed", "failed", "print_failed", {"delivery": "print"}),
        ("SHREDDED", "accepted", None, {}),
        ("EXPIRED", "accepted", None, {}),
        ("EMAIL_NOTIFICATION_FAILED", "accepted", None, {}),
        ("SMS_NOTIFICATION_FAILED", "accepted", None, {}),
        ("SMS_NOTIFICATION_DELIVERED", "accepted", None, {}),
        ("MOVE_FILES_FROM_PUBLIC_SECTOR", "accepted", None, {}),
        ("SOMETHING_NEW", "accepted", None, {"unknown_type": True}),
    ],
)
def test_mapping(digipost_type: str, status: str, reason: str | None, detail: dict[str, Any]) -> None:
    [parsed] = parse_events(body_of(event(digipost_type)))
    assert parsed.carrier == "digipost"
    assert parsed.event_id == EVENT_ID
    assert parsed.provider_message_id == MESSAGE_ID
    assert parsed.attempt_id is None
    assert (parsed.status, parsed.reason) == (status, reason)
    expected_type = digipost_type.upper().replace("-", "_")
    assert parsed.detail == {"digipost_event": expected_type, **detail, "document_uuid": DOCUMENT_ID}
    assert parsed.at == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


def test_every_mapped_type_has_a_known_status() -> None:
    assert {status for status, _, _ in EVENT_MAP.values()} == {
        "delivered",
        "read",
        "sent",
        "failed",
        "accepted",
    }


def test_ids_are_canonical_uuids() -> None:
    [parsed] = parse_events(body_of(event(uuid=EVENT_ID.upper(), message_id=MESSAGE_ID.upper())))
    assert (parsed.event_id, parsed.provider_message_id) == (EVENT_ID, MESSAGE_ID)


def test_only_a_document_uuid_is_kept_as_the_provider_message_id() -> None:
    [parsed] = parse_events(body_of(event(message_id=None)))
    assert parsed.provider_message_id == DOCUMENT_ID
    assert parsed.detail["document_uuid"] == DOCUMENT_ID
    [parsed] = parse_events(body_of(event(document_uuid=None)))
    assert parsed.provider_message_id == MESSAGE_ID
    assert "document_uuid" not in parsed.detail


def test_metadata_is_kept_flat_and_without_national_ids() -> None:
    fnr = national_id("060763", "120")
    metadata = {
        "error-message": f"Kunne ikke skrive ut brev til {fnr}",
        "postmarked-date": "2026-03-03T08:00:00+01:00",
        "pages": 2,
        "nested": {"dropped": True},
        "list": [1, 2],
    }
    [parsed] = parse_events(body_of(event("PRINT_FAILED", metadata=metadata)))
    kept = parsed.detail["metadata"]
    assert set(kept) == {"error-message", "postmarked-date", "pages"}
    assert fnr not in json.dumps(parsed.detail)
    assert kept["error-message"].startswith("Kunne ikke skrive ut brev til ")


def test_a_replay_is_the_same_event_and_a_duplicate_in_one_push_counts_once() -> None:
    body = body_of(event("OPENED"))
    assert parse_events(body) == parse_events(body)
    other = event("POSTMARKED", uuid="7d1f2a8e-7c55-4a1e-9a0b-2e4f5a6b7c8d")
    events = parse_events(body_of(event("OPENED"), event("OPENED"), other))
    assert [e.event_id for e in events] == [EVENT_ID, other["uuid"]]


def test_an_empty_push_is_no_events() -> None:
    assert parse_events(body_of()) == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b'{"events": {}}', id="events-not-a-list"),
        pytest.param(b'{"receipts": []}', id="no-events"),
        pytest.param(body_of("OPENED"), id="event-not-an-object"),  # type: ignore[arg-type]
        pytest.param(body_of(event(uuid=None)), id="no-uuid"),
        pytest.param(body_of(event(uuid="not-a-uuid")), id="bad-uuid"),
        pytest.param(body_of(event(type=None)), id="no-type"),
        pytest.param(body_of(event(type=" ")), id="blank-type"),
        pytest.param(body_of(event(created=None)), id="no-created"),
        pytest.param(body_of(event(created="yesterday")), id="bad-created"),
        pytest.param(body_of(event(created="2026-03-02T10:15:00")), id="created-without-offset"),
        pytest.param(body_of(event(message_id=None, document_uuid=None)), id="no-ids"),
        pytest.param(body_of(event(message_id="12345")), id="bad-message-id"),
        pytest.param(body_of(event(document_uuid=7)), id="bad-document-uuid"),
        pytest.param(body_of(event(metadata=["x"])), id="metadata-not-an-object"),
        pytest.param(body_of(event(), event(uuid=None)), id="one-bad-event"),
    ],
)
def test_authentic_but_unreadable_is_malformed_with_status_200(body: bytes) -> None:
    with pytest.raises(MalformedPayload) as caught:
        DigipostWebhook().parse(url=URL, headers={}, body=body)
    assert caught.value.status == 200


# ----------------------------------------------------------------------------------- the route, for real


@pytest.fixture
async def digipost_client(
    settings: Settings, sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    monkeypatch.setitem(ingress.WEBHOOKS, "digipost", DigipostWebhook())
    configured = settings.model_copy(update={"digipost_webhook_secret": SecretStr(SECRET)})
    client = await make_client(configured)
    yield client
    await client.close()


async def _stored(sessions: Any) -> list[CarrierEventRow]:
    async with sessions() as session:
        return list((await session.execute(select(CarrierEventRow))).scalars())


async def test_route_records_a_genuine_event_once(digipost_client: Any, sessions: Any) -> None:
    body = body_of(event("OPENED"))
    headers = {SIGNATURE_HEADER: genuine_signature(body), "Content-Type": "application/json"}

    first = await digipost_client.post("/webhooks/digipost", data=body, headers=headers)
    assert first.status == 200
    assert await first.json() == {"received": 1, "new": 1}
    replay = await digipost_client.post("/webhooks/digipost", data=body, headers=headers)
    assert replay.status == 200
    assert await replay.json() == {"received": 1, "new": 0}

    [row] = await _stored(sessions)
    assert (row.carrier, row.event_id) == ("digipost", EVENT_ID)
    assert row.payload["event"]["status"] == "read"
    assert row.payload["event"]["provider_message_id"] == MESSAGE_ID


async def test_route_refuses_forged_401_and_unsigned_400(digipost_client: Any, sessions: Any) -> None:
    body = body_of(event("OPENED"))
    forged = await digipost_client.post(
        "/webhooks/digipost", data=body, headers={SIGNATURE_HEADER: genuine_signature(body, "guess")}
    )
    await assert_problem(forged, 401)
    unsigned = await digipost_client.post("/webhooks/digipost", data=body)
    await assert_problem(unsigned, 400)
    assert await _stored(sessions) == []


async def test_route_keeps_a_signed_but_malformed_body_and_answers_200(
    digipost_client: Any, sessions: Any
) -> None:
    body = b'{"events": [{"type": "OPENED"}]}'
    r = await digipost_client.post(
        "/webhooks/digipost", data=body, headers={SIGNATURE_HEADER: sign(body, SECRET)}
    )
    assert r.status == 200
    [row] = await _stored(sessions)
    assert row.payload["event"] is None
    assert row.event_id.startswith("malformed:")


async def test_route_is_404_when_not_configured(
    settings: Settings, sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ingress.WEBHOOKS, "digipost", DigipostWebhook())
    client = await make_client(settings)  # no ORCH_DIGIPOST_WEBHOOK_SECRET
    try:
        body = body_of(event())
        r = await client.post("/webhooks/digipost", data=body, headers={SIGNATURE_HEADER: sign(body, SECRET)})
        await assert_problem(r, 404)
    finally:
        await client.close()


# ------------------------------------------------------------------------------------------ end to end

SENDER_ID = "123456"


async def test_an_opened_receipt_moves_the_digipost_attempt_to_read(
    settings: Settings, sessions: Any, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_pem, public_pem = digipost_sandbox.generate_key_pair()
    state = digipost_sandbox.DigipostSandbox()
    state.add_sender(SENDER_ID, public_pem)
    fnr = national_id("060763", "120")
    state.add_user(fnr)
    monkeypatch.setitem(ingress.WEBHOOKS, "digipost", DigipostWebhook())
    async with digipost_sandbox.serve(state) as url:
        configured = settings.model_copy(
            update={
                "digipost_url": url,
                "digipost_sender_id": SENDER_ID,
                "digipost_private_key": SecretStr(private_pem.decode()),
                "digipost_return_address": "Eksempel Kreditt AS; Postboks 1; 0101 OSLO",
                "digipost_webhook_secret": SecretStr(SECRET),
            }
        )
        client = await make_client(configured)
        try:
            payload = contact_payload(
                7, debtor__phones=[], debtor__emails=[], debtor__electronic_notice_evidence=[]
            )
            payload["kind"] = "inkassovarsel"
            payload["debtor"]["national_id"] = fnr
            r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
            contact_id = (await r.json())["id"]
            clock = open_clock()
            await drain(configured, clock=clock)

            contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
            [attempt] = contact["attempts"]
            assert attempt["provider"] == "digipost"
            assert attempt["provider_message_id"] == message_uuid(attempt["id"])

            # what a relay pushes after polling Digipost's document events
            body = body_of(
                event(
                    "OPENED",
                    uuid=str(uuid.uuid4()),
                    message_id=message_uuid(attempt["id"]),
                    document_uuid=document_uuid(attempt["id"]),
                )
            )
            pushed = await client.post(
                "/webhooks/digipost", data=body, headers={SIGNATURE_HEADER: sign(body, SECRET)}
            )
            assert await pushed.json() == {"received": 1, "new": 1}
            await drain(configured, clock=clock)

            contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
            assert contact["attempts"][0]["status"] == "read"
            assert contact["status"] == "read"
        finally:
            await client.close()
