"""Operator accounts: roles, scrypt password hashes, and sign-in checks.

Passwords are hashed with scrypt (the standard library's, RFC 7914) with a random salt and its parameters in
the stored string, so they can be raised later without invalidating old hashes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator.console import store
from orchestrator.db import write_session
from orchestrator.models import Operator, new_id, utcnow

# Each role may do what the ones before it may.
ROLES: Final = ("viewer", "operator", "admin")
MIN_PASSWORD_CHARS: Final = 12
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,99}")
_N, _R, _P = 2**14, 8, 1


def role_allows(role: str, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


# A hash to check against when the username is unknown, so that a wrong username takes as long as a wrong
# password and does not tell which usernames exist.
_DUMMY_HASH: Final = hash_password(secrets.token_urlsafe(16))


def check_username(username: str) -> str:
    if not _USERNAME.fullmatch(username):
        raise ValueError(
            "a username is 2-100 characters: lower-case letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return username


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    return password


def generate_password() -> str:
    return secrets.token_urlsafe(15)


@dataclass(frozen=True)
class SignedIn:
    """Who is using the console in this request."""

    id: str
    username: str
    display_name: str
    role: str

    def may(self, role: str) -> bool:
        return role_allows(self.role, role)


def signed_in(operator: Operator) -> SignedIn:
    return SignedIn(operator.id, operator.username, operator.display_name, operator.role)


async def create_operator(
    sessions: async_sessionmaker[AsyncSession],
    *,
    username: str,
    role: str,
    password: str,
    display_name: str | None = None,
    reset: bool = False,
) -> str:
    """A new account (or, with ``reset``, a new password and role for an existing one, whose sessions end).
    Raises ``ValueError`` with a message for the command line."""
    check_username(username)
    check_password(password)
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    now = utcnow()
    async with write_session(sessions) as session:
        existing = await store.get_operator_by_username(session, username)
        if existing is not None:
            if not reset:
                raise ValueError(f"operator {username!r} exists; pass --reset to set a new password and role")
            await store.update_operator(
                session,
                existing.id,
                password_hash=hash_password(password),
                role=role,
                display_name=display_name or existing.display_name,
                disabled_at=None,
                updated_at=now,
            )
            await store.revoke_operator_sessions(session, existing.id, now)
            return existing.id
        operator_id = new_id()
        await store.insert_operator(
            session,
            {
                "id": operator_id,
                "username": username,
                "display_name": display_name or username,
                "role": role,
                "password_hash": hash_password(password),
                "created_at": now,
                "updated_at": now,
                "disabled_at": None,
            },
        )
    return operator_id


async def disable_operator(sessions: async_sessionmaker[AsyncSession], username: str) -> None:
    now = utcnow()
    async with write_session(sessions) as session:
        existing = await store.get_operator_by_username(session, username)
        if existing is None:
            raise ValueError(f"no operator {username!r}")
        await store.update_operator(session, existing.id, disabled_at=now, updated_at=now)
        await store.revoke_operator_sessions(session, existing.id, now)


async def authenticate(session: AsyncSession, username: str, password: str) -> Operator | None:
    operator = await store.get_operator_by_username(session, username.strip().lower())
    # scrypt takes tens of milliseconds on purpose: off the event loop
    if operator is None:
        await asyncio.to_thread(verify_password, password, _DUMMY_HASH)
        return None
    if not await asyncio.to_thread(verify_password, password, operator.password_hash):
        return None
    return None if operator.disabled_at is not None else operator
