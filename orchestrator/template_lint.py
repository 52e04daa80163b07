"""The template linter: every message in the library, checked the way it will be sent.

``orchestrator lint-templates`` and the test suite run :func:`lint_templates` over the shipped library. For
every language of the catalogue, every kind, every variant written for that kind and every channel the kind
has, it renders the message with sample data (a person with every optional value, without them, and an
organisation) under ``StrictUndefined`` and checks:

- it renders (an undefined name or a bad value names the template and line);
- it exists in that language, or falls back explicitly (the catalogue's ``fallback``): a fallback is reported
  as such, never silently;
- a variant says something the neutral message does not (a variant that changes nothing tests nothing);
- a tone module defines every slot (``lead``, ``action``, ``consequence``, ``signoff``, ``simple``);
- statutory content: an inkassovarsel (R1) and a betalingsoppfordring (R2) carry the creditor, the claim, the
  itemised amount, the interest, the deadline and the statutory sentences of their language;
- R7: no "inkasso" in a subject, an SMS or chat-link text, or the preview of an e-mail; costs "may", never
  "will", accrue;
- R9: no national id in a template's source for SMS or e-mail, nor in what it renders;
- SMS and chat-link texts are GSM-7 and fit the configured number of segments.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

from channels.sms.encoding import analyse
from orchestrator.policy.content_guard import inkasso_words, masked_national_ids
from orchestrator.rendering import (
    CHANNEL_FILES,
    TONE_FLAGS,
    TONE_MACROS,
    RenderedMessage,
    Renderer,
    RenderError,
    TemplateNotFound,
    date_en,
    date_no,
    html_to_text,
    nok,
    nok_en,
    percent,
    percent_en,
    sample_context,
)
from orchestrator.variants import CONTROL_VARIANT

__all__ = ["Finding", "LintReport", "lint_templates"]

STATUTORY_KINDS: Final = ("inkassovarsel", "betalingsoppfordring")
SHORT_CHANNELS: Final = ("sms", "chat_link")
# What each statutory notice must say in so many words, per language (regular expressions, case-insensitive).
STATUTORY_PHRASES: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    "inkassovarsel": {
        "nb": ("inkassovarsel", "kan kravet bli sendt til inkasso", "kan det påløpe"),
        "nn": ("inkassovarsel", "kan kravet bli sendt til inkasso", "kan det påløpe"),
        "en": ("notice of debt collection", "may be sent to debt collection", r"\bmay\b"),
    },
    "betalingsoppfordring": {
        "nb": (
            "betalingsoppfordring",
            "kan det påløpe flere kostnader",
            "rettslige skritt",
            "innsigelse",
            "klage",
        ),
        "nn": (
            "betalingsoppfordring",
            "kan det påløpe fleire kostnader",
            "rettslege steg",
            "innsigelse",
            "klage",
        ),
        "en": ("demand for payment", "further costs may", "legal steps", r"\bobject", "complaint"),
    },
}
# "Will" before a cost or a step: a threat, not a possibility (R7).
WILL_THREATS: Final[Mapping[str, re.Pattern[str]]] = {
    "nb": re.compile(r"\bvil\b[^.]*\b(påløpe|bli sendt|inkasso)", re.IGNORECASE),
    "nn": re.compile(r"\bvil\b[^.]*\b(påløpe|bli sendt|inkasso)", re.IGNORECASE),
    "en": re.compile(
        r"\bwill\b[^.]*\b(accrue|be charged|be sent to debt collection|legal action)", re.IGNORECASE
    ),
}
NATIONAL_ID_NAMES: Final = re.compile(
    r"national_id|f(?:ø|o)dselsnummer|personnummer|\bfnr\b|\bssn\b|\bnin\b", re.IGNORECASE
)
# A valid synthetic national id planted in the context: it must never come out of a template.
PLANTED_NATIONAL_ID: Final = "13097248022"
PREVIEW_CHARS: Final = 150


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "fallback"]
    template: str  # "nb/reminder/social_norm/sms", or a file path for a tone module
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.template}: [{self.check}] {self.message}"


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)
    rendered: int = 0  # messages rendered

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def fallbacks(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "fallback"]

    def add(self, level: Literal["error", "fallback"], template: str, check: str, message: str) -> None:
        finding = Finding(level, template, check, message)
        if finding not in self.findings:
            self.findings.append(finding)


def contexts(language: str, kind: str) -> dict[str, dict[str, Any]]:
    """The sample data each message is rendered with: everything given, nothing optional, an organisation."""
    sample = sample_context(language, kind)
    bare = copy.deepcopy(sample)
    bare["case"].update(interest=None, kid=None, account_number=None)
    bare.update(self_service_url=None, deadline=None)
    organisation = copy.deepcopy(bare)
    organisation["creditor"]["organisation_number"] = None
    organisation["case"]["costs"] = []
    organisation["case"]["total"] = organisation["case"]["principal"]
    organisation["recipient"]["address_lines"] = []
    organisation["debtor"] = {"name": "Fjellbakeriet AS", "first_name": "", "type": "organisation"}
    organisation["variables"] = {}
    return {"sample": sample, "without optional values": bare, "organisation": organisation}


def _kinds(renderer: Renderer) -> dict[str, set[str]]:
    """Each kind in the library and the channels it has: those with a neutral message in some language."""
    found: dict[str, set[str]] = {}
    root = renderer.messages_dir
    for neutral in root.glob(f"*/*/{CONTROL_VARIANT}"):
        language, kind = neutral.relative_to(root).parts[:2]
        if language.startswith("_") or kind.startswith("_"):
            continue
        channels = found.setdefault(kind, set())
        for channel, files in CHANNEL_FILES.items():
            if all((neutral / name).is_file() for name in files.values()):
                channels.add(channel)
    return found


def _bodies(message: RenderedMessage) -> list[str]:
    """The text, and the visible text of the HTML, flattened to single spaces."""
    found = [message.text]
    if message.html is not None:
        found.append(html_to_text(message.html))
    return [" ".join(body.split()) for body in found]


def _money(language: str, amount: Decimal) -> str:
    return nok_en(amount) if language == "en" else nok(amount)


def _date(language: str, value: Any) -> str:
    return date_en(value) if language == "en" else date_no(value)


def _statutory(
    report: LintReport,
    name: str,
    kind: str,
    language: str,
    context: Mapping[str, Any],
    message: RenderedMessage,
) -> None:
    case = context["case"]
    expected: list[tuple[str, str]] = [
        ("the creditor", context["creditor"]["name"]),
        ("the claim's reference", str(case["reference"])),
        ("the principal", _money(language, case["principal"])),
        ("the total", _money(language, case["total"])),
        ("our reference", context["contact_reference"]),
    ]
    for cost in case["costs"]:
        expected += [
            (f"the cost {cost['label']!r}", cost["label"]),
            ("its amount", _money(language, cost["amount"])),
        ]
    if case["interest"]:
        rate = case["interest"]["rate_percent"]
        expected += [
            ("the interest rate", percent_en(rate) if language == "en" else percent(rate)),
            ("the date interest runs from", _date(language, case["interest"]["from"])),
        ]
    if context["deadline"] is not None:
        expected.append(("the deadline", _date(language, context["deadline"])))
    else:
        expected.append(("14 days from the send date", _date(language, context["send_date"])))
    for body in _bodies(message):
        for what, value in expected:
            if value not in body:
                report.add("error", name, "statutory_content", f"{kind} does not state {what} ({value!r})")
        if context["deadline"] is None and "14" not in body:
            report.add("error", name, "statutory_content", f"{kind} without a deadline must say 14 days")
        for phrase in STATUTORY_PHRASES[kind].get(language, ()):
            if not re.search(phrase, body, re.IGNORECASE):
                report.add("error", name, "statutory_content", f"{kind} must say {phrase!r} ({language})")


def _check_message(
    report: LintReport,
    name: str,
    kind: str,
    channel: str,
    language: str,
    context: Mapping[str, Any],
    message: RenderedMessage,
    sms_max_segments: int,
) -> None:
    if message.subject is not None and (words := inkasso_words(message.subject)):
        report.add("error", name, "R7_subject", f"the subject says {', '.join(words)!r}: {message.subject!r}")
    if channel in SHORT_CHANNELS:
        if words := inkasso_words(message.text):
            report.add("error", name, "R7_short_message", f"the text says {', '.join(words)!r}")
        encoding = analyse(message.text)
        if encoding.encoding != "GSM-7":
            odd = sorted({ch for ch in message.text if analyse(ch).encoding != "GSM-7"})
            report.add("error", name, "sms_gsm7", f"characters outside GSM-7 force UCS-2: {odd!r}")
        elif encoding.segments > sms_max_segments:
            report.add(
                "error",
                name,
                "sms_segments",
                f"{encoding.units} characters need {encoding.segments} segments (at most {sms_max_segments})",
            )
    if channel == "email" and (words := inkasso_words(message.text[:PREVIEW_CHARS])):
        report.add(
            "error", name, "R7_preview", f"the first {PREVIEW_CHARS} characters say {', '.join(words)!r}"
        )
    threat = WILL_THREATS.get(language)
    for body in _bodies(message):
        if threat is not None and (match := threat.search(body)):
            report.add("error", name, "R7_will", f"a cost or step that 'will' happen: {match.group(0)!r}")
        if masked_national_ids(body) or masked_national_ids(message.subject or ""):
            report.add("error", name, "R9_national_id", "a national id is in the rendered message")
    if kind in STATUTORY_KINDS and channel in ("email", "letter", "digital_mailbox"):
        _statutory(report, name, kind, language, context, message)


def _check_sources(report: LintReport, renderer: Renderer) -> None:
    """R9 in the sources: no SMS, chat-link or e-mail template (nor a tone module) names a national id."""
    root = renderer.messages_dir
    short_and_email = {name for ch in ("sms", "chat_link", "email") for name in CHANNEL_FILES[ch].values()}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        if path.name in short_and_email or "/_tone/" in f"/{relative}":
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if match := NATIONAL_ID_NAMES.search(line):
                    report.add(
                        "error",
                        f"{relative}:{lineno}",
                        "R9_placeholder",
                        f"names a national id: {match.group(0)!r}",
                    )


def _check_tone_modules(report: LintReport, renderer: Renderer) -> None:
    root = renderer.messages_dir
    catalogue = renderer.catalogue
    for path in sorted(root.glob("*/_tone/*.txt")):
        relative = path.relative_to(root).as_posix()
        variant = path.stem
        if variant not in catalogue.variants:
            report.add("error", relative, "tone_module", f"no variant {variant!r} in the catalogue")
            continue
        try:
            module = renderer.env.get_template(relative).make_module(sample_context(path.parts[-3]))
        except Exception as exc:  # a syntax error or an undefined name at import
            report.add("error", relative, "tone_module", f"cannot load: {exc}")
            continue
        missing = [name for name in (*TONE_MACROS, *TONE_FLAGS) if not hasattr(module, name)]
        if missing:
            report.add("error", relative, "tone_module", f"does not define {', '.join(missing)}")


def lint_templates(
    renderer: Renderer | None = None, *, sms_max_segments: int = 2, languages: Iterable[str] | None = None
) -> LintReport:
    renderer = renderer or Renderer()
    report = LintReport()
    catalogue = renderer.catalogue
    kinds = _kinds(renderer)
    for variant, spec in catalogue.variants.items():
        if spec.kinds != "all":
            for kind in spec.kinds:
                if kind not in kinds:
                    report.add(
                        "error", f"variants.toml [{variant}]", "catalogue", f"no kind {kind!r} in the library"
                    )
    _check_sources(report, renderer)
    _check_tone_modules(report, renderer)
    for language in languages if languages is not None else catalogue.languages:
        for kind, channels in sorted(kinds.items()):
            for channel in sorted(channels):
                neutral: dict[str, RenderedMessage] = {}
                for variant in catalogue.variants_for(kind):
                    name = f"{language}/{kind}/{variant}/{channel}"
                    try:
                        used = renderer.resolved_language(
                            language=language, kind=kind, variant=variant, channel=channel
                        )
                    except TemplateNotFound as exc:
                        report.add("error", name, "missing", str(exc))
                        continue
                    if used != language:
                        report.add(
                            "fallback",
                            name,
                            "fallback",
                            f"not written in {language!r}: falls back to {used!r}",
                        )
                    for label, context in contexts(used, kind).items():
                        planted = copy.deepcopy(context)
                        planted["debtor"]["national_id"] = PLANTED_NATIONAL_ID
                        try:
                            message = renderer.render(
                                language=language,
                                kind=kind,
                                variant=variant,
                                channel=channel,
                                context=planted,
                            )
                        except RenderError as exc:
                            report.add("error", name, "renders", f"with {label} data: {exc}")
                            continue
                        report.rendered += 1
                        _check_message(report, name, kind, channel, used, context, message, sms_max_segments)
                        if variant == CONTROL_VARIANT:
                            neutral[label] = message
                        elif (
                            label == "sample"
                            and "sample" in neutral
                            and message.content_sha256 == neutral["sample"].content_sha256
                        ):
                            report.add(
                                "error",
                                name,
                                "variant_differs",
                                f"renders exactly like {CONTROL_VARIANT!r}: the variant changes nothing here",
                            )
    return report
