"""Intake: validate each contact request on its own, dedupe on the idempotency key, insert, commit, enqueue.

Used by the HTTP API (single and batch) and by ``orchestrator import``: one code path for every way in.
A batch never rejects good items because of bad ones; every bad item gets its own precise problem.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator import contact_log as store
from orchestrator import metrics, queue
from orchestrator.db import write_session
from orchestrator.logs import get_logger
from orchestrator.models import new_id, utcnow
from orchestrator.schemas import ContactRequest

log = get_logger(__name__)
MAX_BATCH = 10_000


@dataclass
class ItemResult:
    index: int
    id: str | None = None
    status: str | None = None
    existing: bool = False
    http_status: int = 202
    title: str | None = None
    detail: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.http_status < 400


def validation_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[dict[str, Any]]:
    """Pydantic errors as ``[{"loc": [...], "msg": ...}]``, without the offending input (it may be a national
    id) and without pydantic's "Value error, " prefix."""
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        loc = [*prefix, *[p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]]
        out.append({"loc": loc, "msg": msg})
    return out


def parse_item(index: int, raw: Any) -> ContactRequest | ItemResult:
    if not isinstance(raw, dict):
        return ItemResult(
            index=index,
            http_status=422,
            title="Invalid contact request",
            detail="each contact request must be a JSON object",
            errors=[{"loc": [], "msg": f"expected an object, got {type(raw).__name__}"}],
        )
    try:
        return ContactRequest.model_validate(raw)
    except ValidationError as exc:
        errors = validation_errors(exc)
        return ItemResult(
            index=index,
            http_status=422,
            title="Invalid contact request",
            detail=f"{len(errors)} problem(s) in the contact request",
            errors=errors,
        )


