"""SMS through LINK Mobility's "Common" REST API (``POST {base}/sms/send``, HTTP basic auth, JSON).

Source: LINK Mobility, *SMS REST API* (MT and delivery reports, v1.6). One request per message::

    {"source": "Betaling", "sourceTON": "ALPHANUMERIC",
     "destination": "+4791234567", "destinationTON": "MSISDN",
     "userData": "...", "dcs": "TEXT", "platformId": "...", "platformPartnerId": "...",
     "refId": "<attempt id>", "useDeliveryReport": true, "deliveryReportGates": ["<gate id>"],
     "ignoreResponse": false}

- ``dcs`` is always ``TEXT``: Common then picks GSM-7 or UCS-2 itself and splits and concatenates long texts.
  ``GSM`` or ``UCS2`` would make us split the text and write the user data headers ourselves. Texts that need
  UCS-2 are therefore sent exactly like the others; ``channels.sms.encoding`` counts their segments.
- ``refId`` is our attempt id: delivery reports carry it back (with Common's ``id``, the ``messageId``).
- ``ignoreResponse`` defaults to *true* at Common (answer ``204`` without the ``messageId``); we ask for the
  answer: ``200 {"messageId": "...", "resultCode": 1005, "description": "Queued"}``.
- Without a delivery-report gate, ``useDeliveryReport`` is false, as the documentation requires.
- Common carries no 4-byte UTF-8 characters (outside the Basic Multilingual Plane, e.g. emoji): such a text is
  refused here, before the request, as ``PermanentChannelError("unsupported_characters")``.

Errors are translated at this boundary (``channels.base``): refused connection, DNS failure or a timeout
before the request was written → ``TransientChannelError("gateway_unavailable")``; 429 → transient with
``retry_after_s``; other 5xx → ``TransientChannelError("gateway_5xx")`` (Common did not take the message);
401/403 and the documented authentication/platform error codes → ``ChannelConfigurationError``; 400 and
refusing result codes → ``PermanentChannelError`` (``invalid_destination``, ``unknown_subscriber``,
``destination_blocked``, ``gateway_rejected:<code>``). Once the request is on the wire, a timeout, a dropped
connection, a 504 from a proxy or an unreadable 2xx answer mean Common may have the message:
``UncertainDeliveryError("gateway_outcome_unknown")``, never retried blindly. Nothing here logs the phone
number or the text, or puts them into an error message.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import TYPE_CHECKING, Any

import aiohttp
from pydantic import SecretStr
from yarl import URL

from channels.base import (
    ChannelConfigurationError,
    ChannelError,
    PermanentChannelError,
    Receipt,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.http import RequestProgress, retry_after_s, tracking_session
from channels.sms.gateway import SmsMessage

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["PROVIDER", "LinkMobilityGateway", "translate_result_code"]

log = logging.getLogger(__name__)

PROVIDER = "linkmobility"

# Result codes of a submission that Common took: 1005 Queued (the documented answer), 1000 Sent to operator.
ACCEPTED_CODES = frozenset({1000, 1005})
# Error result codes of the documentation's "Error Result Codes" table.
AUTH_ERROR_CODES = frozenset({106100, 106101})  # invalid authentication, access denied
CONFIG_ERROR_CODES = frozenset({104, 106200, 106201, 106202, 106300, 106301})  # platform ids, gates
# Result codes ("Result Codes" table) that say the destination is wrong or cannot receive.
INVALID_DESTINATION_CODES = frozenset({2100, 2101, 2102, 2106})  # TON not supported, number error
UNKNOWN_SUBSCRIBER = 2104
BLOCKED_DESTINATION_CODES = frozenset({2103, 2105, 2107})  # operation / destination (temporarily) blocked
SOURCE_ERROR_CODES = frozenset({2000, 2001, 2002, 2003})  # our sender (source) refused
TEMPORARY_CODES = frozenset({1, 105})  # temporary routing error, internal Link Mobility error
THROTTLED = 3  # maximum throttling exceeded

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_DIGITS = re.compile(r"[0-9]{5,}")


def translate_result_code(code: int | None, description: str = "") -> ChannelError:
    """The channel error for a Common result code that is not an acceptance (``description`` is theirs)."""
    detail = f"Link Mobility result code {code}: {_safe(description)}".rstrip(": ")
    if code is None:
        return PermanentChannelError("gateway_rejected:unknown", detail)
    if code in AUTH_ERROR_CODES:
        return ChannelConfigurationError("gateway_auth_failed", detail)
    if code in CONFIG_ERROR_CODES:
        return ChannelConfigurationError(f"gateway_config_invalid:{code}", detail)
    if code in SOURCE_ERROR_CODES:
        return ChannelConfigurationError(f"gateway_sender_rejected:{code}", detail)
    if code in INVALID_DESTINATION_CODES:
        return PermanentChannelError("invalid_destination", detail)
    if code == UNKNOWN_SUBSCRIBER:
        return PermanentChannelError("unknown_subscriber", detail)
    if code in BLOCKED_DESTINATION_CODES:
        return PermanentChannelError("destination_blocked", detail)
    if code == THROTTLED:
        return TransientChannelError("gateway_throttled", detail)
    if code in TEMPORARY_CODES:
        return TransientChannelError(f"gateway_temporary_error:{code}", detail)
    return PermanentChannelError(f"gateway_rejected:{code}", detail)


def _safe(text: object) -> str:
    """Their description, short and without anything that looks like a phone number."""
    return _DIGITS.sub("…", str(text or ""))[:200]


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _source_ton(sender: str) -> str:
    """``MSISDN`` for ``+<digits>``, ``SHORTNUMBER`` for digits only, else ``ALPHANUMERIC``."""
    if sender.startswith("+") and sender[1:].isdigit():
        return "MSISDN"
    if sender.isdigit():
        return "SHORTNUMBER"
    return "ALPHANUMERIC"


class LinkMobilityGateway:
    """``SmsGateway`` for LINK Mobility. One ``aiohttp.ClientSession`` per gateway, opened on first use."""

    name: str = PROVIDER
    rate_per_s: float  # messages per second Link Mobility takes from us, shared by all workers (0: no limit)

    def __init__(
        self,
        *,
        base_url: str,
        username: str,
        password: SecretStr,
        platform_id: str,
        platform_partner_id: str,
        delivery_report_gate: str | None,
        rate_per_s: float,
        timeout_s: float = 15.0,
        validity_s: float | None = None,
    ) -> None:
        try:
            url = URL(base_url.strip())
        except ValueError:
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise ChannelConfigurationError(
                "linkmobility_url_invalid", "ORCH_LINKMOBILITY_URL must be an http(s) URL"
            )
        # Their documentation lists base URLs both with and without "/sms"; requests go to <host>/sms/send.
        path = url.path.rstrip("/")
        if path.endswith("/sms"):
            path = path[: -len("/sms")]
        self._send_url = url.with_path(f"{path}/sms/send", encoded=False).with_query(None).with_fragment(None)
        if ":" in username:
            raise ChannelConfigurationError(
                "linkmobility_username_invalid", "a basic-auth user name cannot contain ':'"
            )
        self._authorization = _basic_auth(username, password.get_secret_value())
        self._username = username
        self._platform_id = platform_id
        self._platform_partner_id = platform_partner_id
        self._gate = delivery_report_gate or None
        self.rate_per_s = rate_per_s
        self._timeout_s = timeout_s
        self._validity_ms = None if validity_s is None else int(validity_s * 1000)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 15.0) -> LinkMobilityGateway | None:
        """The gateway configured by ``ORCH_LINKMOBILITY_*``; None when ``ORCH_LINKMOBILITY_URL`` is unset."""
        if not settings.linkmobility_url:
            return None
        password = settings.linkmobility_password
        present = {
            "linkmobility_username": bool(settings.linkmobility_username),
            "linkmobility_password": password is not None and bool(password.get_secret_value()),
            "linkmobility_platform_id": bool(settings.linkmobility_platform_id),
            "linkmobility_platform_partner_id": bool(settings.linkmobility_platform_partner_id),
        }
        missing = [f"ORCH_{name.upper()}" for name, ok in present.items() if not ok]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise ChannelConfigurationError(
                "linkmobility_settings_missing",
                f"ORCH_LINKMOBILITY_URL is set but {', '.join(missing)} {verb} not",
            )
        assert settings.linkmobility_username is not None and password is not None
        assert settings.linkmobility_platform_id is not None
        assert settings.linkmobility_platform_partner_id is not None
        if not settings.linkmobility_delivery_report_gate:
            log.warning(
                "linkmobility: no delivery report gate (ORCH_LINKMOBILITY_DELIVERY_REPORT_GATE); "
                "messages will never be confirmed delivered"
            )
        return cls(
            base_url=settings.linkmobility_url,
            username=settings.linkmobility_username,
            password=password,
            platform_id=settings.linkmobility_platform_id,
            platform_partner_id=settings.linkmobility_platform_partner_id,
            delivery_report_gate=settings.linkmobility_delivery_report_gate,
            rate_per_s=settings.linkmobility_rate_per_s,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:
        return (
            f"LinkMobilityGateway(url={str(self._send_url)!r}, user={self._username!r}, gate={self._gate!r})"
        )

    # ------------------------------------------------------------------------------------------------ sending

    def payload(self, message: SmsMessage) -> dict[str, Any]:
        """The JSON body of ``POST /sms/send`` for ``message``."""
        body: dict[str, Any] = {
            "source": message.sender_id,
            "sourceTON": _source_ton(message.sender_id),
            "destination": message.to,
            "destinationTON": "MSISDN",
            "userData": message.text,
            "dcs": "TEXT",
            "platformId": self._platform_id,
            "platformPartnerId": self._platform_partner_id,
            "refId": message.attempt_id,
            "useDeliveryReport": self._gate is not None,
            "ignoreResponse": False,
        }
        if self._gate is not None:
            body["deliveryReportGates"] = [self._gate]
        if self._validity_ms is not None:
            body["relativeValidityTime"] = self._validity_ms
        return body

    async def submit(self, message: SmsMessage) -> Receipt:
        if not _E164.fullmatch(message.to):
            raise PermanentChannelError("invalid_destination", "the destination is not an E.164 number")
        if any(ord(ch) > 0xFFFF for ch in message.text):
            raise PermanentChannelError(
                "unsupported_characters",
                "Link Mobility does not carry characters outside the Basic Multilingual Plane (e.g. emoji)",
            )
        data = json.dumps(self.payload(message), ensure_ascii=False).encode("utf-8")
        progress = RequestProgress()
        try:
            async with self._session_or_new().post(
                self._send_url,
                data=data,
                headers={"Content-Type": "application/json; charset=utf-8"},
                trace_request_ctx=progress,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw = await response.read()
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ChannelConfigurationError(
                "gateway_tls_failed", f"TLS with {self._send_url.host} failed: {exc.certificate_error}"
            ) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, unreachable, TLS handshake
            raise TransientChannelError(
                "gateway_unavailable", f"Link Mobility unreachable: {type(exc).__name__}: {exc.os_error}"
            ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            if progress.sent:
                log.warning(
                    "linkmobility: outcome unknown for attempt %s (%s)",
                    message.attempt_id,
                    type(exc).__name__,
                )
                raise UncertainDeliveryError(
                    "gateway_outcome_unknown",
                    f"no answer from Link Mobility after the request was sent ({type(exc).__name__}); "
                    "it may have the message",
                ) from exc
            raise TransientChannelError(
                "gateway_unavailable", f"Link Mobility unreachable: {type(exc).__name__}"
            ) from exc
        receipt = self._translate(message, status, retry_after, raw)
        log.info(
            "linkmobility: attempt %s accepted as %s (result code %s)",
            message.attempt_id,
            receipt.provider_message_id,
            receipt.detail.get("result_code"),
        )
        return receipt

    def _translate(self, message: SmsMessage, status: int, retry_after: str | None, raw: bytes) -> Receipt:
        """A receipt for an accepting answer; raises the channel error for any other."""
        body = _json_object(raw)
        if 200 <= status < 300:
            if status == 204 or not raw.strip():
                # Accepted without an answer body (ignoreResponse): reports still find us by refId.
                return self._receipt(message, None, None, message_id_missing=True)
            if body is None:
                raise UncertainDeliveryError(
                    "gateway_outcome_unknown", f"Link Mobility answered {status} with an unreadable body"
                )
            code = _int_or_none(body.get("resultCode"))
            message_id = body.get("messageId")
            if code in ACCEPTED_CODES or (code is None and isinstance(message_id, str) and message_id):
                return self._receipt(message, message_id, code)
            log.info("linkmobility: attempt %s refused with result code %s", message.attempt_id, code)
            raise translate_result_code(code, str(body.get("description", "")))

        description = _safe((body or {}).get("description", ""))
        log.info("linkmobility: attempt %s answered HTTP %s", message.attempt_id, status)
        if status == 429:
            raise TransientChannelError(
                "gateway_throttled",
                f"Link Mobility answered 429: {description}".rstrip(": "),
                retry_after_s=retry_after_s(retry_after),
            )
        if status in (401, 403):
            raise ChannelConfigurationError(
                "gateway_auth_failed", f"Link Mobility refused our credentials ({status}): {description}"
            )
        if status == 504:  # a proxy gave up waiting for Common, which may have taken the message
            raise UncertainDeliveryError(
                "gateway_outcome_unknown", "Link Mobility answered 504 Gateway Timeout"
            )
        if status >= 500:
            raise TransientChannelError("gateway_5xx", f"Link Mobility answered {status}: {description}")
        if status in (404, 405):
            raise ChannelConfigurationError(
                "gateway_url_invalid", f"{self._send_url} answered {status}: check ORCH_LINKMOBILITY_URL"
            )
        if status == 408:
            raise TransientChannelError("gateway_request_timeout", "Link Mobility answered 408")
        code = None if body is None else _int_or_none(body.get("errorCode", body.get("resultCode")))
        if code is not None:
            raise translate_result_code(code, description)
        raise PermanentChannelError(
            f"gateway_rejected:{status}", f"Link Mobility answered {status}: {description}"
        )

    def _receipt(
        self, message: SmsMessage, message_id: object, code: int | None, *, message_id_missing: bool = False
    ) -> Receipt:
        detail: dict[str, Any] = {"result_code": code, "ref_id": message.attempt_id}
        if message_id_missing or not isinstance(message_id, str) or not message_id:
            detail["message_id_missing"] = True
            return Receipt(provider=PROVIDER, provider_message_id=message.attempt_id, detail=detail)
        return Receipt(provider=PROVIDER, provider_message_id=message_id, detail=detail)

    # ---------------------------------------------------------------------------------------------- session

    def _session_or_new(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = tracking_session(
                headers={"Authorization": self._authorization, "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session; a later ``submit`` opens a new one."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
