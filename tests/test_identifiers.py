"""Tests for orchestrator.identifiers.

Valid national ids come from Skatteetaten's 2032 documentation (02013299997, 30108299920, 30108299939),
NAV's fnrvalidator test suite (fødselsnummer, D-, H- and Tenor ids) and matematikk.org / fnrinfo.no worked
examples. Ids marked "computed" were derived from the published weights because no published example exists.
"""

from __future__ import annotations

import re

import phonenumbers
import pytest

from orchestrator import identifiers
from orchestrator.identifiers import (
    is_mobile,
    luhn_check_digit,
    mask_national_id,
    mod11_check_digit,
    normalize_email,
    normalize_phone,
    redact_national_ids,
    validate_account_number,
    validate_kid,
    validate_national_id,
    validate_organisation_number,
    validate_postal_code,
)

ORG_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)
ACCOUNT_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)

# --- Check-digit helpers ---


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("7992739871", 3),  # the textbook Luhn example 79927398713
        ("1234", 4),  # norwegian-numbers: makeKidNumber("1234") == "12344"
        ("1", 8),
        ("0", 0),
        ("1" * 24, 4),
    ],
)
def test_luhn_check_digit(payload: str, expected: int) -> None:
    assert luhn_check_digit(payload) == expected


@pytest.mark.parametrize(
    ("payload", "weights", "expected"),
    [
        ("97476067", ORG_WEIGHTS, 3),  # Brønnøysundregistrene 974760673
        ("98485100", ORG_WEIGHTS, 6),  # DNB 984851006
        ("12345678", ORG_WEIGHTS, 5),
        ("8601111794", ACCOUNT_WEIGHTS, 7),
        ("1234567890", ACCOUNT_WEIGHTS, 3),
        ("1234", (5, 4, 3, 2), 3),  # KID MOD11: makeKidNumber("1234", "MOD11") == "12343"
        ("00000000", ORG_WEIGHTS, 0),  # remainder 0 -> 11 -> written 0
        ("10000013", ORG_WEIGHTS, None),  # remainder 1 -> 10 -> no valid digit
        ("1000000009", ACCOUNT_WEIGHTS, None),
    ],
)
def test_mod11_check_digit(payload: str, weights: tuple[int, ...], expected: int | None) -> None:
    assert mod11_check_digit(payload, weights) == expected


@pytest.mark.parametrize(
    ("payload", "weights"),
    [("1234", (1, 2, 3)), ("", ()), ("12a4", (1, 2, 3, 4)), ("١٢٣", (1, 2, 3))],
)
def test_mod11_check_digit_rejects_bad_input(payload: str, weights: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"digits|weights"):
        mod11_check_digit(payload, weights)


@pytest.mark.parametrize("payload", ["", "12a", " 12"])
def test_luhn_check_digit_rejects_bad_input(payload: str) -> None:
    with pytest.raises(ValueError, match="digits"):
        luhn_check_digit(payload)


