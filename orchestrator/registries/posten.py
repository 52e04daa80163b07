"""Posten's files: electronic address updating (EA) returns, and the postal code register.

Electronic address updating
    A letter carries a barcode and the EA mark; when it cannot be delivered Posten looks the addressee up,
    forwards or returns (or shreds) it according to the service level in the barcode, and sends the sender a
    file of new addresses and return reasons (Bring, "Elektronisk adresseoppdatering (EA)" and "Klargjøring
    av EA sendinger"). The barcode has at most 20 positions: ``2``, the 4-digit EA agreement number, the
    service level (0-3), ``0``, then a KID field of up to 13 positions that identifies the letter
    (:func:`parse_ea_barcode`). The file's layout is agreed with Posten, so the importer is pluggable: a
    :class:`Layout` turns the file's text into rows, :func:`import_address_updates` checks them and keeps the
    good ones, reporting each bad row by its line number.

    :class:`SemicolonLayout` is the one concrete layout (documented on the class).

Postal code register
    ``Postnummerregister`` from Bring: tab separated, no header, Windows-1252 (a UTF-8 edition exists),
    columns ``postnummer``, ``poststed``, ``kommunenummer``, ``kommunenavn``, ``kategori`` (``G`` street
    addresses, ``P`` PO boxes, ``B`` both, ``S`` service codes, ``K`` customer's own code, ``F`` several
    uses).
    :class:`PostalCodeRegister` validates postal codes and gives the city Posten writes for each.

Nothing here logs an address; row errors name the line, the field and, for codes and dates only, the value.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Final, Literal, Protocol, get_args, runtime_checkable

from orchestrator.registries import RegistryAddress

__all__ = [
    "DEFAULT_REASON_CODES",
    "RETURN_REASONS",
    "AddressUpdate",
    "EaBarcode",
    "ImportResult",
    "Layout",
    "PostalCategory",
    "PostalCode",
    "PostalCodeRegister",
    "ReturnReason",
    "RowError",
    "SemicolonLayout",
    "decode_text",
    "import_address_updates",
    "parse_ea_barcode",
]

ReturnReason = Literal[
    "forwarded_new_address",  # Posten found a new address (and forwarded the letter, by service level)
    "returned_moved",  # moved, no new address known
    "returned_unknown_addressee",  # the addressee is unknown at the address
    "returned_refused",  # the addressee refused to accept it
    "returned_insufficient_address",  # the address is incomplete or wrong (no such street, number ...)
    "returned_deceased",  # the addressee has died
    "returned_not_collected",  # not collected from the post office in time
    "returned_other",
]
RETURN_REASONS: Final[tuple[str, ...]] = get_args(ReturnReason)

# The codes of SemicolonLayout's reason column (compared upper-cased, spaces and hyphens read as "_").
# Align them with the codes in the agreement with Posten: pass another mapping to SemicolonLayout.
DEFAULT_REASON_CODES: Final[Mapping[str, ReturnReason]] = {
    "NY": "forwarded_new_address",
    "NY_ADRESSE": "forwarded_new_address",
    "FLYTTET": "returned_moved",
    "UKJENT": "returned_unknown_addressee",
    "ADRESSAT_UKJENT": "returned_unknown_addressee",
    "UKJENT_ADRESSAT": "returned_unknown_addressee",
    "NEKTET": "returned_refused",
    "NEKTET_MOTTATT": "returned_refused",
    "MANGELFULL": "returned_insufficient_address",
    "MANGELFULL_ADRESSE": "returned_insufficient_address",
    "AVDOD": "returned_deceased",
    "AVDØD": "returned_deceased",
    "IKKE_AVHENTET": "returned_not_collected",
    "ANNET": "returned_other",
}

# Our letter reference, as channels.letter.letter_reference writes it: "<contact id>.<attempt id>".
_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_REFERENCE = re.compile(rf"({_ID})\.({_ID})")
_NORWEGIAN_POSTAL_CODE = re.compile(r"[0-9]{4}")
_COUNTRY = re.compile(r"[A-Z]{2}")


def decode_text(data: bytes | str) -> str:
    """Text from a file's bytes: UTF-8 (with or without BOM), else Windows-1252 (Posten's "ANSI" files)."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


# --------------------------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class AddressUpdate:
    """One line of an EA file: which letter, why it came back, the new address if Posten found one, when."""

    reference: str  # "<contact id>.<attempt id>"
    reason: ReturnReason
    new_address: RegistryAddress | None
    at: date
    line: int = field(default=0, compare=False)  # where it was in the file

    @property
    def contact_id(self) -> str:
        return self.reference.split(".", 1)[0]

    @property
    def attempt_id(self) -> str:
        return self.reference.split(".", 1)[1]


@dataclass(frozen=True)
class RowError:
    """A row that was not imported: its line number (1-based) and why."""

    line: int
    message: str


