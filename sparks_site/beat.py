"""Celery beat held to one running copy by a Redis lock.

Two beats would send every periodic task twice (two sweeps, two write-behind passes at once). A
deployment may still start a second beat, as a standby: `SingleBeatScheduler` runs the schedule
only while it holds the lock `sparks:beat` (redis-py's `Lock`, with a TTL of
`BEAT_LOCK_TTL_SECONDS`), renewed every third of the TTL while beat ticks, released when beat
shuts down. A beat that does not hold it sends nothing and tries again every second: it takes
over at once after a clean stop, within the TTL after a crash (kill -9, a lost host).

Without `REDIS_URL` there is no lock (the embedded default runs no beat: the server process runs
the schedule itself, sparks_site/periodic.py).
"""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler
from redis.exceptions import LockError, LockNotOwnedError, RedisError

logger = logging.getLogger(__name__)

LOCK_NAME = "sparks:beat"
# A standby polls the lock this often at most: a clean stop hands over within about a second.
WAIT_SECONDS = 1.0


class BeatLock:
    """The lock one beat holds while it runs the schedule."""

    def __init__(self, client: redis.Redis, ttl_seconds: float, name: str = LOCK_NAME) -> None:
        self.name = name
        self.ttl_seconds = ttl_seconds
        # Not thread-local: one beat holds it, whichever of its threads ticks or closes the
        # scheduler (`worker -B` runs beat in a thread of its own).
        self.lock = client.lock(name, timeout=ttl_seconds, thread_local=False)
        self.held = False
        self.renewed_at: float | None = None
        self.waiting_said = False
        self.unreachable_said = False

    @classmethod
    def from_settings(cls) -> BeatLock | None:
        if not settings.REDIS_URL:
            return None
        ttl = float(settings.BEAT_LOCK_TTL_SECONDS)
        # A Redis that stopped answering must not hold beat past the lock's own renewal time.
        timeout = max(min(ttl / 3, 5.0), 0.5)
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
        return cls(client, ttl)

    @property
    def renew_seconds(self) -> float:
        return self.ttl_seconds / 3

    @property
    def wait_seconds(self) -> float:
        return min(WAIT_SECONDS, self.renew_seconds)

    def hold(self) -> bool:
        """True while this beat holds the lock: renewed when a third of the TTL has passed since it
        was last set, taken when free. Renewed before anything is sent, so a beat that stalled past
        the TTL (its lock taken over meanwhile) finds out before sending a duplicate."""
        started = time.monotonic()
        if self.held and self.renewed_at is not None and started - self.renewed_at < self.renew_seconds:
            return True
        try:
            if self.held:
                try:
                    self.lock.reacquire()
                except LockNotOwnedError:
                    self.held = False
                    logger.warning(
                        "Beat lost the lock %s (it expired): it sends nothing until it holds it again.", self.name
                    )
            if not self.held and self.lock.acquire(blocking=False):
                self.held = True
                self.waiting_said = False
                logger.info("Beat holds the lock %s: this beat runs the schedule.", self.name)
        except RedisError as error:
            # Kept as held: the next tick renews it if the token is still ours.
            if not self.unreachable_said:
                self.unreachable_said = True
                logger.warning(
                    "Beat cannot reach Redis for its lock (%s): it sends nothing meanwhile.", type(error).__name__
                )
            return False
        self.unreachable_said = False
        if self.held:
            self.renewed_at = started
        elif not self.waiting_said:
            self.waiting_said = True
            logger.info(
                "Another beat holds the lock %s: this one waits and takes over when it stops (within %s s).",
                self.name,
                self.ttl_seconds,
            )
        return self.held

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            self.lock.release()
        except (LockError, RedisError):
            return  # expired or unreachable: it frees itself within the TTL
        logger.info("Beat released the lock %s.", self.name)


class SingleBeatScheduler(DatabaseScheduler):
    """django-celery-beat's scheduler (the schedule in the database), run only under the lock."""

    def __init__(self, *args, **kwargs) -> None:
        self.sparks_beat_lock = BeatLock.from_settings()
        self.sparks_ticking = False
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs) -> float:
        self.sparks_ticking = True
        try:
            beat_lock = self.sparks_beat_lock
            if beat_lock is None:
                return super().tick(*args, **kwargs)
            if not beat_lock.hold():
                return beat_lock.wait_seconds
            # Wake up in time to renew the lock, however far away the next task is.
            return min(super().tick(*args, **kwargs), beat_lock.renew_seconds)
        finally:
            self.sparks_ticking = False

    def close(self) -> None:
        try:
            if self.sparks_ticking:
                # Celery closes the scheduler from its SIGTERM handler, which may interrupt a tick
                # in the middle of a database query: saving the schedule then would query the same
                # connection again and wait for ever, holding the lock. The entries' last run
                # times are not saved (their intervals count from the next start).
                logger.info("Beat stops in the middle of a tick: the schedule's run times are not saved.")
                return
            super().close()
        finally:
            if self.sparks_beat_lock is not None:
                self.sparks_beat_lock.release()