# --- Phone numbers ---


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("91234567", "NO", "+4791234567"),
        ("912 34 567", "NO", "+4791234567"),
        ("+47 412 34 567", "NO", "+4741234567"),
        ("0047 91234567", "NO", "+4791234567"),
        ("22 12 34 56", "NO", "+4722123456"),
        ("  +4791234567  ", "NO", "+4791234567"),
        ("+46 70 123 45 67", "NO", "+46701234567"),
        ("070-123 45 67", "SE", "+46701234567"),
        ("070-123 45 67", "se", "+46701234567"),
    ],
)
def test_normalize_phone_valid(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "+47 1234",
        "",
        "   ",
        "not a phone",
        "12345678",
        "+4750123456",
        "+4758000000",
        "+475800123456",
        "+999 1234",
    ],
)
def test_normalize_phone_invalid(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a valid phone number") as excinfo:
        normalize_phone(raw)
    assert str(excinfo.value) == f"{raw!r} is not a valid phone number"


def test_normalize_phone_error_masks_national_id() -> None:
    with pytest.raises(ValueError, match="is not a valid phone number") as excinfo:
        normalize_phone("13097248022")
    assert "13097248022" not in str(excinfo.value)
    assert "130972*****" in str(excinfo.value)


def test_normalize_phone_error_truncates_long_input() -> None:
    with pytest.raises(ValueError, match="is not a valid phone number") as excinfo:
        normalize_phone("x" * 1000)
    assert len(str(excinfo.value)) < 120


@pytest.mark.parametrize(
    ("e164", "expected"),
    [
        ("+4791234567", True),
        ("+4741234567", True),
        ("+4747123456", True),
        ("+46701234567", True),  # Swedish mobile
        ("+447400123456", True),  # UK mobile
        ("+12015550123", True),  # US: FIXED_LINE_OR_MOBILE counts outside Norway
        ("+4722123456", False),  # Oslo landline
        ("+4733123456", False),
        ("+4751234567", False),
        ("+4761234567", False),
        ("+4771234567", False),
        ("+4779123456", False),  # Svalbard landline (+47, region SJ)
        ("+4780012345", False),  # toll free
        ("+4785012345", False),  # VoIP
        ("+4758000000", False),  # M2M series, 8 digits: not even a valid number
        ("+4759000000", False),
        ("+475800123456", False),  # M2M series, 12 digits
        ("+475900123456", False),
        ("+442071234567", False),  # London landline
        ("91234567", False),  # not E.164
        ("", False),
        ("garbage", False),
    ],
)
def test_is_mobile(e164: str, expected: bool) -> None:
    assert is_mobile(e164) is expected


@pytest.mark.parametrize("e164", ["+4758000000", "+475900123456"])
def test_is_mobile_false_for_norwegian_m2m_even_if_library_says_mobile(
    monkeypatch: pytest.MonkeyPatch, e164: str
) -> None:
    monkeypatch.setattr(phonenumbers, "is_valid_number", lambda _number: True)
    monkeypatch.setattr(phonenumbers, "number_type", lambda _number: phonenumbers.PhoneNumberType.MOBILE)
    assert is_mobile("+4791234567") is True  # the patch is in effect
    assert is_mobile(e164) is False


def test_is_mobile_norway_ignores_fixed_line_or_mobile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        phonenumbers,
        "number_type",
        lambda _number: phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )
    assert is_mobile("+4791234567") is False
    assert is_mobile("+46701234567") is True


# --- E-mail ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ola.nordmann@example.com", "ola.nordmann@example.com"),
        ("Ola.Nordmann@Example.COM", "Ola.Nordmann@example.com"),
        ("  post@firma.no\n", "post@firma.no"),
        ("kari@bø.no", "kari@bø.no"),
    ],
)
def test_normalize_email_valid(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ola.nordmann", "must have an @-sign"),
        ("ola@", "something after the @-sign"),
        ("ola@localhost", "should have a period"),
        ("ola nordmann@example.com", "invalid characters before the @-sign"),
        ("ola..nordmann@example.com", "two periods in a row"),
        ("", "must have an @-sign"),
    ],
)
def test_normalize_email_invalid_includes_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match="is not a valid email address") as excinfo:
        normalize_email(raw)
    assert reason in str(excinfo.value)


def test_normalize_email_error_masks_national_id() -> None:
    with pytest.raises(ValueError, match="is not a valid email address") as excinfo:
        normalize_email("13097248022@nav")
    assert "13097248022" not in str(excinfo.value)


# --- National identity numbers ---

