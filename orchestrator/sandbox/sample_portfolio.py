"""A small sample portfolio for ``orchestrator demo``: one debtor per situation the policy handles, and the
debtors of the returned-mail and bounce loop with what the registries say about them."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from orchestrator.identifiers import luhn_check_digit
from orchestrator.sandbox.print_provider import DeliveredLetter
from orchestrator.sandbox.registries import (
    RegistriesSandbox,
    address_entry,
    brreg_address,
    enhet,
    person_document,
    ukjent_bosted,
    vegadresse,
)

CREDITOR = {"name": "Eksempel Kreditt AS", "organisation_number": "974760673"}
ACCOUNT = "86011117947"
# A synthetic national id (Tenor-style, month + 80): a Digipost user in the demo's sandbox.
DIGIPOST_USER = "06876312016"

# The loop: whose letter the print provider sandbox returns, whose e-mail the SMTP sandbox bounces, and what
# the registry sandbox then answers. Synthetic national ids (month + 80); organisation numbers valid MOD11.
MOVED_ORG = "930000124"  # Brreg has a new postadresse
BANKRUPT_ORG = "930000132"  # Brreg: konkurs
UNKNOWN_RESIDENCE = "11887040135"  # Folkeregisteret: ukjentBosted
GRADED = "23858140234"  # Folkeregisteret: strengt fortrolig adresse
BOUNCING_EMAIL = "ukjent@example.no"  # the SMTP sandbox's unknown user
# Addresses nobody by that name lives at any more: the print provider sandbox returns letters sent there.
GONE = frozenset(
    {("Gamle Kaigate 9", "5003"), ("Sjøgata 12", "8006"), ("Fjellveien 3", "0870"), ("Parkveien 11", "0350")}
)
LOOP_DEBTORS = {
    "DEMO-D-8": "the letter comes back; Brreg has a new postadresse: the same letter again, to it",
    "DEMO-D-9": "the letter comes back; Brreg says konkurs: the case is held for an operator (R8)",
    "DEMO-D-10": "the letter comes back; Folkeregisteret says ukjentBosted: an address request by SMS",
    "DEMO-D-11": "the letter comes back; Folkeregisteret: graded address, an operator task, not shown (R9)",
    "DEMO-D-12": "the e-mail bounces (5.1.1): the address is marked unusable",
}


def comes_back(letter: DeliveredLetter) -> bool:
    """The print provider sandbox's ``return_if``: letters to an address in :data:`GONE`."""
    return bool(letter.address_lines) and (letter.address_lines[0], letter.postal_code) in GONE


def add_registry_entries(registries: RegistriesSandbox) -> None:
    """What Brreg and Folkeregisteret say about the loop's debtors once their letters come back."""
    bergen = {"municipality": "BERGEN", "municipality_number": "4601"}
    registries.add_organisation(
        enhet(
            MOVED_ORG,
            "HAVBRIS HANDEL AS",
            forretningsadresse=brreg_address(["Strandkaien 2"], "5013", "BERGEN", **bergen),
            postadresse=brreg_address(["Postboks 4410 Nygårdstangen"], "5828", "BERGEN", **bergen),
        )
    )
    registries.add_organisation(
        enhet(
            BANKRUPT_ORG,
            "NORDLYS BYGG AS",
            forretningsadresse=brreg_address(
                ["Sjøgata 12"], "8006", "BODØ", municipality="BODØ", municipality_number="1804"
            ),
            konkurs=True,
        )
    )
    registries.add_person(
        UNKNOWN_RESIDENCE,
        person_document(UNKNOWN_RESIDENCE, bostedsadresse=[address_entry("ukjentBosted", ukjent_bosted())]),
    )
    hidden = vegadresse("Skjermet vei", "1", "0001", "OSLO")  # never stored or shown (R9)
    registries.add_person(
        GRADED,
        person_document(
            GRADED, bostedsadresse=[address_entry("vegadresse", hidden, grading="strengtFortrolig")]
        ),
    )


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
    """Contact requests that exercise e-mail, letter, SMS, a refused preference, one invalid item, and the
    returned-mail and bounce loop.
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
        *_loop_portfolio(today, run),
    ]


def _letter(n: int, today: date, run: str, debtor: dict[str, Any], principal: str) -> dict[str, Any]:
    return {
        "idempotency_key": f"demo-{run}/{n}/inkassovarsel",
        "kind": "inkassovarsel",
        "channel": "letter",
        "debtor": {"id": f"DEMO-D-{n}", **debtor},
        "case": _case(n, today, principal, fee=False),
    }


def _loop_portfolio(today: date, run: str) -> list[dict[str, Any]]:
    """The returned-mail and bounce loop: see :data:`LOOP_DEBTORS`."""
    return [
        _letter(
            8,
            today,
            run,
            {
                "type": "organisation",
                "name": "Havbris Handel AS",
                "organisation_number": MOVED_ORG,
                "addresses": [{"lines": ["Gamle Kaigate 9"], "postal_code": "5003", "city": "BERGEN"}],
            },
            "8900.00",
        ),
        _letter(
            9,
            today,
            run,
            {
                "type": "organisation",
                "name": "Nordlys Bygg AS",
                "organisation_number": BANKRUPT_ORG,
                "addresses": [{"lines": ["Sjøgata 12"], "postal_code": "8006", "city": "BODØ"}],
            },
            "23400.00",
        ),
        _letter(
            10,
            today,
            run,
            {
                "type": "person",
                "name": "Lars Berg",
                "national_id": UNKNOWN_RESIDENCE,
                "addresses": [{"lines": ["Fjellveien 3"], "postal_code": "0870", "city": "OSLO"}],
                "phones": ["+4790000010"],
            },
            "1875.00",
        ),
        _letter(
            11,
            today,
            run,
            {
                "type": "person",
                "name": "Eva Lie",
                "national_id": GRADED,
                "addresses": [{"lines": ["Parkveien 11"], "postal_code": "0350", "city": "OSLO"}],
            },
            "2210.00",
        ),
        {
            "idempotency_key": f"demo-{run}/12/reminder",
            "kind": "reminder",
            "channel": "email",
            "debtor": {"id": "DEMO-D-12", "type": "person", "name": "Jonas Dahl", "emails": [BOUNCING_EMAIL]},
            "case": _case(12, today, "640.00", fee=True),
        },
    ]