@dataclass
class ImportResult:
    updates: list[AddressUpdate] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@runtime_checkable
class Layout(Protocol):
    """How one agreed file layout reads: every data row becomes an :class:`AddressUpdate` or a
    :class:`RowError`; neither may stop the rest of the file."""

    name: str

    def parse(self, text: str) -> Iterator[AddressUpdate | RowError]: ...


# ----------------------------------------------------------------------------------------- the EA barcode


@dataclass(frozen=True)
class EaBarcode:
    agreement: str  # the 4-digit EA agreement number
    service_level: int  # 0 forward or return, 1 forward or shred, 2 shred (new address on file), 3 shred
    kid: str  # up to 13 positions identifying the letter


def parse_ea_barcode(code: str) -> EaBarcode:
    """Read an EA barcode: ``2``, agreement (4 digits), service level (0-3), ``0``, KID (1-13 positions)."""
    value = code.strip()
    match = re.fullmatch(r"2([0-9]{4})([0-3])0([0-9A-Za-z]{1,13})", value)
    if match is None:
        raise ValueError("not an EA barcode (2 + agreement + service level + 0 + KID, at most 20 positions)")
    return EaBarcode(agreement=match.group(1), service_level=int(match.group(2)), kid=match.group(3))


# ------------------------------------------------------------------------------------- the CSV layout


def _parse_date(raw: str) -> date:
    value = raw.strip()
    for fmt in ("%Y-%m-%d", "%d.%m.%Y", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"date {value[:20]!r} is not YYYY-MM-DD, DD.MM.YYYY or YYYYMMDD")


class SemicolonLayout:
    """A semicolon-separated text file, UTF-8 or Windows-1252, one letter per line, no multi-line fields:

    ====  ==================  =====================================================================
    col   name                content
    ====  ==================  =====================================================================
    1     reference           our letter reference ``<contact id>.<attempt id>`` (what the barcode's
                              KID stands for, resolved on Posten's side or by the print provider)
    2     reason              the return reason code (:data:`DEFAULT_REASON_CODES`, or the mapping given)
    3-5   address_line_1..3   the new address lines (empty when Posten found none)
    6     postal_code         the new address's postal code
    7     city                the new address's city (poststed)
    8     date                when Posten registered it: ``YYYY-MM-DD``, ``DD.MM.YYYY`` or ``YYYYMMDD``
    9     country             optional: ISO 3166-1 alpha-2 of the new address, ``NO`` when empty or absent
    ====  ==================  =====================================================================

    A first row whose first field is ``reference`` is a header and skipped; so are empty lines and lines
    starting with ``#``. The reason ``forwarded_new_address`` needs a new address; any reason may carry one.
    """

    name = "semicolon_v1"
    columns: Final = (
        "reference",
        "reason",
        "address_line_1",
        "address_line_2",
        "address_line_3",
        "postal_code",
        "city",
        "date",
        "country",
    )

    def __init__(self, reason_codes: Mapping[str, ReturnReason] = DEFAULT_REASON_CODES) -> None:
        self.reason_codes = {self._code_key(code): reason for code, reason in reason_codes.items()}

    @staticmethod
    def _code_key(code: str) -> str:
        return re.sub(r"[\s-]+", "_", code.strip()).upper()

    def parse(self, text: str) -> Iterator[AddressUpdate | RowError]:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                fields = next(csv.reader([line], delimiter=";", strict=True))
            except csv.Error as exc:
                yield RowError(number, f"unreadable CSV ({exc})")
                continue
            if number == 1 and fields and fields[0].strip().lower() == "reference":
                continue
            try:
                yield self._row(number, fields)
            except ValueError as exc:
                yield RowError(number, str(exc))

    def _row(self, number: int, fields: list[str]) -> AddressUpdate:
        if len(fields) not in (8, 9):
            raise ValueError(f"expected 8 or 9 fields, got {len(fields)}")
        cells = [value.strip() for value in fields]
        reference, code, line_1, line_2, line_3, postal_code, city, when = cells[:8]
        country = (cells[8] if len(cells) == 9 else "").upper() or "NO"
        if _REFERENCE.fullmatch(reference) is None:
            raise ValueError("reference is not '<contact id>.<attempt id>'")
        reason = self.reason_codes.get(self._code_key(code))
        if reason is None:
            raise ValueError(f"unknown return reason code {code[:32]!r}")
        at = _parse_date(when)
        lines = tuple(value for value in (line_1, line_2, line_3) if value)
        new_address: RegistryAddress | None = None
        if lines or postal_code or city:
            if not lines or not postal_code or not city:
                raise ValueError("the new address needs at least one line, a postal code and a city")
            if _COUNTRY.fullmatch(country) is None:
                raise ValueError(f"country {country[:8]!r} is not a two-letter code")
            if country in ("NO", "SJ") and _NORWEGIAN_POSTAL_CODE.fullmatch(postal_code) is None:
                raise ValueError("a Norwegian postal code has 4 digits")
            new_address = RegistryAddress(lines=lines, postal_code=postal_code, city=city, country=country)
        if reason == "forwarded_new_address" and new_address is None:
            raise ValueError("reason forwarded_new_address without a new address")
        return AddressUpdate(reference=reference, reason=reason, new_address=new_address, at=at, line=number)