VALID_NATIONAL_IDS = [
    pytest.param("13097248022", id="fnr-1972"),
    pytest.param("02016126007", id="fnr-1961-matematikk.org"),
    pytest.param("31129956715", id="fnr-1899-individual-567"),
    pytest.param("29029648784", id="fnr-leap-day-1996"),
    pytest.param("29020075838", id="fnr-leap-day-2000-individual-758"),
    pytest.param("15021951940", id="fnr-k2-from-remainder-0"),
    pytest.param("11111598403", id="fnr-k1-from-remainder-0"),
    pytest.param("23114048690", id="fnr-1940-individual-486"),
    pytest.param("53097248016", id="d-number"),
    pytest.param("70108299914", id="d-number-day-30"),
    pytest.param("13527248013", id="h-number-or-nav-synthetic"),
    pytest.param("68467038838", id="d-number-and-nav-synthetic"),
    pytest.param("10915596784", id="tenor-synthetic-month-plus-80"),
    pytest.param("50846202355", id="d-number-and-tenor-synthetic"),
    # boundaries of the day/month offsets (computed)
    pytest.param("41018512430", id="d-number-day-41-computed"),
    pytest.param("71018512372", id="d-number-day-71-computed"),
    pytest.param("01418512349", id="h-number-month-41-computed"),
    pytest.param("31528512480", id="h-number-month-52-computed"),
    pytest.param("01818512321", id="tenor-month-81-computed"),
    pytest.param("31928512382", id="tenor-month-92-computed"),
    pytest.param("71818512338", id="d-number-and-tenor-boundaries-computed"),
    pytest.param("02013299997", id="skatteetaten-2032-example-born-2032"),
    pytest.param("30108299920", id="skatteetaten-2032-example-remainder-0"),
    pytest.param("30108299939", id="skatteetaten-2032-example-remainder-1"),
    pytest.param("30108299947", id="2032-remainder-2-computed"),
    pytest.param("30108299955", id="2032-remainder-3-computed"),
    pytest.param("70108299922", id="2032-d-number-remainder-1-computed"),
    pytest.param("10895596790", id="2032-tenor-remainder-3-computed"),
    # 29.02.00 with individual number 400: the pre-2032 table says 1900 (no leap day), but a number with a
    # post-2032 control digit no longer encodes the century, so 29.02.2000 is a possible birth date.
    pytest.param("29020040023", id="2032-leap-day-00-low-individual-computed"),
    # Year 45 with individual 600 was never issued before 2032 (no century in the table); from 2032 it can be.
    pytest.param("15034560010", id="2032-individual-outside-classic-table-computed"),
]


@pytest.mark.parametrize("national_id", VALID_NATIONAL_IDS)
def test_validate_national_id_valid(national_id: str) -> None:
    assert validate_national_id(national_id) == national_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("130972 48022", "13097248022"), (" 1309 7248 022 ", "13097248022"), ("30108\t299939\n", "30108299939")],
)
def test_validate_national_id_accepts_spaces(raw: str, expected: str) -> None:
    assert validate_national_id(raw) == expected


INVALID_NATIONAL_IDS = [
    # length / characters
    pytest.param("", "national id must be 11 digits", id="empty"),
    pytest.param("1309724802", "national id must be 11 digits", id="10-digits"),
    pytest.param("130972480221", "national id must be 11 digits", id="12-digits"),
    pytest.param("1309724802A", "national id must be 11 digits", id="letter"),
    pytest.param("130972-48022", "national id must be 11 digits", id="hyphen"),
    pytest.param("١٣٠٩٧٢٤٨٠٢٢", "national id must be 11 digits", id="non-ascii-digits"),
    # date
    pytest.param("32127248022", "national id has an invalid date", id="day-32"),
    pytest.param("00097248022", "national id has an invalid date", id="day-0"),
    pytest.param("13137248022", "national id has an invalid date", id="month-13"),
    pytest.param("13607248022", "national id has an invalid date", id="month-60"),
    pytest.param("13937248022", "national id has an invalid date", id="month-93"),
    pytest.param("72097248022", "national id has an invalid date", id="d-number-day-32"),
    pytest.param("31048512359", "national id has an invalid date", id="31-april"),
    pytest.param("31538512470", "national id has an invalid date", id="month-53"),
    pytest.param("31808512354", "national id has an invalid date", id="month-80"),
    pytest.param("29020112345", "national id has an invalid date", id="leap-day-2001"),
    # Classic control digits, individual 400 -> 1900 per the table, and 1900 had no 29 February (computed).
    pytest.param("29020040015", "national id has an invalid date", id="leap-day-1900-by-individual-table"),
    # control digits
    pytest.param("13097248023", "national id has invalid control digits", id="wrong-k2"),
    pytest.param("13097248032", "national id has invalid control digits", id="k1-remainder-1-but-wrong-k2"),
    pytest.param("02013299987", "national id has invalid control digits", id="k1-remainder-10"),
    pytest.param("02013299996", "national id has invalid control digits", id="2032-wrong-k2"),
    pytest.param("30108299930", "national id has invalid control digits", id="2032-remainder-1-wrong-k2"),
    pytest.param("30108299963", "national id has invalid control digits", id="k1-remainder-4-correct-k2"),
    pytest.param("53097248017", "national id has invalid control digits", id="d-number-wrong-k2"),
    pytest.param("10915596785", "national id has invalid control digits", id="tenor-wrong-k2"),
]


