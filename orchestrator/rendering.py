"""Render contact messages from the template library.

Templates live at ``templates/messages/<language>/<kind>/<variant>/<file>`` and are rendered in a sandboxed
Jinja environment with ``StrictUndefined``: a template that uses a name the worker does not pass fails loudly
instead of sending a letter with a hole in it. The files a channel needs are fixed by :data:`CHANNEL_FILES`.

Tone variants (``templates/messages/variants.toml``, :mod:`orchestrator.variants`) do not copy whole messages:
a kind's ``neutral`` files import a *tone module* (``<language>/_tone/<variant>.txt``) whose macros fill the
few places where tone differs (a lead sentence, an extra action, a consequence, a sign-off). A variant folder
with its own file for a channel overrides the neutral file for that channel only. A language that lacks a
message falls back to the language the catalogue names for it, and the rendered message records that fallback.

The context a template receives is described by :data:`SAMPLE_CONTEXT` (realistic sample data used by the
tests and the template linter). National id numbers are never part of it (R9).
"""

from __future__ import annotations

import copy
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
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from orchestrator.variants import CONTROL_VARIANT, Catalogue, load_catalogue

__all__ = [
    "CHANNEL_FILES",
    "COST_LABELS",
    "FILTERS",
    "SAMPLE_CONTEXT",
    "RenderError",
    "RenderedMessage",
    "Renderer",
    "TemplateNotFound",
    "account_no",
    "available_templates",
    "content_sha256",
    "cost_label",
    "date_en",
    "date_no",
    "date_short",
    "html_to_text",
    "kid",
    "nok",
    "nok_en",
    "percent",
    "percent_en",
    "sample_context",
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

    def __init__(
        self, template: str, message: str, lineno: int | None = None, inner: str | None = None
    ) -> None:
        # ``inner``: the part, layout or tone module the template imports where it failed; ``lineno`` is then
        # that file's line.
        where = f"{inner or template}:{lineno}" if lineno is not None else (inner or template)
        if inner is not None:
            where = f"{template} (at {where})"
        super().__init__(f"cannot render template {where}: {message}")
        self.template = template
        self.jinja_message = message
        self.lineno = lineno
        self.inner = inner


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


def _defined(value: Any) -> None:
    """A filter given an undefined name fails the way StrictUndefined does: naming the missing name."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()


def _decimal(value: Decimal | str | int | float) -> Decimal:
    _defined(value)
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
    _defined(value)
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
    _defined(value)
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


_MONTHS_EN: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def nok_en(value: Decimal | str | int | float) -> str:
    """English money format for Norwegian kroner: ``Decimal("1250")`` → ``"NOK 1,250.00"``."""
    amount = _decimal(value).quantize(_CENT, rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    return f"{sign}NOK {abs(amount):,.2f}"


def percent_en(value: Decimal | str | int | float) -> str:
    """English percent format: ``Decimal("12.25")`` → ``"12.25%"``, ``Decimal("8.50")`` → ``"8.5%"``."""
    text = f"{_decimal(value):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


def date_en(value: date | str) -> str:
    """Long English date: ``date(2026, 10, 1)`` → ``"1 October 2026"``."""
    day = _date(value)
    return f"{day.day} {_MONTHS_EN[day.month - 1]} {day.year}"


FILTERS: Final[Mapping[str, Callable[..., str]]] = {
    "nok": nok,
    "percent": percent,
    "date_no": date_no,
    "date_short": date_short,
    "account_no": account_no,
    "kid": kid,
    # English templates (templates/messages/en/...): the same values, written the English way.
    "nok_en": nok_en,
    "percent_en": percent_en,
    "date_en": date_en,
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
# The channel a tone module is asked to write for: a digital mailbox carries the letter.
TONE_CHANNEL: Final[Mapping[str, str]] = {"digital_mailbox": "letter"}
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
CATALOGUE_FILE: Final = "variants.toml"
# What a tone module provides (templates/messages/<language>/_tone/<variant>.txt). The control variant needs
# none: it gets this one, where every slot is empty. Macros return plain text; HTML templates escape it.
TONE_MACROS: Final = ("lead", "action", "consequence", "signoff")
TONE_FLAGS: Final = ("simple",)
EMPTY_TONE: Final = "{% set simple = false %}" + "".join(
    f"{{% macro {name}(channel) %}}{{% endmacro %}}" for name in TONE_MACROS
)
_EMPTY_TONE_NAME: Final = "_builtin/tone.txt"
# A tone module is plain text, but an HTML template must get it escaped (a debtor's name inside a macro is
# data). Jinja decides autoescaping per template name, so an HTML part imports the module under this alias.
_HTML_ALIAS: Final = "#as.html"


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith(".html")


class _AliasLoader(jinja2.BaseLoader):
    """Loads ``<name>#as.html`` as ``<name>``, so the same tone module compiles once plain, once escaped."""

    def __init__(self, inner: jinja2.BaseLoader) -> None:
        self.inner = inner

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        return self.inner.get_source(environment, template.removesuffix(_HTML_ALIAS))


_BUILTIN_CATALOGUE: Final = {
    "version": "builtin",
    "languages": {},
    "variants": {
        "neutral": {
            "principle": "neutral",
            "summary": "The plain message, without a tone variant.",
            "evidence": ["The control every variant is measured against."],
            "kinds": "all",
        }
    },
}


@dataclass(frozen=True)
class RenderedMessage:
    template: str  # "nb/inkassovarsel/neutral/email": the language actually used
    subject: str | None
    text: str
    html: str | None
    content_sha256: str
    variant: str = "neutral"
    language: str = ""  # the language the message is written in
    fallback_from: str | None = None  # the language asked for, when the message had to fall back


@dataclass(frozen=True)
class _Resolved:
    language: str
    names: dict[str, str]  # part → template name
    tone: str  # the tone module's template name


def content_sha256(subject: str | None, text: str, html: str | None) -> str:
    """Hex SHA-256 of the canonical serialisation of a message's content (what the contact log stores)."""
    canonical = json.dumps([subject, text, html], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Renderer:
    """Renders ``messages/<language>/<kind>/<variant>/`` templates for one channel at a time."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root if root is not None else templates_root()).resolve()
        self.messages_dir = self.root / "messages"
        catalogue_path = self.messages_dir / CATALOGUE_FILE
        self.catalogue: Catalogue = (
            load_catalogue(catalogue_path)
            if catalogue_path.is_file()
            else Catalogue.model_validate(_BUILTIN_CATALOGUE)
        )
        self.env = SandboxedEnvironment(
            loader=_AliasLoader(
                jinja2.ChoiceLoader(
                    [FileSystemLoader(self.messages_dir), jinja2.DictLoader({_EMPTY_TONE_NAME: EMPTY_TONE})]
                )
            ),
            undefined=StrictUndefined,
            autoescape=_autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters.update(FILTERS)

    def _not_found(
        self, message: str, *, language: str, kind: str, variant: str, channel: str
    ) -> TemplateNotFound:
        return TemplateNotFound(message, language=language, kind=kind, variant=variant, channel=channel)

    def _resolve(self, *, language: str, kind: str, variant: str, channel: str) -> _Resolved:
        """Every template a message needs, in ``language`` or else in its fallback language (all parts from
        one language, never a mix); raises :class:`TemplateNotFound` naming what is missing."""
        where = f"language={language!r} kind={kind!r} variant={variant!r} channel={channel!r}"
        for label, segment in (("language", language), ("kind", kind), ("variant", variant)):
            if not _SEGMENT.match(segment):
                raise self._not_found(
                    f"invalid template {label} {segment!r} (letters, digits, '_' and '-' only) for {where}",
                    language=language,
                    kind=kind,
                    variant=variant,
                    channel=channel,
                )
        required = CHANNEL_FILES.get(channel)
        if required is None:
            raise self._not_found(
                f"unknown channel {channel!r} (known: {', '.join(sorted(CHANNEL_FILES))}) for {where}",
                language=language,
                kind=kind,
                variant=variant,
                channel=channel,
            )
        spec = self.catalogue.variants.get(variant)
        if spec is None:
            raise self._not_found(
                f"unknown variant {variant!r} (known: {', '.join(sorted(self.catalogue.variants))}) "
                f"for {where}",
                language=language,
                kind=kind,
                variant=variant,
                channel=channel,
            )
        if not spec.applies_to(kind):
            raise self._not_found(
                f"variant {variant!r} is not written for kind {kind!r} (see {CATALOGUE_FILE}) for {where}",
                language=language,
                kind=kind,
                variant=variant,
                channel=channel,
            )
        first_missing: list[str] = []
        for lang in self.catalogue.fallback_chain(language):
            missing: list[str] = []
            names: dict[str, str] = {}
            for part, file in [*required.items(), *_OPTIONAL_FILES.get(channel, {}).items()]:
                own, base = f"{lang}/{kind}/{variant}/{file}", f"{lang}/{kind}/{CONTROL_VARIANT}/{file}"
                if (self.messages_dir / own).is_file():
                    names[part] = own
                elif (self.messages_dir / base).is_file():
                    names[part] = base
                elif part in required:
                    missing.append(str(self.messages_dir / base))
            tone = f"{lang}/_tone/{variant}.txt"
            if not (self.messages_dir / tone).is_file():
                if variant != CONTROL_VARIANT:
                    missing.append(str(self.messages_dir / tone))
                tone = _EMPTY_TONE_NAME
            if not missing:
                return _Resolved(language=lang, names=names, tone=tone)
            first_missing = first_missing or missing
        raise self._not_found(
            f"no template for {where}: missing {', '.join(first_missing)}",
            language=language,
            kind=kind,
            variant=variant,
            channel=channel,
        )

    def has_template(self, *, language: str, kind: str, variant: str, channel: str) -> bool:
        try:
            self._resolve(language=language, kind=kind, variant=variant, channel=channel)
        except TemplateNotFound:
            return False
        return True

    def resolved_language(self, *, language: str, kind: str, variant: str, channel: str) -> str:
        """The language a message would be written in (``language`` unless it falls back)."""
        return self._resolve(language=language, kind=kind, variant=variant, channel=channel).language

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        if _autoescape(name):
            context = {**context, "tone_module": f"{context['tone_module']}{_HTML_ALIAS}"}
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(exc.name or name, exc.message or str(exc), exc.lineno) from exc
        except jinja2.TemplateError as exc:
            inner, line = self._where(exc, name)
            raise RenderError(name, exc.message or str(exc), line, inner) from exc
        except (ValueError, TypeError, ArithmeticError) as exc:  # a filter rejected a value
            inner, line = self._where(exc, name)
            raise RenderError(name, f"{type(exc).__name__}: {exc}", line, inner) from exc

    def _where(self, exc: BaseException, name: str) -> tuple[str | None, int | None]:
        """``(file, line)`` where a render-time error was raised: the file is None when it is ``name``
        itself, else the part, layout or tone module it imports."""
        tb = exc.__traceback__
        found: tuple[str, int] | None = None
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if filename.endswith((".html", ".txt")):
                found = (filename, tb.tb_lineno)
            tb = tb.tb_next
        if found is None:
            return None, None
        path, line = found
        try:
            inner = Path(path).resolve().relative_to(self.messages_dir).as_posix()
        except ValueError:
            inner = path
        return (None if inner == name else inner), line

    def render(
        self, *, language: str, kind: str, variant: str, channel: str, context: Mapping[str, Any]
    ) -> RenderedMessage:
        resolved = self._resolve(language=language, kind=kind, variant=variant, channel=channel)
        names = resolved.names
        context = {
            **context,
            "language": resolved.language,
            "variant": variant,
            "channel": TONE_CHANNEL.get(channel, channel),
            "tone_module": resolved.tone,
        }
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
            template=f"{resolved.language}/{kind}/{variant}/{channel}",
            subject=subject,
            text=text,
            html=html,
            content_sha256=content_sha256(subject, text, html),
            variant=variant,
            language=resolved.language,
            fallback_from=language if resolved.language != language else None,
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
    "variables": {
        "contact_phone": "22 12 34 56",
        "contact_email": "kundeservice@nordlys-energi.example",
        # Optional variables some kinds and variants use when upstream passes them (never required):
        "handler_name": "Ingrid Hansen",  # a named handler who signs (personalisation)
        "plan_installments": 6,  # payment_plan_offer / payment_plan_confirmation
        "plan_monthly_amount": "210.00",
        "plan_first_due_date": "2026-11-01",
        "amount_paid": "1250.00",  # payment_confirmation
        "paid_at": "2026-10-10",
        "dispute_received_at": "2026-10-05",  # dispute_acknowledgement
    },
}

# Labels of the costs a claim itemises, per language (message_context and the self-service page use them).
COST_LABELS: Final[Mapping[str, Mapping[str, str]]] = {
    "nb": {
        "reminder_fee": "Purregebyr",
        "varsel_fee": "Gebyr for varsel",
        "invoice_fee": "Fakturagebyr",
        "interest": "Forsinkelsesrenter",
        "collection_fee": "Salær",
    },
    "nn": {
        "reminder_fee": "Purregebyr",
        "varsel_fee": "Gebyr for varsel",
        "invoice_fee": "Fakturagebyr",
        "interest": "Forseinkingsrenter",
        "collection_fee": "Salær",
    },
    "en": {
        "reminder_fee": "Reminder fee",
        "varsel_fee": "Notice fee",
        "invoice_fee": "Invoice fee",
        "interest": "Late-payment interest",
        "collection_fee": "Collection fee",
    },
}


def cost_label(kind: str, language: str) -> str:
    labels = COST_LABELS.get(language) or COST_LABELS["nb"]
    return labels.get(kind) or COST_LABELS["nb"].get(kind) or kind.replace("_", " ").capitalize()


def sample_context(language: str = "nb", kind: str = "inkassovarsel") -> dict[str, Any]:
    """:data:`SAMPLE_CONTEXT` for one language and kind (cost labels in that language)."""
    context = copy.deepcopy(SAMPLE_CONTEXT)
    context["kind"] = kind
    for cost in context["case"]["costs"]:
        cost["label"] = cost_label(cost["kind"], language)
    return context


def available_templates(renderer: Renderer) -> frozenset[tuple[str, str, str, str]]:
    """Every (language, kind, variant, channel) that renders, in its own language or by the catalogue's
    fallback: the policy only picks from these."""
    found: set[tuple[str, str, str, str]] = set()
    root = renderer.messages_dir
    if not root.is_dir():
        return frozenset()
    language_dirs = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")}
    languages = language_dirs | set(renderer.catalogue.languages)
    kinds = {
        p.name
        for lang in language_dirs
        for p in (root / lang).iterdir()
        if p.is_dir() and not p.name.startswith("_")
    }
    for language in sorted(languages):
        for kind in sorted(kinds):
            for variant in renderer.catalogue.variants_for(kind):
                for channel in CHANNEL_FILES:
                    if renderer.has_template(language=language, kind=kind, variant=variant, channel=channel):
                        found.add((language, kind, variant, channel))
    return frozenset(found)
