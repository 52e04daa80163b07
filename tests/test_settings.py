"""Settings come from ORCH_* variables, and the README documents every one of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme_table_and_nothing_else() -> None:
    documented = set(
        re.findall(r"^\| `(ORCH_[A-Z0-9_]+)` \|", README.read_text(encoding="utf-8"), re.MULTILINE)
    )
    actual = {f"ORCH_{name.upper()}" for name in Settings.model_fields}
    assert documented == actual


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_HTTP_PORT", "9999")
    monkeypatch.setenv("ORCH_SMTP_PASSWORD", "hunter2")
    monkeypatch.delenv("ORCH_DATABASE_URL", raising=False)
    settings = Settings(state_dir=Path("/srv/orch"))
    assert settings.http_port == 9999
    assert settings.resolved_database_url == "sqlite+aiosqlite:////srv/orch/orchestrator.sqlite3"
    assert "hunter2" not in repr(settings)  # secrets never printed
    assert settings.smtp_password is not None and settings.smtp_password.get_secret_value() == "hunter2"


def test_bad_settings_are_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_SMTP_SECURITY", "ssl")
    with pytest.raises(ValueError, match="smtp_security"):
        Settings()
