"""How long an SMS is: GSM-7 or UCS-2, how many units and how many segments (3GPP TS 23.038 / 23.040).

A text is sent as GSM-7 when every character is in the GSM 03.38 default alphabet (its basic set, which holds
æ ø å Æ Ø Å, or its extension table). Otherwise the whole text goes as UCS-2 (UTF-16 code units on the wire).

- GSM-7: ``units`` are septets. An extension-table character (``^ { } \\ [ ~ ] | €`` and form feed) costs two
  (the escape plus the character). One segment carries 160 septets; a concatenated message carries 153 per
  segment (the user data header takes the rest), and an escape pair is never split across two segments.
- UCS-2: ``units`` are UTF-16 code units, so a character outside the Basic Multilingual Plane (most emoji)
  costs two. One segment carries 70; a concatenated message carries 67 per segment, and a surrogate pair is
  never split across two segments.

The empty text is one GSM-7 segment of 0 units: an empty SMS is still one message on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_MULTI_SEGMENT_SEPTETS",
    "GSM7_SINGLE_SEGMENT_SEPTETS",
    "UCS2_MULTI_SEGMENT_UNITS",
    "UCS2_SINGLE_SEGMENT_UNITS",
    "Segment",
    "SmsEncoding",
    "analyse",
    "is_gsm7",
    "split",
]

# The GSM 03.38 default alphabet, basic character set, in code point order 0x00-0x7F. 0x1B (the escape to
# the extension table) is not a character of its own and is left out.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00-0x0F
    "Δ_ΦΓΛΩΠΨΣΘΞ" + "ÆæßÉ"  # 0x10-0x1F (0x1B is the escape)
    " !\"#¤%&'()*+,-./"  # 0x20-0x2F
    "0123456789:;<=>?"  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"  # 0x40-0x5F
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"  # 0x60-0x7F
)

# The extension table: each is sent as ESC + character, two septets.
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE_SEGMENT_SEPTETS = 160
GSM7_MULTI_SEGMENT_SEPTETS = 153
UCS2_SINGLE_SEGMENT_UNITS = 70
UCS2_MULTI_SEGMENT_UNITS = 67


@dataclass(frozen=True)
class SmsEncoding:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM 03.38 basic set or its extension table."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


@dataclass(frozen=True)
class Segment:
    """One message on the wire of a (concatenated) SMS: its text and its units."""

    text: str
    units: int


def _plan(text: str) -> tuple[Literal["GSM-7", "UCS-2"], list[int], int, int]:
    """The encoding, each character's cost in units, and the capacity of one and of each of many segments."""
    if is_gsm7(text):
        costs = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return "GSM-7", costs, GSM7_SINGLE_SEGMENT_SEPTETS, GSM7_MULTI_SEGMENT_SEPTETS
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return "UCS-2", costs, UCS2_SINGLE_SEGMENT_UNITS, UCS2_MULTI_SEGMENT_UNITS


def split(text: str) -> tuple[Literal["GSM-7", "UCS-2"], list[Segment]]:
    """The encoding of ``text`` and the segments a carrier sends it in, split where :func:`analyse` counts
    (an escape pair or a surrogate pair is never split): what the operator console shows as billed."""
    encoding, costs, single, per_segment = _plan(text)
    if sum(costs) <= single:
        return encoding, [Segment(text, sum(costs))]
    parts: list[Segment] = []
    start = used = 0
    for index, cost in enumerate(costs):
        if used + cost > per_segment:
            parts.append(Segment(text[start:index], used))
            start, used = index, 0
        used += cost
    parts.append(Segment(text[start:], used))
    return encoding, parts


def _segments(costs: list[int], single: int, per_segment: int) -> int:
    """How many segments a splitter fills with these indivisible pieces (characters, by their cost)."""
    total = sum(costs)
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > per_segment:  # the piece does not fit: it starts the next segment whole
            segments += 1
            used = 0
        used += cost
    return segments


def analyse(text: str) -> SmsEncoding:
    """The encoding, length in units and number of segments of ``text`` as an SMS."""
    encoding, costs, single, per_segment = _plan(text)
    return SmsEncoding(encoding, sum(costs), _segments(costs, single, per_segment))
