"""Writes. Every change to a presence input enters here and leaves through `recompute`.

One path for every change: record the input → `recompute(user)` → store the decision → publish
the change after the transaction commits, and only when something visible changed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orgs.models import User
from presence import events, history, ratelimits, selectors
from presence import hot as hotstate  # `hot` is a local name throughout this module
from presence.engine import Decision, aggregate
from presence.models import (
    DEVICE_ID_MAX_LENGTH,
    CalendarBlock,
    Device,
    DeviceHistory,
    ManualStatus,
    MicrosoftPresence,
    PresencePreferences,
    PresenceState,
)
from presence.vocabulary import (
    ActivityValue,
    NetworkValue,
    SessionValue,
    SignalType,
    Status,
    VisibilityValue,
)
from sparks_site import metrics

logger = logging.getLogger(__name__)


class DeviceNotFound(Exception):
    """The device does not exist or belongs to someone else (the caller answers 404 alike)."""


@dataclass(frozen=True, slots=True)
class Signal:
    type: SignalType
    value: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    applied: int
    ignored: int
    presence: PresenceState


# --- Devices --------------------------------------------------------------------------------


def pseudonymous_device_id(user: User, installation_id: str) -> str:
    """A keyed hash of the installation: stable for the same user and installation, and not
    reversible or linkable across users without the server's key."""
    message = f"{user.pk}\x00{installation_id}".encode()
    return hmac.new(settings.PRESENCE_DEVICE_ID_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


def possible_device_id(device_id: object) -> bool:
    """False for a device id no device can have, which is then simply not found: not a string,
    empty, too long, or with a character PostgreSQL refuses even to compare with (NUL, `%00` in a
    URL) or that cannot be encoded at all (a lone surrogate, which JSON may carry)."""
    if not isinstance(device_id, str) or not 0 < len(device_id) <= DEVICE_ID_MAX_LENGTH or "\x00" in device_id:
        return False
    try:
        device_id.encode()
    except UnicodeEncodeError:
        return False
    return True


def register_device(user: User, installation_id: str, label: str | None = None) -> tuple[Device, bool]:
    """Sign a device in (or again). Registering counts as the device being there and used.

    Signing in again starts a new signal sequence: an app that restarts may count from zero.
    """
    now = timezone.now()
    device_id = pseudonymous_device_id(user, installation_id)
    with transaction.atomic():
        device, created = Device.objects.select_for_update().get_or_create(
            device_id=device_id,
            defaults={
                "user": user,
                "label": label or "",
                "registered_at": now,
                "last_seen_at": now,
                "last_active_at": now,
            },
        )
        if not created:
            device.last_seen_at = now
            device.last_active_at = now
            device.network = NetworkValue.ONLINE
            device.activity = ActivityValue.ACTIVE
            # A new session knows nothing of the old one's call, meeting or hidden window, and
            # would never send the signal that ends them: start from a fresh, visible session.
            device.visibility = VisibilityValue.VISIBLE
            device.in_call = False
            device.in_meeting = False
            device.last_seq = -1
            if label is not None:
                device.label = label
            device.save()
        hotstate.store().commit_device(user.pk, _hot_device_of(device, flushed_at=now.timestamp()), None)
        history.record_devices([history.device_entry(user.pk, device_id, device.label, "live", now)])
    recompute(user, source="device:sign_in")
    return device, created


def sign_out_device(user: User, device_id: str, source: str = "device:sign_out") -> None:
    label = Device.objects.filter(user=user, device_id=device_id).values_list("label", flat=True).first()
    deleted, _ = Device.objects.filter(user=user, device_id=device_id).delete()
    if not deleted:
        raise DeviceNotFound(device_id)
    history.record_devices([history.device_entry(user.pk, device_id, label or "", "signed_out", timezone.now())])
    recompute(user, forget_devices=[device_id], source=source)


def ingest_signals(
    user: User, device_id: str, signals: Sequence[Signal], *, rate_counted: bool = False
) -> SignalOutcome:
    """`_ingest_signals`, counted (once per signal, for a known device) after it succeeded.

    One call is one request of the device: it counts against the device's and the user's signal
    rate limits (`presence.ratelimits`) unless `rate_counted` (the heartbeat step that passed the
    request on counted it already); over one, `RateLimited` is raised and nothing applied."""
    outcome = _ingest_signals(user, device_id, signals, rate_counted)
    metrics.count_signals(signals)
    return outcome


def _ingest_signals(user: User, device_id: str, signals: Sequence[Signal], rate_counted: bool) -> SignalOutcome:
    """Apply a device's signals in `seq` order; a signal not newer than the last applied is ignored.

    The hot path: the user's hot state (devices and the slow inputs) decides, and one
    conditional write of the hot store records the device and the decision. When the signals
    change no persistent device state (a heartbeat, another "active") and the visible decision
    stays, that is all: no database query. When they do, the change is pushed at once and the
    database written behind (`persist_pending`), or right away without
    PRESENCE_WRITE_BEHIND. A user whose hot state is missing or outdated takes the slow path,
    which reads the database and recomputes under the user's lock.
    """
    now = timezone.now()
    store = hotstate.store()
    for attempt in range(3):
        if attempt or rate_counted:
            raw = store.read(user.pk)
        else:  # the request's limits are checked in the same step as the first read
            raw = store.read_charged(user.pk, device_id, ratelimits.signal_limits(device_id), now.timestamp())
        hot = hotstate.HotUser.parse(raw)
        device = hot.devices.get(device_id)
        if device is None or not hot.ready:
            break
        context = hotstate.HotContext.decode(hot.context)
        if not context.current:
            break
        updated, applied, ignored = apply_signals(device, signals, now.timestamp())
        if not applied:
            return SignalOutcome(applied=0, ignored=ignored, presence=current_presence(user, now))
        devices = [updated if d.device_id == device_id else d for d in hot.devices.values()]
        decision = hotstate.HotDecision.of(aggregate(context.with_devices(devices), now))
        visible_change = decision.visible_fields() != hot.decision.visible_fields()
        persist = visible_change or updated.persistent_state() != device.persistent_state()
        # The database copy of the device's times is renewed with any write of it.
        flush_due = persist or now.timestamp() - updated.flushed_at >= settings.PRESENCE_DEVICE_FLUSH_SECONDS
        if flush_due:
            updated = updated.with_changes(flushed_at=now.timestamp())
        presence = _state_of(user.pk, decision)
        change = entry = announcement = None
        if visible_change:
            change = events.PresenceChange.of(context.organization_id, user.public_id, presence, _source_of(signals))
            entry = history.buffered_entry(change)
            # Written through: announce once the database has it, as every other change does.
            announcement = events.announcement(change) if entry and settings.PRESENCE_WRITE_BEHIND else None
        # Compare-and-set on the user's version: of two requests that read the same state, one
        # writes and the other reads again, so each change of status is pushed exactly once.
        if not store.commit_steady(
            hotstate.SteadyCommit(
                user_id=user.pk,
                device=updated,
                expected_version=hot.version,
                expected_seq=device.seq,
                decision=decision,
                mark_dirty=flush_due and not persist,
                persist=persist and settings.PRESENCE_WRITE_BEHIND,
                history_entry=entry,
                announcement=announcement,
            )
        ):
            continue
        if persist and not settings.PRESENCE_WRITE_BEHIND:
            persist_users([user.pk])
        if change is not None:
            events.publish(change, wait=False, recorded=entry is not None, announced=announcement is not None)
        return SignalOutcome(applied=applied, ignored=ignored, presence=presence)
    return _ingest_slowly(user, device_id, signals, now)


def _source_of(signals: Sequence[Signal]) -> str:
    """The history's name for a batch of signals: `signal:` and their types, e.g. `signal:visibility`."""
    return "signal:" + ",".join(dict.fromkeys(str(signal.type) for signal in signals))


def _persist_device(user_id: int, device: hotstate.HotDevice) -> int:
    """The database copy of a device; a copy already at a newer seq is left as it is."""
    return Device.objects.filter(user_id=user_id, device_id=device.device_id, last_seq__lt=device.seq).update(
        last_seen_at=hotstate.from_epoch(device.last_seen),
        last_active_at=hotstate.from_epoch(device.last_active),
        activity=device.activity,
        visibility=device.visibility,
        in_call=device.in_call,
        in_meeting=device.in_meeting,
        network=device.network,
        last_seq=device.seq,
    )


def steady_heartbeat(user_id: int, device_id: str, seq: int) -> tuple[int, int, hotstate.HotDecision] | None:
    """A lone heartbeat of a live device, recorded in one step of the hot store: (applied,
    ignored, the decision it leaves). None when it needs `ingest_signals` (the device is unknown
    or had timed out, the user's hot state is incomplete or outdated), the request already counted
    against the rate limits; `RateLimited` when they refuse it."""
    limits = ratelimits.signal_limits(device_id)
    beat = hotstate.store().heartbeat(user_id, device_id, seq, timezone.now().timestamp(), limits)
    if beat is None:
        return None
    metrics.count_heartbeat()
    return (1, 0, beat.decision) if beat.applied else (0, 1, beat.decision)


def _ingest_slowly(user: User, device_id: str, signals: Sequence[Signal], now: datetime) -> SignalOutcome:
    store = hotstate.store()
    with transaction.atomic():
        row = Device.objects.select_for_update().filter(user=user, device_id=device_id).first()
        if row is None:
            raise DeviceNotFound(device_id)
        for attempt in range(5):
            hot = hotstate.HotUser.parse(store.read(user.pk))
            base = hot.devices.get(device_id) if hot.loaded else None
            updated, applied, ignored = apply_signals(base or _hot_device_of(row), signals, now.timestamp())
            if not applied:
                break
            updated = updated.with_changes(flushed_at=now.timestamp())
            if not hot.loaded:
                break  # recompute rebuilds the hot devices from the rows, this one included
            # Heartbeats on the hot path do not take the row lock: compare-and-set on the seq,
            # and after a few lost races write anyway (the row lock orders the slow paths).
            expected_seq = base.seq if base is not None and attempt < 4 else None
            if store.commit_device(user.pk, updated, expected_seq):
                break
        if applied:
            _persist_device(user.pk, updated)
            history.record_devices(_device_change_entries(row, updated))
    presence = recompute(user, now, source=_source_of(signals)) if applied else current_presence(user, now)
    return SignalOutcome(applied=applied, ignored=ignored, presence=presence)


def apply_signals(
    device: hotstate.HotDevice, signals: Sequence[Signal], now: float
) -> tuple[hotstate.HotDevice, int, int]:
    """The device after `signals`, in seq order; those not newer than its seq are ignored."""
    applied = ignored = 0
    changes: dict[str, object] = {}
    seq = device.seq
    for signal in sorted(signals, key=lambda s: s.seq):
        if signal.seq <= seq:
            ignored += 1
            continue
        _apply_signal(changes, signal, now)
        seq = signal.seq
        applied += 1
    return device.with_changes(seq=seq, **changes), applied, ignored


def _apply_signal(changes: dict[str, object], signal: Signal, now: float) -> None:
    changes["last_seen"] = now
    if signal.type == SignalType.NETWORK and signal.value == NetworkValue.OFFLINE:
        changes["network"] = NetworkValue.OFFLINE.value
        return
    # Any other signal that arrives proves the device is connected again.
    changes["network"] = NetworkValue.ONLINE.value
    if signal.type == SignalType.ACTIVITY:
        changes["activity"] = signal.value
        if signal.value == ActivityValue.ACTIVE:
            changes["last_active"] = now
    elif signal.type == SignalType.VISIBILITY:
        changes["visibility"] = signal.value
        if signal.value == VisibilityValue.VISIBLE:
            # Bringing the window to the front is the user acting.
            changes["activity"] = ActivityValue.ACTIVE.value
            changes["last_active"] = now
    elif signal.type in (SignalType.CALL, SignalType.MEETING):
        started = signal.value == SessionValue.START
        changes["in_call" if signal.type == SignalType.CALL else "in_meeting"] = started
        changes["last_active"] = now


_hot_device_of = selectors.hot_device_of


def _devices_from_database(
    user: User, state: PresenceState, device_timeout: timedelta, now: datetime
) -> list[hotstate.HotDevice]:
    """The user's devices from their database copy, to rebuild a hot state the store does not
    have (first use, or a restarted Redis that lost it): see `selectors.devices_on_rebuild`."""
    return selectors.devices_on_rebuild(Device.objects.filter(user=user), state.status, device_timeout, now)


def persist_pending(batch_size: int = 500, max_batches: int = 100) -> int:
    """Write behind: the devices and decisions the hot path changed, to the database (for the
    admin, the history and a rebuild after a Redis restart). A user changed many times since
    the last run is written once, with the latest. Returns the number of users written."""
    store = hotstate.store()
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


def persist_users(user_ids: list[int]) -> None:
    """The database copy of these users' hot devices and decisions. Each part is read from the
    hot store under the rows' locks, so a writer that read earlier cannot store older data over
    newer; the devices are locked before the presence rows, in the order every other writer
    takes them."""
    store = hotstate.store()
    user_ids = sorted(set(user_ids))
    now = timezone.now()
    with transaction.atomic():
        rows = list(Device.objects.select_for_update().filter(user_id__in=user_ids).order_by("pk"))
        hot_users = dict(zip(user_ids, map(hotstate.HotUser.parse, store.read_many(user_ids)), strict=True))
        devices, changes = [], []
        for row in rows:
            device = hot_users[row.user_id].devices.get(row.device_id)
            if device is not None and device.seq > row.last_seq:
                changes.extend(_device_change_entries(row, device))
                _copy_device(row, device)
                devices.append(row)
        Device.objects.bulk_update(devices, _DEVICE_FIELDS)
        history.record_devices(changes)  # one INSERT for the batch
    with transaction.atomic():
        states = {
            state.user_id: state
            for state in PresenceState.objects.select_for_update().filter(user_id__in=user_ids).order_by("user_id")
        }
        hot_users = dict(zip(user_ids, map(hotstate.HotUser.parse, store.read_many(user_ids)), strict=True))
        updated = []
        for user_id, hot in hot_users.items():
            state = states.get(user_id)
            if hot.decision is None or state is None or _hot_state_equals(state, hot.decision):
                continue
            _apply_hot(state, hot.decision, now)
            updated.append(state)
        PresenceState.objects.bulk_update(updated, _STATE_FIELDS)


def _device_change_entries(row: Device, device: hotstate.HotDevice) -> list[DeviceHistory]:
    """The device-history entry, if any, when the device's reported state differs from its
    database copy, timed at the device's last signal (written behind, the write may come a
    little later)."""
    before = history.reported_state(row.activity, row.visibility, row.in_call, row.in_meeting, row.network)
    after = history.reported_state(*device.persistent_state())
    if before == after:
        return []
    return [history.device_entry(row.user_id, row.device_id, row.label, after, hotstate.from_epoch(device.last_seen))]


def _copy_device(row: Device, device: hotstate.HotDevice) -> None:
    row.last_seen_at = hotstate.from_epoch(device.last_seen)
    row.last_active_at = hotstate.from_epoch(device.last_active)
    row.activity = device.activity
    row.visibility = device.visibility
    row.in_call = device.in_call
    row.in_meeting = device.in_meeting
    row.network = device.network
    row.last_seq = device.seq


def flush_device_activity(batch_size: int = 1000) -> int:
    """Write the hot path's last-seen and last-active times of devices to the database, for the
    admin and for rebuilding after a Redis restart. Heartbeats mark a device for this at most
    every PRESENCE_DEVICE_FLUSH_SECONDS."""
    store = hotstate.store()
    flushed = 0
    while True:
        marked = store.pop_dirty(batch_size)
        for user_id, device_id in marked:
            device = hotstate.HotUser.parse(store.read(user_id)).devices.get(device_id)
            if device is not None:
                flushed += _persist_device(user_id, device)
        if len(marked) < batch_size:
            return flushed


# --- Manual status, calendar, preferences, Microsoft import ---------------------------------


def count_input_change(user: User) -> None:
    """Count a change of the user's inputs (manual status, calendar, presence settings, devices)
    against PRESENCE_RATE_LIMIT_STATUS; `RateLimited` when over it. Asked by the API and the
    settings page for the user's own requests; what an admin or the server changes is not counted."""
    hotstate.store().charge(user.pk, ratelimits.change_limits(), timezone.now().timestamp())


def set_manual_status(user: User, status: Status, message: str = "", until: datetime | None = None) -> PresenceState:
    ManualStatus.objects.update_or_create(
        user=user, defaults={"status": status, "message": message, "until": until, "set_at": timezone.now()}
    )
    return recompute(user, source="manual_status")


def clear_manual_status(user: User, source: str = "manual_status") -> PresenceState:
    ManualStatus.objects.filter(user=user).delete()
    return recompute(user, source=source)


def replace_calendar(user: User, blocks: Iterable[tuple[datetime, datetime]]) -> PresenceState:
    with transaction.atomic():
        CalendarBlock.objects.filter(user=user).delete()
        CalendarBlock.objects.bulk_create(CalendarBlock(user=user, start=start, end=end) for start, end in blocks)
    return recompute(user, source="calendar")


def update_preferences(user: User, **changes: object) -> PresencePreferences:
    with transaction.atomic():
        preferences, _ = PresencePreferences.objects.select_for_update().get_or_create(user=user)
        for field, value in changes.items():
            setattr(preferences, field, value)
        preferences.save()
    state = recompute(user, source="preferences")
    if "share_externally" in changes:
        # Nothing visible changed, so no publish: tell dispatch itself, which publishes or withdraws.
        change = events.PresenceChange.from_state(user, state)
        transaction.on_commit(lambda: events.dispatch_externally([change]))
    return preferences


def record_microsoft_presence(
    user: User, availability: str, activity: str, observed_at: datetime, echo: bool = False
) -> PresenceState:
    """Record the user's imported Microsoft presence; `echo`: it is SPARKS' own publication read
    back (`integrations.mapping.is_own_echo`), kept for the record but adding nothing."""
    MicrosoftPresence.objects.update_or_create(
        user=user,
        defaults={"availability": availability, "activity": activity, "observed_at": observed_at, "echo": echo},
    )
    return recompute(user, source="microsoft_import")


# --- The decision ---------------------------------------------------------------------------


def recompute(
    user: User, now: datetime | None = None, forget_devices: Iterable[str] = (), source: str = "recompute"
) -> PresenceState:
    """Decide the user's presence from the stored inputs, store it, and publish a visible change.

    The user's presence row is locked while deciding, so two processes recomputing the same user
    at once cannot store an older decision over a newer one: the second waits, then reads the
    inputs the first had not seen. Heartbeats do not take that lock; the hot store's version
    check makes whichever of the two wrote second read again. The database is written only when
    the visible decision changed.
    """
    store = hotstate.store()
    forget = set(forget_devices)
    removed = tuple(prefix + device_id for device_id in forget for prefix in hotstate.DEVICE_FIELD_PREFIXES)
    with transaction.atomic():
        _, created = PresenceState.objects.get_or_create(
            user=user, defaults={"changed_at": timezone.now(), "computed_at": timezone.now()}
        )
        state = PresenceState.objects.select_for_update().get(user=user)
        now = now or timezone.now()
        inputs, organization_id = selectors.presence_context_for(user, now)
        context = hotstate.encode_context(inputs, organization_id)
        rows: list[hotstate.HotDevice] | None = None
        for _ in range(10):
            hot = hotstate.HotUser.parse(store.read(user.pk))
            fields = {"ctx": context}
            if hot.loaded:
                devices = [d for d in hot.devices.values() if d.device_id not in forget]
            else:
                # First use, or the hot store lost its data: rebuild the devices from the database.
                if rows is None:
                    rows = _devices_from_database(user, state, inputs.policy.device_timeout, now)
                devices = rows
                for device in devices:
                    fields.update(hotstate.device_fields(device))
                fields["loaded"] = "1"
            decision = aggregate(replace(inputs, devices=tuple(d.engine_input() for d in devices)), now)
            hot_decision = hotstate.HotDecision.of(decision)
            fields["dec"] = hot_decision.encode()
            commit = hotstate.UserCommit(user.pk, hot.version, fields, hot_decision.valid_until, removed)
            if store.commit_users([commit])[0]:
                break
        else:
            # Heartbeats kept moving the version on. The new inputs must land all the same: write
            # them with a decision that is already due, so that the next heartbeat or reader
            # decides again from them and the devices as they are then.
            logger.warning("Presence of user %s kept changing while recomputed; forcing the new inputs", user.pk)
            fields["dec"] = replace(hot_decision, valid_until=now.timestamp()).encode()
            store.commit_users([hotstate.UserCommit(user.pk, None, fields, now.timestamp(), removed)])
        visible_change = created or _visible_change(hot, state, decision)
        row_shows_other = _visible_fields(state) != decision.visible_fields()
        if visible_change or row_shows_other or state.reason != decision.reason:
            # A new reason alone (a manual "available" on a user whose devices said available too)
            # is stored as well, for the admin; it changes nothing anyone sees, so nothing is published.
            _store(state, decision, now, changed=visible_change or row_shows_other)
        else:
            state = _state_of(user.pk, hot_decision)
        if visible_change:
            change = events.PresenceChange.of(organization_id, user.public_id, state, source)
            transaction.on_commit(lambda: events.publish(change))
    return state


def _visible_change(hot: hotstate.HotUser, state: PresenceState, decision: Decision) -> bool:
    """Whether `decision` shows something new, judged against the decision it replaced in the
    hot store (the database row may still be behind it, see `persist_pending`)."""
    before = hot.decision.visible_fields() if hot.decision is not None else _visible_fields(state)
    return before != decision.visible_fields()


def _visible_fields(state: PresenceState) -> tuple[object, ...]:
    return (state.status, state.activity, state.status_msg or None, state.currently_active)


_STATE_FIELDS = [
    "status",
    "activity",
    "status_msg",
    "last_active_at",
    "currently_active",
    "reason",
    "valid_until",
    "computed_at",
    "changed_at",
]


def _store(state: PresenceState, decision: Decision, now: datetime, changed: bool = True) -> None:
    _apply(state, decision, now, changed)
    state.save(update_fields=_STATE_FIELDS)


def _apply(state: PresenceState, decision: Decision, now: datetime, changed: bool = True) -> None:
    state.status = decision.status
    state.activity = decision.activity
    state.status_msg = decision.status_msg or ""
    state.last_active_at = decision.last_active
    state.currently_active = decision.currently_active
    state.reason = decision.reason
    state.valid_until = decision.valid_until
    state.computed_at = now
    if changed:  # what others see changed (not only the reason behind it)
        state.changed_at = now


def _hot_state_equals(state: PresenceState, decision: hotstate.HotDecision) -> bool:
    return (
        _visible_fields(state) == decision.visible_fields()
        and state.reason == decision.reason
        and hotstate.to_epoch(state.last_active_at) == decision.last_active
        and hotstate.to_epoch(state.valid_until) == decision.valid_until
    )


def _apply_hot(state: PresenceState, decision: hotstate.HotDecision, now: datetime) -> None:
    if _visible_fields(state) != decision.visible_fields():
        state.changed_at = now
    state.status = decision.status
    state.activity = decision.activity
    state.status_msg = decision.status_msg or ""
    state.last_active_at = hotstate.from_epoch(decision.last_active)
    state.currently_active = decision.currently_active
    state.reason = decision.reason
    state.valid_until = hotstate.from_epoch(decision.valid_until)
    state.computed_at = now


_state_of = selectors.state_of

# Reads: `presence.selectors` answers them without locking or writing anything. The names stay
# here for the callers that ask this module.
current_presence = selectors.current_presence
fresh_presence_of = selectors.fresh_presence_of


@metrics.SWEEP_SECONDS.time()
def sweep_expired(now: datetime | None = None, batch_size: int = 500) -> int:
    """Recompute every user whose decision has passed its `valid_until`; idempotent.

    The due users come from the hot store's schedule (a sorted set by `valid_until` on Redis) and
    are decided from their hot state in batches: no database query for a user whose visible
    status stays, one locked batch update for those whose status changed. If the store lost its
    data, every user the database does not hold as plainly offline is recomputed once first,
    which rebuilds their hot state and schedule.
    """
    now = now or timezone.now()
    store = hotstate.store()
    swept = 0
    if store.check_epoch():
        maybe_live = PresenceState.objects.exclude(status=Status.OFFLINE, valid_until=None)
        for user in User.objects.filter(pk__in=maybe_live.values("user_id")).iterator(chunk_size=batch_size):
            if not hotstate.HotUser.parse(store.read(user.pk)).loaded:
                recompute(user, now, source="sweep")
                swept += 1
    while True:
        user_ids = store.due(now.timestamp(), batch_size)
        swept += _sweep_batch(user_ids, now)
        if len(user_ids) < batch_size:
            return swept


def _decide_from_hot(
    raw: dict[str, str], now: datetime
) -> tuple[hotstate.HotUser, hotstate.HotContext, Decision] | None:
    """A user's decision from the hot state alone, or None when that state is not complete."""
    hot = hotstate.HotUser.parse(raw)
    if not hot.ready:
        return None
    context = hotstate.HotContext.decode(hot.context)
    if not context.current:
        return None
    return hot, context, aggregate(context.with_devices(list(hot.devices.values())), now)


def _sweep_batch(user_ids: list[int], now: datetime) -> int:
    store = hotstate.store()
    quiet: list[hotstate.UserCommit] = []
    changed: list[int] = []
    slow: list[int] = []
    for user_id, raw in zip(user_ids, store.read_many(user_ids), strict=True):
        decided = _decide_from_hot(raw, now)
        if decided is None:
            slow.append(user_id)
            continue
        hot, _, decision = decided
        if decision.visible_fields() == hot.decision.visible_fields():
            encoded = hotstate.HotDecision.of(decision)
            quiet.append(hotstate.UserCommit(user_id, hot.version, {"dec": encoded.encode()}, encoded.valid_until))
        else:
            changed.append(user_id)
    for commit, stored in zip(quiet, store.commit_users(quiet), strict=True):
        if not stored:
            slow.append(commit.user_id)
    slow.extend(_store_changed_decisions(changed, now))
    users = User.objects.in_bulk(slow)
    forgotten = 0
    for user_id in slow:
        if user_id in users:
            recompute(users[user_id], now, source="sweep")
        else:
            store.forget_user(user_id)  # deleted since it was scheduled
            forgotten += 1
    return len(user_ids) - forgotten


def _store_changed_decisions(user_ids: list[int], now: datetime) -> list[int]:
    """Store, in one locked batch, the decisions of users whose visible status changed with
    time; returns the users this could not do from the hot state (for a full recompute)."""
    if not user_ids:
        return []
    store = hotstate.store()
    leftovers: list[int] = []
    with transaction.atomic():
        states = {
            s.user_id: s
            for s in PresenceState.objects.select_for_update().filter(user_id__in=user_ids).order_by("user_id")
        }
        public_ids = dict(User.objects.filter(pk__in=list(states)).values_list("pk", "public_id"))
        commits: list[hotstate.UserCommit] = []
        decided_now: list[tuple[PresenceState, Decision, int | None, hotstate.HotUser]] = []
        # Read again under the lock: a heartbeat may have landed since the first read.
        for user_id, raw in zip(user_ids, store.read_many(user_ids), strict=True):
            decided = _decide_from_hot(raw, now)
            state = states.get(user_id)
            if decided is None or state is None or user_id not in public_ids:
                leftovers.append(user_id)
                continue
            hot, context, decision = decided
            encoded = hotstate.HotDecision.of(decision)
            commits.append(hotstate.UserCommit(user_id, hot.version, {"dec": encoded.encode()}, encoded.valid_until))
            decided_now.append((state, decision, context.organization_id, hot))
        updated: list[PresenceState] = []
        changes: list[events.PresenceChange] = []
        results = store.commit_users(commits)
        for (state, decision, organization_id, hot), stored in zip(decided_now, results, strict=True):
            if not stored:
                leftovers.append(state.user_id)
                continue
            visible_change = _visible_change(hot, state, decision)
            if visible_change or _visible_fields(state) != decision.visible_fields():
                _apply(state, decision, now)
                updated.append(state)
            if visible_change:
                changes.append(events.PresenceChange.of(organization_id, public_ids[state.user_id], state, "sweep"))
        PresenceState.objects.bulk_update(updated, _STATE_FIELDS)
        if changes:
            transaction.on_commit(lambda: events.publish_many(changes))
    return leftovers


def recompute_organization(organization_id: int, source: str = "policy") -> int:
    count = 0
    for user in User.objects.filter(membership__organization_id=organization_id).iterator(chunk_size=500):
        recompute(user, source=source)
        count += 1
    return count


def recompute_user_by_id(user_id: int, source: str = "membership") -> None:
    user = User.objects.filter(pk=user_id).first()
    if user is not None:
        recompute(user, source=source)
