"""The template linter: the shipped library passes it in every language; each kind of broken template fails
it with a message naming the template and the rule; a language fallback is reported and recorded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from orchestrator.jobs import process_contact
from orchestrator.models import Attempt
from orchestrator.rendering import (
    CHANNEL_FILES,
    Renderer,
    available_templates,
    sample_context,
    templates_root,
)
from orchestrator.settings import Settings
from orchestrator.template_lint import Finding, LintReport, contexts, lint_templates
from orchestrator.worker import shutdown, startup
from tests.conftest import SmtpRecorder, bearer, make_client
from tests.factories import contact_payload

LANGUAGES = ("nb", "nn", "en")


@pytest.fixture(scope="module")
def shipped() -> LintReport:
    return lint_templates(Renderer())


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A copy of the shipped templates to break."""
    root = tmp_path / "templates"
    shutil.copytree(templates_root(), root)
    return root


def edit(root: Path, relative: str, old: str, new: str) -> None:
    path = root / "messages" / relative
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def errors(root: Path, language: str = "nb") -> list[Finding]:
    return lint_templates(Renderer(root), languages=[language]).errors


def test_the_shipped_library_passes_in_every_language(shipped: LintReport) -> None:
    assert shipped.errors == [], "\n".join(map(str, shipped.errors[:20]))
    assert shipped.fallbacks == []  # every variant is written in every language


def test_every_kind_variant_and_channel_is_rendered_in_every_language(shipped: LintReport) -> None:
    renderer = Renderer()
    expected = 0
    kinds = {
        "reminder": {"email", "letter", "sms", "chat_link", "digital_mailbox"},
        "inkassovarsel": {"email", "letter", "sms", "digital_mailbox"},
        "betalingsoppfordring": {"email", "letter", "digital_mailbox"},
        "payment_plan_offer": {"email", "letter", "sms", "chat_link", "digital_mailbox"},
        "payment_plan_confirmation": {"email", "letter", "sms", "digital_mailbox"},
        "address_request": {"email", "letter", "sms", "digital_mailbox"},
        "dispute_acknowledgement": {"email", "letter", "sms", "digital_mailbox"},
        "payment_confirmation": {"email", "letter", "sms", "digital_mailbox"},
    }
    found = available_templates(renderer)
    for language in LANGUAGES:
        for kind, channels in kinds.items():
            variants = renderer.catalogue.variants_for(kind)
            assert len(variants) >= 4, kind  # the control and at least three principles
            for variant in variants:
                for channel in CHANNEL_FILES:
                    assert ((language, kind, variant, channel) in found) == (channel in channels), (
                        language,
                        kind,
                        variant,
                        channel,
                    )
                expected += len(channels) * len(contexts(language, kind))
    assert shipped.rendered == expected


def test_statutory_notices_never_go_by_sms_or_chat_link() -> None:
    found = available_templates(Renderer())
    assert not [t for t in found if t[1] == "betalingsoppfordring" and t[3] in ("sms", "chat_link")]


def test_every_variant_names_its_principle_and_evidence() -> None:
    catalogue = Renderer().catalogue
    assert set(catalogue.variants) == {
        "neutral",
        "personalisation",
        "simplicity",
        "truthful_consequences",
        "social_norm",
        "loss_framing",
        "reciprocity",
        "commitment",
        "commission_framing",
    }
    for name, spec in catalogue.variants.items():
        assert spec.principle == name
        assert spec.evidence and all(len(line) > 40 for line in spec.evidence)


@pytest.mark.parametrize("language", LANGUAGES)
def test_variants_really_differ_in_every_language(language: str) -> None:
    renderer = Renderer()
    context = sample_context(language, "reminder")
    texts = {
        variant: renderer.render(
            language=language, kind="reminder", variant=variant, channel="sms", context=context
        ).text
        for variant in renderer.catalogue.variants_for("reminder")
    }
    assert len(set(texts.values())) == len(texts)
    assert all(len(text) <= 306 for text in texts.values())


