"""The contact log's tables. The database is the source of truth; Redis only carries ids and timing.

Ids of rows we create are ULIDs (time-ordered), so "newest first" is ``ORDER BY id DESC`` and a cursor is the
last id seen. Times are stored in UTC; ``UTCDateTime`` makes SQLite give them back timezone-aware too.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    """A ULID: 48 bits of milliseconds and 80 random bits in Crockford base32, sortable by creation time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def utcnow() -> datetime:
    return datetime.now(UTC)


def ulid_floor(moment: datetime) -> str:
    """The smallest ULID of ``moment``'s millisecond: a time range over ids is a range over the primary
    key."""
    value = int(moment.timestamp() * 1000) << 80
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]]
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Debtor(Base):
    """A debtor as upstream knows it. ``national_id`` is used only to identify (R9) and is never returned."""

    __tablename__ = "debtors"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # ours, opaque: the console's URLs name a debtor by it, since upstream's id may carry personal data
    ref: Mapped[str] = mapped_column(String(26), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(300))
    national_id: Mapped[str | None] = mapped_column(String(11))
    organisation_number: Mapped[str | None] = mapped_column(String(9))
    # addresses, phones, emails, electronic_notice_evidence, as validated at intake (upstream's, replaced)
    contact_points: Mapped[dict[str, Any]]
    # addresses that bounced or returned mail (ours: kept when upstream sends the debtor again)
    unusable_addresses: Mapped[list[Any] | None]
    # addresses found in a registry or by Posten after a returned letter: [{lines, postal_code, city, country,
    # source, found_at}] (ours: kept when upstream sends the debtor again; never a graded address, R9)
    registry_addresses: Mapped[list[Any] | None]
    # reaches ("mobile", "email") the debtor opted out of, e.g. by an SMS "STOP": [{reach, source, at}]
    # (ours: kept when upstream sends the debtor again)
    opted_out: Mapped[list[Any] | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    debtor_id: Mapped[str] = mapped_column(ForeignKey("debtors.id"), index=True)
    # open | held | closed; a held case sends nothing (R4 disputes, R8 bankruptcy)
    status: Mapped[str] = mapped_column(String(20), default="open")
    status_reason: Mapped[str | None] = mapped_column(String(100))
    creditor_name: Mapped[str] = mapped_column(String(300))
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Contact(Base):
    """One contact request from upstream, and where it stands."""

    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(300), unique=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    channel_preference: Mapped[str] = mapped_column(String(20))
    # the channel the policy chose; null until decided
    channel: Mapped[str | None] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(5))
    not_before: Mapped[datetime | None]
    debtor_id: Mapped[str] = mapped_column(ForeignKey("debtors.id"))
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"))
    status: Mapped[str] = mapped_column(String(20))
    status_reason: Mapped[str | None] = mapped_column(String(100))
    send_at: Mapped[datetime | None]
    send_tries: Mapped[int] = mapped_column(Integer, default=0)
    # channels that failed for this contact, in order: the fallback chain goes on with the others
    tried_channels: Mapped[list[Any] | None]
    decision: Mapped[dict[str, Any] | None]
    variables: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_contacts_debtor_id_id", "debtor_id", "id"),
        Index("ix_contacts_case_id_id", "case_id", "id"),
        Index("ix_contacts_status_updated_at", "status", "updated_at"),
        Index("ix_contacts_status_send_at", "status", "send_at"),
        # the console's search: each filter with newest first (ids are time-ordered)
        Index("ix_contacts_status_id", "status", "id"),
        Index("ix_contacts_kind_id", "kind", "id"),
        Index("ix_contacts_channel_id", "channel", "id"),
    )


class Attempt(Base):
    """One try to deliver a contact on one channel to one address: the evidence of what was sent."""

    __tablename__ = "attempts"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    provider: Mapped[str] = mapped_column(String(40))
    provider_message_id: Mapped[str | None] = mapped_column(String(300), index=True)
    address: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    status_reason: Mapped[str | None] = mapped_column(String(100))
    template: Mapped[str] = mapped_column(String(200))
    variant: Mapped[str] = mapped_column(String(60))
    rule_version: Mapped[str] = mapped_column(String(60))
    content_sha256: Mapped[str] = mapped_column(String(64))
    # subject, text, html exactly as handed to the carrier, so an operator can show what was sent
    content: Mapped[dict[str, Any]]
    # what the carrier said when it took the message (SMTP reply, file path, batch id, ...)
    detail: Mapped[dict[str, Any] | None]
    # SMS: GSM-7 or UCS-2, and how many segments the carrier bills
    encoding: Mapped[str | None] = mapped_column(String(10))
    segments: Mapped[int | None]
    # the experiment arm this message was sent under: {experiment, arm, variant, holdout, mode, reason, ...}
    assignment: Mapped[dict[str, Any] | None]
    # the language the contact asked for, when the message had to be sent in its fallback language
    template_fallback: Mapped[str | None] = mapped_column(String(5))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CarrierEvent(Base):
    """A raw callback from a carrier, stored exactly once per (carrier, event id)."""

    __tablename__ = "carrier_events"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    carrier: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(300))
    attempt_id: Mapped[str | None] = mapped_column(ForeignKey("attempts.id"), index=True)
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    __table_args__ = (Index("uq_carrier_events_carrier_event_id", "carrier", "event_id", unique=True),)


