"""The presence engine, rule by rule, as the SPARKS manual describes it.

Pure tests: `aggregate(inputs, now)` only, no Django and no database. Every time is relative to
one fixed NOW, so "seen 30 s ago" in a test reads as it does in the manual.
"""

from __future__ import annotations

import ast
import importlib.util
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from presence.engine import (
    CalendarBlockInput,
    Decision,
    DeviceInput,
    ManualInput,
    MicrosoftInput,
    PolicyInput,
    PreferencesInput,
    PresenceInputs,
    aggregate,
    visible,
)
from presence.vocabulary import (
    Activity,
    ActivityValue,
    DeviceState,
    NetworkValue,
    Priority,
    Reason,
    Status,
    VisibilityValue,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
DEVICE_TIMEOUT = timedelta(seconds=120)
IDLE_TIMEOUT = timedelta(seconds=300)
MICROSOFT_MAX_AGE = timedelta(seconds=300)
POLICY = PolicyInput(
    device_timeout=DEVICE_TIMEOUT,
    idle_timeout=IDLE_TIMEOUT,
    microsoft_max_age=MICROSOFT_MAX_AGE,
)
CALENDAR_FIRST = Priority.CALENDAR_FIRST
MANUAL_FIRST = Priority.MANUAL_FIRST


# --- builders -------------------------------------------------------------------------------


def _delta(amount: float | timedelta) -> timedelta:
    return amount if isinstance(amount, timedelta) else timedelta(seconds=amount)


def ago(amount: float | timedelta) -> datetime:
    return NOW - _delta(amount)


def later(amount: float | timedelta) -> datetime:
    return NOW + _delta(amount)


def device(
    device_id: str = "laptop",
    *,
    seen_ago: float | timedelta = 0,
    active_ago: float | timedelta | None = 0,
    idle: bool = False,
    hidden: bool = False,
    in_call: bool = False,
    in_meeting: bool = False,
    network_offline: bool = False,
) -> DeviceInput:
    return DeviceInput(
        device_id=device_id,
        last_seen=ago(seen_ago),
        last_active=None if active_ago is None else ago(active_ago),
        activity=ActivityValue.IDLE if idle else ActivityValue.ACTIVE,
        visibility=VisibilityValue.HIDDEN if hidden else VisibilityValue.VISIBLE,
        in_call=in_call,
        in_meeting=in_meeting,
        network=NetworkValue.OFFLINE if network_offline else NetworkValue.ONLINE,
    )


def active_device(device_id: str = "laptop", **kwargs) -> DeviceInput:
    """Seen and active just now: on its own, the user is available."""
    return device(device_id, **kwargs)


def idle_device(device_id: str = "phone", **kwargs) -> DeviceInput:
    """Heartbeating, but reported `activity: idle`."""
    kwargs.setdefault("active_ago", 600)
    return device(device_id, idle=True, **kwargs)


def manual(
    status: Status,
    message: str = "",
    *,
    until_in: float | timedelta | None = None,
    set_ago: float | timedelta | None = None,
) -> ManualInput:
    return ManualInput(
        status=status,
        message=message,
        until=None if until_in is None else later(until_in),
        set_at=None if set_ago is None else ago(set_ago),
    )


def block(start_in: float | timedelta, end_in: float | timedelta) -> CalendarBlockInput:
    """A calendar busy block, relative to NOW (negative = in the past)."""
    return CalendarBlockInput(start=later(start_in), end=later(end_in))


def microsoft(
    availability: str, activity: str = "", *, age: float | timedelta = 0, echo: bool = False
) -> MicrosoftInput:
    return MicrosoftInput(availability=availability, activity=activity, observed_at=ago(age), echo=echo)


def inputs(
    *devices: DeviceInput,
    manual: ManualInput | None = None,
    calendar: tuple[CalendarBlockInput, ...] = (),
    microsoft: MicrosoftInput | None = None,
    use_calendar: bool = True,
    use_microsoft: bool = True,
    priority: Priority | None = None,
    policy: PolicyInput = POLICY,
) -> PresenceInputs:
    return PresenceInputs(
        devices=devices,
        manual=manual,
        calendar=calendar,
        microsoft=microsoft,
        preferences=PreferencesInput(
            use_calendar_busy=use_calendar,
            include_microsoft_presence=use_microsoft,
            priority=priority,
        ),
        policy=policy,
    )


def policy(**overrides) -> PolicyInput:
    values = {
        "device_timeout": DEVICE_TIMEOUT,
        "idle_timeout": IDLE_TIMEOUT,
        "microsoft_max_age": MICROSOFT_MAX_AGE,
    }
    values.update(overrides)
    return PolicyInput(**values)


def outcome(decision: Decision) -> tuple[Status, Activity, Reason]:
    return decision.status, decision.activity, decision.reason


AVAILABLE = (Status.AVAILABLE, Activity.AVAILABLE, Reason.DEVICE_ACTIVE)
AWAY_IDLE = (Status.AWAY, Activity.INACTIVE, Reason.ALL_DEVICES_IDLE_OR_HIDDEN)
OFFLINE = (Status.OFFLINE, Activity.OFFLINE, Reason.NO_LIVE_DEVICE)
IN_CALL = (Status.BUSY, Activity.IN_CALL, Reason.IN_CALL)
IN_MEETING = (Status.BUSY, Activity.IN_MEETING, Reason.IN_MEETING)
CALENDAR_BUSY = (Status.BUSY, Activity.IN_CALENDAR_EVENT, Reason.CALENDAR_BUSY)
MICROSOFT_BUSY = (Status.BUSY, Activity.BUSY, Reason.MICROSOFT_PRESENCE)
MICROSOFT_IN_CALL = (Status.BUSY, Activity.IN_CALL, Reason.MICROSOFT_PRESENCE)
MICROSOFT_IN_MEETING = (Status.BUSY, Activity.IN_MEETING, Reason.MICROSOFT_PRESENCE)
MICROSOFT_DND = (Status.DND, Activity.DO_NOT_DISTURB, Reason.MICROSOFT_PRESENCE)
MANUAL = {
    Status.AVAILABLE: (Status.AVAILABLE, Activity.AVAILABLE, Reason.MANUAL_STATUS),
    Status.BUSY: (Status.BUSY, Activity.BUSY, Reason.MANUAL_STATUS),
    Status.AWAY: (Status.AWAY, Activity.AWAY, Reason.MANUAL_STATUS),
    Status.DND: (Status.DND, Activity.DO_NOT_DISTURB, Reason.MANUAL_STATUS),
}
APPEAR_OFFLINE = (Status.OFFLINE, Activity.OFFLINE, Reason.APPEAR_OFFLINE)


# --- rule 0: "appear offline", a privacy choice that wins over everything -----------------------

NO_APPEAR_OFFLINE = policy(allow_appear_offline=False)


@pytest.mark.parametrize(
    "presence",
    [
        pytest.param(inputs(active_device(), manual=manual(Status.OFFLINE)), id="with-an-active-device"),
        pytest.param(inputs(manual=manual(Status.OFFLINE)), id="with-no-device"),
        pytest.param(inputs(active_device(in_call=True), manual=manual(Status.OFFLINE)), id="in-a-call"),
        pytest.param(inputs(active_device(in_meeting=True), manual=manual(Status.OFFLINE)), id="in-a-meeting"),
        pytest.param(
            inputs(active_device(), manual=manual(Status.OFFLINE), calendar=(block(-60, 60),), priority=CALENDAR_FIRST),
            id="in-a-calendar-block-calendar-first",
        ),
        pytest.param(
            inputs(active_device(), manual=manual(Status.OFFLINE), microsoft=microsoft("Busy", "InACall")),
            id="microsoft-in-a-call",
        ),
        pytest.param(
            inputs(active_device(), manual=manual(Status.OFFLINE), microsoft=microsoft("DoNotDisturb")),
            id="microsoft-dnd",
        ),
    ],
)
def test_appearing_offline_shows_offline_whatever_else_holds(presence):
    decision = aggregate(presence, NOW)

    assert outcome(decision) == APPEAR_OFFLINE
    assert [check.rule for check in decision.trace] == ["appear_offline"]


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        pytest.param(inputs(active_device(), manual=manual(Status.OFFLINE), policy=NO_APPEAR_OFFLINE), AVAILABLE),
        pytest.param(
            inputs(active_device(in_call=True), manual=manual(Status.OFFLINE), policy=NO_APPEAR_OFFLINE), IN_CALL
        ),
        pytest.param(inputs(manual=manual(Status.OFFLINE), policy=NO_APPEAR_OFFLINE), OFFLINE),
    ],
    ids=["active-device", "in-a-call", "no-device"],
)
def test_an_organization_that_forbids_appearing_offline_makes_an_existing_choice_stop_applying(presence, expected):
    decision = aggregate(presence, NOW)

    assert outcome(decision) == expected
    assert decision.status_msg is None
    assert decision.trace[0].note == "not allowed by the organization"


