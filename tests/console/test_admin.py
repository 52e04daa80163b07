"""Accounts made on the command line, roles, the admin page and its access log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings
from tests.console.conftest import signed_in
from tests.test_cli import arun_cli, cli_env


async def test_create_operator_prints_a_password_that_signs_in(
    settings: Settings, sessions: Any, console_factory: Any, tmp_path: Path
) -> None:
    result = await arun_cli(
        "create-operator",
        "kari.hansen",
        "--role",
        "operator",
        "--name",
        "Kari Hansen",
        env=cli_env(settings),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    password = result.stdout.strip()
    assert len(password) >= 16 and "\n" not in password
    assert "'kari.hansen' (operator) created" in result.stderr
    console = await console_factory()
    response = await console.sign_in("kari.hansen", password)
    assert response.status == 200
    assert "Kari Hansen (operator)" in await response.text()

    again = await arun_cli(
        "create-operator", "kari.hansen", "--role", "admin", env=cli_env(settings), cwd=tmp_path
    )
    assert again.returncode == 2
    assert "exists; pass --reset" in again.stderr


async def test_create_operator_refuses_a_short_password_and_an_unknown_role(
    settings: Settings, sessions: Any, tmp_path: Path
) -> None:
    short = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "orchestrator",
            "create-operator",
            "per",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        input="short\n",
        env=cli_env(settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert short.returncode == 2
    assert "at least 12 characters" in short.stderr
    assert short.stdout == ""
    role = await arun_cli("create-operator", "per", "--role", "boss", env=cli_env(settings), cwd=tmp_path)
    assert role.returncode == 2
    assert "invalid choice: 'boss'" in role.stderr


async def test_only_an_admin_sees_the_admin_page_and_the_access_log(
    console_factory: Any, operators: dict[str, str]
) -> None:
    otto = await signed_in(console_factory, "otto")
    refused = await otto.get("/console/admin")
    assert refused.status == 403
    assert "This needs the role “admin”; you are signed in as “operator”" in await refused.text()
    assert 'href="/console/admin"' not in await otto.page("/console/search")

    ada = await signed_in(console_factory, "ada")
    page = await ada.page("/console/admin")
    for username in ("vera", "otto", "ada"):
        assert f"<td>{username}</td>" in page
    # the refusal of otto and both sign-ins are in the log
    assert "refused" in page and page.count("<td>login</td>") == 2


async def test_disabling_an_operator_ends_their_session_at_once(
    console_factory: Any, operators: dict[str, str]
) -> None:
    otto = await signed_in(console_factory, "otto")
    ada = await signed_in(console_factory, "ada")
    await ada.page("/console/admin")
    response = await ada.post("/console/admin/disable", {"username": "otto"})
    assert response.status == 200
    assert "disabled" in await response.text()
    assert (await otto.get("/console/search", allow_redirects=False)).status == 303
    assert (await otto.sign_in("otto")).status == 401
