"""Returned letters: the print provider's callback (``POST /webhooks/letters/returns``) and return files
(``orchestrator import-returns FILE``), both made into the same carrier-neutral events.

Every letter carries our reference ``<contact id>.<attempt id>`` (:func:`channels.letter.letter_reference`);
whoever sends it back (the print provider, or Posten's electronic address updating, EA) reports that
reference, a reason and when. One returned letter is ONE event however it arrives:
``CarrierEvent(carrier="letters", event_id="return:<reference>", status="returned", attempt_id=<attempt id>,
provider_message_id=<reference>, reason=<our code>, detail={"reference", "reason_code", "new_address"?})``,
so the same letter reported by the webhook and again in a file is recorded once.

Reasons (:func:`map_reason`): ``returned_unknown_addressee``, ``returned_moved``, ``returned_refused``,
``returned_insufficient_address``, ``returned_deceased``, ``returned_other``. Our own codes, their short forms
(``moved``), English and Norwegian wordings (``flyttet``, ``ukjent adressat``, ``nektet mottatt``, ``død``,
...) are understood; anything else is ``returned_other``. ``detail["reason_code"]`` always keeps the code as
the sender wrote it.

The webhook (:class:`PrintReturnsWebhook`, name ``letters``)
    ``POST /webhooks/letters/returns`` (``/webhooks/letters`` is accepted too; any other sub-path is 404),
    signed with ``X-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` and
    ``ORCH_PRINT_RETURNS_WEBHOOK_SECRET`` (:func:`sign`; no header → 400, wrong → 401). The body is::

        {"returns": [{"reference": "<contact>.<attempt>", "reason": "<code>",
                      "returned_at": "2026-03-02T09:00:00+01:00",  # or a date: 2026-03-02 (Oslo midnight)
                      "new_address": {"name": "...", "lines": ["..."], "postal_code": "0155",
                                      "city": "OSLO", "country": "NO"} | null}]}

    or a return *file* in any registered layout (``?layout=<name>`` or sniffed). A callback is all or
    nothing: one unreadable entry makes it ``MalformedPayload`` (200; the raw body is kept, nothing applied),
    naming every bad entry, so it can be fixed and imported.

Files (:func:`read_returns`)
    A :class:`ReturnsLayout` reads one file format into :class:`ReturnRow` s and :class:`RowError` s (with the
    line number); a bad row is reported and the others are kept. Layouts here: ``print-csv`` (the print
    provider's ``reference;reason;returned_at`` with optional ``new_*`` address columns), ``jsonl`` (one
    ``returns`` entry per line) and ``posten-ea`` (Posten's EA file, read by
    :mod:`orchestrator.registries.posten`). More are added with :func:`register_layout`.

Forwarded letters
    Posten's EA also reports letters it *forwarded* to a new address (``forwarded_new_address``). Those did
    not come back: they become ``status="sent"``, ``reason="forwarded_new_address"``,
    ``event_id="forwarded:<reference>"``, with the new address in ``detail`` (see :func:`return_event`).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from orchestrator.registries import posten
from orchestrator.settings import Settings
from webhooks.events import (
    BadCredentials,
    CarrierEvent,
    MalformedPayload,
    MissingCredentials,
    WebhookError,
)

__all__ = [
    "CARRIER",
    "CSV_COLUMNS",
    "FORWARDED",
    "LAYOUTS",
    "RETURN_REASONS",
    "SIGNATURE_HEADER",
    "JsonLinesLayout",
    "PostenEaLayout",
    "PrintCsvLayout",
    "PrintReturnsWebhook",
    "ReturnRow",
    "ReturnsImport",
    "ReturnsLayout",
    "RowError",
    "UnknownEndpoint",
    "UnknownLayout",
    "canonical_address",
    "map_reason",
    "parse_reference",
    "parse_returned_at",
    "read_returns",
    "register_layout",
    "return_event",
    "row_from_mapping",
    "sign",
]

CARRIER: Final = "letters"
SIGNATURE_HEADER: Final = "X-Signature"
OSLO: Final = ZoneInfo("Europe/Oslo")
_PREFIX: Final = "sha256="
_SNIFF_LINES: Final = 10
# The same shape channels.letter.letter_reference allows for each id.
_ID: Final = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_REFERENCE: Final = re.compile(rf"({_ID})\.({_ID})")
_NORWEGIAN_DATE: Final = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")

RETURN_REASONS: Final = (
    "returned_unknown_addressee",
    "returned_moved",
    "returned_refused",
    "returned_insufficient_address",
    "returned_deceased",
    "returned_other",
)
# Not a return: Posten found a new address and forwarded the letter (EA). Kept apart from the returns.
FORWARDED: Final = "forwarded_new_address"
_FORWARDED_ALIASES: Final = frozenset({"forwarded_new_address", "forwarded", "videresendt", "ny_adresse"})

# Normalised spellings (lower case, æøå folded, runs of anything else as "_", no "returned_" prefix).
_REASON_ALIASES: Final[dict[str, str]] = {
    **{
        alias: "returned_unknown_addressee"
        for alias in (
            "unknown_addressee",
            "addressee_unknown",
            "unknown",
            "unknown_recipient",
            "recipient_unknown",
            "ukjent",
            "ukjent_adressat",
            "adressat_ukjent",
            "ukjent_mottaker",
            "mottaker_ukjent",
            "mottaker_ukjent_pa_adressen",
        )
    },
    **{
        alias: "returned_moved"
        for alias in (
            "moved",
            "addressee_moved",
            "moved_no_forwarding_address",
            "flyttet",
            "flyttet_ukjent_adresse",
            "flyttet_uten_adresse",
            "adressat_flyttet",
        )
    },
    **{
        alias: "returned_refused"
        for alias in ("refused", "not_accepted", "nektet", "nektet_mottatt", "ikke_akseptert", "avslatt")
    },
    **{
        alias: "returned_insufficient_address"
        for alias in (
            "insufficient_address",
            "incomplete_address",
            "insufficient",
            "no_such_address",
            "unknown_address",
            "mangelfull_adresse",
            "ufullstendig_adresse",
            "ukjent_adresse",
            "adressen_finnes_ikke",
            "adresse_finnes_ikke",
        )
    },
    **{alias: "returned_deceased" for alias in ("deceased", "dead", "dod", "avdod", "avdoed")},
    **{alias: "returned_other" for alias in ("other", "annet", "annen")},
}


class UnknownEndpoint(WebhookError):
    """A sub-path of ``/webhooks/letters`` that is not ours: 404."""

    status = 404


class UnknownLayout(ValueError):
    """No layout of that name, or no layout recognises the file."""


# ------------------------------------------------------------------------------------------------ one return


@dataclass(frozen=True)
class ReturnRow:
    """One returned letter as a layout read it. ``reason`` is the sender's own code (mapped later);
    ``new_address`` is canonical (:func:`canonical_address`) or None."""

    line: int
    reference: str
    reason: str
    returned_at: datetime  # aware
    new_address: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RowError:
    """A row a layout could not read: its line number in the file (1-based) and why."""

    line: int
    message: str


def _fold(text: str) -> str:
    text = text.strip().lower()
    for char, plain in (("æ", "ae"), ("ø", "o"), ("å", "a")):
        text = text.replace(char, plain)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "_", text).strip("_")
    return text.removeprefix("returned_")


def map_reason(code: str) -> str:
    """Our reason for a sender's return code; anything not recognised is ``returned_other``."""
    return _REASON_ALIASES.get(_fold(code), "returned_other")


