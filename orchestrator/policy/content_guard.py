"""The legal guard's last look at a rendered message, right before sending: R7 discretion, R9 national ids.

Pure: no I/O, no clock. The worker calls :func:`check_message` with the :class:`RenderedMessage` it is about
to hand to a channel and that channel's :class:`ChannelLimits`; an empty list means the message may go. What a
channel is comes from its limits, never from its name (DESIGN habit 2):

- a *short message* (SMS, chat link) has no subject, no HTML and a ``max_body_chars``: its whole text can show
  in a lock-screen preview;
- a *paper letter* reaches a ``"postal"`` address: what shows through the envelope window is checked;
- a *document channel* (a paper letter, or a digital mailbox reached by ``"national_id"``) carries the letter
  itself to an identified reader, so its body is not searched for national ids (R9 names SMS, e-mail bodies,
  subjects and URLs; not letters);
- everything else (e-mail and any channel we do not know to be one of the above) has its whole body searched.

R7 (inkassoloven § 8, god inkassoskikk): "inkasso" (in any case, also inside words such as "Inkassovarsel" or
"inkassobyrå") may not appear in a subject (e-mail subjects; a digital mailbox's subject shows in its alerts),
anywhere in a short message, or in the text that shows through the envelope window. A letter's or an e-mail's
body may say it (the statutory notice must be called "inkassovarsel").

R9 (personopplysningsloven § 12): no valid fødselsnummer, D-number, H-number or synthetic id (as
:func:`orchestrator.identifiers.validate_national_id` accepts them), written as 11 digits or as
``DDMMYY NNNNN``, in a subject, an SMS, an e-mail body (text or HTML, visible or not), any URL of any message
(``href``/``src`` and other URL attributes, CSS ``url(...)``, bare URLs in the text, percent-encoded or not),
or the envelope window. Eleven-digit numbers that are not valid national ids (most KIDs, account numbers) are
not flagged; account numbers as the templates print them (``1234 56 78903``) never match the pattern.

A violation's ``where`` and ``message`` go to logs and to the contact log: they name the part and the rule and
show a national id only masked (:func:`orchestrator.identifiers.mask_national_id`), never whole.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final, Literal
from urllib.parse import unquote_plus

from channels.base import ChannelLimits
from orchestrator.identifiers import mask_national_id, validate_national_id
from orchestrator.rendering import RenderedMessage, html_to_text

__all__ = [
    "WINDOW_CLASSES",
    "Rule",
    "Violation",
    "ViolationCode",
    "check_message",
    "envelope_window_lines",
    "inkasso_words",
    "masked_national_ids",
]

Rule = Literal["R7", "R9"]
ViolationCode = Literal[
    "inkasso_in_subject",
    "inkasso_in_short_message",
    "inkasso_in_envelope_window",
    "envelope_window_not_found",
    "national_id_in_message",
    "national_id_in_url",
    "national_id_in_envelope_window",
]


@dataclass(frozen=True)
class Violation:
    """One reason a rendered message may not be sent. Safe to log: never holds a whole national id."""

    rule: Rule
    code: ViolationCode
    where: str  # "subject", "text", "html" or "envelope window, line <n>"
    message: str

    def __str__(self) -> str:
        return f"{self.rule} {self.code} at {self.where}: {self.message}"


# ----------------------------------------------------------------------------------------------- R7: inkasso

_INKASSO: Final = "inkasso"


def _fold(text: str) -> str:
    """Compatibility-normalised, case-folded, without invisible format characters (soft hyphen, zero-width
    space/joiner), so "INKASSO", "Ｉｎｋａｓｓｏ" and "Inkas\u00adso" all read "inkasso"."""
    normal = unicodedata.normalize("NFKC", text)
    return "".join(char for char in normal if unicodedata.category(char) != "Cf").casefold()


_WORD: Final = re.compile(r"\w*" + _INKASSO + r"\w*")


def inkasso_words(text: str) -> list[str]:
    """The words of ``text`` containing "inkasso", case-folded, in order, each once: ``["inkassovarsel"]``."""
    found: list[str] = []
    for match in _WORD.finditer(_fold(text)):
        if match.group(0) not in found:
            found.append(match.group(0))
    return found


# ------------------------------------------------------------------------------------------ R9: national ids

# Eleven digits not inside a longer digit run, optionally with one space after the birth date (also the
# no-break spaces an HTML "&nbsp;" or a typographer leaves): the forms identifiers.redact_national_ids knows.
_ID_CANDIDATE: Final = re.compile(r"(?<![0-9])([0-9]{6})[ \u00a0\u202f]?([0-9]{5})(?![0-9])")


def masked_national_ids(text: str) -> list[str]:
    """Every valid national id in ``text``, masked (``"130972*****"``), in order, each once."""
    found: list[str] = []
    for match in _ID_CANDIDATE.finditer(text):
        digits = match.group(1) + match.group(2)
        try:
            validate_national_id(digits)
        except ValueError:
            continue
        masked = mask_national_id(digits)
        if masked not in found:
            found.append(masked)
    return found


# A URL in running text: a scheme (https:, mailto:, ...) or "www.", up to whitespace or a quote/bracket.
_BARE_URL: Final = re.compile(r"(?i)(?:\b[a-z][a-z0-9+.-]*://|\bmailto:|\bwww\.)[^\s<>\"'`]+")
_CSS_URL: Final = re.compile(r"(?i)url\(\s*(['\"]?)(.*?)\1\s*\)")
# Attributes whose value is a URL (or, for srcset, several).
_URL_ATTRIBUTES: Final = frozenset(
    {"href", "src", "srcset", "action", "formaction", "poster", "background", "cite", "data", "xlink:href"}
)


def _url_forms(url: str) -> Iterator[str]:
    """The URL as written and as decoded (percent-encoding, "+" for space), up to three times over."""
    yield url
    for _ in range(3):
        decoded = unquote_plus(url)
        if decoded == url:
            return
        yield decoded
        url = decoded


def _ids_in_urls(urls: Iterable[str]) -> list[str]:
    found: list[str] = []
    for url in urls:
        for form in _url_forms(url):
            for masked in masked_national_ids(form):
                if masked not in found:
                    found.append(masked)
    return found


def _urls_in_text(text: str) -> list[str]:
    """The bare URLs in ``text`` and the targets of CSS ``url(...)``."""
    return [match.group(0) for match in _BARE_URL.finditer(text)] + [
        match.group(2) for match in _CSS_URL.finditer(text)
    ]


class _HtmlParts(HTMLParser):
    """Every string an HTML document carries: ``urls`` (URL attributes, bare URLs, CSS ``url()``) and, one
    by one, ``hidden``: text nodes (title, style, script included), other attribute values, comments."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.hidden: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if not value:
                continue
            if name in _URL_ATTRIBUTES:
                self.urls.extend(value.split(",") if name == "srcset" else [value])
                continue
            self.urls.extend(_urls_in_text(value))
            self.hidden.append(value)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.urls.extend(_urls_in_text(data))
        self.hidden.append(data)

    def handle_comment(self, data: str) -> None:
        self.handle_data(data)