def test_appearing_offline_keeps_the_message_and_hides_activity_after_it_was_chosen():
    presence = inputs(active_device(active_ago=5), manual=manual(Status.OFFLINE, "On leave", set_ago=600))

    decision = aggregate(presence, NOW)

    assert (decision.status_msg, decision.last_active, decision.currently_active) == ("On leave", ago(600), False)


def test_appearing_offline_ends_when_its_time_is_up():
    presence = inputs(active_device(in_call=True), manual=manual(Status.OFFLINE, until_in=60))

    assert outcome(aggregate(presence, NOW)) == APPEAR_OFFLINE
    assert aggregate(presence, NOW).valid_until <= later(60)
    assert outcome(aggregate(presence, later(60))) == IN_CALL


# --- rule 1: device liveness ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        pytest.param(inputs(), OFFLINE, id="no-device-signed-in-is-offline"),
        pytest.param(inputs(active_device(seen_ago=0)), AVAILABLE, id="device-seen-just-now-is-live"),
        pytest.param(
            inputs(active_device(seen_ago=DEVICE_TIMEOUT - US, active_ago=DEVICE_TIMEOUT - US)),
            AVAILABLE,
            id="device-seen-1us-inside-the-device-timeout-is-live",
        ),
        pytest.param(
            inputs(active_device(seen_ago=DEVICE_TIMEOUT, active_ago=DEVICE_TIMEOUT)),
            OFFLINE,
            id="device-seen-exactly-device-timeout-ago-is-offline",
        ),
        pytest.param(
            inputs(active_device(seen_ago=3600, active_ago=3600)), OFFLINE, id="device-silent-for-an-hour-is-offline"
        ),
        pytest.param(
            inputs(active_device(network_offline=True)),
            OFFLINE,
            id="device-that-reported-network-offline-is-offline-even-if-just-seen",
        ),
        pytest.param(
            inputs(active_device("laptop", network_offline=True), active_device("phone", network_offline=True)),
            OFFLINE,
            id="every-device-network-offline-is-offline",
        ),
        pytest.param(
            inputs(active_device("laptop", network_offline=True), idle_device("phone")),
            AWAY_IDLE,
            id="network-offline-device-does-not-count-other-live-device-decides",
        ),
        pytest.param(
            inputs(active_device(seen_ago=60), policy=policy(device_timeout=timedelta(seconds=30))),
            OFFLINE,
            id="organization-device-timeout-is-used",
        ),
        pytest.param(
            inputs(active_device("laptop", seen_ago=500, active_ago=500), active_device("phone", seen_ago=10)),
            AVAILABLE,
            id="one-live-device-is-enough",
        ),
    ],
)
def test_liveness(presence, expected):
    assert outcome(aggregate(presence, NOW)) == expected


@pytest.mark.parametrize(
    "presence",
    [
        pytest.param(inputs(manual=manual(Status.AVAILABLE)), id="manual-available"),
        pytest.param(inputs(manual=manual(Status.BUSY)), id="manual-busy"),
        pytest.param(inputs(manual=manual(Status.DND)), id="manual-dnd"),
        pytest.param(inputs(calendar=(block(-60, 60),)), id="calendar-busy-block"),
        pytest.param(inputs(microsoft=microsoft("DoNotDisturb", "DoNotDisturb")), id="microsoft-dnd"),
        pytest.param(inputs(active_device(seen_ago=DEVICE_TIMEOUT, in_call=True)), id="call-on-a-timed-out-device"),
        pytest.param(
            inputs(active_device(in_meeting=True, network_offline=True)), id="meeting-on-a-network-offline-device"
        ),
    ],
)
def test_no_live_device_is_offline_whatever_else_is_set(presence):
    assert outcome(aggregate(presence, NOW)) == OFFLINE


def test_manual_status_survives_being_offline_and_applies_again_when_a_device_comes_back():
    status = manual(Status.BUSY, "Writing the report")
    gone = aggregate(inputs(active_device(seen_ago=600, active_ago=600), manual=status), NOW)
    back = aggregate(inputs(active_device(seen_ago=0), manual=status), NOW)
    assert outcome(gone) == OFFLINE
    assert gone.status_msg == "Writing the report"
    assert outcome(back) == MANUAL[Status.BUSY]
    assert back.status_msg == "Writing the report"


# --- the four Synapse multi-device cases ----------------------------------------------------


def test_synapse_a_two_devices_reporting_one_online_one_idle_is_available():
    for minutes in (0, 5, 10, 30):
        t = NOW + timedelta(minutes=minutes)
        online = DeviceInput("laptop", last_seen=t, last_active=t)
        idle = DeviceInput("phone", last_seen=t, last_active=NOW - timedelta(hours=1), activity=ActivityValue.IDLE)
        decision = aggregate(inputs(online, idle), t)
        assert outcome(decision) == AVAILABLE, minutes
        assert dict(decision.device_states) == {"laptop": DeviceState.ONLINE, "phone": DeviceState.UNAVAILABLE}


