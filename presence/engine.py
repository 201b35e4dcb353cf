"""The aggregation engine: a user's inputs and the current time in, one presence decision out.

Pure by design: no Django, no database, no clock. `now` is always an argument, so the same inputs
give the same decision in a test, in a request, in the sweep and in the admin's explanation.

The rules, in order (the SPARKS manual, "Priority"):
1. No live device (none reported within the device timeout, or each reported `network: offline`)
   → offline, whatever else is set. A manual status survives and applies again later.
2. A live device in a SPARKS call or meeting → busy; a manual "do not disturb" is never weakened.
3. Calendar busy and the manual status, in the order of the user's priority.
4. Microsoft imported presence, if fresh: only ever adds busy or do-not-disturb.
5. Every live device idle or hidden → away.
6. Otherwise available.
Devices coalesce as in Synapse: busy > online > unavailable > offline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from presence.microsoft import graph_import_contribution
from presence.vocabulary import (
    DEVICE_STATE_RANK,
    MANUAL_STATUS_ACTIVITY,
    Activity,
    ActivityValue,
    DeviceState,
    NetworkValue,
    Priority,
    Reason,
    Status,
    VisibilityValue,
)

CURRENTLY_ACTIVE_WINDOW = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class DeviceInput:
    """What one device last told the server (times are when the server received it)."""

    device_id: str
    last_seen: datetime
    last_active: datetime | None
    activity: ActivityValue = ActivityValue.ACTIVE
    visibility: VisibilityValue = VisibilityValue.VISIBLE
    in_call: bool = False
    in_meeting: bool = False
    network: NetworkValue = NetworkValue.ONLINE
    label: str = ""


@dataclass(frozen=True, slots=True)
class ManualInput:
    status: Status
    message: str = ""
    until: datetime | None = None
    set_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CalendarBlockInput:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class MicrosoftInput:
    availability: str
    activity: str
    observed_at: datetime
    # SPARKS' own publication read back from Teams (integrations.mapping.is_own_echo): adds nothing.
    echo: bool = False


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """The organization's presence policy, with every timeout already resolved."""

    device_timeout: timedelta = timedelta(seconds=120)
    idle_timeout: timedelta = timedelta(seconds=300)
    microsoft_max_age: timedelta = timedelta(seconds=300)
    allow_calendar: bool = True
    allow_microsoft: bool = True
    # May users choose to appear offline? When not, a manual "offline" stops applying.
    allow_appear_offline: bool = True
    default_priority: Priority = Priority.CALENDAR_FIRST


@dataclass(frozen=True, slots=True)
class PreferencesInput:
    use_calendar_busy: bool = True
    include_microsoft_presence: bool = False
    priority: Priority | None = None