def _html_parts(html: str) -> _HtmlParts:
    parser = _HtmlParts()
    parser.feed(html)
    parser.close()
    return parser


# ------------------------------------------------------------------------------------------ envelope window

# The classes that templates/messages/_letter/base.html puts inside the envelope window: only the recipient's
# name and address (channels/letter.py WINDOW_MM; tests/channels/test_letter.py checks on the PDF that nothing
# else shows through it). The sender block sits top right, above the window, and is not part of it.
WINDOW_CLASSES: Final = frozenset({"recipient"})
_WINDOW_BREAK_TAGS: Final = frozenset(
    {"br", "p", "div", "address", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
)
_VOID_TAGS: Final = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)


class _WindowExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found = False
        self.lines: list[str] = []
        self._current: list[str] = []
        self._tag: str | None = None  # the tag of the window element we are inside
        self._depth = 0  # open elements with that tag name, the window element included

    def _end_line(self) -> None:
        line = " ".join("".join(self._current).split())
        if line:
            self.lines.append(line)
        self._current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._tag is None:
            classes = next((value or "" for name, value in attrs if name == "class"), "").split()
            if tag not in _VOID_TAGS and WINDOW_CLASSES.intersection(classes):
                self.found = True
                self._tag, self._depth = tag, 1
                self._end_line()
            return
        if tag == self._tag:
            self._depth += 1
        if tag in _WINDOW_BREAK_TAGS:
            self._end_line()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._tag is not None and tag in _WINDOW_BREAK_TAGS:
            self._end_line()

    def handle_endtag(self, tag: str) -> None:
        if self._tag is None:
            return
        if tag in _WINDOW_BREAK_TAGS:
            self._end_line()
        if tag == self._tag:
            self._depth -= 1
            if self._depth == 0:
                self._end_line()
                self._tag = None

    def handle_data(self, data: str) -> None:
        if self._tag is not None:
            self._current.append(data)


def envelope_window_lines(html: str) -> list[str] | None:
    """The lines of a letter's HTML that show through the envelope window, or None if it marks no window.

    The window is every element with a class in :data:`WINDOW_CLASSES` (in our templates the recipient's name
    and address lines, one line per ``<br>``), whitespace collapsed, empty lines dropped.
    """
    parser = _WindowExtractor()
    parser.feed(html)
    parser.close()
    return parser.lines if parser.found else None