def body_sha256(request: ContactRequest) -> str:
    canonical = json.dumps(
        request.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _debtor_row(request: ContactRequest, now: datetime) -> dict[str, Any]:
    d = request.debtor
    return {
        "id": d.id,
        "type": d.type,
        "name": d.name,
        "national_id": d.national_id,
        "organisation_number": d.organisation_number,
        "unusable_addresses": [],
        "registry_addresses": [],
        "opted_out": [],
        "contact_points": {
            "addresses": [a.model_dump(mode="json") for a in d.addresses],
            "phones": list(d.phones),
            "emails": list(d.emails),
            "electronic_notice_evidence": [e.model_dump(mode="json") for e in d.electronic_notice_evidence],
            "preferred_channel": d.preferred_channel,
        },
        "created_at": now,
        "updated_at": now,
    }


def _case_row(request: ContactRequest, now: datetime) -> dict[str, Any]:
    c = request.case
    return {
        "id": c.id,
        "debtor_id": request.debtor.id,
        "status": "open",
        "status_reason": None,
        "creditor_name": c.creditor.name,
        "details": c.model_dump(mode="json", by_alias=True, exclude={"id"}),
        "created_at": now,
        "updated_at": now,
    }


async def accept(
    sessions: async_sessionmaker[AsyncSession],
    redis: ArqRedis | None,
    queue_name: str,
    items: Sequence[ContactRequest | ItemResult],
    *,
    source: str = "api",
) -> list[ItemResult]:
    """Accept parsed items (an ``ItemResult`` in ``items`` is an item that already failed to parse).

    Returns one result per item, in order. New contacts are committed before they are enqueued; if Redis is
    unreachable they stay ``queued`` and the sweeper enqueues them.
    """
    now = utcnow()
    results: list[ItemResult | None] = [None] * len(items)
    candidates: dict[str, tuple[int, ContactRequest, str]] = {}  # key -> first (index, request, sha)
    followers: list[tuple[int, str, str]] = []  # later items with a key already seen in this batch
    for index, item in enumerate(items):
        if isinstance(item, ItemResult):
            item.index = index
            results[index] = item
            continue
        sha = body_sha256(item)
        if item.idempotency_key in candidates:
            followers.append((index, item.idempotency_key, sha))
        else:
            candidates[item.idempotency_key] = (index, item, sha)

    new_ids: list[str] = []
    async with write_session(sessions) as session:
        existing = await store.find_contacts_by_keys(session, list(candidates))
        owners = await store.find_case_owners(
            session, list({req.case.id for _, req, _ in candidates.values()})
        )
        fresh: list[tuple[int, ContactRequest, str, str]] = []
        for key, (index, request, sha) in candidates.items():
            if key in existing:
                results[index] = _existing_result(index, key, sha, existing[key])
                continue
            owner = owners.get(request.case.id)
            if owner is not None and owner != request.debtor.id:
                results[index] = ItemResult(
                    index=index,
                    http_status=422,
                    title="Invalid contact request",
                    detail="the case belongs to another debtor",
                    errors=[{"loc": ["case", "id"], "msg": "case already exists for a different debtor id"}],
                )
                continue
            owners[request.case.id] = request.debtor.id
            fresh.append((index, request, sha, new_id()))

        debtors = {req.debtor.id: _debtor_row(req, now) for _, req, _, _ in fresh}
        cases = {req.case.id: _case_row(req, now) for _, req, _, _ in fresh}
        # Rows are written in key order so that concurrent batches lock them in the same order (no deadlock).
        await store.upsert_debtors(session, [debtors[k] for k in sorted(debtors)])
        await store.upsert_cases(session, [cases[k] for k in sorted(cases)])
        await store.insert_contacts(
            session,
            [
                {
                    "id": cid,
                    "idempotency_key": req.idempotency_key,
                    "body_sha256": sha,
                    "kind": req.kind,
                    "channel_preference": req.channel,
                    "channel": None,
                    "language": req.language,
                    "not_before": req.not_before,
                    "debtor_id": req.debtor.id,
                    "case_id": req.case.id,
                    "status": "queued",
                    "status_reason": None,
                    "send_at": None,
                    "send_tries": 0,
                    "decision": None,
                    "variables": req.variables,
                    "created_at": now,
                    "updated_at": now,
                }
                for _, req, sha, cid in sorted(fresh, key=lambda item: item[1].idempotency_key)
            ],
        )
        # A concurrent request may have taken a key between our read and our insert: see who won.
        winners = await store.find_contacts_by_keys(session, [req.idempotency_key for _, req, _, _ in fresh])
        timeline = []
        for index, req, sha, cid in fresh:
            won = winners[req.idempotency_key]
            if won[0] == cid:
                results[index] = ItemResult(index=index, id=cid, status="queued", http_status=202)
                new_ids.append(cid)
                timeline.append(
                    store.timeline_row(
                        debtor_id=req.debtor.id,
                        case_id=req.case.id,
                        contact_id=cid,
                        type="contact_received",
                        status="queued",
                        source=source,
                        detail={
                            "kind": req.kind,
                            "channel": req.channel,
                            "idempotency_key": req.idempotency_key,
                        },
                        at=now,
                    )
                )
            else:
                results[index] = _existing_result(index, req.idempotency_key, sha, won)
        await store.add_timeline(session, timeline)

    for index, key, sha in followers:
        first = results[candidates[key][0]]
        assert first is not None
        if first.ok and first.id is not None:
            results[index] = _existing_result(
                index, key, sha, (first.id, candidates[key][2], first.status or "")
            )
        else:
            results[index] = ItemResult(
                index=index,
                http_status=first.http_status,
                title=first.title,
                detail=f"same idempotency key as item {first.index}, which was rejected",
                errors=first.errors,
            )

    if new_ids and redis is not None:
        try:
            await queue.enqueue_contacts(redis, queue_name, new_ids)
        except Exception as exc:  # the rows are committed: the sweeper enqueues them later; nothing is lost
            log.warning(
                "enqueue failed; the sweeper will pick the contacts up", count=len(new_ids), error=str(exc)
            )

    final = [r for r in results if r is not None]
    assert len(final) == len(items)
    metrics.CONTACTS_ACCEPTED.inc(len(new_ids))
    metrics.CONTACTS_EXISTING.inc(sum(1 for r in final if r.existing))
    metrics.CONTACTS_REJECTED.inc(sum(1 for r in final if not r.ok))
    for r in final:
        if not r.ok:
            log.info(
                "contact request rejected",
                index=r.index,
                status=r.http_status,
                errors=r.errors,
                source=source,
            )
    return final


def _existing_result(index: int, key: str, sha: str, existing: tuple[str, str, str]) -> ItemResult:
    contact_id, existing_sha, status = existing
    if existing_sha != sha:
        return ItemResult(
            index=index,
            http_status=409,
            title="Idempotency key reused with a different body",
            detail="this idempotency_key belongs to a different request body; nothing was sent",
            errors=[{"loc": ["idempotency_key"], "msg": "already used for a different contact request"}],
        )
    return ItemResult(index=index, id=contact_id, status=status, existing=True, http_status=200)
