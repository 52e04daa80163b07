"""Render contact messages from the template library.

Templates live at ``templates/messages/<language>/<kind>/<variant>/<file>`` and are rendered in a sandboxed
Jinja environment with ``StrictUndefined``: a template that uses a name the worker does not pass fails loudly
instead of sending a letter with a hole in it. The files a channel needs are fixed by :data:`CHANNEL_FILES`.

The context a template receives is described by :data:`SAMPLE_CONTEXT` (realistic sample data used by the
tests and the template linter). National id numbers are never part of it (R9).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Final

import jinja2
from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

__all__ = [
    "CHANNEL_FILES",
    "FILTERS",
    "SAMPLE_CONTEXT",
    "RenderError",
    "RenderedMessage",
    "Renderer",
    "TemplateNotFound",
    "account_no",
    "available_templates",
    "content_sha256",
    "date_no",
    "date_short",
    "html_to_text",
    "kid",
    "nok",
    "percent",
    "templates_root",
]


def templates_root() -> Path:
    """The ``templates/`` folder: the packaged copy in an installed wheel, else the source checkout's."""
    packaged = Path(__file__).resolve().parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


# --------------------------------------------------------------------------------------------------- errors


class TemplateNotFound(LookupError):
    """No template (or not every file a channel needs) for a language/kind/variant/channel."""

    def __init__(self, message: str, *, language: str, kind: str, variant: str, channel: str) -> None:
        super().__init__(message)
        self.language = language
        self.kind = kind
        self.variant = variant
        self.channel = channel


class RenderError(ValueError):
    """A template failed to render (undefined variable, syntax error, bad value for a filter)."""

    def __init__(self, template: str, message: str, lineno: int | None = None) -> None:
        where = f"{template}:{lineno}" if lineno is not None else template
        super().__init__(f"cannot render template {where}: {message}")
        self.template = template
        self.jinja_message = message
        self.lineno = lineno


# --------------------------------------------------------------------------------------------------- filters

_MONTHS_NB: Final = (
    "januar",
    "februar",
    "mars",
    "april",
    "mai",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "desember",
)
_CENT: Final = Decimal("0.01")


def _decimal(value: Decimal | str | int | float) -> Decimal:
    if isinstance(value, bool):
        raise TypeError(f"not an amount: {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip().replace(" ", "").replace("\u00a0", "").replace(",", "."))
        except InvalidOperation:
            raise ValueError(f"not an amount: {value!r}") from None
    else:
        raise TypeError(f"not an amount: {value!r}")
    if not result.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    return result


def _group_thousands(digits: str) -> str:
    groups: list[str] = []
    while len(digits) > 3:
        groups.insert(0, digits[-3:])
        digits = digits[:-3]
    groups.insert(0, digits)
    return " ".join(groups)


def nok(value: Decimal | str | int | float) -> str:
    """Norwegian money format: ``Decimal("1250")`` → ``"1 250,00 kr"`` (space thousands, comma decimals)."""
    amount = _decimal(value).quantize(_CENT, rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    whole, _, cents = f"{abs(amount):.2f}".partition(".")
    return f"{sign}{_group_thousands(whole)},{cents} kr"


def percent(value: Decimal | str | int | float) -> str:
    """Norwegian percent format: ``Decimal("12.25")`` → ``"12,25 %"``, ``Decimal("8.50")`` → ``"8,5 %"``."""
    text = f"{_decimal(value):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text.replace('.', ',')} %"


def _date(value: date | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip()).date()
        except ValueError:
            raise ValueError(f"not an ISO date: {value!r}") from None
    raise TypeError(f"not a date: {value!r}")


def date_no(value: date | str) -> str:
    """Long Norwegian date: ``date(2026, 10, 1)`` → ``"1. oktober 2026"``."""
    day = _date(value)
    return f"{day.day}. {_MONTHS_NB[day.month - 1]} {day.year}"


def date_short(value: date | str) -> str:
    """Short Norwegian date: ``date(2026, 10, 1)`` → ``"01.10.2026"``."""
    day = _date(value)
    return f"{day.day:02d}.{day.month:02d}.{day.year:04d}"


def _digits(value: str | int) -> str:
    return re.sub(r"[\s.\u00a0]", "", str(value))


def account_no(value: str | int) -> str:
    """Norwegian account number in the usual groups: ``"12345678903"`` → ``"1234 56 78903"``.

    Anything that is not 11 digits (after removing spaces and dots) is returned as given, stripped.
    """
    digits = _digits(value)
    if len(digits) == 11 and digits.isdigit():
        return f"{digits[:4]} {digits[4:6]} {digits[6:]}"
    return str(value).strip()


def kid(value: str | int) -> str:
    """A KID payment reference is quoted exactly as its digits, never grouped."""
    return _digits(value)


FILTERS: Final[Mapping[str, Callable[..., str]]] = {
    "nok": nok,
    "percent": percent,
    "date_no": date_no,
    "date_short": date_short,
    "account_no": account_no,
    "kid": kid,
}


# --------------------------------------------------------------------------------------------- html → text

_LINE_TAGS: Final = frozenset({"address", "dd", "dt", "footer", "header", "hr", "li", "tr"})
_PARAGRAPH_TAGS: Final = frozenset(
    {
        "article",
        "blockquote",
        "div",
        "dl",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "main",
        "ol",
        "p",
        "section",
        "table",
        "ul",
    }
)
_SKIP_TAGS: Final = frozenset({"head", "script", "style", "template", "title"})
_CELL_TAGS: Final = frozenset({"td", "th"})


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML document; line breaks come from the markup, not the source."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._pending_break = 0  # newlines owed before the next text: 1 = line, 2 = paragraph
        self._cells_in_row = 0

    def _break(self, newlines: int) -> None:
        self._pending_break = max(self._pending_break, newlines)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "br":
            self._break(1)
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)
            if tag == "li":
                self._text("- ")
            elif tag == "tr":
                self._cells_in_row = 0
        elif tag in _CELL_TAGS:
            if self._cells_in_row:
                self._text(": ")
            self._cells_in_row += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIP_TAGS:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._text(re.sub(r"[ \t\r\n\f]+", " ", data))

    def _text(self, text: str) -> None:
        if self._pending_break:
            text = text.lstrip()
            if not text:
                return
            if self.parts:
                self.parts.append("\n" * self._pending_break)
            self._pending_break = 0
        self.parts.append(text)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).split("\n"))
        return "\n".join(lines).strip()


