"""Beat's work inside the server process, for the embedded default where no beat or worker runs.

There is one schedule, `CELERY_BEAT_SCHEDULE`. In a deployment, beat sends its entries to the
workers on their intervals, and a broker holds a task sent with a countdown (a delivery retried
after a 429's `Retry-After`) until its time. When tasks run in-process (`CELERY_TASK_ALWAYS_EAGER`,
the embedded default) neither exists, so this module plays both parts:

- `InProcessBeat` runs every entry of the same schedule on the same interval, in a thread of the
  server process (started by `start_in_process_beat`, when `BEAT_IN_PROCESS` asks for it);
- `DeferringTask`, the Celery application's task class, keeps a task sent in-process with a
  countdown or an ETA in `deferred` until it is due, instead of running it at once; the thread runs
  it then. A task sent without one still runs at once, as Celery's eager mode does.

A deferred task lives in the memory of the process that sent it: one that ends first (a management
command) loses it, and the server's own beat catches up on the next refresh.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task
from celery.result import AsyncResult
from celery.schedules import schedule as interval_schedule
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


def interval_seconds(name: str, entry: Mapping[str, Any]) -> float:
    """The interval of one entry of CELERY_BEAT_SCHEDULE, in seconds. Only intervals are run
    in-process (a crontab would need a calendar; none of the schedule's entries uses one)."""
    every = entry["schedule"]
    if isinstance(every, interval_schedule):
        every = every.run_every
    if isinstance(every, timedelta):
        every = every.total_seconds()
    if not isinstance(every, int | float) or isinstance(every, bool) or every <= 0:
        raise ImproperlyConfigured(f"CELERY_BEAT_SCHEDULE[{name!r}] must run on an interval to run in-process")
    return float(every)


# --- Tasks sent with a countdown ------------------------------------------------------------------


@dataclass(order=True)
class _Deferred:
    due: float
    order: int
    task_name: str = field(compare=False)
    args: tuple = field(compare=False)
    kwargs: dict = field(compare=False)


class DeferredTasks:
    """Tasks waiting for their countdown, earliest first; thread-safe."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[_Deferred] = []
        self._order = itertools.count()
        self._changed = threading.Condition()

    def add(self, task_name: str, args: tuple, kwargs: dict, delay_seconds: float) -> None:
        with self._changed:
            heapq.heappush(
                self._heap, _Deferred(self._clock() + delay_seconds, next(self._order), task_name, args, kwargs)
            )
            self._changed.notify_all()  # the runner may have to wake up earlier

    def pop_due(self, now: float | None = None) -> list[_Deferred]:
        now = self._clock() if now is None else now
        with self._changed:
            due = []
            while self._heap and self._heap[0].due <= now:
                due.append(heapq.heappop(self._heap))
            return due

    def next_due(self) -> float | None:
        with self._changed:
            return self._heap[0].due if self._heap else None

    def pending(self) -> list[tuple[str, float]]:
        """(task name, seconds until due) of every waiting task, earliest first."""
        now = self._clock()
        with self._changed:
            return [(d.task_name, d.due - now) for d in sorted(self._heap)]

    def clear(self) -> None:
        with self._changed:
            self._heap.clear()

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds, less when a task is added meanwhile."""
        with self._changed:
            self._changed.wait(max(0.0, timeout))

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()


deferred = DeferredTasks()


def _delay_seconds(options: Mapping[str, Any]) -> float:
    countdown = options.get("countdown") or 0
    eta = options.get("eta")
    if isinstance(eta, datetime):
        eta_delay = (eta if eta.tzinfo else eta.replace(tzinfo=UTC)).timestamp() - time.time()
        countdown = max(float(countdown), eta_delay)
    return float(countdown)


class DeferringTask(Task):
    """Celery's task, except that in-process a countdown (or ETA) is waited for, not skipped."""

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        **options: Any,
    ) -> AsyncResult | None:
        """Celery's `apply_async`; in-process, a task with a countdown or an ETA is kept in
        `deferred` until it is due (None then: there is no result to wait for)."""
        if self.app.conf.task_always_eager:
            delay = _delay_seconds(options)
            if delay > 0:
                deferred.add(self.name, tuple(args or ()), dict(kwargs or {}), delay)
                return None
        return super().apply_async(args, kwargs, task_id, producer, link, link_error, **options)


# --- The schedule ---------------------------------------------------------------------------------


class InProcessBeat:
    """Runs the schedule's entries on their intervals and the deferred tasks when due, in a thread."""

    def __init__(
        self,
        schedule: Mapping[str, Mapping[str, Any]],
        queue: DeferredTasks = deferred,
        clock: Clock = time.monotonic,
    ) -> None:
        from sparks_site.celery import app

        # What a worker does when it starts: import every app's tasks module (autodiscovery).
        app.loader.import_default_modules()
        self.entries = {name: (entry, interval_seconds(name, entry)) for name, entry in schedule.items()}
        self.queue = queue
        self._clock = clock
        # Like beat, an entry first runs one interval after the start.
        start = clock()
        self.next_run = {name: start + every for name, (_, every) in self.entries.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="in-process-beat", daemon=True)

    def start(self) -> InProcessBeat:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.queue.wake()
        self._thread.join(timeout)

    def run_due(self, now: float | None = None) -> list[str]:
        """Run what is due at `now` (the schedule's entries, then the deferred tasks); the names of
        the tasks that ran, in order."""
        now = self._clock() if now is None else now
        ran = []
        for name, (entry, every) in self.entries.items():
            if self.next_run[name] <= now:
                # The next run counts from now: a run that overran its interval is not repeated.
                self.next_run[name] = now + every
                _run_task(entry["task"], tuple(entry.get("args", ())), dict(entry.get("kwargs", {})))
                ran.append(entry["task"])
        for task in self.queue.pop_due(now):
            _run_task(task.task_name, task.args, task.kwargs)
            ran.append(task.task_name)
        return ran

    def seconds_to_next(self) -> float:
        candidates = list(self.next_run.values())
        next_deferred = self.queue.next_due()
        if next_deferred is not None:
            candidates.append(next_deferred)
        return max(0.0, min(candidates) - self._clock()) if candidates else 60.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            self.queue.wait(self.seconds_to_next())
        connections.close_all()  # this thread's own connections


def _run_task(name: str, args: tuple, kwargs: dict) -> None:
    """One task, as a worker would run it: a failure is logged and never stops the schedule."""
    try:
        from sparks_site.celery import app

        close_old_connections()
        app.tasks[name].apply(args=args, kwargs=kwargs, throw=True)
    except Exception:
        logger.exception("In-process task %s failed", name)
    finally:
        close_old_connections()


_beat: InProcessBeat | None = None
_lock = threading.Lock()


def start_in_process_beat() -> InProcessBeat | None:
    """Start the process's beat once, when the settings ask for it (the embedded default)."""
    global _beat
    if not settings.BEAT_IN_PROCESS:
        return None
    with _lock:
        if _beat is None:
            _beat = InProcessBeat(settings.CELERY_BEAT_SCHEDULE).start()
    return _beat
