"""A small sample portfolio for ``orchestrator demo``: one debtor per situation the first policy handles."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from orchestrator.identifiers import luhn_check_digit

CREDITOR = {"name": "Eksempel Kreditt AS", "organisation_number": "974760673"}
ACCOUNT = "86011117947"
# A synthetic national id (Tenor-style, month + 80): a Digipost user in the demo's sandbox.
DIGIPOST_USER = "06876312016"


def _kid(n: int) -> str:
    payload = f"{n:08d}"
    return payload + str(luhn_check_digit(payload))


def _case(n: int, today: date, principal: str, *, fee: bool) -> dict[str, Any]:
    return {
        "id": f"DEMO-C-{n}",
        "creditor": CREDITOR,
        "reference": f"Faktura {1000 + n}",
        "principal": principal,
        "costs": [{"kind": "reminder_fee", "amount": "35.00"}] if fee else [],
        "interest": {"rate_percent": "12.50", "from": (today - timedelta(days=30)).isoformat()},
        "due_date": (today - timedelta(days=30)).isoformat(),
        "kid": _kid(1000 + n),
        "account_number": ACCOUNT,
    }


def sample_portfolio(today: date, run: str) -> list[dict[str, Any]]:
    """Contact requests that exercise e-mail, letter, SMS, a refused preference, and one invalid item.
    ``run`` makes the idempotency keys unique per demo run."""
    return [
        {
            "idempotency_key": f"demo-{run}/1/inkassovarsel",
            "kind": "inkassovarsel",
            "debtor": {
                "id": "DEMO-D-1",
                "type": "person",
                "name": "Kari Nordmann",
                "addresses": [{"lines": ["Storgata 1"], "postal_code": "0155", "city": "OSLO"}],
                "phones": ["+4791234567"],
                "emails": ["kari.nordmann@example.no"],
                "electronic_notice_evidence": [
                    {
                        "channel": "email",
                        "address": "kari.nordmann@example.no",
                        "basis": "debtor_used_address",
                        "observed_at": (today - timedelta(days=20)).isoformat() + "T10:00:00+02:00",
                    }
                ],
            },
            "case": _case(1, today, "1250.00", fee=True),
        },
        {
            "idempotency_key": f"demo-{run}/2/inkassovarsel",
            "kind": "inkassovarsel",
            "debtor": {
                "id": "DEMO-D-2",
                "type": "person",
                "name": "Ola Nordmann",
                "addresses": [{"lines": ["Kongens gate 2"], "postal_code": "7011", "city": "TRONDHEIM"}],
                "emails": ["ola.nordmann@example.no"],
            },
            "case": _case(2, today, "4999.50", fee=False),
        },
        {
            "idempotency_key": f"demo-{run}/3/reminder",
            "kind": "reminder",
            "channel": "sms",
            "debtor": {"id": "DEMO-D-3", "type": "person", "name": "Åse Ødegård", "phones": ["+4741234567"]},
            "case": _case(3, today, "780.00", fee=True),
        },
        {
            "idempotency_key": f"demo-{run}/4/inkassovarsel",
            "kind": "inkassovarsel",
            "channel": "sms",
            "debtor": {
                "id": "DEMO-D-4",
                "type": "organisation",
                "name": "Fjordkafeen AS",
                "organisation_number": "984851006",
                "addresses": [{"lines": ["Bryggen 4"], "postal_code": "5003", "city": "BERGEN"}],
                "phones": ["+4792345678"],
            },
            "case": _case(4, today, "15200.00", fee=False),
        },
        {
            "idempotency_key": f"demo-{run}/7/inkassovarsel",
            "kind": "inkassovarsel",
            "debtor": {
                "id": "DEMO-D-7",
                "type": "person",
                "name": "Berit Hansen",
                "national_id": DIGIPOST_USER,
                "addresses": [{"lines": ["Torget 7"], "postal_code": "9008", "city": "TROMSØ"}],
            },
            "case": _case(7, today, "3300.00", fee=True),
        },
        {
            "idempotency_key": f"demo-{run}/6/reminder-link",
            "kind": "reminder",
            "channel": "chat_link",
            "debtor": {"id": "DEMO-D-6", "type": "person", "name": "Nils Nilsen", "phones": ["+4798765432"]},
            "case": _case(6, today, "2450.00", fee=True),
        },
        {
            "idempotency_key": f"demo-{run}/5/reminder",
            "kind": "reminder",
            "debtor": {
                "id": "DEMO-D-5",
                "type": "person",
                "name": "Per Feilsen",
                "phones": ["12345"],
                "emails": ["per@@example"],
            },
            "case": {**_case(5, today, "100.00", fee=False), "kid": "12345678"},
        },
    ]
