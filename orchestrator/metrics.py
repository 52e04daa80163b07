"""Prometheus metrics shared by the web process and the workers."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CONTACTS_ACCEPTED = Counter("orchestrator_contacts_accepted_total", "Contact requests accepted at intake.")
CONTACTS_EXISTING = Counter(
    "orchestrator_contacts_idempotent_total", "Contact requests answered with an existing contact."
)
CONTACTS_REJECTED = Counter("orchestrator_contacts_rejected_total", "Contact requests rejected at intake.")
DECISIONS = Counter("orchestrator_decisions_total", "Policy decisions by outcome.", ["outcome"])
SENDS = Counter(
    "orchestrator_sends_total",
    "Carrier hand-overs by channel and outcome.",
    ["channel", "provider", "outcome"],
)
SEND_SECONDS = Histogram(
    "orchestrator_send_seconds", "Time the carrier took to accept a message.", ["channel", "provider"]
)
HTTP_REQUESTS = Counter("orchestrator_http_requests_total", "HTTP requests.", ["route", "status"])
SWEEPS = Counter("orchestrator_sweeper_actions_total", "Sweeper actions.", ["action"])
