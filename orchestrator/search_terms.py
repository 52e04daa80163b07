"""The words the console finds a debtor by: name words, phones (E.164) and e-mails, normalised the same way
when stored and when searched, so that an indexed prefix range on ``debtor_search_terms.term`` answers.

Name words are case-folded and stripped of accents other than Norwegian letters (``Bjørn Ås`` matches
``bjørn ås``, ``José`` matches ``jose``); a search word matches the start of a stored word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from orchestrator import identifiers

NAME, PHONE, EMAIL = "n:", "p:", "e:"
_WORD = re.compile(r"[^\W_]+")
_KEEP = set("æøåÆØÅ")


def _fold(word: str) -> str:
    if word.isascii():  # most words: nothing to strip (the intake of a batch folds tens of thousands)
        return word.lower()
    out = []
    for char in unicodedata.normalize("NFC", word):
        if char in _KEEP:
            out.append(char)
            continue
        out.append("".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)))
    return "".join(out).casefold()


def name_words(text: str) -> list[str]:
    """The distinct folded words of ``text``, in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text):
        folded = _fold(word)[:300]
        if folded:
            seen.setdefault(folded, None)
    return list(seen)


def terms_for(name: str, phones: Iterable[str], emails: Iterable[str]) -> list[str]:
    terms = {NAME + word for word in name_words(name)}
    terms.update(PHONE + phone for phone in phones)
    terms.update(EMAIL + email.casefold() for email in emails)
    return sorted(terms)


def terms_for_row(row: dict[str, Any]) -> list[str]:
    points = row.get("contact_points") or {}
    return terms_for(row["name"], points.get("phones") or (), points.get("emails") or ())


def phone_term(raw: str) -> str:
    """The search term of a phone as an operator types it (``912 34 567``, ``+47 912 34 567``);
    raises ``ValueError`` with a message for the form when it is no phone number."""
    return PHONE + identifiers.normalize_phone(raw)


def email_term(raw: str) -> str:
    """An e-mail as typed: a whole address is normalised as at intake; a part (``kari@``) is a prefix."""
    text = raw.strip()
    if not text:
        raise ValueError("the e-mail is empty")
    try:
        return EMAIL + identifiers.normalize_email(text).casefold()
    except ValueError:
        return EMAIL + text.casefold()


def prefix_range(term: str) -> tuple[str, str]:
    """``lo <= value < hi`` holds exactly for the values starting with ``term`` (a B-tree range on any
    backend, unlike LIKE, which SQLite and PostgreSQL's default collations cannot index)."""
    return term, term + "\U0010ffff"


def rows_for(rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"term": t, "debtor_id": r["id"]} for r in rows for t in terms_for_row(r)]
