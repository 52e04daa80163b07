"""The legal guard on the rendered message (R7 discretion, R9 national ids): a table of hand-made messages on
channels described only by their limits, then the real templates rendered by the real Renderer."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from channels.base import ChannelLimits
from channels.email import EMAIL_LIMITS
from channels.outbox import LETTER_LIMITS, SMS_LIMITS
from orchestrator.identifiers import validate_national_id
from orchestrator.policy.content_guard import (
    Violation,
    check_message,
    envelope_window_lines,
    inkasso_words,
    masked_national_ids,
)
from orchestrator.rendering import (
    SAMPLE_CONTEXT,
    RenderedMessage,
    Renderer,
    available_templates,
    content_sha256,
    html_to_text,
)

# Channels as the guard sees them: limits only.
CHAT_LINK = ChannelLimits(
    max_body_chars=1000,
    supports_subject=False,
    supports_html=False,
    cost_nok=0.1,
    reaches="mobile",
    supports_links=True,
)
DIGITAL_MAILBOX = ChannelLimits(
    max_body_chars=None,
    supports_subject=True,
    supports_html=True,
    cost_nok=1.0,
    statutory="always",
    reaches="national_id",
)
LIMITS_BY_TEMPLATE_CHANNEL = {
    "email": EMAIL_LIMITS,
    "sms": SMS_LIMITS,
    "chat_link": CHAT_LINK,
    "letter": LETTER_LIMITS,
    "digital_mailbox": DIGITAL_MAILBOX,
}

FNR = "13097248022"  # valid fødselsnummer (also used in tests/test_identifiers.py)
FNR_SPACED = "130972 48022"
FNR_MASKED = "130972*****"
D_NUMBER = "53097248016"
D_NUMBER_MASKED = "530972*****"
TENOR = "10915596784"  # Skatteetaten Tenor synthetic id (month + 80)
TENOR_MASKED = "109155*****"
KID_11 = "10023400141"  # a valid 11-digit KID that is no national id
ACCOUNT = "15031234562"  # a valid account number that is no national id
ACCOUNT_GROUPED = "1503 12 34562"  # as the account_no filter prints it

RECIPIENT_BLOCK = (
    '<div class="recipient">\n    Kari Nordmann\n    <br>Storgata 1\n    <br>0155 OSLO\n  </div>'
)


def message(subject: str | None = None, text: str = "", html: str | None = None) -> RenderedMessage:
    return RenderedMessage("nb/test/neutral/x", subject, text, html, content_sha256(subject, text, html))


def letter(body: str, recipient_block: str = RECIPIENT_BLOCK) -> RenderedMessage:
    """A letter as the Renderer builds one: HTML, and its text from that HTML."""
    html = (
        '<html><body><div class="top"><div class="sender"><strong>Nordlys Energi AS</strong></div>'
        f"{recipient_block}</div>{body}</body></html>\n"
    )
    return message(None, html_to_text(html) + "\n", html)


def test_test_numbers_are_what_they_claim() -> None:
    for number in (FNR, D_NUMBER, TENOR):
        assert validate_national_id(number) == number
    for number in (KID_11, ACCOUNT):
        with pytest.raises(ValueError, match="national id"):
            validate_national_id(number)


CASES = [
    # ------------------------------------------------------------------------------------------------ R7
    pytest.param(
        message("Inkassovarsel fra Nordlys Energi AS", "Dette er et inkassovarsel.", "<p>Inkassovarsel</p>"),
        EMAIL_LIMITS,
        None,
        [("R7", "inkasso_in_subject", "subject")],
        id="r7-email-subject-inkassovarsel",
    ),
    pytest.param(
        message("Viktig melding om faktura 100234 fra Inkasso AS", "Hei"),
        EMAIL_LIMITS,
        None,
        [("R7", "inkasso_in_subject", "subject")],
        id="r7-email-subject-creditor-named-inkasso-as",
    ),
    pytest.param(
        message("INKASSO", "Hei"),
        EMAIL_LIMITS,
        None,
        [("R7", "inkasso_in_subject", "subject")],
        id="r7-email-subject-uppercase",
    ),
    pytest.param(
        message("Inkas\u00adsovarsel", "Hei"),
        EMAIL_LIMITS,
        None,
        [("R7", "inkasso_in_subject", "subject")],
        id="r7-email-subject-soft-hyphen-inside-word",
    ),
    pytest.param(
        message(
            "Viktig melding om ubetalt faktura 100234",
            "Dette er et inkassovarsel. Kravet kan bli sendt til inkasso.",
            "<h1>Inkassovarsel</h1><p>Da kan det påløpe inkassokostnader.</p>",
        ),
        EMAIL_LIMITS,
        None,
        [],
        id="r7-email-body-may-say-inkassovarsel",
    ),
    pytest.param(
        message("Krav om innkreving", "Hei"),
        EMAIL_LIMITS,
        None,
        [],
        id="r7-email-subject-innkreving-is-not-inkasso",
    ),
    pytest.param(
        message(None, "Hei Kari, du har fått et inkassovarsel fra Nordlys Energi AS."),
        SMS_LIMITS,
        None,
        [("R7", "inkasso_in_short_message", "text")],
        id="r7-sms-inkassovarsel",
    ),
    pytest.param(
        message(None, "Nordisk Inkassobyrå: betal faktura 100234 innen fredag."),
        SMS_LIMITS,
        None,
        [("R7", "inkasso_in_short_message", "text")],
        id="r7-sms-inkassobyra-norwegian-letters",
    ),
    pytest.param(
        message(None, "Se saken: https://inkasso.example.no/s/7Q4M2X"),
        CHAT_LINK,
        None,
        [("R7", "inkasso_in_short_message", "text")],
        id="r7-chat-link-inkasso-in-link-host",
    ),
    pytest.param(
        message(
            None,
            "Hei Kari. Nordlys Energi AS har sendt deg et varsel. Se saken: https://betal.example.no/s/7Q",
        ),
        CHAT_LINK,
        None,
        [],
        id="r7-chat-link-neutral",
    ),
    pytest.param(
        letter("<h1>Inkassovarsel</h1><p>Dette er et inkassovarsel.</p>"),
        LETTER_LIMITS,
        None,
        [],
        id="r7-letter-body-may-say-inkassovarsel",
    ),
    pytest.param(
        letter(
            "<p>Hei</p>",
            '<div class="recipient">Kari Nordmann<br>c/o Inkassobyrået AS<br>Storgata 1<br>0155 OSLO</div>',
        ),
        LETTER_LIMITS,
        None,
        [("R7", "inkasso_in_envelope_window", "envelope window, line 2")],
        id="r7-letter-window-from-html",
    ),
    pytest.param(
        letter("<p>Hei</p>"),
        LETTER_LIMITS,
        ["Kari Nordmann", "Storgata 1", "0155 OSLO", "Retur: Nordisk Inkasso AS, Postboks 1, 0102 OSLO"],
        [("R7", "inkasso_in_envelope_window", "envelope window, line 4")],
        id="r7-letter-return-address-in-window-text",
    ),
    pytest.param(
        message(None, "Hei", "<html><body><p>Hei Kari</p></body></html>"),
        LETTER_LIMITS,
        None,
        [("R7", "envelope_window_not_found", "html")],
        id="r7-letter-without-a-window-block",
    ),
    pytest.param(
        message("Inkassovarsel fra Nordlys Energi AS", "Inkassovarsel", "<h1>Inkassovarsel</h1>"),
        DIGITAL_MAILBOX,
        None,
        [("R7", "inkasso_in_subject", "subject")],
        id="r7-digital-mailbox-subject-shows-in-alerts",
    ),
    # ------------------------------------------------------------------------------------------------ R9
    pytest.param(
        message(None, f"Hei Kari, gjelder {FNR}."),
        SMS_LIMITS,
        None,
        [("R9", "national_id_in_message", "text")],
        id="r9-sms-fnr",
    ),
    pytest.param(
        message(None, f"Hei Kari, gjelder {FNR_SPACED}."),
        SMS_LIMITS,
        None,
        [("R9", "national_id_in_message", "text")],
        id="r9-sms-fnr-split-by-space",
    ),
    pytest.param(
        message(None, f"Gjelder D-nr {D_NUMBER}"),
        SMS_LIMITS,
        None,
        [("R9", "national_id_in_message", "text")],
        id="r9-sms-d-number",
    ),
    pytest.param(
        message(None, f"Konto {ACCOUNT}, KID {KID_11}, ref 0{FNR}1"),
        SMS_LIMITS,
        None,
        [],
        id="r9-sms-kid-account-and-longer-digit-run-not-flagged",
    ),
    pytest.param(
        message("Faktura 100234", f"Til konto: {ACCOUNT_GROUPED}\nKID: {KID_11}\n"),
        EMAIL_LIMITS,
        None,
        [],
        id="r9-email-grouped-account-and-kid-not-flagged",
    ),
    pytest.param(
        message(f"Faktura til {TENOR}", "Hei"),
        EMAIL_LIMITS,
        None,
        [("R9", "national_id_in_message", "subject")],
        id="r9-email-subject-synthetic-id",
    ),
    pytest.param(
        message("Faktura", "Hei", f'<p>Hei<span style="display:none">{FNR}</span></p>'),
        EMAIL_LIMITS,
        None,
        [("R9", "national_id_in_message", "html")],
        id="r9-email-html-hidden-span",
    ),
    pytest.param(
        message(
            "Faktura", "Hei", f'<p><img alt="fnr {FNR_SPACED}" src="cid:logo"> Hei</p><!-- {D_NUMBER} -->'
        ),
        EMAIL_LIMITS,
        None,
        [("R9", "national_id_in_message", "html"), ("R9", "national_id_in_message", "html")],
        id="r9-email-html-attribute-and-comment",
    ),
    pytest.param(
        message("Faktura", "Hei", "<p>Fnr: 130972&nbsp;48022 og 130972&#32;48022</p>"),
        EMAIL_LIMITS,
        None,
        [("R9", "national_id_in_message", "html")],
        id="r9-email-html-entities-one-id-once",
    ),
    pytest.param(
        message("Faktura", "Hei", "<p>Fnr: 130972<b>48022</b></p>"),
        EMAIL_LIMITS,
        None,
        [("R9", "national_id_in_message", "html")],
        id="r9-email-html-split-by-a-tag",
    ),
    pytest.param(
        message("Faktura", "Hei", f'<p><a href="https://betal.example.no/s?fnr={FNR}">Betal</a></p>'),
        EMAIL_LIMITS,
        None,
        [("R9", "national_id_in_url", "html")],
        id="r9-email-href-query",
    ),
    pytest.param(
        message("Faktura", "Hei", '<a href="https://betal.example.no/s/130972%2048022">Betal</a>'),
        EMAIL_LIMITS,
        None,
        [("R9", "national_id_in_url", "html")],
        id="r9-email-href-percent-encoded-space",
    ),
    pytest.param(
        message("Faktura", f"Betal her: https://betal.example.no/s?id={FNR}&x=1 i dag.\n"),
        EMAIL_LIMITS,
        None,
        [("R9", "national_id_in_url", "text")],
        id="r9-email-text-bare-url",
    ),
    pytest.param(
        letter(f"<h1>Inkassovarsel</h1><p>Gjelder fødselsnummer {FNR} og D-nr {D_NUMBER}.</p>"),
        LETTER_LIMITS,
        None,
        [],
        id="r9-letter-body-not-listed",
    ),
    pytest.param(
        letter(f'<p><a href="https://betal.example.no/s?fnr={FNR}">Betal</a></p>'),
        LETTER_LIMITS,
        None,
        [("R9", "national_id_in_url", "html")],
        id="r9-letter-href-query",
    ),
    pytest.param(
        letter(f"<p>Nett: https://betal.example.no/s?fnr={D_NUMBER}</p>"),
        LETTER_LIMITS,
        None,
        [("R9", "national_id_in_url", "text"), ("R9", "national_id_in_url", "html")],
        id="r9-letter-bare-url-in-html-and-its-text",
    ),
    pytest.param(
        letter(f"<style>.logo {{ background: url('/img/{FNR}.png') }}</style><p>Hei</p>"),
        LETTER_LIMITS,
        None,
        [("R9", "national_id_in_url", "html")],
        id="r9-letter-css-url",
    ),
    pytest.param(
        letter("<p>Hei</p>"),
        LETTER_LIMITS,
        ["Kari Nordmann", FNR_SPACED, "Storgata 1", "0155 OSLO"],
        [("R9", "national_id_in_envelope_window", "envelope window, line 2")],
        id="r9-letter-window",
    ),
    pytest.param(
        message("Brev fra Nordlys Energi AS", f"Fnr {FNR}", f"<p>Fnr {FNR}</p>"),
        DIGITAL_MAILBOX,
        None,
        [],
        id="r9-digital-mailbox-body-is-a-letter",
    ),
    pytest.param(
        message(f"Brev til {FNR}", "Hei", "<p>Hei</p>"),
        DIGITAL_MAILBOX,
        None,
        [("R9", "national_id_in_message", "subject")],
        id="r9-digital-mailbox-subject",
    ),
    pytest.param(
        message(None, f"Se https://betal.example.no/s/{FNR_SPACED} i dag"),
        SMS_LIMITS,
        None,
        [("R9", "national_id_in_message", "text")],
        id="r9-sms-spaced-id-straddling-the-end-of-a-url",
    ),
    pytest.param(
        message(f"Inkassovarsel {FNR}", "Hei"),
        EMAIL_LIMITS,
        None,
        [("R7", "inkasso_in_subject", "subject"), ("R9", "national_id_in_message", "subject")],
        id="r7-and-r9-in-one-subject",
    ),
]


@pytest.mark.parametrize(("rendered", "limits", "window_text", "expected"), CASES)
def test_check_message(
    rendered: RenderedMessage,
    limits: ChannelLimits,
    window_text: list[str] | None,
    expected: list[tuple[str, str, str]],
) -> None:
    violations = check_message(rendered, limits, window_text=window_text)
    assert sorted((v.rule, v.code, v.where) for v in violations) == sorted(expected)
    for violation in violations:
        assert_safe_to_log(violation)


def assert_safe_to_log(violation: Violation) -> None:
    shown = f"{violation.where} {violation.message} {violation}"
    assert masked_national_ids(shown) == []
    for number in (FNR, D_NUMBER, TENOR):
        assert number not in shown
        assert number[6:] not in shown  # not even the individual number and control digits


def test_violation_names_the_masked_id_and_the_word() -> None:
    (r9,) = check_message(message(None, f"Gjelder {FNR_SPACED}"), SMS_LIMITS)
    assert FNR_MASKED in r9.message
    assert "R9" in str(r9) and "national_id_in_message" in str(r9)
    (r7,) = check_message(message("Varsel fra Nordisk Inkassobyrå AS", "Hei"), EMAIL_LIMITS)
    assert '"inkassobyrå"' in r7.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Inkassovarsel", ["inkassovarsel"], id="prefix"),
        pytest.param("INKASSO", ["inkasso"], id="uppercase"),
        pytest.param("Nordisk Inkasso AS", ["inkasso"], id="company-name"),
        pytest.param("æinkassoø og inkassobyrå", ["æinkassoø", "inkassobyrå"], id="norwegian-letters"),
        pytest.param("ＩＮＫＡＳＳＯ", ["inkasso"], id="fullwidth"),
        pytest.param("In\u200bkasso", ["inkasso"], id="zero-width-space"),
        pytest.param("innkreving, kasse, inkaso", [], id="near-misses"),
    ],
)
def test_inkasso_words(text: str, expected: list[str]) -> None:
    assert inkasso_words(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(FNR, [FNR_MASKED], id="fnr"),
        pytest.param(FNR_SPACED, [FNR_MASKED], id="fnr-spaced"),
        pytest.param("130972\u00a048022", [FNR_MASKED], id="fnr-nbsp"),
        pytest.param(
            f"{D_NUMBER}, {TENOR}, {FNR}", [D_NUMBER_MASKED, TENOR_MASKED, FNR_MASKED], id="several"
        ),
        pytest.param(f"id={FNR}&id={FNR}", [FNR_MASKED], id="each-once"),
        pytest.param(f"x{FNR}y", [FNR_MASKED], id="between-letters"),
        pytest.param(f"{KID_11} {ACCOUNT} {ACCOUNT_GROUPED}", [], id="kid-and-account"),
        pytest.param(f"1{FNR}", [], id="inside-a-longer-digit-run"),
        pytest.param("130972  48022", [], id="two-spaces-are-two-numbers"),
    ],
)
def test_masked_national_ids(text: str, expected: list[str]) -> None:
    assert masked_national_ids(text) == expected


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        pytest.param(
            f"<div>{RECIPIENT_BLOCK}</div>", ["Kari Nordmann", "Storgata 1", "0155 OSLO"], id="br-lines"
        ),
        pytest.param(
            '<div class="x recipient y">Kari<div>Storgata <b>1</b></div>0155 OSLO</div><p>Inkasso</p>',
            ["Kari", "Storgata 1", "0155 OSLO"],
            id="nested-div-and-other-classes",
        ),
        pytest.param('<div class="recipient"></div>', [], id="empty-window"),
        pytest.param('<div class="sender">Nordisk Inkasso AS</div><p>Kari</p>', None, id="no-window"),
        pytest.param('<img class="recipient"><p>Kari</p>', None, id="void-element-is-no-window"),
    ],
)
def test_envelope_window_lines(html: str, expected: list[str] | None) -> None:
    assert envelope_window_lines(html) == expected


# ----------------------------------------------------------------------------------- the real templates


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def context(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(SAMPLE_CONTEXT)
    for dotted, value in changes.items():
        target = result
        *path, last = dotted.split("__")
        for key in path:
            target = target[key]
        target[last] = value
    return result


def render(
    renderer: Renderer, channel: str, ctx: dict[str, Any], kind: str = "inkassovarsel"
) -> RenderedMessage:
    ctx = {**ctx, "kind": kind}
    return renderer.render(language="nb", kind=kind, variant="neutral", channel=channel, context=ctx)


def test_every_packaged_template_passes_with_the_sample_context(renderer: Renderer) -> None:
    checked = 0
    for language, kind, variant, channel in sorted(available_templates(renderer)):
        rendered = renderer.render(
            language=language,
            kind=kind,
            variant=variant,
            channel=channel,
            context={**SAMPLE_CONTEXT, "kind": kind},
        )
        assert check_message(rendered, LIMITS_BY_TEMPLATE_CHANNEL[channel]) == [], rendered.template
        checked += 1
    assert checked >= 15


def test_real_inkassovarsel_letter_window_is_the_recipient_block(renderer: Renderer) -> None:
    rendered = render(renderer, "letter", context())
    assert rendered.html is not None
    assert envelope_window_lines(rendered.html) == ["Kari Nordmann", "Storgata 1", "0155 OSLO"]
    assert "Inkassovarsel" in rendered.text  # the body says it, and may
    assert check_message(rendered, LETTER_LIMITS) == []


def test_real_letter_window_without_address_lines(renderer: Renderer) -> None:
    rendered = render(renderer, "letter", context(recipient__address_lines=[]))
    assert rendered.html is not None
    assert envelope_window_lines(rendered.html) == ["Kari Nordmann"]


def test_real_letter_from_nordisk_inkasso(renderer: Renderer) -> None:
    """The sender block of our letters sits above the window (tests/channels/test_letter.py checks the PDF),
    so the creditor's name is not in the window block; a return address printed in the window is flagged."""
    rendered = render(renderer, "letter", context(creditor__name="Nordisk Inkasso AS"))
    assert rendered.html is not None
    window = envelope_window_lines(rendered.html)
    assert window == ["Kari Nordmann", "Storgata 1", "0155 OSLO"]
    assert check_message(rendered, LETTER_LIMITS) == []

    with_return_address = [*window, "Nordisk Inkasso AS", "Postboks 123 Sentrum", "0102 OSLO"]
    violations = check_message(rendered, LETTER_LIMITS, window_text=with_return_address)
    assert [(v.rule, v.code, v.where) for v in violations] == [
        ("R7", "inkasso_in_envelope_window", "envelope window, line 4")
    ]


