"""The context a message template sees, built from the stored debtor, case and decision.

Only what a message may show goes in: never the national id (R9).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from orchestrator.models import Case, Contact, Debtor
from orchestrator.policy.decide import Decision
from orchestrator.rendering import cost_label


def _address_lines(debtor: Debtor, decision: Decision) -> list[str]:
    if decision.address and decision.channel == "letter":
        return decision.address.split("\n")
    addresses = debtor.contact_points.get("addresses") or []
    if not addresses:
        return []
    first = addresses[0]
    lines = [*first.get("lines", []), f"{first.get('postal_code', '')} {first.get('city', '')}".strip()]
    return [line for line in lines if line]


def build_context(
    *,
    contact: Contact,
    debtor: Debtor,
    case: Case,
    decision: Decision,
    send_date: date,
    self_service_url: str | None = None,
) -> dict[str, Any]:
    details = case.details
    costs = [
        {
            "kind": cost["kind"],
            "label": cost_label(cost["kind"], contact.language),
            "amount": Decimal(cost["amount"]),
        }
        for cost in details.get("costs", [])
    ]
    principal = Decimal(details["principal"])
    interest = details.get("interest")
    return {
        "debtor": {
            "name": debtor.name,
            "first_name": debtor.name.split()[0] if debtor.type == "person" else debtor.name,
            "type": debtor.type,
        },
        "creditor": {
            "name": details["creditor"]["name"],
            "organisation_number": details["creditor"].get("organisation_number"),
        },
        "case": {
            "id": case.id,
            "reference": details["reference"],
            "principal": principal,
            "costs": costs,
            "interest": (
                {
                    "rate_percent": Decimal(interest["rate_percent"]),
                    "from": date.fromisoformat(interest["from"]),
                }
                if interest
                else None
            ),
            "due_date": date.fromisoformat(details["due_date"]),
            "kid": details.get("kid"),
            "account_number": details.get("account_number"),
            "total": principal + sum((c["amount"] for c in costs), Decimal("0")),
        },
        "kind": contact.kind,
        "deadline": decision.deadline,
        "send_date": send_date,
        "recipient": {"name": debtor.name, "address_lines": _address_lines(debtor, decision)},
        "contact_reference": contact.id,
        "self_service_url": self_service_url,
        "variables": dict(contact.variables),
    }
