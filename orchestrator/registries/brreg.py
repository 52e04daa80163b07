"""Enhetsregisteret (Brønnøysundregistrene): who an organisation is, where its letters go, and whether it may
still be collected from (R8).

``GET {base}/enheter/{orgnr}`` on the open API (no authentication; production base
``https://data.brreg.no/enhetsregisteret/api``) answers, per the published OpenAPI description
(``brreg/openAPI`` ``specs/enhetsregisteret.yml``, schema ``Enhet``):

``200``
    ``{"organisasjonsnummer", "navn", "organisasjonsform": {"kode", "beskrivelse"}, "postadresse",
    "forretningsadresse", "konkurs", "underAvvikling", "underTvangsavviklingEllerTvangsopplosning", ...}``
    where each address is ``{"adresse": [lines], "postnummer", "poststed", "kommune", "kommunenummer",
    "land", "landkode"}`` (``postadresse`` only when it differs from the business address).
``404``
    No such organisation.
``410``
    The organisation has been removed (deleted). The body still names it:
    ``{"organisasjonsnummer", "navn", "organisasjonsform", "slettedato": "YYYY-MM-DD", "_links"}``.
``400``
    A malformed organisation number.

Letters go to ``postadresse`` when there is one, else to ``forretningsadresse``. A company that is bankrupt
(``konkurs``) or being wound up (``underAvvikling``, ``underTvangsavviklingEllerTvangsopplosning``) must not
be collected from in the ordinary way: :attr:`OrganisationResult.stop_collection` flags it for a person (R8).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import aiohttp

from orchestrator.identifiers import validate_organisation_number
from orchestrator.registries import (
    PermanentRegistryError,
    RegistryAddress,
    TransientRegistryError,
    error_for_status,
)

__all__ = ["DEFAULT_BASE_URL", "OrganisationResult", "lookup_organisation", "parse_organisation"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://data.brreg.no/enhetsregisteret/api"
_ACCEPT = "application/json"


@dataclass(frozen=True)
class OrganisationResult:
    """What Enhetsregisteret says about one organisation number."""

    organisation_number: str
    found: bool  # False: 404, no such organisation
    deleted: bool = False  # 410 (or a record carrying ``slettedato``)
    name: str | None = None
    address: RegistryAddress | None = None  # postadresse, else forretningsadresse
    bankrupt: bool = False  # konkurs
    winding_up: bool = False  # underAvvikling or underTvangsavviklingEllerTvangsopplosning
    deleted_on: date | None = None  # slettedato
    organisation_form: str | None = None  # organisasjonsform.kode, e.g. "AS", "ENK"

    @property
    def stop_collection(self) -> bool:
        """Ordinary collection must stop and a person must look at the case (R8): bankrupt, being wound up,
        or removed from the register."""
        return self.bankrupt or self.winding_up or self.deleted


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _address(raw: Any) -> RegistryAddress | None:
    """An Enhetsregisteret ``Adresse`` object; None when it carries nothing a letter could use."""
    if not isinstance(raw, Mapping):
        return None
    lines_raw = raw.get("adresse")
    lines = tuple(
        line.strip() for line in (lines_raw if isinstance(lines_raw, list) else []) if _text(line) is not None
    )
    postal_code = _text(raw.get("postnummer")) or ""
    city = _text(raw.get("poststed")) or ""
    if not lines and not postal_code and not city:
        return None
    country = (_text(raw.get("landkode")) or "NO").upper()
    return RegistryAddress(lines=lines, postal_code=postal_code, city=city, country=country)


def _date(value: Any) -> date | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def parse_organisation(
    organisation_number: str, body: Mapping[str, Any], *, deleted: bool
) -> OrganisationResult:
    """An :class:`OrganisationResult` from an ``Enhet`` body (200) or a removed unit's body (410)."""
    deleted_on = _date(body.get("slettedato"))
    form = body.get("organisasjonsform")
    return OrganisationResult(
        organisation_number=organisation_number,
        found=True,
        deleted=deleted or deleted_on is not None,
        name=_text(body.get("navn")),
        address=_address(body.get("postadresse")) or _address(body.get("forretningsadresse")),
        bankrupt=body.get("konkurs") is True,
        winding_up=body.get("underAvvikling") is True
        or body.get("underTvangsavviklingEllerTvangsopplosning") is True,
        deleted_on=deleted_on,
        organisation_form=_text(form.get("kode")) if isinstance(form, Mapping) else None,
    )


async def _json_body(response: aiohttp.ClientResponse) -> Mapping[str, Any] | None:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return None
    return body if isinstance(body, Mapping) else None


async def lookup_organisation(
    session: aiohttp.ClientSession,
    base_url: str,
    orgnr: str,
    *,
    timeout_s: float = 10.0,
) -> OrganisationResult:
    """Look ``orgnr`` up in Enhetsregisteret (``base_url`` like :data:`DEFAULT_BASE_URL`).

    Returns ``found=False`` for an unknown number (404) and ``deleted=True`` for a removed one (410). Raises
    :class:`PermanentRegistryError` for a number that fails the MOD11 check (without asking the register) or
    a 400; :class:`TransientRegistryError` for 5xx, 429, timeouts and connection failures.
    """
    try:
        number = validate_organisation_number(orgnr)
    except ValueError as exc:
        raise PermanentRegistryError("invalid_organisation_number", str(exc)) from exc
    url = f"{base_url.rstrip('/')}/enheter/{number}"
    try:
        async with session.get(
            url, headers={"Accept": _ACCEPT}, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            status = response.status
            log.debug("brreg lookup: HTTP %s", status)
            if status == 404:
                return OrganisationResult(organisation_number=number, found=False)
            if status in (200, 410):
                body = await _json_body(response)
                if body is None:
                    if status == 410:
                        return OrganisationResult(organisation_number=number, found=True, deleted=True)
                    raise TransientRegistryError(
                        "brreg_malformed_response", "brreg answered 200 without JSON"
                    )
                return parse_organisation(number, body, deleted=status == 410)
            raise error_for_status("brreg", status, response.headers.get("Retry-After"))
    except TimeoutError as exc:
        raise TransientRegistryError("brreg_timeout", f"brreg did not answer within {timeout_s} s") from exc
    except aiohttp.ClientError as exc:
        raise TransientRegistryError(
            "brreg_unreachable", f"brreg unreachable ({type(exc).__name__})"
        ) from exc