def test_real_letter_to_a_recipient_named_inkasso(renderer: Renderer) -> None:
    ctx = context(
        recipient={"name": "Nordisk Inkasso AS", "address_lines": ["Postboks 7 Sentrum", "0101 OSLO"]}
    )
    violations = check_message(render(renderer, "letter", ctx), LETTER_LIMITS)
    assert [(v.code, v.where) for v in violations] == [
        ("inkasso_in_envelope_window", "envelope window, line 1")
    ]


@pytest.mark.parametrize(
    ("channel", "limits", "expected"),
    [
        pytest.param("email", EMAIL_LIMITS, [("R7", "inkasso_in_subject", "subject")], id="email-subject"),
        pytest.param("sms", SMS_LIMITS, [("R7", "inkasso_in_short_message", "text")], id="sms-text"),
        pytest.param(
            "digital_mailbox",
            DIGITAL_MAILBOX,
            [("R7", "inkasso_in_subject", "subject")],
            id="mailbox-subject",
        ),
        pytest.param("letter", LETTER_LIMITS, [], id="letter-sender-block-is-outside-the-window"),
    ],
)
def test_real_messages_from_a_creditor_named_inkasso(
    renderer: Renderer, channel: str, limits: ChannelLimits, expected: list[tuple[str, str, str]]
) -> None:
    rendered = render(renderer, channel, context(creditor__name="Inkasso AS"))
    assert [(v.rule, v.code, v.where) for v in check_message(rendered, limits)] == expected


def test_real_email_with_a_national_id_in_the_self_service_url(renderer: Renderer) -> None:
    rendered = render(renderer, "email", context(self_service_url=f"https://betal.example.no/s?fnr={FNR}"))
    violations = check_message(rendered, EMAIL_LIMITS)
    assert sorted((v.code, v.where) for v in violations) == [
        ("national_id_in_url", "html"),
        ("national_id_in_url", "text"),
    ]
    for violation in violations:
        assert_safe_to_log(violation)


def test_real_letter_with_a_national_id_in_the_self_service_url(renderer: Renderer) -> None:
    ctx = context(self_service_url=f"https://betal.example.no/s/{FNR_SPACED.replace(' ', '%20')}")
    ctx["case"]["account_number"] = None  # the letter prints the link only without an account number
    violations = check_message(render(renderer, "letter", ctx), LETTER_LIMITS)
    assert {(v.rule, v.code) for v in violations} == {("R9", "national_id_in_url")}
