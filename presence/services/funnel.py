"""The one way out of every change: store a new decision, record it and publish it.

Every writer of a decision (signals on the hot path or the slow one, `recompute` for every
other input, the sweep) decides with the engine and hands the funnel the decision colleagues saw
and the new one. The funnel writes the new decision to the hot store as a compare-and-set on the
user's version (a writer that read before another wrote gets `False` and decides again), brings
the user's database row in step when the caller holds it locked, and publishes only a visible
change (`engine.visible`), which records it in the history (`presence.events.publish_many`).

When it publishes: a change written with a device's signals (`SignalWrite`) is published as soon
as the hot store took it, without waiting for colleagues (there is no transaction: the hot
store's write is the commit); on Redis, its history entry and its announcement to the
organization's group ride in that same write. Every other change is published when the caller's
database transaction commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from presence import decisions, events, history, hot
from presence.changes import PresenceChange
from presence.engine import visible
from presence.hot import layout
from presence.models import PresenceState
from presence.services.persist import persist_users, save_fields


@dataclass(frozen=True, slots=True)
class SignalWrite:
    """What a device's signals write beside the decision (the steady hot path)."""

    device: hot.HotDevice
    expected_seq: int  # the device's seq as read: a signal applied meanwhile makes the write fail
    mark_dirty: bool  # the device's times are due for their database copy
    persist: bool  # the device's reported state or the decision changed: to the database


@dataclass(frozen=True, slots=True)
class Commit:
    """One user's new decision beside the one colleagues saw, and what is written with it."""

    user_id: int
    public_id: object
    organization_id: int | None
    before: hot.HotDecision | None  # None: nothing was shown yet
    after: hot.HotDecision
    source: str  # what caused it, for the history: `signal:activity`, `manual_status`, `sweep`, ...
    expected_version: int | None  # the user's hot version as read; None: write whatever it is now
    signals: SignalWrite | None = None
    # The rest of the user's hot hash to write with it (a recompute's inputs, rebuilt devices).
    fields: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    # The user's database row, locked by the caller: brought in step with the decision.
    row: PresenceState | None = None

    @property
    def visible_change(self) -> bool:
        return self.before is None or visible(self.before) != visible(self.after)

    def change(self) -> PresenceChange:
        return PresenceChange.of(self.organization_id, self.public_id, self.after, self.source)


def commit(batch: Sequence[Commit]) -> list[bool]:
    """Store each decision whose user's hot version is still the expected one (the result says
    which), bring the given rows in step and publish the visible changes."""
    stored = [_write_signals(item) if item.signals is not None else None for item in batch]
    recomputed = [item for item, done in zip(batch, stored, strict=True) if done is None]
    results = iter(hot.store().commit_users([_user_commit(item) for item in recomputed]))
    stored = [next(results) if done is None else done for done in stored]
    now = timezone.now()
    behind = [
        item
        for item, done in zip(batch, stored, strict=True)
        if done and item.row is not None and _row_behind(item.row, item)
    ]
    for item in behind:
        decisions.copy_to_row(item.row, item.after, now)
        if item.visible_change:  # news to colleagues, even when the row had it already
            item.row.changed_at = now
    if behind:
        save_fields([item.row for item in behind], decisions.STATE_FIELDS)
    # (A change written with signals was published with its write.)
    changes = [
        item.change()
        for item, done in zip(batch, stored, strict=True)
        if done and item.visible_change and item.signals is None
    ]
    if changes:
        transaction.on_commit(lambda: events.publish_many(changes))
    return stored


def _row_behind(row: PresenceState, item: Commit) -> bool:
    # A new reason alone (a manual "available" over devices that said available too) is stored
    # as well, for the admin; it changes nothing anyone sees, so nothing is published.
    return item.visible_change or visible(row) != visible(item.after) or row.reason != item.after.reason


def _user_commit(item: Commit) -> hot.UserCommit:
    fields = {**item.fields, layout.FIELD_DECISION: item.after.encode()}
    return hot.UserCommit(item.user_id, item.expected_version, fields, item.after.valid_until, item.remove)


def _write_signals(item: Commit) -> bool:
    """The steady hot path: the device and the decision in one conditional write, the change's
    history entry and announcement in the same step where the store can, then published at once."""
    write = item.signals
    change = item.change() if item.visible_change else None
    entry = history.buffered_entry(change) if change is not None else None
    # Written through, a change is announced once the database has it, as every other change is.
    announcement = events.announcement(change) if entry and settings.PRESENCE_WRITE_BEHIND else None
    steady = hot.SteadyCommit(
        item.user_id,
        write.device,
        item.expected_version,
        write.expected_seq,
        item.after,
        mark_dirty=write.mark_dirty and not write.persist,
        persist=write.persist and settings.PRESENCE_WRITE_BEHIND,
        history_entry=entry,
        announcement=announcement,
    )
    if not hot.store().commit_steady(steady):
        return False
    if write.persist and not settings.PRESENCE_WRITE_BEHIND:
        persist_users([item.user_id])
    if change is not None:
        # A device's request does not wait for its colleagues to hear of it.
        events.publish(change, wait=False, recorded=entry is not None, announced=announcement is not None)
    return True
