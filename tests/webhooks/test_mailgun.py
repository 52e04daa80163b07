"""webhooks.mailgun against genuinely signed callbacks (HMAC-SHA256 under a test signing key, exactly as
Mailgun signs: hex of HMAC(key, timestamp + token)), the replay cache on the real Redis and in process."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from channels.base import Outgoing
from channels.mime import build_email
from orchestrator.settings import Settings
from webhooks.events import BadCredentials, CarrierWebhook, MalformedPayload, MissingCredentials
from webhooks.mailgun import (
    MailgunWebhook,
    TokenCache,
    attempt_id_from_message_id,
    bracketed_message_id,
    classify,
    mailgun_signature,
)

KEY = "key-0123456789abcdef0123456789abcdef"
PARENT_KEY = "key-parent-fedcba9876543210"
NOW = datetime(2026, 2, 12, 18, 26, 12, tzinfo=UTC)
CONTACT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RA"
ATTEMPT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RB"
DOMAIN = "orchestrator.invalid"
MESSAGE_ID = f"{CONTACT}.{ATTEMPT}@{DOMAIN}"  # as Mailgun reports it: no angle brackets
URL = "https://orchestrator.example.no/webhooks/mailgun"


@pytest.fixture
def settings() -> Settings:
    return Settings(mailgun_webhook_signing_key=SecretStr(KEY))


def webhook(**kwargs: Any) -> MailgunWebhook:
    return MailgunWebhook(clock=lambda: NOW, **kwargs)


def event_data(event: str = "delivered", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "CCXMjJ7nQi2N3BPigGOdgQ",
        "event": event,
        "timestamp": NOW.timestamp() - 3.25,
        "log-level": "info",
        "recipient": "kari@example.no",
        "message": {
            "headers": {
                "to": "kari@example.no",
                "message-id": MESSAGE_ID,
                "from": "Eksempel <post@example.invalid>",
                "subject": "Betalingspåminnelse",
            },
            "size": 341,
        },
    }
    data.update(extra)
    return data


def signed(
    data: dict[str, Any] | None = None,
    *,
    key: str = KEY,
    at: datetime = NOW,
    token: str | None = None,
    parent_key: str | None = None,
) -> bytes:
    """A callback body signed the way Mailgun signs it."""
    timestamp = str(int(at.timestamp()))
    token = token or secrets.token_hex(25)  # Mailgun: 50 random characters
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    block = {"timestamp": timestamp, "token": token, "signature": digest}
    if parent_key is not None:
        block["signature"] = "0" * 64  # signed for the sub-account's key, which we do not have
        block["parent-signature"] = hmac.new(
            parent_key.encode(), (timestamp + token).encode(), hashlib.sha256
        ).hexdigest()
    return json.dumps({"signature": block, "event-data": data or event_data()}).encode()


def verify(body: bytes, settings: Settings, hook: MailgunWebhook | None = None) -> None:
    (hook or webhook()).verify(
        url=URL, headers={"Content-Type": "application/json"}, body=body, settings=settings
    )


# --------------------------------------------------------------------------------------------- protocol


def test_implements_the_protocol(settings: Settings) -> None:
    hook = webhook()
    assert isinstance(hook, CarrierWebhook)
    assert hook.name == "mailgun"
    assert hook.configured(settings)
    assert not hook.configured(Settings(mailgun_webhook_signing_key=None))
    assert not hook.configured(Settings(mailgun_webhook_signing_key=SecretStr("")))


def test_signature_helper_matches_mailgun_scheme() -> None:
    expected = hmac.new(b"k", b"1770920772" + b"tok", hashlib.sha256).hexdigest()
    assert mailgun_signature("k", "1770920772", "tok") == expected


# --------------------------------------------------------------------------------------------- verify


def test_correctly_signed_callback_verifies_and_parses(settings: Settings) -> None:
    body = signed()
    verify(body, settings)
    [event] = webhook().parse(url=URL, headers={}, body=body)
    assert event.carrier == "mailgun"
    assert event.event_id == "CCXMjJ7nQi2N3BPigGOdgQ"
    assert event.status == "delivered"
    assert event.reason is None
    assert event.at == NOW - timedelta(seconds=3.25)
    assert event.at.tzinfo is not None
    assert event.attempt_id == ATTEMPT
    assert event.provider_message_id == f"<{MESSAGE_ID}>"


def test_parent_signature_of_a_subaccount_verifies() -> None:
    body = signed(parent_key=PARENT_KEY)
    verify(body, Settings(mailgun_webhook_signing_key=SecretStr(PARENT_KEY)))
    with pytest.raises(BadCredentials):
        verify(body, Settings(mailgun_webhook_signing_key=SecretStr(KEY)))


def test_integer_timestamp_in_the_signature_block_verifies(settings: Settings) -> None:
    payload = json.loads(signed())
    payload["signature"]["timestamp"] = int(payload["signature"]["timestamp"])
    verify(json.dumps(payload).encode(), settings)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda p: p["signature"].update(signature="f" * 64), id="wrong-digest"),
        pytest.param(
            lambda p: p["signature"].update(token=p["signature"]["token"] + "x"), id="token-changed"
        ),
        pytest.param(
            lambda p: p["signature"].update(timestamp=str(int(p["signature"]["timestamp"]) + 1)),
            id="timestamp-changed",
        ),
        pytest.param(lambda p: p["signature"].update(signature="ø" * 64), id="non-ascii-digest"),
        pytest.param(lambda p: p["signature"].update(signature=12345), id="digest-not-a-string"),
    ],
)
def test_forged_signature_is_bad_credentials(settings: Settings, forge: Any) -> None:
    payload = json.loads(signed())
    forge(payload)
    with pytest.raises(BadCredentials) as caught:
        verify(json.dumps(payload).encode(), settings)
    assert caught.value.status == 401


def test_signed_with_another_key_is_bad_credentials(settings: Settings) -> None:
    with pytest.raises(BadCredentials) as caught:
        verify(signed(key="key-somebody-else"), settings)
    assert caught.value.status == 401


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps({"event-data": event_data()}).encode(), id="no-signature-object"),
        pytest.param(json.dumps({"signature": "abc", "event-data": {}}).encode(), id="signature-not-object"),
        pytest.param(
            json.dumps({"signature": {"timestamp": "1", "token": "t"}, "event-data": {}}).encode(),
            id="no-digest",
        ),
        pytest.param(
            json.dumps({"signature": {"timestamp": "1", "signature": "ab"}, "event-data": {}}).encode(),
            id="no-token",
        ),
        pytest.param(
            json.dumps({"signature": {"token": "t", "signature": "ab"}, "event-data": {}}).encode(),
            id="no-timestamp",
        ),
        pytest.param(b"", id="empty-body"),
        pytest.param(b"event=delivered&token=abc", id="form-encoded-legacy"),
        pytest.param(b"[1, 2]", id="json-array"),
    ],
)
def test_missing_signature_is_missing_credentials(settings: Settings, body: bytes) -> None:
    with pytest.raises(MissingCredentials) as caught:
        verify(body, settings)
    assert caught.value.status == 400


def test_unconfigured_key_never_verifies() -> None:
    with pytest.raises(BadCredentials):
        verify(signed(), Settings(mailgun_webhook_signing_key=None))


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(minutes=-14, seconds=-59), True),
        (timedelta(minutes=14, seconds=59), True),
        (timedelta(minutes=-15, seconds=-2), False),
        (timedelta(minutes=-16), False),
        (timedelta(hours=-8), False),
        (timedelta(minutes=16), False),  # far in the future: as suspicious as far in the past
    ],
)
def test_freshness_window_is_fifteen_minutes(settings: Settings, offset: timedelta, accepted: bool) -> None:
    body = signed(at=NOW + offset)
    if accepted:
        verify(body, settings)
    else:
        with pytest.raises(BadCredentials) as caught:
            verify(body, settings)
        assert caught.value.status == 401


def test_non_numeric_signed_timestamp_is_bad_credentials(settings: Settings) -> None:
    token = "t" * 50
    digest = mailgun_signature(KEY, "yesterday", token)
    body = json.dumps(
        {"signature": {"timestamp": "yesterday", "token": token, "signature": digest}, "event-data": {}}
    ).encode()
    with pytest.raises(BadCredentials):
        verify(body, settings)


# --------------------------------------------------------------------------------------------- replays


async def test_replayed_token_is_detected_and_is_the_same_event(settings: Settings) -> None:
    hook = webhook()
    body = signed()
    verify(body, settings)
    assert await hook.check_replay(body=body) is False
    [first] = hook.parse(url=URL, headers={}, body=body)

    verify(body, settings)  # a replay still authenticates ...
    assert await hook.check_replay(body=body) is True  # ... and is recognised as one
    [again] = hook.parse(url=URL, headers={}, body=body)
    assert again.event_id == first.event_id  # the ingress's (carrier, event_id) key records it once


async def test_same_event_reserialised_is_still_a_replay(settings: Settings) -> None:
    hook = webhook()
    body = signed()
    payload = json.loads(body)
    reordered = json.dumps(
        {"event-data": dict(reversed(payload["event-data"].items())), "signature": payload["signature"]},
        indent=2,
    ).encode()
    verify(reordered, settings)
    assert await hook.check_replay(body=body) is False
    assert await hook.check_replay(body=reordered) is True


async def test_token_reused_with_another_event_is_bad_credentials(settings: Settings) -> None:
    """The signature does not cover event-data: a lifted signature block on a forged event is a forgery."""
    hook = webhook()
    genuine = signed(event_data("delivered"), token="lifted-token" * 4)
    assert await hook.check_replay(body=genuine) is False
    block = json.loads(genuine)["signature"]
    forged = json.dumps(
        {"signature": block, "event-data": event_data("failed", severity="permanent", reason="bounce")}
    ).encode()
    verify(forged, settings)  # the HMAC alone cannot tell ...
    with pytest.raises(BadCredentials) as caught:  # ... the token cache can
        await hook.check_replay(body=forged)
    assert caught.value.status == 401


async def test_check_replay_without_a_token_is_missing_credentials() -> None:
    with pytest.raises(MissingCredentials):
        await webhook().check_replay(body=json.dumps({"event-data": event_data()}).encode())


async def test_redis_cache_is_shared_between_processes(redis: Any) -> None:
    prefix = f"test:mailgun:{uuid.uuid4().hex}:"
    web_1 = MailgunWebhook(cache=TokenCache(redis, prefix=prefix), clock=lambda: NOW)
    web_2 = MailgunWebhook(cache=TokenCache(redis, prefix=prefix), clock=lambda: NOW)
    body = signed()
    assert await web_1.check_replay(body=body) is False
    assert await web_2.check_replay(body=body) is True  # the other web process sees the first one's token
    assert await web_1.check_replay(body=body) is True

    token = json.loads(body)["signature"]["token"]
    key = prefix + hashlib.sha256(token.encode()).hexdigest()
    assert 0 < await redis.ttl(key) <= 30 * 60  # remembered for twice the freshness window, then dropped

    forged = json.dumps({"signature": json.loads(body)["signature"], "event-data": event_data("opened")})
    with pytest.raises(BadCredentials):
        await web_2.check_replay(body=forged.encode())


async def test_redis_cache_passed_as_redis_argument(redis: Any) -> None:
    hook = MailgunWebhook(redis=redis, clock=lambda: NOW)
    body = signed()
    assert await hook.check_replay(body=body) is False
    assert await MailgunWebhook(redis=redis).check_replay(body=body) is True
    assert hook.cache.ttl_s == 2 * 15 * 60


async def test_redis_given_per_call_as_an_import_time_registry_would(redis: Any) -> None:
    """A webhook made without Redis (a module-level registry) uses the app's pool handed to each call."""
    web_1, web_2 = MailgunWebhook(clock=lambda: NOW), MailgunWebhook(clock=lambda: NOW)
    body = signed()
    assert await web_1.check_replay(body=body, redis=redis) is False
    assert await web_2.check_replay(body=body, redis=redis) is True
    assert await web_2.check_replay(body=body) is False  # its own in-process cache had not seen it


