"""When the expiry sweep last completed, for `/readyz` (see `sparks_site.ops.check_sweep`).

Written by whichever runs the sweep: beat's `presence.tasks.sweep_expired_presence` on a worker,
or the in-process sweeper of the embedded default. Kept in the cache, which is Redis when
`REDIS_URL` is set (every web process reads the time a worker wrote) and process memory
otherwise (where the sweep runs in the web process itself). A wall-clock time: processes on
several hosts compare it.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache

logger = logging.getLogger(__name__)

KEY = "presence:sweep:last-run"


def record_sweep(at: float | None = None) -> None:
    """Note that a sweep completed now (or at `at`, seconds since the epoch). Never raises: the
    sweep ran, and an unreachable cache shows in `/readyz` by itself."""
    try:
        cache.set(KEY, time.time() if at is None else at, timeout=None)
    except Exception as error:
        logger.warning("The time of the expiry sweep could not be recorded (%s)", type(error).__name__)


def last_sweep() -> float | None:
    """When a sweep last completed (seconds since the epoch), or None if none is on record."""
    value = cache.get(KEY)
    return None if value is None else float(value)


def forget_sweep() -> None:
    cache.delete(KEY)
