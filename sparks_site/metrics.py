"""Prometheus metrics: every metric object of the service, defined once, and their exposition.

Code that measures imports the objects (or the small helpers) from here, so a metric has one name
and one set of labels however many places feed it: signals (`presence.services`, whichever lane
answered the request), visible presence changes (`presence.events.publish_many`), open websockets
(`presence.consumers`), the expiry sweep (`presence.services.sweep_expired`) and, for the
integrations, the dispatch to Matrix and Microsoft (`observe_dispatch`).

One process or many: with `PROMETHEUS_MULTIPROC_DIR` set in the environment of every process
(gunicorn workers, uvicorn processes, Celery workers and beat) before they start, prometheus-client
keeps each process's values in a memory-mapped file in that directory, and `/metrics`, served by
any of them, adds them all up (`MultiProcessCollector`). The directory must be emptied when the
deployment starts (`make serve-prod` does), or a restart would carry the old counts on. Without it,
each process counts on its own and `/metrics` shows that process's values.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from presence.vocabulary import SignalType, Status

# The `_created` series double every counter and mean nothing once processes restart.
disable_created_metrics()

SIGNALS = Counter(
    "sparks_presence_signals",
    "Device signals received for a known device, by type (heartbeats included, whichever lane answered).",
    ["type"],
)
PRESENCE_CHANGES = Counter(
    "sparks_presence_changes",
    "Visible presence changes published, by the new status.",
    ["status"],
)
WEBSOCKETS = Gauge(
    "sparks_presence_websocket_connections",
    "Presence websockets open now.",
    # Summed over the processes alive: a process that exits takes its sockets with it.
    multiprocess_mode="livesum",
)
SWEEP_SECONDS = Histogram(
    "sparks_presence_sweep_duration_seconds",
    "Duration of one expiry sweep (every user past their decision's valid_until recomputed).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RATE_LIMITED = Counter(
    "sparks_presence_rate_limited",
    "Requests refused over a rate limit, by the limit (device, user: signals; changes: status and settings).",
    ["scope"],
)
DISPATCH = Counter(
    "sparks_presence_dispatch",
    "Presence dispatches to an outside system, by target (matrix, microsoft) and outcome (success, failure).",
    ["target", "outcome"],
)
DISPATCH_SECONDS = Histogram(
    "sparks_presence_dispatch_duration_seconds",
    "Latency of one presence dispatch to an outside system, by target.",
    ["target"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# Bound once: what a heartbeat pays for being counted is one increment, no label lookup. Every
# type and status is present (at 0) from the start, so rates work from the first scrape.
_SIGNALS_BY_TYPE = {kind: SIGNALS.labels(kind.value) for kind in SignalType}
_HEARTBEATS = _SIGNALS_BY_TYPE[SignalType.HEARTBEAT]
_CHANGES_BY_STATUS = {status.value: PRESENCE_CHANGES.labels(status.value) for status in Status}


def count_heartbeat() -> None:
    _HEARTBEATS.inc()


def count_signals(signals: Iterable[object]) -> None:
    """Count a batch of `presence.services.Signal`s (anything with a `type`)."""
    for signal in signals:
        _SIGNALS_BY_TYPE[signal.type].inc()


def count_changes(changes: Iterable[object]) -> None:
    """Count published `presence.events.PresenceChange`s (anything with a `status`)."""
    for change in changes:
        counter = _CHANGES_BY_STATUS.get(change.status)
        (counter or PRESENCE_CHANGES.labels(change.status)).inc()


@contextmanager
def observe_dispatch(target: str) -> Iterator[None]:
    """Time one dispatch to `target` and count it as a success, or as a failure if it raises."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        DISPATCH.labels(target, "failure").inc()
        raise
    else:
        DISPATCH.labels(target, "success").inc()
    finally:
        DISPATCH_SECONDS.labels(target).observe(time.perf_counter() - started)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> tuple[bytes, str]:
    """The text a Prometheus scrape gets, and its content type."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _mark_process_dead() -> None:
    multiprocess.mark_process_dead(os.getpid())


if multiprocess_dir() is not None:
    # A process that exits normally drops its share of the live gauges (open websockets) at once;
    # os.getpid() at exit time, so that a forked worker marks itself and not its parent.
    atexit.register(_mark_process_dead)
    # A worker started by `multiprocessing` (granian's) leaves through os._exit, which skips
    # atexit: multiprocessing runs its finalizers on the way out instead (marking twice is harmless).
    multiprocessing.util.Finalize(None, _mark_process_dead, exitpriority=0)