def test_synapse_b_heartbeating_device_without_new_activity_goes_away_after_the_idle_timeout():
    def heartbeat_at(t: datetime) -> PresenceInputs:
        return inputs(DeviceInput("laptop", last_seen=t, last_active=NOW))

    assert outcome(aggregate(heartbeat_at(NOW), NOW)) == AVAILABLE
    just_before = NOW + IDLE_TIMEOUT - US
    assert outcome(aggregate(heartbeat_at(just_before), just_before)) == AVAILABLE
    at_timeout = NOW + IDLE_TIMEOUT
    assert outcome(aggregate(heartbeat_at(at_timeout), at_timeout)) == AWAY_IDLE
    much_later = NOW + timedelta(hours=2)
    assert outcome(aggregate(heartbeat_at(much_later), much_later)) == AWAY_IDLE


def test_synapse_c_device_that_stops_reporting_is_offline_after_the_device_timeout():
    presence = inputs(DeviceInput("laptop", last_seen=NOW, last_active=NOW))
    assert outcome(aggregate(presence, NOW)) == AVAILABLE
    assert outcome(aggregate(presence, NOW + DEVICE_TIMEOUT - US)) == AVAILABLE
    assert outcome(aggregate(presence, NOW + DEVICE_TIMEOUT)) == OFFLINE


def test_synapse_d_online_device_stops_reporting_and_the_idle_one_left_makes_the_user_away():
    def at(t: datetime) -> PresenceInputs:
        online_stopped = DeviceInput("laptop", last_seen=NOW, last_active=NOW)
        idle_reporting = DeviceInput(
            "phone", last_seen=t, last_active=NOW - timedelta(hours=1), activity=ActivityValue.IDLE
        )
        return inputs(online_stopped, idle_reporting)

    assert outcome(aggregate(at(NOW), NOW)) == AVAILABLE
    just_before = NOW + DEVICE_TIMEOUT - US
    assert outcome(aggregate(at(just_before), just_before)) == AVAILABLE
    at_timeout = NOW + DEVICE_TIMEOUT
    decision = aggregate(at(at_timeout), at_timeout)
    assert outcome(decision) == AWAY_IDLE
    assert dict(decision.device_states) == {"laptop": DeviceState.OFFLINE, "phone": DeviceState.UNAVAILABLE}


# --- device coalescing ----------------------------------------------------------------------

STATE_DEVICES = {
    DeviceState.BUSY: lambda name: device(name, in_call=True),
    DeviceState.ONLINE: lambda name: device(name),
    DeviceState.UNAVAILABLE: lambda name: device(name, idle=True),
    DeviceState.OFFLINE: lambda name: device(name, seen_ago=3600, active_ago=3600),
}
STATE_OUTCOME = {
    DeviceState.BUSY: IN_CALL,
    DeviceState.ONLINE: AVAILABLE,
    DeviceState.UNAVAILABLE: AWAY_IDLE,
    DeviceState.OFFLINE: OFFLINE,
}


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        pytest.param(DeviceState.BUSY, DeviceState.ONLINE, DeviceState.BUSY, id="busy-beats-online"),
        pytest.param(DeviceState.BUSY, DeviceState.UNAVAILABLE, DeviceState.BUSY, id="busy-beats-unavailable"),
        pytest.param(DeviceState.OFFLINE, DeviceState.BUSY, DeviceState.BUSY, id="busy-beats-offline"),
        pytest.param(DeviceState.UNAVAILABLE, DeviceState.ONLINE, DeviceState.ONLINE, id="online-beats-unavailable"),
        pytest.param(DeviceState.OFFLINE, DeviceState.ONLINE, DeviceState.ONLINE, id="online-beats-offline"),
        pytest.param(
            DeviceState.OFFLINE, DeviceState.UNAVAILABLE, DeviceState.UNAVAILABLE, id="unavailable-beats-offline"
        ),
        pytest.param(DeviceState.OFFLINE, DeviceState.OFFLINE, DeviceState.OFFLINE, id="offline-and-offline"),
    ],
)
def test_devices_coalesce_busy_over_online_over_unavailable_over_offline(first, second, winner):
    decision = aggregate(inputs(STATE_DEVICES[first]("a"), STATE_DEVICES[second]("b")), NOW)
    assert decision.device_states == (("a", first), ("b", second))
    assert outcome(decision) == STATE_OUTCOME[winner]


# --- rule 2: SPARKS calls and meetings ------------------------------------------------------


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        pytest.param(inputs(active_device(in_call=True)), IN_CALL, id="device-in-a-call-is-busy-in-call"),
        pytest.param(inputs(active_device(in_meeting=True)), IN_MEETING, id="device-in-a-meeting-is-busy-in-meeting"),
        pytest.param(
            inputs(active_device(in_call=True, in_meeting=True)), IN_CALL, id="call-and-meeting-on-one-device-is-a-call"
        ),
        pytest.param(
            inputs(active_device("laptop", in_meeting=True), active_device("phone", in_call=True)),
            IN_CALL,
            id="one-device-in-a-meeting-another-in-a-call-is-a-call",
        ),
        pytest.param(
            inputs(active_device("laptop", in_meeting=True), active_device("phone", seen_ago=600, in_call=True)),
            IN_MEETING,
            id="call-on-a-timed-out-device-does-not-count",
        ),
        pytest.param(
            inputs(active_device("laptop", in_call=True), idle_device("phone")),
            IN_CALL,
            id="call-on-one-device-beats-an-idle-device",
        ),
        pytest.param(
            inputs(active_device(in_call=True, active_ago=3600)),
            IN_CALL,
            id="device-in-a-call-never-idles",
        ),
        pytest.param(
            inputs(active_device(in_call=True, idle=True)),
            IN_CALL,
            id="device-in-a-call-that-reported-idle-is-still-in-the-call",
        ),
        pytest.param(inputs(active_device(in_meeting=True, hidden=True)), IN_MEETING, id="hidden-device-in-a-meeting"),
        pytest.param(
            inputs(active_device(in_call=True), calendar=(block(-60, 60),)),
            IN_CALL,
            id="call-beats-calendar-busy",
        ),
        pytest.param(
            inputs(
                active_device(in_call=True),
                calendar=(block(-60, 60),),
                priority=MANUAL_FIRST,
                manual=manual(Status.AVAILABLE),
            ),
            IN_CALL,
            id="call-beats-calendar-and-manual-available",
        ),
        pytest.param(
            inputs(active_device(in_call=True), manual=manual(Status.AWAY)), IN_CALL, id="call-beats-manual-away"
        ),
        pytest.param(
            inputs(active_device(in_call=True), manual=manual(Status.OFFLINE)),
            APPEAR_OFFLINE,
            id="appear-offline-beats-a-call",
        ),
        pytest.param(
            inputs(active_device(in_meeting=True), microsoft=microsoft("DoNotDisturb", "DoNotDisturb")),
            IN_MEETING,
            id="meeting-beats-microsoft-dnd",
        ),
    ],
)
def test_call_or_meeting(presence, expected):
    assert outcome(aggregate(presence, NOW)) == expected


@pytest.mark.parametrize(
    ("flag", "activity"),
    [
        pytest.param("in_call", Activity.IN_CALL, id="call"),
        pytest.param("in_meeting", Activity.IN_MEETING, id="meeting"),
    ],
)
def test_manual_dnd_is_never_weakened_to_busy_during_a_call_or_meeting(flag, activity):
    decision = aggregate(inputs(active_device(**{flag: True}), manual=manual(Status.DND, "Focus")), NOW)
    assert outcome(decision) == (Status.DND, activity, Reason.MANUAL_DND_DURING_CALL)
    assert decision.status_msg == "Focus"


