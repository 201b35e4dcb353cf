"""Writes. Every change of a presence input enters here, and every decision leaves through
one funnel (`presence.services.funnel.commit`), which stores it, records it and publishes it.

One path for every change: record the input (the hot store for a device's signals, the database
for the slow inputs) → decide with the engine (`presence.engine.aggregate`) → the funnel. The
modules, by concern:

- `devices`: signing devices in and out, device ids;
- `signals`: a device's signals, on the hot path or the slow one;
- `inputs`: manual status, calendar, presence settings, the Microsoft import;
- `decide`: deciding a user again from every input (`recompute`), for a user or an organization;
- `sweep`: deciding again the users whose decision time has passed;
- `funnel`: the one way out of a decision;
- `persist`: the database copy of the hot store (written behind the hot path).

Reads are `presence.selectors`': they never lock or write.
"""

from presence.services.decide import recompute, recompute_organization, recompute_user_by_id
from presence.services.devices import (
    DeviceNotFound,
    possible_device_id,
    pseudonymous_device_id,
    register_device,
    sign_out_device,
)
from presence.services.inputs import (
    clear_manual_status,
    count_input_change,
    record_microsoft_presence,
    replace_calendar,
    set_manual_status,
    update_preferences,
)
from presence.services.persist import flush_device_activity, persist_pending, persist_users
from presence.services.signals import Signal, SignalOutcome, apply_signals, ingest_signals, steady_heartbeat
from presence.services.sweep import sweep_expired

__all__ = [
    "DeviceNotFound",
    "Signal",
    "SignalOutcome",
    "apply_signals",
    "clear_manual_status",
    "count_input_change",
    "flush_device_activity",
    "ingest_signals",
    "persist_pending",
    "persist_users",
    "possible_device_id",
    "pseudonymous_device_id",
    "recompute",
    "recompute_organization",
    "recompute_user_by_id",
    "record_microsoft_presence",
    "register_device",
    "replace_calendar",
    "set_manual_status",
    "sign_out_device",
    "steady_heartbeat",
    "sweep_expired",
    "update_preferences",
]
