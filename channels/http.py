"""What every HTTP carrier module needs at its boundary: knowing whether a request left, and Retry-After.

Whether the request headers were written decides between two very different errors: before, the carrier has
nothing (``TransientChannelError``, safe to retry or fail over); after, it may have the message
(``UncertainDeliveryError``, reconcile, never resend blindly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp


@dataclass
class RequestProgress:
    """Pass as ``trace_request_ctx``; ``sent`` turns true once the request headers are on the wire."""

    sent: bool = False


async def _on_headers_sent(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
    progress = getattr(context, "trace_request_ctx", None)
    if isinstance(progress, RequestProgress):
        progress.sent = True


def tracking_session(**kwargs: Any) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` whose requests report their ``RequestProgress``."""
    tracing = aiohttp.TraceConfig()
    tracing.on_request_headers_sent.append(_on_headers_sent)
    return aiohttp.ClientSession(trace_configs=[tracing], **kwargs)


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date); None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = math.ceil((when - (now or datetime.now(UTC))).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(float(seconds), 0.0)
