"""API keys: ``orch_<random>``, shown once, stored as a SHA-256 hash, each with scopes.

A key is 32 random bytes, so a plain SHA-256 is enough (no password stretching needed) and lookups are one
indexed query. Scopes: contacts:write, contacts:read, cases:write, console.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator import contact_log as store
from orchestrator.db import write_session

SCOPES = ("contacts:write", "contacts:read", "cases:write", "experiments:write", "console")
PREFIX = "orch_"
# Revocation takes effect within this many seconds in every web process.
CACHE_TTL_S = 30.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def parse_scopes(raw: str) -> list[str]:
    scopes = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; known scopes: {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError("at least one scope is needed")
    return scopes


async def create_api_key(sessions: async_sessionmaker[AsyncSession], *, name: str, scopes: list[str]) -> str:
    key = generate_key()
    async with write_session(sessions) as session:
        await store.insert_api_key(session, name=name, key_hash=hash_key(key), scopes=scopes)
    return key


class KeyCache:
    """Key hash -> scopes, for ``CACHE_TTL_S``; unknown keys are cached too, so guessing costs no queries."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, list[str] | None]] = {}

    async def scopes(self, sessions: async_sessionmaker[AsyncSession], key: str) -> list[str] | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with sessions() as session:
            scopes = await store.find_api_key_scopes(session, digest)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (now + CACHE_TTL_S, scopes)
        return scopes
