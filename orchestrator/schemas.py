"""The public request and response shapes (API.md). ``/openapi.json`` is generated from these very models, so
the document says exactly what the service accepts and returns."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from orchestrator import identifiers

Kind = Literal[
    "reminder",
    "inkassovarsel",
    "betalingsoppfordring",
    "payment_plan_offer",
    "payment_plan_confirmation",
    "address_request",
    "dispute_acknowledgement",
    "payment_confirmation",
]
ChannelName = Literal["letter", "email", "sms", "chat_link", "digital_mailbox"]
Status = Literal[
    "queued",
    "scheduled",
    "sending",
    "sent",
    "delivered",
    "read",
    "failed",
    "bounced",
    "returned",
    "expired",
    "held",
    "suppressed",
    "cancelled",
]

KINDS: tuple[str, ...] = get_args(Kind)
CHANNELS: tuple[str, ...] = get_args(ChannelName)
STATUSES: tuple[str, ...] = get_args(Status)

Phone = Annotated[str, AfterValidator(identifiers.normalize_phone)]
Email = Annotated[str, AfterValidator(identifiers.normalize_email)]
NationalId = Annotated[str, AfterValidator(identifiers.validate_national_id)]
OrganisationNumber = Annotated[str, AfterValidator(identifiers.validate_organisation_number)]
Kid = Annotated[str, AfterValidator(identifiers.validate_kid)]
AccountNumber = Annotated[str, AfterValidator(identifiers.validate_account_number)]
# Quantised, so that "1250.0" and "1250.00" are the same amount (and the same body for idempotency).
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=14, decimal_places=2),
    AfterValidator(lambda v: v.quantize(Decimal("0.01"))),
]
Text200 = Annotated[str, Field(min_length=1, max_length=200)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Address(_In):
    lines: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(min_length=1, max_length=4)
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "NO"
    postal_code: str
    city: Annotated[str, Field(min_length=1, max_length=100)]

    @field_validator("postal_code")
    @classmethod
    def _postal_code(cls, value: str, info: ValidationInfo) -> str:
        return identifiers.validate_postal_code(value, info.data.get("country", "NO"))


class Evidence(_In):
    """Why an electronic address may carry a statutory notice (R3): reliable channel, with evidence."""

    channel: Literal["email", "digital_mailbox", "portal"]
    address: Annotated[str, Field(min_length=1, max_length=320)]
    basis: Literal["debtor_used_address", "digital_mailbox_opened", "portal_accepted", "read_confirmed"]
    observed_at: AwareDatetime


class Debtor(_In):
    id: Text200
    type: Literal["person", "organisation"]
    name: Annotated[str, Field(min_length=1, max_length=300)]
    national_id: NationalId | None = Field(None, description="Never echoed back, never logged (R9).")
    organisation_number: OrganisationNumber | None = None
    addresses: list[Address] = Field(default_factory=list, max_length=10)
    phones: list[Phone] = Field(default_factory=list, max_length=10)
    emails: list[Email] = Field(default_factory=list, max_length=10)
    electronic_notice_evidence: list[Evidence] = Field(default_factory=list, max_length=20)
    preferred_channel: ChannelName | None = Field(
        None,
        description="The channel the debtor said they prefer; it wins over cost when it is lawful and "
        "reachable (the legal guard still decides).",
    )

    @field_validator("national_id")
    @classmethod
    def _person_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("type") == "organisation":
            raise ValueError("national_id is for debtors of type 'person' only")
        return value

    @field_validator("organisation_number")
    @classmethod
    def _organisation_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("type") == "person":
            raise ValueError("organisation_number is for debtors of type 'organisation' only")
        return value


class Creditor(_In):
    name: Annotated[str, Field(min_length=1, max_length=300)]
    organisation_number: OrganisationNumber | None = None


class Cost(_In):
    kind: Annotated[str, Field(min_length=1, max_length=60)]
    amount: Money


class Interest(_In):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    rate_percent: Annotated[Decimal, Field(ge=0, le=100, max_digits=7, decimal_places=4)]
    from_date: date = Field(alias="from")


class Case(_In):
    id: Text200
    creditor: Creditor
    reference: Annotated[str, Field(min_length=1, max_length=200)]
    principal: Money
    costs: list[Cost] = Field(default_factory=list, max_length=20)
    interest: Interest | None = None
    due_date: date
    kid: Kid | None = None
    account_number: AccountNumber | None = None


class ContactRequest(_In):
    idempotency_key: Annotated[str, Field(min_length=1, max_length=300, pattern=r"^[\x21-\x7e]+$")]
    kind: Kind
    channel: Literal["auto", "letter", "email", "sms", "chat_link", "digital_mailbox"] = "auto"
    language: Literal["nb", "nn", "en"] = "nb"
    not_before: AwareDatetime | None = None
    debtor: Debtor
    case: Case
    variables: dict[str, Any] = Field(default_factory=dict)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contacts: list[Any] = Field(description="Up to 10,000 contact requests, each judged on its own.")


class CaseEventRequest(_In):
    type: Literal[
        "payment_received",
        "paid_in_full",
        "dispute_raised",
        "dispute_resolved",
        "payment_plan_agreed",
        "bankrupt",
        "closed",
        "complaint_received",
    ]
    at: AwareDatetime
    amount: Money | None = None
    note: Annotated[str, Field(max_length=2000)] | None = None
    source: Literal["upstream", "operator", "inbound_reply"] = Field(
        "upstream",
        description="Who reports it: the upstream system, an operator, or an operator flagging a debtor's "
        "inbound SMS or e-mail reply (e.g. as a dispute, R4).",
    )


# ---- responses ----


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ErrorItem] | None = None


class Links(BaseModel):
    self: str


class Accepted(BaseModel):
    id: str
    status: Status
    links: Links


class BatchItemResult(BaseModel):
    index: int
    id: str | None = None
    status: Status | None = None
    existing: bool | None = None
    error: Problem | None = None


class BatchResult(BaseModel):
    results: list[BatchItemResult]
    queued: int
    existing: int
    rejected: int


class RejectedChannel(BaseModel):
    channel: str
    reason: str


class DecisionOut(BaseModel):
    outcome: Literal["send", "held", "suppressed"]
    status_reason: str | None = None
    channel: str | None
    provider: str | None
    address: str | None = None
    send_at: datetime | None
    template: str | None
    variant: str | None
    rule_version: str
    reasons: list[str]
    rejected: list[RejectedChannel]
    deadline: date | None = None
    decided_at: datetime


class EventOut(BaseModel):
    status: str | None
    at: datetime
    source: str
    type: str
    detail: dict[str, Any]


class AttemptOut(BaseModel):
    id: str
    channel: str
    provider: str
    provider_message_id: str | None
    address: str
    status: str
    status_reason: str | None
    template: str
    variant: str
    rule_version: str
    content_sha256: str
    encoding: str | None = None
    segments: int | None = None
    created_at: datetime
    events: list[EventOut]


class ContactOut(BaseModel):
    id: str
    idempotency_key: str
    kind: str
    channel: str
    language: str
    status: Status
    status_reason: str | None
    debtor_id: str
    case_id: str
    not_before: datetime | None
    send_at: datetime | None
    created_at: datetime
    updated_at: datetime
    decision: DecisionOut | None
    attempts: list[AttemptOut]


class ContactSummary(BaseModel):
    id: str
    idempotency_key: str
    kind: str
    channel: str
    status: Status
    status_reason: str | None
    debtor_id: str
    case_id: str
    send_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ContactPage(BaseModel):
    items: list[ContactSummary]
    next_cursor: str | None


class TimelineItem(BaseModel):
    id: str
    at: datetime
    type: str
    status: str | None
    source: str
    case_id: str | None
    contact_id: str | None
    attempt_id: str | None
    detail: dict[str, Any]


class Timeline(BaseModel):
    debtor_id: str
    items: list[TimelineItem]
    next_cursor: str | None


class CaseEventAccepted(BaseModel):
    id: str
    case_id: str
    type: str
    case_status: str
    contacts_affected: int


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
