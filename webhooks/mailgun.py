"""Mailgun e-mail events: ``POST /webhooks/mailgun``.

Mailgun posts one JSON object per event::

    {"signature": {"timestamp": "1770920772", "token": "<50 random characters>", "signature": "<hex>"},
     "event-data": {"id": "...", "event": "delivered", "timestamp": 1770920772.12, ...}}

**Authentication** (``verify``). ``signature.signature`` is the hex HMAC-SHA256 of ``timestamp + token`` (no
separator) under the HTTP webhook signing key (``ORCH_MAILGUN_WEBHOOK_SIGNING_KEY``). For a domain of a
sub-account Mailgun adds ``parent-signature``, the same digest under the primary account's key; either one
verifying is enough, so the key of the account or of its parent both work. No signature object (or a body that
is not a JSON object) → ``MissingCredentials`` (400); a digest that does not match (compared with
``hmac.compare_digest``) → ``BadCredentials`` (401); a signed timestamp more than ``max_age_s`` (15 minutes)
from our clock, in either direction → ``BadCredentials`` (401). Only the JSON webhooks are understood, not the
legacy form-encoded ones (Mailgun stopped sending those in 2018).

**Replays** (``check_replay``, asynchronous, called by the ingress *after* ``verify``). Mailgun's signature
covers the timestamp and token but **not** the event: on its own, a signature block lifted from a captured
callback could be pasted onto a forged ``event-data`` for as long as its timestamp is fresh. So every token is
remembered (``TokenCache``: Redis ``SET NX EX``, shared by all web processes; an in-process bounded cache when
no Redis is given) together with a fingerprint of the event it came with (SHA-256 of the canonical JSON of
``event-data``), for twice the freshness window, i.e. longer than the token can verify:

* first sight of a token → ``False``: a new callback, record it;
* the same token with the same event again → ``True``: a replay (Mailgun retrying, a proxy resending, or an
  attacker replaying a genuine callback). It is *not* an authentication failure: the ingress answers 200 as
  for any received callback and need not record it again; if it does, the ``(carrier, event_id)`` key keeps
  it a no-op, so an event is recorded once either way;
* the same token with a *different* event → ``BadCredentials`` (401): a reused signature block on a payload it
  was not issued with, i.e. a forgery.

``verify`` stays synchronous (``CarrierWebhook`` protocol) and does no I/O; a process that never calls
``check_replay`` is still protected by the HMAC and the freshness window, but not against a lifted signature.

**Events** (``parse``): one callback → one ``CarrierEvent`` (see ``STATUS_MAP`` and ``classify``), with
``event_id`` = ``event-data.id`` and ``at`` = ``event-data.timestamp``. Our Message-ID
``<contact.attempt@domain>`` (``channels.mime.message_id_for``) comes back as ``message.headers.message-id``
without angle brackets; ``provider_message_id`` is given back *with* them, the form the SMTP channel stores on
the attempt, and ``attempt_id`` is the part after the dot. ``user-variables.attempt_id`` (set with an
``X-Mailgun-Variables: {"attempt_id": "..."}`` header) wins when present. Mailgun does not echo other custom
headers (``X-Orchestrator-Contact``) in events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from orchestrator.settings import Settings
from webhooks.events import (
    BadCredentials,
    CarrierEvent,
    EventStatus,
    MalformedPayload,
    MissingCredentials,
    clip,
    from_epoch,
)

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "MAX_EVENT_ID_CHARS",
    "STATUS_MAP",
    "MailgunWebhook",
    "TokenCache",
    "attempt_id_from_message_id",
    "bracketed_message_id",
    "classify",
    "mailgun_signature",
    "normalize_attempt_id",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S = 15 * 60  # a signed timestamp further than this from our clock is refused
MAX_EVENT_ID_CHARS = 300  # carrier_events.event_id

# A ULID (orchestrator.models.new_id): 26 characters of Crockford base32.
_ULID = "[0-9A-HJKMNP-TV-Z]{26}"
_OUR_MESSAGE_ID = re.compile(rf"<?\s*({_ULID})\.({_ULID})@([^<>@\s]+?)\s*>?", re.IGNORECASE)
_ULID_ONLY = re.compile(_ULID, re.IGNORECASE)


# --------------------------------------------------------------------------------------------- Message-IDs


def bracketed_message_id(message_id: str | None) -> str | None:
    """``<local@domain>`` for a Message-ID written with or without its angle brackets; None for none."""
    if not isinstance(message_id, str):
        return None
    inner = message_id.strip().removeprefix("<").removesuffix(">").strip()
    return f"<{inner}>" if inner else None


def attempt_id_from_message_id(message_id: str | None, domain: str | None = None) -> str | None:
    """Our attempt id from a Message-ID we wrote (``<contact.attempt@domain>``, brackets optional).

    None for any other Message-ID (one a provider made up, e.g. ``<14c5d75ce93.dfd.64b469@ismtpd-555>``):
    both parts must be ULIDs, and with ``domain`` the domain must be that one (case-insensitive).
    """
    if not isinstance(message_id, str):
        return None
    match = _OUR_MESSAGE_ID.fullmatch(message_id.strip())
    if match is None:
        return None
    if domain is not None and match.group(3).lower() != domain.lower():
        return None
    return match.group(2).upper()


def normalize_attempt_id(value: Any) -> str | None:
    """An attempt id passed back to us as a custom variable, upper-cased; None unless it is a ULID."""
    if isinstance(value, str) and _ULID_ONLY.fullmatch(value.strip()):
        return value.strip().upper()
    return None


# --------------------------------------------------------------------------------------------- signature


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    """The hex HMAC-SHA256 Mailgun puts in ``signature.signature``: key = signing key, message = timestamp
    + token."""
    return hmac.new(signing_key.encode("utf-8"), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


def _matches(expected: str, given: Any) -> bool:
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("utf-8"))


def _load_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):  # json.JSONDecodeError is a ValueError
        return None
    return payload if isinstance(payload, dict) else None


def _event_fingerprint(payload: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``event-data``: the same event gives the same value whatever the key
    order or spacing Mailgun used."""
    canonical = json.dumps(
        payload.get("event-data"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------------------------- replay cache


class TokenCache:
    """Tokens of verified Mailgun callbacks, each with the fingerprint of its event, for ``ttl_s`` seconds.

    With ``redis`` (any ``redis.asyncio.Redis``, e.g. the app's ``ArqRedis`` pool) the check is one ``SET key
    fingerprint NX EX ttl``, atomic across every web process. Without it the tokens live in this process only
    (an LRU of at most ``max_entries``, oldest dropped first): right for a single process and for tests, but
    a replay reaching another process is not noticed there. Redis errors propagate: the ingress then answers
    5xx and Mailgun tries again later.
    """

    def __init__(
        self,
        redis: Redis | None = None,
        *,
        ttl_s: int = 2 * DEFAULT_MAX_AGE_S,
        max_entries: int = 100_000,
        prefix: str = "orchestrator:webhooks:mailgun:token:",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 1:
            raise ValueError("ttl_s must be at least one second")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._redis = redis
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._prefix = prefix
        self._monotonic = monotonic
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()  # token -> (expires at, fingerprint)

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    async def check_replay(self, token: str, fingerprint: str = "", *, redis: Redis | None = None) -> bool:
        """False the first time ``token`` is seen (it is claimed now), True when it was seen before with the
        same ``fingerprint``; ``BadCredentials`` when it was seen with a different one (a reused
        signature). ``redis`` (e.g. the app's pool, for a cache made before the pool) overrides the one given
        to the constructor."""
        redis = redis if redis is not None else self._redis
        if redis is not None:
            seen = await self._claim_redis(redis, token, fingerprint)
        else:
            seen = self._claim_local(token, fingerprint)
        if seen is None:
            return False
        if not hmac.compare_digest(seen.encode("utf-8"), fingerprint.encode("utf-8")):
            raise BadCredentials("mailgun: signature token reused with a different event")
        return True

    async def _claim_redis(self, redis: Redis, token: str, fingerprint: str) -> str | None:
        key = self._prefix + hashlib.sha256(token.encode("utf-8")).hexdigest()
        for _ in range(3):
            if await redis.set(key, fingerprint, nx=True, ex=self._ttl_s):
                return None
            stored = await redis.get(key)
            if stored is not None:
                return stored.decode("utf-8") if isinstance(stored, bytes) else str(stored)
            # Expired between SET and GET: claim it again.
        raise RuntimeError("mailgun: could not claim a webhook token in Redis")  # pragma: no cover

    def _claim_local(self, token: str, fingerprint: str) -> str | None:
        now = self._monotonic()
        while self._local:  # insertion order with one TTL is expiry order
            oldest, (expires, _) = next(iter(self._local.items()))
            if expires > now:
                break
            del self._local[oldest]
        if token in self._local:
            return self._local[token][1]
        self._local[token] = (now + self._ttl_s, fingerprint)
        while len(self._local) > self._max_entries:
            self._local.popitem(last=False)
        return None


# --------------------------------------------------------------------------------------------- mapping

# Mailgun event → (status, reason). ``failed`` depends on severity and reason: see ``classify``.
STATUS_MAP: dict[str, tuple[EventStatus, str | None]] = {
    "accepted": ("accepted", None),
    "delivered": ("delivered", None),
    "opened": ("read", None),
    "clicked": ("read", "clicked"),  # a click means it was opened
    "complained": ("delivered", "complained"),  # it was delivered; the complaint is the policy's to act on
    "unsubscribed": ("delivered", "unsubscribed"),  # likewise: the opt-out is handled by the policy
    "rejected": ("failed", "rejected"),  # Mailgun refused to take the message at all
}

# ``failed`` with severity ``permanent``: Mailgun's reason → ours. Anything else permanent is a hard bounce.
_PERMANENT_REASONS: dict[str, tuple[EventStatus, str]] = {
    # Not sent: the address is on a suppression list. "suppress-bounce" (an earlier hard bounce) stays a hard
    # bounce, so the worker marks the address unusable; an unsubscribe or complaint says nothing about the
    # address: a failure, not a bounce, with the reason for the policy.
    "suppress-unsubscribe": ("failed", "suppressed_unsubscribe"),
    "suppress-complaint": ("failed", "suppressed_complaint"),
    # Temporary failures for longer than Mailgun retries: the mailbox may well exist.
    "old": ("failed", "retries_exhausted"),
}


def classify(
    event: str, severity: str | None = None, reason: str | None = None
) -> tuple[EventStatus, str | None]:
    """(status, reason) of one Mailgun event; ``KeyError`` for an event type we do not handle.

    ``failed`` + ``permanent`` → ``bounced``/``hard_bounce`` (or a row of ``_PERMANENT_REASONS``).
    ``failed`` + ``temporary`` (or no severity) is a soft bounce: Mailgun keeps trying and the message may
    still be delivered, so it is ``accepted``/``soft_bounce`` — ``accepted`` ranks lowest, so it never moves
    an attempt back and never ends it.
    """
    if event == "failed":
        if severity == "permanent":
            return _PERMANENT_REASONS.get(reason or "", ("bounced", "hard_bounce"))
        return ("accepted", "soft_bounce")
    return STATUS_MAP[event]


# --------------------------------------------------------------------------------------------- the webhook


class MailgunWebhook:
    """``CarrierWebhook`` for Mailgun (``name = "mailgun"``).

    ``redis`` backs the replay cache (recommended: several web processes run); ``cache`` replaces that cache
    altogether. ``email_domain`` (``settings.email_domain``), when given, is the only domain whose Message-IDs
    yield an attempt id. ``clock`` is for tests.
    """

    name = "mailgun"

    def __init__(
        self,
        *,
        redis: Redis | None = None,
        cache: TokenCache | None = None,
        email_domain: str | None = None,
        max_age_s: int = DEFAULT_MAX_AGE_S,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if max_age_s < 1:
            raise ValueError("max_age_s must be at least one second")
        self._max_age_s = max_age_s
        self._cache = cache if cache is not None else TokenCache(redis, ttl_s=2 * max_age_s)
        self._email_domain = email_domain
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def cache(self) -> TokenCache:
        return self._cache

    def configured(self, settings: Settings) -> bool:
        key = settings.mailgun_webhook_signing_key
        return key is not None and bool(key.get_secret_value())

    def verify(self, *, url: str, headers: Mapping[str, str], body: bytes, settings: Settings) -> None:
        key = settings.mailgun_webhook_signing_key
        if key is None or not key.get_secret_value():
            raise BadCredentials("mailgun: no webhook signing key is configured")
        payload = _load_object(body)
        if payload is None:
            raise MissingCredentials("mailgun: the body is not a JSON object, so it carries no signature")
        block = payload.get("signature")
        if not isinstance(block, dict):
            raise MissingCredentials("mailgun: no signature object")
        timestamp, token, signature = block.get("timestamp"), block.get("token"), block.get("signature")
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        if not (isinstance(timestamp, str) and timestamp and isinstance(token, str) and token and signature):
            raise MissingCredentials("mailgun: the signature object lacks its timestamp, token or signature")
        expected = mailgun_signature(key.get_secret_value(), timestamp, token)
        if not (_matches(expected, signature) or _matches(expected, block.get("parent-signature"))):
            raise BadCredentials("mailgun: the signature does not verify")
        try:
            signed_at = int(timestamp)
        except ValueError:
            raise BadCredentials("mailgun: the signed timestamp is not a number") from None
        age = self._clock().timestamp() - signed_at
        if abs(age) > self._max_age_s:
            raise BadCredentials(f"mailgun: the signed timestamp is {int(age)} s from our clock")

    async def check_replay(self, *, body: bytes, redis: Redis | None = None) -> bool:
        """Whether this (verified) callback's token was seen before with the same event: True means a replay
        to answer 200 and not process again; ``BadCredentials`` when the token came with another event. Call
        it after ``verify``; see the module docstring. ``redis`` (the ingress's ``request.app[REDIS]``)
        backs the check when the webhook was made without one, e.g. in a registry built at import time."""
        payload = _load_object(body)
        block = payload.get("signature") if payload is not None else None
        token = block.get("token") if isinstance(block, dict) else None
        if payload is None or not isinstance(token, str) or not token:
            raise MissingCredentials("mailgun: no signature token")
        return await self._cache.check_replay(token, _event_fingerprint(payload), redis=redis)

    def parse(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[CarrierEvent]:
        payload = _load_object(body)
        if payload is None:
            raise MalformedPayload("mailgun: the body is not a JSON object")
        data = payload.get("event-data")
        if not isinstance(data, dict):
            raise MalformedPayload("mailgun: no event-data object")
        event_id, event = data.get("id"), data.get("event")
        if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_CHARS:
            raise MalformedPayload("mailgun: event-data has no usable id")
        if not isinstance(event, str) or not event:
            raise MalformedPayload(f"mailgun: event {event_id} has no event type")
        severity, mg_reason = data.get("severity"), data.get("reason")
        try:
            status, reason = classify(
                event,
                severity if isinstance(severity, str) else None,
                mg_reason if isinstance(mg_reason, str) else None,
            )
        except KeyError:
            raise MalformedPayload(
                f"mailgun: event {event_id} has an event type we do not handle: {event!r}"
            ) from None
        block = payload.get("signature")
        at = from_epoch(data.get("timestamp"))
        if at is None and isinstance(block, dict):
            at = from_epoch(block.get("timestamp"))  # signed, so a fair stand-in
        if at is None:
            raise MalformedPayload(f"mailgun: event {event_id} has no usable timestamp")

        message = data.get("message")
        message_headers = message.get("headers") if isinstance(message, dict) else None
        raw_message_id = message_headers.get("message-id") if isinstance(message_headers, dict) else None
        message_id = bracketed_message_id(raw_message_id if isinstance(raw_message_id, str) else None)
        variables = data.get("user-variables")
        attempt_id = normalize_attempt_id(
            variables.get("attempt_id") if isinstance(variables, dict) else None
        ) or attempt_id_from_message_id(message_id, self._email_domain)

        detail: dict[str, Any] = {"event": event}
        if isinstance(severity, str):
            detail["severity"] = severity
        if mg_reason is not None:
            detail["mailgun_reason"] = clip(mg_reason)
        delivery = data.get("delivery-status")
        if isinstance(delivery, dict):
            for source, target in (
                ("code", "code"),
                ("enhanced-code", "enhanced_code"),
                ("message", "message"),
                ("description", "description"),
                ("attempt-no", "attempt_no"),
            ):
                value = delivery.get(source)
                if value not in (None, ""):
                    detail[target] = clip(value)
        if isinstance(mg_reason, str) and mg_reason.startswith("suppress-"):
            detail["never_sent"] = True  # on Mailgun's suppression list
        if event == "complained":
            detail["complained"] = True
        if event == "unsubscribed":
            detail["opt_out"] = True
        # "clicked" carries the link: never kept, a self-service link holds a secret token.

        return [
            CarrierEvent(
                carrier=self.name,
                event_id=event_id,
                status=status,
                at=at,
                attempt_id=attempt_id,
                provider_message_id=message_id,
                reason=reason,
                detail=detail,
            )
        ]