class TimelineEvent(Base):
    """Everything that passed between the orchestrator and a debtor, in time order."""

    __tablename__ = "timeline_events"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    debtor_id: Mapped[str] = mapped_column(String(200))
    case_id: Mapped[str | None] = mapped_column(String(200))
    contact_id: Mapped[str | None] = mapped_column(String(26), index=True)
    attempt_id: Mapped[str | None] = mapped_column(String(26), index=True)
    at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str | None] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]]
    __table_args__ = (Index("ix_timeline_events_debtor_id_id", "debtor_id", "id"),)


class ChatLink(Base):
    """A self-service link; only the SHA-256 of its token is stored, so the database cannot recreate it."""

    __tablename__ = "chat_links"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    debtor_id: Mapped[str] = mapped_column(ForeignKey("debtors.id"))
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    contact_id: Mapped[str | None] = mapped_column(String(26))
    # "case": the claim and how to pay; "address": only a form for a new postal address (address requests
    # go out when our data may be stale, so that page shows nothing of the claim, R7).
    purpose: Mapped[str] = mapped_column(String(20), server_default="case")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    opened_count: Mapped[int] = mapped_column(Integer, default=0)
    last_opened_at: Mapped[datetime | None]


class CaseEvent(Base):
    """What happened to a case, from upstream (payments, disputes): what experiments are measured on."""

    __tablename__ = "case_events"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    type: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class OperatorTask(Base):
    """Something a person must look at (bankruptcy, a graded address, no address found)."""

    __tablename__ = "operator_tasks"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    debtor_id: Mapped[str] = mapped_column(String(200), index=True)
    case_id: Mapped[str | None] = mapped_column(String(200))
    contact_id: Mapped[str | None] = mapped_column(String(26))
    attempt_id: Mapped[str | None] = mapped_column(String(26))
    reason: Mapped[str] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    # who closed it in the console, and how: {operator, outcome, note}
    resolution: Mapped[dict[str, Any] | None]
    __table_args__ = (Index("ix_operator_tasks_resolved_at_id", "resolved_at", "id"),)


class ReturnedLetter(Base):
    """A returned letter attempt, claimed once: handling it a second time does nothing."""

    __tablename__ = "returned_letters"
    attempt_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(26))
    outcome: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]


class Experiment(Base):
    """An experiment over tone variants (and channels, send hours): its spec as validated at creation."""

    __tablename__ = "experiments"
    id: Mapped[str] = mapped_column(String(60), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # running | stopped
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]


class ExperimentAssignment(Base):
    """Which arm a debtor got in an experiment: assigned once, kept for every later contact. ``exposed_at`` is
    when the first message under it was handed to a carrier (outcomes are counted from then)."""

    __tablename__ = "experiment_assignments"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"))
    debtor_id: Mapped[str] = mapped_column(String(200))
    arm: Mapped[str] = mapped_column(String(60))
    variant: Mapped[str] = mapped_column(String(60))
    holdout: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[dict[str, Any]]
    assigned_at: Mapped[datetime]
    contact_id: Mapped[str | None] = mapped_column(String(26))
    case_id: Mapped[str | None] = mapped_column(String(200))
    exposed_at: Mapped[datetime | None]
    # the channel of that first message: the adaptive mode learns per channel
    channel: Mapped[str | None] = mapped_column(String(20))
    __table_args__ = (
        Index("uq_experiment_assignments_experiment_id_debtor_id", "experiment_id", "debtor_id", unique=True),
        Index("ix_experiment_assignments_experiment_id_exposed_at", "experiment_id", "exposed_at"),
    )


class DebtorSearchTerm(Base):
    """Normalised words of a debtor's name, phones (E.164) and e-mails, so the console finds a debtor by
    any of them with an indexed prefix range on both backends: ``n:nordmann``, ``p:+4791234567``,
    ``e:kari@example.no``. Rewritten whenever upstream sends the debtor again."""

    __tablename__ = "debtor_search_terms"
    # byte order on PostgreSQL whatever the database's collation, so that a prefix is one contiguous range
    term: Mapped[str] = mapped_column(
        String(330).with_variant(String(330, collation="C"), "postgresql"), primary_key=True
    )
    debtor_id: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)


class Operator(Base):
    """A person who uses the console. Roles: viewer (reads), operator (also acts on cases), admin (also sees
    the console's access log). Accounts are made with ``orchestrator create-operator``."""

    __tablename__ = "operators"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    # scrypt, with its parameters and salt: "scrypt$n$r$p$salt$hash"
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class ConsoleSession(Base):
    """A signed-in console session. Only the SHA-256 of the cookie's token is stored."""

    __tablename__ = "console_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ConsoleSearch(Base):
    """A console search's criteria, kept server-side so that names, phones and e-mails never go into a URL;
    the URL carries only this unguessable id, valid for the operator who made it."""

    __tablename__ = "console_searches"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    operator_id: Mapped[str] = mapped_column(String(26))
    criteria: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(index=True)


class ConsoleAudit(Base):
    """Who did or looked at what in the console: sign-ins (and refused ones), searches, timelines, previews,
    exports and every action. Actions on a case are in the debtor's timeline as well."""

    __tablename__ = "console_audit"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    operator_id: Mapped[str | None] = mapped_column(String(26), index=True)
    at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(60))
    debtor_id: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]]
