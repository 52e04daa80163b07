"""Twilio status callbacks: ``POST /webhooks/twilio?attempt=<attempt id>``.

Twilio posts one form-encoded callback per status change of a message to the ``StatusCallback`` URL we gave
it (``channels.sms.twilio.status_callback_for``: our ``ORCH_TWILIO_STATUS_CALLBACK_URL`` plus
``attempt=<attempt id>``): ``MessageSid``, ``MessageStatus``, ``ErrorCode`` (on failure), ``AccountSid``,
``From``, ``To``, ``ApiVersion``, the older duplicates ``SmsSid``/``SmsStatus``, sometimes ``RawDlrDoneDate``.

Authentication: ``X-Twilio-Signature`` is base64(HMAC-SHA1(auth token, URL + every parameter name and
value, sorted by name)) over the URL exactly as Twilio requested it (``twilio_signature`` in
``channels.sms.twilio``). The URL the server sees may differ from the one Twilio called (a proxy, an explicit
default port), so the signature is checked, in constant time, against each of:

- ``url`` as the caller gives it (the public URL: ``ORCH_PUBLIC_BASE_URL`` + path and query);
- ``ORCH_TWILIO_STATUS_CALLBACK_URL`` with the query string of the request (what we told Twilio, when the
  public base URL and the callback URL differ), and ``status_callback_for(<configured URL>, <attempt>)``;
- each of these with and without the scheme's default port (``https`` ``:443``, ``http`` ``:80``), as Twilio's
  helper libraries do (a non-default port is never removed: Twilio signs the port we gave it).

One callback is one ``CarrierEvent``: ``event_id`` is ``"<MessageSid>:<MessageStatus>"`` (plus
``":<ErrorCode>"`` when there is one), so a retried callback is the same event while ``sent`` and
``delivered`` are two. Twilio's callback carries no time of the status change we can rely on, so ``at`` is
the time we received it (an injectable clock). Twilio reports a message as a whole, never per segment:
``segment`` is always ``None``. ``From``/``To`` (phone numbers) and ``ErrorMessage`` (may echo one) never
reach ``detail``.

Status mapping: ``queued``/``accepted``/``scheduled``/``sending`` → ``accepted``, ``sent`` → ``sent``,
``delivered`` → ``delivered``, ``read`` → ``read``, ``undelivered``/``failed`` → ``failed`` with a reason from
``ErrorCode`` (``FAILURE_REASONS``; any other code ``twilio_<code>``; none ``unknown_error``), ``canceled`` →
``failed`` (``canceled``). Another status, no ``MessageSid`` or no ``MessageStatus``: ``MalformedPayload``
(answered 200, since Twilio retries on anything else; the body is kept).

Incoming messages (a debtor's reply): the number's "A message comes in" webhook is
``POST /webhooks/twilio/inbound``, signed the same way, with ``MessageSid``, ``AccountSid``, ``From``,
``To``, ``Body``, ``NumSegments``, ``NumMedia`` (and ``SmsSid``, ``SmsMessageSid``, ``FromCountry``, ...). A
callback to that path, or any callback with ``Body`` and ``From`` but no ``MessageStatus``, is one
``CarrierEvent`` with status ``inbound``, ``event_id`` ``"<MessageSid>:inbound"`` and ``detail`` ``{"from",
"to", "text", "segments"}``: the sender's number and the text are what the event is about
(``orchestrator.opt_outs``). No ``MessageSid`` or no ``From``: ``MalformedPayload``.

Sources: https://www.twilio.com/docs/messaging/guides/track-outbound-message-status,
https://www.twilio.com/docs/messaging/guides/webhook-request,
https://www.twilio.com/docs/usage/webhooks/webhooks-security, https://www.twilio.com/docs/api/errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from multidict import MultiDict

from channels.sms.twilio import ATTEMPT_PARAM, status_callback_for, verify_twilio_signature
from orchestrator.settings import Settings
from webhooks.events import (
    INBOUND,
    BadCredentials,
    CarrierEvent,
    EventStatus,
    MalformedPayload,
    MissingCredentials,
    clip,
)

__all__ = [
    "FAILURE_REASONS",
    "INBOUND_PATH",
    "SIGNATURE_HEADER",
    "STATUSES",
    "TwilioWebhook",
    "signed_url_candidates",
]

SIGNATURE_HEADER = "X-Twilio-Signature"
INBOUND_PATH = "/webhooks/twilio/inbound"  # the number's "A message comes in" webhook

# MessageStatus -> our event status.
STATUSES: dict[str, EventStatus] = {
    "queued": "accepted",
    "accepted": "accepted",
    "scheduled": "accepted",
    "sending": "accepted",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}
# ErrorCode of an undelivered/failed message -> machine-readable reason (https://www.twilio.com/docs/api/errors).
FAILURE_REASONS: dict[str, str] = {
    "30003": "unreachable",  # Unreachable destination handset
    "30005": "unknown_handset",  # Unknown destination handset
    "30006": "not_a_mobile",  # Landline or unreachable carrier
    "30007": "carrier_filtered",  # Message filtered by the carrier
    "30008": "unknown_error",  # Unknown error
    "21610": "recipient_opted_out",  # Attempt to send to unsubscribed recipient (STOP)
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` whatever the case of the name (a plain dict from ``dict(request.headers)`` keeps the
    case the client sent)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _port_variants(url: str) -> list[str]:
    """``url``, and ``url`` with the scheme's default port added (when it has none) or removed."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or not parts.hostname:
        return [url]
    try:
        port = parts.port
    except ValueError:
        return [url]
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if port is None:
        if hostport.endswith(":"):  # "host:" with an empty port: leave it alone
            return [url]
        other = f"{hostport}:{default}"
    elif port == default:
        other = hostport[: hostport.rfind(":")]
    else:
        return [url]
    return [url, urlunsplit(parts._replace(netloc=userinfo + at + other))]