# ------------------------------------------------------------------------------------------------- the check


def _is_short_message(limits: ChannelLimits) -> bool:
    return not limits.supports_subject and not limits.supports_html and limits.max_body_chars is not None


def _is_paper(limits: ChannelLimits) -> bool:
    return limits.reaches == "postal"


def _is_document_channel(limits: ChannelLimits) -> bool:
    return limits.reaches in ("postal", "national_id")


def _words(words: list[str]) -> str:
    return ", ".join(f'"{word}"' for word in words)


def _r7(code: ViolationCode, where: str, words: list[str], what: str) -> Violation:
    return Violation(
        "R7", code, where, f'{what} contains {_words(words)}: "inkasso" may not show there (discretion, R7)'
    )


def _r9(code: ViolationCode, where: str, masked: str, what: str) -> Violation:
    return Violation(
        "R9", code, where, f"{what} contains a national id ({masked}): national ids never go there (R9)"
    )


def _id_violations(
    where: str, texts: Sequence[str], urls: Sequence[str], *, search_body: bool
) -> list[Violation]:
    """R9 in one part: each id once, as ``national_id_in_url`` if a URL holds it, else (when the part's body
    is searched) as ``national_id_in_message``."""
    in_urls = _ids_in_urls(urls)
    found = [_r9("national_id_in_url", where, masked, f"a URL in the {where}") for masked in in_urls]
    if search_body:
        seen = set(in_urls)
        for text in texts:
            for masked in masked_national_ids(text):
                if masked not in seen:
                    seen.add(masked)
                    found.append(_r9("national_id_in_message", where, masked, f"the {where}"))
    return found


def _text_violations(where: str, text: str, *, search_body: bool) -> list[Violation]:
    return _id_violations(where, [text], _urls_in_text(text), search_body=search_body)


def _html_violations(html: str, *, search_body: bool) -> list[Violation]:
    # The visible text through html_to_text (which joins inline tags: "130972<b>48022</b>"), then every text
    # node, attribute value and comment on its own (hidden spans, alt texts, title, style, script).
    parts = _html_parts(html)
    return _id_violations("html", [html_to_text(html), *parts.hidden], parts.urls, search_body=search_body)


def _window_violations(lines: Sequence[str]) -> list[Violation]:
    found: list[Violation] = []
    for number, line in enumerate(lines, start=1):
        where = f"envelope window, line {number}"
        words = inkasso_words(line)
        if words:
            found.append(_r7("inkasso_in_envelope_window", where, words, f"the {where}"))
        found += [
            _r9("national_id_in_envelope_window", where, masked, f"the {where}")
            for masked in masked_national_ids(line)
        ]
    return found


def check_message(
    rendered: RenderedMessage, limits: ChannelLimits, *, window_text: Sequence[str] | None = None
) -> list[Violation]:
    """Every R7/R9 violation in ``rendered`` as it would go out on a channel with ``limits``; [] to send.

    ``window_text``: the lines that show through the envelope window, one string per line: the recipient
    block and any return address the print service puts there. None (the default): for a paper letter, read
    them from its HTML with :func:`envelope_window_lines` (``envelope_window_not_found`` if none); for
    other channels, check no window. Pass ``[*envelope_window_lines(rendered.html), *return_address_lines]``
    when a return address shows too.
    """
    violations: list[Violation] = []
    search_body = not _is_document_channel(limits)

    if rendered.subject is not None:
        words = inkasso_words(rendered.subject)
        if words:
            violations.append(_r7("inkasso_in_subject", "subject", words, "the subject"))
        # Subjects show in inbox lists and alerts on every channel: always searched (R9 names subjects).
        violations += _text_violations("subject", rendered.subject, search_body=True)

    if _is_short_message(limits):
        words = inkasso_words(rendered.text)
        if words:
            violations.append(_r7("inkasso_in_short_message", "text", words, "the short message"))
    violations += _text_violations("text", rendered.text, search_body=search_body)

    if rendered.html is not None:
        violations += _html_violations(rendered.html, search_body=search_body)

    if window_text is None and _is_paper(limits):
        lines = envelope_window_lines(rendered.html) if rendered.html is not None else None
        if lines is None:
            violations.append(
                Violation(
                    "R7",
                    "envelope_window_not_found",
                    "html",
                    "the letter marks no envelope window (an element with class "
                    f"{' or '.join(sorted(WINDOW_CLASSES))}): what shows through it cannot be checked (R7)",
                )
            )
        else:
            violations += _window_violations(lines)
    elif window_text is not None:
        violations += _window_violations(window_text)

    return violations
