"""Posten's files: the EA address-update / return-reason importer (pluggable layouts) and the postal code
register. Real files on disk, in both encodings Posten uses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from orchestrator.registries import RegistryAddress
from orchestrator.registries.posten import (
    DEFAULT_REASON_CODES,
    RETURN_REASONS,
    AddressUpdate,
    EaBarcode,
    Layout,
    PostalCode,
    PostalCodeRegister,
    RowError,
    SemicolonLayout,
    import_address_updates,
    parse_ea_barcode,
)

EA_FILE = """\
reference;reason;address_line_1;address_line_2;address_line_3;postal_code;city;date
c-1001.a-1;NY;Storgata 12B;;;0155;Oslo;2025-03-04

c-1002.a-1;ADRESSAT UKJENT;;;;;;2025-03-04
# a comment line
c-1003.a-2;avdød;;;;;;05.03.2025
c-1004.a-1;FLYTTET;Fjordveien 3;Leilighet H0201;;5003;BERGEN;20250305
this;line;is;not;the;layout
c-1005.a-1;NY;;;;;;2025-03-04
c-1006.a-1;TAPT;;;;;;2025-03-04
c-1007.a-1;NEKTET;;;;;;2025-13-01
c-1008;NEKTET;;;;;;2025-03-06
c-1009.a-1;MANGELFULL;Bare gate 1;;;;;2025-03-06
c-1010.a-3;nektet mottatt;;;;;;2025-03-06
c-1011.a-1;NY;Rue de Rivoli 1;;;75001;PARIS;2025-03-07;FR
"""

REGISTER = (
    "0001\tOSLO\t0301\tOSLO\tP\n"
    "0102\tOSLO\t0301\tOSLO\tP\n"
    "0155\tOSLO\t0301\tOSLO\tG\n"
    "5003\tBERGEN\t4601\tBERGEN\tG\n"
    "9170\tLONGYEARBYEN\t2100\tSVALBARD\tB\n"
    "9990\tBÅTSFJORD\t5632\tBÅTSFJORD\tB\n"
    "1234\tNOWHERE\n"
    "12A4\tBROKEN\t0000\tBROKEN\tG\n"
    "2390\tMOELV\t3411\tRINGSAKER\tX\n"
    "0051\tOSLO\t0301\tOSLO\tS\n"
)


@pytest.fixture
def register() -> PostalCodeRegister:
    return PostalCodeRegister.parse(REGISTER.encode("cp1252"))


# ------------------------------------------------------------------------------------------- EA files


def test_a_mixed_file_keeps_the_good_rows_and_names_the_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "ea-2025-03-07.csv"
    path.write_text(EA_FILE, encoding="utf-8")
    result = import_address_updates(path)

    assert [update.reference for update in result.updates] == [
        "c-1001.a-1",
        "c-1002.a-1",
        "c-1003.a-2",
        "c-1004.a-1",
        "c-1010.a-3",
        "c-1011.a-1",
    ]
    first, unknown, deceased, moved, refused, abroad = result.updates
    assert first == AddressUpdate(
        "c-1001.a-1",
        "forwarded_new_address",
        RegistryAddress(("Storgata 12B",), "0155", "Oslo"),
        date(2025, 3, 4),
    )
    assert (first.line, first.contact_id, first.attempt_id) == (2, "c-1001", "a-1")
    assert unknown.reason == "returned_unknown_addressee" and unknown.new_address is None
    assert deceased.reason == "returned_deceased" and deceased.at == date(2025, 3, 5)
    assert moved.reason == "returned_moved"
    assert moved.new_address == RegistryAddress(("Fjordveien 3", "Leilighet H0201"), "5003", "BERGEN")
    assert refused.reason == "returned_refused"
    assert abroad.new_address == RegistryAddress(("Rue de Rivoli 1",), "75001", "PARIS", "FR")

    assert [error.line for error in result.errors] == [8, 9, 10, 11, 12, 13]
    messages = {error.line: error.message for error in result.errors}
    assert "expected 8 or 9 fields, got 6" in messages[8]
    assert "without a new address" in messages[9]
    assert "unknown return reason code 'TAPT'" in messages[10]
    assert "date" in messages[11]
    assert "reference" in messages[12]
    assert "postal code and a city" in messages[13]
    assert "Bare gate" not in " ".join(messages.values())  # addresses are never echoed
    assert not result.ok


def test_windows_1252_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "ea.csv"
    path.write_bytes("c-1.a-1;NY;Ærøveien 5;;;9990;BÅTSFJORD;2025-03-04\n".encode("cp1252"))
    result = import_address_updates(path)
    assert result.ok
    assert result.updates[0].new_address == RegistryAddress(("Ærøveien 5",), "9990", "BÅTSFJORD")


def test_unreadable_csv_is_a_row_error() -> None:
    result = import_address_updates(
        'c-1.a-1;NY;"Storgata 1;;;0155;OSLO;2025-03-04\nc-2.a-1;FLYTTET;;;;;;2025-03-04\n'
    )
    assert [error.line for error in result.errors] == [1]
    assert [update.reference for update in result.updates] == ["c-2.a-1"]


def test_the_postal_code_register_normalises_new_addresses(register: PostalCodeRegister) -> None:
    data = (
        "c-1.a-1;NY;Storgata 12B;;;0155;Oslo;2025-03-04\n"
        "c-2.a-1;NY;Somewhere 1;;;4444;ATLANTIS;2025-03-04\n"
        "c-3.a-1;NY;Rue de Rivoli 1;;;75001;PARIS;2025-03-07;FR\n"
    )
    result = import_address_updates(data, postal_codes=register)
    assert [update.new_address for update in result.updates] == [
        RegistryAddress(("Storgata 12B",), "0155", "OSLO"),
        RegistryAddress(("Rue de Rivoli 1",), "75001", "PARIS", "FR"),
    ]
    assert result.errors == [RowError(2, "postal code '4444' is not in the postal code register")]


def test_reason_codes_can_follow_the_agreement() -> None:
    layout = SemicolonLayout({"01": "returned_unknown_addressee", "02": "returned_moved"})
    result = import_address_updates("c-1.a-1;01;;;;;;2025-03-04\nc-2.a-1;UKJENT;;;;;;2025-03-04\n", layout)
    assert [update.reason for update in result.updates] == ["returned_unknown_addressee"]
    assert result.errors[0].line == 2


def test_every_default_code_maps_to_a_known_reason() -> None:
    assert set(DEFAULT_REASON_CODES.values()) <= set(RETURN_REASONS)
    assert {"returned_unknown_addressee", "returned_moved", "returned_refused"} <= set(RETURN_REASONS)
    assert {"returned_insufficient_address", "returned_deceased"} <= set(RETURN_REASONS)


class JsonLinesLayout:
    """Another layout, to show the importer is pluggable: one JSON object per line."""

    name = "jsonl"

    def parse(self, text: str) -> Iterator[AddressUpdate | RowError]:
        import json

        for number, line in enumerate(text.splitlines(), start=1):
            try:
                row = json.loads(line)
                yield AddressUpdate(
                    row["ref"], "returned_moved", None, date.fromisoformat(row["date"]), line=number
                )
            except (ValueError, KeyError) as exc:
                yield RowError(number, f"bad row ({type(exc).__name__})")


def test_another_layout_plugs_in() -> None:
    layout = JsonLinesLayout()
    assert isinstance(layout, Layout) and isinstance(SemicolonLayout(), Layout)
    result = import_address_updates('{"ref": "c-1.a-1", "date": "2025-03-04"}\n{"ref": "c-2.a-1"}\n', layout)
    assert [update.reference for update in result.updates] == ["c-1.a-1"]
    assert result.errors == [RowError(2, "bad row (KeyError)")]


def test_ea_barcode() -> None:
    assert parse_ea_barcode("20999100000001234567") == EaBarcode("0999", 1, "0000001234567")
    assert parse_ea_barcode(" 212343042 ") == EaBarcode("1234", 3, "42")
    for bad in ("30999100000001234567", "209994000012", "209991000000012345678", "20999110042"):
        with pytest.raises(ValueError, match="EA barcode"):
            parse_ea_barcode(bad)


# ---------------------------------------------------------------------------------- postal code register


def test_the_register_reads_good_lines_and_reports_bad_ones(register: PostalCodeRegister) -> None:
    assert len(register) == 7
    assert register.get("9170") == PostalCode("9170", "LONGYEARBYEN", "2100", "SVALBARD", "B")
    assert register.city("9990") == "BÅTSFJORD"  # decoded from Windows-1252
    assert "0155" in register and "1234" not in register and 155 not in register
    assert [error.line for error in register.errors] == [7, 8, 9]


def test_categories(register: PostalCodeRegister) -> None:
    street, box, both, service = (register.get(code) for code in ("0155", "0102", "9170", "0051"))
    assert street is not None and street.street_addresses and not street.po_boxes
    assert box is not None and box.po_boxes and not box.street_addresses
    assert both is not None and both.po_boxes and both.street_addresses
    assert service is not None and not service.po_boxes and not service.street_addresses


def test_validate_and_normalise_cities(register: PostalCodeRegister) -> None:
    assert register.matches("0155", "oslo") and register.matches("9990", " båtsfjord ")
    assert not register.matches("0155", "BERGEN") and not register.matches("4444", "OSLO")
    assert register.normalise(RegistryAddress(("Storgata 1",), "0155", "Oslo")) == RegistryAddress(
        ("Storgata 1",), "0155", "OSLO"
    )
    foreign = RegistryAddress(("Storgatan 1",), "11122", "Stockholm", "SE")
    assert register.normalise(foreign) is foreign
    with pytest.raises(ValueError, match="not in the postal code register"):
        register.normalise(RegistryAddress(("Storgata 1",), "4444", "OSLO"))


def test_a_utf8_register_with_a_header(tmp_path: Path) -> None:
    path = tmp_path / "Postnummerregister-utf8.txt"
    path.write_text(
        "Postnummer\tPoststed\tKommunenummer\tKommunenavn\tKategori\n9170\tLONGYEARBYEN\t2100\tSVALBARD\tB\n",
        encoding="utf-8",
    )
    loaded = PostalCodeRegister.load(path)
    assert len(loaded) == 1 and loaded.errors == []
