"""Portfolio files: CSV rows to API-shaped requests, format detection, line numbers, counting."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from orchestrator.portfolio import (
    CSV_COLUMNS,
    REQUIRED_COLUMNS,
    PortfolioError,
    count_rows,
    csv_row_to_request,
    detect_format,
    read_rows,
)
from orchestrator.schemas import ContactRequest


def base_row(i: int = 1, **overrides: str) -> dict[str, str]:
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update(
        idempotency_key=f"pf/{i}",
        kind="reminder",
        debtor_id=f"D-{i}",
        debtor_name="Kari Nordmann",
        case_id=f"C-{i}",
        creditor_name="Eksempel Kreditt AS",
        reference=f"Faktura {i}",
        principal="1250.00",
        due_date="2026-10-01",
    )
    row.update(overrides)
    return row


def write_csv(
    path: Path,
    rows: list[dict[str, str]],
    columns: list[str] | tuple[str, ...] = CSV_COLUMNS,
    delimiter: str = ",",
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---- csv_row_to_request ----


def test_minimal_row_gives_defaults_and_a_valid_request() -> None:
    request = csv_row_to_request(base_row())
    assert request == {
        "idempotency_key": "pf/1",
        "kind": "reminder",
        "channel": "auto",
        "language": "nb",
        "debtor": {
            "id": "D-1",
            "type": "person",
            "name": "Kari Nordmann",
            "phones": [],
            "emails": [],
            "addresses": [],
        },
        "case": {
            "id": "C-1",
            "creditor": {"name": "Eksempel Kreditt AS"},
            "reference": "Faktura 1",
            "principal": "1250.00",
            "costs": [],
            "due_date": "2026-10-01",
        },
    }
    ContactRequest.model_validate(request)


def test_several_phones_and_emails_split_on_semicolons() -> None:
    request = csv_row_to_request(
        base_row(phones=" +4791234567 ; 41234567;; ", emails="kari@example.no;kari.nordmann@example.no;")
    )
    assert request["debtor"]["phones"] == ["+4791234567", "41234567"]
    assert request["debtor"]["emails"] == ["kari@example.no", "kari.nordmann@example.no"]
    parsed = ContactRequest.model_validate(request)
    assert parsed.debtor.phones == ["+4791234567", "+4741234567"]


def test_costs_from_reminder_fee_and_other_costs() -> None:
    request = csv_row_to_request(
        base_row(reminder_fee="35.00", other_costs="collection_fee=70.00; legal_fee = 100.50;")
    )
    assert request["case"]["costs"] == [
        {"kind": "reminder_fee", "amount": "35.00"},
        {"kind": "collection_fee", "amount": "70.00"},
        {"kind": "legal_fee", "amount": "100.50"},
    ]
    ContactRequest.model_validate(request)


def test_other_costs_without_amount_is_left_for_validation_to_reject() -> None:
    request = csv_row_to_request(base_row(other_costs="collection_fee"))
    assert request["case"]["costs"] == [{"kind": "collection_fee", "amount": ""}]
    with pytest.raises(ValueError, match="amount"):
        ContactRequest.model_validate(request)


def test_interest_kid_account_and_creditor_organisation_number() -> None:
    request = csv_row_to_request(
        base_row(
            interest_rate_percent="12.50",
            interest_from="2026-09-01",
            kid="000010009",
            account_number="86011117947",
            creditor_organisation_number="974760673",
        )
    )
    case = request["case"]
    assert case["interest"] == {"rate_percent": "12.50", "from": "2026-09-01"}
    assert case["kid"] == "000010009"
    assert case["account_number"] == "86011117947"
    assert case["creditor"] == {"name": "Eksempel Kreditt AS", "organisation_number": "974760673"}
    parsed = ContactRequest.model_validate(request)
    assert parsed.case.interest is not None
    assert str(parsed.case.interest.from_date) == "2026-09-01"


def test_interest_without_from_date_is_rejected_by_validation() -> None:
    request = csv_row_to_request(base_row(interest_rate_percent="8"))
    assert request["case"]["interest"] == {"rate_percent": "8", "from": ""}
    with pytest.raises(ValueError, match="from"):
        ContactRequest.model_validate(request)


def test_organisation_debtor() -> None:
    request = csv_row_to_request(
        base_row(debtor_type="organisation", debtor_name="Fjordkafeen AS", organisation_number="984851006")
    )
    debtor = request["debtor"]
    assert debtor["type"] == "organisation"
    assert debtor["organisation_number"] == "984851006"
    assert "national_id" not in debtor
    parsed = ContactRequest.model_validate(request)
    assert parsed.debtor.organisation_number == "984851006"


def test_address_with_two_lines_and_default_country() -> None:
    request = csv_row_to_request(
        base_row(address_line1="Storgata 1", address_line2="oppgang B", postal_code="0155", city="OSLO")
    )
    assert request["debtor"]["addresses"] == [
        {"lines": ["Storgata 1", "oppgang B"], "postal_code": "0155", "city": "OSLO", "country": "NO"}
    ]
    foreign = csv_row_to_request(
        base_row(address_line1="Drottninggatan 1", postal_code="111 51", city="STOCKHOLM", country="SE")
    )
    assert foreign["debtor"]["addresses"][0]["country"] == "SE"


def test_optional_request_fields_and_whitespace() -> None:
    request = csv_row_to_request(
        base_row(
            idempotency_key="  pf/9  ",
            channel="letter",
            language="en",
            not_before="2026-11-23T08:00:00+01:00",
            national_id="",
        )
    )
    assert request["idempotency_key"] == "pf/9"
    assert request["channel"] == "letter"
    assert request["language"] == "en"
    assert request["not_before"] == "2026-11-23T08:00:00+01:00"
    assert "national_id" not in request["debtor"]


def test_missing_keys_are_empty_values() -> None:
    request = csv_row_to_request({"idempotency_key": "k", "kind": "reminder"})
    assert request["debtor"]["id"] == ""
    assert request["case"]["due_date"] == ""
    assert "not_before" not in request


# ---- detect_format ----


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("p.csv", "csv"),
        ("P.CSV", "csv"),
        ("p.ndjson", "ndjson"),
        ("p.jsonl", "ndjson"),
        ("p.json", "ndjson"),
        ("dir.v2/p.JSONL", "ndjson"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(Path(name)) == fmt


@pytest.mark.parametrize("name", ["p.txt", "p.xlsx", "portfolio", "p.csv.gz"])
def test_detect_format_refuses_other_suffixes(name: str) -> None:
    with pytest.raises(PortfolioError, match=r"cannot tell the format of .*--format") as info:
        detect_format(Path("some/dir") / name)
    assert name in str(info.value)


def test_read_rows_refuses_an_unknown_format(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [base_row()])
    with pytest.raises(PortfolioError, match="unknown format 'xml'"):
        list(read_rows(path, "xml"))


def test_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "portfolio.txt"
    path.write_text(json.dumps(csv_row_to_request(base_row())) + "\n", encoding="utf-8")
    rows = list(read_rows(path, "ndjson"))
    assert [r.line for r in rows] == [1]
    assert count_rows(path, "ndjson") == 1


# ---- read_rows: CSV ----


def test_csv_line_numbers_count_the_header_as_line_1(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [base_row(i) for i in range(1, 5)])
    rows = list(read_rows(path))
    assert [r.line for r in rows] == [2, 3, 4, 5]
    assert [r.item["idempotency_key"] for r in rows] == ["pf/1", "pf/2", "pf/3", "pf/4"]
    assert all(r.error is None for r in rows)


def test_csv_line_numbers_skip_blank_lines_but_keep_counting(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [base_row(1)])
    with path.open("a", newline="", encoding="utf-8") as handle:
        handle.write("\r\n\r\n")
        csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS)).writerow(base_row(2))
    assert [r.line for r in read_rows(path)] == [2, 5]


def test_csv_line_numbers_after_a_quoted_multiline_cell(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "p.csv",
        [base_row(1, reference="Faktura 1\nlinje to\nlinje tre"), base_row(2), base_row(3)],
    )
    rows = list(read_rows(path))
    assert rows[0].item["case"]["reference"] == "Faktura 1\nlinje to\nlinje tre"
    # a record is named by the line it starts on; the ones after it by their physical line
    assert [r.line for r in rows] == [2, 5, 6]


def test_csv_with_only_the_required_columns_in_any_order(tmp_path: Path) -> None:
    columns = list(reversed(REQUIRED_COLUMNS))
    row = {c: base_row()[c] for c in columns}
    path = write_csv(tmp_path / "p.csv", [row], columns)
    (only,) = list(read_rows(path))
    assert only.item == csv_row_to_request(base_row())


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    rows = [
        base_row(i, phones="91234567;41234567", other_costs="a=1;b=2", debtor_name="Nordmann, Kari")
        for i in range(3)
    ]
    path = write_csv(tmp_path / "p.csv", rows, delimiter=delimiter)
    read = list(read_rows(path))
    assert [r.line for r in read] == [2, 3, 4]
    assert read[0].item["debtor"]["name"] == "Nordmann, Kari"
    assert read[0].item["debtor"]["phones"] == ["91234567", "41234567"]
    assert read[0].item["case"]["costs"] == [{"kind": "a", "amount": "1"}, {"kind": "b", "amount": "2"}]


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    write_csv(path, [base_row()])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (row,) = list(read_rows(path))
    assert row.item["idempotency_key"] == "pf/1"
    assert count_rows(path) == 1


def test_csv_unknown_column_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "p.csv",
        [{**base_row(), "colour": "blue", "phone": "1"}],
        [*CSV_COLUMNS, "colour", "phone"],
    )
    with pytest.raises(PortfolioError) as info:
        list(read_rows(path))
    message = str(info.value)
    assert "unknown CSV column(s) ['colour', 'phone']" in message
    assert "known columns: idempotency_key, kind" in message


def test_csv_missing_required_columns_is_an_error_naming_them(tmp_path: Path) -> None:
    columns = [c for c in CSV_COLUMNS if c not in ("due_date", "principal")]
    path = write_csv(tmp_path / "p.csv", [{c: base_row()[c] for c in columns}], columns)
    with pytest.raises(PortfolioError, match=r"missing CSV column\(s\) \['principal', 'due_date'\]"):
        list(read_rows(path))


def test_empty_csv_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(PortfolioError, match="missing CSV column"):
        list(read_rows(path))
    assert count_rows(path) == 0


def test_read_rows_of_a_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(read_rows(tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError):
        count_rows(tmp_path / "nope.ndjson")


# ---- read_rows: NDJSON ----


def test_ndjson_line_numbers_and_malformed_lines(tmp_path: Path) -> None:
    good = csv_row_to_request(base_row())
    path = tmp_path / "p.ndjson"
    path.write_text(
        "\n".join([json.dumps(good), "", "   ", '{"idempotency_key": ', "[1, 2]", json.dumps(good)]) + "\n",
        encoding="utf-8",
    )
    rows = list(read_rows(path))
    assert [r.line for r in rows] == [1, 4, 5, 6]
    assert rows[0].item == good
    assert rows[0].error is None
    assert rows[1].item is None
    assert rows[1].error is not None
    assert rows[1].error.startswith("not valid JSON: ")
    assert "at column" in rows[1].error
    assert rows[2].item == [1, 2]
    assert rows[2].error is None
    assert rows[3].item == good
    assert count_rows(path) == 4


def test_ndjson_without_trailing_newline_and_with_crlf(tmp_path: Path) -> None:
    good = csv_row_to_request(base_row())
    path = tmp_path / "p.jsonl"
    path.write_bytes((json.dumps(good) + "\r\n" + json.dumps(good)).encode())
    assert [r.line for r in read_rows(path)] == [1, 2]
    assert count_rows(path) == 2


# ---- count_rows ----


def test_count_rows_csv(tmp_path: Path) -> None:
    assert count_rows(write_csv(tmp_path / "a.csv", [base_row(i) for i in range(7)])) == 7
    assert count_rows(write_csv(tmp_path / "b.csv", [])) == 0
    multiline = write_csv(tmp_path / "c.csv", [base_row(1, reference="a\nb"), base_row(2)])
    assert count_rows(multiline) == 2 == len(list(read_rows(multiline)))


def test_count_rows_csv_agrees_with_read_rows_on_blank_lines(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [base_row(1)])
    with path.open("a", newline="", encoding="utf-8") as handle:
        handle.write("\r\n")
        csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS)).writerow(base_row(2))
    assert count_rows(path) == len(list(read_rows(path))) == 2


def test_count_rows_ndjson_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text("{}\n\n{}\n  \nnot json\n", encoding="utf-8")
    assert count_rows(path) == 3
    assert count_rows(path, "ndjson") == 3


def test_count_rows_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("x\n", encoding="utf-8")
    with pytest.raises(PortfolioError, match=r"p\.txt"):
        count_rows(path)


def test_csv_row_with_more_cells_than_the_header_is_reported_not_truncated(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [base_row(1)])
    with path.open("a", newline="", encoding="utf-8") as handle:
        handle.write(",".join(["x"] * (len(CSV_COLUMNS) + 2)) + "\r\n")
    rows = list(read_rows(path))
    assert rows[1].line == 3
    assert rows[1].item is None
    assert rows[1].error == f"{len(CSV_COLUMNS) + 2} cells, but the header has {len(CSV_COLUMNS)}"
