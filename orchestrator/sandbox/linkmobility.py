"""A local Link Mobility "Common" SMS gateway: a real HTTP server speaking the REST API our gateway speaks.

It follows LINK Mobility's *SMS REST API* (MT and delivery reports, v1.6, 2019): ``POST /sms/send`` with
HTTP basic auth and a JSON ``SendRequest``; the answer is ``200 {"messageId", "resultCode": 1005,
"description": "Queued"}``, or ``204 No Content`` when ``ignoreResponse`` is not ``false`` (their default is
``true``). Errors come back as ``{"status", "description", "translatedDescription"}`` plus the ``errorCode``
of the documented table (106100 invalid authentication, 106200 bad platformId, 106201 bad platformPartnerId,
106300 no gates, 106301 unknown gate). Delivery reports are POSTed as JSON to the URL behind each gate named
in ``deliveryReportGates``, with basic auth on that URL (a gate's credentials; nothing is signed), and retried
until the receiver answers 200.

What happens to a message is chosen per destination (``state.outcomes``) or globally
(``state.default_outcome``):

==================  =====================================================================================
``delivered``       accepted; delivery report ``1001`` (billed and delivered)
``failed``          accepted; delivery report ``1006`` (not delivered)
``expired``         accepted; delivery report ``1002`` (expired)
``unknown_handset`` accepted; delivery report ``2104`` (unknown subscriber): Common learns it after submission
``invalid_number``  refused at once: ``200 {"resultCode": 2106, "description": "Number error"}``
``throttled``       ``429`` with ``Retry-After: <seconds>``; not accepted
``http_5xx``        ``503``; not accepted
``slow``            accepted and recorded, answered only after ``seconds``; delivery report ``1001``
``drop``            accepted and recorded, then the connection is closed without an answer; report ``1001``
==================  =====================================================================================

A debtor's reply: ``await state.reply("+4791234567", "STOPP")`` posts an MO message as Common forwards it
(JSON ``{"id", "source", "sourceTON", "destination", "destinationTON", "userData", "dcs", "operator",
"timestamp", ...}``) to the gate ``state.mo_gate`` (default: the first gate) with that gate's basic auth,
once; each post is kept in ``state.mo_posts``. The same ``message_id`` again is Common retrying the same MO.

Every accepted message is kept in ``state.messages`` with a ``time.monotonic()`` timestamp (for rate-limit
measurements); every request that was not accepted in ``state.rejected``; every delivery-report POST in
``state.reports``. ``orchestrator demo`` and the tests drive it through :func:`serve` on 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from channels.sms.encoding import GSM7_BASIC, analyse
from orchestrator.sandbox.server import serve_app

__all__ = [
    "DeliveryGate",
    "DeliveryReportAttempt",
    "LinkMobilitySandbox",
    "MoPost",
    "Outcome",
    "OutcomeKind",
    "SandboxMessage",
    "basic_auth",
    "build_report",
    "create_app",
    "parse_basic_auth",
    "serve",
]

OutcomeKind = Literal[
    "delivered",
    "failed",
    "expired",
    "unknown_handset",
    "invalid_number",
    "throttled",
    "http_5xx",
    "slow",
    "drop",
]
OUTCOME_KINDS: tuple[str, ...] = get_args(OutcomeKind)

# Delivery-report result codes (their "Result Codes" table) and the SMPP message state an operator reports.
REPORT_CODES: dict[str, tuple[int, str | None]] = {
    "delivered": (1001, "2"),
    "slow": (1001, "2"),
    "drop": (1001, "2"),
    "failed": (1006, "5"),
    "expired": (1002, "3"),
    "unknown_handset": (2104, None),
}
QUEUED = 1005
NUMBER_ERROR = 2106
OSLO = ZoneInfo("Europe/Oslo")

_MSISDN = re.compile(r"\+[1-9][0-9]{6,14}")
_SHORTNUMBER = re.compile(r"[0-9]{1,14}")
_TONS = ("ALPHANUMERIC", "SHORTNUMBER", "MSISDN")
_DCS = ("TEXT", "GSM", "UCS2")  # BINARY exists but the sandbox does not carry binary messages


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind = "delivered"
    seconds: float = 0.0  # ``slow``: delay before the answer; ``throttled``: the Retry-After value


@dataclass(frozen=True)
class DeliveryGate:
    """Where a gate posts delivery reports, and the basic-auth credentials it uses there (if any)."""

    url: str
    username: str | None = None
    password: str | None = None


@dataclass
class SandboxMessage:
    message_id: str
    received_at: float  # time.monotonic() when the request was accepted
    body: dict[str, Any]  # the JSON the client sent, as it arrived
    outcome: OutcomeKind
    encoding: str  # how Common would send it (dcs TEXT): "GSM-7" or "UCS-2"
    segments: int

    @property
    def destination(self) -> str:
        return str(self.body["destination"])

    @property
    def text(self) -> str:
        return str(self.body.get("userData", ""))

    @property
    def ref_id(self) -> str | None:
        ref = self.body.get("refId")
        return None if ref is None else str(ref)


@dataclass
class DeliveryReportAttempt:
    gate_id: str
    url: str
    report: dict[str, Any]
    status: int | None  # the receiver's HTTP status; None when the POST itself failed
    error: str | None = None


@dataclass
class MoPost:
    """An MO message (a debtor's reply) the sandbox posted to a gate."""

    gate_id: str
    url: str
    body: dict[str, Any]
    status: int | None  # the receiver's HTTP status; None when the POST itself failed
    error: str | None = None


@dataclass
class LinkMobilitySandbox:
    """The sandbox's configuration and everything it saw. Change outcomes at any time, even while serving."""

    username: str = "sandbox"
    password: str = "sandbox"  # noqa: S105 - the sandbox's own, well-known credentials
    platform_id: str = "SANDBOX"
    platform_partner_id: str = "1"
    default_outcome: Outcome = field(default_factory=Outcome)
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # by destination (E.164)
    gates: dict[str, DeliveryGate] = field(default_factory=dict)  # gate id -> where reports go
    report_delay_s: float = 0.05
    report_max_attempts: int = 3
    report_retry_delay_s: float = 0.5
    operator: str = "no.telenor"
    short_number: str = "2270"  # where debtors' replies go (MO destination)
    mo_gate: str | None = None  # the gate MO messages are posted to; None: the first gate

    messages: list[SandboxMessage] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (HTTP status, description)
    reports: list[DeliveryReportAttempt] = field(default_factory=list)
    mo_posts: list[MoPost] = field(default_factory=list)

    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    _acknowledged: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _closing: asyncio.Event | None = field(default=None, repr=False)
    _client: aiohttp.ClientSession | None = field(default=None, repr=False)

    def set_outcome(self, kind: OutcomeKind, *, destination: str | None = None, seconds: float = 0.0) -> None:
        """Answer ``destination`` (or, without one, every destination not set on its own) with ``kind``."""
        if kind not in OUTCOME_KINDS:
            raise ValueError(f"unknown outcome {kind!r}; one of {', '.join(OUTCOME_KINDS)}")
        outcome = Outcome(kind, seconds)
        if destination is None:
            self.default_outcome = outcome
        else:
            self.outcomes[destination] = outcome

    def add_gate(
        self, gate_id: str, url: str, *, username: str | None = None, password: str | None = None
    ) -> None:
        self.gates[gate_id] = DeliveryGate(url, username, password)

    def outcome_for(self, destination: str) -> Outcome:
        return self.outcomes.get(destination, self.default_outcome)

    def delivered_reports(self) -> list[dict[str, Any]]:
        """The reports a receiver acknowledged with 200."""
        return [attempt.report for attempt in self.reports if attempt.status == 200]

    async def wait_for_reports(self, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``count`` reports were acknowledged; raises ``TimeoutError`` otherwise."""
        async with asyncio.timeout(timeout_s):
            while len(self.delivered_reports()) < count:
                self._acknowledged.clear()
                await self._acknowledged.wait()
        return self.delivered_reports()

    async def reply(
        self, source: str, text: str, *, destination: str | None = None, message_id: str | None = None
    ) -> MoPost:
        """A debtor at ``source`` texts ``text`` to ``destination`` (default ``short_number``): the MO message
        Common forwards, posted once to the MO gate with its credentials."""
        gate_id = self.mo_gate or next(iter(self.gates), None)
        if gate_id is None or gate_id not in self.gates:
            raise RuntimeError("add a gate (add_gate) for MO messages first")
        gate = self.gates[gate_id]
        destination = destination or self.short_number
        body: dict[str, Any] = {
            "id": message_id or _message_id(),
            "source": source,
            "sourceTON": "MSISDN",
            "destination": destination,
            "destinationTON": "MSISDN" if destination.startswith("+") else "SHORTNUMBER",
            "userData": text,
            "dcs": "TEXT",
            "operator": self.operator,
            "timestamp": _rfc3339(datetime.now(UTC)),
            "platformId": self.platform_id,
            "platformPartnerId": self.platform_partner_id,
            "customParameters": {},
        }
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if gate.username is not None:
            headers["Authorization"] = basic_auth(gate.username, gate.password or "")
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        post = MoPost(gate_id, gate.url, body, None)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
                client.post(gate.url, data=data, headers=headers) as response,
            ):
                await response.read()
                post.status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            post.error = repr(exc)
        self.mo_posts.append(post)
        return post

    # ------------------------------------------------------------------------------------------- internals

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the sandbox shuts down first (then False)."""
        closing = self._closing
        if closing is None:
            await asyncio.sleep(seconds)
            return True
        try:
            await asyncio.wait_for(closing.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


STATE = web.AppKey("linkmobility_sandbox", LinkMobilitySandbox)


# ---------------------------------------------------------------------------------------------------- HTTP


def _error(status: int, description: str, error_code: int | None = None) -> web.Response:
    body: dict[str, Any] = {
        "status": status,
        "description": description,
        "translatedDescription": description,
    }
    if error_code is not None:
        body["errorCode"] = error_code
    headers = {"WWW-Authenticate": 'Basic realm="Common"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP basic auth (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def parse_basic_auth(header: str) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` header value, or None."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _authorised(request: web.Request, state: LinkMobilitySandbox) -> bool:
    credentials = parse_basic_auth(request.headers.get("Authorization", ""))
    if credentials is None:
        return False
    user, password = credentials
    return secrets.compare_digest(user.encode(), state.username.encode()) & secrets.compare_digest(
        password.encode(), state.password.encode()
    )


def _message_id() -> str:
    """An id shaped like Common's (24 base64 characters, e.g. ``Dcshuhod0PMAAAFQ+/PbnR3x``)."""
    return base64.b64encode(secrets.token_bytes(18)).decode("ascii")


def _check(body: dict[str, Any], state: LinkMobilitySandbox) -> web.Response | None:
    """The answer to a request Common would refuse, or None if it is well formed."""
    for name in ("source", "destination", "platformId", "platformPartnerId", "userData"):
        if not isinstance(body.get(name), str) or not body[name]:
            return _error(400, f"Missing or invalid required field: {name}")
    if body["platformId"] != state.platform_id:
        return _error(400, "Invalid or missing platformId. Please check your platformId.", 106200)
    if body["platformPartnerId"] != state.platform_partner_id:
        return _error(
            400, "Invalid or missing platformPartnerId. Please check your platformPartnerId.", 106201
        )
    source_ton = body.get("sourceTON", "ALPHANUMERIC")
    source = body["source"]
    if source_ton not in _TONS:
        return _error(400, "Invalid sourceTON")
    if source_ton == "ALPHANUMERIC" and not (len(source) <= 11 and all(ch in GSM7_BASIC for ch in source)):
        return _error(400, "Invalid source: at most 11 GSM characters")
    if source_ton == "MSISDN" and not _MSISDN.fullmatch(source):
        return _error(400, "Invalid source: not an MSISDN")
    if source_ton == "SHORTNUMBER" and not _SHORTNUMBER.fullmatch(source):
        return _error(400, "Invalid source: not a short number")
    if body.get("destinationTON", "MSISDN") != "MSISDN" or not _MSISDN.fullmatch(body["destination"]):
        return _error(400, "Invalid destination: an MSISDN in international format, starting with +")
    if body.get("dcs", "TEXT") not in _DCS:
        return _error(400, "Unsupported dcs")
    if any(ord(ch) > 0xFFFF for ch in body["userData"]):
        return _error(400, "Invalid userData: 4-byte UTF-8 characters are not supported")
    if body.get("useDeliveryReport", True) is True:
        gates = body.get("deliveryReportGates")
        if not isinstance(gates, list) or not gates or not all(isinstance(g, str) for g in gates):
            return _error(400, "No gates available. Set useDeliveryReport to false or name a gate.", 106300)
        if state.gates and any(gate not in state.gates for gate in gates):
            return _error(400, "Specified gate not available. Please check your gateId.", 106301)
    return None


async def _send(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if not _authorised(request, state):
        response = _error(401, "Invalid authentication. Please check your username and password.", 106100)
        state.rejected.append((401, "invalid authentication"))
        return response
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        state.rejected.append((400, "invalid JSON"))
        return _error(400, "Invalid JSON")
    if not isinstance(body, dict):
        state.rejected.append((400, "invalid JSON"))
        return _error(400, "Invalid JSON: expected an object")
    refusal = _check(body, state)
    if refusal is not None:
        state.rejected.append((refusal.status, str(refusal.text)))
        return refusal

    outcome = state.outcome_for(body["destination"])
    if outcome.kind == "http_5xx":
        state.rejected.append((503, "http_5xx"))
        return _error(503, "Service temporarily unavailable")
    if outcome.kind == "throttled":
        state.rejected.append((429, "throttled"))
        response = _error(429, "Too many requests")
        response.headers["Retry-After"] = str(max(0, math.ceil(outcome.seconds)))
        return response
    if outcome.kind == "invalid_number":
        state.rejected.append((200, "number error"))
        return web.json_response({"resultCode": NUMBER_ERROR, "description": "Number error"})

    analysis = analyse(body["userData"])
    message = SandboxMessage(
        message_id=_message_id(),
        received_at=time.monotonic(),
        body=body,
        outcome=outcome.kind,
        encoding=analysis.encoding,
        segments=analysis.segments,
    )
    state.messages.append(message)
    if body.get("useDeliveryReport", True) is True and state.gates:
        state._spawn(_report(state, message, datetime.now(UTC)))

    if outcome.kind == "slow" and not await state._pause(outcome.seconds):
        raise web.HTTPServiceUnavailable()  # shutting down
    if outcome.kind == "drop":
        # The carrier has the message, but the client never hears so.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)  # written to a closed transport: never seen

    if body.get("ignoreResponse", True) is not False:
        return web.Response(status=204)
    answer: dict[str, Any] = {"messageId": message.message_id, "resultCode": QUEUED, "description": "Queued"}
    custom = body.get("customParameters")
    if isinstance(custom, dict) and str(custom.get("replySmsCount", "")).lower() == "true":
        answer["smsCount"] = message.segments
    return web.json_response(answer)


# ---------------------------------------------------------------------------------------- delivery reports


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(
    message: SandboxMessage, *, operator: str, sent_at: datetime, now: datetime
) -> dict[str, Any]:
    """A delivery report in Common's JSON format (their "Delivery Reports" chapter and its examples)."""
    result_code, operator_code = REPORT_CODES[message.outcome]
    return {
        "refId": message.ref_id,
        "id": message.message_id,
        "operator": operator if operator_code is not None else None,
        "sentTimestamp": _rfc3339(sent_at),
        "timestamp": _rfc3339(now),
        "resultCode": result_code,
        "operatorResultCode": operator_code,
        "segments": message.segments,
        "gateCustomParameters": {},
        "customParameters": {"received": now.astimezone(OSLO).strftime("%Y-%m-%d %H:%M:%S")},
    }


async def _report(state: LinkMobilitySandbox, message: SandboxMessage, sent_at: datetime) -> None:
    if not await state._pause(state.report_delay_s):
        return
    report = build_report(message, operator=state.operator, sent_at=sent_at, now=datetime.now(UTC))
    for gate_id in message.body.get("deliveryReportGates", []):
        gate = state.gates.get(gate_id)
        if gate is not None:
            await _post_report(state, gate_id, gate, report)


async def _post_report(
    state: LinkMobilitySandbox, gate_id: str, gate: DeliveryGate, report: dict[str, Any]
) -> None:
    client = state._client
    if client is None:
        return
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if gate.username is not None:
        headers["Authorization"] = basic_auth(gate.username, gate.password or "")
    data = json.dumps(report, ensure_ascii=False).encode("utf-8")
    for attempt in range(1, state.report_max_attempts + 1):
        try:
            async with client.post(gate.url, data=data, headers=headers) as response:
                await response.read()
                state.reports.append(DeliveryReportAttempt(gate_id, gate.url, report, response.status))
                if response.status == 200:
                    state._acknowledged.set()
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            state.reports.append(DeliveryReportAttempt(gate_id, gate.url, report, None, repr(exc)))
        if attempt < state.report_max_attempts and not await state._pause(state.report_retry_delay_s):
            return


# ---------------------------------------------------------------------------------------------- app, run


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state._closing = asyncio.Event()
    state._acknowledged = asyncio.Event()
    state._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        yield
    finally:
        state._closing.set()
        tasks = list(state._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await state._client.close()
        state._client = None


def create_app(state: LinkMobilitySandbox) -> web.Application:
    """The sandbox gateway as an aiohttp application: ``POST /sms/send``."""
    app = web.Application()
    app[STATE] = state
    app.router.add_post("/sms/send", _send)
    app.cleanup_ctx.append(_lifecycle)
    return app


@contextlib.asynccontextmanager
async def serve(state: LinkMobilitySandbox, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run the sandbox on ``host:port`` (0: a free port) and yield its base URL, e.g. ``http://127.0.0.1:4711``
    (the value for ``ORCH_LINKMOBILITY_URL``)."""
    async with serve_app(create_app(state), host=host, port=port) as url:
        yield url
