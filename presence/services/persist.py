"""The database copy of what the hot path keeps in the hot store: devices and decisions.

The hot path answers and publishes from the hot store; the database is written behind it (with
PRESENCE_WRITE_BEHIND, by the persist task) or right after it, for the admin, the history and
a rebuild after a Redis restart. Nothing here decides or publishes.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from presence import decisions, history, hot
from presence.models import Device, DeviceHistory, PresenceState

_DEVICE_FIELDS = [
    "last_seen_at",
    "last_active_at",
    "activity",
    "visibility",
    "in_call",
    "in_meeting",
    "network",
    "last_seq",
]


def persist_pending(batch_size: int = 500, max_batches: int = 100) -> int:
    """Write behind: the devices and decisions the hot path changed, to the database (for the
    admin, the history and a rebuild after a Redis restart). A user changed many times since
    the last run is written once, with the latest. Returns the number of users written."""
    store = hot.store()
    written = 0
    for _ in range(max_batches):
        marks = store.pending_persist(batch_size)
        if marks:
            persist_users([user_id for user_id, _ in marks])
            store.clear_persisted(marks)
            written += len(marks)
        if len(marks) < batch_size:
            break
    history.flush()
    return written


def persist_users(user_ids: list[int]) -> None:
    """The database copy of these users' hot devices and decisions. Each part is read from the
    hot store under the rows' locks, so a writer that read earlier cannot store older data over
    newer; the devices are locked before the presence rows, in the order every other writer
    takes them."""
    store = hot.store()
    user_ids = sorted(set(user_ids))
    now = timezone.now()
    _write_devices(Device.objects.filter(user_id__in=user_ids), user_ids)
    with transaction.atomic():
        states = {
            state.user_id: state
            for state in PresenceState.objects.select_for_update().filter(user_id__in=user_ids).order_by("user_id")
        }
        hot_users = dict(zip(user_ids, map(hot.HotUser.parse, store.read_many(user_ids)), strict=True))
        updated = []
        for user_id, hot_user in hot_users.items():
            state = states.get(user_id)
            if hot_user.decision is None or state is None or decisions.of_row(state) == hot_user.decision:
                continue
            decisions.copy_to_row(state, hot_user.decision, now)
            updated.append(state)
        save_fields(updated, decisions.STATE_FIELDS)


def _write_devices(rows: QuerySet[Device], user_ids: list[int]) -> int:
    """The database copy of these device rows from their users' hot devices, in one transaction:
    the rows locked in the order every writer takes them, the hot store read under the locks (a
    writer that read earlier cannot store an older copy over a newer one), one bulk `UPDATE` and
    one history `INSERT` for the batch. A row whose copy is already at the hot seq is left as it is.
    Returns the number of rows written."""
    with transaction.atomic():
        locked = list(rows.select_for_update().order_by("pk"))
        hot_users = dict(zip(user_ids, map(hot.HotUser.parse, hot.store().read_many(user_ids)), strict=True))
        written, changes = [], []
        for row in locked:
            hot_user = hot_users.get(row.user_id)
            device = hot_user.devices.get(row.device_id) if hot_user is not None else None
            if device is not None and device.seq > row.last_seq:
                changes.extend(device_change_entries(row, device))
                _copy_device(row, device)
                written.append(row)
        save_fields(written, _DEVICE_FIELDS)
        history.record_devices(changes)
    return len(written)


def save_fields(rows: Sequence[Model], names: Sequence[str]) -> None:
    """Save these fields of these rows (of one model) in one `executemany` of one `UPDATE … WHERE
    pk = %s`: what `bulk_update` does in one statement, without its `CASE` per row and field, whose
    building cost more CPU than the writes it saved (1.6 ms a device in a batch of 1,000 against
    0.6 ms a device one at a time: BENCHMARKS.md §7)."""
    if not rows:
        return
    meta = rows[0]._meta
    fields = [meta.get_field(name) for name in names]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"
    params = [
        [field.get_db_prep_save(getattr(row, field.attname), connection) for field in fields] + [row.pk] for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def persist_device(user_id: int, device: hot.HotDevice) -> int:
    """The database copy of a device; a copy already at a newer seq is left as it is."""
    rows = Device.objects.filter(user_id=user_id, device_id=device.device_id, last_seq__lt=device.seq)
    return rows.update(**_device_values(device))


def _device_values(device: hot.HotDevice) -> dict[str, object]:
    """A hot device as the values of its database row's `_DEVICE_FIELDS`."""
    return {
        "last_seen_at": hot.from_epoch(device.last_seen),
        "last_active_at": hot.from_epoch(device.last_active),
        "activity": device.activity,
        "visibility": device.visibility,
        "in_call": device.in_call,
        "in_meeting": device.in_meeting,
        "network": device.network,
        "last_seq": device.seq,
    }


def device_change_entries(row: Device, device: hot.HotDevice) -> list[DeviceHistory]:
    """The device-history entry, if any, when the device's reported state differs from its
    database copy, timed at the device's last signal (written behind, the write may come a
    little later)."""
    before = history.reported_state(row.activity, row.visibility, row.in_call, row.in_meeting, row.network)
    after = history.reported_state(*device.persistent_state())
    if before == after:
        return []
    return [history.device_entry(row.user_id, row.device_id, row.label, after, hot.from_epoch(device.last_seen))]


def _copy_device(row: Device, device: hot.HotDevice) -> None:
    for name, value in _device_values(device).items():
        setattr(row, name, value)


def flush_device_activity(batch_size: int = 1000) -> int:
    """Write the hot path's last-seen and last-active times of devices to the database, for the
    admin and for rebuilding after a Redis restart. Heartbeats mark a device for this at most
    every PRESENCE_DEVICE_FLUSH_SECONDS."""
    store = hot.store()
    flushed = 0
    while True:
        marked = store.pop_dirty(batch_size)
        if marked:
            # A batch at a time (one pipelined read, one bulk UPDATE), not a device at a time: one
            # device per transaction was the first limit of the capacity model (docs/capacity.md).
            user_ids = sorted({user_id for user_id, _ in marked})
            rows = Device.objects.filter(device_id__in=[device_id for _, device_id in marked], user_id__in=user_ids)
            flushed += _write_devices(rows, user_ids)
        if len(marked) < batch_size:
            return flushed
