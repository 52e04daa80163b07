"""A local Twilio: the Programmable Messaging ``Messages`` resource on a real HTTP server, with callbacks.

``create_app(state)`` speaks what ``channels.sms.twilio`` uses, as Twilio documents it:

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic auth ``AccountSid:AuthToken``
  (else ``401``, error 20003, and ``WWW-Authenticate``) and form-encoded ``To``, ``From``, ``Body``,
  ``StatusCallback`` (missing ones give ``400`` with 21604 / 21603 / 21602; an invalid ``To`` 21211, a number
  that is not a mobile 21614, a body over 1600 characters 21617). An accepted message is kept in
  ``state.messages`` and answered ``201`` with the Message resource (``sid`` "SM" + 32 hex digits,
  ``status`` "queued", ``num_segments``, ``uri``, …).
- ``GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``: the message and its current status.
- ``GET /2010-04-01/Accounts/{AccountSid}/Messages.json``: the messages, newest first, optionally only those
  ``To`` / ``From`` a number, in pages of ``PageSize`` (default 50) with Twilio's paging fields.
- Status callbacks: each accepted message with a ``StatusCallback`` is followed by form-encoded ``POST``\\s to
  that URL (``MessageSid``, ``SmsSid``, ``AccountSid``, ``From``, ``To``, ``ApiVersion``, ``MessageStatus``,
  ``SmsStatus`` and, on failure, ``ErrorCode``), signed with ``X-Twilio-Signature`` over the exact URL.

Outcomes are set per destination (``state.outcomes["+4791234567"] = "unknown_handset"``) or for everyone
(``state.default_outcome``):

============================  ===============================================================================
``delivered``                 201, then callbacks ``sent`` and ``delivered``
``failed``                    201, then callback ``failed`` with ErrorCode 30008 (unknown error)
``unreachable``               201, then ``sent`` and ``undelivered`` with ErrorCode 30003 (unreachable)
``unknown_handset``           201, then ``sent`` and ``undelivered`` with ErrorCode 30005 (unknown handset)
``opted_out``                 400, error 21610 (the recipient sent STOP); nothing accepted
``region_not_enabled``        400, error 21408 (geo permissions); nothing accepted
``rate_limited``              429, error 20429, ``Retry-After: state.retry_after_s``; nothing accepted
``http_5xx``                  503, error 20503; nothing accepted
``slow``                      accepted, answered after ``state.slow_s`` seconds, then delivered
``drop``                      accepted, connection closed without an answer, then delivered
============================  ===============================================================================

``state.drop_callbacks`` loses every status callback on the way (the message still moves through its
outcome, so the status API is the only way to learn it); ``state.status_api_status`` (e.g. 503) makes both
``GET`` routes answer that HTTP status with Twilio's error body.

A debtor's reply: ``await state.reply("+4791234567", "STOPP")`` posts an incoming-message webhook
(``MessageSid``, ``From``, ``To``, ``Body``, ``NumSegments``, ``SmsStatus`` "received", ...) to
``state.inbound_url`` (the number's "A message comes in" URL), signed like a status callback; each post is
kept in ``state.replies``. The same ``sid`` again is Twilio retrying the same message.

Run it with ``async with serve(state) as base_url:`` (as the Link Mobility sandbox; ``base_url`` is the value
for ``ORCH_TWILIO_URL``), ``serve_sandbox`` (yields a ``RunningTwilioSandbox``) or ``start_sandbox`` and
``stop``. Sources as in ``channels/sms/twilio.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import aiohttp
import phonenumbers
from aiohttp import web
from phonenumbers import NumberParseException, PhoneNumberType

from channels.sms.twilio import API_VERSION, twilio_signature

__all__ = [
    "OUTCOMES",
    "Outcome",
    "RunningTwilioSandbox",
    "SandboxMessage",
    "StatusCallbackRecord",
    "TwilioSandbox",
    "create_app",
    "num_segments",
    "serve",
    "serve_sandbox",
    "start_sandbox",
]

log = logging.getLogger(__name__)

Outcome = Literal[
    "delivered",
    "failed",
    "unreachable",
    "unknown_handset",
    "opted_out",
    "region_not_enabled",
    "rate_limited",
    "http_5xx",
    "slow",
    "drop",
]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))

# Final status callbacks of an accepted message: (statuses in order, ErrorCode of the last one).
_DELIVERY: dict[str, tuple[tuple[str, ...], str | None]] = {
    "delivered": (("sent", "delivered"), None),
    "failed": (("failed",), "30008"),
    "unreachable": (("sent", "undelivered"), "30003"),
    "unknown_handset": (("sent", "undelivered"), "30005"),
    "slow": (("sent", "delivered"), None),
    "drop": (("sent", "delivered"), None),
}
_MAX_BODY_CHARS = 1600
_CALLBACK_TIMEOUT_S = 10.0

# GSM 03.38: the basic set, and the extension set whose characters take two septets.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


@dataclass
class SandboxMessage:
    """One message the sandbox accepted (``received_at`` is ``time.monotonic()``)."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    outcome: Outcome
    form: dict[str, str]
    received_at: float
    date_created: datetime
    num_segments: int
    status: str = "queued"
    error_code: str | None = None


