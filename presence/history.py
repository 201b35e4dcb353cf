"""The presence history: every visible change of a user's presence, and every change of a
device's reported state, kept PRESENCE_HISTORY_RETENTION_DAYS for the admin's timeline.

Visible changes are recorded from the single exit every change leaves through
(`presence.events.publish_many`), so no source of change can bypass it. The hot path must not
write to the database: with Redis, entries are appended to a list there (one RPUSH) and written
in batches by `flush`, which the persist task calls; on the in-process store (the embedded
default, where every change is written through anyway) they are inserted at once.

Device states are recorded where the database copy of a device changes (`presence.services.persist`),
which is already off the hot path with Redis (written behind).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

from presence import hot
from presence.models import DeviceHistory, PresenceHistory
from presence.vocabulary import ActivityValue, NetworkValue, VisibilityValue

if TYPE_CHECKING:
    from orgs.models import User
    from presence.changes import PresenceChange

logger = logging.getLogger(__name__)

# How long `flush` holds the lock: longer than a flush of `FLUSH_MAX_BATCHES` can take; if it ever
# runs out, the entries' unique ids still keep a second flusher from inserting anything twice.
FLUSH_LOCK_SECONDS = 120
FLUSH_BATCH_SIZE = 1000
FLUSH_MAX_BATCHES = 50
PRUNE_BATCH_SIZE = 5000


# --- Recording visible changes ----------------------------------------------------------------


def record(changes: Sequence[PresenceChange]) -> None:
    """Record published changes. Never raises: a change that could not be recorded is logged,
    and the change itself (already stored and about to be pushed) is not held up."""
    if not changes:
        return
    at = timezone.now().timestamp()
    entries = [_entry(change, at) for change in changes]
    try:
        store = hot.store()
        if store.buffers_history:
            store.append_history([json.dumps(e, separators=(",", ":")) for e in entries])
        else:
            _insert(entries)
    except Exception:
        logger.exception("Could not record %d presence change(s) in the history", len(entries))


def buffered_entry(change: PresenceChange) -> str | None:
    """The change's entry for the Redis buffer, for a writer that appends it in the same step as
    the change itself (one round trip less on a device's status change); None on the in-process
    store, where `record` inserts it."""
    if not hot.store().buffers_history:
        return None
    return json.dumps(_entry(change, timezone.now().timestamp()), separators=(",", ":"))


def _entry(change: PresenceChange, at: float) -> dict[str, object]:
    return {
        "id": uuid.uuid4().hex,
        "user": change.user_id,
        "status": change.status,
        "activity": change.activity,
        "msg": change.status_msg or "",
        "reason": change.reason,
        "source": change.source,
        "at": at,
    }


def _insert(entries: list[dict[str, object]]) -> int:
    """Insert entries; those of users deleted since are dropped, those already inserted skipped."""
    from orgs.models import User

    public_ids = {str(entry["user"]) for entry in entries}
    existing = {str(pk) for pk in User.objects.filter(public_id__in=public_ids).values_list("public_id", flat=True)}
    rows = [
        PresenceHistory(
            entry_id=uuid.UUID(str(entry["id"])),
            user_id=uuid.UUID(str(entry["user"])),
            status=entry["status"],
            activity=entry["activity"],
            status_msg=str(entry["msg"])[:280],
            reason=entry["reason"],
            source=str(entry["source"])[:40],
            at=hot.from_epoch(float(entry["at"])),
        )
        for entry in entries
        if str(entry["user"]) in existing
    ]
    PresenceHistory.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def flush() -> int:
    """Write the buffered entries (Redis) to the database, oldest first; returns how many.

    Entries are read, inserted, and only then trimmed from the buffer, so a flusher that dies
    halfway loses nothing (the next one inserts the rest, the unique entry ids skip what was
    already in). One flusher at a time: a second one finds the lock taken and leaves the work
    to the first (`HotStore.drain_history`)."""
    return hot.store().drain_history(_insert_buffered, FLUSH_BATCH_SIZE, FLUSH_MAX_BATCHES, FLUSH_LOCK_SECONDS)


def _insert_buffered(raw: list[str]) -> int:
    return _insert([entry for entry in map(_parse, raw) if entry is not None])


def _parse(raw: str) -> dict[str, object] | None:
    try:
        entry = json.loads(raw)
        uuid.UUID(str(entry["id"]))
        uuid.UUID(str(entry["user"]))
        return entry
    except (ValueError, KeyError, TypeError):
        logger.error("Dropped a malformed presence history entry: %r", raw[:200])
        return None


# --- Device states ------------------------------------------------------------------------------


def reported_state(activity: str, visibility: str, in_call: bool, in_meeting: bool, network: str) -> str:
    """What a device last reported, as one state (the order is the engine's: offline beats a
    call, a call beats a hidden window, a hidden window beats idleness)."""
    if network == NetworkValue.OFFLINE:
        return DeviceHistory.State.OFFLINE
    if in_call or in_meeting:
        return DeviceHistory.State.IN_CALL
    if visibility == VisibilityValue.HIDDEN:
        return DeviceHistory.State.HIDDEN
    if activity == ActivityValue.IDLE:
        return DeviceHistory.State.IDLE
    return DeviceHistory.State.LIVE


def device_entry(user_id: int, device_id: str, label: str, state: str, at: datetime) -> DeviceHistory:
    return DeviceHistory(user_id=user_id, device_id=device_id, label=label, state=state, at=at)


def record_devices(entries: Iterable[DeviceHistory]) -> None:
    entries = list(entries)
    if entries:
        DeviceHistory.objects.bulk_create(entries)


# --- Retention ----------------------------------------------------------------------------------


def prune(now: datetime | None = None) -> int:
    """Delete entries older than PRESENCE_HISTORY_RETENTION_DAYS, in batches (a first run on a
    large table must not hold one huge delete); returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.PRESENCE_HISTORY_RETENTION_DAYS)
    deleted = 0
    for model in (PresenceHistory, DeviceHistory):
        while True:
            ids = list(model.objects.filter(at__lt=cutoff).values_list("pk", flat=True)[:PRUNE_BATCH_SIZE])
            if not ids:
                break
            deleted += model.objects.filter(pk__in=ids).delete()[0]
    return deleted


