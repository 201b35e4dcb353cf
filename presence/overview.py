"""Reads for the "My presence" page: the user's own devices as the engine counts them now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orgs.models import User
from presence import engine, hot, selectors
from presence.vocabulary import ActivityValue, DeviceState, NetworkValue, VisibilityValue


@dataclass(frozen=True, slots=True)
class DeviceOverview:
    device_id: str
    label: str
    last_seen: datetime
    counted: bool  # live: it takes part in the decision
    state: DeviceState


def devices_overview(user: User, now: datetime) -> list[DeviceOverview]:
    """This user's devices, newest liveness first: the hot store's copy where there is one (the
    database's last-seen times lag behind heartbeats by up to PRESENCE_DEVICE_FLUSH_SECONDS)."""
    policy = selectors.policy_input(selectors.policy_of(selectors.organization_of(user)))
    hot_devices = hot.HotUser.parse(hot.store().read(user.pk)).devices
    rows = []
    for device in selectors.devices_of(user):
        seen = hot_devices.get(device.device_id)
        if seen is None:
            device_input = selectors.device_input(device)
        else:
            device_input = engine.DeviceInput(
                device_id=device.device_id,
                label=device.label,
                last_seen=hot.from_epoch(seen.last_seen),
                last_active=hot.from_epoch(seen.last_active),
                activity=ActivityValue(seen.activity),
                visibility=VisibilityValue(seen.visibility),
                in_call=seen.in_call,
                in_meeting=seen.in_meeting,
                network=NetworkValue(seen.network),
            )
        rows.append(
            DeviceOverview(
                device_id=device.device_id,
                label=device.label,
                last_seen=device_input.last_seen,
                counted=engine.is_live(device_input, now, policy),
                state=engine.device_state(device_input, now, policy),
            )
        )
    return sorted(rows, key=lambda row: row.last_seen, reverse=True)