@pytest.mark.parametrize(("raw", "message"), INVALID_NATIONAL_IDS)
def test_validate_national_id_invalid(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match="national id") as excinfo:
        validate_national_id(raw)
    assert str(excinfo.value) == message


@pytest.mark.parametrize(("raw", "message"), INVALID_NATIONAL_IDS)
def test_validate_national_id_errors_never_echo_digits(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match="national id") as excinfo:
        validate_national_id(raw)
    text = str(excinfo.value)
    assert raw.strip() == "" or raw not in text
    assert re.search(r"\d{3}", text) is None  # not even the birth date part


@pytest.mark.parametrize(
    ("yy", "individual", "expected"),
    [
        (72, 0, 1972),
        (0, 499, 1900),
        (55, 500, 1855),
        (99, 749, 1899),
        (54, 500, None),  # 500-749 with year 40-54 was never issued
        (0, 500, 2000),
        (39, 999, 2039),
        (40, 900, 1940),
        (99, 999, 1999),
        (40, 899, None),
        (99, 750, None),
    ],
)
def test_classic_century_table(yy: int, individual: int, expected: int | None) -> None:
    # Only observable through validate_national_id for 29 February in year 00, hence tested directly.
    assert identifiers._classic_birth_year(yy, individual) == expected


# --- Masking and redaction ---


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("13097248022", "130972*****"),
        ("13097248023", "130972*****"),  # masking does not validate
        ("1234", "****"),
        ("130972 48022", "************"),
        ("1309724802A", "***********"),
        ("", ""),
    ],
)
def test_mask_national_id(value: str, expected: str) -> None:
    assert mask_national_id(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Debtor 13097248022 called about the claim.", "Debtor 130972***** called about the claim."),
        ("fnr=13097248022", "fnr=130972*****"),
        ("fnr: 130972 48022.", "fnr: 130972 *****."),
        ("13097248022,53097248016", "130972*****,530972*****"),
        ("new id 30108299939 (2032 rule)", "new id 301082***** (2032 rule)"),
        ("tenor 10915596784", "tenor 109155*****"),
        # left alone: invalid control digits, longer digit runs, other numbers
        ("order 13097248023 shipped", "order 13097248023 shipped"),
        ("ref 130972480221 ok", "ref 130972480221 ok"),
        ("ref 913097248022 ok", "ref 913097248022 ok"),
        ("acct 86011117947", "acct 86011117947"),
        ("call +4791234567", "call +4791234567"),
        ("no digits here", "no digits here"),
        ("", ""),
    ],
)
def test_redact_national_ids(text: str, expected: str) -> None:
    assert redact_national_ids(text) == expected


def test_redact_national_ids_leaves_no_valid_id_behind() -> None:
    ids = [str(param.values[0]) for param in VALID_NATIONAL_IDS]
    redacted = redact_national_ids(" and ".join(ids))
    for national_id in ids:
        assert national_id not in redacted
    assert redacted.count("*****") == len(ids)


