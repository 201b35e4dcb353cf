"""The presence vocabulary: every status, activity, signal and priority name, in one place.

Pure Python (no Django) so that the engine, the API, the admin and the integrations all share
exactly the same words. Translations to other systems' vocabularies (Matrix, Microsoft Graph) live
in one table, `integrations.mapping`, so a value is never translated in two places; what an
imported Microsoft presence means for aggregation is the engine's own (`presence.microsoft`).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """The one visible presence status of a user."""

    AVAILABLE = "available"
    BUSY = "busy"
    AWAY = "away"
    DND = "dnd"
    OFFLINE = "offline"


class Activity(StrEnum):
    """What the user is doing, finer than the status (e.g. busy *because* in a call)."""

    AVAILABLE = "available"
    IN_CALL = "in_call"
    IN_MEETING = "in_meeting"
    IN_CALENDAR_EVENT = "in_calendar_event"
    BUSY = "busy"
    DO_NOT_DISTURB = "do_not_disturb"
    AWAY = "away"
    INACTIVE = "inactive"
    OFFLINE = "offline"


class Priority(StrEnum):
    """Which of calendar busy and the manual status wins when both apply."""

    CALENDAR_FIRST = "calendar_first"
    MANUAL_FIRST = "manual_first"


class Reason(StrEnum):
    """The rule of the engine that decided a status."""

    APPEAR_OFFLINE = "appear_offline"
    NO_LIVE_DEVICE = "no_live_device"
    IN_CALL = "in_call"
    IN_MEETING = "in_meeting"
    MANUAL_DND_DURING_CALL = "manual_dnd_during_call"
    CALENDAR_BUSY = "calendar_busy"
    MANUAL_STATUS = "manual_status"
    MICROSOFT_PRESENCE = "microsoft_presence"
    ALL_DEVICES_IDLE_OR_HIDDEN = "all_devices_idle_or_hidden"
    DEVICE_ACTIVE = "device_active"


class DeviceState(StrEnum):
    """One device's own state, coalesced across devices as Synapse does."""

    BUSY = "busy"
    ONLINE = "online"
    UNAVAILABLE = "unavailable"
    OFFLINE = "offline"


# busy > online > unavailable > offline: a user is as present as their most present device.
DEVICE_STATE_RANK: dict[DeviceState, int] = {
    DeviceState.OFFLINE: 0,
    DeviceState.UNAVAILABLE: 1,
    DeviceState.ONLINE: 2,
    DeviceState.BUSY: 3,
}


class SignalType(StrEnum):
    HEARTBEAT = "heartbeat"
    ACTIVITY = "activity"
    VISIBILITY = "visibility"
    CALL = "call"
    MEETING = "meeting"
    NETWORK = "network"


class ActivityValue(StrEnum):
    ACTIVE = "active"
    IDLE = "idle"


class VisibilityValue(StrEnum):
    VISIBLE = "visible"
    HIDDEN = "hidden"


class SessionValue(StrEnum):
    """Values of the `call` and `meeting` signals."""

    START = "start"
    END = "end"


class NetworkValue(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


# The values each signal type accepts; `None` means the signal carries no value.
SIGNAL_VALUES: dict[SignalType, frozenset[str] | None] = {
    SignalType.HEARTBEAT: None,
    SignalType.ACTIVITY: frozenset(ActivityValue),
    SignalType.VISIBILITY: frozenset(VisibilityValue),
    SignalType.CALL: frozenset(SessionValue),
    SignalType.MEETING: frozenset(SessionValue),
    SignalType.NETWORK: frozenset(NetworkValue),
}

# The activity shown for a manual status.
MANUAL_STATUS_ACTIVITY: dict[Status, Activity] = {
    Status.AVAILABLE: Activity.AVAILABLE,
    Status.BUSY: Activity.BUSY,
    Status.AWAY: Activity.AWAY,
    Status.DND: Activity.DO_NOT_DISTURB,
    Status.OFFLINE: Activity.OFFLINE,
}