@dataclass
class StatusCallbackRecord:
    """A status callback the sandbox posted (``status``: the HTTP answer; ``error``: a transport failure)."""

    url: str
    params: dict[str, str]
    signature: str
    sent_at: float
    status: int | None = None
    error: str | None = None


@dataclass
class TwilioSandbox:
    """The sandbox's account, its behaviour, and everything it saw. Change it freely between requests."""

    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    default_outcome: Outcome = "delivered"
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # by destination (E.164)
    slow_s: float = 5.0
    retry_after_s: int = 1
    callback_delay_s: float = 0.1  # before the first status callback, so that it follows the answer
    drop_callbacks: bool = False  # status callbacks never arrive (the status API still knows)
    status_api_status: int | None = None  # the status API answers this HTTP status instead
    messages: list[SandboxMessage] = field(default_factory=list)
    callbacks: list[StatusCallbackRecord] = field(default_factory=list)
    inbound_url: str | None = None  # the number's "A message comes in" webhook: where debtors' replies go
    replies: list[StatusCallbackRecord] = field(default_factory=list)  # incoming messages posted there
    _changed: asyncio.Condition | None = field(default=None, init=False, repr=False, compare=False)

    def outcome_for(self, to: str) -> Outcome:
        return self.outcomes.get(to, self.default_outcome)

    def message(self, sid: str) -> SandboxMessage | None:
        return next((m for m in self.messages if m.sid == sid), None)

    async def wait_for_callbacks(self, count: int, timeout_s: float = 5.0) -> list[StatusCallbackRecord]:
        """The first ``count`` status callbacks, once they have been answered (TimeoutError otherwise)."""
        changed = self._condition()
        async with asyncio.timeout(timeout_s), changed:
            await changed.wait_for(lambda: len(self.callbacks) >= count)
        return self.callbacks[:count]

    async def record_callback(self, record: StatusCallbackRecord) -> None:
        self.callbacks.append(record)
        changed = self._condition()
        async with changed:
            changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def reply(
        self, from_: str, body: str, *, to: str | None = None, sid: str | None = None
    ) -> StatusCallbackRecord:
        """A debtor at ``from_`` texts ``body`` to our number (``to``; default: the number that last texted
        them): Twilio's signed incoming-message webhook, posted once to ``inbound_url``."""
        if self.inbound_url is None:
            raise RuntimeError("set inbound_url (the number's incoming-message webhook) first")
        if to is None:
            sent = [m for m in self.messages if m.to == from_ and m.from_]
            to = sent[-1].from_ if sent else "+15005550006"
        sid = sid or "SM" + secrets.token_hex(16)
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": body,
            "From": from_,
            "FromCountry": _country(from_),
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": str(num_segments(body)),
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
            "ToCountry": _country(to),
        }
        url = self.inbound_url
        signature = twilio_signature(self.auth_token, url, params)
        record = StatusCallbackRecord(url=url, params=params, signature=signature, sent_at=time.monotonic())
        timeout = aiohttp.ClientTimeout(total=_CALLBACK_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as client,
                client.post(
                    url,
                    data=params,
                    headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
                    allow_redirects=False,
                ) as response,
            ):
                await response.read()
                record.status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            record.error = repr(exc)
        self.replies.append(record)
        return record


# ----------------------------------------------------------------------------------------------- the app

STATE = web.AppKey("twilio_sandbox_state", TwilioSandbox)
_CLIENT = web.AppKey("twilio_sandbox_client", aiohttp.ClientSession)
_TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("twilio_sandbox_tasks")


def create_app(state: TwilioSandbox) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app[_TASKS] = set()
    app.cleanup_ctx.append(_callback_client)
    app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages.json", _create_message)
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json", _fetch_message)
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages.json", _list_messages)
    return app


async def _callback_client(app: web.Application) -> AsyncIterator[None]:
    app[_CLIENT] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_CALLBACK_TIMEOUT_S))
    try:
        yield
    finally:
        pending: set[asyncio.Task[None]] = app[_TASKS]
        tasks = list(pending)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await app[_CLIENT].close()