def parse_reference(reference: str) -> tuple[str, str]:
    """``<contact id>.<attempt id>`` → (contact id, attempt id); ``ValueError`` if it is not one of ours."""
    match = _REFERENCE.fullmatch(reference.strip())
    if match is None:
        raise ValueError(f"reference {reference[:80]!r} is not <contact id>.<attempt id>")
    return match.group(1), match.group(2)


def parse_returned_at(text: str) -> datetime:
    """An ISO 8601 time (no offset: Oslo time), an ISO date or ``DD.MM.YYYY`` (Oslo midnight), in UTC."""
    value = text.strip()
    if not value:
        raise ValueError("returned_at is empty")
    norwegian = _NORWEGIAN_DATE.fullmatch(value)
    try:
        if norwegian is not None:
            day, month, year = (int(part) for part in norwegian.groups())
            parsed = datetime.combine(date(year, month, day), time(0), OSLO)
        elif len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), time(0), OSLO)
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"returned_at {value[:40]!r} is not a date or time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=OSLO)
    return parsed.astimezone(UTC)


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    return value.strip()


def canonical_address(
    *,
    name: Any = None,
    lines: Iterable[Any] = (),
    postal_code: Any = None,
    city: Any = None,
    country: Any = None,
) -> dict[str, Any] | None:
    """A new address in one shape whatever the source: ``{"name"?, "lines", "postal_code", "city",
    "country"}`` (empty parts left out, country ``NO`` unless given); None when nothing is given."""
    address: dict[str, Any] = {}
    kept_lines = [_text(line, "new_address.lines[]") for line in lines]
    kept_lines = [line for line in kept_lines if line]
    if kept_lines:
        address["lines"] = kept_lines
    for key, value in (("postal_code", postal_code), ("city", city)):
        text = _text(value, f"new_address.{key}")
        if text:
            address[key] = text
    if not address:
        return None
    name_text = _text(name, "new_address.name")
    if name_text:
        address["name"] = name_text
    address["country"] = (_text(country, "new_address.country") or "NO").upper()
    return address