def test_expired_manual_dnd_during_a_call_is_plain_busy():
    decision = aggregate(inputs(active_device(in_call=True), manual=manual(Status.DND, until_in=-1)), NOW)
    assert outcome(decision) == IN_CALL
    assert decision.status_msg is None


# --- rule 3: calendar busy and manual status, in the user's priority order ------------------

MANUALS = {
    "no-manual": None,
    "manual-expired": manual(Status.DND, "old", until_in=-1),
    "manual-available": manual(Status.AVAILABLE, until_in=3600),
    "manual-busy": manual(Status.BUSY),
    "manual-away": manual(Status.AWAY),
    "manual-dnd": manual(Status.DND),
    "manual-offline": manual(Status.OFFLINE),
}
CALENDARS = {"calendar-busy": (block(-600, 600),), "calendar-free": (block(600, 1200),)}


def _priority_case(priority: Priority, calendar: str, manual_name: str, expected):
    return pytest.param(priority, calendar, manual_name, expected, id=f"{priority.value}-{calendar}-{manual_name}")


PRIORITY_TABLE = [
    # calendar_first: a busy block in progress beats any manual status.
    _priority_case(CALENDAR_FIRST, "calendar-busy", "no-manual", CALENDAR_BUSY),
    _priority_case(CALENDAR_FIRST, "calendar-busy", "manual-expired", CALENDAR_BUSY),
    _priority_case(CALENDAR_FIRST, "calendar-busy", "manual-available", CALENDAR_BUSY),
    _priority_case(CALENDAR_FIRST, "calendar-busy", "manual-busy", CALENDAR_BUSY),
    _priority_case(CALENDAR_FIRST, "calendar-busy", "manual-away", CALENDAR_BUSY),
    _priority_case(CALENDAR_FIRST, "calendar-busy", "manual-dnd", CALENDAR_BUSY),
    # "appear offline" wins in either order: a privacy choice, not a status among others.
    _priority_case(CALENDAR_FIRST, "calendar-busy", "manual-offline", APPEAR_OFFLINE),
    # calendar_first, no block in progress: the manual status, else the devices.
    _priority_case(CALENDAR_FIRST, "calendar-free", "no-manual", AVAILABLE),
    _priority_case(CALENDAR_FIRST, "calendar-free", "manual-expired", AVAILABLE),
    _priority_case(CALENDAR_FIRST, "calendar-free", "manual-available", MANUAL[Status.AVAILABLE]),
    _priority_case(CALENDAR_FIRST, "calendar-free", "manual-busy", MANUAL[Status.BUSY]),
    _priority_case(CALENDAR_FIRST, "calendar-free", "manual-away", MANUAL[Status.AWAY]),
    _priority_case(CALENDAR_FIRST, "calendar-free", "manual-dnd", MANUAL[Status.DND]),
    _priority_case(CALENDAR_FIRST, "calendar-free", "manual-offline", APPEAR_OFFLINE),
    # manual_first: a manual status in force beats a busy block.
    _priority_case(MANUAL_FIRST, "calendar-busy", "no-manual", CALENDAR_BUSY),
    _priority_case(MANUAL_FIRST, "calendar-busy", "manual-expired", CALENDAR_BUSY),
    _priority_case(MANUAL_FIRST, "calendar-busy", "manual-available", MANUAL[Status.AVAILABLE]),
    _priority_case(MANUAL_FIRST, "calendar-busy", "manual-busy", MANUAL[Status.BUSY]),
    _priority_case(MANUAL_FIRST, "calendar-busy", "manual-away", MANUAL[Status.AWAY]),
    _priority_case(MANUAL_FIRST, "calendar-busy", "manual-dnd", MANUAL[Status.DND]),
    _priority_case(MANUAL_FIRST, "calendar-busy", "manual-offline", APPEAR_OFFLINE),
    # manual_first, no block in progress.
    _priority_case(MANUAL_FIRST, "calendar-free", "no-manual", AVAILABLE),
    _priority_case(MANUAL_FIRST, "calendar-free", "manual-expired", AVAILABLE),
    _priority_case(MANUAL_FIRST, "calendar-free", "manual-available", MANUAL[Status.AVAILABLE]),
    _priority_case(MANUAL_FIRST, "calendar-free", "manual-busy", MANUAL[Status.BUSY]),
    _priority_case(MANUAL_FIRST, "calendar-free", "manual-away", MANUAL[Status.AWAY]),
    _priority_case(MANUAL_FIRST, "calendar-free", "manual-dnd", MANUAL[Status.DND]),
    _priority_case(MANUAL_FIRST, "calendar-free", "manual-offline", APPEAR_OFFLINE),
]
OTHER_PRIORITY = {CALENDAR_FIRST: MANUAL_FIRST, MANUAL_FIRST: CALENDAR_FIRST}


@pytest.mark.parametrize("priority_source", ["user-priority", "org-default-when-user-priority-is-none"])
@pytest.mark.parametrize(("priority", "calendar", "manual_name", "expected"), PRIORITY_TABLE)
def test_calendar_and_manual_status_in_priority_order(priority_source, priority, calendar, manual_name, expected):
    if priority_source == "user-priority":
        # The user's own choice wins over an organization default that says the opposite.
        user_priority, org_default = priority, OTHER_PRIORITY[priority]
    else:
        user_priority, org_default = None, priority
    presence = inputs(
        active_device(),
        manual=MANUALS[manual_name],
        calendar=CALENDARS[calendar],
        priority=user_priority,
        policy=policy(default_priority=org_default),
    )
    assert outcome(aggregate(presence, NOW)) == expected


