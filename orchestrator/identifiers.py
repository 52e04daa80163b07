"""Validation and normalisation of Norwegian identifiers and contact points.

Every function here is pure (no I/O, no clock) and raises :class:`ValueError` with a short English
message that is safe to return to API clients and to log: messages never contain a national identity
number. Where a message echoes the caller's input (phone numbers, e-mail addresses) the echo is passed
through :func:`redact_national_ids` and truncated first.

National identity numbers (fødselsnummer and relatives) follow Skatteetaten's rules, including the
control-digit change for numbers issued from 1 January 2032, when the first control digit may leave a
remainder of 0, 1, 2 or 3
(https://skatteetaten.github.io/folkeregisteret-api-dokumentasjon/nytt-fodselsnummer-fra-2032/).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import NumberParseException, PhoneNumberType

__all__ = [
    "is_mobile",
    "luhn_check_digit",
    "mask_national_id",
    "mod11_check_digit",
    "normalize_email",
    "normalize_phone",
    "redact_national_ids",
    "validate_account_number",
    "validate_kid",
    "validate_national_id",
    "validate_organisation_number",
    "validate_postal_code",
]

# --- Check-digit helpers ---

_DIGITS = re.compile(r"[0-9]+")


def _require_digits(payload: str) -> None:
    if not _DIGITS.fullmatch(payload):
        raise ValueError("check-digit payload must be a non-empty string of digits 0-9")


def _mod11_remainder(digits: str, weights: Sequence[int]) -> int:
    """Weighted digit sum modulo 11; ``weights[i]`` multiplies ``digits[i]``."""
    _require_digits(digits)
    if len(weights) != len(digits):
        raise ValueError(f"expected {len(digits)} weights for {len(digits)} digits, got {len(weights)}")
    return sum(int(digit) * weight for digit, weight in zip(digits, weights, strict=True)) % 11


def mod11_check_digit(payload: str, weights: Sequence[int]) -> int | None:
    """The MOD11 check digit of ``payload``, or ``None`` when the remainder makes it 10 (no valid digit).

    ``weights`` are aligned with ``payload`` left to right and must have the same length. The check digit is
    ``11 - (sum % 11)``, with 11 written as 0.
    """
    check = (11 - _mod11_remainder(payload, weights)) % 11
    return None if check == 10 else check


def luhn_check_digit(payload: str) -> int:
    """The MOD10 (Luhn) check digit of ``payload``: every second digit doubled, from the rightmost."""
    _require_digits(payload)
    total = 0
    for position, char in enumerate(reversed(payload)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return (10 - total % 10) % 10


def _strip_spaces(raw: str) -> str:
    return "".join(raw.split())


def _safe_echo(raw: str, limit: int = 64) -> str:
    """``raw`` fit to appear in an error message: national ids masked, long input truncated."""
    text = redact_national_ids(raw)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


# --- Phone numbers and e-mail ---

_NORWAY_COUNTRY_CODE = 47
# Norwegian 58x and 59x numbers are 12-digit machine-to-machine numbers, never reachable by SMS or voice.
_NORWAY_M2M_PREFIXES = ("58", "59")


def normalize_phone(raw: str, region: str = "NO") -> str:
    """Parse ``raw`` (national numbers read as ``region``) and return it in E.164, e.g. ``+4791234567``."""
    try:
        number = phonenumbers.parse(raw.strip(), region.upper())
    except NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise ValueError(f"{_safe_echo(raw)} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_mobile(e164: str) -> bool:
    """Whether ``e164`` is a valid mobile number (one that can receive SMS).

    Norwegian numbers count only when phonenumbers types them MOBILE (8 digits starting 4 or 9);
    landlines and the 58x/59x machine-to-machine series never do. Elsewhere FIXED_LINE_OR_MOBILE also
    counts, since some numbering plans (e.g. North America) cannot tell the two apart. Unparseable or
    invalid input gives ``False``.
    """
    try:
        number = phonenumbers.parse(e164.strip(), None)
    except NumberParseException:
        return False
    if not phonenumbers.is_valid_number(number):
        return False
    number_type = phonenumbers.number_type(number)
    if number.country_code == _NORWAY_COUNTRY_CODE:
        national = phonenumbers.national_significant_number(number)
        if national.startswith(_NORWAY_M2M_PREFIXES):
            return False
        return number_type == PhoneNumberType.MOBILE
    return number_type in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)


def normalize_email(raw: str) -> str:
    """Check the syntax of an e-mail address (no DNS lookups) and return its normalised form."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        reason = redact_national_ids(str(exc))
        raise ValueError(f"{_safe_echo(raw)} is not a valid email address: {reason}") from None
    return result.normalized


