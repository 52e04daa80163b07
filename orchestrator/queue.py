"""Redis and arq plumbing: jobs carry contact ids only, with deterministic job ids so duplicates collapse."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms

PROCESS_CONTACT = "process_contact"
# A job is dropped by arq if it has not started this long after its planned time; the sweeper re-enqueues.
EXPIRES_EXTRA_MS = 7 * 24 * 3600 * 1000

# Enqueue one job unless a job or a kept result with that id exists: arq's own rule, made atomic for a
# pipeline of thousands (arq's enqueue_job needs a WATCH round trip per job).
_ENQUEUE_LUA = """
if redis.call('exists', KEYS[1], KEYS[2]) == 0 then
  redis.call('psetex', KEYS[1], ARGV[2], ARGV[1])
  redis.call('zadd', KEYS[3], ARGV[3], ARGV[4])
  return 1
end
return 0
"""


def json_serializer(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_deserializer(data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(data)
    return result


def job_id_for(contact_id: str, send_at: datetime | None = None) -> str:
    """``contact:<id>`` for "now"; a deferred run gets its time in the id so a re-plan is a new job."""
    if send_at is None:
        return f"contact:{contact_id}"
    return f"contact:{contact_id}:{int(send_at.timestamp())}"


async def connect(url: str) -> ArqRedis:
    pool: ArqRedis = await create_pool(
        RedisSettings.from_dsn(url),
        job_serializer=json_serializer,
        job_deserializer=json_deserializer,
    )
    return pool


async def enqueue_contact(
    redis: ArqRedis, queue_name: str, contact_id: str, *, send_at: datetime | None = None
) -> bool:
    job = await redis.enqueue_job(
        PROCESS_CONTACT,
        contact_id,
        _job_id=job_id_for(contact_id, send_at),
        _queue_name=queue_name,
        _defer_until=send_at,
        _expires=None
        if send_at is None
        else (to_unix_ms(send_at) - timestamp_ms() + EXPIRES_EXTRA_MS) / 1000,
    )
    return job is not None


async def enqueue_contacts(redis: ArqRedis, queue_name: str, contact_ids: Sequence[str]) -> int:
    """Enqueue many contacts to run now in one pipeline; returns how many were new jobs."""
    if not contact_ids:
        return 0
    script = redis.register_script(_ENQUEUE_LUA)
    created = 0
    for start in range(0, len(contact_ids), 1000):
        now_ms = timestamp_ms()
        async with redis.pipeline(transaction=False) as pipe:
            for contact_id in contact_ids[start : start + 1000]:
                job_id = job_id_for(contact_id)
                payload = serialize_job(
                    PROCESS_CONTACT, (contact_id,), {}, None, now_ms, serializer=json_serializer
                )
                await script(
                    keys=[job_key_prefix + job_id, result_key_prefix + job_id, queue_name],
                    args=[payload, EXPIRES_EXTRA_MS, now_ms, job_id],
                    client=pipe,
                )
            created += sum(int(r) for r in await pipe.execute())
    return created
