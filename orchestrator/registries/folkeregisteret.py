"""Folkeregisteret (Skatteetaten): the postal address of a person, by national identity number.

``GET {base}/{package path}/v1/personer/{fnr}?part=postadresse&part=bostedsadresse`` with
``Authorization: Bearer <Maskinporten token>`` (Skatteetaten, folkeregisteret-api-dokumentasjon, "Oppslag",
"Endepunkter", "Dataminimering"). Production base ``https://folkeregisteret.api.skatteetaten.no``. The path
of the rights package differs between packages: ``folkeregisteret/offentlig-med-hjemmel/api`` for the public
package with legal basis, ``folkeregisteret/api/<package>`` for the others (``finans``, ``privat``,
``privatutenhjemmel``, ``offentligutenhjemmel``); see :func:`person_path`.

The person document holds lists of entries; each carries ``erGjeldende`` (current), ``adressegradering``
(``ugradert`` | ``fortrolig`` | ``strengtFortrolig`` | ``klientadresse``; absent means ``ugradert``; some
examples write it in capitals) and one of:

- ``postadresse``: ``postadresseIFrittFormat {adresselinje[], poststed {postnummer, poststedsnavn}}``
  (older examples: ``postnummer`` beside a plain ``poststed``), ``postboksadresse {postbokseier, postboks,
  poststed}`` or ``vegadresse``;
- ``bostedsadresse``: ``vegadresse {adressenavn, adressenummer {husnummer, husbokstav}, poststed,
  kommunenummer, coAdressenavn, adressetilleggsnavn}``, ``matrikkeladresse {..., poststed,
  adressetilleggsnavn}`` or ``ukjentBosted {bostedskommune}``.

Rules (R9): only ``erGjeldende: true`` entries count. If ANY current address is graded (anything but
``ugradert``), the result is ``graded=True`` with no address at all: a graded address is never returned,
stored, logged or shown. Otherwise the current ``postadresse`` wins, then the current ``bostedsadresse``.

The national id appears only in the request path the API requires. It is never logged, never put in an
exception, and the path is never logged either (this module logs the status and flags only). Errors from
aiohttp (whose messages can carry the URL) are replaced, not chained.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

import aiohttp

from orchestrator.identifiers import validate_national_id
from orchestrator.registries import (
    PermanentRegistryError,
    RegistryAddress,
    RegistryConfigurationError,
    RegistryError,
    TransientRegistryError,
    error_for_status,
)
from orchestrator.registries.maskinporten import MaskinportenClient

__all__ = [
    "DEFAULT_BASE_URL",
    "PersonAddressResult",
    "address_from_person",
    "lookup_person",
    "person_path",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://folkeregisteret.api.skatteetaten.no"
PARTS: Final = ("postadresse", "bostedsadresse")

# Every part of the person document whose entries can carry an address grading.
_ADDRESS_PARTS: Final = (
    "postadresse",
    "bostedsadresse",
    "oppholdsadresse",
    "deltBosted",
    "postadresseIUtlandet",
    "preferertKontaktadresse",
)
_UNGRADED: Final = "ugradert"

Source = Literal["postadresse", "bostedsadresse"]


@dataclass(frozen=True)
class PersonAddressResult:
    """What Folkeregisteret gives us to write to. Never holds the national id, and never a graded address."""

    found: bool
    address: RegistryAddress | None = None
    graded: bool = False  # a current address is fortrolig / strengtFortrolig / klientadresse: address is None
    unknown_residence: bool = False  # a current bostedsadresse is ukjentBosted
    source: Source | None = None  # which part the address came from


def person_path(package: str) -> str:
    """The path below the base URL up to ``/v1`` for a rights package.

    A value containing ``/`` is taken as the path itself (for packages this table does not know yet).
    """
    cleaned = package.strip().strip("/")
    if not cleaned:
        raise ValueError("the Folkeregisteret rights package is empty")
    if "/" in cleaned:
        return cleaned
    if cleaned == "offentlig-med-hjemmel":
        return "folkeregisteret/offentlig-med-hjemmel/api"
    return f"folkeregisteret/api/{cleaned}"


# ----------------------------------------------------------------------------------------------- parsing


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _current(document: Mapping[str, Any], part: str) -> list[Mapping[str, Any]]:
    entries = document.get(part)
    if isinstance(entries, Mapping):  # a single entry where a list was expected
        entries = [entries]
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, Mapping) and entry.get("erGjeldende") is True]


def _grading(entry: Mapping[str, Any], key: str = "adressegradering") -> str:
    raw = entry.get(key)
    if raw is None:
        return _UNGRADED
    # "ugradert", "UGRADERT", "strengtFortrolig", "STRENGT_FORTROLIG" all compare alike.
    return str(raw).replace("_", "").replace(" ", "").lower()


def _is_graded(document: Mapping[str, Any]) -> bool:
    for part in _ADDRESS_PARTS:
        if any(_grading(entry) != _UNGRADED for entry in _current(document, part)):
            return True
    # The person-level protection marker (adressebeskyttelse.graderingsnivaa), when the package includes it.
    protections = _current(document, "adressebeskyttelse")
    return any(_grading(entry, "graderingsnivaa") != _UNGRADED for entry in protections)


def _poststed(container: Mapping[str, Any]) -> tuple[str, str]:
    """(postal code, city) from ``poststed {postnummer, poststedsnavn}`` or ``postnummer`` + ``poststed``."""
    place = container.get("poststed")
    if isinstance(place, Mapping):
        return _text(place.get("postnummer")) or "", _text(place.get("poststedsnavn")) or ""
    return _text(container.get("postnummer")) or "", _text(place) or ""


def _co_lines(container: Mapping[str, Any]) -> list[str]:
    lines = []
    co = _text(container.get("coAdressenavn"))
    if co is not None:
        lines.append(co if co.lower().startswith("c/o") else f"c/o {co}")
    extra = _text(container.get("adressetilleggsnavn"))
    if extra is not None:
        lines.append(extra)
    return lines


def _street_line(vegadresse: Mapping[str, Any]) -> str | None:
    name = _text(vegadresse.get("adressenavn"))
    if name is None:
        return None
    number = vegadresse.get("adressenummer")
    if isinstance(number, Mapping):
        house = _text(str(number.get("husnummer") or "")) or ""
        letter = _text(number.get("husbokstav")) or ""
    else:  # flattened variants
        house = _text(str(vegadresse.get("husnummer") or "")) or ""
        letter = _text(vegadresse.get("husbokstav")) or ""
    return f"{name} {house}{letter}".strip()


def _vegadresse(vegadresse: Mapping[str, Any]) -> RegistryAddress | None:
    street = _street_line(vegadresse)
    postal_code, city = _poststed(vegadresse)
    if street is None or not postal_code:
        return None
    return RegistryAddress(lines=(*_co_lines(vegadresse), street), postal_code=postal_code, city=city)


def _fritt_format(address: Mapping[str, Any]) -> RegistryAddress | None:
    raw_lines = address.get("adresselinje")
    lines = [line.strip() for line in (raw_lines if isinstance(raw_lines, list) else []) if _text(line)]
    postal_code, city = _poststed(address)
    if not lines or not postal_code:
        return None
    country = (_text(address.get("landkode")) or "NO").upper()
    if country == "NOR":  # Folkeregisteret also writes three-letter country codes
        country = "NO"
    return RegistryAddress(lines=tuple(lines), postal_code=postal_code, city=city, country=country)


def _postboks(address: Mapping[str, Any]) -> RegistryAddress | None:
    box = _text(address.get("postboks"))
    postal_code, city = _poststed(address)
    if box is None or not postal_code:
        return None
    owner = _text(address.get("postbokseier"))
    box_line = box if box[:1].isalpha() else f"Postboks {box}"
    lines = (owner, box_line) if owner else (box_line,)
    return RegistryAddress(lines=lines, postal_code=postal_code, city=city)


def _matrikkeladresse(address: Mapping[str, Any]) -> RegistryAddress | None:
    """A cadastral address is written with its additional name (``adressetilleggsnavn``); without one there
    is nothing to put above the postal code, and it is not used."""
    postal_code, city = _poststed(address)
    lines = _co_lines(address)
    if not lines or not postal_code:
        return None
    return RegistryAddress(lines=tuple(lines), postal_code=postal_code, city=city)


def _postal_address(entry: Mapping[str, Any]) -> RegistryAddress | None:
    for key, parse in (
        ("postadresseIFrittFormat", _fritt_format),
        ("postboksadresse", _postboks),
        ("vegadresse", _vegadresse),
    ):
        value = entry.get(key)
        if isinstance(value, Mapping):
            address = parse(value)
            if address is not None:
                return address
    return None


def _residence_address(entry: Mapping[str, Any]) -> RegistryAddress | None:
    for key, parse in (("vegadresse", _vegadresse), ("matrikkeladresse", _matrikkeladresse)):
        value = entry.get(key)
        if isinstance(value, Mapping):
            address = parse(value)
            if address is not None:
                return address
    return None


def _first(entries: Iterable[Mapping[str, Any]], parse: Any) -> RegistryAddress | None:
    for entry in entries:
        address: RegistryAddress | None = parse(entry)
        if address is not None:
            return address
    return None


def address_from_person(document: Mapping[str, Any]) -> PersonAddressResult:
    """The address to write to, from a Folkeregisteret person document (rules in the module docstring)."""
    residences = _current(document, "bostedsadresse")
    unknown = any(entry.get("ukjentBosted") is not None for entry in residences)
    if _is_graded(document):
        return PersonAddressResult(found=True, graded=True, unknown_residence=unknown)
    postal = _first(_current(document, "postadresse"), _postal_address)
    if postal is not None:
        return PersonAddressResult(
            found=True, address=postal, unknown_residence=unknown, source="postadresse"
        )
    residence = _first(residences, _residence_address)
    if residence is not None:
        return PersonAddressResult(
            found=True, address=residence, unknown_residence=unknown, source="bostedsadresse"
        )
    return PersonAddressResult(found=True, unknown_residence=unknown)


# ---------------------------------------------------------------------------------------------- the call


async def _get(
    tokens: MaskinportenClient, url: str, params: Sequence[tuple[str, str]], timeout_s: float
) -> tuple[int, Any, str | None, str]:
    """One authorised GET: (status, JSON body or None, Retry-After, the token used)."""
    token = await tokens.access_token()
    async with tokens.session.get(
        url,
        params=list(params),
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as response:
        try:
            body: Any = await response.json(content_type=None)
        except (ValueError, aiohttp.ContentTypeError):
            body = None
        return response.status, body, response.headers.get("Retry-After"), token


async def lookup_person(
    tokens: MaskinportenClient,
    base_url: str,
    package: str,
    fnr: str,
    *,
    timeout_s: float = 10.0,
) -> PersonAddressResult:
    """Look up the current postal address of the person ``fnr`` (a fødselsnummer or D-nummer).

    The HTTP session is the Maskinporten client's (``tokens.session``). Returns ``found=False`` on 404. A 401
    drops the cached token and tries once more with a new one. Raises :class:`PermanentRegistryError` for an
    invalid national id (without asking the register) or a 4xx, :class:`RegistryConfigurationError` when the
    token or the rights package is refused, :class:`TransientRegistryError` for 5xx, 429, timeouts and
    network failures. No message or exception cause contains the national id.
    """
    try:
        digits: str | None = validate_national_id(fnr)
    except ValueError:
        digits = None
    if digits is None:  # raised outside the handler: nothing of the input travels with the error
        raise PermanentRegistryError("invalid_national_id", "the national id is not valid")
    url = f"{base_url.rstrip('/')}/{person_path(package)}/v1/personer/{quote(digits, safe='')}"
    params = [("part", part) for part in PARTS]
    error: RegistryError | None = None
    try:
        status, body, retry_after, token = await _get(tokens, url, params, timeout_s)
        if status == 401:
            tokens.invalidate(token)
            status, body, retry_after, token = await _get(tokens, url, params, timeout_s)
    except TimeoutError:
        error = TransientRegistryError(
            "folkeregisteret_timeout", f"Folkeregisteret did not answer within {timeout_s} s"
        )
    except aiohttp.ClientError as exc:
        # aiohttp's messages can carry the URL, which carries the national id: replace, never chain.
        error = TransientRegistryError(
            "folkeregisteret_unreachable", f"Folkeregisteret unreachable ({type(exc).__name__})"
        )
    if error is not None:
        raise error from None
    log.debug("folkeregisteret lookup: HTTP %s", status)
    if status == 404:
        return PersonAddressResult(found=False)
    if status == 200:
        if not isinstance(body, Mapping):
            raise TransientRegistryError(
                "folkeregisteret_malformed_response", "Folkeregisteret answered 200 without a person document"
            )
        result = address_from_person(body)
        log.debug(
            "folkeregisteret address: source=%s graded=%s unknown_residence=%s",
            result.source,
            result.graded,
            result.unknown_residence,
        )
        return result
    if status in (401, 403):
        raise RegistryConfigurationError(
            "folkeregisteret_unauthorised",
            f"Folkeregisteret refused the token or the rights package (HTTP {status})",
        )
    raise error_for_status("folkeregisteret", status, retry_after)
