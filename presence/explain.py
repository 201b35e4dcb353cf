"""Why is my status what it is? The engine's inputs and its rule-by-rule trace, in plain words.

`explain_user(user, now)` gathers the inputs exactly as `services.recompute` does (the hot store's
devices, `selectors.presence_context_for` for the rest), runs the same pure engine and shapes the
result as JSON-ready data: for `GET /api/v1/me/presence/explain` and for the admin. A read only:
nothing is stored or published, so explaining can never change anyone's presence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from orgs.models import User
from presence import engine, hot, selectors
from presence.engine import Decision, DeviceInput, PolicyInput, PresenceInputs
from presence.microsoft import graph_import_contribution
from presence.vocabulary import (
    Activity,
    ActivityValue,
    DeviceState,
    NetworkValue,
    Priority,
    Reason,
    VisibilityValue,
)

# The rules of `engine.aggregate`, in its order (calendar and manual swap with the priority).
RULE_DESCRIPTIONS: dict[str, str] = {
    "appear_offline": "The user chose to appear offline → offline, whatever else (if the organization allows it)",
    "device_liveness": "No live device → offline",
    "call_or_meeting": "A device in a SPARKS call or meeting → busy (manual do-not-disturb stays dnd)",
    "calendar_busy": "A calendar busy block now → busy",
    "manual_status": "The manual status, while it lasts",
    "microsoft_presence": "Fresh Microsoft presence Busy/InACall/InAMeeting → busy, DoNotDisturb → dnd",
    "idle_or_hidden": "Every live device idle or hidden → away",
    "available": "Otherwise → available",
}
NOT_REACHED = "not reached: an earlier rule decided"


def explain_user(user: User, now: datetime) -> dict[str, Any]:
    """The decision the engine makes for `user` at `now`, with its inputs and trace (JSON-ready)."""
    inputs, _ = selectors.presence_context_for(user, now)
    inputs = replace(inputs, devices=devices_as_seen(user))
    return explain(inputs, engine.aggregate(inputs, now), now)


def devices_as_seen(user: User) -> tuple[DeviceInput, ...]:
    """The user's devices as `services.recompute` hands them to the engine: the hot store's copy
    once it holds the user, else the database rows (which the next recompute loads into it)."""
    hot_user = hot.HotUser.parse(hot.store().read(user.pk))
    if hot_user.loaded:
        return tuple(device.engine_input() for device in hot_user.devices.values())
    return tuple(selectors.device_input(row) for row in selectors.devices_of(user))


def explain(inputs: PresenceInputs, decision: Decision, now: datetime) -> dict[str, Any]:
    """Shape a decision and what it was made of; pure (no database, no clock)."""
    priority = inputs.preferences.priority or inputs.policy.default_priority
    return {
        "status": decision.status.value,
        "activity": decision.activity.value,
        "reason": decision.reason.value,
        "status_msg": decision.status_msg,
        "currently_active": decision.currently_active,
        "summary": summary(inputs, decision, now),
        "evaluated_at": _iso(now),
        "valid_until": _iso(decision.valid_until),
        "inputs": {
            "devices": _devices(inputs, decision, now),
            "manual": _manual(inputs, now),
            "calendar": _calendar(inputs, now),
            "microsoft": _microsoft(inputs, now),
            "preferences": {
                "use_calendar_busy": inputs.preferences.use_calendar_busy,
                "include_microsoft_presence": inputs.preferences.include_microsoft_presence,
                "priority": inputs.preferences.priority.value if inputs.preferences.priority else None,
            },
            "policy": {
                "device_timeout_seconds": _seconds(inputs.policy.device_timeout),
                "idle_timeout_seconds": _seconds(inputs.policy.idle_timeout),
                "microsoft_max_age_seconds": _seconds(inputs.policy.microsoft_max_age),
                "allow_calendar": inputs.policy.allow_calendar,
                "allow_microsoft": inputs.policy.allow_microsoft,
                "allow_appear_offline": inputs.policy.allow_appear_offline,
                "default_priority": inputs.policy.default_priority.value,
            },
            "effective_priority": priority.value,
        },
        "rules": rules(decision, priority),
    }


def rules(decision: Decision, priority: Priority) -> list[dict[str, Any]]:
    """Every rule in the engine's order: those it evaluated with its note, the rest not reached."""
    middle = (
        ("calendar_busy", "manual_status")
        if priority == Priority.CALENDAR_FIRST
        else ("manual_status", "calendar_busy")
    )
    order = (
        "appear_offline",
        "device_liveness",
        "call_or_meeting",
        *middle,
        "microsoft_presence",
        "idle_or_hidden",
        "available",
    )
    checks = {check.rule: check for check in decision.trace}
    out = []
    for position, rule in enumerate(order, start=1):
        check = checks.get(rule)
        out.append(
            {
                "position": position,
                "rule": rule,
                "description": RULE_DESCRIPTIONS[rule],
                "evaluated": check is not None,
                "applied": check.applied if check is not None else False,
                "note": check.note if check is not None else NOT_REACHED,
            }
        )
    return out