# --- Organisation numbers ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("974760673", "974760673"),  # Brønnøysundregistrene
        ("984851006", "984851006"),  # DNB Bank ASA
        ("984 851 006", "984851006"),
        (" 123456785 ", "123456785"),
    ],
)
def test_validate_organisation_number_valid(raw: str, expected: str) -> None:
    assert validate_organisation_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("97476067", "must be 9 digits"),
        ("9747606731", "must be 9 digits"),
        ("97476067A", "must be 9 digits"),
        ("974-760-673", "must be 9 digits"),
        ("", "must be 9 digits"),
        ("974760674", "invalid control digit"),
        ("984851007", "invalid control digit"),
        ("100000130", "invalid control digit"),  # remainder gives 10: no digit is valid
    ],
)
def test_validate_organisation_number_invalid(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_organisation_number(raw)


# --- KID ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12344", "12344"),  # MOD10 (norwegian-numbers example)
        ("12343", "12343"),  # MOD11 (norwegian-numbers example)
        ("79927398713", "79927398713"),  # MOD10
        ("1009-", "1009-"),  # MOD11 remainder 10 written as '-'
        ("18", "18"),  # shortest, MOD10
        ("19", "19"),  # shortest, MOD11
        ("1111111111111111111111114", "1111111111111111111111114"),  # longest, MOD10
        ("1111111111111111111111112", "1111111111111111111111112"),  # longest, MOD11
        ("1234 4", "12344"),
    ],
)
def test_validate_kid_valid(raw: str, expected: str) -> None:
    assert validate_kid(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "1", "-", "11111111111111111111111114", "12a44", "-1234", "12-44", "1234--", "12.344"],
)
def test_validate_kid_bad_format(raw: str) -> None:
    with pytest.raises(ValueError, match="KID must be 2-25 digits"):
        validate_kid(raw)


@pytest.mark.parametrize("raw", ["12345", "12340", "79927398710", "10"])
def test_validate_kid_wrong_check_digit(raw: str) -> None:
    with pytest.raises(ValueError, match="KID check digit matches neither MOD10 nor MOD11"):
        validate_kid(raw)


@pytest.mark.parametrize("raw", ["1234-", "1-"])
def test_validate_kid_dash_requires_mod11_remainder_10(raw: str) -> None:
    with pytest.raises(ValueError, match="MOD11"):
        validate_kid(raw)


# --- Bank account numbers ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("86011117947", "86011117947"),
        ("8601.11.17947", "86011117947"),
        ("8601 11 17947", "86011117947"),
        ("1234.56.78903", "12345678903"),
    ],
)
def test_validate_account_number_valid(raw: str, expected: str) -> None:
    assert validate_account_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("8601111794", "must be 11 digits"),
        ("860111179470", "must be 11 digits"),
        ("8601-11-17947", "must be 11 digits"),
        ("NO9386011117947", "must be 11 digits"),
        ("", "must be 11 digits"),
        ("86011117948", "invalid control digit"),
        ("12345678904", "invalid control digit"),
        ("10000000090", "invalid control digit"),  # remainder gives 10: no digit is valid
    ],
)
def test_validate_account_number_invalid(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_account_number(raw)


# --- Postal codes ---


@pytest.mark.parametrize(
    ("code", "country", "expected"),
    [
        ("0150", "NO", "0150"),
        (" 5003 ", "NO", "5003"),
        ("9990", "no", "9990"),
        ("9170", "SJ", "9170"),
        ("114 55", "SE", "114 55"),
        ("sw1a 1aa", "GB", "SW1A 1AA"),
        ("1234-567", "PT", "1234-567"),
        ("1", "XX", "1"),
        ("123456789012", "XX", "123456789012"),
    ],
)
def test_validate_postal_code_valid(code: str, country: str, expected: str) -> None:
    assert validate_postal_code(code, country) == expected


def test_validate_postal_code_defaults_to_norway() -> None:
    assert validate_postal_code("0150") == "0150"
    with pytest.raises(ValueError, match="exactly 4 digits"):
        validate_postal_code("SW1A 1AA")


@pytest.mark.parametrize(
    ("code", "country", "message"),
    [
        ("150", "NO", "exactly 4 digits"),
        ("01500", "NO", "exactly 4 digits"),
        ("O150", "NO", "exactly 4 digits"),
        ("01 50", "NO", "exactly 4 digits"),
        ("", "NO", "exactly 4 digits"),
        ("917", "SJ", "exactly 4 digits"),
        ("", "SE", "1-12 letters, digits, spaces or hyphens"),
        ("1234567890123", "DE", "1-12 letters, digits, spaces or hyphens"),
        ("SW1A_1AA", "GB", "1-12 letters, digits, spaces or hyphens"),
        ("-123", "US", "1-12 letters, digits, spaces or hyphens"),
        ("0150", "", "two-letter ISO 3166-1 code"),
        ("0150", "NOR", "two-letter ISO 3166-1 code"),
    ],
)
def test_validate_postal_code_invalid(code: str, country: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_postal_code(code, country)