def signed_url_candidates(url: str, configured_callback_url: str | None) -> list[str]:
    """Every URL Twilio may have signed for a request that reached us as ``url`` (see the module doc)."""
    bases = [url]
    if configured_callback_url:
        query = urlsplit(url).query
        configured = urlsplit(configured_callback_url)
        bases.append(urlunsplit(configured._replace(query=query, fragment="")))
        attempts = parse_qs(query, keep_blank_values=True).get(ATTEMPT_PARAM)
        if attempts:
            bases.append(status_callback_for(configured_callback_url, attempts[-1]))
    candidates: list[str] = []
    for base in bases:
        for variant in _port_variants(base):
            if variant not in candidates:
                candidates.append(variant)
    return candidates


def _form(body: bytes, *, strict: bool) -> MultiDict[str]:
    """The form parameters of ``body`` (``application/x-www-form-urlencoded``, UTF-8), every pair kept."""
    try:
        text = body.decode("utf-8") if strict else body.decode("utf-8", errors="replace")
    except UnicodeDecodeError as exc:
        raise MalformedPayload("Twilio callback body is not UTF-8") from exc
    return MultiDict(parse_qsl(text, keep_blank_values=True))


class TwilioWebhook:
    """``CarrierWebhook`` for Twilio's message status callbacks."""

    name: str = "twilio"

    def __init__(self, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock

    def configured(self, settings: Settings) -> bool:
        token = settings.twilio_auth_token
        return token is not None and bool(token.get_secret_value())

    def verify(self, *, url: str, headers: Mapping[str, str], body: bytes, settings: Settings) -> None:
        token = settings.twilio_auth_token
        if token is None or not token.get_secret_value():
            raise BadCredentials("Twilio callbacks are not configured")
        signature = _header(headers, SIGNATURE_HEADER)
        if signature is None or not signature.strip():
            raise MissingCredentials(f"no {SIGNATURE_HEADER} header")
        # Undecodable bytes become U+FFFD here: such a body cannot carry a valid signature.
        params = _form(body, strict=False)
        secret = token.get_secret_value()
        valid = False
        for candidate in signed_url_candidates(url, settings.twilio_status_callback_url):
            valid |= verify_twilio_signature(secret, candidate, params, signature)  # no short cut
        if not valid:
            raise BadCredentials(f"{SIGNATURE_HEADER} does not match")

    def parse(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[CarrierEvent]:
        params = _form(body, strict=True)
        if _is_incoming(url, params):
            return [self._incoming(params)]
        sid = (params.get("MessageSid") or "").strip()
        message_status = (params.get("MessageStatus") or "").strip().lower()
        if not sid:
            raise MalformedPayload("Twilio callback without MessageSid")
        if not message_status:
            raise MalformedPayload("Twilio callback without MessageStatus")
        status = STATUSES.get(message_status)
        if status is None:
            raise MalformedPayload(f"Twilio callback with an unknown MessageStatus {message_status[:40]!r}")
        error_code = (params.get("ErrorCode") or "").strip() or None

        reason: str | None = None
        if status == "failed":
            if message_status == "canceled":
                reason = "canceled"
            elif error_code is None:
                reason = "unknown_error"
            elif error_code in FAILURE_REASONS:
                reason = FAILURE_REASONS[error_code]
            elif error_code.isascii() and error_code.isdigit():
                reason = f"twilio_{error_code}"
            else:
                reason = "unknown_error"

        attempts = parse_qs(urlsplit(url).query, keep_blank_values=True).get(ATTEMPT_PARAM)
        attempt_id = attempts[-1] if attempts and attempts[-1] else None
        detail: dict[str, Any] = {"message_status": message_status}
        if error_code is not None:
            detail["error_code"] = error_code
        done = (params.get("RawDlrDoneDate") or "").strip()
        if done:
            detail["raw_dlr_done_date"] = done
        event_id = f"{sid}:{message_status}" + (f":{error_code}" if error_code is not None else "")
        return [
            CarrierEvent(
                carrier=self.name,
                event_id=event_id,
                status=status,
                at=self._clock(),
                attempt_id=attempt_id,
                provider_message_id=sid,
                reason=reason,
                segment=None,
                detail=detail,
            )
        ]

    def _incoming(self, params: MultiDict[str]) -> CarrierEvent:
        """A message a debtor sent to our number."""
        sid = (params.get("MessageSid") or params.get("SmsMessageSid") or "").strip()
        sender = (params.get("From") or "").strip()
        if not sid:
            raise MalformedPayload("Twilio incoming message without MessageSid")
        if not sender:
            raise MalformedPayload("Twilio incoming message without From")
        detail: dict[str, Any] = {
            "from": clip(sender),
            "to": clip((params.get("To") or "").strip()),
            "text": clip(params.get("Body") or ""),
        }
        segments = (params.get("NumSegments") or "").strip()
        if segments.isascii() and segments.isdigit():
            detail["segments"] = int(segments)
        return CarrierEvent(
            carrier=self.name,
            event_id=f"{sid}:{INBOUND}",
            status=INBOUND,
            at=self._clock(),
            provider_message_id=sid,
            detail=detail,
        )


def _is_incoming(url: str, params: MultiDict[str]) -> bool:
    """An incoming message, not a status callback: posted to the inbound path, or shaped like one."""
    if urlsplit(url).path.rstrip("/").endswith(INBOUND_PATH):
        return True
    return "MessageStatus" not in params and "Body" in params and "From" in params
