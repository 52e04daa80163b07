"""``orchestrator import-returns FILE``: returned letters in a file move their contacts to ``returned``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings
from tests.conftest import bearer, drain
from tests.factories import contact_payload, open_clock


def _run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(
        {
            "ORCH_REDIS_URL": str(settings.redis_url),
            "ORCH_DATABASE_URL": str(settings.database_url),
            "ORCH_QUEUE_NAME": settings.queue_name,
            "ORCH_STATE_DIR": str(settings.state_dir),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "import-returns", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_returned_letter_in_a_file_moves_its_contact_once(
    client: Any, settings: Settings, api_key: str, tmp_path: Path
) -> None:
    payload = contact_payload(1, debtor__phones=[], debtor__emails=[], debtor__electronic_notice_evidence=[])
    r = await client.post("/v1/contacts", json=payload, headers=bearer(api_key))
    contact_id = (await r.json())["id"]
    await drain(settings, clock=open_clock())
    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    [attempt] = contact["attempts"]
    assert attempt["channel"] == "letter"

    returns = tmp_path / "returns.csv"
    returns.write_text(
        "reference;reason;returned_at\n"
        f"{contact_id}.{attempt['id']};returned_unknown_addressee;2026-11-20\n"
        "not-a-reference;returned_moved;2026-11-20\n",
        encoding="utf-8",
    )
    first = await asyncio.to_thread(_run, settings, str(returns))
    again = await asyncio.to_thread(_run, settings, str(returns))
    await drain(settings, clock=open_clock())

    assert first.returncode == 1  # one row could not be read: reported, the rest kept
    assert "line 3:" in first.stderr
    assert "1 new" in first.stderr
    assert "0 new, 1 already known" in again.stderr
    contact = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    assert (contact["status"], contact["status_reason"]) == ("returned", "returned_unknown_addressee")
    returned = [e for e in contact["attempts"][0]["events"] if e["type"] == "carrier_event"]
    assert [e["status"] for e in returned] == ["returned"]


def test_an_unrecognised_file_is_refused_with_a_clear_message(settings: Settings, tmp_path: Path) -> None:
    odd = tmp_path / "odd.txt"
    odd.write_text("hello\nworld\n", encoding="utf-8")
    result = _run(settings, str(odd))
    assert result.returncode == 2
    assert "orchestrator import-returns:" in result.stderr
    assert "Traceback" not in result.stderr
