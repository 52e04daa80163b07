"""Rendering: every shipped template, the R1/R7/R9 wording rules, escaping, hashing, errors and filters."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from orchestrator.rendering import (
    SAMPLE_CONTEXT,
    RenderedMessage,
    Renderer,
    RenderError,
    TemplateNotFound,
    account_no,
    available_templates,
    date_no,
    date_short,
    html_to_text,
    kid,
    nok,
    percent,
    templates_root,
)

KINDS = ("reminder", "inkassovarsel")
CHANNELS = ("email", "letter", "sms")
VARIANTS = ("sample", "optional_none", "minimal")

# GSM 03.38 basic character set (without the ESC that introduces the extension table).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def is_gsm7(text: str) -> bool:
    return all(char in GSM7_BASIC for char in text)


def make_context(variant: str = "sample", kind: str = "inkassovarsel") -> dict[str, Any]:
    context = copy.deepcopy(SAMPLE_CONTEXT)
    context["kind"] = kind
    if variant in ("optional_none", "minimal"):
        context["case"].update(interest=None, kid=None, account_number=None)
        context["self_service_url"] = None
    if variant == "minimal":
        context["deadline"] = None
        context["creditor"]["organisation_number"] = None
        context["case"]["costs"] = []
        context["case"]["total"] = context["case"]["principal"]
        context["recipient"]["address_lines"] = []
        context["debtor"] = {"name": "Fjellbakeriet AS", "first_name": "", "type": "organisation"}
        context["variables"] = {}
    return context


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def render(renderer: Renderer, kind: str, channel: str, context: dict[str, Any]) -> RenderedMessage:
    return renderer.render(language="nb", kind=kind, variant="neutral", channel=channel, context=context)


def render_at(root: Path, kind: str, channel: str, context: dict[str, Any] | None = None) -> RenderedMessage:
    return render(Renderer(root), kind, channel, make_context() if context is None else context)


# ------------------------------------------------------------------------------------------- every template


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_template_renders(renderer: Renderer, kind: str, channel: str, variant: str) -> None:
    message = render(renderer, kind, channel, make_context(variant, kind))

    assert message.template == f"nb/{kind}/neutral/{channel}"
    assert re.fullmatch(r"[0-9a-f]{64}", message.content_sha256)
    assert "None" not in message.text
    if channel == "email":
        assert message.subject
        assert "\n" not in message.subject
        assert message.text.endswith("\n")
        assert not message.text.endswith("\n\n")
        assert message.html is not None
        assert message.html.startswith("<!DOCTYPE html>")
        assert "None" not in message.html
    elif channel == "letter":
        assert message.subject is None
        assert message.html is not None
        assert "None" not in message.html
    else:
        assert message.subject is None
        assert message.html is None
        assert message.text == " ".join(message.text.split())


@pytest.mark.parametrize("variant", ["sample", "optional_none"])
@pytest.mark.parametrize("kind", KINDS)
def test_key_facts_in_email_and_letter(renderer: Renderer, kind: str, variant: str) -> None:
    context = make_context(variant, kind)
    email = render(renderer, kind, "email", context)
    letter = render(renderer, kind, "letter", context)
    assert email.html is not None
    assert letter.html is not None

    for body in (email.text, email.html, letter.text, letter.html):
        assert "Kari Nordmann" in body
        assert "1 250,00 kr" in body
        assert "16. oktober 2026" in body  # deadline
        assert "01JB8Z6Q4M2XK7T9RDW3HV5NCE" in body  # our reference, to quote when paying or writing back
        assert "Hvis du mener kravet er feil, ta kontakt før fristen" in body
        if variant == "sample":
            assert "1002340014" in body  # KID
            assert "1503 12 34562" in body  # account number
        else:
            assert "KID" not in body


@pytest.mark.parametrize("channel", ["email", "letter"])
def test_inkassovarsel_content_r1(renderer: Renderer, channel: str) -> None:
    message = render(renderer, "inkassovarsel", channel, make_context("sample"))
    assert message.html is not None
    for body in (message.text, message.html):
        assert "inkassovarsel" in body.lower()
        assert "kan kravet bli sendt til inkasso" in body
        assert "kan det påløpe inkassokostnader" in body
        assert "Nordlys Energi AS" in body
        assert "100234" in body  # creditor's reference
        # itemised: principal, each cost, total
        assert "1 215,00 kr" in body
        assert "Purregebyr" in body
        assert "35,00 kr" in body
        assert "1 250,00 kr" in body
        # interest rate and the date it runs from
        assert "12,25 %" in body
        assert "15. september 2026" in body
        assert "Forsinkelsesrente" in body


@pytest.mark.parametrize("channel", ["email", "letter"])
@pytest.mark.parametrize("kind", KINDS)
def test_no_interest_paragraph_without_interest(renderer: Renderer, kind: str, channel: str) -> None:
    message = render(renderer, kind, channel, make_context("optional_none", kind))
    assert "forsinkelsesrente" not in message.text.lower()
    assert "12,25" not in message.text


@pytest.mark.parametrize("channel", ["email", "letter"])
def test_inkassovarsel_without_deadline_says_14_days(renderer: Renderer, channel: str) -> None:
    message = render(renderer, "inkassovarsel", channel, make_context("minimal"))
    assert "innen 14 dager etter 1. oktober 2026" in message.text


@pytest.mark.parametrize("channel", ["email", "letter"])
def test_reminder_shows_fee_and_due_date(renderer: Renderer, channel: str) -> None:
    message = render(renderer, "reminder", channel, make_context("sample", "reminder"))
    assert "Purregebyr: 35,00 kr" in message.text
    assert "forfalt 15. september 2026" in message.text
    assert "inkassovarsel" not in message.text.lower()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("channel", ["email", "letter"])
@pytest.mark.parametrize("kind", KINDS)
def test_costs_are_things_that_may_accrue(renderer: Renderer, kind: str, channel: str, variant: str) -> None:
    message = render(renderer, kind, channel, make_context(variant, kind))
    lowered = message.text.lower()
    assert not re.search(r"\bvil\b[^.]*\b(påløpe|bli sendt|inkasso)", lowered)


# ------------------------------------------------------------------------------------------- R7 discretion


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
def test_no_inkasso_in_subject_sms_or_letter_window(renderer: Renderer, kind: str, variant: str) -> None:
    context = make_context(variant, kind)
    email = render(renderer, kind, "email", context)
    sms = render(renderer, kind, "sms", context)
    letter = render(renderer, kind, "letter", context)
    assert email.subject is not None
    assert "inkasso" not in email.subject.lower()
    assert "inkasso" not in sms.text.lower()
    assert letter.html is not None
    window_part = letter.html.split("<h1", 1)[0]  # head, sender, recipient address, date block
    assert '<div class="recipient">' in window_part
    assert "inkasso" not in window_part.lower()
    # the first lines of the e-mail body show in notification previews too
    assert "inkasso" not in email.text[:150].lower()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
def test_sms_fits_and_is_gsm7(renderer: Renderer, kind: str, variant: str) -> None:
    sms = render(renderer, kind, "sms", make_context(variant, kind))
    assert len(sms.text) <= 306
    assert is_gsm7(sms.text), sorted(set(sms.text) - GSM7_BASIC)
    if variant == "sample":
        assert len(sms.text) <= 160, sms.text  # one segment with the sample data
        assert "https://betal.example.no/s/7Q4M2X" in sms.text
        assert "Kari" in sms.text
        assert "1 250,00 kr" in sms.text
        assert "16.10.2026" in sms.text
    if variant == "optional_none":
        assert "https://" not in sms.text
        assert "01JB8Z6Q4M2XK7T9RDW3HV5NCE" in sms.text


def test_gsm7_check_itself() -> None:
    assert is_gsm7("Hei Kåre Ødegård, Æ og æ: 1 250,00 kr @ 16.10.2026!")
    assert not is_gsm7("pris – 10 €")
    assert not is_gsm7("“sitat”")
    assert not is_gsm7("[klammer]")


# ------------------------------------------------------------------------------------------- letter layout


@pytest.mark.parametrize("kind", KINDS)
def test_letter_is_a_complete_a4_document(renderer: Renderer, kind: str) -> None:
    letter = render(renderer, kind, "letter", make_context("sample", kind))
    assert letter.html is not None
    html = letter.html
    assert html.startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")
    assert '<html lang="nb">' in html
    assert "@page" in html
    assert "size: A4" in html
    assert '"DejaVu Sans", sans-serif' in html
    recipient = html.split('<div class="recipient">', 1)[1].split("</div>", 1)[0]
    assert "Kari Nordmann" in recipient
    assert "Storgata 1" in recipient
    assert "0155 OSLO" in recipient
    assert "Dato: 1. oktober 2026" in html
    assert "Vår referanse: 01JB8Z6Q4M2XK7T9RDW3HV5NCE" in html
    assert '<div class="payment">' in html
    assert "Kari Nordmann\nStorgata 1\n0155 OSLO" in letter.text


@pytest.mark.parametrize("channel", ["email", "letter"])
@pytest.mark.parametrize("kind", KINDS)
def test_html_has_no_external_resources(renderer: Renderer, kind: str, channel: str) -> None:
    message = render(renderer, kind, channel, make_context("sample", kind))
    assert message.html is not None
    html = message.html.lower()
    assert "<img" not in html
    assert "<link" not in html
    assert "<script" not in html
    assert "@import" not in html
    assert "url(" not in html
    assert "@font-face" not in html


# ------------------------------------------------------------------------------------- escaping, hashing


@pytest.mark.parametrize("kind", KINDS)
def test_html_is_escaped_text_is_verbatim(renderer: Renderer, kind: str) -> None:
    context = make_context("sample", kind)
    evil = "<script>alert('x')</script> & Co"
    context["debtor"]["name"] = evil
    context["recipient"]["name"] = evil
    email = render(renderer, kind, "email", context)
    letter = render(renderer, kind, "letter", context)
    sms = render(renderer, kind, "sms", {**context, "debtor": {**context["debtor"], "type": "organisation"}})
    for html in (email.html, letter.html):
        assert html is not None
        assert "<script>" not in html
        assert "&lt;script&gt;" in html
        assert "&amp; Co" in html
    assert evil in email.text
    assert evil in letter.text
    assert evil in sms.text


def test_content_sha256_is_stable_and_content_bound(renderer: Renderer) -> None:
    first = render(renderer, "inkassovarsel", "email", make_context())
    again = Renderer().render(
        language="nb", kind="inkassovarsel", variant="neutral", channel="email", context=make_context()
    )
    assert first == again
    expected = hashlib.sha256(
        json.dumps(
            [first.subject, first.text, first.html], ensure_ascii=False, separators=(",", ":")
        ).encode()
    )
    assert first.content_sha256 == expected.hexdigest()

    changed_context = make_context()
    changed_context["case"]["total"] = Decimal("1250.01")
    changed = render(renderer, "inkassovarsel", "email", changed_context)
    assert changed.content_sha256 != first.content_sha256

    sms = render(renderer, "inkassovarsel", "sms", make_context())
    sms_changed = render(renderer, "inkassovarsel", "sms", {**make_context(), "deadline": date(2026, 10, 19)})
    assert sms.content_sha256 != sms_changed.content_sha256


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("channel", CHANNELS)
def test_missing_variable_raises_render_error_naming_the_template(renderer: Renderer, channel: str) -> None:
    context = make_context()
    del context["case"]
    with pytest.raises(RenderError, match=r"nb/inkassovarsel/neutral/") as excinfo:
        render(renderer, "inkassovarsel", channel, context)
    assert excinfo.value.template.startswith("nb/inkassovarsel/neutral/")
    assert "'case' is undefined" in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_missing_nested_key_raises_render_error(renderer: Renderer) -> None:
    context = make_context()
    del context["case"]["kid"]
    with pytest.raises(RenderError, match="kid"):
        render(renderer, "reminder", "email", context)


def test_syntax_error_raises_render_error_with_line(tmp_path: Path) -> None:
    folder = tmp_path / "messages" / "nb" / "broken" / "neutral"
    folder.mkdir(parents=True)
    (folder / "sms.txt").write_text("Hei {{ debtor.name }}\n{% if %}\n")
    with pytest.raises(RenderError, match=r"nb/broken/neutral/sms\.txt:2") as excinfo:
        render_at(tmp_path, "broken", "sms")
    assert excinfo.value.lineno == 2


def test_bad_value_for_a_filter_raises_render_error(renderer: Renderer) -> None:
    context = make_context()
    context["case"]["total"] = "mye penger"
    with pytest.raises(RenderError, match=r"nb/inkassovarsel/neutral/sms\.txt.*not an amount"):
        render(renderer, "inkassovarsel", "sms", context)


def test_sandbox_blocks_unsafe_attribute_access(tmp_path: Path) -> None:
    folder = tmp_path / "messages" / "nb" / "evil" / "neutral"
    folder.mkdir(parents=True)
    (folder / "sms.txt").write_text("{{ debtor.__class__.__mro__ }}")
    with pytest.raises(RenderError, match="unsafe"):
        render_at(tmp_path, "evil", "sms")


@pytest.mark.parametrize(
    ("language", "kind", "variant", "channel", "expected"),
    [
        ("nb", "betalingsoppfordring", "neutral", "sms", r"kind='betalingsoppfordring'.*sms\.txt"),
        ("nb", "reminder", "shouting", "sms", r"unknown variant 'shouting' \(known: .*neutral.*\)"),
        ("nb", "address_request", "social_norm", "sms", r"variant 'social_norm' is not written for kind"),
        (
            "xx",
            "reminder",
            "neutral",
            "letter",
            r"language='xx'.*xx[/\\]reminder[/\\]neutral[/\\]letter\.html",
        ),
        (
            "nb",
            "reminder",
            "neutral",
            "fax",
            r"unknown channel 'fax' \(known: chat_link, digital_mailbox, email, letter, sms\)",
        ),
        ("nb", "../reminder", "neutral", "sms", r"invalid template kind '\.\./reminder'"),
        ("nb", "reminder", "", "sms", r"invalid template variant ''"),
    ],
)
def test_unknown_template_raises_template_not_found(
    renderer: Renderer, language: str, kind: str, variant: str, channel: str, expected: str
) -> None:
    context = make_context()
    with pytest.raises(TemplateNotFound, match=expected) as excinfo:
        renderer.render(language=language, kind=kind, variant=variant, channel=channel, context=context)
    error = excinfo.value
    assert isinstance(error, LookupError)
    assert (error.language, error.kind, error.variant, error.channel) == (language, kind, variant, channel)
    assert repr(channel) in str(error)
    assert not renderer.has_template(language=language, kind=kind, variant=variant, channel=channel)


def test_missing_file_message_names_the_path(renderer: Renderer) -> None:
    with pytest.raises(TemplateNotFound) as excinfo:
        renderer.render(language="nb", kind="nokind", variant="neutral", channel="email", context={})
    message = str(excinfo.value)
    expected_path = renderer.messages_dir / "nb" / "nokind" / "neutral" / "email.subject.txt"
    assert str(expected_path) in message
    assert "no template for language='nb' kind='nokind' variant='neutral' channel='email'" in message


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("kind", KINDS)
def test_has_template(renderer: Renderer, kind: str, channel: str) -> None:
    assert renderer.has_template(language="nb", kind=kind, variant="neutral", channel=channel)


def test_available_templates(renderer: Renderer, tmp_path: Path) -> None:
    found = available_templates(renderer)
    for kind in KINDS:
        for channel in CHANNELS:
            assert ("nb", kind, "neutral", channel) in found
    assert all(renderer.has_template(language=a, kind=b, variant=c, channel=d) for a, b, c, d in found)

    partial = tmp_path / "messages" / "nb" / "note" / "neutral"
    partial.mkdir(parents=True)
    (partial / "sms.txt").write_text("Hei")
    (partial / "email.txt").write_text("Hei")  # no subject or html: e-mail is incomplete
    assert available_templates(Renderer(tmp_path)) == {("nb", "note", "neutral", "sms")}
    assert available_templates(Renderer(tmp_path / "nowhere")) == frozenset()


def test_letter_txt_overrides_derived_text(tmp_path: Path) -> None:
    folder = tmp_path / "messages" / "nb" / "note" / "neutral"
    folder.mkdir(parents=True)
    (folder / "letter.html").write_text("<html><body><p>Hei {{ debtor.name }}</p></body></html>")
    derived = render_at(tmp_path, "note", "letter")
    assert derived.text == "Hei Kari Nordmann\n"
    (folder / "letter.txt").write_text("  Kjære {{ debtor.first_name }}  \n\n")
    explicit = render_at(tmp_path, "note", "letter")
    assert explicit.text == "Kjære Kari\n"
    assert explicit.html == "<html><body><p>Hei Kari Nordmann</p></body></html>\n"


def test_autoescape_only_for_html(tmp_path: Path) -> None:
    folder = tmp_path / "messages" / "nb" / "note" / "neutral"
    folder.mkdir(parents=True)
    (folder / "email.subject.txt").write_text("Til {{ debtor.name }}\n  og   deg\n")
    (folder / "email.txt").write_text("{{ debtor.name }}")
    (folder / "email.html").write_text("<p>{{ debtor.name }}</p>")
    context = make_context()
    context["debtor"]["name"] = "Ola & <Kari>"
    message = render_at(tmp_path, "note", "email", context)
    assert message.subject == "Til Ola & <Kari> og deg"
    assert message.text == "Ola & <Kari>\n"
    assert message.html == "<p>Ola &amp; &lt;Kari&gt;</p>\n"


def test_templates_root_is_the_source_checkout() -> None:
    root = templates_root()
    assert root.name == "templates"
    assert (root / "messages" / "nb" / "inkassovarsel" / "neutral" / "letter.html").is_file()
    assert Renderer().messages_dir == root.resolve() / "messages"


def test_sample_context_has_no_national_id() -> None:
    flat = json.dumps(SAMPLE_CONTEXT, default=str)
    assert not re.search(r"(?<!\d)\d{11}(?!\d)", flat.replace("15031234562", ""))
    assert "fnr" not in flat.lower()
    assert "fodselsnummer" not in flat.lower()


# ------------------------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1250"), "1 250,00 kr"),
        (Decimal("1250.5"), "1 250,50 kr"),
        (Decimal("0.005"), "0,01 kr"),
        (Decimal("35.00"), "35,00 kr"),
        (Decimal("999.999"), "1 000,00 kr"),
        (Decimal("1234567.89"), "1 234 567,89 kr"),
        (Decimal("-1250"), "-1 250,00 kr"),
        (0, "0,00 kr"),
        (1000000, "1 000 000,00 kr"),
        ("1250.00", "1 250,00 kr"),
        ("1 250,50", "1 250,50 kr"),
        (12.5, "12,50 kr"),
    ],
)
def test_nok(value: Any, expected: str) -> None:
    assert nok(value) == expected


@pytest.mark.parametrize("value", ["abc", "", "NaN", "Infinity", True, None, [1]])
def test_nok_rejects_non_amounts(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        nok(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (date(2026, 10, 1), "1. oktober 2026"),
        (date(2026, 1, 31), "31. januar 2026"),
        (date(2026, 5, 17), "17. mai 2026"),
        (date(2026, 12, 24), "24. desember 2026"),
        (datetime(2026, 3, 2, 23, 59), "2. mars 2026"),
        ("2026-10-01", "1. oktober 2026"),
        ("2026-08-09T10:00:00+02:00", "9. august 2026"),
    ],
)
def test_date_no(value: Any, expected: str) -> None:
    assert date_no(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (date(2026, 10, 1), "01.10.2026"),
        (date(2027, 2, 28), "28.02.2027"),
        ("2026-10-16", "16.10.2026"),
        (datetime(2026, 1, 5, 8, 0), "05.01.2026"),
    ],
)
def test_date_short(value: Any, expected: str) -> None:
    assert date_short(value) == expected


@pytest.mark.parametrize("value", ["01.10.2026", "2026-13-01", "", 20261001])
def test_dates_reject_garbage(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        date_no(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12345678903", "1234 56 78903"),
        ("1234 56 78903", "1234 56 78903"),
        ("1234.56.78903", "1234 56 78903"),
        (15031234562, "1503 12 34562"),
        ("NO9386011117947", "NO9386011117947"),
        (" 123 ", "123"),
    ],
)
def test_account_no(value: Any, expected: str) -> None:
    assert account_no(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1002340014", "1002340014"), ("0012345678", "0012345678"), (" 1234 5678 ", "12345678"), (42, "42")],
)
def test_kid(value: Any, expected: str) -> None:
    assert kid(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Decimal("12.25"), "12,25 %"), (Decimal("12.50"), "12,5 %"), (Decimal("8.00"), "8 %"), (10, "10 %")],
)
def test_percent(value: Any, expected: str) -> None:
    assert percent(value) == expected


def test_html_to_text() -> None:
    html = (
        "<!DOCTYPE html><html><head><title>T</title><style>p { color: red; }</style></head><body>\n"
        "<div>A<br>B &amp; C</div>\n  <p>Long   paragraph\n text.</p>"
        "<table><tr><th>Beløp</th><td>1 250,00 kr</td></tr>\n<tr><th>KID</th><td>123</td></tr></table>"
        "<ul><li>one</li><li>two</li></ul><script>ignored()</script></body></html>"
    )
    assert html_to_text(html) == (
        "A\nB & C\n\nLong paragraph text.\n\nBeløp: 1 250,00 kr\nKID: 123\n\n- one\n- two"
    )
