"""``orchestrator demo`` shows the whole loop, and the sandboxes it is built from.

The demo runs for real (``python -m orchestrator demo --exit --always-open`` with nothing configured: embedded
Redis, SQLite in a fresh state directory), once for the module; the tests then read what it left behind —
its output, the SMTP sandbox's .eml files and DSNs, the print drop, and the contact log itself. The SMTP
sandbox is also tested on its own against the real VERP bounce receiver."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import select

from channels.base import PostalAddress
from channels.print_provider import FolderDelivery, PrintBatcher, PrintLetter
from orchestrator import contact_log as store
from orchestrator import db
from orchestrator.models import CarrierEvent, Debtor
from orchestrator.sandbox.print_provider import PrintProviderSandbox, read_batches
from orchestrator.sandbox.sample_portfolio import (
    BOUNCING_EMAIL,
    GRADED,
    MOVED_ORG,
    UNKNOWN_RESIDENCE,
    comes_back,
)
from orchestrator.sandbox.smtp import SmtpSandbox, build_dsn
from tests.conftest import SmtpRecorder
from tests.test_cli import _assert_redis_gone, embedded_env, explain, outbox_items, run_cli
from webhooks.bounces import BounceReceiver, parse_bounce
from webhooks.events import CarrierEvent as Event

CONTACT = "01M8151N3JG5QH2HZ6FF6QVV09"
ATTEMPT = "01M8151N2GX269ZV82509WQECC"
BOUNCE_DOMAIN = "bounces.orchestrator.invalid"
VERP = f"bounce+{ATTEMPT}@{BOUNCE_DOMAIN}"


# ------------------------------------------------------------------------------------------- the SMTP sandbox


def mail(to: str) -> EmailMessage:
    """A message shaped as channels.mime builds ours: our Message-ID and contact header."""
    msg = EmailMessage()
    msg["From"] = "Eksempel Inkasso <post@example.invalid>"
    msg["To"] = to
    msg["Subject"] = "Påminnelse"
    msg["Message-ID"] = f"<{CONTACT}.{ATTEMPT}@orchestrator.invalid>"
    msg["X-Orchestrator-Contact"] = CONTACT
    msg.set_content("Hei, dette er en påminnelse.", cte="quoted-printable")
    return msg


async def relay(sandbox: SmtpSandbox, to: list[str], sender: str = VERP) -> None:
    await aiosmtplib.send(
        mail(to[0]), hostname=sandbox.host, port=sandbox.port, sender=sender, recipients=to, start_tls=False
    )


async def until(check: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[BounceReceiver, list[tuple[Event, bytes]], list[bytes]]]:
    events: list[tuple[Event, bytes]] = []
    unparsed: list[bytes] = []

    async def on_event(event: Event, raw: bytes) -> None:
        events.append((event, raw))

    async def on_unparsed(raw: bytes) -> None:
        unparsed.append(raw)

    async with BounceReceiver(bounce_domain=BOUNCE_DOMAIN, on_event=on_event, on_unparsed=on_unparsed) as r:
        yield r, events, unparsed


async def test_the_relay_keeps_every_message_as_eml_and_bounces_nothing_it_knows(tmp_path: Path) -> None:
    async with SmtpSandbox(tmp_path / "smtp", bounce_port=None) as sandbox:
        await relay(sandbox, ["kari@example.no", "ola@example.no"])
        [kept] = sandbox.messages
    assert kept.rcpt_tos == ("kari@example.no", "ola@example.no")
    assert kept.mail_from == VERP
    assert kept.bounced == ()
    assert kept.message_id == f"<{CONTACT}.{ATTEMPT}@orchestrator.invalid>"
    assert kept.path.suffix == ".eml" and kept.path.parent == tmp_path / "smtp"
    parsed = email.message_from_bytes(kept.path.read_bytes(), policy=email.policy.default)
    assert parsed["Return-Path"] == f"<{VERP}>"
    assert parsed["Subject"] == "Påminnelse"
    assert parsed["X-Orchestrator-Contact"] == CONTACT
    assert sandbox.bounces == [] and sandbox.pending_bounces() == 0
    assert list((tmp_path / "smtp" / "dsn").iterdir()) == []


def test_who_bounces_is_deterministic(tmp_path: Path) -> None:
    addresses = [f"debtor{n}@example.no" for n in range(400)]
    half = SmtpSandbox(tmp_path, bounce_share=0.5, seed=3, unknown_users=["Ukjent@Example.no"])
    again = SmtpSandbox(tmp_path, bounce_share=0.5, seed=3)
    verdicts = [half.bounces_for(a) for a in addresses]
    assert verdicts == [again.bounces_for(a) for a in addresses]  # the same address, the same fate
    assert 140 <= sum(verdicts) <= 260  # about half
    none = SmtpSandbox(tmp_path, unknown_users=["ukjent@example.no"])
    assert not any(none.bounces_for(a) for a in addresses)
    assert none.bounces_for("<UKJENT@example.no>") and half.bounces_for("ukjent@example.no")
    with pytest.raises(ValueError, match="share"):
        SmtpSandbox(tmp_path, bounce_share=1.5)


async def test_an_unknown_user_bounces_with_a_dsn_the_receiver_reads_as_a_hard_bounce(
    tmp_path: Path, receiver: tuple[BounceReceiver, list[tuple[Event, bytes]], list[bytes]]
) -> None:
    bounce_receiver, events, unparsed = receiver
    async with SmtpSandbox(
        tmp_path / "smtp",
        bounce_port=bounce_receiver.port,
        unknown_users=[BOUNCING_EMAIL],
        bounce_delay_s=0.0,
    ) as sandbox:
        await relay(sandbox, [BOUNCING_EMAIL, "kari@example.no"])
        await until(lambda: sandbox.bounces)
        [sent] = sandbox.bounces
        [kept] = sandbox.messages
    assert kept.bounced == (BOUNCING_EMAIL,)
    assert sent.reply.startswith("250"), sent.reply
    assert (sent.to, sent.recipients) == (VERP, (BOUNCING_EMAIL,))
    assert unparsed == []
    [(event, raw)] = events
    assert raw.replace(b"\r\n", b"\n") == sent.path.read_bytes().replace(b"\r\n", b"\n")
    assert (event.carrier, event.status, event.reason) == ("smtp", "bounced", "hard_bounce")
    assert event.attempt_id == ATTEMPT
    assert event.provider_message_id == f"<{CONTACT}.{ATTEMPT}@orchestrator.invalid>"
    assert event.detail["sub_reason"] == "unknown_user"
    assert event.detail["status_code"] == "5.1.1"
    assert event.detail["final_recipient"] == BOUNCING_EMAIL
    assert event.detail["contact_id"] == CONTACT


async def test_the_dsn_is_a_real_rfc_3464_report_sent_from_the_null_sender(
    tmp_path: Path, smtp_server: SmtpRecorder
) -> None:
    async with SmtpSandbox(
        tmp_path / "smtp", bounce_port=smtp_server.port, unknown_users=[BOUNCING_EMAIL], bounce_delay_s=0.0
    ) as sandbox:
        await relay(sandbox, [BOUNCING_EMAIL])
        await until(lambda: sandbox.bounces)
        # A bounce is never bounced: a message from the null sender to an unknown user just stays here.
        await relay(sandbox, [BOUNCING_EMAIL], sender="")
        await asyncio.sleep(0.2)
        assert len(sandbox.bounces) == 1 and len(sandbox.messages) == 2
    [(envelope, dsn)] = smtp_server.messages
    assert envelope.mail_from in ("", "<>")  # the null reverse path
    assert envelope.rcpt_tos == [VERP]
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Auto-Submitted"] == "auto-replied"
    types = [part.get_content_type() for part in dsn.iter_parts()]
    assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = dsn.get_payload()[1].get_payload()
    assert status[0]["Reporting-MTA"] == "dns; smtp.sandbox.invalid"
    assert (status[1]["Action"], status[1]["Status"]) == ("failed", "5.1.1")
    assert status[1]["Final-Recipient"] == f"rfc822; {BOUNCING_EMAIL}"
    headers = " ".join(dsn.get_payload()[2].get_content().split())  # unfolded
    assert f"Message-ID: <{CONTACT}.{ATTEMPT}@orchestrator.invalid>" in headers
    assert "påminnelse" not in headers  # the original's headers, not its body


def test_build_dsn_parses_as_a_bounce_without_the_verp_address() -> None:
    """Even without the envelope recipient, the returned headers name our attempt (by its Message-ID)."""
    original = mail(BOUNCING_EMAIL).as_bytes()
    now = datetime.now(UTC)
    dsn = build_dsn(
        original,
        envelope_sender=VERP,
        recipients=[BOUNCING_EMAIL],
        reporting_mta="smtp.sandbox.invalid",
        arrival=now,
        now=now,
    )
    event = parse_bounce(dsn.as_bytes(), rcpt_to=None, bounce_domain=BOUNCE_DOMAIN, received_at=now)
    assert event is not None
    assert (event.status, event.reason, event.attempt_id) == ("bounced", "hard_bounce", ATTEMPT)


# ------------------------------------------------------------------------------------ the print sandbox


async def test_the_print_sandbox_returns_the_letters_its_predicate_picks(tmp_path: Path) -> None:
    sandbox = PrintProviderSandbox(tmp_path / "provider", return_if=comes_back)
    sandbox.drop_dir.mkdir(parents=True)
    pdf = b"%PDF-1.7 not rendered: the sandbox only reads the manifest"
    batcher = PrintBatcher(FolderDelivery(sandbox.drop_dir), max_letters=2, max_wait_s=60)
    addresses = {
        "gone": PostalAddress(lines=("Gamle Kaigate 9",), postal_code="5003", city="BERGEN"),
        "here": PostalAddress(lines=("Postboks 4410 Nygårdstangen",), postal_code="5828", city="BERGEN"),
    }
    letters = [
        PrintLetter(
            reference=f"ct{n}.at{n}",
            contact_id=f"ct{n}",
            attempt_id=f"at{n}",
            recipient_name="Havbris Handel AS",
            address=address,
            pdf=pdf,
            pages=1,
        )
        for n, address in enumerate(addresses.values())
    ]
    await asyncio.gather(*(batcher.submit(letter) for letter in letters))
    await batcher.close()

    [returned] = await sandbox.process_returns()
    assert await sandbox.process_returns() == []
    assert (returned.reference, returned.reason) == ("ct0.at0", "returned_unknown_addressee")


# ---------------------------------------------------------------------------------------------- the demo


@dataclass
class Demo:
    state: Path
    result: subprocess.CompletedProcess[str]

    @property
    def out(self) -> str:
        return self.result.stdout

    def loop_lines(self, debtor_id: str) -> list[str]:
        """The demo's story of one loop debtor (its timeline steps)."""
        section = self.out.split("step by step")[1].split("Where to look")[0]
        story = section.split(f"  {debtor_id}: ")[1]
        return re.split(r"\n  DEMO-D-\d+: ", story)[0].splitlines()[1:]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("demo")
    work = root / "work"
    work.mkdir()
    state = root / "state"
    result = run_cli("demo", "--exit", "--always-open", env=embedded_env(state), cwd=work)
    assert result.returncode == 0, explain(result)
    return Demo(state, result)


