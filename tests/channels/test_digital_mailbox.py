"""DigipostChannel against the Digipost sandbox: a real HTTP server on 127.0.0.1, port 0, that verifies
every request's signature with the sender's public key. Letters are the real LETTER template, real PDFs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

import aiohttp
import pytest
from pydantic import SecretStr

from channels.base import (
    Channel,
    ChannelConfigurationError,
    ChannelError,
    Outgoing,
    PermanentChannelError,
    PostalAddress,
    TransientChannelError,
    UncertainDeliveryError,
)
from channels.digital_mailbox import (
    DIGIPOST_NS,
    DigipostChannel,
    ReturnAddress,
    canonical_request,
    content_sha256,
    document_uuid,
    message_uuid,
    print_if_unread_after,
)
from channels.letter import PdfRenderer
from orchestrator.identifiers import mod11_check_digit, validate_national_id
from orchestrator.rendering import SAMPLE_CONTEXT, Renderer
from orchestrator.sandbox.digipost import DigipostSandbox, generate_key_pair, serve
from orchestrator.settings import Settings

SENDER_ID = "987654"
OSLO_TZ = "Europe/Oslo"
ADDRESS = PostalAddress(lines=("Storgata 1", "Leilighet H0302"), postal_code="0155", city="OSLO")
RETURN_ADDRESS = "Nordlys Inkasso AS; Postboks 123 Sentrum; 0102 Oslo"
SUBJECT = "Brev fra Nordlys Energi AS"


def national_id(day: int, month: int, yy: int) -> str:
    """A valid synthetic national id (month + 80, Skatteetaten's test ids) for a birth date."""
    for individual in range(500, 1000):
        base = f"{day:02d}{month + 80:02d}{yy:02d}{individual:03d}"
        k1 = mod11_check_digit(base, (3, 7, 6, 1, 8, 9, 4, 5, 2))
        if k1 is None:
            continue
        k2 = mod11_check_digit(base + str(k1), (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
        if k2 is None:
            continue
        return validate_national_id(f"{base}{k1}{k2}")
    raise AssertionError("no valid id")  # pragma: no cover


USER = national_id(12, 3, 85)  # a Digipost user in the sandbox
NON_USER = national_id(1, 7, 90)  # a person without a Digipost account
UNKNOWN = national_id(30, 11, 72)  # Digipost cannot find this one
ALL_IDS = (USER, NON_USER, UNKNOWN)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture(scope="module")
def renderer() -> Iterator[PdfRenderer]:
    """One render worker for the whole module (spawning WeasyPrint workers is the slow part)."""
    shared = PdfRenderer(workers=1)
    yield shared
    asyncio.run(shared.close())


@pytest.fixture(scope="module")
def letter_html() -> str:
    rendered = Renderer().render(
        language="nb", kind="inkassovarsel", variant="neutral", channel="letter", context=SAMPLE_CONTEXT
    )
    assert rendered.html is not None
    return rendered.html


@pytest.fixture
def sandbox(keys: tuple[bytes, bytes]) -> DigipostSandbox:
    state = DigipostSandbox()
    state.add_sender(SENDER_ID, keys[1])
    state.add_user(USER)
    state.unknown.add(UNKNOWN)
    return state


@pytest.fixture
async def base_url(sandbox: DigipostSandbox) -> AsyncIterator[str]:
    async with serve(sandbox) as url:
        yield url


def make_channel(
    base_url: str, key_pem: bytes, renderer: PdfRenderer, *, timeout_s: float = 10.0, cost_nok: float = 1.2
) -> DigipostChannel:
    return DigipostChannel(
        base_url=base_url,
        sender_id=SENDER_ID,
        private_key=SecretStr(key_pem.decode("ascii")),
        return_address=RETURN_ADDRESS,
        timeout_s=timeout_s,
        cost_nok=cost_nok,
        renderer=renderer,
    )


@pytest.fixture
async def channel(
    base_url: str, keys: tuple[bytes, bytes], renderer: PdfRenderer
) -> AsyncIterator[DigipostChannel]:
    made = make_channel(base_url, keys[0], renderer)
    yield made
    await made.close()


def outgoing(
    html: str,
    *,
    attempt: str = "att-0001",
    fnr: str = USER,
    address: PostalAddress | None = ADDRESS,
    deadline: object = None,
    subject: str | None = SUBJECT,
) -> Outgoing:
    metadata: dict[str, Any] = {"national_id": SecretStr(fnr)}
    if deadline is not None:
        metadata["print_if_unread_after"] = deadline
    return Outgoing(
        contact_id="con-0001",
        attempt_id=attempt,
        channel="digital_mailbox",
        to="digipost",
        recipient_name="Kari Nordmann",
        text="Inkassovarsel",
        subject=subject,
        html=html,
        postal_address=address,
        metadata=metadata,
    )


def xml(raw: bytes) -> ET.Element:
    return ET.fromstring(raw)  # noqa: S314 - our own channel's XML, kept by our own sandbox


def find(root: ET.Element, path: str) -> ET.Element | None:
    return root.find("/".join(f"{{{DIGIPOST_NS}}}{tag}" for tag in path.split("/")))


def text(root: ET.Element, path: str) -> str | None:
    found = find(root, path)
    return None if found is None else found.text


# ----------------------------------------------------------------------------------------- digital delivery


async def test_a_digipost_user_gets_the_letter_in_digipost(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    receipt = await channel.send(outgoing(letter_html))

    assert receipt.provider == "digipost"
    assert receipt.provider_message_id == message_uuid("att-0001")
    assert receipt.detail["delivery"] == "digital"
    assert receipt.detail["already_sent"] is False
    assert receipt.detail["print_if_unread_after"] is None
    assert receipt.detail["status"] == "DELIVERED"
    assert receipt.detail["identification"] == "DIGIPOST"

    [stored] = sandbox.messages
    assert stored.delivery == "digital"
    assert stored.message_id == message_uuid("att-0001")
    assert stored.document_uuid == document_uuid("att-0001")
    assert stored.pdf.startswith(b"%PDF")
    assert stored.national_id == USER
    assert stored.subject == SUBJECT
    assert (stored.authentication_level, stored.sensitivity_level) == ("PASSWORD", "NORMAL")
    assert stored.print_details is None and stored.print_if_unread_after is None
    root = xml(stored.xml)
    assert text(root, "recipient/personal-identification-number") == USER
    assert find(root, "recipient/print-details") is None
    assert text(root, "primary-document/file-type") == "pdf"

    # Every request was signed by our broker and verified with its public key.
    assert [(r.method, r.path) for r in sandbox.requests] == [
        ("GET", "/"),
        ("POST", "/identification"),
        ("POST", "/messages"),
    ]
    assert all(r.verified and r.status == 200 and r.user_id == SENDER_ID for r in sandbox.requests)


async def test_the_entry_point_is_fetched_once(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    await channel.send(outgoing(letter_html, attempt="att-0001"))
    await channel.send(outgoing(letter_html, attempt="att-0002"))
    assert [r.path for r in sandbox.requests].count("/") == 1
    assert len(sandbox.messages) == 2
    assert {m.message_id for m in sandbox.messages} == {message_uuid("att-0001"), message_uuid("att-0002")}


async def test_a_subject_is_always_sent(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    """The LETTER template has no subject; Digipost requires one and shows it in notifications."""
    await channel.send(outgoing(letter_html, subject=None))
    assert sandbox.messages[0].subject == "Brev"


# ------------------------------------------------------------------------------------------ print fallback


async def test_a_non_user_gets_the_letter_on_paper(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    receipt = await channel.send(outgoing(letter_html, fnr=NON_USER))

    assert receipt.detail["delivery"] == "print"
    assert receipt.detail["status"] == "DELIVERED_TO_PRINT"
    assert receipt.detail["identification"] == "IDENTIFIED"
    [stored] = sandbox.messages
    assert stored.delivery == "print"
    assert stored.pdf.startswith(b"%PDF")
    assert stored.print_details == {
        "recipient": {
            "name": "Kari Nordmann",
            "lines": ["Storgata 1", "Leilighet H0302"],
            "zip_code": "0155",
            "city": "OSLO",
            "country": "NO",
        },
        "return_address": {
            "name": "Nordlys Inkasso AS",
            "lines": ["Postboks 123 Sentrum"],
            "zip_code": "0102",
            "city": "Oslo",
            "country": "NO",
        },
        "color": "MONOCHROME",
        "nondeliverable_handling": "RETURN_TO_SENDER",
    }
    # Paper needs no national id: it is not sent (R9, data minimisation).
    assert stored.national_id is None
    assert NON_USER.encode() not in stored.xml
    assert (
        text(xml(stored.xml), "recipient/print-details/recipient/norwegian-address/addressline1")
        == "Storgata 1"
    )


async def test_someone_digipost_cannot_find_is_printed_too(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    receipt = await channel.send(outgoing(letter_html, fnr=UNKNOWN))
    assert receipt.detail["delivery"] == "print"
    assert receipt.detail["identification"] == "UNIDENTIFIED"


async def test_a_non_user_without_a_postal_address_is_permanent(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(outgoing(letter_html, fnr=NON_USER, address=None))
    assert caught.value.reason == "not_digipost_user"
    assert sandbox.messages == []


async def test_a_foreign_address_is_printed_as_foreign(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    abroad = PostalAddress(lines=("Drottninggatan 5",), postal_code="111 51", city="Stockholm", country="SE")
    await channel.send(outgoing(letter_html, fnr=NON_USER, address=abroad))
    details = sandbox.messages[0].print_details
    assert details is not None
    assert details["recipient"] == {
        "name": "Kari Nordmann",
        "lines": ["Drottninggatan 5", "111 51 Stockholm"],
        "country": "SE",
    }


async def test_an_address_digipost_cannot_print_is_refused_before_sending(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    too_long = PostalAddress(
        lines=("c/o A", "Storgata 1", "Oppgang B", "Leilighet 2"), postal_code="0155", city="OSLO"
    )
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(outgoing(letter_html, fnr=NON_USER, address=too_long))
    assert caught.value.reason == "invalid_postal_address"
    assert not any(r.path == "/messages" for r in sandbox.requests)


# --------------------------------------------------------------------------------------- print-if-unread


@pytest.mark.parametrize("as_text", [False, True])
async def test_print_if_unread_carries_the_deadline(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str, as_text: bool
) -> None:
    deadline = date.today() + timedelta(days=14)
    receipt = await channel.send(
        outgoing(letter_html, deadline=deadline.isoformat() if as_text else deadline)
    )

    assert receipt.detail["delivery"] == "digital"
    assert str(receipt.detail["print_if_unread_after"]).startswith(f"{deadline.isoformat()}T00:00:00+")
    [stored] = sandbox.messages
    assert stored.delivery == "digital"
    assert stored.print_if_unread_after is not None
    assert stored.print_if_unread_after.date() == deadline
    details = stored.print_if_unread_details
    assert details is not None
    assert details["recipient"]["name"] == "Kari Nordmann"
    assert details["recipient"]["lines"] == ["Storgata 1", "Leilighet H0302"]
    assert details["return_address"]["name"] == "Nordlys Inkasso AS"
    root = xml(stored.xml)
    assert str(text(root, "print-if-unread/print-if-unread-after")).startswith(deadline.isoformat())
    assert text(root, "recipient/personal-identification-number") == USER


async def test_a_deadline_for_a_non_user_is_moot_the_letter_is_printed_now(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    receipt = await channel.send(
        outgoing(letter_html, fnr=NON_USER, deadline=date.today() + timedelta(days=7))
    )
    assert receipt.detail["delivery"] == "print"
    assert receipt.detail["print_if_unread_after"] is None
    assert find(xml(sandbox.messages[0].xml), "print-if-unread") is None


async def test_print_if_unread_needs_a_postal_address(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(outgoing(letter_html, address=None, deadline=date.today() + timedelta(days=7)))
    assert caught.value.reason == "postal_address_required"
    assert sandbox.requests == []


async def test_a_deadline_in_the_past_is_refused(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(outgoing(letter_html, deadline=date.today() - timedelta(days=1)))
    assert caught.value.reason == "print_if_unread_after_passed"
    assert sandbox.requests == []


def test_print_if_unread_after_reads_dates_and_datetimes() -> None:
    assert print_if_unread_after(None) is None
    assert print_if_unread_after("") is None
    start = print_if_unread_after(date(2026, 7, 1))
    assert start is not None and start.isoformat() == "2026-07-01T00:00:00+02:00"
    winter = print_if_unread_after("2026-12-01")
    assert winter is not None and winter.isoformat() == "2026-12-01T00:00:00+01:00"
    exact = print_if_unread_after("2026-12-01T12:30:00+00:00")
    assert exact == datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
    for bad in ("2026-12-01T12:30:00", "first of May", 17):
        with pytest.raises(PermanentChannelError):
            print_if_unread_after(bad)


# -------------------------------------------------------------------------------------------- idempotency


@pytest.mark.parametrize(("fnr", "delivery"), [(USER, "digital"), (NON_USER, "print")])
async def test_the_same_attempt_twice_is_delivered_once(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str, fnr: str, delivery: str
) -> None:
    first = await channel.send(outgoing(letter_html, fnr=fnr))
    second = await channel.send(outgoing(letter_html, fnr=fnr))

    assert len(sandbox.messages) == 1
    assert (409, "DUPLICATE_MESSAGE") in sandbox.rejected
    assert second.provider_message_id == first.provider_message_id == message_uuid("att-0001")
    assert first.detail["already_sent"] is False
    assert second.detail["already_sent"] is True
    assert second.detail["duplicate"] == "DUPLICATE_MESSAGE"
    assert second.detail["delivery"] == first.detail["delivery"] == delivery
    assert second.detail["status"] == "DELIVERED"
    status_path = f"/documents/{SENDER_ID}/{document_uuid('att-0001')}/status"
    assert any(r.path == status_path and r.status == 200 for r in sandbox.requests)


async def test_a_duplicate_reports_how_the_first_send_went(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    """The debtor opened a Digipost account between two tries of one attempt: the letter went to print."""
    first = await channel.send(outgoing(letter_html, fnr=NON_USER))
    sandbox.add_user(NON_USER)
    again = await channel.send(outgoing(letter_html, fnr=NON_USER))
    assert first.detail["delivery"] == again.detail["delivery"] == "print"
    assert len(sandbox.messages) == 1


def test_ids_are_derived_from_the_attempt() -> None:
    uuid_shape = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert message_uuid("att-1") == message_uuid("att-1")
    assert message_uuid("att-1") != message_uuid("att-2")
    assert message_uuid("att-1") != document_uuid("att-1")
    assert uuid_shape.fullmatch(message_uuid("att-1")) and uuid_shape.fullmatch(document_uuid("att-1"))


# ------------------------------------------------------------------------------------------------- errors


async def test_a_wrong_key_is_a_configuration_error(
    base_url: str, sandbox: DigipostSandbox, renderer: PdfRenderer, letter_html: str
) -> None:
    other_private, _ = generate_key_pair()
    wrong = make_channel(base_url, other_private, renderer)
    try:
        with pytest.raises(ChannelConfigurationError) as caught:
            await wrong.send(outgoing(letter_html))
    finally:
        await wrong.close()
    assert caught.value.reason == "digipost_auth_failed:INVALID_SIGNATURE"
    assert sandbox.rejected == [(401, "INVALID_SIGNATURE")]
    assert [r.verified for r in sandbox.requests] == [False]
    assert sandbox.messages == []


async def test_an_unknown_broker_is_a_configuration_error(
    base_url: str,
    keys: tuple[bytes, bytes],
    renderer: PdfRenderer,
    letter_html: str,
    sandbox: DigipostSandbox,
) -> None:
    stranger = DigipostChannel(
        base_url=base_url,
        sender_id="111111",
        private_key=SecretStr(keys[0].decode()),
        return_address=RETURN_ADDRESS,
        renderer=renderer,
    )
    try:
        with pytest.raises(ChannelConfigurationError) as caught:
            await stranger.identify(USER)
    finally:
        await stranger.close()
    assert caught.value.reason == "digipost_auth_failed:UNKNOWN_USER_ID"


@pytest.mark.parametrize(
    ("status", "routes", "reason"),
    [
        (503, (), "digipost_unavailable"),
        (503, ("messages",), "digipost_unavailable"),
        (500, ("identification",), "digipost_5xx"),
        (429, ("messages",), "digipost_throttled"),
    ],
)
async def test_server_errors_are_transient(
    channel: DigipostChannel,
    sandbox: DigipostSandbox,
    letter_html: str,
    status: int,
    routes: tuple[Any, ...],
    reason: str,
) -> None:
    sandbox.fail(status, *routes)
    with pytest.raises(TransientChannelError) as caught:
        await channel.send(outgoing(letter_html))
    assert caught.value.reason == reason
    assert sandbox.messages == []
    sandbox.fail(None)
    receipt = await channel.send(outgoing(letter_html))  # the same attempt goes out once Digipost is back
    assert receipt.detail["already_sent"] is False
    assert len(sandbox.messages) == 1


async def test_a_504_to_the_message_is_uncertain(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    sandbox.fail(504, "messages")
    with pytest.raises(UncertainDeliveryError):
        await channel.send(outgoing(letter_html))


async def test_a_slow_digipost_is_uncertain_and_a_resend_is_safe(
    base_url: str,
    keys: tuple[bytes, bytes],
    renderer: PdfRenderer,
    sandbox: DigipostSandbox,
    letter_html: str,
) -> None:
    impatient = make_channel(base_url, keys[0], renderer, timeout_s=0.5)
    try:
        await impatient.identify(USER)  # warm: entry point cached, connection open
        sandbox.slow_s = 3.0
        with pytest.raises(UncertainDeliveryError) as caught:
            await impatient.send(outgoing(letter_html))
        assert caught.value.reason == "digipost_outcome_unknown"
        assert len(sandbox.messages) == 1  # Digipost has it
        sandbox.slow_s = 0.0
        receipt = await impatient.send(outgoing(letter_html))
    finally:
        await impatient.close()
    assert receipt.detail["already_sent"] is True
    assert receipt.detail["delivery"] == "digital"
    assert len(sandbox.messages) == 1


async def test_a_slow_identification_is_only_transient(
    base_url: str,
    keys: tuple[bytes, bytes],
    renderer: PdfRenderer,
    sandbox: DigipostSandbox,
    letter_html: str,
) -> None:
    """Nothing is delivered by an identification: a timeout there is safe to retry."""
    impatient = make_channel(base_url, keys[0], renderer, timeout_s=0.3)
    unreachable = make_channel(f"http://127.0.0.1:{free_port()}", keys[0], renderer, timeout_s=1.0)
    try:
        with pytest.raises(TransientChannelError) as caught:
            await unreachable.send(outgoing(letter_html))
        assert caught.value.reason == "digipost_unavailable"
        assert await impatient.identify(USER)
    finally:
        await impatient.close()
        await unreachable.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unsigned_requests_are_refused_by_the_sandbox(base_url: str, sandbox: DigipostSandbox) -> None:
    async with aiohttp.ClientSession() as session, session.get(base_url + "/") as response:
        assert response.status == 401
        body = xml(await response.read())
    assert text(body, "error-code") == "UNKNOWN_USER_ID"
    assert text(body, "error-type") == "CLIENT_TECHNICAL"
    assert sandbox.requests[0].verified is False


async def test_a_missing_or_invalid_national_id_is_permanent(
    channel: DigipostChannel, sandbox: DigipostSandbox, letter_html: str
) -> None:
    message = outgoing(letter_html)
    missing = dataclasses.replace(message, metadata={})
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(missing)
    assert caught.value.reason == "national_id_missing"
    invalid = USER[:-1] + str((int(USER[-1]) + 1) % 10)
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(outgoing(letter_html, fnr=invalid))
    assert caught.value.reason == "invalid_national_id"
    assert invalid not in str(caught.value)
    assert sandbox.requests == []


async def test_identify(channel: DigipostChannel) -> None:
    user = await channel.identify(USER)
    assert (user.result, user.is_digipost_user) == ("DIGIPOST", True)
    assert (await channel.identify(SecretStr(NON_USER))).result == "IDENTIFIED"
    unknown = await channel.identify(UNKNOWN)
    assert (unknown.result, unknown.reason, unknown.is_digipost_user) == ("UNIDENTIFIED", "NOT_FOUND", False)


# ------------------------------------------------------------------------------------------------- R9


async def test_the_national_id_is_never_logged_nor_in_a_url(
    base_url: str,
    keys: tuple[bytes, bytes],
    renderer: PdfRenderer,
    sandbox: DigipostSandbox,
    letter_html: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[ChannelError] = []
    channel = make_channel(base_url, keys[0], renderer)
    try:
        await channel.send(outgoing(letter_html, attempt="att-1", fnr=USER))
        await channel.send(outgoing(letter_html, attempt="att-1", fnr=USER))  # duplicate
        await channel.send(outgoing(letter_html, attempt="att-2", fnr=NON_USER))
        await channel.send(
            outgoing(letter_html, attempt="att-3", fnr=USER, deadline=date.today() + timedelta(9))
        )
        await channel.identify(UNKNOWN)
        for failing in (
            outgoing(letter_html, attempt="att-4", fnr=NON_USER, address=None),
            outgoing(letter_html, attempt="att-5", fnr=USER[:-1] + str((int(USER[-1]) + 1) % 10)),
        ):
            with pytest.raises(ChannelError) as caught:
                await channel.send(failing)
            errors.append(caught.value)
        sandbox.fail(503, "messages")
        with pytest.raises(ChannelError) as caught:
            await channel.send(outgoing(letter_html, attempt="att-6", fnr=USER))
        errors.append(caught.value)
        sandbox.fail(None)
    finally:
        await channel.close()
    wrong = make_channel(base_url, generate_key_pair()[0], renderer)
    try:
        with pytest.raises(ChannelError) as caught:
            await wrong.send(outgoing(letter_html, attempt="att-7", fnr=USER))
        errors.append(caught.value)
    finally:
        await wrong.close()

    # The ids did travel (inside Digipost's request bodies), so the checks below are not vacuous.
    assert any(USER.encode() in m.xml for m in sandbox.messages)
    assert caplog.records, "the channel logs its sends"
    forbidden = (*ALL_IDS, USER[:6] + " " + USER[6:])
    for record in caplog.records:
        rendered = record.getMessage() + repr(record.args) + (record.exc_text or "")
        assert not any(fnr in rendered for fnr in forbidden), record.getMessage()
    for request in sandbox.requests:
        assert not any(fnr in request.path for fnr in forbidden), request.path
    for error in errors:
        assert not any(fnr in f"{error} {error.reason} {error!r}" for fnr in forbidden)


# -------------------------------------------------------------------------------- signing, configuration


def test_the_canonical_request_is_digiposts() -> None:
    """As RequestMessageSignatureUtil: method, lower-cased path, signed headers by lower-cased name, query."""
    body = b"<identification/>"
    headers = {
        "X-Digipost-UserId": "987654",
        "Date": "Tue, 01 Sep 2026 10:00:00 GMT",
        "X-Content-SHA256": content_sha256(body),
        "Content-Type": "application/vnd.digipost-v8+xml",
        "Accept": "application/vnd.digipost-v8+xml",
    }
    assert canonical_request("post", "/Identification", "", headers) == (
        "POST\n/identification\n"
        "date: Tue, 01 Sep 2026 10:00:00 GMT\n"
        f"x-content-sha256: {content_sha256(body)}\n"
        "x-digipost-userid: 987654\n"
        "\n"
    )
    assert canonical_request("GET", "/", "Q=A", {"Date": "d", "X-Digipost-UserId": "1"}) == (
        "GET\n/\ndate: d\nx-digipost-userid: 1\nq=a\n"
    )
    assert content_sha256(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


async def test_the_channel_is_a_statutory_channel_by_national_id(
    base_url: str, keys: tuple[bytes, bytes], renderer: PdfRenderer
) -> None:
    made = make_channel(base_url, keys[0], renderer, cost_nok=2.5)
    try:
        assert isinstance(made, Channel)
        assert (made.name, made.provider) == ("digital_mailbox", "digipost")
        assert made.limits.statutory == "always"
        assert made.limits.reaches == "national_id"
        assert made.limits.cost_nok == 2.5
        assert made.limits.max_body_chars is None
        assert made.limits.supports_subject and made.limits.supports_html
        assert SENDER_ID in repr(made) and "PRIVATE" not in repr(made)
    finally:
        await made.close()


def test_return_addresses_are_parsed() -> None:
    parsed = ReturnAddress.parse("Nordlys Inkasso AS\nPostboks 123 Sentrum\n0102 Oslo")
    assert parsed == ReturnAddress(
        "Nordlys Inkasso AS", PostalAddress(("Postboks 123 Sentrum",), "0102", "Oslo")
    )
    for bad in ("Nordlys Inkasso AS; 0102 Oslo", "Nordlys; Postboks 1; Oslo"):
        with pytest.raises(ValueError, match="return address"):
            ReturnAddress.parse(bad)


def test_from_settings(tmp_path: Any, keys: tuple[bytes, bytes]) -> None:
    assert DigipostChannel.from_settings(Settings()) is None
    key_file = tmp_path / "digipost.pem"
    key_file.write_bytes(keys[0])
    settings = Settings(
        state_dir=tmp_path,
        digipost_url="https://api.digipost.no",
        digipost_sender_id="987654",
        digipost_private_key_path=key_file,
        digipost_return_address=RETURN_ADDRESS,
        digipost_cost_nok=1.5,
    )
    made = DigipostChannel.from_settings(settings)
    assert made is not None
    assert made.limits.cost_nok == 1.5
    asyncio.run(made.close())
    incomplete = Settings(
        state_dir=tmp_path, digipost_url="https://api.digipost.no", digipost_sender_id="987654"
    )
    with pytest.raises(ChannelConfigurationError, match="ORCH_DIGIPOST_RETURN_ADDRESS"):
        DigipostChannel.from_settings(incomplete)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"private_key": SecretStr("not a key")}, "digipost_key_invalid"),
        ({"private_key_path": "/nonexistent/digipost.p12"}, "digipost_key_unreadable"),
        ({"sender_id": "abc"}, "digipost_sender_id_invalid"),
        ({"base_url": "ftp://digipost"}, "digipost_url_invalid"),
        ({"return_address": "Nordlys; Postboks 1; Oslo"}, "digipost_return_address_invalid"),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    keys: tuple[bytes, bytes], kwargs: dict[str, Any], reason: str
) -> None:
    arguments: dict[str, Any] = {
        "base_url": "https://api.digipost.no",
        "sender_id": SENDER_ID,
        "private_key": SecretStr(keys[0].decode()),
        "return_address": RETURN_ADDRESS,
        **kwargs,
    }
    if "private_key_path" in kwargs:
        arguments["private_key"] = None
    with pytest.raises(ChannelConfigurationError) as caught:
        DigipostChannel(**arguments)
    assert caught.value.reason == reason