# --- The one-line summary --------------------------------------------------------------------


def summary(inputs: PresenceInputs, decision: Decision, now: datetime) -> str:
    """E.g. "offline: no device reported in the last 120 s (last: laptop, 4 min ago)" and the like."""
    return f"{decision.status.value}: {_because(inputs, decision, now)}"


def _because(inputs: PresenceInputs, decision: Decision, now: datetime) -> str:
    policy = inputs.policy
    states = dict(decision.device_states)
    live = [
        d for d in _newest_first(inputs.devices) if states.get(d.device_id, DeviceState.OFFLINE) != DeviceState.OFFLINE
    ]
    reason = decision.reason
    if reason == Reason.APPEAR_OFFLINE:
        manual = inputs.manual
        until = f" for another {_duration(manual.until - now)}" if manual and manual.until else " (no end set)"
        return f"you chose to appear offline{until}: colleagues, Matrix and Teams see you offline"
    if reason == Reason.NO_LIVE_DEVICE:
        return _offline_because(inputs.devices, now, policy)
    if reason in (Reason.IN_CALL, Reason.IN_MEETING, Reason.MANUAL_DND_DURING_CALL):
        kind = "call" if decision.activity == Activity.IN_CALL else "meeting"
        busy = [d for d in live if (d.in_call if kind == "call" else d.in_meeting)]
        where = f"{_names(busy)} {'is' if len(busy) == 1 else 'are'} in a {kind}"
        if reason == Reason.MANUAL_DND_DURING_CALL:
            return f"{where}; the manual do not disturb stays"
        return where
    manual = _manual_in_force(inputs, now)
    in_block = _current_block(inputs, now)
    if reason == Reason.CALENDAR_BUSY:
        text = f"a calendar busy block ends in {_duration(in_block.end - now)}" if in_block else "a calendar busy block"
        if manual is not None:
            text += f"; calendar first, so it wins over the manual status {manual.status.value}"
        return text
    if reason == Reason.MANUAL_STATUS and manual is not None:
        text = "manual status"
        if manual.message:
            text += f' "{manual.message}"'
        text += f" for another {_duration(manual.until - now)}" if manual.until else " (no end set)"
        calendar_allowed = inputs.preferences.use_calendar_busy and policy.allow_calendar
        if in_block is not None and calendar_allowed:
            text += "; manual first, so it wins over the calendar busy block"
        return text
    if reason == Reason.MICROSOFT_PRESENCE and inputs.microsoft is not None:
        microsoft = inputs.microsoft
        age = _ago(now - microsoft.observed_at)
        return f"Microsoft reports {microsoft.availability}/{microsoft.activity} (imported {age})"
    if reason == Reason.ALL_DEVICES_IDLE_OR_HIDDEN:
        details = "; ".join(f"{_name(d)}: {_why_unavailable(d, now)}" for d in live)
        return f"every live device is idle or hidden ({details})"
    if reason == Reason.DEVICE_ACTIVE:
        active = [d for d in live if states.get(d.device_id) == DeviceState.ONLINE]
        latest = engine.latest_activity(active)
        verb = "is" if len(active) == 1 else "are"
        suffix = f" (last activity {_ago(now - latest)})" if latest is not None else ""
        return f"{_names(active)} {verb} active{suffix}"
    return reason.value  # a reason added to the engine and not worded here yet