async def contact_log(demo: Demo, debtor_id: str) -> dict[str, Any]:
    """What the contact log holds about one debtor once the demo has stopped."""
    engine = db.create_engine(f"sqlite+aiosqlite:///{demo.state / 'orchestrator.sqlite3'}")
    try:
        async with db.session_factory(engine)() as session:
            contacts = await store.list_contacts(session, debtor_id=debtor_id)
            attempts = {c.id: await store.get_attempts(session, c.id) for c in contacts}
            tasks = await store.operator_tasks(session, debtor_id=debtor_id)
            smtp_events = await session.execute(select(CarrierEvent).where(CarrierEvent.carrier == "smtp"))
            return {
                "debtor": await session.get(Debtor, debtor_id),
                "contacts": {c.kind: c for c in contacts},
                "attempts": attempts,
                "tasks": [(t.kind, t.reason) for t in tasks],
                "timeline": await store.timeline(session, debtor_id),
                "case": await store.get_case(session, debtor_id.replace("-D-", "-C-")),
                "smtp_events": list(smtp_events.scalars()),
            }
    finally:
        await engine.dispose()


def test_the_demo_sends_the_sample_through_every_sandbox(demo: Demo) -> None:
    out = demo.out
    assert "12 through POST" in out
    assert "11 queued, 1 rejected" in out
    for field in ("debtor.phones.0:", "debtor.emails.0:", "case.kid:"):
        assert f"item 6: {field}" in out  # the invalid sample item's problems
    decided = out.split("What the orchestrator decided")[1].split("step by step")[0]
    assert "DEMO-D-5" not in decided
    outcomes = {}
    for line in decided.splitlines():
        match = re.match(r"\s+(DEMO-D-\d+)\s+\w+\s+-> (\w+)\s+(\w+)", line)
        if match:
            outcomes[match.group(1)] = (match.group(2), match.group(3))
    expected = {
        "DEMO-D-1": ("sent", "email"),
        "DEMO-D-2": ("sent", "letter"),
        "DEMO-D-3": ("delivered", "sms"),  # the gateway's delivery report came back through our webhook
        "DEMO-D-4": ("sent", "letter"),
        "DEMO-D-6": ("delivered", "chat_link"),
        "DEMO-D-7": ("sent", "digital_mailbox"),
        "DEMO-D-8": ("sent", "letter"),  # sent again, to the address Brreg gave
        "DEMO-D-9": ("returned", "letter"),  # its case is held (R8): see below
        # No new address: the varsel goes on through the digital mailbox, lawful for it (fallback chains, R3).
        "DEMO-D-10": ("sent", "digital_mailbox"),
        "DEMO-D-11": ("returned", "letter"),
        "DEMO-D-12": ("bounced", "email"),
    }
    assert outcomes == expected, explain(demo.result)
    # Nothing waits in the outbox: every channel went through its carrier's sandbox.
    assert outbox_items(demo.state / "outbox") == ([], [], [])
    smtp = (demo.state / "sandbox-smtp").resolve()
    assert f"2 message(s) kept as .eml in {smtp}" in out
    assert f"copies in {smtp / 'dsn'}" in out
    kept = sorted(smtp.glob("*.eml"))
    assert len(kept) == 2 and all(b"Subject:" in path.read_bytes() for path in kept)
    taken = re.search(r"Link Mobility took (\d+), Twilio took (\d+)", out)
    assert taken, out
    assert int(taken.group(1)) + int(taken.group(2)) == 3  # a reminder, a chat link, an address request
    drop = (demo.state / "sandbox-print-provider" / "sftp").resolve()
    assert re.search(rf"print provider \(SFTP sandbox\): \d batch\(es\), 7 letter\(s\) in {drop}", out), out
    assert "4 came back, reported to POST" in out
    assert "digital mailbox (Digipost sandbox): digital" in out
    assert "2 Brreg and 2 Folkeregisteret look-up(s), 1 Maskinporten token(s)" in out
    for secret in (UNKNOWN_RESIDENCE, GRADED, "Skjermet vei"):
        assert secret not in out and secret not in demo.result.stderr  # R9
    _assert_redis_gone(demo.state, demo.result.stderr)


