"""Celery beat runs as one copy: a second beat waits on the Redis lock and takes over when the first
stops (at once) or dies (within the lock's TTL).

Real `celery -A sparks_site beat` processes on the test database and a private redis-server;
which beat runs the schedule is read from its log ("Sending due task", Celery's line for each
periodic task it sends).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django_celery_beat.schedulers import DatabaseScheduler

from sparks_site.beat import LOCK_NAME, BeatLock, SingleBeatScheduler
from sparks_site.celery import app as celery_app
from tests.databases import process_environment
from tests.real_processes import CeleryProcesses, PrivateRedis, eventually

# Beat closes database connections as it sets up, which a test transaction would not survive.
pytestmark = pytest.mark.django_db(transaction=True)

TTL_SECONDS = 4
SENT = "Sending due task"


class Beats(CeleryProcesses):
    """`celery beat` processes, each logging to a file of its own."""

    def __init__(self, workdir: Path, redis_url: str) -> None:
        env = process_environment(
            redis_url,
            LOG_FORMAT="text",
            CELERY_TASK_ALWAYS_EAGER="0",
            PRESENCE_SWEEP_INTERVAL_SECONDS="1",
            BEAT_LOCK_TTL_SECONDS=str(TTL_SECONDS),
        )
        super().__init__(workdir, env)

    def start(self, name: str) -> subprocess.Popen:
        return super().start(name, command="beat")

    def sent(self, name: str) -> int:
        return self.log(name).count(SENT)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def beats(tmp_path) -> Iterator[Beats]:
    server = PrivateRedis(tmp_path)
    server.start()
    group = Beats(tmp_path, server.url)
    try:
        yield group
    except BaseException:
        for name in group.processes:
            print(f"--- {name} ---\n{group.log(name)[-4000:]}")
        raise
    finally:
        group.stop_all()
        server.kill()


def test_a_second_beat_waits_and_takes_over_when_the_first_dies(beats):
    first = beats.start("first")
    eventually("the first beat sends the schedule", lambda: beats.sent("first") >= 2, 40)
    beats.start("second")
    eventually("the second beat waits", lambda: "Another beat holds the lock" in beats.log("second"), 40)

    # While the first lives, the second sends nothing; the first keeps the schedule (its lock
    # renewed past the TTL).
    before = beats.sent("first")
    time.sleep(TTL_SECONDS + 2)
    assert beats.sent("second") == 0
    assert beats.sent("first") > before

    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed = time.monotonic()
    eventually("the second beat takes over", lambda: beats.sent("second") > 0, TTL_SECONDS + 10)
    taken_over = time.monotonic() - killed
    assert taken_over <= TTL_SECONDS + 2.5
    assert "Beat holds the lock" in beats.log("second")


def test_a_beat_that_stops_hands_the_lock_over_at_once(beats):
    first = beats.start("first")
    eventually("the first beat sends the schedule", lambda: beats.sent("first") >= 1, 40)
    beats.start("second")
    eventually("the second beat waits", lambda: "Another beat holds the lock" in beats.log("second"), 40)

    first.terminate()
    first.wait(20)
    assert "Beat released the lock" in beats.log("first")
    stopped = time.monotonic()
    eventually("the second beat takes over", lambda: beats.sent("second") > 0, TTL_SECONDS + 10)

    # Well before the lock would have expired on its own.
    assert time.monotonic() - stopped < TTL_SECONDS - 1


def test_a_beat_whose_lock_was_taken_stops_sending(beats):
    """A beat that stalled past its TTL while another took the lock finds out at its next renewal."""
    client = redis.Redis.from_url(beats.env["REDIS_URL"])
    stalled = BeatLock(client, ttl_seconds=3)
    assert stalled.hold()

    client.delete(LOCK_NAME)  # as if it expired...
    other = BeatLock(client, ttl_seconds=3)
    assert other.hold()  # ...and another beat took it

    stalled.renewed_at = time.monotonic() - 2  # a renewal is due
    assert not stalled.hold()
    assert other.hold()
    stalled.release()  # not its lock: nothing to release, the other's stays
    assert client.get(LOCK_NAME) is not None


def test_a_beat_that_cannot_reach_redis_sends_nothing_and_keeps_running():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lock = BeatLock(redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5), ttl_seconds=3)

    assert lock.hold() is False
    assert lock.hold() is False
    lock.release()


def test_a_beat_stopped_in_the_middle_of_a_tick_hands_the_lock_over_without_saving(settings, monkeypatch):
    """Celery closes the scheduler from its SIGTERM handler; in the middle of a tick that may be a
    database query, which a second query on the same connection would wait on for ever."""
    scheduler = SingleBeatScheduler(app=celery_app, lazy=True)
    saved: list[str] = []
    monkeypatch.setattr(scheduler, "sync", lambda: saved.append("schedule saved"))

    def tick_interrupted_by_sigterm(self, *args, **kwargs):
        self.close()  # what Celery's handler does, then it raises SystemExit
        raise SystemExit

    monkeypatch.setattr(DatabaseScheduler, "tick", tick_interrupted_by_sigterm)
    with pytest.raises(SystemExit):
        scheduler.tick()

    assert saved == []
    next_beat = BeatLock(redis.Redis.from_url(settings.REDIS_URL), ttl_seconds=3)
    assert next_beat.hold()
    next_beat.release()

    scheduler.close()  # a stop between two ticks saves the schedule
    assert saved == ["schedule saved"]
