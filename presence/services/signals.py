"""A device's signals: applied to the device in the hot store, decided, and committed.

The hot path: the user's hot state (devices and the slow inputs) decides, and one conditional
write of the hot store records the device and the decision (`funnel.SignalWrite`). When the
signals change no persistent device state (a heartbeat, another "active") and the visible
decision stays, that is all: no database query. When they do, the change is pushed at once and
the database written behind (`persist.persist_pending`), or right away without
PRESENCE_WRITE_BEHIND. A user whose hot state is missing or outdated takes the slow path, which
writes the device's row under its lock and recomputes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import presence.services.funnel as funnel
from orgs.models import User
from presence import decisions, history, hot, ratelimits, selectors
from presence.engine import aggregate, visible
from presence.models import Device, PresenceState
from presence.services.decide import recompute
from presence.services.devices import DeviceNotFound
from presence.services.persist import device_change_entries, persist_device
from presence.vocabulary import ActivityValue, NetworkValue, SessionValue, SignalType, VisibilityValue
from sparks_site import metrics


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


def ingest_signals(
    user: User, device_id: str, signals: Sequence[Signal], *, rate_counted: bool = False
) -> SignalOutcome:
    """Apply a device's signals in `seq` order; a signal not newer than the last applied is ignored.

    One call is one request of the device: it counts against the device's and the user's signal
    rate limits (`presence.ratelimits`) unless `rate_counted` (the door that passed the request
    on counted it already); over one, `RateLimited` is raised and nothing applied. Counted in the
    metrics (once per signal, for a known device) after it succeeded."""
    outcome = _ingest(user, device_id, signals, rate_counted)
    metrics.count_signals(signals)
    return outcome


def _ingest(user: User, device_id: str, signals: Sequence[Signal], rate_counted: bool) -> SignalOutcome:
    now = timezone.now()
    store = hot.store()
    for attempt in range(3):
        if attempt or rate_counted:
            raw = store.read(user.pk)
        else:  # the request's limits are checked in the same step as the first read
            raw = store.read_charged(user.pk, device_id, ratelimits.signal_limits(device_id), now.timestamp())
        hot_user = hot.HotUser.parse(raw)
        device = hot_user.devices.get(device_id)
        if device is None or not hot_user.ready:
            break
        context = hot.HotContext.decode(hot_user.context)
        if not context.current:
            break
        updated, applied, ignored = apply_signals(device, signals, now.timestamp())
        if not applied:
            return SignalOutcome(applied=0, ignored=ignored, presence=selectors.current_presence(user, now))
        devices = [updated if d.device_id == device_id else d for d in hot_user.devices.values()]
        decision = hot.HotDecision.of(aggregate(context.with_devices(devices), now))
        changed = visible(decision) != visible(hot_user.decision)
        persist = changed or updated.persistent_state() != device.persistent_state()
        # The database copy of the device's times is renewed with any write of it.
        flush_due = persist or now.timestamp() - updated.flushed_at >= settings.PRESENCE_DEVICE_FLUSH_SECONDS
        if flush_due:
            updated = updated.with_changes(flushed_at=now.timestamp())
        item = funnel.Commit(
            user.pk,
            user.public_id,
            context.organization_id,
            hot_user.decision,
            decision,
            _source_of(signals),
            hot_user.version,
            signals=funnel.SignalWrite(updated, device.seq, mark_dirty=flush_due, persist=persist),
        )
        # Compare-and-set on the user's version: of two requests that read the same state, one
        # writes and the other reads again, so each change of status is pushed exactly once.
        if funnel.commit([item])[0]:
            return SignalOutcome(applied=applied, ignored=ignored, presence=decisions.unsaved_row(user.pk, decision))
    return _ingest_slowly(user, device_id, signals, now)


def _source_of(signals: Sequence[Signal]) -> str:
    """The history's name for a batch of signals: `signal:` and their types, e.g. `signal:visibility`."""
    return "signal:" + ",".join(dict.fromkeys(str(signal.type) for signal in signals))


def steady_heartbeat(user_id: int, device_id: str, seq: int) -> tuple[int, int, hot.HotDecision] | None:
    """A lone heartbeat of a live device, recorded in one step of the hot store: (applied,
    ignored, the decision it leaves). None when it needs `ingest_signals` (the device is unknown
    or had timed out, the user's hot state is incomplete or outdated), the request already counted
    against the rate limits; `RateLimited` when they refuse it."""
    limits = ratelimits.signal_limits(device_id)
    beat = hot.store().heartbeat(user_id, device_id, seq, timezone.now().timestamp(), limits)
    if beat is None:
        return None
    metrics.count_heartbeat()
    return (1, 0, beat.decision) if beat.applied else (0, 1, beat.decision)


def _ingest_slowly(user: User, device_id: str, signals: Sequence[Signal], now: datetime) -> SignalOutcome:
    store = hot.store()
    with transaction.atomic():
        row = Device.objects.select_for_update().filter(user=user, device_id=device_id).first()
        if row is None:
            raise DeviceNotFound(device_id)
        for attempt in range(5):
            hot_user = hot.HotUser.parse(store.read(user.pk))
            base = hot_user.devices.get(device_id) if hot_user.loaded else None
            updated, applied, ignored = apply_signals(base or selectors.hot_device_of(row), signals, now.timestamp())
            if not applied:
                break
            updated = updated.with_changes(flushed_at=now.timestamp())
            if not hot_user.loaded:
                break  # recompute rebuilds the hot devices from the rows, this one included
            # Heartbeats on the hot path do not take the row lock: compare-and-set on the seq,
            # and after a few lost races write anyway (the row lock orders the slow paths).
            expected_seq = base.seq if base is not None and attempt < 4 else None
            if store.commit_device(user.pk, updated, expected_seq):
                break
        if applied:
            persist_device(user.pk, updated)
            history.record_devices(device_change_entries(row, updated))
    if not applied:
        return SignalOutcome(applied=0, ignored=ignored, presence=selectors.current_presence(user, now))
    return SignalOutcome(applied=applied, ignored=ignored, presence=recompute(user, now, source=_source_of(signals)))


def apply_signals(device: hot.HotDevice, signals: Sequence[Signal], now: float) -> tuple[hot.HotDevice, int, int]:
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
