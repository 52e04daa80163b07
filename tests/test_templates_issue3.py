"""Templates for the betalingsoppfordring (inkassoloven § 10, R2) and the address request (R7 discretion).

Every new template renders with the worker's context (SAMPLE_CONTEXT) and with every optional value blank; the
statutory notice carries all of its fixed content and exists only for channels that may carry it (R3); the
address request discloses nothing about the debt to whoever else may read it.
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from typing import Any

import pytest

from orchestrator.rendering import (
    SAMPLE_CONTEXT,
    RenderedMessage,
    Renderer,
    available_templates,
    html_to_text,
)

NOTICE = "betalingsoppfordring"
ADDRESS = "address_request"
NOTICE_CHANNELS = ("email", "letter", "digital_mailbox")
# No chat link: an address request goes out when our data may be stale, and the self-service page shows the
# claim, so the worker issues no link for it and there is no chat_link template (R7).
ADDRESS_CHANNELS = ("email", "letter", "sms", "digital_mailbox")
VARIANTS = ("sample", "optional_none", "minimal")
URL = "https://betal.example.no/s/7Q4M2X"
REFERENCE = "01JB8Z6Q4M2XK7T9RDW3HV5NCE"

# GSM 03.38 basic character set (without the ESC that introduces the extension table).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# "vil" (will) followed, in the same sentence, by a cost or a step: a threat, not a possibility (R7).
WILL_THREAT = re.compile(r"\bvil\b[^.]*\b(påløpe|bli)", re.IGNORECASE)


def make_context(variant: str = "sample", kind: str = NOTICE) -> dict[str, Any]:
    context = copy.deepcopy(SAMPLE_CONTEXT)
    context["kind"] = kind
    if variant in ("optional_none", "minimal"):
        context["case"].update(interest=None, kid=None, account_number=None)
        context["self_service_url"] = None
        context["deadline"] = None
    if variant == "minimal":
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


def bodies(message: RenderedMessage) -> list[str]:
    """The text, and the HTML with its visible text, of a message."""
    found = [message.text]
    if message.html is not None:
        found += [message.html, html_to_text(message.html)]
    return found


def is_gsm7(text: str) -> bool:
    return all(char in GSM7_BASIC for char in text)


# ------------------------------------------------------------------------------------------ availability


def test_has_template_for_every_written_pair_and_never_sms_for_the_notice(renderer: Renderer) -> None:
    for kind, channels in ((NOTICE, NOTICE_CHANNELS), (ADDRESS, ADDRESS_CHANNELS)):
        for channel in channels:
            assert renderer.has_template(language="nb", kind=kind, variant="neutral", channel=channel)
    # R3: the statutory notice itself never goes by SMS or chat link
    for channel in ("sms", "chat_link"):
        assert not renderer.has_template(language="nb", kind=NOTICE, variant="neutral", channel=channel)
    folder = renderer.messages_dir / "nb" / NOTICE / "neutral"
    assert not (folder / "sms.txt").exists()
    assert not (folder / "chat_link.txt").exists()


def test_available_templates_lists_them(renderer: Renderer) -> None:
    found = available_templates(renderer)
    for kind, channels in ((NOTICE, NOTICE_CHANNELS), (ADDRESS, ADDRESS_CHANNELS)):
        for channel in channels:
            assert ("nb", kind, "neutral", channel) in found
    assert ("nb", NOTICE, "neutral", "sms") not in found
    assert ("nb", NOTICE, "neutral", "chat_link") not in found
    assert ("nb", ADDRESS, "neutral", "chat_link") not in found


# ------------------------------------------------------------------------------------------ every template


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    ("kind", "channel"),
    [(NOTICE, channel) for channel in NOTICE_CHANNELS] + [(ADDRESS, channel) for channel in ADDRESS_CHANNELS],
)
def test_every_new_template_renders(renderer: Renderer, kind: str, channel: str, variant: str) -> None:
    message = render(renderer, kind, channel, make_context(variant, kind))

    assert message.template == f"nb/{kind}/neutral/{channel}"
    assert message.text.strip()
    for body in bodies(message):
        assert "None" not in body
        assert "{{" not in body
        assert "{%" not in body
    if message.subject is not None:
        assert message.subject.strip()
        assert "None" not in message.subject
        assert "\n" not in message.subject
    if channel == "email":
        assert message.text.endswith("\n")
        assert not message.text.endswith("\n\n")
    if message.html is not None:
        html = message.html
        assert html.startswith("<!DOCTYPE html>")
        assert html.rstrip().endswith("</html>")
        assert '<html lang="nb">' in html
        lowered = html.lower()
        for forbidden in ("<img", "<link", "<script", "@import", "url(", "@font-face"):
            assert forbidden not in lowered
    if channel in ("sms", "chat_link"):
        assert message.subject is None
        assert message.html is None
        assert message.text == " ".join(message.text.split())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", [NOTICE, ADDRESS])
def test_letters_keep_the_window_layout(renderer: Renderer, kind: str, variant: str) -> None:
    context = make_context(variant, kind)
    letter = render(renderer, kind, "letter", context)
    assert letter.html is not None
    html = letter.html
    assert "@page" in html
    assert "size: A4" in html
    recipient = html.split('<div class="recipient">', 1)[1].split("</div>", 1)[0]
    assert context["recipient"]["name"] in recipient
    for line in context["recipient"]["address_lines"]:
        assert line in recipient
    # R7: nothing about collection in the head, the sender, the address window or the date block
    window_part = html.split("<h1", 1)[0]
    assert '<div class="recipient">' in window_part
    assert "inkasso" not in window_part.lower()
    assert "betalingsoppfordring" not in window_part.lower()


@pytest.mark.parametrize("kind", [NOTICE, ADDRESS])
def test_html_is_escaped_text_is_verbatim(renderer: Renderer, kind: str) -> None:
    context = make_context("sample", kind)
    evil = "<script>alert('x')</script> & Co"
    context["debtor"]["name"] = evil
    context["recipient"]["name"] = evil
    for channel in ("email", "letter"):
        message = render(renderer, kind, channel, context)
        assert message.html is not None
        assert "<script>" not in message.html
        assert "&lt;script&gt;" in message.html
        assert evil in message.text


# ------------------------------------------------------------------------------- betalingsoppfordring (R2)


def notice_parts(renderer: Renderer, context: dict[str, Any]) -> dict[str, str]:
    """Each body the debtor may read: the e-mail's text and HTML, the letter's HTML and its text."""
    email = render(renderer, NOTICE, "email", context)
    letter = render(renderer, NOTICE, "letter", context)
    assert email.html is not None
    assert letter.html is not None
    return {
        "email.txt": email.text,
        "email.html": email.html,
        "email.html as text": html_to_text(email.html),
        "letter.html": letter.html,
        "letter as text": letter.text,
    }


def test_betalingsoppfordring_has_all_statutory_content(renderer: Renderer) -> None:
    for name, body in notice_parts(renderer, make_context("sample")).items():
        flat = " ".join(body.split())
        assert "dette er en betalingsoppfordring" in flat.lower(), name
        assert "Kari Nordmann" in flat, name
        # a) the creditor, and that the claim is being collected
        assert "Kreditor: Nordlys Energi AS (org.nr. 923456783)" in flat, name
        assert "kravet er nå til inkasso" in flat, name
        # b) what the claim is
        assert "faktura 100234" in flat, name
        assert "forfalt 15. september 2026" in flat, name
        # c) the amount, itemised: principal, each cost with its label, the total
        assert "1 215,00 kr" in flat, name
        assert re.search(r"Purregebyr(</th><td[^>]*>|: )35,00 kr", flat), name
        assert "1 250,00 kr" in flat, name
        assert re.search(r"Totalt å betale(</th><td[^>]*>(<strong>)?|: )1 250,00 kr", flat), name
        # d) the interest rate and the date it runs from
        assert "forsinkelsesrente på 12,25 % per år fra 15. september 2026" in flat, name
        # the deadline (>= 14 days), account number and KID
        assert "16. oktober 2026" in flat, name
        assert "1503 12 34562" in flat, name
        assert "1002340014" in flat, name
        # e) truthful consequences, as things that "kan" happen
        assert "kan det påløpe flere kostnader" in flat, name
        assert "kan da også bli inndrevet ved rettslige skritt" in flat, name
        # the right to object within the same deadline, and to have a complaint heard, and how
        assert "rett til å komme med innsigelse innen fristen" in flat, name
        assert "stanser vi inndrivingen" in flat, name
        assert "klage" in flat, name
        assert "Nordlys Energi AS" in flat, name
        assert REFERENCE in flat, name


def test_betalingsoppfordring_says_how_to_object(renderer: Renderer) -> None:
    parts = notice_parts(renderer, make_context("sample"))
    assert "svar på denne e-posten eller kontakt Nordlys Energi AS" in parts["email.txt"]
    assert "svar på denne e-posten eller kontakt Nordlys Energi AS" in parts["email.html"]
    assert "Ta kontakt med Nordlys Energi AS og fortell oss hvorfor" in parts["letter as text"]
    assert "Telefon: 22 12 34 56" in parts["letter as text"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_betalingsoppfordring_costs_may_accrue_never_will(renderer: Renderer, variant: str) -> None:
    for name, body in notice_parts(renderer, make_context(variant)).items():
        if name.endswith("html"):
            continue  # sentences are judged on visible text; the HTML's text is checked as "as text"
        flat = " ".join(body.split())
        assert not WILL_THREAT.search(flat), (name, WILL_THREAT.search(flat))
        assert "kan det påløpe" in flat


def test_betalingsoppfordring_lists_every_cost(renderer: Renderer) -> None:
    context = make_context("sample")
    context["case"]["costs"] = [
        {"kind": "reminder_fee", "label": "Purregebyr", "amount": Decimal("35.00")},
        {"kind": "collection_fee", "label": "Salær", "amount": Decimal("700.00")},
        {"kind": "interest", "label": "Forsinkelsesrenter", "amount": Decimal("6.12")},
    ]
    context["case"]["total"] = Decimal("1956.12")
    for name, body in notice_parts(renderer, context).items():
        if name.endswith("html"):
            continue
        assert "Purregebyr: 35,00 kr" in body, name
        assert "Salær: 700,00 kr" in body, name
        assert "Forsinkelsesrenter: 6,12 kr" in body, name
        assert "Totalt å betale: 1 956,12 kr" in body, name
        # accrued interest is itemised, so the notice does not call it an extra on top of the total
        assert "ikke tatt med i totalbeløpet" not in body, name
        assert "12,25 %" in body, name


def test_betalingsoppfordring_says_interest_is_not_in_the_total(renderer: Renderer) -> None:
    for name, body in notice_parts(renderer, make_context("sample")).items():
        flat = " ".join(body.split())
        assert "Renten er ikke tatt med i totalbeløpet over, og kan bli krevd i tillegg." in flat, name


@pytest.mark.parametrize("variant", ["optional_none", "minimal"])
def test_betalingsoppfordring_without_optional_values(renderer: Renderer, variant: str) -> None:
    context = make_context(variant)
    for name, body in notice_parts(renderer, context).items():
        flat = " ".join(body.split())
        assert "KID" not in flat, name
        assert "1002340014" not in flat, name
        assert "12,25" not in flat, name
        assert "forsinkelsesrente" not in flat.lower(), name
        assert URL not in flat, name
        assert "innen 14 dager etter 1. oktober 2026" in flat, name  # no deadline: 14 days from sending
        assert "Merk betalingen med" in flat, name
        assert REFERENCE in flat, name
        assert "1 215,00 kr" in flat, name
        assert "innsigelse" in flat, name
        assert "kan det påløpe flere kostnader" in flat, name


def test_betalingsoppfordring_subject_is_discreet(renderer: Renderer) -> None:
    for variant in VARIANTS:
        context = make_context(variant)
        for channel in ("email", "digital_mailbox"):
            message = render(renderer, NOTICE, channel, context)
            assert message.subject is not None
            assert "inkasso" not in message.subject.lower()
            assert "100234" in message.subject
            assert "Nordlys Energi AS" in message.subject
        email = render(renderer, NOTICE, "email", context)
        assert "inkasso" not in email.text[:150].lower()  # the preview in a mail client
    sample = render(renderer, NOTICE, "email", make_context("sample"))
    assert sample.subject == "Viktig: betalingsfrist 16.10.2026 for faktura 100234 fra Nordlys Energi AS"


def test_betalingsoppfordring_names_the_complaints_board_when_an_agency_collects(renderer: Renderer) -> None:
    plain = notice_parts(renderer, make_context("sample"))
    assert all("Finansklagenemnda" not in body for body in plain.values())

    context = make_context("sample")
    context["variables"]["collector_name"] = "Eksempel Inkasso AS"
    for name, body in notice_parts(renderer, context).items():
        flat = " ".join(body.split())
        assert "til inkasso hos Eksempel Inkasso AS" in flat, name
        assert "Finansklagenemnda" in flat, name
        assert "inkassoloven § 22" in flat, name

    organisation = copy.deepcopy(context)
    organisation["debtor"] = {"name": "Fjellbakeriet AS", "first_name": "", "type": "organisation"}
    assert all("Finansklagenemnda" not in body for body in notice_parts(renderer, organisation).values())


# --------------------------------------------------------------------------------- address request (R7)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("channel", ADDRESS_CHANNELS)
def test_address_request_discloses_nothing_about_the_debt(
    renderer: Renderer, channel: str, variant: str
) -> None:
    context = make_context(variant, ADDRESS)
    message = render(renderer, ADDRESS, channel, context)
    parts = [*bodies(message), message.subject or ""]
    for part in parts:
        lowered = part.lower()
        assert not re.search(r"\bkr\b", lowered), part  # no amount
        assert not re.search(r"\d+,\d\d\b", part), part
        assert "kid" not in re.findall(r"\b\w+\b", lowered), part
        for secret in ("1002340014", "15031234562", "1503 12 34562", "1 250", "1 215", "1250", "1215"):
            assert secret not in part, (secret, part)
        for word in (
            "inkasso",
            "gjeld",
            "ubetalt",
            "forfalt",
            "betalingsfrist",
            "innsigelse",
            "purring",
            "faktura",
        ):
            assert word not in lowered, (word, part)


@pytest.mark.parametrize("channel", ["email", "letter", "digital_mailbox"])
def test_address_request_asks_for_the_postal_address(renderer: Renderer, channel: str) -> None:
    message = render(renderer, ADDRESS, channel, make_context("sample", ADDRESS))
    for body in [message.text, *([html_to_text(message.html)] if message.html else [])]:
        flat = " ".join(body.split())
        assert "Kari Nordmann" in flat
        assert "brev om referanse 100234" in flat
        assert "kom i retur" in flat
        assert "postadresse" in flat
        assert "Er du ikke Kari Nordmann" in flat
        assert REFERENCE in flat
    if channel == "email":
        assert "Svar på denne e-posten" in message.text
        assert message.subject == "Brev fra Nordlys Energi AS kom i retur – hvilken adresse skal vi bruke?"
        assert URL in message.text


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("channel", ["sms"])
def test_address_request_short_messages_fit_one_gsm7_segment(
    renderer: Renderer, channel: str, variant: str
) -> None:
    message = render(renderer, ADDRESS, channel, make_context(variant, ADDRESS))
    assert is_gsm7(message.text), sorted(set(message.text) - GSM7_BASIC)
    assert len(message.text) <= 306  # never more than two segments
    assert len(message.text) <= 160, (len(message.text), message.text)
    assert "kom i retur" in message.text
    assert "postadresse" in message.text
    if variant == "sample":
        assert message.text.startswith("Hei Kari.")
        assert URL in message.text
    else:
        assert "https://" not in message.text
    if variant == "optional_none":
        assert "22 12 34 56" in message.text
    if variant == "minimal":
        assert message.text.startswith("Hei Fjellbakeriet AS.")
        assert REFERENCE in message.text