@pytest.mark.parametrize(
    ("use_calendar", "allow_calendar", "expected"),
    [
        pytest.param(True, True, CALENDAR_BUSY, id="preference-on-policy-allows-calendar-busy"),
        pytest.param(False, True, AVAILABLE, id="preference-off-calendar-ignored"),
        pytest.param(True, False, AVAILABLE, id="policy-forbids-calendar-ignored"),
        pytest.param(False, False, AVAILABLE, id="both-off-calendar-ignored"),
    ],
)
def test_calendar_busy_needs_the_user_preference_and_the_org_policy(use_calendar, allow_calendar, expected):
    presence = inputs(
        active_device(),
        calendar=(block(-60, 60),),
        use_calendar=use_calendar,
        policy=policy(allow_calendar=allow_calendar),
    )
    assert outcome(aggregate(presence, NOW)) == expected


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        pytest.param((block(0, 1800),), CALENDAR_BUSY, id="block-starting-exactly-now-is-busy"),
        pytest.param((block(-1800, 0),), AVAILABLE, id="block-ending-exactly-now-is-over"),
        pytest.param((block(-1800, US),), CALENDAR_BUSY, id="block-ending-1us-from-now-is-busy"),
        pytest.param((block(US, 1800),), AVAILABLE, id="block-starting-1us-from-now-is-not-yet-busy"),
        pytest.param((block(-7200, -3600), block(3600, 7200)), AVAILABLE, id="between-two-blocks-is-free"),
        pytest.param((block(-7200, -3600), block(-60, 60)), CALENDAR_BUSY, id="any-block-in-progress-is-busy"),
        pytest.param((), AVAILABLE, id="empty-calendar"),
    ],
)
def test_calendar_block_boundaries(blocks, expected):
    assert outcome(aggregate(inputs(active_device(), calendar=blocks), NOW)) == expected


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        pytest.param(
            inputs(idle_device(), manual=manual(Status.AVAILABLE)),
            MANUAL[Status.AVAILABLE],
            id="manual-available-beats-idle-devices",
        ),
        pytest.param(
            inputs(idle_device(), calendar=(block(-60, 60),)), CALENDAR_BUSY, id="calendar-busy-beats-idle-devices"
        ),
        pytest.param(
            inputs(active_device(), manual=manual(Status.BUSY, until_in=US)),
            MANUAL[Status.BUSY],
            id="manual-status-in-force-until-1us-before-until",
        ),
        pytest.param(
            inputs(active_device(), manual=manual(Status.BUSY, until_in=0)),
            AVAILABLE,
            id="manual-status-expires-exactly-at-until",
        ),
        pytest.param(
            inputs(active_device(), manual=manual(Status.AWAY, until_in=None)),
            MANUAL[Status.AWAY],
            id="manual-status-without-until-never-expires",
        ),
    ],
)
def test_manual_status(presence, expected):
    assert outcome(aggregate(presence, NOW)) == expected


# --- rule 4: Microsoft imported presence ----------------------------------------------------


@pytest.mark.parametrize(
    ("availability", "activity", "expected"),
    [
        pytest.param("Busy", "Busy", MICROSOFT_BUSY, id="Busy-is-busy"),
        pytest.param("Busy", "InACall", MICROSOFT_IN_CALL, id="InACall-is-busy-in-call"),
        pytest.param("Busy", "InAMeeting", MICROSOFT_IN_MEETING, id="InAMeeting-is-busy-in-meeting"),
        pytest.param("DoNotDisturb", "DoNotDisturb", MICROSOFT_DND, id="DoNotDisturb-is-dnd"),
        pytest.param("Busy", "", MICROSOFT_BUSY, id="Busy-availability-alone-is-busy"),
        pytest.param("", "InACall", MICROSOFT_IN_CALL, id="InACall-activity-alone-is-busy"),
        pytest.param("DoNotDisturb", "", MICROSOFT_DND, id="DoNotDisturb-availability-alone-is-dnd"),
        pytest.param("busy", "inacall", MICROSOFT_IN_CALL, id="lowercase-is-understood"),
        pytest.param("BUSY", "INAMEETING", MICROSOFT_IN_MEETING, id="uppercase-is-understood"),
        pytest.param("dOnOtDiStUrB", "", MICROSOFT_DND, id="mixed-case-is-understood"),
        pytest.param("Available", "Available", AVAILABLE, id="Available-changes-nothing"),
        pytest.param("Away", "Away", AVAILABLE, id="Away-changes-nothing"),
        pytest.param("BeRightBack", "BeRightBack", AVAILABLE, id="BeRightBack-changes-nothing"),
        pytest.param("Offline", "OffWork", AVAILABLE, id="Offline-changes-nothing"),
        pytest.param("PresenceUnknown", "", AVAILABLE, id="PresenceUnknown-changes-nothing"),
        pytest.param("SomethingNew", "NewActivity", AVAILABLE, id="unknown-values-contribute-nothing"),
        pytest.param("", "", AVAILABLE, id="empty-values-contribute-nothing"),
    ],
)
def test_microsoft_presence_only_adds_busy_or_dnd(availability, activity, expected):
    presence = inputs(active_device(), microsoft=microsoft(availability, activity))
    assert outcome(aggregate(presence, NOW)) == expected


@pytest.mark.parametrize(
    ("availability", "activity"),
    [
        pytest.param("Available", "Available", id="Available"),
        pytest.param("Away", "Away", id="Away"),
        pytest.param("SomethingNew", "", id="unknown"),
    ],
)
def test_microsoft_available_or_away_does_not_make_an_idle_user_available(availability, activity):
    presence = inputs(idle_device(), microsoft=microsoft(availability, activity))
    assert outcome(aggregate(presence, NOW)) == AWAY_IDLE


@pytest.mark.parametrize(
    ("use_microsoft", "allow_microsoft", "expected"),
    [
        pytest.param(True, True, MICROSOFT_BUSY, id="preference-on-policy-allows-microsoft-busy"),
        pytest.param(False, True, AVAILABLE, id="preference-off-microsoft-ignored"),
        pytest.param(True, False, AVAILABLE, id="policy-forbids-microsoft-ignored"),
        pytest.param(False, False, AVAILABLE, id="both-off-microsoft-ignored"),
    ],
)
def test_microsoft_presence_needs_the_user_preference_and_the_org_policy(use_microsoft, allow_microsoft, expected):
    presence = inputs(
        active_device(),
        microsoft=microsoft("Busy", "Busy"),
        use_microsoft=use_microsoft,
        policy=policy(allow_microsoft=allow_microsoft),
    )
    assert outcome(aggregate(presence, NOW)) == expected


@pytest.mark.parametrize(
    ("age", "max_age", "expected"),
    [
        pytest.param(0, MICROSOFT_MAX_AGE, MICROSOFT_DND, id="just-observed-is-fresh"),
        pytest.param(MICROSOFT_MAX_AGE - US, MICROSOFT_MAX_AGE, MICROSOFT_DND, id="1us-inside-max-age-is-fresh"),
        pytest.param(MICROSOFT_MAX_AGE, MICROSOFT_MAX_AGE, AVAILABLE, id="exactly-max-age-old-is-stale"),
        pytest.param(3600, MICROSOFT_MAX_AGE, AVAILABLE, id="an-hour-old-is-stale"),
        pytest.param(600, timedelta(seconds=900), MICROSOFT_DND, id="organization-max-age-is-used"),
    ],
)
def test_stale_microsoft_presence_is_ignored(age, max_age, expected):
    presence = inputs(
        active_device(),
        microsoft=microsoft("DoNotDisturb", "DoNotDisturb", age=age),
        policy=policy(microsoft_max_age=max_age),
    )
    assert outcome(aggregate(presence, NOW)) == expected


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        pytest.param(
            inputs(idle_device(), microsoft=microsoft("Busy", "InAMeeting")),
            MICROSOFT_IN_MEETING,
            id="microsoft-busy-beats-idle-devices",
        ),
        pytest.param(
            inputs(active_device(), manual=manual(Status.AVAILABLE), microsoft=microsoft("Busy", "InACall")),
            MANUAL[Status.AVAILABLE],
            id="manual-status-beats-microsoft",
        ),
        pytest.param(
            inputs(active_device(), manual=manual(Status.BUSY, until_in=-1), microsoft=microsoft("Busy", "InACall")),
            MICROSOFT_IN_CALL,
            id="expired-manual-status-lets-microsoft-through",
        ),
        pytest.param(
            inputs(active_device(), calendar=(block(-60, 60),), microsoft=microsoft("DoNotDisturb", "DoNotDisturb")),
            CALENDAR_BUSY,
            id="calendar-busy-beats-microsoft",
        ),
        pytest.param(
            inputs(active_device(in_call=True), microsoft=microsoft("DoNotDisturb", "DoNotDisturb")),
            IN_CALL,
            id="sparks-call-beats-microsoft",
        ),
        pytest.param(
            inputs(active_device(seen_ago=600), microsoft=microsoft("Busy", "InACall")),
            OFFLINE,
            id="microsoft-does-not-make-an-offline-user-present",
        ),
    ],
)
def test_microsoft_presence_in_the_rule_order(presence, expected):
    assert outcome(aggregate(presence, NOW)) == expected


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        pytest.param(active_device(), AVAILABLE, id="active-device-available"),
        pytest.param(idle_device(), AWAY_IDLE, id="idle-device-away"),
    ],
)
def test_sparks_own_presence_read_back_from_microsoft_adds_nothing(device, expected):
    presence = inputs(device, microsoft=microsoft("DoNotDisturb", "DoNotDisturb", echo=True))

    decision = aggregate(presence, NOW)

    assert outcome(decision) == expected
    (check,) = [c for c in decision.trace if c.rule == "microsoft_presence"]
    assert check.note == "Microsoft reports DoNotDisturb/DoNotDisturb, which SPARKS published itself"


