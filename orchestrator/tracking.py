"""Where a carrier's report may move a message: statuses only move forward (API.md status model).

Terminal failures rank above delivery, so a late "delivered" never hides a failure (a multi-segment SMS with
one failed part stays failed), and a duplicate or out-of-order report changes nothing.
"""

from __future__ import annotations

RANK = {
    "queued": 0,
    "scheduled": 0,
    "sending": 0,
    "accepted": 0,
    "sent": 1,
    "delivered": 2,
    "read": 3,
    "expired": 4,
    "failed": 4,
    "bounced": 5,
    "returned": 5,
}
# Reports that say where a message is, as opposed to "still on its way" ("accepted": nothing to move).
MOVING = frozenset(status for status, rank in RANK.items() if rank > 0)


def below(status: str) -> tuple[str, ...]:
    """Every status a message may be moved from to reach ``status``."""
    rank = RANK[status]
    return tuple(s for s, r in RANK.items() if r < rank)