def _address_from_json(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("new_address must be an object or null")
    lines = value.get("lines", value.get("address_lines"))
    if lines is None:
        lines = []
    if isinstance(lines, str):
        lines = [lines]
    if not isinstance(lines, list):
        raise ValueError("new_address.lines must be a list of strings")
    return canonical_address(
        name=value.get("name"),
        lines=lines,
        postal_code=value.get("postal_code"),
        city=value.get("city"),
        country=value.get("country"),
    )


def row_from_mapping(item: Any, line: int) -> ReturnRow:
    """One ``returns`` entry (webhook or JSON-lines) → a row; ``ValueError`` says what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("an entry must be an object")
    reference = _text(item.get("reference"), "reference")
    if not reference:
        raise ValueError("reference is missing")
    parse_reference(reference)
    reason = _text(item.get("reason"), "reason")
    if not reason:
        raise ValueError("reason is missing")
    returned_at = item.get("returned_at")
    if not isinstance(returned_at, str):
        raise ValueError("returned_at is missing (an ISO 8601 date or time)")
    return ReturnRow(
        line=line,
        reference=reference,
        reason=reason,
        returned_at=parse_returned_at(returned_at),
        new_address=_address_from_json(item.get("new_address")),
    )


def return_event(row: ReturnRow) -> CarrierEvent:
    """The carrier event of one returned letter; the same letter always gives the same event.

    A letter Posten *forwarded* to a new address (reason ``forwarded_new_address``) did not come back: it is
    ``status="sent"`` (still on its way), ``reason="forwarded_new_address"``, ``event_id="forwarded:<ref>"``
    (so a later return of the same letter is still its own event), with the new address in ``detail``.
    """
    _, attempt_id = parse_reference(row.reference)
    detail: dict[str, Any] = {"reference": row.reference, "reason_code": row.reason}
    if row.new_address:
        detail["new_address"] = dict(row.new_address)
    forwarded = _fold(row.reason) in _FORWARDED_ALIASES
    return CarrierEvent(
        carrier=CARRIER,
        event_id=f"{'forwarded' if forwarded else 'return'}:{row.reference}",
        status="sent" if forwarded else "returned",
        at=row.returned_at,
        attempt_id=attempt_id,
        provider_message_id=row.reference,  # what a letter attempt stores as its provider message id
        reason=FORWARDED if forwarded else map_reason(row.reason),
        detail=detail,
    )


# --------------------------------------------------------------------------------------------------- layouts


@runtime_checkable
class ReturnsLayout(Protocol):
    name: str  # what ``--layout`` / ``?layout=`` names

    def sniff(self, first_lines: Sequence[str]) -> bool:
        """True if a file starting with these lines (at most the first ten, newlines stripped) is ours."""
        ...

    def parse(self, path: Path) -> Iterator[ReturnRow | RowError]:
        """Every row of the file: a ReturnRow, or a RowError (line number, why) for one it cannot read."""
        ...


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # Windows exports from Norwegian systems


CSV_COLUMNS: Final = ("reference", "reason", "returned_at")
_CSV_ADDRESS_COLUMNS: Final = (
    "new_name",
    "new_address_line_1",
    "new_address_line_2",
    "new_address_line_3",
    "new_address_line_4",
    "new_postal_code",
    "new_city",
    "new_country",
)


class PrintCsvLayout:
    """The print provider's return file: ``;``-separated, UTF-8 (or Windows-1252), a header line
    ``reference;reason;returned_at`` and optionally any of ``new_name;new_address_line_1..4;new_postal_code;
    new_city;new_country`` (a forwarding address), in any order after the first three."""

    name = "print-csv"

    def sniff(self, first_lines: Sequence[str]) -> bool:
        for line in first_lines:
            if line.strip():
                header = [cell.strip().lower() for cell in line.lstrip("\ufeff").split(";")]
                return tuple(header[:3]) == CSV_COLUMNS
        return False

    def parse(self, path: Path) -> Iterator[ReturnRow | RowError]:
        reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=";")
        header: list[str] | None = None
        last_line = 0
        for record in reader:
            line, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in record]
                unknown = [name for name in header[3:] if name not in _CSV_ADDRESS_COLUMNS]
                if tuple(header[:3]) != CSV_COLUMNS or unknown or len(set(header)) != len(header):
                    yield RowError(
                        line,
                        f"header must be {';'.join(CSV_COLUMNS)} and optional new-address columns "
                        f"({', '.join(_CSV_ADDRESS_COLUMNS)}); got {';'.join(header)}",
                    )
                    return
                continue
            if len(record) != len(header):
                yield RowError(line, f"{len(record)} fields, the header has {len(header)}")
                continue
            cells = {name: cell.strip() for name, cell in zip(header, record, strict=True)}
            try:
                parse_reference(cells["reference"])
                if not cells["reason"]:
                    raise ValueError("reason is empty")
                yield ReturnRow(
                    line=line,
                    reference=cells["reference"],
                    reason=cells["reason"],
                    returned_at=parse_returned_at(cells["returned_at"]),
                    new_address=canonical_address(
                        name=cells.get("new_name"),
                        lines=[cells.get(f"new_address_line_{n}", "") for n in range(1, 5)],
                        postal_code=cells.get("new_postal_code"),
                        city=cells.get("new_city"),
                        country=cells.get("new_country"),
                    ),
                )
            except ValueError as exc:
                yield RowError(line, str(exc))
        if header is None:
            yield RowError(max(last_line, 1), "the file has no header line")


class JsonLinesLayout:
    """One JSON object per line, each a webhook ``returns`` entry (``reference``, ``reason``,
    ``returned_at``, ``new_address``); blank lines are skipped."""

    name = "jsonl"

    def sniff(self, first_lines: Sequence[str]) -> bool:
        for line in first_lines:
            text = line.strip().lstrip("\ufeff")
            if text:
                return text.startswith("{") and '"reference"' in text
        return False

    def parse(self, path: Path) -> Iterator[ReturnRow | RowError]:
        for number, text in enumerate(_read_text(path).splitlines(), start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except ValueError as exc:
                yield RowError(number, f"not JSON: {exc}")
                continue
            try:
                yield row_from_mapping(item, number)
            except ValueError as exc:
                yield RowError(number, str(exc))


class PostenEaLayout:
    """Posten's electronic address updating (EA) file, read by :mod:`orchestrator.registries.posten`
    (``SemicolonLayout`` unless another ``posten.Layout`` is given): ``reference;reason;address_line_1..3;
    postal_code;city;date[;country]``. Posten's reason codes are mapped there (unknown codes are row errors
    there); its date is Oslo midnight here; ``forwarded_new_address`` rows are forwarded letters."""

    name = "posten-ea"

    def __init__(self, layout: posten.Layout | None = None) -> None:
        self.layout: posten.Layout = layout or posten.SemicolonLayout()

    def sniff(self, first_lines: Sequence[str]) -> bool:
        for line in first_lines:
            text = line.strip().lstrip("\ufeff")
            if not text or text.startswith("#"):
                continue
            cells = [cell.strip() for cell in text.split(";")]
            if len(cells) not in (8, 9):
                return False
            header = [cell.lower() for cell in cells[:3]] == ["reference", "reason", "address_line_1"]
            return header or _REFERENCE.fullmatch(cells[0]) is not None
        return False

    def parse(self, path: Path) -> Iterator[ReturnRow | RowError]:
        for item in self.layout.parse(posten.decode_text(path.read_bytes())):
            if isinstance(item, posten.RowError):
                yield RowError(item.line, item.message)
                continue
            address = item.new_address
            yield ReturnRow(
                line=item.line,
                reference=item.reference,
                reason=item.reason,
                returned_at=datetime.combine(item.at, time(0), OSLO).astimezone(UTC),
                new_address=None
                if address is None
                else canonical_address(
                    lines=address.lines,
                    postal_code=address.postal_code,
                    city=address.city,
                    country=address.country,
                ),
            )


# The layouts ``read_returns`` knows, by name, in sniffing order.
LAYOUTS: dict[str, ReturnsLayout] = {}


def register_layout(layout: ReturnsLayout) -> None:
    """Add (or replace) a layout, e.g. Posten's EA file with the codes of another agreement."""
    LAYOUTS[layout.name] = layout


