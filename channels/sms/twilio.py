"""SMS through Twilio's Programmable Messaging API (the Messages resource, API version 2010-04-01).

One message is one ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded ``To``
(E.164), ``From`` (our alphanumeric sender id), ``Body`` and ``StatusCallback``, with HTTP basic auth
``AccountSid:AuthToken``; Twilio answers ``201`` with the Message resource as JSON (``sid`` "SM…", ``status``
"queued"). Our attempt id travels in the status-callback URL (``{callback}?attempt={attempt id}``), so every
status callback Twilio posts (``MessageSid``, ``MessageStatus``, ``ErrorCode``, …) finds its attempt; the URL
carries nothing else, and never personal data (R9).

Errors are translated at this boundary (see ``channels.base``) from Twilio's documented error body
``{"code", "message", "more_info", "status"}``. Twilio's ``message`` often echoes the phone number, so it is
never copied into our errors or logs: only the HTTP status, the numeric code and ``more_info`` are.

Status API (``query_status``, for reconciliation): ``GET …/Messages/{MessageSid}.json`` reads a message back.
An attempt whose send was never answered has no MessageSid; then ``GET …/Messages.json?To=<number>`` lists the
newest messages to that number, and the one with our text, created no earlier than our attempt, is it (none,
or more than one: Twilio cannot say which). The resource's ``status`` and ``error_code`` are read by the same
code that reads status callbacks (``webhooks.twilio``), so both agree on what e.g. ``undelivered``/30005 is.

``twilio_signature`` computes ``X-Twilio-Signature`` (HMAC-SHA1 of the full URL followed by every POST
parameter name and value, sorted by name, base64), for the webhook and the sandbox.

Sources: https://www.twilio.com/docs/messaging/api/message-resource (create a Message, StatusCallback),
https://www.twilio.com/docs/messaging/guides/track-outbound-message-status (status callbacks),
https://www.twilio.com/docs/usage/twilios-response (error body), https://www.twilio.com/docs/api/errors
(20003, 20404, 20429, 21211, 21408, 21610, 21614, …), https://www.twilio.com/docs/usage/security
(validating requests).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from pydantic import SecretStr

from channels.base import (
    CarrierStatus,
    ChannelConfigurationError,
    ChannelError,
    PermanentChannelError,
    Receipt,
    SentAttempt,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.http import retry_after_s
from channels.sms.gateway import SmsMessage

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = [
    "API_VERSION",
    "ATTEMPT_PARAM",
    "TwilioGateway",
    "status_callback_for",
    "twilio_signature",
    "verify_twilio_signature",
]

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
# The query parameter of the status-callback URL that carries our attempt id.
ATTEMPT_PARAM = "attempt"

# Twilio error codes (https://www.twilio.com/docs/api/errors) with a meaning of their own here.
_AUTH_FAILED = 20003
_NOT_FOUND = 20404
_TOO_MANY_REQUESTS = 20429
_PERMANENT_REASONS: dict[int, str] = {
    21211: "invalid_destination",  # Invalid 'To' Phone Number
    21614: "not_a_mobile",  # 'To' number is not a valid mobile number
    21610: "recipient_opted_out",  # Attempt to send to unsubscribed recipient (the debtor sent STOP)
}
# Our clock and Twilio's may differ this much when a message is looked up by the time it was created.
_CLOCK_SKEW = timedelta(minutes=5)
# How many of the newest messages to one number are searched for an attempt Twilio never confirmed.
_LOOKUP_PAGE_SIZE = 50
# Our account, not the message, is wrong: every later message would fail the same way until an operator acts.
_CONFIGURATION_REASONS: dict[int, str] = {
    21408: "gateway_region_not_enabled",  # Messaging Geo Permissions do not include the destination country
    21212: "gateway_sender_rejected",  # Invalid 'From' (our alphanumeric sender id)
    21606: "gateway_sender_rejected",  # 'From' is not a valid sender for this account
}


# ------------------------------------------------------------------------------------------------ helpers


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature`` of a request Twilio sends to ``url`` with the form ``params``.

    The full URL as Twilio requested it (scheme, host, port, path and query string, exactly as given), then
    every POST parameter name immediately followed by its value, sorted by name (a repeated name by value),
    HMAC-SHA1 keyed with the auth token, base64. ``params`` may be a multidict: every pair is signed.
    """
    payload = url + "".join(name + value for name, value in sorted(params.items()))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_twilio_signature(auth_token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` header) is Twilio's for ``url`` and ``params``."""
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("ascii", "replace"))


def status_callback_for(callback_url: str, attempt_id: str) -> str:
    """The ``StatusCallback`` URL for one attempt: ``callback_url`` with ``attempt=<attempt id>`` appended.

    The rest of ``callback_url`` is kept byte for byte, because Twilio signs the URL exactly as we gave it.
    """
    separator = "&" if urlsplit(callback_url).query else "?"
    return callback_url + separator + urlencode({ATTEMPT_PARAM: attempt_id})


def _check_http_url(value: str, setting: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ChannelConfigurationError(
            f"{setting}_invalid", f"ORCH_{setting.upper()} must be an absolute http(s) URL without a fragment"
        )
    return value


def _error_fields(body: bytes) -> tuple[int | None, str | None]:
    """``code`` and ``more_info`` of a Twilio error body; (None, None) when it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    code = data.get("code")
    more_info = data.get("more_info")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        more_info if isinstance(more_info, str) else None,
    )


def _translate_error(status: int, body: bytes, retry_after: str | None) -> ChannelError:
    """A non-2xx answer from the Messages resource as a channel error."""
    code, more_info = _error_fields(body)
    detail = f"Twilio answered HTTP {status}" + (f", error {code}" if code is not None else "")
    if more_info:
        detail += f" ({more_info})"
    if code == _AUTH_FAILED or status in (401, 403):
        return ChannelConfigurationError("gateway_auth_failed", detail)
    if code == _TOO_MANY_REQUESTS or status == 429:
        return TransientChannelError("gateway_rate_limited", detail, retry_after_s=retry_after_s(retry_after))
    if status >= 500:
        return TransientChannelError("gateway_5xx", detail, retry_after_s=retry_after_s(retry_after))
    if code is not None and code in _CONFIGURATION_REASONS:
        return ChannelConfigurationError(_CONFIGURATION_REASONS[code], detail)
    if code == _NOT_FOUND or status == 404:  # wrong Account SID or base URL
        return ChannelConfigurationError("gateway_not_found", detail)
    if 300 <= status < 400:  # a base URL that redirects (http -> https, a moved proxy) is ours to fix
        return ChannelConfigurationError("gateway_redirected", detail)
    if code is not None and code in _PERMANENT_REASONS:
        return PermanentChannelError(_PERMANENT_REASONS[code], detail)
    if 400 <= status < 500:
        return PermanentChannelError(f"gateway_rejected:{code if code is not None else status}", detail)
    # 1xx or another status Twilio does not document for this resource.
    return UncertainDeliveryError("gateway_outcome_unknown", detail)


# ------------------------------------------------------------------------------------------------ gateway


class TwilioGateway:
    """``SmsGateway`` for Twilio, over one ``aiohttp.ClientSession`` opened on first use."""

    name: str = "twilio"

    def __init__(
        self,
        *,
        base_url: str,
        account_sid: str,
        auth_token: SecretStr,
        status_callback_url: str | None,
        rate_per_s: float,
        timeout_s: float = 15.0,
    ) -> None:
        if not account_sid:
            raise ChannelConfigurationError(
                "twilio_account_sid_missing", "ORCH_TWILIO_ACCOUNT_SID is not set"
            )
        if not auth_token.get_secret_value():
            raise ChannelConfigurationError("twilio_auth_token_missing", "ORCH_TWILIO_AUTH_TOKEN is not set")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._base_url = _check_http_url(base_url, "twilio_url").rstrip("/")
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._status_callback_url = (
            _check_http_url(status_callback_url, "twilio_status_callback_url")
            if status_callback_url
            else None
        )
        self.rate_per_s = rate_per_s
        self._timeout_s = timeout_s
        self._messages_url = (
            f"{self._base_url}/{API_VERSION}/Accounts/{quote(account_sid, safe='')}/Messages.json"
        )
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioGateway | None:
        """The gateway the ``twilio_*`` settings describe; ``None`` when ``twilio_account_sid`` is unset."""
        if not settings.twilio_account_sid:
            return None
        token = settings.twilio_auth_token
        if token is None or not token.get_secret_value():
            raise ChannelConfigurationError(
                "twilio_auth_token_missing",
                "ORCH_TWILIO_ACCOUNT_SID is set but ORCH_TWILIO_AUTH_TOKEN is not",
            )
        return cls(
            base_url=settings.twilio_url,
            account_sid=settings.twilio_account_sid,
            auth_token=token,
            status_callback_url=settings.twilio_status_callback_url,
            rate_per_s=settings.twilio_rate_per_s,
        )

    def __repr__(self) -> str:
        return f"TwilioGateway(base_url={self._base_url!r}, account_sid={self._account_sid!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            credentials = f"{self._account_sid}:{self._auth_token.get_secret_value()}".encode()
            self._session = aiohttp.ClientSession(
                headers={
                    "Authorization": "Basic " + base64.b64encode(credentials).decode("ascii"),
                    "Accept": "application/json",
                    "User-Agent": "debt-contact-orchestrator (twilio)",
                },
                # connect: reaching Twilio (a failure there sent nothing); sock_read: waiting for its answer
                # once the request is on the wire (a failure there may have sent the message).
                timeout=aiohttp.ClientTimeout(total=None, connect=self._timeout_s, sock_read=self._timeout_s),
            )
        return self._session

    async def submit(self, message: SmsMessage) -> Receipt:
        form = {"To": message.to, "From": message.sender_id, "Body": message.text}
        if self._status_callback_url is not None:
            form["StatusCallback"] = status_callback_for(self._status_callback_url, message.attempt_id)
        session = self._client()
        try:
            async with session.post(self._messages_url, data=form, allow_redirects=False) as response:
                body = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ChannelConfigurationError(
                "gateway_tls_failed", f"TLS certificate of {self._base_url} refused: {exc}"
            ) from exc
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Nothing reached Twilio: safe to try again.
            raise TransientChannelError("gateway_unavailable", f"Twilio unreachable: {exc!r}") from exc
        except aiohttp.InvalidURL as exc:
            raise ChannelConfigurationError("twilio_url_invalid", f"Twilio URL refused: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The request was sent and the answer never came (read timeout, connection dropped, body cut
            # short): Twilio may have the message. Retrying could send it twice, so the outcome is unknown.
            raise UncertainDeliveryError(
                "gateway_outcome_unknown", f"no answer from Twilio after the request was sent: {exc!r}"
            ) from exc

        if not 200 <= status < 300:
            error = _translate_error(status, body, retry_after)
            log.info(
                "twilio: message refused",
                extra={"attempt_id": message.attempt_id, "http_status": status, "reason": error.reason},
            )
            raise error
        return self._receipt(status, body)

    def _receipt(self, status: int, body: bytes) -> Receipt:
        try:
            data: Any = json.loads(body)
        except ValueError as exc:
            raise UncertainDeliveryError(
                "gateway_outcome_unknown", f"Twilio answered HTTP {status} without a JSON body"
            ) from exc
        sid = data.get("sid") if isinstance(data, dict) else None
        if not isinstance(sid, str) or not sid:
            raise UncertainDeliveryError(
                "gateway_outcome_unknown", f"Twilio answered HTTP {status} without a message sid"
            )
        message_status = data.get("status")
        return Receipt(
            provider=self.name,
            provider_message_id=sid,
            detail={"status": message_status if isinstance(message_status, str) else None},
        )

    # ------------------------------------------------------------------------------------------ status API

    async def query_status(self, attempt: SentAttempt) -> CarrierStatus | None:
        """What Twilio says became of ``attempt``; None when Twilio does not know the message."""
        if attempt.provider_message_id:
            sid = quote(attempt.provider_message_id, safe="")
            resource = await self._read(f"{self._messages_url.removesuffix('.json')}/{sid}.json", {})
        else:
            resource = await self._find(attempt)
        return None if resource is None else self._status_of(attempt, resource)

    async def _find(self, attempt: SentAttempt) -> dict[str, Any] | None:
        """The message Twilio took for an attempt whose send was never answered (see the module doc)."""
        if not attempt.text:
            return None
        page = await self._read(
            self._messages_url, {"To": attempt.address, "PageSize": str(_LOOKUP_PAGE_SIZE)}
        )
        messages = page.get("messages") if page is not None else None
        if not isinstance(messages, list):
            return None
        earliest = attempt.created_at - _CLOCK_SKEW
        found = [
            m
            for m in messages
            if isinstance(m, dict)
            and m.get("body") == attempt.text
            and (created := _rfc2822(m.get("date_created"))) is not None
            and created >= earliest
        ]
        if len(found) > 1:
            # Never guess which of two identical messages was ours: an operator decides.
            log.warning("twilio: %d messages match attempt %s", len(found), attempt.attempt_id)
        return found[0] if len(found) == 1 else None

    async def _read(self, url: str, params: dict[str, str]) -> dict[str, Any] | None:
        """GET a resource as JSON; None on 404. A read sends nothing, so every failure is safe to retry."""
        session = self._client()
        try:
            async with session.get(url, params=params, allow_redirects=False) as response:
                body = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ChannelConfigurationError(
                "gateway_tls_failed", f"TLS certificate of {self._base_url} refused: {exc}"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientChannelError("gateway_unavailable", f"Twilio status API: {exc!r}") from exc
        if status == 404:
            return None
        if not 200 <= status < 300:
            error = _translate_error(status, body, retry_after)
            if isinstance(error, UncertainDeliveryError):  # only a send can be uncertain
                raise TransientChannelError(error.reason, str(error)) from error
            raise error
        try:
            data: Any = json.loads(body)
        except ValueError as exc:
            raise TransientChannelError("gateway_bad_answer", "Twilio answered without JSON") from exc
        if not isinstance(data, dict):
            raise TransientChannelError("gateway_bad_answer", "Twilio answered with a non-object")
        return data

    def _status_of(self, attempt: SentAttempt, resource: dict[str, Any]) -> CarrierStatus | None:
        # Imported here: the webhook module builds on this one (signatures, callback URLs).
        from webhooks.events import MalformedPayload
        from webhooks.twilio import TwilioWebhook

        sid, message_status = resource.get("sid"), resource.get("status")
        if not isinstance(sid, str) or not isinstance(message_status, str):
            return None
        # The resource carries what a status callback carries: read it as one.
        form = {"MessageSid": sid, "MessageStatus": message_status}
        code = resource.get("error_code")
        if isinstance(code, int | str) and not isinstance(code, bool) and str(code).strip():
            form["ErrorCode"] = str(code).strip()
        at = _rfc2822(resource.get("date_updated")) or datetime.now(UTC)
        try:
            [event] = TwilioWebhook(clock=lambda: at).parse(url="", headers={}, body=urlencode(form).encode())
        except MalformedPayload:
            log.info("twilio: attempt %s has a status we do not know", attempt.attempt_id)
            return None
        if event.status == "inbound":  # never for a status resource: only an incoming message is one
            return None
        return CarrierStatus(
            provider=self.name,
            status=event.status,
            at=event.at,
            reason=event.reason,
            provider_message_id=sid,
            detail=event.detail,
        )

    async def close(self) -> None:
        """Close the HTTP session. The gateway stays usable: the next ``submit`` opens a new one."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def _rfc2822(value: Any) -> datetime | None:
    """A Twilio resource time (``"Wed, 18 Aug 2021 20:01:01 +0000"``), aware; None when it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