async def test_a_returned_letter_goes_again_to_the_brreg_address_once(demo: Demo) -> None:
    letters = [
        letter
        for batch in read_batches(demo.state / "sandbox-print-provider" / "sftp")
        for letter in batch.letters
        if letter.recipient_name == "Havbris Handel AS"
    ]
    assert [(letter.address_lines, letter.postal_code) for letter in letters] == [
        (("Gamle Kaigate 9",), "5003"),
        (("Postboks 4410 Nygårdstangen",), "5828"),
    ]
    assert letters[0].contact_id == letters[1].contact_id  # the same contact, the same letter
    assert letters[0].attempt_id != letters[1].attempt_id
    assert all(letter.path.read_bytes().startswith(b"%PDF") for letter in letters)
    assert hashlib.sha256(letters[1].path.read_bytes()).hexdigest() == letters[1].sha256

    log = await contact_log(demo, "DEMO-D-8")
    [first, second] = log["attempts"][letters[0].contact_id]
    assert (first.status, second.status) == ("returned", "sent")
    assert second.address == "Postboks 4410 Nygårdstangen\n5828 BERGEN"
    [resent] = [e for e in log["timeline"] if e.type == "address_updated_resent"]
    assert resent.detail["source"] == "brreg" and resent.attempt_id == first.id
    assert [a["source"] for a in log["debtor"].registry_addresses] == ["brreg"]
    assert log["debtor"].organisation_number == MOVED_ORG
    assert log["tasks"] == []
    lines = demo.loop_lines("DEMO-D-8")
    assert any("returned mail: brreg looked_up: address_found" in line for line in lines), lines
    assert any(
        "the same letter again, to Postboks 4410 Nygårdstangen, 5828 BERGEN (from brreg)" in line
        for line in lines
    ), lines