register_layout(PrintCsvLayout())
register_layout(JsonLinesLayout())
register_layout(PostenEaLayout())


@dataclass(frozen=True)
class ReturnsImport:
    """What one file held: its layout, one event per returned letter (a letter listed twice counts once),
    and the rows that could not be read."""

    path: Path
    layout: str
    events: list[CarrierEvent] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def _first_lines(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
        return [line.rstrip("\r\n") for _, line in zip(range(_SNIFF_LINES), handle, strict=False)]


def _layout_for(path: Path, layout: str | None) -> ReturnsLayout:
    if layout is not None:
        try:
            return LAYOUTS[layout]
        except KeyError:
            raise UnknownLayout(f"no returns layout {layout!r} (known: {', '.join(LAYOUTS)})") from None
    first_lines = _first_lines(path)
    for candidate in LAYOUTS.values():
        if candidate.sniff(first_lines):
            return candidate
    raise UnknownLayout(f"{path.name}: no returns layout recognises it (known: {', '.join(LAYOUTS)})")


def read_returns(path: Path | str, layout: str | None = None) -> ReturnsImport:
    """Read a return file in ``layout`` (None: the first registered layout that recognises it).

    Raises ``UnknownLayout``; a row that cannot be read is in ``errors`` with its line number, the others
    are in ``events``.
    """
    path = Path(path)
    chosen = _layout_for(path, layout)
    events: list[CarrierEvent] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    for row in chosen.parse(path):
        if isinstance(row, RowError):
            errors.append(row)
            continue
        try:
            event = return_event(row)
        except ValueError as exc:
            errors.append(RowError(row.line, str(exc)))
            continue
        if event.event_id not in seen:
            seen.add(event.event_id)
            events.append(event)
    return ReturnsImport(path=path, layout=chosen.name, events=events, errors=errors)


# --------------------------------------------------------------------------------------------------- webhook


def sign(body: bytes, secret: str) -> str:
    """The ``X-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return _PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _check_path(url: str) -> None:
    segments = [part for part in urlsplit(url).path.split("/") if part]
    if segments[-2:] == ["webhooks", CARRIER] or segments[-3:] == ["webhooks", CARRIER, "returns"]:
        return
    raise UnknownEndpoint("returned letters go to /webhooks/letters/returns")


def _errors_text(errors: Sequence[RowError], label: str) -> str:
    shown = "; ".join(label.format(error.line) + f": {error.message}" for error in errors[:20])
    more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
    return shown + more


def _json_returns(data: dict[str, Any]) -> list[CarrierEvent]:
    items = data["returns"]
    if not isinstance(items, list):
        raise MalformedPayload('body must be {"returns": [...]}')
    events: list[CarrierEvent] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        try:
            event = return_event(row_from_mapping(item, index))
        except ValueError as exc:
            errors.append(RowError(index, str(exc)))
            continue
        if event.event_id not in seen:
            seen.add(event.event_id)
            events.append(event)
    if errors:
        raise MalformedPayload(_errors_text(errors, "returns[{}]"))
    return events


def _file_returns(body: bytes, layout: str | None) -> list[CarrierEvent]:
    with tempfile.TemporaryDirectory(prefix="returns-") as folder:
        path = Path(folder) / "returns"
        path.write_bytes(body)
        try:
            result = read_returns(path, layout)
        except UnknownLayout as exc:
            raise MalformedPayload(f'neither {{"returns": [...]}} nor a known return file: {exc}') from None
    if result.errors:
        raise MalformedPayload(_errors_text(result.errors, "line {}"))
    return result.events


class PrintReturnsWebhook:
    """``POST /webhooks/letters/returns``: returned letters from the print provider (JSON or a file)."""

    name = CARRIER

    def configured(self, settings: Settings) -> bool:
        secret = settings.print_returns_webhook_secret
        return secret is not None and bool(secret.get_secret_value())

    def verify(self, *, url: str, headers: Mapping[str, str], body: bytes, settings: Settings) -> None:
        _check_path(url)
        given = (_header(headers, SIGNATURE_HEADER) or "").strip()
        if not given:
            raise MissingCredentials(f"no {SIGNATURE_HEADER} header")
        secret = settings.print_returns_webhook_secret
        if secret is None or not secret.get_secret_value():
            raise BadCredentials("no returned-letters webhook secret is configured")
        expected = sign(body, secret.get_secret_value()).encode("ascii")
        if not hmac.compare_digest(expected, given.lower().encode("utf-8", errors="replace")):
            raise BadCredentials(f"{SIGNATURE_HEADER} does not verify")

    def parse(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[CarrierEvent]:
        layouts = parse_qs(urlsplit(url).query).get("layout")
        layout = layouts[0] if layouts else None
        if not body.strip():
            raise MalformedPayload("empty body")
        if layout is None and body.lstrip().startswith(b"{"):
            try:
                data = json.loads(body)
            except (UnicodeDecodeError, ValueError):
                data = None  # perhaps JSON lines: a file
            if isinstance(data, dict) and "returns" in data:
                return _json_returns(data)
        return _file_returns(body, layout)
