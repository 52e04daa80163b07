"""Portfolio files: contact requests as NDJSON (one API object per line) or CSV (one flat row each).

CSV columns (header row required; unknown columns are an error so that a typo is not silently ignored):

    idempotency_key, kind, channel, language, not_before,
    debtor_id, debtor_type, debtor_name, national_id, organisation_number,
    address_line1, address_line2, postal_code, city, country, phones, emails,
    case_id, creditor_name, creditor_organisation_number, reference, principal,
    reminder_fee, other_costs, interest_rate_percent, interest_from, due_date, kid, account_number

``phones`` and ``emails`` take several values separated by ``;``. ``other_costs`` is ``kind=amount;...``.
Empty cells are absent values.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CSV_COLUMNS = (
    "idempotency_key",
    "kind",
    "channel",
    "language",
    "not_before",
    "debtor_id",
    "debtor_type",
    "debtor_name",
    "national_id",
    "organisation_number",
    "address_line1",
    "address_line2",
    "postal_code",
    "city",
    "country",
    "phones",
    "emails",
    "case_id",
    "creditor_name",
    "creditor_organisation_number",
    "reference",
    "principal",
    "reminder_fee",
    "other_costs",
    "interest_rate_percent",
    "interest_from",
    "due_date",
    "kid",
    "account_number",
)
REQUIRED_COLUMNS = (
    "idempotency_key",
    "kind",
    "debtor_id",
    "debtor_name",
    "case_id",
    "creditor_name",
    "reference",
    "principal",
    "due_date",
)


class PortfolioError(ValueError):
    """The file as a whole cannot be read (not a row-level problem)."""


@dataclass
class Row:
    line: int  # 1-based line in the file (CSV: the header is line 1)
    item: Any  # the API-shaped dict, or a _Unreadable
    error: str | None = None


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(";") if v.strip()]


def csv_row_to_request(row: dict[str, str]) -> dict[str, Any]:
    v = {k: (row.get(k) or "").strip() for k in CSV_COLUMNS}
    address_lines = [line for line in (v["address_line1"], v["address_line2"]) if line]
    debtor: dict[str, Any] = {
        "id": v["debtor_id"],
        "type": v["debtor_type"] or "person",
        "name": v["debtor_name"],
        "phones": _split(v["phones"]),
        "emails": _split(v["emails"]),
        "addresses": [],
    }
    if address_lines or v["postal_code"] or v["city"]:
        debtor["addresses"].append(
            {
                "lines": address_lines,
                "postal_code": v["postal_code"],
                "city": v["city"],
                "country": v["country"] or "NO",
            }
        )
    if v["national_id"]:
        debtor["national_id"] = v["national_id"]
    if v["organisation_number"]:
        debtor["organisation_number"] = v["organisation_number"]
    costs = []
    if v["reminder_fee"]:
        costs.append({"kind": "reminder_fee", "amount": v["reminder_fee"]})
    for part in _split(v["other_costs"]):
        kind, _, amount = part.partition("=")
        costs.append({"kind": kind.strip(), "amount": amount.strip()})
    case: dict[str, Any] = {
        "id": v["case_id"],
        "creditor": {"name": v["creditor_name"]},
        "reference": v["reference"],
        "principal": v["principal"],
        "costs": costs,
        "due_date": v["due_date"],
    }
    if v["creditor_organisation_number"]:
        case["creditor"]["organisation_number"] = v["creditor_organisation_number"]
    if v["interest_rate_percent"]:
        case["interest"] = {"rate_percent": v["interest_rate_percent"], "from": v["interest_from"]}
    if v["kid"]:
        case["kid"] = v["kid"]
    if v["account_number"]:
        case["account_number"] = v["account_number"]
    request: dict[str, Any] = {
        "idempotency_key": v["idempotency_key"],
        "kind": v["kind"],
        "channel": v["channel"] or "auto",
        "language": v["language"] or "nb",
        "debtor": debtor,
        "case": case,
    }
    if v["not_before"]:
        request["not_before"] = v["not_before"]
    return request


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".ndjson", ".jsonl", ".json"):
        return "ndjson"
    raise PortfolioError(f"cannot tell the format of {path.name}: use .csv, .ndjson or .jsonl (or --format)")


def read_rows(path: Path, fmt: str | None = None) -> Iterator[Row]:
    fmt = fmt or detect_format(path)
    if fmt == "csv":
        yield from _read_csv(path)
    elif fmt == "ndjson":
        yield from _read_ndjson(path)
    else:
        raise PortfolioError(f"unknown format {fmt!r}; use csv or ndjson")


def _read_csv(path: Path) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(handle, dialect=dialect)
        header = next(reader, [])
        unknown = sorted(set(header) - set(CSV_COLUMNS))
        if unknown:
            raise PortfolioError(f"unknown CSV column(s) {unknown}; known columns: {', '.join(CSV_COLUMNS)}")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise PortfolioError(f"missing CSV column(s) {missing}")
        while True:
            first_line = reader.line_num + 1  # a quoted cell may span lines: report where the record starts
            try:
                values = next(reader)
            except StopIteration:
                return
            if not values:
                continue  # a blank line
            if len(values) > len(header):
                yield Row(
                    line=first_line, item=None, error=f"{len(values)} cells, but the header has {len(header)}"
                )
                continue
            yield Row(line=first_line, item=csv_row_to_request(dict(zip(header, values, strict=False))))


def _read_ndjson(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield Row(line=number, item=json.loads(line))
            except json.JSONDecodeError as exc:
                yield Row(line=number, item=None, error=f"not valid JSON: {exc.msg} at column {exc.colno}")


def count_rows(path: Path, fmt: str | None = None) -> int:
    fmt = fmt or detect_format(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        if fmt == "csv":
            # csv.DictReader skips empty rows; count the same way.
            return max(sum(1 for row in csv.reader(handle) if row) - 1, 0)
        return sum(1 for line in handle if line.strip())
