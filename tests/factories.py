"""Valid API payloads for tests, and a way to change any part of them.

``contact_payload(n)`` is a valid ``POST /v1/contacts`` body for debtor ``D-{n}`` and case ``C-{n}``; the same
``n`` always gives the same body (and idempotency key), different ``n`` give independent contacts. Change any
part with a dotted path, list items by index::

    contact_payload(3, debtor__phones=["+4791234567", "12"])          # keyword form: "__" separates parts
    with_(contact_payload(3), "debtor.addresses.0.postal_code", "015")  # returns a changed deep copy
    with_(contact_payload(3), "case", REMOVE)                           # drops the key

``national_id(...)`` builds national identity numbers with correct control digits (classic, or the 2032
scheme); ``open_clock()`` is a worker clock inside the contact window:
``drain(settings, clock=open_clock())``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from orchestrator.identifiers import luhn_check_digit, mod11_check_digit
from orchestrator.policy.rules import load_rules
from orchestrator.policy.windows import is_open, next_opening

ACCOUNT_NUMBER = "86011117947"
CREDITOR_ORGANISATION_NUMBER = "974760673"
FIXED_DUE_DATE = date(2026, 10, 1)
REMOVE: Any = object()  # with_(payload, path, REMOVE) deletes the key at path


def kid_for(n: int) -> str:
    """A valid KID (MOD10 check digit) for case ``n``."""
    payload = f"2001{n:08d}"
    return payload + str(luhn_check_digit(payload))


def contact_payload(n: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid request; ``overrides`` are dotted paths written with ``__``: ``debtor__phones=[...]``."""
    # A fixed date, not "30 days ago": tests with a fixed worker clock (late November 2026) must see the same
    # claim whenever they run (R10's fee gate and R1's "after due" depend on it).
    due = FIXED_DUE_DATE
    email = f"debtor{n}@example.no"
    payload: dict[str, Any] = {
        "idempotency_key": f"eksempel-as/inv-{n}/reminder",
        "kind": "reminder",
        "channel": "auto",
        "language": "nb",
        "debtor": {
            "id": f"D-{n}",
            "type": "person",
            "name": f"Kari Nordmann {n}",
            "addresses": [
                {"lines": [f"Storgata {n}"], "postal_code": "0155", "city": "OSLO", "country": "NO"}
            ],
            "phones": [f"+47{91_000_000 + n}"],
            "emails": [email],
            "electronic_notice_evidence": [
                {
                    "channel": "email",
                    "address": email,
                    "basis": "debtor_used_address",
                    "observed_at": "2026-10-02T10:00:00+02:00",
                }
            ],
        },
        "case": {
            "id": f"C-{n}",
            "creditor": {"name": "Eksempel AS", "organisation_number": CREDITOR_ORGANISATION_NUMBER},
            "reference": f"Faktura {1000 + n}",
            "principal": "1250.00",
            "costs": [{"kind": "reminder_fee", "amount": "35.00"}],
            "interest": {"rate_percent": "12.50", "from": due.isoformat()},
            "due_date": due.isoformat(),
            "kid": kid_for(n),
            "account_number": ACCOUNT_NUMBER,
        },
        "variables": {},
    }
    for key, value in overrides.items():
        payload = with_(payload, key.replace("__", "."), value)
    return payload


def with_(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``payload`` with ``value`` at dotted ``path`` (digits index lists; REMOVE deletes)."""
    out = copy.deepcopy(payload)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is REMOVE:
        del node[key]
    else:
        node[key] = copy.deepcopy(value)
    return out


_K1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def national_id(birth: str = "010190", individual: str = "120", *, k1_remainder: int = 0) -> str:
    """A valid 11-digit national id for ``birth`` (DDMMYY) and ``individual`` (3 digits).

    ``k1_remainder`` 0 is the classic scheme; 1-3 are valid only under the scheme used from 2032. Some
    individual numbers have no valid control digit; pick another one if this raises.
    """
    nine = birth + individual
    weighted = sum(int(d) * w for d, w in zip(nine, _K1, strict=True))
    k1 = (k1_remainder - weighted) % 11
    if k1 == 10:
        raise ValueError(f"no first control digit for {nine} with remainder {k1_remainder}")
    k2 = mod11_check_digit(nine + str(k1), _K2)
    if k2 is None:
        raise ValueError(f"no second control digit for {nine}{k1}")
    return f"{nine}{k1}{k2}"


def open_clock() -> Callable[[], datetime]:
    """A clock running at real speed but shifted (if needed) into the default rules' contact window, with at
    least an hour of the window left, so a drained worker sends now instead of scheduling for later."""
    windows = load_rules().contact_windows
    now = datetime.now(UTC)
    target = next_opening(now, windows)
    while not is_open(target + timedelta(hours=1), windows):
        target = next_opening(target + timedelta(hours=1), windows)
    offset = target - now
    return lambda: datetime.now(UTC) + offset
