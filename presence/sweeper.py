"""The expiry sweep inside the web process, for the embedded default where no Celery beat runs.

Reads are right without it (a stale decision is recomputed when read); the sweep only makes
changes happen on time for those who are told about them rather than asking.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

_started = threading.Event()


def start_in_process_sweeper() -> bool:
    """Start the sweep thread once per process when the settings ask for it."""
    if not settings.PRESENCE_IN_PROCESS_SWEEP or _started.is_set():
        return False
    _started.set()
    thread = threading.Thread(target=_run_forever, name="presence-sweeper", daemon=True)
    thread.start()
    return True


def _run_forever() -> None:
    from presence.services import sweep_expired

    interval = settings.PRESENCE_SWEEP_INTERVAL_SECONDS
    stop = threading.Event()
    while not stop.wait(interval):
        try:
            close_old_connections()
            sweep_expired()
        except Exception:
            logger.exception("The in-process presence sweep failed; it runs again in %s s", interval)
        finally:
            close_old_connections()