async def test_local_cache_forgets_after_its_ttl_and_stays_bounded() -> None:
    now = [1000.0]
    cache = TokenCache(ttl_s=60, max_entries=2, monotonic=lambda: now[0])
    assert await cache.check_replay("a", "x") is False
    assert await cache.check_replay("a", "x") is True
    now[0] += 61
    assert await cache.check_replay("a", "x") is False  # expired, claimed afresh

    assert await cache.check_replay("b", "x") is False
    assert await cache.check_replay("c", "x") is False  # "a" is evicted: at most two entries
    assert await cache.check_replay("a", "x") is False
    assert await cache.check_replay("c", "x") is True


def test_cache_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        TokenCache(ttl_s=0)
    with pytest.raises(ValueError, match="max_entries"):
        TokenCache(max_entries=0)
    with pytest.raises(ValueError, match="max_age_s"):
        MailgunWebhook(max_age_s=0)


# --------------------------------------------------------------------------------------------- parse


@pytest.mark.parametrize(
    ("event", "severity", "mailgun_reason", "status", "reason"),
    [
        ("accepted", None, None, "accepted", None),
        ("delivered", None, None, "delivered", None),
        ("failed", "permanent", "bounce", "bounced", "hard_bounce"),
        ("failed", "permanent", "generic", "bounced", "hard_bounce"),
        ("failed", "permanent", None, "bounced", "hard_bounce"),
        ("failed", "permanent", "suppress-bounce", "bounced", "hard_bounce"),
        ("failed", "permanent", "suppress-unsubscribe", "failed", "suppressed_unsubscribe"),
        ("failed", "permanent", "suppress-complaint", "failed", "suppressed_complaint"),
        ("failed", "permanent", "old", "failed", "retries_exhausted"),
        ("failed", "temporary", "generic", "accepted", "soft_bounce"),
        ("failed", "temporary", "greylisted", "accepted", "soft_bounce"),
        ("failed", None, None, "accepted", "soft_bounce"),
        ("opened", None, None, "read", None),
        ("clicked", None, None, "read", "clicked"),
        ("complained", None, None, "delivered", "complained"),
        ("unsubscribed", None, None, "delivered", "unsubscribed"),
        ("rejected", None, None, "failed", "rejected"),
    ],
)
def test_status_mapping(
    event: str, severity: str | None, mailgun_reason: str | None, status: str, reason: str | None
) -> None:
    assert classify(event, severity, mailgun_reason) == (status, reason)
    extra: dict[str, Any] = {}
    if severity is not None:
        extra["severity"] = severity
    if mailgun_reason is not None:
        extra["reason"] = mailgun_reason
    [parsed] = webhook().parse(url=URL, headers={}, body=signed(event_data(event, **extra)))
    assert (parsed.status, parsed.reason) == (status, reason)