@pytest.mark.parametrize(
    ("relative", "old", "new", "check", "message"),
    [
        (
            "nb/reminder/neutral/sms.txt",
            "{{ case.reference }}",
            "{{ case.nickname }}",
            "renders",
            "nb/reminder/neutral/sms.txt:3: 'dict object' has no attribute 'nickname'",
        ),
        (
            "nb/reminder/neutral/email.subject.txt",
            "Påminnelse",
            "Inkassopåminnelse",
            "R7_subject",
            "inkassopåminnelse",
        ),
        ("nb/reminder/neutral/sms.txt", "er ubetalt", "er sendt til inkasso", "R7_short_message", "inkasso"),
        (
            "nb/reminder/neutral/sms.txt",
            "er ubetalt",
            "er ubetalt " + "og må betales " * 20,
            "sms_segments",
            "segments",
        ),
        ("nb/reminder/neutral/sms.txt", "er ubetalt", "er ubetalt – snart", "sms_gsm7", "'–'"),
        (
            "nb/reminder/neutral/email.txt",
            "Hei ",
            "Hei {{ debtor.national_id }} ",
            "R9_placeholder",
            "national_id",
        ),
        (
            "nb/betalingsoppfordring/neutral/letter.html",
            "rettslige skritt",
            "andre skritt",
            "statutory_content",
            "rettslige skritt",
        ),
        (
            "nb/inkassovarsel/neutral/email.txt",
            "{{ case.principal|nok }}",
            "",
            "statutory_content",
            "the principal",
        ),
        ("nb/reminder/neutral/email.txt", "kan det påløpe", "vil det påløpe", "R7_will", "vil det påløpe"),
    ],
)
def test_a_broken_template_fails_with_a_precise_message(
    library: Path, relative: str, old: str, new: str, check: str, message: str
) -> None:
    edit(library, relative, old, new)
    found = errors(library)
    assert found, "the linter let the broken template through"
    matching = [f for f in found if f.check == check]
    assert matching, [str(f) for f in found]
    kind = relative.split("/")[1]
    assert any(kind in f.template for f in matching)
    assert any(message in str(f) for f in matching), [str(f) for f in matching]


def test_a_variant_that_changes_nothing_fails(library: Path) -> None:
    tone = library / "messages" / "nb" / "_tone" / "social_norm.txt"
    tone.write_text(
        "{% set simple = false %}"
        + "".join(
            f"{{% macro {m}(channel) %}}{{% endmacro %}}"
            for m in ("lead", "action", "consequence", "signoff")
        ),
        encoding="utf-8",
    )
    found = [f for f in errors(library) if f.check == "variant_differs"]
    assert any(f.template == "nb/reminder/social_norm/sms" for f in found)
    assert "renders exactly like 'neutral'" in str(found[0])


def test_a_tone_module_missing_a_slot_fails(library: Path) -> None:
    tone = library / "messages" / "nb" / "_tone" / "reciprocity.txt"
    text = tone.read_text(encoding="utf-8")
    start = text.index("{% macro signoff")
    tone.write_text(text[:start], encoding="utf-8")
    found = [f for f in errors(library) if f.check in ("tone_module", "renders")]
    assert any(f.check == "tone_module" and "does not define signoff" in f.message for f in found)


def test_a_missing_translation_falls_back_explicitly(library: Path) -> None:
    (library / "messages" / "nn" / "reminder" / "neutral" / "sms.txt").unlink()
    report = lint_templates(Renderer(library), languages=["nn"])
    assert report.errors == []
    fallbacks = [
        f for f in report.fallbacks if f.template.startswith("nn/reminder/") and f.template.endswith("/sms")
    ]
    assert {f.template for f in fallbacks} == {
        f"nn/reminder/{v}/sms" for v in Renderer(library).catalogue.variants_for("reminder")
    }
    assert "falls back to 'nb'" in fallbacks[0].message
    message = Renderer(library).render(
        language="nn",
        kind="reminder",
        variant="neutral",
        channel="sms",
        context=sample_context("nb", "reminder"),
    )
    assert (message.template, message.language, message.fallback_from) == (
        "nb/reminder/neutral/sms",
        "nb",
        "nn",
    )


