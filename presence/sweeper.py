"""The expiry sweep inside the web process, for the embedded default where no Celery beat runs.

Reads are right without it (a stale decision is recomputed when read); the sweep only makes
changes happen on time for those who are told about them rather than asking.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 3600


class InProcessSweeper:
    def __init__(self, interval_seconds: float) -> None:
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presence-sweeper", daemon=True)

    def start(self) -> InProcessSweeper:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        from presence.history import prune
        from presence.services import flush_device_activity, persist_pending, sweep_expired
        from presence.sweep_clock import record_sweep

        pruned_at: float | None = None
        while not self._stop.wait(self.interval_seconds):
            try:
                close_old_connections()
                sweep_expired()
                record_sweep()  # for /readyz
                persist_pending()
                flush_device_activity()
                # Retention needs no precision: once an hour, as beat does it with Redis.
                if pruned_at is None or time.monotonic() - pruned_at >= PRUNE_INTERVAL_SECONDS:
                    pruned_at = time.monotonic()
                    prune()
            except Exception:
                logger.exception("The in-process presence sweep failed; it runs again in %s s", self.interval_seconds)
            finally:
                close_old_connections()
        connections.close_all()  # this thread's own connections


_sweeper: InProcessSweeper | None = None
_lock = threading.Lock()


def start_in_process_sweeper() -> InProcessSweeper | None:
    """Start the process's sweeper once, when the settings ask for it."""
    global _sweeper
    if not settings.PRESENCE_IN_PROCESS_SWEEP:
        return None
    with _lock:
        if _sweeper is None:
            _sweeper = InProcessSweeper(settings.PRESENCE_SWEEP_INTERVAL_SECONDS).start()
    return _sweeper
