"""``orchestrator explain CONTACT_ID``: why a contact went where it went, and what today's rules would say.

Every decision is stored with the inputs it was made from (``decision["inputs"]``, see
:func:`orchestrator.jobs.decision_json`). This replays those inputs through the pure policy with today's rule
set and today's channels, at the moment the decision was made, and lists what would differ. Nothing is sent
or changed. National ids appear only masked, as they are stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from orchestrator import contact_log as store
from orchestrator import db
from orchestrator.channel_registry import build_channels, close_channels
from orchestrator.policy.decide import ChannelOption, Decision, DecisionInput, decide
from orchestrator.policy.rules import load_rules
from orchestrator.rendering import Renderer, available_templates
from orchestrator.settings import Settings

_COMPARED = ("outcome", "channel", "provider", "address", "send_at", "template", "variant", "status_reason")


class ExplainError(Exception):
    """The contact cannot be explained (unknown, or decided before inputs were stored)."""


def differences(stored: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    """What today's decision changes, one line each; empty when it is the same."""
    lines = [
        f"{name}: {stored.get(name)!r} -> {replayed.get(name)!r}"
        for name in _COMPARED
        if stored.get(name) != replayed.get(name)
    ]
    before, after = set(stored.get("reasons", [])), set(replayed.get("reasons", []))
    lines += [f"reason no longer given: {r}" for r in sorted(before - after)]
    lines += [f"new reason: {r}" for r in sorted(after - before)]
    was = {r["channel"]: r["reason"] for r in stored.get("rejected", [])}
    now = {r["channel"]: r["reason"] for r in replayed.get("rejected", [])}
    for channel in sorted(set(was) | set(now)):
        if was.get(channel) != now.get(channel):
            lines.append(f"{channel}: {_role(channel, was, stored)} -> {_role(channel, now, replayed)}")
    return lines


def _role(channel: str, rejected: dict[str, str], decision: dict[str, Any]) -> str:
    if channel in rejected:
        return rejected[channel]
    return "chosen" if decision.get("channel") == channel else "not considered"


def _describe(decision: dict[str, Any]) -> list[str]:
    lines = [
        f"  outcome:      {decision.get('outcome')}"
        + (f" ({decision['status_reason']})" if decision.get("status_reason") else ""),
        f"  channel:      {decision.get('channel')} via {decision.get('provider')}",
        f"  address:      {str(decision.get('address') or '').replace(chr(10), ', ')}",
        f"  send at:      {decision.get('send_at')}",
        f"  template:     {decision.get('template')}",
        f"  rule version: {decision.get('rule_version')}",
        f"  reasons:      {', '.join(decision.get('reasons', []))}",
    ]
    lines += [f"  not {r['channel']}: {r['reason']}" for r in decision.get("rejected", [])]
    return lines


def replay(
    stored: dict[str, Any],
    *,
    channels: dict[str, ChannelOption],
    templates: frozenset[tuple[str, str, str, str]],
    settings: Settings,
) -> Decision:
    inputs = DecisionInput.from_json(stored["inputs"])
    return decide(
        inputs,
        channels=channels,
        templates=templates,
        rules=load_rules(settings.rules_file),
        now=datetime.fromisoformat(stored["decided_at"]),
    )


async def explain(settings: Settings, contact_id: str) -> str:
    engine = db.create_engine(settings.resolved_database_url)
    try:
        async with db.session_factory(engine)() as session:
            contact = await store.get_contact(session, contact_id)
    finally:
        await engine.dispose()
    if contact is None:
        raise ExplainError(f"no contact with id {contact_id!r}")
    stored = contact.decision
    if not stored or "inputs" not in stored:
        raise ExplainError(
            f"contact {contact_id} has no stored decision inputs (not decided yet, or decided by an older "
            "version): nothing to replay"
        )
    # Channel objects only describe themselves here; nothing connects or sends.
    redis: Redis = Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
    channels = build_channels(settings, redis)
    try:
        options = {name: ChannelOption(name, ch.provider, ch.limits) for name, ch in channels.items()}
        renderer = Renderer()
        decision = replay(
            stored, channels=options, templates=available_templates(renderer), settings=settings
        )
    finally:
        await close_channels(channels)
        await redis.aclose()
    today = decision.as_json()
    changed = differences(stored, today)
    out = [
        f"contact {contact.id} ({contact.kind}, debtor {contact.debtor_id}, case {contact.case_id}): "
        f"{contact.status}" + (f" ({contact.status_reason})" if contact.status_reason else ""),
        f"decided at {stored.get('decided_at')} under rule set {stored.get('rule_version')}:",
        *_describe(stored),
        f"replayed from the stored inputs under today's rule set {today['rule_version']}:",
    ]
    out += ["  the same decision"] if not changed else [f"  {line}" for line in changed]
    return "\n".join(out)
