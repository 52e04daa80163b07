"""Self-service links: an opaque, expiring, revocable token in a URL that carries no personal data.

The token is 192 random bits shown once, in the message; only its SHA-256 is stored, so neither the database
nor a log can recreate a working link.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.models import new_id

PATH_PREFIX = "/s/"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedLink:
    token: str
    url: str
    row: dict[str, Any]  # for contact_log.insert_chat_link


# Which page a contact of each kind links to; kinds not listed link to the claim page.
PURPOSE_BY_KIND = {"address_request": "address"}


def issue(
    *,
    base_url: str,
    debtor_id: str,
    case_id: str,
    contact_id: str,
    now: datetime,
    ttl_days: int,
    purpose: str = "case",
) -> IssuedLink:
    token = secrets.token_urlsafe(24)
    row = {
        "id": new_id(),
        "purpose": purpose,
        "token_hash": hash_token(token),
        "debtor_id": debtor_id,
        "case_id": case_id,
        "contact_id": contact_id,
        "created_at": now,
        "expires_at": now + timedelta(days=ttl_days),
        "revoked_at": None,
        "opened_count": 0,
        "last_opened_at": None,
    }
    return IssuedLink(token=token, url=f"{base_url.rstrip('/')}{PATH_PREFIX}{token}", row=row)