@dataclass(frozen=True, slots=True)
class PresenceInputs:
    devices: Sequence[DeviceInput] = ()
    manual: ManualInput | None = None
    calendar: Sequence[CalendarBlockInput] = ()
    microsoft: MicrosoftInput | None = None
    preferences: PreferencesInput = field(default_factory=PreferencesInput)
    policy: PolicyInput = field(default_factory=PolicyInput)


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One rule as the engine evaluated it: for "why is this my status?" answers."""

    rule: str
    applied: bool
    note: str


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    activity: Activity
    status_msg: str | None
    last_active: datetime | None
    currently_active: bool
    reason: Reason
    # The earliest moment at which the passing of time alone (a device timing out, a manual
    # status expiring, a calendar block starting, ...) may change this decision. Stored with
    # the decision, it lets readers and the sweep know when a stored decision needs recomputing.
    valid_until: datetime | None
    device_states: tuple[tuple[str, DeviceState], ...] = ()
    trace: tuple[RuleCheck, ...] = ()
    # When the shown status is expected to end, as far as the server knows: a manual status's
    # `until`, the end of the calendar busy time in progress; None when nobody can tell (a call
    # ends when it ends) or nothing is planned. What colleagues see as "Busy · until 14:30".
    status_until: datetime | None = None


class Shown(Protocol):
    """What every shape of a decision has (this one, the hot store's, the database row)."""

    status: str
    activity: str
    status_msg: str | None
    currently_active: bool
    status_until: datetime | float | None  # epoch seconds in the hot store's shape


def visible(decision: Shown) -> tuple[object, ...]:
    """What colleagues see of a decision, whatever its shape: a new decision whose visible part is
    the same as the old one's is not news (stored, but not published). The one definition."""
    until = decision.status_until
    return (
        decision.status,
        decision.activity,
        decision.status_msg or None,
        decision.currently_active,
        until.timestamp() if isinstance(until, datetime) else until,
    )


def device_state(device: DeviceInput, now: datetime, policy: PolicyInput) -> DeviceState:
    """One device's state at `now`: offline, busy, unavailable (idle or hidden) or online."""
    if not is_live(device, now, policy):
        return DeviceState.OFFLINE
    if device.in_call or device.in_meeting:
        # A device in a call never idles: the user is talking, not typing.
        return DeviceState.BUSY
    if device.visibility == VisibilityValue.HIDDEN or is_idle(device, now, policy):
        return DeviceState.UNAVAILABLE
    return DeviceState.ONLINE


def is_live(device: DeviceInput, now: datetime, policy: PolicyInput) -> bool:
    return device.network != NetworkValue.OFFLINE and now < device.last_seen + policy.device_timeout


def is_idle(device: DeviceInput, now: datetime, policy: PolicyInput) -> bool:
    if device.activity == ActivityValue.IDLE or device.last_active is None:
        return True
    # Heartbeats prove the device is there, not that the user is: no activity report for the
    # idle timeout means idle, as Synapse does for a client that keeps syncing.
    return now >= device.last_active + policy.idle_timeout


def coalesce(states: Iterable[DeviceState]) -> DeviceState:
    return max(states, key=DEVICE_STATE_RANK.__getitem__, default=DeviceState.OFFLINE)


def latest_activity(devices: Iterable[DeviceInput]) -> datetime | None:
    return max((d.last_active for d in devices if d.last_active is not None), default=None)


def aggregate(inputs: PresenceInputs, now: datetime) -> Decision:
    """Decide one user's presence at `now`."""
    policy = inputs.policy
    preferences = inputs.preferences
    devices = inputs.devices
    states = tuple((d.device_id, device_state(d, now, policy)) for d in devices)
    user_state = coalesce(state for _, state in states)
    last_active = latest_activity(devices)

    manual = inputs.manual if _manual_in_force(inputs.manual, now) else None
    appear_offline = manual is not None and manual.status == Status.OFFLINE
    if appear_offline and not policy.allow_appear_offline:
        manual = None  # the organization does not allow it: as if none were set
    calendar_allowed = preferences.use_calendar_busy and policy.allow_calendar
    microsoft_allowed = preferences.include_microsoft_presence and policy.allow_microsoft
    in_calendar_block = calendar_allowed and any(b.start <= now < b.end for b in inputs.calendar)
    microsoft = inputs.microsoft if microsoft_allowed else None
    microsoft_fresh = microsoft is not None and now < microsoft.observed_at + policy.microsoft_max_age
    priority = preferences.priority or policy.default_priority

    trace: list[RuleCheck] = []
    status_msg = (manual.message or None) if manual else None

    def decide(
        status: Status,
        activity: Activity,
        reason: Reason,
        *,
        active_at: datetime | None = last_active,
        until: datetime | None = None,
    ) -> Decision:
        currently_active = (
            status == Status.AVAILABLE and active_at is not None and now - active_at < CURRENTLY_ACTIVE_WINDOW
        )
        return Decision(
            status=status,
            activity=activity,
            status_msg=status_msg,
            last_active=active_at,
            currently_active=currently_active,
            reason=reason,
            valid_until=_next_time_change(inputs, now, calendar_allowed, microsoft_allowed, last_active),
            device_states=states,
            trace=tuple(trace),
            status_until=until,
        )

    # Rule 0: "appear offline" is a privacy choice: it wins over every other rule (a call, a
    # calendar block first in the user's order, Microsoft's busy), as in Teams.
    if manual is not None and appear_offline:
        trace.append(RuleCheck("appear_offline", True, "the user chose to appear offline"))
        hidden_at = _appear_offline_cap(manual, last_active)
        return decide(Status.OFFLINE, Activity.OFFLINE, Reason.APPEAR_OFFLINE, active_at=hidden_at, until=manual.until)
    trace.append(
        RuleCheck("appear_offline", False, "not allowed by the organization" if appear_offline else "not chosen")
    )

    # Rule 1: liveness.
    live_count = sum(1 for _, state in states if state != DeviceState.OFFLINE)
    if user_state == DeviceState.OFFLINE:
        trace.append(RuleCheck("device_liveness", True, _no_live_device_note(devices, now, policy)))
        return decide(Status.OFFLINE, Activity.OFFLINE, Reason.NO_LIVE_DEVICE)
    trace.append(RuleCheck("device_liveness", False, f"{live_count} of {len(devices)} device(s) live"))

    # Rule 2: a SPARKS call or meeting.
    if user_state == DeviceState.BUSY:
        live_busy = [d for d, (_, s) in zip(devices, states, strict=True) if s == DeviceState.BUSY]
        in_call = any(d.in_call for d in live_busy)
        activity = Activity.IN_CALL if in_call else Activity.IN_MEETING
        if manual is not None and manual.status == Status.DND:
            trace.append(RuleCheck("call_or_meeting", True, "in a call or meeting; manual do-not-disturb kept"))
            return decide(Status.DND, activity, Reason.MANUAL_DND_DURING_CALL, until=manual.until)
        trace.append(
            RuleCheck("call_or_meeting", True, "a device is in a call" if in_call else "a device is in a meeting")
        )
        return decide(Status.BUSY, activity, Reason.IN_CALL if in_call else Reason.IN_MEETING)
    trace.append(RuleCheck("call_or_meeting", False, "no device in a call or meeting"))

    # Rule 3: calendar busy and the manual status, in the user's order.
    def calendar_rule() -> Decision | None:
        if not calendar_allowed:
            note = "not used (user preference)" if policy.allow_calendar else "not allowed by the organization"
            trace.append(RuleCheck("calendar_busy", False, note))
            return None
        if not in_calendar_block:
            trace.append(RuleCheck("calendar_busy", False, "no busy block now"))
            return None
        trace.append(RuleCheck("calendar_busy", True, "a calendar busy block is in progress"))
        busy_until = busy_time_end(inputs.calendar, now)
        return decide(Status.BUSY, Activity.IN_CALENDAR_EVENT, Reason.CALENDAR_BUSY, until=busy_until)

    def manual_rule() -> Decision | None:
        if manual is None:
            expired = inputs.manual is not None
            trace.append(RuleCheck("manual_status", False, "expired" if expired else "none set"))
            return None
        trace.append(RuleCheck("manual_status", True, f"manual status {manual.status.value}"))
        activity = MANUAL_STATUS_ACTIVITY[manual.status]
        return decide(manual.status, activity, Reason.MANUAL_STATUS, until=manual.until)

    ordered = (calendar_rule, manual_rule) if priority == Priority.CALENDAR_FIRST else (manual_rule, calendar_rule)
    for rule in ordered:
        decision = rule()
        if decision is not None:
            return decision

    # Rule 4: Microsoft import, only busy or do-not-disturb, and never SPARKS' own presence read back.
    counts = microsoft_fresh and not microsoft.echo
    contribution = graph_import_contribution(microsoft.availability, microsoft.activity) if counts else None
    if contribution is not None:
        trace.append(
            RuleCheck("microsoft_presence", True, f"Microsoft reports {microsoft.availability}/{microsoft.activity}")
        )
        return decide(contribution[0], contribution[1], Reason.MICROSOFT_PRESENCE)
    trace.append(
        RuleCheck("microsoft_presence", False, _microsoft_note(policy, microsoft_allowed, microsoft, microsoft_fresh))
    )

    # Rule 5: every live device idle or hidden.
    if user_state == DeviceState.UNAVAILABLE:
        trace.append(RuleCheck("idle_or_hidden", True, "every live device is idle or hidden"))
        return decide(Status.AWAY, Activity.INACTIVE, Reason.ALL_DEVICES_IDLE_OR_HIDDEN)
    trace.append(RuleCheck("idle_or_hidden", False, "a device is active and visible"))

    # Rule 6.
    trace.append(RuleCheck("available", True, "a device is active"))
    return decide(Status.AVAILABLE, Activity.AVAILABLE, Reason.DEVICE_ACTIVE)


def _appear_offline_cap(manual: ManualInput, last_active: datetime | None) -> datetime | None:
    """ "Appear offline" must not leak activity after the user chose to hide it, also once every
    device is gone (otherwise last_active would jump forward when the last device times out)."""
    if manual.set_at is not None and last_active is not None:
        return min(last_active, manual.set_at)
    return last_active


def busy_time_end(blocks: Iterable[CalendarBlockInput], now: datetime) -> datetime | None:
    """The end of the calendar busy time in progress at `now`: of the blocks running now, and of
    every block that overlaps or touches them, carried on (two meetings back to back are busy
    until the second ends). None when no block is running."""
    blocks = sorted(blocks, key=lambda block: block.start)
    end = max((block.end for block in blocks if block.start <= now < block.end), default=None)
    if end is None:
        return None
    for block in blocks:
        if block.start <= end < block.end:
            end = block.end
    return end


def _manual_in_force(manual: ManualInput | None, now: datetime) -> bool:
    return manual is not None and (manual.until is None or now < manual.until)


def _next_time_change(
    inputs: PresenceInputs,
    now: datetime,
    calendar_allowed: bool,
    microsoft_allowed: bool,
    last_active: datetime | None,
) -> datetime | None:
    """The earliest future instant at which any time-driven predicate of `aggregate` flips.

    A superset is harmless (a recompute that changes nothing is cheap); a missed instant would
    leave a stale decision in place, so every timed comparison above has its instant here.
    """
    policy = inputs.policy
    candidates: list[datetime] = []
    for device in inputs.devices:
        if device.network != NetworkValue.OFFLINE:
            candidates.append(device.last_seen + policy.device_timeout)
        if device.last_active is not None:
            candidates.append(device.last_active + policy.idle_timeout)
    if inputs.manual is not None and inputs.manual.until is not None:
        candidates.append(inputs.manual.until)
    if calendar_allowed:
        for block in inputs.calendar:
            candidates.extend((block.start, block.end))
    if microsoft_allowed and inputs.microsoft is not None:
        candidates.append(inputs.microsoft.observed_at + policy.microsoft_max_age)
    if last_active is not None:
        candidates.append(last_active + CURRENTLY_ACTIVE_WINDOW)
    return min((t for t in candidates if t > now), default=None)


def _no_live_device_note(devices: Sequence[DeviceInput], now: datetime, policy: PolicyInput) -> str:
    timeout = int(policy.device_timeout.total_seconds())
    if not devices:
        return "no device is signed in"
    latest = max(devices, key=lambda d: d.last_seen)
    if all(d.network == NetworkValue.OFFLINE for d in devices):
        return "every device reported that its network is offline"
    ago = int((now - latest.last_seen).total_seconds())
    name = latest.label or latest.device_id[:8]
    return f"no device reported in the last {timeout} s (last: {name}, {ago} s ago)"


def _microsoft_note(policy: PolicyInput, allowed: bool, microsoft: MicrosoftInput | None, fresh: bool) -> str:
    if not allowed:
        return "not included (user preference)" if policy.allow_microsoft else "not allowed by the organization"
    if microsoft is None:
        return "nothing imported"
    if not fresh:
        return "imported presence is stale"
    if microsoft.echo:
        return f"Microsoft reports {microsoft.availability}/{microsoft.activity}, which SPARKS published itself"
    return f"Microsoft reports {microsoft.availability}/{microsoft.activity}, which adds nothing"