def test_a_language_without_fallback_and_without_the_file_is_an_error(library: Path) -> None:
    catalogue = library / "messages" / "variants.toml"
    catalogue.write_text(
        catalogue.read_text(encoding="utf-8").replace('name = "English"\nfallback = "nb"', 'name = "English"')
    )
    (library / "messages" / "en" / "reminder" / "neutral" / "sms.txt").unlink()
    found = [f for f in errors(library, "en") if f.check == "missing"]
    assert any("en/reminder/neutral/sms.txt" in f.message for f in found)


def lint_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # A separate process: the CLI configures logging for the whole process.
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "lint-templates", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_lint_templates(library: Path) -> None:
    shipped = lint_cli()
    assert shipped.returncode == 0, shipped.stdout[-2000:]
    assert "0 errors" in shipped.stderr
    edit(library, "nb/reminder/neutral/email.subject.txt", "Påminnelse", "Inkassopåminnelse")
    broken = lint_cli("--root", str(library), "--language", "nb")
    assert broken.returncode == 1
    assert "error: nb/reminder/neutral/email: [R7_subject]" in broken.stdout
    assert "errors" in broken.stderr


# ------------------------------------------------------------------------------ the fallback on the attempt

OSLO = ZoneInfo("Europe/Oslo")


@pytest.fixture
async def worker(
    smtp_settings: Settings, smtp_server: SmtpRecorder, sessions: Any, api_key: str, redis: Any, library: Path
) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    for name in ("email.txt", "email.html", "email.subject.txt"):
        (library / "messages" / "nn" / "reminder" / "neutral" / name).unlink()
    client = await make_client(smtp_settings)
    ctx: dict[str, Any] = {
        "settings": smtp_settings,
        "redis": redis,
        "clock": lambda: datetime(2026, 11, 30, 10, 0, tzinfo=OSLO).astimezone(UTC),
    }
    await startup(ctx)
    state = ctx["state"]
    state.renderer = Renderer(library)
    state.templates = available_templates(state.renderer)
    try:
        yield client, ctx
    finally:
        await shutdown(ctx)
        await client.close()


async def test_the_fallback_is_recorded_on_the_attempt(
    worker: tuple[Any, dict[str, Any]], sessions: Any, api_key: str, smtp_server: SmtpRecorder
) -> None:
    client, ctx = worker
    r = await client.post("/v1/contacts", json=contact_payload(1, language="nn"), headers=bearer(api_key))
    assert r.status == 202
    contact_id = (await r.json())["id"]
    assert await process_contact(ctx, contact_id) == "sent"
    async with sessions() as session:
        attempt = await session.scalar(select(Attempt).where(Attempt.contact_id == contact_id))
    assert attempt is not None
    assert (attempt.channel, attempt.template, attempt.template_fallback) == (
        "email",
        "nb/reminder/neutral/email",
        "nn",
    )
    assert len(smtp_server.messages) == 1


def test_an_error_in_a_shared_part_names_the_part_and_its_line(library: Path) -> None:
    part = library / "messages" / "nb" / "_parts" / "letter.html"
    lines = part.read_text(encoding="utf-8").splitlines()
    target = next(i for i, line in enumerate(lines) if "case.principal" in line)
    lines[target] = lines[target].replace("case.principal", "case.principle", 1)
    part.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = [f for f in errors(library) if f.check == "renders"]
    assert found
    assert f"(at nb/_parts/letter.html:{target + 1}): 'dict object' has no attribute 'principle'" in str(
        found[0]
    )
