"""A decision in the shapes its stores need, and the only converters between them.

The engine decides a `engine.Decision` (datetimes, enums, a trace). What is kept of it is the hot
store's `HotDecision` (epoch seconds, plain strings: the JSON a heartbeat answers with, and the
record every writer compares and stores), and the database's `PresenceState` row, which the
admin, the history's timeline and a rebuild after a Redis restart read. A decision goes engine →
`HotDecision.of` → here to the row, and back from the row only where the hot store has none.
What is visible of any of them is `engine.visible`.
"""

from __future__ import annotations

from datetime import datetime

from presence import hot
from presence.engine import visible
from presence.models import PresenceState

# The row's fields a decision sets (for `update_fields` and `bulk_update`).
STATE_FIELDS = [
    "status",
    "activity",
    "status_msg",
    "last_active_at",
    "currently_active",
    "reason",
    "valid_until",
    "status_until",
    "computed_at",
    "changed_at",
]


def of_row(row: PresenceState) -> hot.HotDecision:
    """The decision a database row holds."""
    return hot.HotDecision(
        status=row.status,
        activity=row.activity,
        status_msg=row.status_msg or None,
        last_active=hot.to_epoch(row.last_active_at),
        currently_active=row.currently_active,
        reason=row.reason,
        valid_until=hot.to_epoch(row.valid_until),
        status_until=hot.to_epoch(row.status_until),
    )


def copy_to_row(row: PresenceState, decision: hot.HotDecision, now: datetime | None) -> None:
    """Make `row` hold `decision`, decided at `now`; its `changed_at` moves only when what
    colleagues see changed (not for a new reason behind the same status)."""
    if visible(row) != visible(decision):
        row.changed_at = now
    row.status = decision.status
    row.activity = decision.activity
    row.status_msg = decision.status_msg or ""
    row.last_active_at = hot.from_epoch(decision.last_active)
    row.currently_active = decision.currently_active
    row.reason = decision.reason
    row.valid_until = hot.from_epoch(decision.valid_until)
    row.status_until = hot.from_epoch(decision.status_until)
    row.computed_at = now


def unsaved_row(user_id: int, decision: hot.HotDecision) -> PresenceState:
    """A decision in the shape readers use (not saved: the database has the last stored change)."""
    row = PresenceState(user_id=user_id)
    copy_to_row(row, decision, None)  # no times of storing: it is not stored
    return row
