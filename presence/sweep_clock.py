"""When the expiry sweep last completed, for `/readyz` (see `sparks_site.ops.check_sweep`).

Written by whichever runs the sweep: beat's `presence.tasks.sweep_expired_presence` on a worker,
or the in-process beat of the embedded default. With `REDIS_URL` it is a Redis key, which every
web process reads (a worker wrote it); without, a variable of the process, where the sweep runs
in the web process itself. A wall-clock time: processes on several hosts compare it.

Redis is used directly rather than through Django's cache, so that the probe's read has its own
timeouts and its connection is closed at once (a cache object would be made for each of the
probe's threads, without a socket timeout).
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

KEY = "sparks:presence:sweep:last-run"
WRITE_TIMEOUT_SECONDS = 2.0

_in_memory: float | None = None  # the embedded default's record


@lru_cache(maxsize=4)
def _writer(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=WRITE_TIMEOUT_SECONDS, socket_timeout=WRITE_TIMEOUT_SECONDS)


def record_sweep(at: float | None = None) -> None:
    """Note that a sweep completed now (or at `at`, seconds since the epoch). Never raises: the
    sweep ran, and a Redis that cannot be written to shows in `/readyz` by itself."""
    global _in_memory
    value = time.time() if at is None else at
    if not settings.REDIS_URL:
        _in_memory = value
        return
    try:
        _writer(settings.REDIS_URL).set(KEY, repr(value))
    except redis.RedisError as error:
        logger.warning("The time of the expiry sweep could not be recorded (%s)", type(error).__name__)


def last_sweep(timeout: float = 2.0) -> float | None:
    """When a sweep last completed (seconds since the epoch), or None if none is on record. Raises
    redis' errors when Redis does not answer within `timeout`."""
    if not settings.REDIS_URL:
        return _in_memory
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        value = client.get(KEY)
    finally:
        client.close()
    return None if value is None else float(value)


def forget_sweep() -> None:
    global _in_memory
    _in_memory = None
    if settings.REDIS_URL:
        _writer(settings.REDIS_URL).delete(KEY)