def _error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


def _authorized(request: web.Request, state: TwilioSandbox) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user.encode(), state.account_sid.encode()) & hmac.compare_digest(
        password.encode(), state.auth_token.encode()
    )


def _not_found(request: web.Request) -> web.Response:
    return _error(404, 20404, f"The requested resource {request.path} was not found")


def _destination_error(to: str) -> tuple[int, str] | None:
    """Twilio's 21211 (not a phone number) or 21614 (not a mobile) for ``to``; None when it takes SMS."""
    try:
        number = phonenumbers.parse(to, None)
    except NumberParseException:
        number = None
    if number is None or not to.startswith("+") or not phonenumbers.is_valid_number(number):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if phonenumbers.number_type(number) not in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return 21614, f"'To' number {to} is not a valid mobile number"
    return None


def _country(number: str) -> str:
    """The ISO country of an E.164 number (``NO``), as Twilio's ``FromCountry``; empty when unknown."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or ""
    except NumberParseException:
        return ""


def _valid_callback_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "_" not in (parts.hostname or "")


def num_segments(body: str) -> int:
    """How many SMS segments Twilio bills ``body`` as: GSM-7 160/153 septets, else UCS-2 70/67 code units."""
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in body):
        units, single, multi = len(body) + sum(ch in _GSM7_EXTENSION for ch in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def _resource(message: SandboxMessage) -> dict[str, Any]:
    uri = f"/{API_VERSION}/Accounts/{message.account_sid}/Messages/{message.sid}"
    created = format_datetime(message.date_created)
    return {
        "account_sid": message.account_sid,
        "api_version": API_VERSION,
        "body": message.body,
        "date_created": created,
        "date_sent": None,
        "date_updated": created,
        "direction": "outbound-api",
        "error_code": int(message.error_code) if message.error_code else None,
        "error_message": None,
        "from": message.from_,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": str(message.num_segments),
        "price": None,
        "price_unit": "USD",
        "sid": message.sid,
        "status": message.status,
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": message.to,
        "uri": f"{uri}.json",
    }


async def _create_message(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if not _authorized(request, state):
        return _error(401, 20003, "Authenticate", headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
    if request.match_info["account_sid"] != state.account_sid:
        return _not_found(request)
    form = await request.post()
    params = {name: value for name, value in form.items() if isinstance(value, str)}
    to = params.get("To", "")
    outcome = state.outcome_for(to)
    if outcome == "http_5xx":
        return _error(503, 20503, "Service Unavailable")
    if outcome == "rate_limited":
        return _error(429, 20429, "Too Many Requests", headers={"Retry-After": str(state.retry_after_s)})

    if not to:
        return _error(400, 21604, "A 'To' phone number is required.")
    from_ = params.get("From", "")
    if not from_ and not params.get("MessagingServiceSid"):
        return _error(400, 21603, "A 'From' phone number is required.")
    body = params.get("Body", "")
    if not body and not params.get("MediaUrl") and not params.get("ContentSid"):
        return _error(400, 21602, "Message body is required.")
    if len(body) > _MAX_BODY_CHARS:
        return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    callback = params.get("StatusCallback")
    if callback is not None and not _valid_callback_url(callback):
        return _error(400, 21609, "Invalid StatusCallback url")
    refused = _destination_error(to)
    if refused is not None:
        return _error(400, *refused)
    if outcome == "opted_out":
        return _error(400, 21610, "Attempt to send to unsubscribed recipient")
    if outcome == "region_not_enabled":
        return _error(
            400,
            21408,
            "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: "
            + to,
        )

    message = SandboxMessage(
        sid="SM" + secrets.token_hex(16),
        account_sid=state.account_sid,
        to=to,
        from_=from_,
        body=body,
        status_callback=callback,
        outcome=outcome,
        form=params,
        received_at=time.monotonic(),
        date_created=datetime.now(UTC),
        num_segments=num_segments(body),
    )
    state.messages.append(message)
    _schedule(request.app, _deliver(request.app, message))

    if outcome == "slow":
        await asyncio.sleep(state.slow_s)
    elif outcome == "drop":
        # Taken, but the client never hears back: the connection closes before any byte of an answer.
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never written: the transport is gone
    return web.json_response(_resource(message), status=201)


def _refuse_read(request: web.Request, state: TwilioSandbox) -> web.Response | None:
    """The answer to a status API request that is not served: not authorized, or a forced failure."""
    if not _authorized(request, state):
        return _error(401, 20003, "Authenticate", headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
    if state.status_api_status is not None:
        return _error(state.status_api_status, 20500, "Internal Server Error")
    if request.match_info["account_sid"] != state.account_sid:
        return _not_found(request)
    return None


async def _fetch_message(request: web.Request) -> web.Response:
    state = request.app[STATE]
    refused = _refuse_read(request, state)
    if refused is not None:
        return refused
    message = state.message(request.match_info["sid"])
    if message is None:
        return _not_found(request)
    return web.json_response(_resource(message))


async def _list_messages(request: web.Request) -> web.Response:
    state = request.app[STATE]
    refused = _refuse_read(request, state)
    if refused is not None:
        return refused
    query = request.query
    try:
        page = int(query.get("Page", "0"))
        size = int(query.get("PageSize", "50"))
    except ValueError:
        return _error(400, 20001, "Invalid paging parameters")
    if page < 0 or not 1 <= size <= 1000:
        return _error(400, 20001, "Invalid paging parameters")
    found = [
        m
        for m in reversed(state.messages)
        if query.get("To") in (None, m.to) and query.get("From") in (None, m.from_)
    ]
    chunk = found[page * size : (page + 1) * size]
    path = f"/{API_VERSION}/Accounts/{state.account_sid}/Messages.json"
    following = (page + 1) * size < len(found)
    return web.json_response(
        {
            "messages": [_resource(m) for m in chunk],
            "page": page,
            "page_size": size,
            "start": page * size,
            "end": page * size + max(len(chunk) - 1, 0),
            "uri": request.path_qs,
            "first_page_uri": f"{path}?PageSize={size}&Page=0",
            "previous_page_uri": f"{path}?PageSize={size}&Page={page - 1}" if page else None,
            "next_page_uri": f"{path}?PageSize={size}&Page={page + 1}" if following else None,
        }
    )


# ------------------------------------------------------------------------------------- status callbacks


def _schedule(app: web.Application, coro: Any) -> None:
    tasks = app[_TASKS]
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _deliver(app: web.Application, message: SandboxMessage) -> None:
    """Move ``message`` through its outcome, posting a status callback at each step."""
    state = app[STATE]
    statuses, error_code = _DELIVERY[message.outcome]
    if state.callback_delay_s:
        await asyncio.sleep(state.callback_delay_s)
    for index, status in enumerate(statuses):
        message.status = status
        last = index == len(statuses) - 1
        if last and error_code is not None:
            message.error_code = error_code
        if message.status_callback is None or state.drop_callbacks:
            continue
        params = {
            "AccountSid": message.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.from_,
            "MessageSid": message.sid,
            "MessageStatus": status,
            "SmsSid": message.sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if last and error_code is not None:
            params["ErrorCode"] = error_code
        await _post_callback(app, state, message.status_callback, params)


async def _post_callback(
    app: web.Application, state: TwilioSandbox, url: str, params: dict[str, str]
) -> None:
    signature = twilio_signature(state.auth_token, url, params)
    record = StatusCallbackRecord(url=url, params=params, signature=signature, sent_at=time.monotonic())
    try:
        async with app[_CLIENT].post(
            url,
            data=params,
            headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
            allow_redirects=False,
        ) as response:
            await response.read()
            record.status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Twilio does not retry status callbacks; neither does the sandbox.
        record.error = repr(exc)
        log.info("twilio sandbox: status callback failed: %r", exc)
    await state.record_callback(record)


# ------------------------------------------------------------------------------------------ running it


@dataclass
class RunningTwilioSandbox:
    """A sandbox listening on ``base_url`` (use it as ``ORCH_TWILIO_URL``)."""

    state: TwilioSandbox
    base_url: str
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_sandbox(
    state: TwilioSandbox | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> RunningTwilioSandbox:
    """Serve ``create_app(state)`` on ``host:port`` (0: a free port) until ``stop()``."""
    state = state if state is not None else TwilioSandbox()
    runner = web.AppRunner(create_app(state), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
    except BaseException:
        await runner.cleanup()
        raise
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return RunningTwilioSandbox(state=state, base_url=f"http://{url_host}:{bound_port}", runner=runner)


@asynccontextmanager
async def serve_sandbox(
    state: TwilioSandbox | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningTwilioSandbox]:
    sandbox = await start_sandbox(state, host=host, port=port)
    try:
        yield sandbox
    finally:
        await sandbox.stop()


@asynccontextmanager
async def serve(state: TwilioSandbox, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Like ``orchestrator.sandbox.linkmobility.serve``: run the sandbox and yield its base URL (the value for
    ``ORCH_TWILIO_URL``)."""
    async with serve_sandbox(state, host=host, port=port) as running:
        yield running.base_url