async def test_a_bankrupt_company_has_its_case_held_with_an_operator_task(demo: Demo) -> None:
    log = await contact_log(demo, "DEMO-D-9")
    assert (log["case"].status, log["case"].status_reason) == ("held", "bankruptcy")
    assert log["tasks"] == [("stop_collection", "bankruptcy")]
    [contact] = log["contacts"].values()
    assert [a.status for a in log["attempts"][contact.id]] == ["returned"]  # nothing sent again
    assert any(e.type == "case_held" for e in log["timeline"])
    lines = demo.loop_lines("DEMO-D-9")
    assert any("returned mail: brreg looked_up: bankruptcy" in line for line in lines), lines
    assert any("operator task: stop_collection (bankruptcy)" in line for line in lines), lines


async def test_unknown_residence_brings_an_address_request_sms_through_the_gateway(demo: Demo) -> None:
    log = await contact_log(demo, "DEMO-D-10")
    request = log["contacts"]["address_request"]
    letter = log["contacts"]["inkassovarsel"]
    assert request.idempotency_key == f"address-request:{letter.id}"
    assert (request.channel, request.status) == ("sms", "delivered")
    [attempt] = log["attempts"][request.id]
    assert attempt.provider in ("linkmobility", "twilio") and attempt.provider_message_id
    assert attempt.address == "+4790000010"
    assert log["tasks"] == []
    lines = demo.loop_lines("DEMO-D-10")
    assert any("returned mail: folkeregisteret looked_up: unknown_residence" in line for line in lines), lines
    assert any(f"address request sent as a new contact ({request.id})" in line for line in lines), lines
    assert any("sent: sms to +4790000010" in line for line in lines), lines
    # The varsel itself went on through the next lawful channel, never by SMS (R3).
    assert [a.channel for a in log["attempts"][letter.id]] == ["letter", "digital_mailbox"]