# --- National identity numbers ---

_NATIONAL_ID = re.compile(r"[0-9]{11}")
_K1_WEIGHTS = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
# From 2032 the weighted sum over the first ten digits (k1 with weight 1) may leave any of these
# remainders; before 2032 only 0 was issued.
_K1_ACCEPTED_REMAINDERS = frozenset({0, 1, 2, 3})

_NATIONAL_ID_LENGTH_ERROR = "national id must be 11 digits"
_NATIONAL_ID_DATE_ERROR = "national id has an invalid date"
_NATIONAL_ID_CONTROL_ERROR = "national id has invalid control digits"


def _classic_birth_year(yy: int, individual: int) -> int | None:
    """Birth year from the pre-2032 individual-number table, or ``None`` for a combination never issued.

    Individual numbers 000-499: 1900-1999; 500-749 with year 55-99: 1855-1899; 500-999 with year 00-39:
    2000-2039; 900-999 with year 40-99: 1940-1999.
    """
    if individual <= 499:
        return 1900 + yy
    if individual <= 749 and yy >= 55:
        return 1800 + yy
    if yy <= 39:
        return 2000 + yy
    if individual >= 900:
        return 1900 + yy
    return None


def _is_real_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _has_valid_birth_date(digits: str, k1_remainder: int) -> bool:
    """Whether the first six digits of an 11-digit id encode a real date.

    D-numbers add 40 to the day; H-numbers and NAV's synthetic ids add 40 to the month, Skatteetaten's
    Tenor synthetic ids add 80 (both may be combined with a D-number day). Classic numbers (k1 remainder
    0) take their century from the individual-number table. Numbers issued from 2032 no longer encode the
    century, so when the k1 remainder is 1-3 or the table has no entry for the combination, a date that
    is real in 1900+yy or 2000+yy passes.
    """
    day, month, yy, individual = int(digits[0:2]), int(digits[2:4]), int(digits[4:6]), int(digits[6:9])
    if day > 40:
        day -= 40
    if 81 <= month <= 92:
        month -= 80
    elif 41 <= month <= 52:
        month -= 40
    year = _classic_birth_year(yy, individual) if k1_remainder == 0 else None
    candidates = (year,) if year is not None else (1900 + yy, 2000 + yy)
    return any(_is_real_date(candidate, month, day) for candidate in candidates)


def _national_id_error(digits: str) -> str | None:
    """The reason ``digits`` (already stripped of spaces) is not a valid national id, or ``None``."""
    if not _NATIONAL_ID.fullmatch(digits):
        return _NATIONAL_ID_LENGTH_ERROR
    k1_remainder = _mod11_remainder(digits[:10], (*_K1_WEIGHTS, 1))
    if not _has_valid_birth_date(digits, k1_remainder):
        return _NATIONAL_ID_DATE_ERROR
    if k1_remainder not in _K1_ACCEPTED_REMAINDERS:
        return _NATIONAL_ID_CONTROL_ERROR
    if mod11_check_digit(digits[:10], _K2_WEIGHTS) != int(digits[10]):
        return _NATIONAL_ID_CONTROL_ERROR
    return None


def validate_national_id(raw: str) -> str:
    """Validate a fødselsnummer, D-number, H-number or synthetic test id; return its 11 digits.

    Spaces are ignored. Both the classic control digits and the scheme used from 2032 are accepted.
    """
    digits = _strip_spaces(raw)
    error = _national_id_error(digits)
    if error is not None:
        raise ValueError(error)
    return digits


def mask_national_id(value: str) -> str:
    """``"06076312345"`` -> ``"060763*****"``; anything but exactly 11 digits becomes all asterisks."""
    if _NATIONAL_ID.fullmatch(value):
        return value[:6] + "*****"
    return "*" * len(value)


_NATIONAL_ID_IN_TEXT = re.compile(r"(?<![0-9])([0-9]{6})( ?)([0-9]{5})(?![0-9])")


def _redact_match(match: re.Match[str]) -> str:
    head, space, tail = match.group(1, 2, 3)
    digits = head + tail
    if _national_id_error(digits) is not None:
        return match.group(0)
    masked = mask_national_id(digits)
    return masked[:6] + space + masked[6:]