def test_permanent_failure_keeps_the_carrier_codes() -> None:
    data = event_data(
        "failed",
        severity="permanent",
        reason="bounce",
        **{
            "delivery-status": {
                "tls": True,
                "mx-host": "mx.example.no",
                "attempt-no": 1,
                "description": "",
                "session-seconds": 2.95,
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist.",
            }
        },
    )
    [event] = webhook().parse(url=URL, headers={}, body=signed(data))
    assert event.status == "bounced"
    assert event.reason == "hard_bounce"
    assert event.detail == {
        "event": "failed",
        "severity": "permanent",
        "mailgun_reason": "bounce",
        "code": 550,
        "message": "5.1.1 The email account that you tried to reach does not exist.",
        "attempt_no": 1,
    }


def test_suppressed_address_is_marked_never_sent() -> None:
    data = event_data(
        "failed",
        severity="permanent",
        reason="suppress-bounce",
        **{"delivery-status": {"code": 605, "description": "Not delivering to previously bounced address"}},
    )
    [event] = webhook().parse(url=URL, headers={}, body=signed(data))
    assert (event.status, event.reason) == ("bounced", "hard_bounce")
    assert event.detail["never_sent"] is True
    assert event.detail["code"] == 605


def test_complaint_and_opt_out_are_flagged_for_the_policy() -> None:
    [complaint] = webhook().parse(url=URL, headers={}, body=signed(event_data("complained")))
    assert complaint.detail["complained"] is True
    [opt_out] = webhook().parse(url=URL, headers={}, body=signed(event_data("unsubscribed")))
    assert opt_out.detail["opt_out"] is True


