"""webhooks.sendgrid against genuinely signed batches: a P-256 key pair made here signs timestamp + raw body
exactly as SendGrid's Signed Event Webhook does, and SendGrid's own published test vector (from the
``EventWebhook`` tests of sendgrid-python) verifies unchanged."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.settings import Settings
from webhooks.events import BadCredentials, CarrierWebhook, MalformedPayload, MissingCredentials
from webhooks.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridWebhook,
    classify,
    load_public_key,
)

NOW = datetime(2026, 2, 12, 18, 26, 12, tzinfo=UTC)
CONTACT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RA"
ATTEMPT = "01JQ7ZK3W5N8T4HZ2V6XYPM0RB"
DOMAIN = "orchestrator.invalid"
MESSAGE_ID = f"<{CONTACT}.{ATTEMPT}@{DOMAIN}>"
URL = "https://orchestrator.example.no/webhooks/sendgrid"

# SendGrid's published test vector: sendgrid/sendgrid-python, test/unit/test_eventwebhook.py (a "dropped"
# event of 2020-09-14; SendGrid's bodies end in CRLF, and the signature covers it).
VECTOR_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVp"
    "iglSI8eNEc6wEA3F+g=="
)
VECTOR_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
)
VECTOR_TIMESTAMP = "1600112502"
VECTOR_BODY = (
    b'[{"email":"hello@world.com","event":"dropped","reason":"Bounced Address",'
    b'"sg_event_id":"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",'
    b'"sg_message_id":"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",'
    b'"smtp-id":"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>","timestamp":1600112492}]\r\n'
)
# The "bad key" of the same tests: a valid P-256 key that did not sign the vector.
VECTOR_OTHER_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7"
    "GjUuFDb/R1NGe1OPzpA=="
)
# The earlier vector of sendgrid-python (test/test_eventwebhook.py): a JSON object, not an array, as body.
OLD_VECTOR_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZ"
    "FceEu/1FwCM/QmGUhA=="
)
OLD_VECTOR_SIGNATURE = (
    "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="
)
OLD_VECTOR_TIMESTAMP = "1588788367"
OLD_VECTOR_BODY = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'


def at(timestamp: str) -> datetime:
    return datetime.fromtimestamp(int(timestamp), UTC)


@pytest.fixture(scope="module")
def private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def public_key_b64(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture
def settings(public_key_b64: str) -> Settings:
    return Settings(sendgrid_webhook_public_key=public_key_b64)


def webhook(now: datetime = NOW, **kwargs: Any) -> SendGridWebhook:
    return SendGridWebhook(clock=lambda: now, **kwargs)


def element(event: str = "delivered", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "email": "kari@example.no",
        "timestamp": int(NOW.timestamp()) - 5,
        "smtp-id": MESSAGE_ID,
        "event": event,
        "category": ["purring"],
        "sg_event_id": f"sg-{event}-{len(extra)}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    }
    data.update(extra)
    return data


def batch(*elements: Any) -> bytes:
    """A body as SendGrid sends it: a JSON array, CRLF at the end."""
    return json.dumps(list(elements) or [element()], separators=(",", ":")).encode() + b"\r\n"


def sign(private_key: ec.EllipticCurvePrivateKey, body: bytes, *, when: datetime = NOW) -> dict[str, str]:
    """The two headers SendGrid adds: base64 DER ECDSA(SHA-256) over timestamp + raw body."""
    timestamp = str(int(when.timestamp()))
    signature = private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: timestamp,
    }


def verify(
    body: bytes, headers: dict[str, str], settings: Settings, hook: SendGridWebhook | None = None
) -> None:
    (hook or webhook()).verify(url=URL, headers=headers, body=body, settings=settings)


# --------------------------------------------------------------------------------------------- protocol


def test_implements_the_protocol(settings: Settings) -> None:
    hook = webhook()
    assert isinstance(hook, CarrierWebhook)
    assert hook.name == "sendgrid"
    assert hook.configured(settings)
    assert not hook.configured(Settings(sendgrid_webhook_public_key=None))
    assert not hook.configured(Settings(sendgrid_webhook_public_key="  "))


# ------------------------------------------------------------------------------------- SendGrid's vector


def test_sendgrid_published_vector_verifies() -> None:
    settings = Settings(sendgrid_webhook_public_key=VECTOR_KEY)
    headers = {SIGNATURE_HEADER: VECTOR_SIGNATURE, TIMESTAMP_HEADER: VECTOR_TIMESTAMP}
    hook = webhook(at(VECTOR_TIMESTAMP) + timedelta(seconds=4))
    verify(VECTOR_BODY, headers, settings, hook)

    [event] = hook.parse(url=URL, headers=headers, body=VECTOR_BODY)
    assert event.carrier == "sendgrid"
    assert event.event_id == "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA"
    assert (event.status, event.reason) == ("failed", "hard_bounce")  # dropped: "Bounced Address"
    assert event.at == at("1600112492")
    assert event.provider_message_id == "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>"
    assert event.attempt_id is None  # SendGrid's own Message-ID, not one of ours
    assert event.detail["sendgrid_reason"] == "Bounced Address"
    assert event.detail["never_sent"] is True


@pytest.mark.parametrize(
    ("key", "body", "signature", "timestamp"),
    [
        pytest.param(VECTOR_OTHER_KEY, VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_TIMESTAMP, id="other-key"),
        pytest.param(
            VECTOR_KEY, VECTOR_BODY.rstrip(b"\r\n"), VECTOR_SIGNATURE, VECTOR_TIMESTAMP, id="crlf-dropped"
        ),
        pytest.param(VECTOR_KEY, b"payload", VECTOR_SIGNATURE, VECTOR_TIMESTAMP, id="other-body"),
        pytest.param(
            VECTOR_KEY,
            VECTOR_BODY,
            "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=",
            VECTOR_TIMESTAMP,
            id="other-signature",
        ),
        pytest.param(VECTOR_KEY, VECTOR_BODY, VECTOR_SIGNATURE, "1600112503", id="other-timestamp"),
        pytest.param(VECTOR_KEY, VECTOR_BODY, VECTOR_SIGNATURE, "timestamp", id="timestamp-not-a-number"),
    ],
)
def test_sendgrid_vector_tampered_is_bad_credentials(
    key: str, body: bytes, signature: str, timestamp: str
) -> None:
    settings = Settings(sendgrid_webhook_public_key=key)
    headers = {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: timestamp}
    with pytest.raises(BadCredentials) as caught:
        verify(body, headers, settings, webhook(at(VECTOR_TIMESTAMP)))
    assert caught.value.status == 401


def test_sendgrid_vector_today_is_stale() -> None:
    settings = Settings(sendgrid_webhook_public_key=VECTOR_KEY)
    headers = {SIGNATURE_HEADER: VECTOR_SIGNATURE, TIMESTAMP_HEADER: VECTOR_TIMESTAMP}
    with pytest.raises(BadCredentials, match="from our clock"):
        verify(VECTOR_BODY, headers, settings, SendGridWebhook())  # the real clock: six years late


def test_sendgrid_older_vector_verifies_but_is_not_an_array() -> None:
    settings = Settings(sendgrid_webhook_public_key=OLD_VECTOR_KEY)
    headers = {SIGNATURE_HEADER: OLD_VECTOR_SIGNATURE, TIMESTAMP_HEADER: OLD_VECTOR_TIMESTAMP}
    hook = webhook(at(OLD_VECTOR_TIMESTAMP))
    verify(OLD_VECTOR_BODY, headers, settings, hook)
    with pytest.raises(MalformedPayload) as caught:
        hook.parse(url=URL, headers=headers, body=OLD_VECTOR_BODY)
    assert caught.value.status == 200


# --------------------------------------------------------------------------------------------- verify


def test_correctly_signed_batch_verifies_and_parses(
    private_key: ec.EllipticCurvePrivateKey, settings: Settings
) -> None:
    body = batch(element("processed"), element("delivered", response="250 OK"))
    headers = sign(private_key, body)
    verify(body, headers, settings)
    processed, delivered = webhook().parse(url=URL, headers=headers, body=body)
    assert (processed.status, processed.reason) == ("accepted", None)
    assert (delivered.status, delivered.reason) == ("delivered", None)
    for event in (processed, delivered):
        assert event.attempt_id == ATTEMPT
        assert event.provider_message_id == MESSAGE_ID
        assert event.at == NOW - timedelta(seconds=5)
    assert delivered.detail["response"] == "250 OK"
    assert processed.event_id != delivered.event_id


def test_pem_key_and_lower_case_headers_are_accepted(private_key: ec.EllipticCurvePrivateKey) -> None:
    pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    body = batch()
    headers = {name.lower(): value for name, value in sign(private_key, body).items()}
    verify(body, headers, Settings(sendgrid_webhook_public_key=pem))


def test_base64_key_with_line_breaks_is_accepted(
    private_key: ec.EllipticCurvePrivateKey, public_key_b64: str
) -> None:
    wrapped = "\n".join(public_key_b64[i : i + 40] for i in range(0, len(public_key_b64), 40)) + "\n"
    body = batch()
    verify(body, sign(private_key, body), Settings(sendgrid_webhook_public_key=wrapped))


def test_signed_by_another_key_is_bad_credentials(settings: Settings) -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    body = batch()
    with pytest.raises(BadCredentials) as caught:
        verify(body, sign(forger, body), settings)
    assert caught.value.status == 401


def test_tampered_body_is_bad_credentials(
    private_key: ec.EllipticCurvePrivateKey, settings: Settings
) -> None:
    body = batch(element("bounce", type="bounce"))
    headers = sign(private_key, body)
    with pytest.raises(BadCredentials):
        verify(body.replace(b'"bounce"', b'"open"'), headers, settings)


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("not base64 at all!", id="not-base64"),
        pytest.param(base64.b64encode(b"\x30\x02\x00\x00").decode(), id="not-der"),
        pytest.param(base64.b64encode(b"x" * 64).decode(), id="raw-bytes"),
    ],
)
def test_unreadable_signature_is_bad_credentials(
    private_key: ec.EllipticCurvePrivateKey, settings: Settings, signature: str
) -> None:
    body = batch()
    headers = sign(private_key, body) | {SIGNATURE_HEADER: signature}
    with pytest.raises(BadCredentials):
        verify(body, headers, settings)


@pytest.mark.parametrize("missing", [SIGNATURE_HEADER, TIMESTAMP_HEADER, "both"])
def test_missing_headers_are_missing_credentials(
    private_key: ec.EllipticCurvePrivateKey, settings: Settings, missing: str
) -> None:
    body = batch()
    headers = sign(private_key, body)
    for name in (SIGNATURE_HEADER, TIMESTAMP_HEADER) if missing == "both" else (missing,):
        del headers[name]
    with pytest.raises(MissingCredentials) as caught:
        verify(body, headers, settings)
    assert caught.value.status == 400


def test_empty_header_is_missing_credentials(
    private_key: ec.EllipticCurvePrivateKey, settings: Settings
) -> None:
    body = batch()
    with pytest.raises(MissingCredentials):
        verify(body, sign(private_key, body) | {SIGNATURE_HEADER: " "}, settings)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(minutes=-14, seconds=-59), True),
        (timedelta(minutes=14, seconds=59), True),
        (timedelta(minutes=-15, seconds=-2), False),
        (timedelta(hours=-24), False),
        (timedelta(minutes=16), False),
    ],
)
def test_freshness_window_is_fifteen_minutes(
    private_key: ec.EllipticCurvePrivateKey, settings: Settings, offset: timedelta, accepted: bool
) -> None:
    body = batch()
    headers = sign(private_key, body, when=NOW + offset)
    if accepted:
        verify(body, headers, settings)
    else:
        with pytest.raises(BadCredentials) as caught:
            verify(body, headers, settings)
        assert caught.value.status == 401


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("not a key", id="garbage"),
        pytest.param(base64.b64encode(b"\x30\x03\x02\x01\x00").decode(), id="der-but-not-a-key"),
        pytest.param(
            base64.b64encode(
                ec.generate_private_key(ec.SECP384R1())
                .public_key()
                .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            ).decode(),
            id="p384",
        ),
    ],
)
def test_unusable_configured_key_never_verifies(private_key: ec.EllipticCurvePrivateKey, key: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message depends on the failure
        load_public_key(key)
    body = batch()
    with pytest.raises(BadCredentials):
        verify(body, sign(private_key, body), Settings(sendgrid_webhook_public_key=key))


def test_unconfigured_key_never_verifies(private_key: ec.EllipticCurvePrivateKey) -> None:
    body = batch()
    with pytest.raises(BadCredentials):
        verify(body, sign(private_key, body), Settings(sendgrid_webhook_public_key=None))


def test_max_age_is_checked() -> None:
    with pytest.raises(ValueError, match="max_age_s"):
        SendGridWebhook(max_age_s=0)


# --------------------------------------------------------------------------------------------- parse


@pytest.mark.parametrize(
    ("event", "extra", "status", "reason"),
    [
        ("processed", {}, "accepted", None),
        ("deferred", {"response": "400 try again later", "attempt": "5"}, "accepted", "soft_bounce"),
        ("delivered", {"response": "250 OK"}, "delivered", None),
        ("bounce", {"type": "bounce", "status": "5.1.1"}, "bounced", "hard_bounce"),
        ("bounce", {}, "bounced", "hard_bounce"),
        ("bounce", {"type": "blocked", "status": "5.7.1"}, "failed", "blocked"),
        ("bounce", {"type": "expired"}, "failed", "retries_exhausted"),
        ("dropped", {"reason": "Bounced Address"}, "failed", "hard_bounce"),
        ("dropped", {"reason": "Invalid"}, "failed", "invalid_destination"),
        ("dropped", {"reason": "Unsubscribed Address"}, "failed", "suppressed_unsubscribe"),
        ("dropped", {"reason": "Spam Reporting Address"}, "failed", "suppressed_complaint"),
        ("dropped", {"reason": "Invalid SMTPAPI header"}, "failed", "dropped"),
        ("dropped", {}, "failed", "dropped"),
        ("open", {"useragent": "Mozilla/5.0", "ip": "192.0.2.1"}, "read", None),
        ("click", {"url": "https://example.no/"}, "read", "clicked"),
        ("spamreport", {}, "delivered", "complained"),
        ("unsubscribe", {}, "delivered", "unsubscribed"),
        ("group_unsubscribe", {"asm_group_id": 1}, "delivered", "unsubscribed"),
    ],
)
def test_status_mapping(event: str, extra: dict[str, Any], status: str, reason: str | None) -> None:
    assert classify(event, type_=extra.get("type"), reason=extra.get("reason")) == (status, reason)
    [parsed] = webhook().parse(url=URL, headers={}, body=batch(element(event, **extra)))
    assert (parsed.status, parsed.reason) == (status, reason)


def test_bounce_keeps_the_carrier_codes() -> None:
    reason = "550 5.1.1 The email account that you tried to reach does not exist."
    [event] = webhook().parse(
        url=URL, headers={}, body=batch(element("bounce", type="bounce", status="5.1.1", reason=reason))
    )
    assert event.detail == {
        "event": "bounce",
        "type": "bounce",
        "sendgrid_reason": reason,
        "smtp_status": "5.1.1",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    }


def test_complaint_and_opt_out_are_flagged_for_the_policy() -> None:
    complaint, opt_out = webhook().parse(
        url=URL, headers={}, body=batch(element("spamreport"), element("unsubscribe"))
    )
    assert complaint.detail["complained"] is True
    assert opt_out.detail["opt_out"] is True


def test_click_never_keeps_the_link() -> None:
    link = "https://orchestrator.example.no/s/secret-self-service-token"
    [event] = webhook().parse(url=URL, headers={}, body=batch(element("click", url=link)))
    assert link not in json.dumps(event.detail)


def test_custom_arg_attempt_id_finds_engagement_events_without_smtp_id() -> None:
    """Opens and clicks carry no smtp-id; a custom argument (X-SMTPAPI unique_args) finds the attempt."""
    opened = element("open", attempt_id=ATTEMPT.lower())
    del opened["smtp-id"]
    [event] = webhook().parse(url=URL, headers={}, body=batch(opened))
    assert event.attempt_id == ATTEMPT
    assert event.provider_message_id is None

    bare = element("open")
    del bare["smtp-id"]
    [unmatched] = webhook().parse(url=URL, headers={}, body=batch(bare))
    assert unmatched.attempt_id is None


def test_custom_arg_wins_and_junk_custom_arg_is_ignored() -> None:
    other = "01JQ80000000000000000000ZZ"
    [chosen] = webhook().parse(url=URL, headers={}, body=batch(element("delivered", attempt_id=other)))
    assert chosen.attempt_id == other
    [fallback] = webhook().parse(url=URL, headers={}, body=batch(element("delivered", attempt_id="42")))
    assert fallback.attempt_id == ATTEMPT


def test_message_id_of_another_domain_is_not_ours_when_the_domain_is_given() -> None:
    foreign = element("delivered", **{"smtp-id": f"<{CONTACT}.{ATTEMPT}@elsewhere.example>"})
    [anyone] = webhook().parse(url=URL, headers={}, body=batch(foreign))
    assert anyone.attempt_id == ATTEMPT
    [strict] = webhook(email_domain=DOMAIN).parse(url=URL, headers={}, body=batch(foreign))
    assert strict.attempt_id is None


def test_bad_elements_are_reported_and_good_ones_kept(
    private_key: ec.EllipticCurvePrivateKey, settings: Settings
) -> None:
    no_id = element("delivered")
    del no_id["sg_event_id"]
    body = batch(
        element("processed"),
        no_id,
        "not an object",
        element("group_resubscribe"),
        element("open", timestamp="yesterday"),
        element("delivered", sg_event_id="sg-last"),
    )
    verify(body, sign(private_key, body), settings)
    good = webhook().parse(url=URL, headers={}, body=body)
    assert [e.event_id for e in good] == ["sg-processed-0", "sg-last"]
    expected = [
        {"index": 1, "error": "no sg_event_id", "sg_event_id": None},
        {"index": 2, "error": "not a JSON object", "sg_event_id": None},
        {
            "index": 3,
            "error": "an event type we do not handle: 'group_resubscribe'",
            "sg_event_id": "sg-group_resubscribe-0",
        },
        {"index": 4, "error": "no usable timestamp", "sg_event_id": "sg-open-1"},
    ]
    for event in good:
        assert event.detail["rejected_in_batch"] == expected
        json.dumps(event.detail)  # stays JSON for the ingress


def test_a_clean_batch_has_no_rejections() -> None:
    events = webhook().parse(url=URL, headers={}, body=batch(element("processed"), element("delivered")))
    assert all("rejected_in_batch" not in e.detail for e in events)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"\xff\xfe[]", id="not-utf8"),
        pytest.param(b'{"event":"delivered"}', id="object-not-array"),
        pytest.param(b"[]\r\n", id="empty-array"),
        pytest.param(b'[1, "two", null]', id="no-objects"),
        pytest.param(b'[{"event": "delivered", "timestamp": 1}]', id="no-event-id"),
        pytest.param(b'[{"sg_event_id": "x", "timestamp": 1}]', id="no-event-type"),
        pytest.param(b'[{"sg_event_id": "x", "event": "delivered"}]', id="no-timestamp"),
        pytest.param(
            json.dumps([{"sg_event_id": "x" * 301, "event": "delivered", "timestamp": 1}]).encode(),
            id="event-id-too-long",
        ),
        pytest.param(b'[{"sg_event_id": "x", "event": "delivered", "timestamp": true}]', id="bool-timestamp"),
        pytest.param(
            b'[{"sg_event_id": "x", "event": "account_status_change", "timestamp": 1}]', id="unhandled"
        ),
    ],
)
def test_malformed_payload_is_answered_200(body: bytes) -> None:
    with pytest.raises(MalformedPayload) as caught:
        webhook().parse(url=URL, headers={}, body=body)
    assert caught.value.status == 200