# --- rule 5 and 6: idle, hidden, available --------------------------------------------------


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        pytest.param(inputs(active_device()), AVAILABLE, id="active-visible-device-is-available"),
        pytest.param(inputs(active_device(idle=True)), AWAY_IDLE, id="device-reporting-idle-is-away"),
        pytest.param(inputs(active_device(hidden=True)), AWAY_IDLE, id="hidden-device-is-away"),
        pytest.param(
            inputs(active_device(active_ago=None)), AWAY_IDLE, id="heartbeat-only-device-never-active-is-away"
        ),
        pytest.param(
            inputs(active_device(active_ago=IDLE_TIMEOUT - US)),
            AVAILABLE,
            id="activity-1us-inside-the-idle-timeout-is-available",
        ),
        pytest.param(
            inputs(active_device(active_ago=IDLE_TIMEOUT)),
            AWAY_IDLE,
            id="activity-exactly-idle-timeout-ago-is-away",
        ),
        pytest.param(
            inputs(active_device(active_ago=60), policy=policy(idle_timeout=timedelta(seconds=30))),
            AWAY_IDLE,
            id="organization-idle-timeout-is-used",
        ),
        pytest.param(
            inputs(active_device("laptop", idle=True), active_device("phone", hidden=True)),
            AWAY_IDLE,
            id="every-live-device-idle-or-hidden-is-away",
        ),
        pytest.param(
            inputs(active_device("laptop", idle=True), active_device("phone")),
            AVAILABLE,
            id="one-active-visible-device-is-enough-for-available",
        ),
        pytest.param(
            inputs(active_device("laptop", hidden=True), active_device("phone")),
            AVAILABLE,
            id="hidden-device-plus-visible-active-device-is-available",
        ),
        pytest.param(
            inputs(active_device("laptop", idle=True), active_device("phone", seen_ago=600, active_ago=600)),
            AWAY_IDLE,
            id="timed-out-device-does-not-count-as-active",
        ),
    ],
)
def test_idle_hidden_and_available(presence, expected):
    assert outcome(aggregate(presence, NOW)) == expected


# --- last_active, currently_active, status_msg ----------------------------------------------


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        pytest.param(inputs(), None, id="no-device-no-last-active"),
        pytest.param(inputs(active_device(active_ago=None)), None, id="never-active-no-last-active"),
        pytest.param(inputs(active_device(active_ago=42)), ago(42), id="one-device"),
        pytest.param(
            inputs(active_device("laptop", active_ago=300), active_device("phone", active_ago=30)),
            ago(30),
            id="latest-of-all-devices",
        ),
        pytest.param(
            inputs(idle_device("laptop", active_ago=900), active_device("phone", seen_ago=200, active_ago=200)),
            ago(200),
            id="timed-out-device-activity-still-counts",
        ),
        pytest.param(
            inputs(idle_device("laptop", active_ago=900), active_device("phone", network_offline=True, active_ago=5)),
            ago(5),
            id="network-offline-device-activity-still-counts",
        ),
        pytest.param(
            inputs(active_device(seen_ago=3600, active_ago=3600)), ago(3600), id="offline-user-keeps-last-active"
        ),
    ],
)
def test_last_active_is_the_latest_activity_of_any_device(presence, expected):
    assert aggregate(presence, NOW).last_active == expected


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        pytest.param(inputs(active_device(active_ago=0)), True, id="available-and-active-now"),
        pytest.param(inputs(active_device(active_ago=timedelta(seconds=60) - US)), True, id="active-59.999999s-ago"),
        pytest.param(inputs(active_device(active_ago=60)), False, id="active-exactly-60s-ago"),
        pytest.param(inputs(active_device(active_ago=120)), False, id="available-but-active-2min-ago"),
        pytest.param(inputs(active_device(active_ago=5, idle=True)), False, id="away-is-never-currently-active"),
        pytest.param(inputs(active_device(active_ago=5, in_call=True)), False, id="busy-is-never-currently-active"),
        pytest.param(
            inputs(active_device(active_ago=5), manual=manual(Status.DND)), False, id="dnd-is-never-currently-active"
        ),
        pytest.param(
            inputs(active_device(active_ago=5, seen_ago=DEVICE_TIMEOUT)), False, id="offline-is-never-currently-active"
        ),
        pytest.param(
            inputs(active_device(active_ago=5), manual=manual(Status.OFFLINE, set_ago=600)),
            False,
            id="appear-offline-is-never-currently-active",
        ),
        pytest.param(
            inputs(active_device(active_ago=5, idle=True), manual=manual(Status.AVAILABLE)),
            True,
            id="manual-available-with-recent-activity",
        ),
        pytest.param(
            inputs(active_device("laptop", active_ago=600, idle=True), active_device("phone", active_ago=10)),
            True,
            id="recent-activity-on-any-device",
        ),
    ],
)
def test_currently_active_when_available_and_active_in_the_last_minute(presence, expected):
    assert aggregate(presence, NOW).currently_active is expected


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        pytest.param(inputs(active_device()), None, id="no-manual-status-no-message"),
        pytest.param(inputs(active_device(), manual=manual(Status.BUSY, "Deadline")), "Deadline", id="manual-message"),
        pytest.param(inputs(active_device(), manual=manual(Status.BUSY, "")), None, id="empty-message-is-none"),
        pytest.param(
            inputs(active_device(), manual=manual(Status.BUSY, "Deadline", until_in=-1)),
            None,
            id="expired-manual-status-message-is-gone",
        ),
        pytest.param(
            inputs(active_device(), manual=manual(Status.AWAY, "Lunch", until_in=1800)),
            "Lunch",
            id="message-shown-until-the-manual-status-expires",
        ),
        pytest.param(
            inputs(active_device(), manual=manual(Status.AWAY, "Lunch"), calendar=(block(-60, 60),)),
            "Lunch",
            id="message-kept-while-calendar-busy-wins",
        ),
        pytest.param(
            inputs(active_device(in_call=True), manual=manual(Status.AVAILABLE, "Ask me")),
            "Ask me",
            id="message-kept-during-a-call",
        ),
        pytest.param(
            inputs(active_device(seen_ago=600), manual=manual(Status.BUSY, "Travelling")),
            "Travelling",
            id="message-kept-while-offline",
        ),
    ],
)
def test_status_msg_is_the_manual_message_while_the_manual_status_is_in_force(presence, expected):
    assert aggregate(presence, NOW).status_msg == expected