def test_click_never_keeps_the_link() -> None:
    link = "https://orchestrator.example.no/s/secret-self-service-token"
    [event] = webhook().parse(url=URL, headers={}, body=signed(event_data("clicked", url=link)))
    assert link not in json.dumps(event.detail)


def test_user_variable_attempt_id_wins_over_the_message_id() -> None:
    other = "01JQ80000000000000000000ZZ"
    data = event_data("opened", **{"user-variables": {"attempt_id": other.lower()}})
    [event] = webhook().parse(url=URL, headers={}, body=signed(data))
    assert event.attempt_id == other


def test_event_timestamp_falls_back_to_the_signed_one() -> None:
    data = event_data()
    del data["timestamp"]
    [event] = webhook().parse(url=URL, headers={}, body=signed(data))
    assert event.at == NOW


def test_our_real_message_id_round_trips() -> None:
    """The Message-ID the e-mail channel writes comes back (bracketless, as Mailgun reports it) to our ids."""
    outgoing = Outgoing(
        contact_id=CONTACT,
        attempt_id=ATTEMPT,
        channel="email",
        to="kari@example.no",
        recipient_name="Kari Nordmann",
        text="Hei",
        subject="Påminnelse",
    )
    msg, _ = build_email(
        outgoing, from_addr="post@example.invalid", domain=DOMAIN, bounce_domain="b.invalid", now=NOW
    )
    written = str(msg["Message-ID"])
    data = event_data()
    data["message"]["headers"]["message-id"] = written.strip("<>")
    [event] = webhook(email_domain=DOMAIN).parse(url=URL, headers={}, body=signed(data))
    assert event.attempt_id == ATTEMPT
    assert event.provider_message_id == written  # the form the SMTP channel stores on the attempt