def html_to_text(html: str) -> str:
    """Visible text of an HTML document: blank lines between blocks, table cells as ``label: value``."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


# --------------------------------------------------------------------------------------------------- renderer

CHANNEL_FILES: Final[Mapping[str, Mapping[str, str]]] = {
    # channel → part → file name (inside messages/<language>/<kind>/<variant>/)
    "email": {"subject": "email.subject.txt", "text": "email.txt", "html": "email.html"},
    "letter": {"html": "letter.html"},
    "sms": {"text": "sms.txt"},
    "chat_link": {"text": "chat_link.txt"},
    # A digital mailbox carries the letter (as PDF); its subject shows in the mailbox's alerts, so it is the
    # e-mail subject, which never reads "inkasso" (R7).
    "digital_mailbox": {"subject": "email.subject.txt", "html": "letter.html"},
}
_OPTIONAL_FILES: Final[Mapping[str, Mapping[str, str]]] = {"letter": {"text": "letter.txt"}}
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class RenderedMessage:
    template: str  # "nb/inkassovarsel/neutral/email"
    subject: str | None
    text: str
    html: str | None
    content_sha256: str


def content_sha256(subject: str | None, text: str, html: str | None) -> str:
    """Hex SHA-256 of the canonical serialisation of a message's content (what the contact log stores)."""
    canonical = json.dumps([subject, text, html], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Renderer:
    """Renders ``messages/<language>/<kind>/<variant>/`` templates for one channel at a time."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root if root is not None else templates_root()).resolve()
        self.messages_dir = self.root / "messages"
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(self.messages_dir),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters.update(FILTERS)

    def _folder(self, *, language: str, kind: str, variant: str, channel: str) -> tuple[str, Path]:
        for label, segment in (("language", language), ("kind", kind), ("variant", variant)):
            if not _SEGMENT.match(segment):
                raise TemplateNotFound(
                    f"invalid template {label} {segment!r} (letters, digits, '_' and '-' only) "
                    f"for language={language!r} kind={kind!r} variant={variant!r} channel={channel!r}",
                    language=language,
                    kind=kind,
                    variant=variant,
                    channel=channel,
                )
        return f"{language}/{kind}/{variant}", self.messages_dir / language / kind / variant

    def _files(self, *, language: str, kind: str, variant: str, channel: str) -> tuple[str, dict[str, str]]:
        """Template names per part; raises :class:`TemplateNotFound` if a required file is missing."""
        prefix, folder = self._folder(language=language, kind=kind, variant=variant, channel=channel)
        required = CHANNEL_FILES.get(channel)
        if required is None:
            raise TemplateNotFound(
                f"unknown channel {channel!r} (known: {', '.join(sorted(CHANNEL_FILES))}) "
                f"for language={language!r} kind={kind!r} variant={variant!r}",
                language=language,
                kind=kind,
                variant=variant,
                channel=channel,
            )
        missing = [folder / name for name in required.values() if not (folder / name).is_file()]
        if missing:
            raise TemplateNotFound(
                f"no template for language={language!r} kind={kind!r} variant={variant!r} "
                f"channel={channel!r}: missing {', '.join(str(path) for path in missing)}",
                language=language,
                kind=kind,
                variant=variant,
                channel=channel,
            )
        names = {part: f"{prefix}/{name}" for part, name in required.items()}
        for part, name in _OPTIONAL_FILES.get(channel, {}).items():
            if (folder / name).is_file():
                names[part] = f"{prefix}/{name}"
        return prefix, names

    def has_template(self, *, language: str, kind: str, variant: str, channel: str) -> bool:
        try:
            self._files(language=language, kind=kind, variant=variant, channel=channel)
        except TemplateNotFound:
            return False
        return True

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(exc.name or name, exc.message or str(exc), exc.lineno) from exc
        except jinja2.TemplateError as exc:
            raise RenderError(name, exc.message or str(exc)) from exc
        except (ValueError, TypeError, ArithmeticError) as exc:  # a filter rejected a value
            raise RenderError(name, f"{type(exc).__name__}: {exc}") from exc

    def render(
        self, *, language: str, kind: str, variant: str, channel: str, context: Mapping[str, Any]
    ) -> RenderedMessage:
        prefix, names = self._files(language=language, kind=kind, variant=variant, channel=channel)
        # Which parts a channel has is data (CHANNEL_FILES): a subject line, an HTML document, a text. A
        # channel with only a text (SMS, chat link) gets it on one line; a text-less channel gets one from
        # its HTML, so every message has a plain-text form for the log.
        subject = " ".join(self._render(names["subject"], context).split()) if "subject" in names else None
        html = self._render(names["html"], context).strip() + "\n" if "html" in names else None
        if "text" not in names:
            text = html_to_text(html or "") + "\n"
        elif set(names) == {"text"}:
            text = " ".join(self._render(names["text"], context).split())
        else:
            text = self._render(names["text"], context).strip() + "\n"
        return RenderedMessage(
            template=f"{prefix}/{channel}",
            subject=subject,
            text=text,
            html=html,
            content_sha256=content_sha256(subject, text, html),
        )


# --------------------------------------------------------------------------------------------- sample data

# The context the worker passes, with realistic values: an invoice due 15 September, the notice sent on
# 1 October (>= 14 days after due, so the 35 kr fee is lawful, R10) with a deadline 15 days later (R1).
# Optional values (creditor.organisation_number, case.interest, case.kid, case.account_number, deadline,
# self_service_url) may be None; recipient.address_lines may be []. Never a national id number (R9).
SAMPLE_CONTEXT: dict[str, Any] = {
    "debtor": {"name": "Kari Nordmann", "first_name": "Kari", "type": "person"},
    "creditor": {"name": "Nordlys Energi AS", "organisation_number": "923456783"},
    "case": {
        "id": "c7f3a2d1-5b8e-4c2a-9f61-0d2e8b4a7c13",
        "reference": "100234",
        "principal": Decimal("1215.00"),
        "costs": [{"kind": "reminder_fee", "label": "Purregebyr", "amount": Decimal("35.00")}],
        "interest": {"rate_percent": Decimal("12.25"), "from": date(2026, 9, 15)},
        "due_date": date(2026, 9, 15),
        "kid": "1002340014",
        "account_number": "15031234562",
        "total": Decimal("1250.00"),
    },
    "kind": "inkassovarsel",
    "deadline": date(2026, 10, 16),
    "send_date": date(2026, 10, 1),
    "recipient": {"name": "Kari Nordmann", "address_lines": ["Storgata 1", "0155 OSLO"]},
    "contact_reference": "01JB8Z6Q4M2XK7T9RDW3HV5NCE",  # the contact's id (a ULID)
    "self_service_url": "https://betal.example.no/s/7Q4M2X",
    "variables": {"contact_phone": "22 12 34 56", "contact_email": "kundeservice@nordlys-energi.example"},
}


def available_templates(renderer: Renderer) -> frozenset[tuple[str, str, str, str]]:
    """Every (language, kind, variant, channel) that has all its files: the policy only picks from these."""
    found: set[tuple[str, str, str, str]] = set()
    root = renderer.messages_dir
    if not root.is_dir():
        return frozenset()
    for variant_dir in root.glob("*/*/*"):
        if not variant_dir.is_dir():
            continue
        language, kind, variant = variant_dir.relative_to(root).parts
        for channel in CHANNEL_FILES:
            if renderer.has_template(language=language, kind=kind, variant=variant, channel=channel):
                found.add((language, kind, variant, channel))
    return frozenset(found)
