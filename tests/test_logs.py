"""R9: a national id never reaches a log line, whoever logs it."""

from __future__ import annotations

import logging

import pytest
import structlog

from orchestrator import logs
from tests.factories import national_id


def test_structlog_and_stdlib_lines_mask_national_ids(capsys: pytest.CaptureFixture[str]) -> None:
    fnr = national_id("060763", "120")
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    logs.configure("INFO", "json")
    try:
        logs.get_logger("test").info("looked up debtor", note=f"fnr {fnr}", nested={"ids": [fnr]})
        logging.getLogger("some.library").warning("request for %s failed", fnr)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert fnr not in err
    assert err.count("060763*****") == 3
