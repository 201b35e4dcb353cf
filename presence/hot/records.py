"""What the hot store keeps of a user, and how each part is written into the user's hash.

The encodings are the layout's (`layout`): the names the scripts read are its constants. The
rest of the context (preferences, manual status, calendar, Microsoft import) is read by Python
alone and kept positional, where it is smallest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from django.conf import settings

from presence.engine import (
    CalendarBlockInput,
    Decision,
    DeviceInput,
    ManualInput,
    MicrosoftInput,
    PolicyInput,
    PreferencesInput,
    PresenceInputs,
)
from presence.hot.layout import (
    CONTEXT_POLICY,
    CONTEXT_SETTINGS,
    DECISION_VALID_UNTIL,
    DEVICE_PREFIX,
    FIELD_CONTEXT,
    FIELD_DECISION,
    FIELD_LOADED,
    FIELD_VERSION,
    FLUSHED_PREFIX,
    LOADED,
    POLICY_DEVICE_TIMEOUT,
    SEEN_PREFIX,
    SEQ_PREFIX,
    STATE_ACTIVITY,
    STATE_IN_CALL,
    STATE_IN_MEETING,
    STATE_LABEL,
    STATE_LAST_ACTIVE,
    STATE_NETWORK,
    STATE_VISIBILITY,
)
from presence.vocabulary import ActivityValue, NetworkValue, Priority, Status, VisibilityValue

_COMPACT = (",", ":")


def to_epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def from_epoch(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


@dataclass(frozen=True, slots=True)
class HotDevice:
    """A device's state as the hot path keeps it (times as epoch seconds)."""

    device_id: str
    last_seen: float
    last_active: float | None
    activity: str = ActivityValue.ACTIVE
    visibility: str = VisibilityValue.VISIBLE
    in_call: bool = False
    in_meeting: bool = False
    network: str = NetworkValue.ONLINE
    seq: int = -1
    label: str = ""
    # When last_seen/last_active were last written to the database (for the admin).
    flushed_at: float = 0.0

    def encode(self) -> str:
        """The state a heartbeat does not change (the key and the other fields carry the rest)."""
        return json.dumps(
            {
                STATE_LAST_ACTIVE: self.last_active,
                STATE_ACTIVITY: self.activity,
                STATE_VISIBILITY: self.visibility,
                STATE_IN_CALL: self.in_call,
                STATE_IN_MEETING: self.in_meeting,
                STATE_NETWORK: self.network,
                STATE_LABEL: self.label,
            },
            separators=_COMPACT,
        )

    @classmethod
    def decode(cls, device_id: str, raw: dict[str, str]) -> HotDevice:
        state = json.loads(raw[DEVICE_PREFIX + device_id])
        # In the fields' order, not by keyword: a tenth faster, on every parse of a user's hash.
        return cls(
            device_id,
            float(raw[SEEN_PREFIX + device_id]),
            state[STATE_LAST_ACTIVE],
            state[STATE_ACTIVITY],
            state[STATE_VISIBILITY],
            state[STATE_IN_CALL],
            state[STATE_IN_MEETING],
            state[STATE_NETWORK],
            int(raw.get(SEQ_PREFIX + device_id, -1)),
            state[STATE_LABEL],
            float(raw.get(FLUSHED_PREFIX + device_id, 0.0)),
        )

    def persistent_state(self) -> tuple[object, ...]:
        """What the database keeps of a device besides timestamps: a change here is written at once."""
        return (self.activity, self.visibility, self.in_call, self.in_meeting, self.network)

    def engine_input(self) -> DeviceInput:
        return DeviceInput(
            device_id=self.device_id,
            label=self.label,
            last_seen=from_epoch(self.last_seen),
            last_active=from_epoch(self.last_active),
            activity=ActivityValue(self.activity),
            visibility=VisibilityValue(self.visibility),
            in_call=self.in_call,
            in_meeting=self.in_meeting,
            network=NetworkValue(self.network),
        )

    def with_changes(self, **changes: object) -> HotDevice:
        return replace(self, **changes)


def device_fields(device: HotDevice) -> dict[str, str]:
    """The device's fields in the user's hash."""
    device_id = device.device_id
    return {
        DEVICE_PREFIX + device_id: device.encode(),
        SEQ_PREFIX + device_id: str(device.seq),
        SEEN_PREFIX + device_id: repr(device.last_seen),
        FLUSHED_PREFIX + device_id: repr(device.flushed_at),
    }


def settings_fingerprint() -> list[int]:
    """The server settings a context was built under: a context from before a change of them
    (a restart with other timeouts) is not used, but rebuilt."""
    return [
        settings.PRESENCE_DEVICE_TIMEOUT_SECONDS,
        settings.PRESENCE_IDLE_TIMEOUT_SECONDS,
        settings.PRESENCE_MICROSOFT_MAX_AGE_SECONDS,
    ]


