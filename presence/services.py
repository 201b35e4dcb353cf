"""Writes. Every change to a presence input enters here and leaves through `recompute`.

One path for every change: record the input → `recompute(user)` → store the decision → publish
the change after the transaction commits, and only when something visible changed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orgs.models import User
from presence import events, selectors
from presence.engine import Decision, aggregate
from presence.models import (
    CalendarBlock,
    Device,
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
    recompute(user)
    return device, created


def sign_out_device(user: User, device_id: str) -> None:
    deleted, _ = Device.objects.filter(user=user, device_id=device_id).delete()
    if not deleted:
        raise DeviceNotFound(device_id)
    recompute(user)


def ingest_signals(user: User, device_id: str, signals: Sequence[Signal]) -> SignalOutcome:
    """Apply a device's signals in `seq` order; a signal not newer than the last applied is ignored."""
    now = timezone.now()
    applied = ignored = 0
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(user=user, device_id=device_id).first()
        if device is None:
            raise DeviceNotFound(device_id)
        for signal in sorted(signals, key=lambda s: s.seq):
            if signal.seq <= device.last_seq:
                ignored += 1
                continue
            _apply_signal(device, signal, now)
            device.last_seq = signal.seq
            applied += 1
        if applied:
            device.save()
    presence = recompute(user) if applied else current_presence(user)
    return SignalOutcome(applied=applied, ignored=ignored, presence=presence)


def _apply_signal(device: Device, signal: Signal, now: datetime) -> None:
    device.last_seen_at = now
    if signal.type == SignalType.NETWORK and signal.value == NetworkValue.OFFLINE:
        device.network = NetworkValue.OFFLINE
        return
    # Any other signal that arrives proves the device is connected again.
    device.network = NetworkValue.ONLINE
    if signal.type == SignalType.ACTIVITY:
        device.activity = signal.value
        if signal.value == ActivityValue.ACTIVE:
            device.last_active_at = now
    elif signal.type == SignalType.VISIBILITY:
        device.visibility = signal.value
        if signal.value == VisibilityValue.VISIBLE:
            # Bringing the window to the front is the user acting.
            device.activity = ActivityValue.ACTIVE
            device.last_active_at = now
    elif signal.type in (SignalType.CALL, SignalType.MEETING):
        started = signal.value == SessionValue.START
        if signal.type == SignalType.CALL:
            device.in_call = started
        else:
            device.in_meeting = started
        device.last_active_at = now


# --- Manual status, calendar, preferences, Microsoft import ---------------------------------


def set_manual_status(user: User, status: Status, message: str = "", until: datetime | None = None) -> PresenceState:
    ManualStatus.objects.update_or_create(
        user=user, defaults={"status": status, "message": message, "until": until, "set_at": timezone.now()}
    )
    return recompute(user)


def clear_manual_status(user: User) -> PresenceState:
    ManualStatus.objects.filter(user=user).delete()
    return recompute(user)


def replace_calendar(user: User, blocks: Iterable[tuple[datetime, datetime]]) -> PresenceState:
    with transaction.atomic():
        CalendarBlock.objects.filter(user=user).delete()
        CalendarBlock.objects.bulk_create(CalendarBlock(user=user, start=start, end=end) for start, end in blocks)
    return recompute(user)


def update_preferences(user: User, **changes: object) -> PresencePreferences:
    with transaction.atomic():
        preferences, _ = PresencePreferences.objects.select_for_update().get_or_create(user=user)
        for field, value in changes.items():
            setattr(preferences, field, value)
        preferences.save()
    recompute(user)
    return preferences


def record_microsoft_presence(user: User, availability: str, activity: str, observed_at: datetime) -> PresenceState:
    MicrosoftPresence.objects.update_or_create(
        user=user, defaults={"availability": availability, "activity": activity, "observed_at": observed_at}
    )
    return recompute(user)


# --- The decision ---------------------------------------------------------------------------


def recompute(user: User, now: datetime | None = None) -> PresenceState:
    """Decide the user's presence from what is stored now, store it, and publish a visible change.

    The user's presence row is locked while deciding, so two processes recomputing the same user
    at once cannot store an older decision over a newer one: the second waits, then reads the
    inputs the first had not seen.
    """
    with transaction.atomic():
        _, created = PresenceState.objects.get_or_create(
            user=user, defaults={"changed_at": timezone.now(), "computed_at": timezone.now()}
        )
        state = PresenceState.objects.select_for_update().get(user=user)
        now = now or timezone.now()
        decision = aggregate(selectors.presence_inputs_for(user, now), now)
        changed = created or _visible_fields(state) != decision.visible_fields()
        _store(state, decision, now, changed)
        if changed:
            change = events.PresenceChange.from_state(user, state)
            transaction.on_commit(lambda: events.publish(change))
    return state


def _visible_fields(state: PresenceState) -> tuple[object, ...]:
    return (state.status, state.activity, state.status_msg or None, state.currently_active)


def _store(state: PresenceState, decision: Decision, now: datetime, changed: bool) -> None:
    state.status = decision.status
    state.activity = decision.activity
    state.status_msg = decision.status_msg or ""
    state.last_active_at = decision.last_active
    state.currently_active = decision.currently_active
    state.reason = decision.reason
    state.valid_until = decision.valid_until
    state.computed_at = now
    if changed:
        state.changed_at = now
    state.save()


def current_presence(user: User, now: datetime | None = None) -> PresenceState:
    """The user's presence, right at read time even if no sweep has run since it went stale."""
    now = now or timezone.now()
    state = PresenceState.objects.filter(user=user).first()
    if state is None or _is_stale(state, now):
        return recompute(user, now)
    return state


def fresh_presence_of(users: Iterable[User], now: datetime | None = None) -> dict[int, PresenceState]:
    """Presence of several users (their `presence_state` preloaded), recomputing only the stale."""
    now = now or timezone.now()
    states: dict[int, PresenceState] = {}
    for user in users:
        # A missing row raises RelatedObjectDoesNotExist, an AttributeError: getattr gives None.
        state = getattr(user, "presence_state", None)
        if state is None or _is_stale(state, now):
            state = recompute(user, now)
        states[user.pk] = state
    return states


def _is_stale(state: PresenceState, now: datetime) -> bool:
    return state.valid_until is not None and state.valid_until <= now


def sweep_expired(now: datetime | None = None, batch_size: int = 500) -> int:
    """Recompute every user whose stored decision has passed its `valid_until`; idempotent."""
    now = now or timezone.now()
    swept = 0
    while True:
        user_ids = list(
            PresenceState.objects.filter(valid_until__lte=now)
            .order_by("valid_until")
            .values_list("user_id", flat=True)[:batch_size]
        )
        if not user_ids:
            return swept
        for user in User.objects.filter(pk__in=user_ids):
            recompute(user, now)
            swept += 1
        if len(user_ids) < batch_size:
            return swept


def recompute_organization(organization_id: int) -> int:
    count = 0
    for user in User.objects.filter(membership__organization_id=organization_id).iterator(chunk_size=500):
        recompute(user)
        count += 1
    return count


def recompute_user_by_id(user_id: int) -> None:
    user = User.objects.filter(pk=user_id).first()
    if user is not None:
        recompute(user)