def redact_national_ids(text: str) -> str:
    """Mask every valid national id in free text, written as 11 digits or as ``DDMMYY NNNNN``.

    Only runs of exactly 11 digits (not part of a longer digit run) that pass :func:`validate_national_id` are
    masked, so order numbers and the like stay readable.
    """
    return _NATIONAL_ID_IN_TEXT.sub(_redact_match, text)


# --- Organisation numbers, KID and bank accounts ---

_ORGANISATION_NUMBER = re.compile(r"[0-9]{9}")
_ORGANISATION_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)


def validate_organisation_number(raw: str) -> str:
    """Validate a Norwegian organisation number (9 digits, spaces allowed); return its digits."""
    digits = _strip_spaces(raw)
    if not _ORGANISATION_NUMBER.fullmatch(digits):
        raise ValueError("organisation number must be 9 digits")
    if mod11_check_digit(digits[:8], _ORGANISATION_WEIGHTS) != int(digits[8]):
        raise ValueError("organisation number has an invalid control digit (MOD11)")
    return digits


_KID = re.compile(r"[0-9]{1,24}[0-9-]")
_KID_MOD11_WEIGHT_CYCLE = (2, 3, 4, 5, 6, 7)


def _kid_mod11_weights(length: int) -> list[int]:
    """Weights 2, 3, 4, 5, 6, 7, 2, ... from the right, returned aligned left to right."""
    return [_KID_MOD11_WEIGHT_CYCLE[(length - 1 - index) % 6] for index in range(length)]


def validate_kid(raw: str) -> str:
    """Validate a KID (customer identification on Norwegian payments); return it without spaces.

    A KID is 2-25 characters: digits, except that the last (the check digit) may be ``-``, which MOD11
    uses for a remainder of 10. It is valid when the check digit is either the MOD10 (Luhn) or the MOD11
    check digit.
    """
    kid = _strip_spaces(raw)
    if not _KID.fullmatch(kid):
        raise ValueError("KID must be 2-25 digits (the last may be '-')")
    payload, check = kid[:-1], kid[-1]
    mod11 = mod11_check_digit(payload, _kid_mod11_weights(len(payload)))
    if check == "-":
        if mod11 is not None:
            raise ValueError("KID check digit '-' is only valid when the MOD11 remainder gives 10")
        return kid
    if int(check) in (luhn_check_digit(payload), mod11):
        return kid
    raise ValueError("KID check digit matches neither MOD10 nor MOD11")


_ACCOUNT_NUMBER = re.compile(r"[0-9]{11}")
_ACCOUNT_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def validate_account_number(raw: str) -> str:
    """Validate a Norwegian bank account number (``1234.56.78903``, spaces or dots allowed).

    Returns the 11 digits.
    """
    digits = _strip_spaces(raw).replace(".", "")
    if not _ACCOUNT_NUMBER.fullmatch(digits):
        raise ValueError("account number must be 11 digits")
    if mod11_check_digit(digits[:10], _ACCOUNT_WEIGHTS) != int(digits[10]):
        raise ValueError("account number has an invalid control digit (MOD11)")
    return digits


# --- Postal codes ---

_COUNTRY_CODE = re.compile(r"[A-Z]{2}")
# Svalbard and Jan Mayen use Norwegian postal codes.
_NORWEGIAN_POSTAL_COUNTRIES = frozenset({"NO", "SJ"})
_NORWEGIAN_POSTAL_CODE = re.compile(r"[0-9]{4}")
_FOREIGN_POSTAL_CODE = re.compile(r"[A-Z0-9][A-Z0-9 -]{0,11}")


def validate_postal_code(code: str, country: str = "NO") -> str:
    """Validate a postal code for ``country`` (ISO 3166-1 alpha-2); return it trimmed and upper-cased.

    Norway (and Svalbard) use exactly 4 digits; other countries get a loose check: 1-12 letters, digits,
    spaces or hyphens, starting with a letter or digit.
    """
    country_code = country.strip().upper()
    if not _COUNTRY_CODE.fullmatch(country_code):
        raise ValueError("country must be a two-letter ISO 3166-1 code")
    value = code.strip().upper()
    if country_code in _NORWEGIAN_POSTAL_COUNTRIES:
        if not _NORWEGIAN_POSTAL_CODE.fullmatch(value):
            raise ValueError(f"postal code must be exactly 4 digits for {country_code}")
        return value
    if not _FOREIGN_POSTAL_CODE.fullmatch(value):
        raise ValueError("postal code must be 1-12 letters, digits, spaces or hyphens")
    return value