def encode_context(inputs: PresenceInputs, organization_id: int | None) -> str:
    """The slow inputs of `inputs` (everything but devices), as stored in the hot hash."""
    policy, preferences = inputs.policy, inputs.preferences
    manual, microsoft = inputs.manual, inputs.microsoft
    return json.dumps(
        {
            CONTEXT_SETTINGS: settings_fingerprint(),
            "org": organization_id,
            CONTEXT_POLICY: {
                POLICY_DEVICE_TIMEOUT: policy.device_timeout.total_seconds(),
                "idle_timeout": policy.idle_timeout.total_seconds(),
                "microsoft_max_age": policy.microsoft_max_age.total_seconds(),
                "allow_calendar": policy.allow_calendar,
                "allow_microsoft": policy.allow_microsoft,
                "allow_appear_offline": policy.allow_appear_offline,
                "default_priority": policy.default_priority.value,
            },
            "prefs": [preferences.use_calendar_busy, preferences.include_microsoft_presence, preferences.priority],
            "manual": [manual.status.value, manual.message, to_epoch(manual.until), to_epoch(manual.set_at)]
            if manual
            else None,
            "cal": [[b.start.timestamp(), b.end.timestamp()] for b in inputs.calendar],
            "ms": [microsoft.availability, microsoft.activity, microsoft.observed_at.timestamp(), microsoft.echo]
            if microsoft
            else None,
        },
        separators=_COMPACT,
    )


@dataclass(frozen=True, slots=True)
class HotContext:
    organization_id: int | None
    inputs: PresenceInputs  # without devices
    current: bool  # built under the settings in force now

    @classmethod
    def decode(cls, text: str) -> HotContext:
        data = json.loads(text)
        policy = data[CONTEXT_POLICY]
        use_cal, include_ms, priority = data["prefs"]
        manual = data["manual"]
        microsoft = data["ms"]
        inputs = PresenceInputs(
            policy=PolicyInput(
                device_timeout=timedelta(seconds=policy[POLICY_DEVICE_TIMEOUT]),
                idle_timeout=timedelta(seconds=policy["idle_timeout"]),
                microsoft_max_age=timedelta(seconds=policy["microsoft_max_age"]),
                allow_calendar=policy["allow_calendar"],
                allow_microsoft=policy["allow_microsoft"],
                allow_appear_offline=policy["allow_appear_offline"],
                default_priority=Priority(policy["default_priority"]),
            ),
            preferences=PreferencesInput(use_cal, include_ms, Priority(priority) if priority else None),
            manual=ManualInput(Status(manual[0]), manual[1], from_epoch(manual[2]), from_epoch(manual[3]))
            if manual
            else None,
            calendar=tuple(CalendarBlockInput(from_epoch(s), from_epoch(e)) for s, e in data["cal"]),
            microsoft=MicrosoftInput(microsoft[0], microsoft[1], from_epoch(microsoft[2]), microsoft[3])
            if microsoft
            else None,
        )
        current = data.get(CONTEXT_SETTINGS) == settings_fingerprint()
        return cls(organization_id=data["org"], inputs=inputs, current=current)

    def with_devices(self, devices: list[HotDevice]) -> PresenceInputs:
        return replace(self.inputs, devices=tuple(d.engine_input() for d in devices))


@dataclass(frozen=True, slots=True)
class HotDecision:
    """The last decision; stored as a JSON object keyed by these fields' names (the scripts read
    `layout.DECISION_VALID_UNTIL`, which is one of them)."""

    status: str
    activity: str
    status_msg: str | None
    last_active: float | None
    currently_active: bool
    reason: str
    valid_until: float | None
    status_until: float | None = None

    @classmethod
    def of(cls, decision: Decision) -> HotDecision:
        return cls(
            status=decision.status.value,
            activity=decision.activity.value,
            status_msg=decision.status_msg,
            last_active=to_epoch(decision.last_active),
            currently_active=decision.currently_active,
            reason=decision.reason.value,
            valid_until=to_epoch(decision.valid_until),
            status_until=to_epoch(decision.status_until),
        )

    def encode(self) -> str:
        # Built by hand, as `asdict` deep-copies and costs more than the rest of the encoding.
        return json.dumps(
            {
                "status": self.status,
                "activity": self.activity,
                "status_msg": self.status_msg,
                "last_active": self.last_active,
                "currently_active": self.currently_active,
                "reason": self.reason,
                DECISION_VALID_UNTIL: self.valid_until,
                "status_until": self.status_until,
            },
            separators=_COMPACT,
        )

    @classmethod
    def decode(cls, text: str) -> HotDecision:
        return cls(**json.loads(text))

    def is_stale(self, now: float) -> bool:
        return self.valid_until is not None and self.valid_until <= now


@dataclass(frozen=True, slots=True)
class HotUser:
    """One user's hot hash, parsed."""

    version: int
    loaded: bool
    devices: dict[str, HotDevice]
    context: str | None
    decision: HotDecision | None

    @classmethod
    def parse(cls, raw: dict[str, str]) -> HotUser:
        devices = {}
        for field in raw:
            if field.startswith(DEVICE_PREFIX):
                device_id = field[len(DEVICE_PREFIX) :]
                devices[device_id] = HotDevice.decode(device_id, raw)
        decision = raw.get(FIELD_DECISION)
        return cls(
            version=int(raw.get(FIELD_VERSION, -1)),
            loaded=raw.get(FIELD_LOADED) == LOADED,
            devices=devices,
            context=raw.get(FIELD_CONTEXT),
            decision=HotDecision.decode(decision) if decision else None,
        )

    @property
    def ready(self) -> bool:
        """Everything a heartbeat needs is here (else it takes the slow path, which rebuilds it)."""
        return self.loaded and self.context is not None and self.decision is not None
