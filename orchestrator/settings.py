"""One typed settings object, read from ``ORCH_*`` environment variables.

Units are in the names (``_s``); secrets are ``SecretStr`` and never printed. Every field is listed in
the README's configuration table; ``tests/test_settings.py`` keeps the two in step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def check_sender_id(value: str) -> str:
    """An alphanumeric SMS sender: 1-11 letters, digits or spaces, and nothing that discloses a debt (R7)."""
    if not re.fullmatch(r"[A-Za-z0-9 ]{1,11}", value) or not value.strip():
        raise ValueError(f"SMS sender id {value!r} must be 1-11 letters, digits or spaces")
    if "inkasso" in value.lower():
        raise ValueError(f"SMS sender id {value!r} must not disclose a debt (no 'inkasso', R7)")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore")

    # Where things run
    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP server (0 picks a free one).")
    state_dir: Path = Field(
        Path(".orchestrator"),
        description="Embedded Redis data, the SQLite file and the outbox live here.",
    )
    redis_url: str | None = Field(None, description="Redis URL; unset starts the embedded Redis.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL; unset uses SQLite in the state directory "
        "(`postgresql+asyncpg://user@host/db` for PostgreSQL).",
    )
    queue_name: str = Field("orchestrator:queue", description="arq queue name shared by web and workers.")
    public_base_url: str | None = Field(
        None, description="Where debtors reach us (self-service links); default `http://<host>:<port>`."
    )
    chat_link_ttl_days: int = Field(30, ge=1, le=365, description="Self-service links expire after this.")
    unsubscribe_link_ttl_days: int = Field(
        365,
        ge=1,
        le=3650,
        description="One-click unsubscribe links (List-Unsubscribe of non-statutory e-mail) expire then.",
    )

    # Operator console
    console_secure_cookies: bool = Field(
        True,
        description="Mark the console's cookies Secure (sent over HTTPS only; browsers also allow them on "
        "http://localhost). Turn off only for a console reached over plain HTTP on another host in a lab.",
    )
    console_session_idle_s: int = Field(
        1800, ge=60, description="A console session ends after this long without a request."
    )
    console_session_max_s: int = Field(
        43200, ge=300, description="A console session ends this long after sign-in, however busy."
    )
    console_login_max_failures: int = Field(
        5, ge=1, description="Failed sign-ins per username (and 4x that per client address) per window."
    )
    console_trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses of reverse proxies in front of the web service (JSON list, e.g. "
        '`["10.0.0.5"]`): from them the client address is taken from `X-Forwarded-For`, so the sign-in limit '
        "counts each client, not the proxy. From anyone else the header is ignored.",
    )
    console_login_window_s: int = Field(
        900, ge=1, description="The window of the sign-in limit; sign-in is refused until it passes."
    )

    # Logging
    log_level: str = Field("INFO", description="Log level (DEBUG, INFO, WARNING, ...).")
    log_format: Literal["console", "json"] = Field("console", description="`json` for log shippers.")

    # Worker
    worker_max_jobs: int = Field(20, ge=1, description="Jobs one worker process runs concurrently.")
    job_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A job running longer is cancelled; a crashed job is retried after this + 10 s.",
    )
    send_max_tries: int = Field(6, ge=1, description="Carrier tries per contact before it ends `failed`.")
    retry_base_delay_s: float = Field(30.0, ge=0, description="First retry delay; doubles on each try.")
    retry_max_delay_s: float = Field(3600.0, ge=0, description="Upper bound of the retry delay.")
    sweeper_interval_s: int = Field(
        60, ge=1, le=60, description="How often the sweeper runs (seconds, divides into a minute)."
    )
    sweeper_stale_after_s: float = Field(
        120.0, ge=0, description="A contact left `queued` (or overdue `scheduled`) this long is re-enqueued."
    )
    soft_bounce_retry_after_s: float = Field(
        14400.0,
        ge=0,
        description="After a soft bounce the MTA gave up on (mailbox full ...), send again this "
        "much later (inside the contact windows).",
    )
    soft_bounce_max_retries: int = Field(
        2, ge=0, description="Soft-bounced e-mails re-sent per contact before it ends `bounced`."
    )
    sending_timeout_s: float = Field(
        600.0, gt=0, description="A contact `sending` this long is marked `needs_reconciliation`."
    )
    delivery_report_timeout_s: dict[str, float] = Field(
        default_factory=lambda: {"sms": 172800.0, "chat_link": 172800.0, "digital_mailbox": 604800.0},
        description="Per channel (JSON): a contact `sent` this long without a carrier report is marked "
        "`no_delivery_report` for an operator. Channels not listed give no reports (e.g. SMTP).",
    )
    reconcile_max_queries_per_sweep: int = Field(
        100,
        ge=0,
        description="Carrier status API queries one sweep may make for contacts stuck in `sending` or `sent` "
        "without a report (Twilio, Digipost); the rest wait for a later sweep and are flagged meanwhile. "
        "0: never ask, flag at once.",
    )
    worker_metrics_port: int | None = Field(
        None, description="If set, a worker serves Prometheus metrics on this port."
    )

    # Policy
    rules_file: Path | None = Field(
        None,
        description="Rule set (TOML) replacing the packaged default; its version is stored on decisions.",
    )

    # E-mail
    email_from: str = Field("Eksempel Inkasso <post@example.invalid>", description="From header of e-mail.")
    email_domain: str = Field(
        "orchestrator.invalid", description="Domain of our Message-IDs (`<contact.attempt@domain>`)."
    )
    bounce_domain: str = Field(
        "bounces.orchestrator.invalid",
        description="VERP return path domain: the envelope sender is `bounce+<attempt id>@<domain>`.",
    )
    smtp_host: str | None = Field(None, description="SMTP relay; unset writes e-mail to the outbox as .eml.")
    smtp_port: int = Field(587, description="SMTP relay port.")
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        "starttls", description="`starttls` (port 587), `tls` (implicit, port 465) or `none` (local relays)."
    )
    smtp_username: str | None = Field(None, description="SMTP AUTH user; unset sends without AUTH.")
    smtp_password: SecretStr | None = Field(None, description="SMTP AUTH password.")
    smtp_ca_file: Path | None = Field(
        None, description="CA bundle to verify the relay's certificate; unset: the system's trust store."
    )
    smtp_pool_size: int = Field(4, ge=1, description="Pooled SMTP connections per worker process.")
    smtp_timeout_s: float = Field(30.0, gt=0, description="Timeout of one SMTP command.")

    # Channels
    outbox_dir: Path | None = Field(None, description="Outbox folder; default `<state_dir>/outbox`.")

    # SMS
    sms_default_sender_id: str = Field(
        "Betaling", description="Alphanumeric SMS sender (at most 11 characters; never 'inkasso', R7)."
    )
    sms_sender_ids: dict[str, str] = Field(
        default_factory=dict,
        description='Sender per creditor organisation number, as JSON: `{"974760673": "EKSEMPEL"}`.',
    )
    sms_max_segments: int = Field(2, ge=1, le=10, description="Longest SMS we send, in segments.")
    linkmobility_url: str | None = Field(
        None, description="Link Mobility REST base URL (e.g. `https://wsx.sp247.net`); unset: not used."
    )
    linkmobility_username: str | None = Field(None, description="Link Mobility basic-auth user.")
    linkmobility_password: SecretStr | None = Field(None, description="Link Mobility basic-auth password.")
    linkmobility_platform_id: str | None = Field(None, description="Link Mobility platformId.")
    linkmobility_platform_partner_id: str | None = Field(None, description="Link Mobility platformPartnerId.")
    linkmobility_delivery_report_gate: str | None = Field(
        None, description="Link Mobility gate id that posts delivery reports to our webhook."
    )
    linkmobility_rate_per_s: float = Field(
        10.0, ge=0, description="Messages per second to Link Mobility (0: no limit)."
    )
    twilio_url: str = Field("https://api.twilio.com", description="Twilio API base URL.")
    twilio_account_sid: str | None = Field(None, description="Twilio Account SID; unset: Twilio not used.")
    twilio_auth_token: SecretStr | None = Field(None, description="Twilio auth token (also signs callbacks).")
    twilio_status_callback_url: str | None = Field(
        None, description="Our public URL for Twilio status callbacks (`https://.../webhooks/twilio`)."
    )
    twilio_rate_per_s: float = Field(10.0, ge=0, description="Messages per second to Twilio (0: no limit).")

    # Carrier callbacks (POST /webhooks/{carrier}); a carrier without its secret here answers 404.
    linkmobility_webhook_username: str | None = Field(
        None, description="Basic-auth user Link Mobility's gate uses."
    )
    linkmobility_webhook_password: SecretStr | None = Field(None, description="Its basic-auth password.")
    linkmobility_webhook_secret: SecretStr | None = Field(
        None, description="Secret path segment: reports go to `/webhooks/linkmobility/<secret>`."
    )
    mailgun_webhook_signing_key: SecretStr | None = Field(
        None, description="Mailgun HTTP webhook signing key."
    )
    sendgrid_webhook_public_key: str | None = Field(
        None, description="SendGrid Event Webhook verification key (base64 DER or PEM, ECDSA P-256)."
    )
    digipost_webhook_secret: SecretStr | None = Field(
        None, description="Shared secret that signs Digipost receipt callbacks (HMAC-SHA256)."
    )
    print_returns_webhook_secret: SecretStr | None = Field(
        None, description="Shared secret that signs returned-letter callbacks from the print provider."
    )
    bounce_smtp_host: str = Field("127.0.0.1", description="Where the VERP bounce receiver (SMTP) listens.")
    bounce_smtp_port: int | None = Field(None, description="Its port; unset: no bounce receiver.")

    # Letters
    print_delivery: Literal["outbox", "folder", "sftp"] = Field(
        "outbox", description="Where letter PDFs go: the outbox, a print provider's drop folder, or its SFTP."
    )
    print_folder: Path | None = Field(None, description="The print provider's drop folder (`folder`).")
    print_sftp_host: str | None = Field(None, description="The print provider's SFTP host (`sftp`).")
    print_sftp_port: int = Field(22, description="SFTP port.")
    print_sftp_username: str | None = Field(None, description="SFTP user.")
    print_sftp_password: SecretStr | None = Field(None, description="SFTP password (or use a key).")
    print_sftp_key_file: Path | None = Field(None, description="SFTP private key file.")
    print_sftp_key_passphrase: SecretStr | None = Field(None, description="Passphrase of the key file.")
    print_sftp_known_hosts: Path | None = Field(
        None, description="known_hosts with the provider's host key (required: the key is always checked)."
    )
    print_sftp_remote_dir: str = Field(".", description="Folder on the SFTP server that batches go into.")
    print_batch_max_letters: int = Field(
        100, ge=1, description="A print batch is sent at this many letters..."
    )
    print_batch_max_wait_s: float = Field(
        20.0, gt=0, description="...or this long after its first letter (keep well under ORCH_JOB_TIMEOUT_S)."
    )
    letter_render_workers: int = Field(2, ge=1, description="Processes rendering letter PDFs per worker.")

    # Registries (the returned-mail loop); a registry not configured here is skipped, and the timeline says so
    brreg_url: str | None = Field(
        "https://data.brreg.no/enhetsregisteret/api",
        description="Enhetsregisteret (Brreg) API base URL; empty: no organisation look-ups.",
    )
    folkeregisteret_url: str | None = Field(
        None, description="Folkeregisteret API base URL (`https://folkeregisteret.api.skatteetaten.no`)."
    )
    folkeregisteret_package: str | None = Field(
        None, description="Folkeregisteret rights package (e.g. `finans`); unset: no person look-ups."
    )
    maskinporten_token_url: str | None = Field(None, description="Maskinporten token endpoint.")
    maskinporten_audience: str | None = Field(None, description="Maskinporten audience (its issuer id).")
    maskinporten_client_id: str | None = Field(None, description="Our Maskinporten client id.")
    maskinporten_scope: str | None = Field(None, description="Scope(s) for Folkeregisteret, space separated.")
    maskinporten_private_key: SecretStr | None = Field(
        None, description="The key signing Maskinporten grants (PEM text)."
    )
    maskinporten_key_id: str | None = Field(None, description="The key id registered with the client (kid).")
    registry_timeout_s: float = Field(10.0, gt=0, description="Timeout of one registry request.")

    # Digital mailbox (Digipost)
    digipost_url: str | None = Field(
        None, description="Digipost API base URL (`https://api.digipost.no`); unset: no digital mailbox."
    )
    digipost_sender_id: str | None = Field(None, description="Our Digipost sender (organisation) id.")
    digipost_broker_id: str | None = Field(None, description="Broker id when a broker sends for us.")
    digipost_private_key_path: Path | None = Field(
        None, description="Business certificate key (PEM or PKCS#12) that signs Digipost requests."
    )
    digipost_private_key: SecretStr | None = Field(None, description="The same key as PEM text.")
    digipost_private_key_password: SecretStr | None = Field(None, description="Password of the key file.")
    digipost_return_address: str | None = Field(
        None, description='Return address for printed letters: `"Name; street; 0102 Oslo"`.'
    )
    digipost_timeout_s: float = Field(30.0, gt=0, description="Timeout of one Digipost request.")
    digipost_cost_nok: float = Field(1.2, ge=0, description="What a digital mailbox message costs (ranking).")
    digipost_subject: str = Field("Brev", description="Subject shown in Digipost when the message has none.")

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("sms_default_sender_id")
    @classmethod
    def _sender_id(cls, value: str) -> str:
        return check_sender_id(value)

    @field_validator("sms_sender_ids")
    @classmethod
    def _sender_ids(cls, value: dict[str, str]) -> dict[str, str]:
        return {org: check_sender_id(sender) for org, sender in value.items()}

    @property
    def resolved_public_base_url(self) -> str:
        return (self.public_base_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @property
    def resolved_outbox_dir(self) -> Path:
        return self.outbox_dir or self.state_dir / "outbox"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.state_dir / 'orchestrator.sqlite3').resolve()}"