def import_address_updates(
    data: bytes | str | Path,
    layout: Layout | None = None,
    *,
    postal_codes: PostalCodeRegister | None = None,
) -> ImportResult:
    """Read an EA file with ``layout`` (default :class:`SemicolonLayout`): the good rows, and each bad row's
    line and reason. With ``postal_codes``, a Norwegian new address must have a known postal code and gets
    the register's city."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    result = ImportResult()
    for item in (layout or SemicolonLayout()).parse(decode_text(raw)):
        if isinstance(item, RowError):
            result.errors.append(item)
            continue
        if postal_codes is not None and item.new_address is not None:
            try:
                item = AddressUpdate(
                    reference=item.reference,
                    reason=item.reason,
                    new_address=postal_codes.normalise(item.new_address),
                    at=item.at,
                    line=item.line,
                )
            except ValueError as exc:
                result.errors.append(RowError(item.line, str(exc)))
                continue
        result.updates.append(item)
    return result


# ------------------------------------------------------------------------------- the postal code register

PostalCategory = Literal["G", "P", "B", "S", "K", "F"]
_CATEGORIES: Final[Mapping[str, PostalCategory]] = {
    "G": "G",
    "P": "P",
    "B": "B",
    "S": "S",
    "K": "K",
    "F": "F",
}


@dataclass(frozen=True)
class PostalCode:
    code: str
    city: str  # poststed, as Posten writes it (upper case)
    municipality_number: str
    municipality: str
    category: PostalCategory

    @property
    def street_addresses(self) -> bool:
        """Letters to street addresses use this code (G, B; F is used for several things)."""
        return self.category in ("G", "B", "F")

    @property
    def po_boxes(self) -> bool:
        return self.category in ("P", "B", "F")


class PostalCodeRegister:
    """Bring's postal code register, in memory: validation and the canonical city of each postal code."""

    def __init__(self, entries: Iterable[PostalCode] = (), errors: Iterable[RowError] = ()) -> None:
        self._entries = {entry.code: entry for entry in entries}
        self.errors = list(errors)

    @classmethod
    def parse(cls, data: bytes | str) -> PostalCodeRegister:
        """Read the tab-separated register; malformed lines are kept in ``errors``, the rest is used."""
        entries: list[PostalCode] = []
        errors: list[RowError] = []
        for number, line in enumerate(decode_text(data).splitlines(), start=1):
            if not line.strip():
                continue
            fields = [value.strip() for value in line.split("\t")]
            if len(fields) != 5:
                errors.append(RowError(number, f"expected 5 tab-separated fields, got {len(fields)}"))
                continue
            code, city, municipality_number, municipality, category = fields
            if _NORWEGIAN_POSTAL_CODE.fullmatch(code) is None:
                if number == 1 and not code.isdigit():  # a header, in files that have one
                    continue
                errors.append(RowError(number, f"postal code {code[:8]!r} is not 4 digits"))
                continue
            kind = _CATEGORIES.get(category.upper())
            if kind is None or not city:
                errors.append(RowError(number, f"unknown category {category[:4]!r} or empty city"))
                continue
            entries.append(
                PostalCode(
                    code=code,
                    city=city,
                    municipality_number=municipality_number,
                    municipality=municipality,
                    category=kind,
                )
            )
        return cls(entries, errors)

    @classmethod
    def load(cls, path: Path) -> PostalCodeRegister:
        return cls.parse(path.read_bytes())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code.strip() in self._entries

    def get(self, code: str) -> PostalCode | None:
        return self._entries.get(code.strip())

    def city(self, code: str) -> str | None:
        entry = self.get(code)
        return entry.city if entry is not None else None

    def matches(self, code: str, city: str) -> bool:
        """Whether ``city`` is the register's city for ``code`` (case and spacing ignored)."""
        known = self.city(code)
        return known is not None and " ".join(known.split()).casefold() == " ".join(city.split()).casefold()

    def normalise(self, address: RegistryAddress) -> RegistryAddress:
        """``address`` with the register's city for its postal code. Foreign addresses are returned as they
        are; a Norwegian one with an unknown postal code raises ``ValueError``."""
        if address.country not in ("NO", "SJ"):
            return address
        entry = self.get(address.postal_code)
        if entry is None:
            raise ValueError(f"postal code {address.postal_code[:8]!r} is not in the postal code register")
        if entry.city == address.city:
            return address
        return RegistryAddress(
            lines=address.lines, postal_code=entry.code, city=entry.city, country=address.country
        )