def _offline_because(devices: Sequence[DeviceInput], now: datetime, policy: PolicyInput) -> str:
    if not devices:
        return "no device is signed in"
    if all(d.network == NetworkValue.OFFLINE for d in devices):
        return "every device reported that its network is offline"
    latest = max(devices, key=lambda d: d.last_seen)
    timeout = _seconds(policy.device_timeout)
    said_offline = ", which reported its network offline" if latest.network == NetworkValue.OFFLINE else ""
    return (
        f"no device reported in the last {timeout} s (last: {_name(latest)}, {_ago(now - latest.last_seen)}"
        f"{said_offline})"
    )


def _why_unavailable(device: DeviceInput, now: datetime) -> str:
    if device.visibility == VisibilityValue.HIDDEN:
        return "hidden"
    if device.activity == ActivityValue.IDLE or device.last_active is None:
        return "idle"
    return f"no activity for {_duration(now - device.last_active)}"


# --- Inputs ----------------------------------------------------------------------------------


def _devices(inputs: PresenceInputs, decision: Decision, now: datetime) -> list[dict[str, Any]]:
    states = dict(decision.device_states)
    rows = []
    for device in _newest_first(inputs.devices):
        rows.append(
            {
                "device_id": device.device_id,
                "label": device.label,
                "state": states.get(device.device_id, DeviceState.OFFLINE).value,
                "counted": engine.is_live(device, now, inputs.policy),
                "last_seen": _iso(device.last_seen),
                "age_seconds": _age(now, device.last_seen),
                "last_active": _iso(device.last_active),
                "last_active_age_seconds": _age(now, device.last_active),
                "activity": device.activity.value,
                "visibility": device.visibility.value,
                "in_call": device.in_call,
                "in_meeting": device.in_meeting,
                "network": device.network.value,
            }
        )
    return rows


def _manual(inputs: PresenceInputs, now: datetime) -> dict[str, Any] | None:
    manual = inputs.manual
    if manual is None:
        return None
    return {
        "status": manual.status.value,
        "message": manual.message,
        "until": _iso(manual.until),
        "set_at": _iso(manual.set_at),
        "in_force": manual.until is None or now < manual.until,
    }


def _calendar(inputs: PresenceInputs, now: datetime) -> dict[str, Any]:
    current = _current_block(inputs, now)
    return {
        "in_busy_block": current is not None,
        "current_block": {"start": _iso(current.start), "end": _iso(current.end)} if current else None,
        "upcoming_blocks": [
            {"start": _iso(block.start), "end": _iso(block.end)} for block in inputs.calendar if block.start > now
        ],
    }


def _microsoft(inputs: PresenceInputs, now: datetime) -> dict[str, Any] | None:
    microsoft = inputs.microsoft
    if microsoft is None:
        return None
    contribution = None if microsoft.echo else graph_import_contribution(microsoft.availability, microsoft.activity)
    return {
        "availability": microsoft.availability,
        "activity": microsoft.activity,
        "observed_at": _iso(microsoft.observed_at),
        "age_seconds": _age(now, microsoft.observed_at),
        "fresh": now < microsoft.observed_at + inputs.policy.microsoft_max_age,
        "contributes": contribution[0].value if contribution else None,
        "echo": microsoft.echo,
    }


def _manual_in_force(inputs: PresenceInputs, now: datetime) -> engine.ManualInput | None:
    manual = inputs.manual
    return manual if manual is not None and (manual.until is None or now < manual.until) else None


def _current_block(inputs: PresenceInputs, now: datetime) -> engine.CalendarBlockInput | None:
    return next((block for block in inputs.calendar if block.start <= now < block.end), None)


# --- Words and numbers -----------------------------------------------------------------------


def _newest_first(devices: Sequence[DeviceInput]) -> list[DeviceInput]:
    """The order devices are listed and named in: the latest to report first, then by label."""
    return sorted(devices, key=lambda d: (-d.last_seen.timestamp(), d.label, d.device_id))


def _name(device: DeviceInput) -> str:
    # The label the user gave, else the start of the pseudonymous id (as the engine's notes do).
    return device.label or device.device_id[:8]


def _names(devices: list[DeviceInput]) -> str:
    return ", ".join(_name(d) for d in devices) or "a device"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def _age(now: datetime, moment: datetime | None) -> int | None:
    return int((now - moment).total_seconds()) if moment is not None else None


def _duration(delta: timedelta) -> str:
    """A length of time as people say it: 45 s, 4 min, 3 h, 2 days (rounded down)."""
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _ago(delta: timedelta) -> str:
    return f"{_duration(delta)} ago"