async def test_a_graded_address_is_an_operator_task_and_never_stored(demo: Demo) -> None:
    log = await contact_log(demo, "DEMO-D-11")
    assert log["tasks"] == [("graded_address", "graded_address")]
    assert not log["debtor"].registry_addresses
    assert all("Skjermet" not in str(e.detail) for e in log["timeline"])
    lines = demo.loop_lines("DEMO-D-11")
    assert any("returned mail: folkeregisteret looked_up: graded_address" in line for line in lines), lines


async def test_a_bounced_email_address_is_marked_unusable_after_a_real_dsn(demo: Demo) -> None:
    log = await contact_log(demo, "DEMO-D-12")
    contact = log["contacts"]["reminder"]
    [attempt] = log["attempts"][contact.id]
    assert (contact.status, attempt.status, attempt.status_reason) == ("bounced", "bounced", "hard_bounce")
    assert log["debtor"].unusable_addresses == [BOUNCING_EMAIL]
    # The DSN the relay sent is the one the bounce receiver took and the worker applied.
    [dsn_file] = sorted((demo.state / "sandbox-smtp" / "dsn").glob("*.eml"))
    dsn = email.message_from_bytes(dsn_file.read_bytes(), policy=email.policy.default)
    assert dsn["To"] == f"bounce+{attempt.id}@{BOUNCE_DOMAIN}"
    [event] = [e for e in log["smtp_events"] if e.attempt_id == attempt.id]
    assert event.event_id == dsn["Message-ID"]
    assert event.processed_at is not None
    assert event.payload["raw"]["content_type"] == "message/rfc822"
    assert event.payload["event"]["detail"]["matched_by"] == "verp"
    [shown] = [e for e in log["timeline"] if e.type == "carrier_event"]
    assert (shown.status, shown.source, shown.detail["reason"]) == ("bounced", "smtp", "hard_bounce")
    lines = demo.loop_lines("DEMO-D-12")
    assert any("smtp reports bounced: hard_bounce (5.1.1)" in line for line in lines), lines
    assert any("unusable" in line for line in lines), lines


def test_the_demo_tells_where_the_files_are(demo: Demo) -> None:
    where = demo.out.split("Where to look:")[1]
    assert str((demo.state / "sandbox-smtp").resolve()) in where
    assert str((demo.state / "sandbox-print-provider" / "sftp").resolve()) in where
    assert "/v1/debtors/DEMO-D-8/timeline" in where