@pytest.mark.parametrize(
    ("message_id", "domain", "attempt"),
    [
        (f"<{CONTACT}.{ATTEMPT}@{DOMAIN}>", None, ATTEMPT),
        (f"{CONTACT}.{ATTEMPT}@{DOMAIN}", None, ATTEMPT),
        (f" <{CONTACT}.{ATTEMPT}@{DOMAIN}> ", None, ATTEMPT),
        (f"<{CONTACT.lower()}.{ATTEMPT.lower()}@{DOMAIN}>", None, ATTEMPT),
        (f"<{CONTACT}.{ATTEMPT}@{DOMAIN}>", DOMAIN, ATTEMPT),
        (f"<{CONTACT}.{ATTEMPT}@{DOMAIN.upper()}>", DOMAIN, ATTEMPT),
        (f"<{CONTACT}.{ATTEMPT}@other.example>", DOMAIN, None),
        ("<14c5d75ce93.dfd.64b469@ismtpd-555>", None, None),
        ("20130503182626.18666.16540@sandbox.mailgun.org", None, None),
        (f"<{CONTACT}@{DOMAIN}>", None, None),
        (f"<{CONTACT}.{ATTEMPT}.extra@{DOMAIN}>", None, None),
        (f"<{CONTACT}.{ATTEMPT}>", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_attempt_id_from_message_id(message_id: str | None, domain: str | None, attempt: str | None) -> None:
    assert attempt_id_from_message_id(message_id, domain) == attempt


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("a@b", "<a@b>"), ("<a@b>", "<a@b>"), (" <a@b> ", "<a@b>"), ("", None), ("<>", None), (None, None)],
)
def test_bracketed_message_id(raw: str | None, expected: str | None) -> None:
    assert bracketed_message_id(raw) == expected


def test_message_without_a_message_id_still_parses() -> None:
    data = event_data()
    del data["message"]
    [event] = webhook().parse(url=URL, headers={}, body=signed(data))
    assert event.attempt_id is None
    assert event.provider_message_id is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(json.dumps({"signature": {}}).encode(), id="no-event-data"),
        pytest.param(json.dumps({"event-data": "delivered"}).encode(), id="event-data-not-object"),
        pytest.param(
            json.dumps({"event-data": {"event": "delivered", "timestamp": 1.0}}).encode(), id="no-id"
        ),
        pytest.param(json.dumps({"event-data": {"id": "x", "timestamp": 1.0}}).encode(), id="no-event-type"),
        pytest.param(
            json.dumps({"event-data": {"id": "x", "event": "stored", "timestamp": 1.0}}).encode(),
            id="unhandled-event-type",
        ),
        pytest.param(
            json.dumps({"event-data": {"id": "x", "event": "delivered", "timestamp": "soon"}}).encode(),
            id="no-usable-timestamp",
        ),
        pytest.param(
            json.dumps({"event-data": {"id": "x", "event": "delivered", "timestamp": float("nan")}}).encode(),
            id="nan-timestamp",
        ),
        pytest.param(
            json.dumps({"event-data": {"id": "x", "event": "delivered", "timestamp": True}}).encode(),
            id="bool-timestamp",
        ),
        pytest.param(
            json.dumps({"event-data": {"id": "x" * 301, "event": "delivered", "timestamp": 1.0}}).encode(),
            id="id-too-long",
        ),
    ],
)
def test_malformed_payload_is_answered_200(body: bytes) -> None:
    with pytest.raises(MalformedPayload) as caught:
        webhook().parse(url=URL, headers={}, body=body)
    assert caught.value.status == 200


def test_authentic_but_malformed_callback(settings: Settings) -> None:
    """Signed correctly, so verify passes; the event itself cannot be read: MalformedPayload, not 4xx."""
    data = event_data()
    del data["id"]
    body = signed(data)
    verify(body, settings)
    with pytest.raises(MalformedPayload):
        webhook().parse(url=URL, headers={}, body=body)
