"""µs per `presence.engine.aggregate()` for one user with three devices.

    python bench/engine.py            # default: 10,000 calls per repeat, 7 repeats
    python bench/engine.py --quick    # a smoke run (a few hundred calls)

Pure CPU, no Django setup, no database. Each input mix walks the engine to a different rule.
Besides the engine alone it times, in the same run, the whole CPU part of a steady heartbeat on
the hot path (parse the user's hot hash, decode the context, aggregate, encode the decision),
so the engine's share of a heartbeat is visible. Target: aggregate() <= 20 µs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import timeit
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparks_site.settings")
# The hot-state decoders read a few settings (lazily, no django.setup()); settings need a key.
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-not-for-production")

from presence import hot
from presence.engine import (
    CalendarBlockInput,
    DeviceInput,
    ManualInput,
    MicrosoftInput,
    PreferencesInput,
    PresenceInputs,
    aggregate,
    visible,
)
from presence.hot import layout
from presence.vocabulary import ActivityValue, Status, VisibilityValue

TARGET_US = 20.0
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _device(n: int, seen_ago: float = 5, active_ago: float | None = 10, **kw) -> DeviceInput:
    return DeviceInput(
        device_id=f"device-{n:02d}-" + "0" * 20,
        label=f"device {n}",
        last_seen=NOW - timedelta(seconds=seen_ago),
        last_active=None if active_ago is None else NOW - timedelta(seconds=active_ago),
        **kw,
    )


def mixes() -> dict[str, PresenceInputs]:
    """Representative inputs, each deciding by a different rule."""
    hour = timedelta(hours=1)
    return {
        # The common case: every device live, one active → rule 6 (the longest walk).
        "available (3 live, 1 active)": PresenceInputs(
            devices=(
                _device(1),
                _device(2, active_ago=900, activity=ActivityValue.IDLE),
                _device(3, visibility=VisibilityValue.HIDDEN),
            )
        ),
        # Every live device idle or hidden, a calendar block later today → rule 5.
        "away (idle/hidden + calendar)": PresenceInputs(
            devices=(
                _device(1, active_ago=900),
                _device(2, activity=ActivityValue.IDLE),
                _device(3, visibility=VisibilityValue.HIDDEN),
            ),
            calendar=(
                CalendarBlockInput(NOW + hour, NOW + 2 * hour),
                CalendarBlockInput(NOW + 3 * hour, NOW + 4 * hour),
            ),
        ),
        # A device in a call → rule 2.
        "busy (in a call)": PresenceInputs(devices=(_device(1, in_call=True), _device(2), _device(3))),
        # Manual do-not-disturb until a time, Microsoft import present → rule 3.
        "dnd (manual, until + MS)": PresenceInputs(
            devices=(_device(1), _device(2), _device(3)),
            manual=ManualInput(Status.DND, "Focus", NOW + hour, NOW - hour),
            microsoft=MicrosoftInput("Busy", "InAMeeting", NOW - timedelta(seconds=30)),
            preferences=PreferencesInput(include_microsoft_presence=True),
        ),
        # Microsoft says busy, nothing else → rule 4.
        "busy (Microsoft import)": PresenceInputs(
            devices=(_device(1), _device(2), _device(3)),
            microsoft=MicrosoftInput("Busy", "InAMeeting", NOW - timedelta(seconds=30)),
            preferences=PreferencesInput(include_microsoft_presence=True),
        ),
        # Every device timed out → rule 1.
        "offline (all timed out)": PresenceInputs(
            devices=(_device(1, seen_ago=600), _device(2, seen_ago=700), _device(3, seen_ago=800))
        ),
    }


def hot_hash(inputs: PresenceInputs) -> dict[str, str]:
    """The user's hot hash as `services.recompute` leaves it in the store."""
    raw: dict[str, str] = {layout.FIELD_VERSION: "3", layout.FIELD_LOADED: layout.LOADED}
    for seq, d in enumerate(inputs.devices):
        device = hot.HotDevice(
            device_id=d.device_id,
            last_seen=d.last_seen.timestamp(),
            last_active=hot.to_epoch(d.last_active),
            activity=d.activity.value,
            visibility=d.visibility.value,
            in_call=d.in_call,
            in_meeting=d.in_meeting,
            network=d.network.value,
            seq=seq + 10,
            label=d.label,
            flushed_at=d.last_seen.timestamp(),
        )
        raw.update(hot.device_fields(device))
    raw[layout.FIELD_CONTEXT] = hot.encode_context(inputs, 1)
    raw[layout.FIELD_DECISION] = hot.HotDecision.of(aggregate(inputs, NOW)).encode()
    return raw


def heartbeat_cpu(raw: dict[str, str]) -> None:
    """The CPU work of `services.ingest_signals` on the hot path, minus its two Redis calls."""
    user = hot.HotUser.parse(raw)
    device = next(iter(user.devices.values()))
    updated = device.with_changes(seq=device.seq + 1, last_seen=NOW.timestamp(), network="online")
    context = hot.HotContext.decode(user.context)
    devices = [updated if d.device_id == device.device_id else d for d in user.devices.values()]
    decision = hot.HotDecision.of(aggregate(context.with_devices(devices), NOW))
    visible(decision) != visible(user.decision)  # noqa: B015  (as the hot path compares)
    decision.encode()
    updated.encode()


def per_call_us(func, number: int, repeat: int) -> tuple[float, float, float]:
    times = [t / number * 1e6 for t in timeit.repeat(func, number=number, repeat=repeat)]
    return statistics.median(times), min(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=10_000, help="calls per repeat (default 10000)")
    parser.add_argument("--repeat", type=int, default=7, help="repeats; the median is reported (default 7)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 calls x 3 repeats")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    number, repeat = (300, 3) if args.quick else (args.number, args.repeat)

    print(f"aggregate(), one user with 3 devices: {number} calls x {repeat} repeats, median µs per call")
    print(f"{'input mix':34} {'decides':10} {'median':>8} {'min':>8} {'max':>8}  {'heartbeat CPU':>13}  engine share")
    results = {}
    for name, inputs in mixes().items():
        decision = aggregate(inputs, NOW)
        median, low, high = per_call_us(lambda inputs=inputs: aggregate(inputs, NOW), number, repeat)
        raw = hot_hash(inputs)
        hb, _, _ = per_call_us(lambda raw=raw: heartbeat_cpu(raw), max(number // 5, 50), repeat)
        results[name] = {"status": decision.status.value, "median_us": median, "heartbeat_cpu_us": hb}
        print(
            f"{name:34} {decision.status.value:10} {median:8.2f} {low:8.2f} {high:8.2f}  {hb:13.2f}  {median / hb:6.0%}"
        )
    worst = max(r["median_us"] for r in results.values())
    mean = statistics.mean(r["median_us"] for r in results.values())
    verdict = "met" if worst <= TARGET_US else "MISSED"
    print(f"\nworst mix {worst:.2f} µs, mean of mixes {mean:.2f} µs; target <= {TARGET_US:.0f} µs: {verdict}")
    print(f"worst mix / target = {worst / TARGET_US:.2f}")
    if args.json:
        print(json.dumps({"benchmark": "engine", "number": number, "repeat": repeat, "mixes": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
