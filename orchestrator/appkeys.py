"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator.auth import KeyCache
from orchestrator.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS: web.AppKey[async_sessionmaker[AsyncSession]] = web.AppKey("sessions", async_sessionmaker)
REDIS = web.AppKey("redis", ArqRedis)
KEYS = web.AppKey("api_keys", KeyCache)
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