@pytest.mark.parametrize(
    ("presence", "expected_last_active"),
    [
        pytest.param(
            inputs(active_device(active_ago=60), manual=manual(Status.OFFLINE, set_ago=600)),
            ago(600),
            id="activity-after-going-invisible-is-hidden",
        ),
        pytest.param(
            inputs(active_device(active_ago=900), manual=manual(Status.OFFLINE, set_ago=600)),
            ago(900),
            id="activity-before-going-invisible-is-shown",
        ),
        pytest.param(
            inputs(active_device(active_ago=60), manual=manual(Status.OFFLINE)),
            ago(60),
            id="without-set-at-nothing-to-cap-at",
        ),
        pytest.param(
            inputs(active_device(active_ago=None), manual=manual(Status.OFFLINE, set_ago=600)),
            None,
            id="no-activity-stays-none",
        ),
        pytest.param(
            inputs(active_device(active_ago=60), manual=manual(Status.AWAY, set_ago=600)),
            ago(60),
            id="other-manual-statuses-are-not-capped",
        ),
        pytest.param(
            inputs(active_device(active_ago=60), manual=manual(Status.OFFLINE, set_ago=600, until_in=-1)),
            ago(60),
            id="expired-appear-offline-is-not-capped",
        ),
        pytest.param(
            inputs(active_device(seen_ago=200, active_ago=200), manual=manual(Status.OFFLINE, set_ago=600)),
            ago(600),
            id="still-hidden-once-every-device-is-gone",
        ),
    ],
)
def test_appear_offline_caps_last_active_at_when_it_was_set(presence, expected_last_active):
    assert aggregate(presence, NOW).last_active == expected_last_active


# --- valid_until ----------------------------------------------------------------------------

# A device seen 30 s ago and last active 90 s ago: it times out at +90 s, idles at +210 s, and
# its "currently active" minute is already over. The other inputs add earlier instants.
QUIET_DEVICE = device(seen_ago=30, active_ago=90)


@pytest.mark.parametrize(
    ("presence", "valid_until", "before", "after"),
    [
        pytest.param(inputs(QUIET_DEVICE), later(90), AVAILABLE, OFFLINE, id="device-timeout"),
        pytest.param(inputs(device(seen_ago=0, active_ago=250)), later(50), AVAILABLE, AWAY_IDLE, id="idle-timeout"),
        pytest.param(
            inputs(QUIET_DEVICE, manual=manual(Status.DND, until_in=20)),
            later(20),
            MANUAL[Status.DND],
            AVAILABLE,
            id="manual-until",
        ),
        pytest.param(
            inputs(QUIET_DEVICE, calendar=(block(10, 3600),)),
            later(10),
            AVAILABLE,
            CALENDAR_BUSY,
            id="calendar-block-start",
        ),
        pytest.param(
            inputs(QUIET_DEVICE, calendar=(block(-3600, 5),)),
            later(5),
            CALENDAR_BUSY,
            AVAILABLE,
            id="calendar-block-end",
        ),
        pytest.param(
            inputs(QUIET_DEVICE, microsoft=microsoft("Busy", "Busy", age=MICROSOFT_MAX_AGE - timedelta(seconds=7))),
            later(7),
            MICROSOFT_BUSY,
            AVAILABLE,
            id="microsoft-goes-stale",
        ),
        pytest.param(
            inputs(QUIET_DEVICE, manual=manual(Status.DND, until_in=45), calendar=(block(60, 3600),)),
            later(45),
            MANUAL[Status.DND],
            AVAILABLE,
            id="earliest-of-manual-until-and-calendar-start",
        ),
        pytest.param(
            inputs(QUIET_DEVICE, manual=manual(Status.DND, until_in=-10), calendar=(block(-60, -5),)),
            later(90),
            AVAILABLE,
            OFFLINE,
            id="past-instants-are-ignored",
        ),
        pytest.param(
            inputs(QUIET_DEVICE, calendar=(block(10, 3600),), use_calendar=False),
            later(90),
            AVAILABLE,
            OFFLINE,
            id="calendar-not-used-is-not-timed",
        ),
        pytest.param(
            inputs(QUIET_DEVICE, microsoft=microsoft("Busy", "Busy", age=290), use_microsoft=False),
            later(90),
            AVAILABLE,
            OFFLINE,
            id="microsoft-not-included-is-not-timed",
        ),
        pytest.param(
            inputs(
                device(seen_ago=50, active_ago=None, network_offline=True), manual=manual(Status.AWAY, until_in=600)
            ),
            later(600),
            OFFLINE,
            OFFLINE,
            id="network-offline-device-does-not-time-out",
        ),
    ],
)
def test_valid_until_is_the_earliest_instant_time_alone_changes_the_decision(presence, valid_until, before, after):
    decision = aggregate(presence, NOW)
    assert decision.valid_until == valid_until
    assert outcome(decision) == before
    unchanged = aggregate(presence, valid_until - US)
    assert outcome(unchanged) == before
    assert visible(unchanged) == visible(decision)
    assert outcome(aggregate(presence, valid_until)) == after


def test_valid_until_covers_the_end_of_currently_active():
    presence = inputs(device(seen_ago=0, active_ago=20))
    decision = aggregate(presence, NOW)
    assert decision.currently_active is True
    assert decision.valid_until == later(40)
    assert aggregate(presence, later(40) - US).currently_active is True
    assert aggregate(presence, later(40)).currently_active is False


@pytest.mark.parametrize(
    "presence",
    [
        pytest.param(inputs(), id="nothing-at-all"),
        pytest.param(inputs(manual=manual(Status.BUSY, "Out")), id="manual-status-without-until"),
        pytest.param(
            inputs(device(active_ago=None, network_offline=True), manual=manual(Status.DND)),
            id="network-offline-device-never-active",
        ),
        pytest.param(
            inputs(calendar=(block(-7200, -3600),), manual=manual(Status.AWAY, until_in=-1)),
            id="only-past-instants",
        ),
    ],
)
def test_valid_until_is_none_when_nothing_is_timed(presence):
    assert aggregate(presence, NOW).valid_until is None


# --- property: the decision holds until valid_until -----------------------------------------


def _random_offset(rng: random.Random) -> timedelta:
    # On a coarse grid so that instants coincide with each other and with NOW.
    return timedelta(seconds=30 * rng.randint(-24, 24))