# --- Reads for the timeline ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """What the timeline of one user draws: the entries inside [start, end], each list preceded
    by the last entry before `start` (the state the window opens with), oldest first."""

    start: datetime
    end: datetime
    presence: list[PresenceHistory]
    devices: list[DeviceHistory]


def window_of(user: User, end: datetime, hours: int = 24) -> Window:
    start = end - timedelta(hours=hours)
    presence = list(PresenceHistory.objects.filter(user=user, at__gte=start, at__lte=end).order_by("at", "pk"))
    before = PresenceHistory.objects.filter(user=user, at__lt=start).order_by("-at", "-pk").first()
    devices = list(DeviceHistory.objects.filter(user=user, at__gte=start, at__lte=end).order_by("at", "pk"))
    seen_ids = {entry.device_id for entry in devices}
    # Each device's state when the window opens: its last entry before it (one query per device
    # known from the window, plus the devices signed in now that were quiet all day).
    from presence.models import Device

    earlier: list[DeviceHistory] = []
    for device_id in seen_ids | set(Device.objects.filter(user=user).values_list("device_id", flat=True)):
        last = DeviceHistory.objects.filter(user=user, device_id=device_id, at__lt=start).order_by("-at", "-pk").first()
        if last is not None and last.state != DeviceHistory.State.SIGNED_OUT:
            earlier.append(last)
    return Window(
        start=start,
        end=end,
        presence=([before] if before else []) + presence,
        devices=sorted(earlier, key=lambda e: e.at) + devices,
    )


def timeline_svg(user: User, end: datetime, hours: int = 24) -> str:
    """The user's last `hours` as the admin's SVG timeline."""
    from presence import timeline

    window = window_of(user, end, hours)
    status = [
        timeline.StatusChange(
            at=entry.at,
            status=entry.status,
            reason=entry.reason,
            note=" · ".join(part for part in (entry.reason.replace("_", " "), entry.source, entry.status_msg) if part),
        )
        for entry in window.presence
    ]
    devices = [timeline.DeviceChange(e.at, e.device_id, e.label, e.state) for e in window.devices]
    title = f"Presence of {user.display_name}, {window.start:%Y-%m-%d %H:%M} to {window.end:%H:%M} UTC"
    return timeline.render(window.start, window.end, status, devices, title)
