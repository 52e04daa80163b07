"""``orchestrator explain CONTACT_ID`` replays a stored decision from its stored inputs, for real: the CLI in
a subprocess against the test database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.explain import differences
from orchestrator.policy.rules import DEFAULT_RULES_FILE
from orchestrator.settings import Settings
from tests.conftest import bearer, drain
from tests.factories import contact_payload, national_id, open_clock
from tests.test_cli import arun_cli, cli_env, explain


async def test_explain_replays_the_stored_decision_and_shows_what_today_s_rules_change(
    client: Any, settings: Settings, api_key: str, tmp_path: Path
) -> None:
    fnr = national_id("060763", "120")
    r = await client.post(
        "/v1/contacts", json=contact_payload(1, debtor__national_id=fnr), headers=bearer(api_key)
    )
    contact_id = (await r.json())["id"]
    await drain(settings, clock=open_clock())
    view = await (await client.get(f"/v1/contacts/{contact_id}", headers=bearer(api_key))).json()
    assert view["decision"]["channel"] == "email"

    env = {**cli_env(settings), "ORCH_RULES_FILE": str(settings.rules_file)}
    same = await arun_cli("explain", contact_id, env=env, cwd=tmp_path)
    assert same.returncode == 0, explain(same)
    assert "the same decision" in same.stdout
    assert "channel:      email via outbox" in same.stdout
    assert "not sms: ranked_lower:cost_nok=0.45" in same.stdout

    # Tomorrow e-mail costs more than a letter: the replay shows the decision would go another way.
    dearer = tmp_path / "rules.toml"
    dearer.write_text(
        DEFAULT_RULES_FILE.read_text(encoding="utf-8")
        .replace('version = "no-2026.12-1"', 'version = "no-2027.01-1"')
        .replace("email = 0.05", "email = 20.00"),
        encoding="utf-8",
    )
    changed = await arun_cli("explain", contact_id, env={**env, "ORCH_RULES_FILE": str(dearer)}, cwd=tmp_path)
    assert changed.returncode == 0, explain(changed)
    assert "under today's rule set no-2027.01-1" in changed.stdout
    assert "channel: 'email' -> 'sms'" in changed.stdout
    assert "email: chosen -> ranked_lower:cost_nok=20.00" in changed.stdout
    for output in (same.stdout + same.stderr, changed.stdout + changed.stderr):
        assert fnr not in output  # R9: masked only


async def test_explain_an_unknown_contact_is_a_clear_error(
    settings: Settings, tmp_path: Path, sessions: Any
) -> None:
    result = await arun_cli("explain", "01NOSUCHCONTACT0000000000", env=cli_env(settings), cwd=tmp_path)
    assert result.returncode == 2
    assert "no contact with id '01NOSUCHCONTACT0000000000'" in result.stderr


def test_differences_name_each_change() -> None:
    stored = {
        "outcome": "send",
        "channel": "email",
        "reasons": ["cheapest_lawful_reachable_channel"],
        "rejected": [{"channel": "sms", "reason": "ranked_lower:cost_nok=0.45"}],
    }
    today = {
        "outcome": "held",
        "channel": None,
        "status_reason": "dispute",
        "reasons": ["case_held:dispute"],
        "rejected": [],
    }
    assert differences(stored, today) == [
        "outcome: 'send' -> 'held'",
        "channel: 'email' -> None",
        "status_reason: None -> 'dispute'",
        "reason no longer given: cheapest_lawful_reachable_channel",
        "new reason: case_held:dispute",
        "sms: ranked_lower:cost_nok=0.45 -> not considered",
    ]
    assert differences(stored, stored) == []