def _random_inputs(rng: random.Random) -> PresenceInputs:
    devices = []
    for index in range(rng.choice([0, 1, 1, 2, 3])):
        seen = NOW - timedelta(seconds=30 * rng.randint(0, 4))
        active = None if rng.random() < 0.1 else seen - timedelta(seconds=30 * rng.randint(0, 12))
        devices.append(
            DeviceInput(
                device_id=f"device-{index}",
                last_seen=seen,
                last_active=active,
                activity=rng.choice(list(ActivityValue)),
                visibility=VisibilityValue.HIDDEN if rng.random() < 0.2 else VisibilityValue.VISIBLE,
                in_call=rng.random() < 0.15,
                in_meeting=rng.random() < 0.15,
                network=NetworkValue.OFFLINE if rng.random() < 0.1 else NetworkValue.ONLINE,
            )
        )
    manual_input = None
    if rng.random() < 0.5:
        manual_input = ManualInput(
            status=rng.choice(list(Status)),
            message=rng.choice(["", "Lunch"]),
            until=None if rng.random() < 0.3 else NOW + _random_offset(rng),
            set_at=None if rng.random() < 0.3 else NOW - timedelta(seconds=30 * rng.randint(0, 20)),
        )
    blocks = []
    for _ in range(rng.randint(0, 2)):
        start = NOW + _random_offset(rng)
        blocks.append(CalendarBlockInput(start=start, end=start + timedelta(seconds=30 * rng.randint(1, 20))))
    microsoft_input = None
    if rng.random() < 0.5:
        microsoft_input = MicrosoftInput(
            availability=rng.choice(["Busy", "DoNotDisturb", "Available", "Away", "busy"]),
            activity=rng.choice(["InACall", "InAMeeting", "Available", "", "Unknown"]),
            observed_at=NOW - timedelta(seconds=30 * rng.randint(0, 20)),
        )
    return PresenceInputs(
        devices=tuple(devices),
        manual=manual_input,
        calendar=tuple(blocks),
        microsoft=microsoft_input,
        preferences=PreferencesInput(
            use_calendar_busy=rng.random() < 0.8,
            include_microsoft_presence=rng.random() < 0.8,
            priority=rng.choice([None, CALENDAR_FIRST, MANUAL_FIRST]),
        ),
        policy=PolicyInput(
            device_timeout=timedelta(seconds=rng.choice([60, 120, 300])),
            idle_timeout=timedelta(seconds=rng.choice([60, 300, 600])),
            microsoft_max_age=timedelta(seconds=rng.choice([60, 300])),
            allow_calendar=rng.random() < 0.8,
            allow_microsoft=rng.random() < 0.8,
            default_priority=rng.choice([CALENDAR_FIRST, MANUAL_FIRST]),
        ),
    )


@pytest.mark.parametrize("seed", [pytest.param(seed, id=f"random-inputs-{seed}") for seed in range(40)])
def test_decision_is_unchanged_at_any_time_before_valid_until(seed):
    rng = random.Random(seed)
    for _ in range(10):
        presence = _random_inputs(rng)
        decision = aggregate(presence, NOW)
        horizon = decision.valid_until
        if horizon is None:
            horizon = NOW + timedelta(days=2)
        else:
            assert horizon > NOW
        span_us = (horizon - NOW) // US
        probes = [NOW + US, horizon - US, *(NOW + rng.randint(1, max(span_us - 1, 1)) * US for _ in range(20))]
        for t in probes:
            if not NOW < t < horizon:
                continue
            later_decision = aggregate(presence, t)
            assert visible(later_decision) == visible(decision), (presence, t)
            assert later_decision.reason == decision.reason, (presence, t)
            assert later_decision.last_active == decision.last_active, (presence, t)


# --- The engine's own imports ----------------------------------------------------------------------


def _imported_modules(module: str) -> set[str]:
    """Every module `module`'s source imports, at the top or inside a function."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    found: set[str] = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: a relative import"
            found.add(node.module)
            # `from presence import vocabulary` imports the module presence.vocabulary.
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if node.module == "presence" and importlib.util.find_spec(f"presence.{alias.name}")
            )
    return found


def _is_stdlib(module: str) -> bool:
    return module.partition(".")[0] in sys.stdlib_module_names


def test_the_engine_imports_only_the_standard_library_and_pure_modules_of_presence():
    """No Django and no other app, however deep: the engine's pure modules import nothing else."""
    seen: set[str] = set()
    pending = ["presence.engine"]
    while pending:
        module = pending.pop()
        seen.add(module)
        for imported in _imported_modules(module):
            if _is_stdlib(imported) or imported == "presence":
                continue
            assert imported.startswith("presence."), f"{module} imports {imported}"
            if imported not in seen:
                pending.append(imported)

    assert seen <= {"presence.engine", "presence.microsoft", "presence.vocabulary"}, seen


def test_importing_the_engine_loads_neither_django_nor_another_app():
    script = "import sys; before = set(sys.modules); import presence.engine; print(*set(sys.modules) - before)"
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    ).stdout.split()

    assert "presence.engine" in loaded
    assert {name for name in loaded if not _is_stdlib(name) and name.partition(".")[0] != "presence"} == set()


# --- until when the shown status lasts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("presence", "until"),
    [
        pytest.param(inputs(active_device()), None, id="available-has-no-end"),
        pytest.param(inputs(idle_device()), None, id="away-by-idleness-has-no-end"),
        pytest.param(inputs(), None, id="offline-has-no-end"),
        pytest.param(inputs(active_device(), manual=manual(Status.BUSY, until_in=1800)), later(1800), id="manual-busy"),
        pytest.param(inputs(active_device(), manual=manual(Status.BUSY)), None, id="manual-busy-without-an-end"),
        pytest.param(inputs(manual=manual(Status.OFFLINE, until_in=600)), later(600), id="appear-offline"),
        pytest.param(inputs(active_device(in_call=True)), None, id="a-call-ends-when-it-ends"),
        pytest.param(
            inputs(active_device(in_call=True), manual=manual(Status.DND, until_in=900)),
            later(900),
            id="manual-dnd-during-a-call",
        ),
        pytest.param(inputs(active_device(), calendar=(block(-600, 600),)), later(600), id="calendar-block"),
        pytest.param(
            inputs(active_device(), calendar=(block(-600, 600), block(600, 1800), block(3600, 4000))),
            later(1800),
            id="back-to-back-blocks-are-one-busy-time",
        ),
        pytest.param(
            inputs(active_device(), calendar=(block(-600, 300), block(-60, 900), block(200, 1200))),
            later(1200),
            id="overlapping-blocks-are-one-busy-time",
        ),
        pytest.param(
            inputs(active_device(), microsoft=microsoft("Busy", "InACall")), None, id="microsoft-busy-has-no-end"
        ),
    ],
)
def test_the_decision_says_until_when_the_shown_status_lasts(presence, until):
    assert aggregate(presence, NOW).status_until == until


def test_a_new_end_of_the_same_status_is_news_to_colleagues():
    before = aggregate(inputs(active_device(), manual=manual(Status.BUSY, until_in=1800)), NOW)
    after = aggregate(inputs(active_device(), manual=manual(Status.BUSY, until_in=3600)), NOW)

    assert (before.status, before.activity) == (after.status, after.activity)
    assert visible(before) != visible(after)
