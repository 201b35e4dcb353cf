"""`/healthz` and `/readyz` for a load balancer, under WSGI (Django's handler) and the ASGI app.

Readiness is checked against the real PostgreSQL and Redis; a dependency that is down is a
loopback port nothing listens on (the machine's Redis is never stopped).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.db import connections
from django.test import Client, override_settings

from presence import sweep_clock, tasks
from sparks_site import ops
from sparks_site.asgi import application as asgi_application

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _the_sweep_ran_just_now(_clean_cache) -> Iterator[None]:
    """As under a running beat: the expiry sweep completed a moment ago (the suite runs no beat),
    on Redis and, for the tests of the embedded default, in this process's memory."""
    sweep_clock.record_sweep()
    with override_settings(REDIS_URL=""):
        sweep_clock.record_sweep()
    yield
    with override_settings(REDIS_URL=""):
        sweep_clock.forget_sweep()


@pytest.fixture
def process_up_for(monkeypatch):
    """Pretend this process found no sweep on record since `seconds` ago (its start, say)."""

    def up_for(seconds: float) -> None:
        monkeypatch.setattr(ops.SWEEP_WATCH, "missing_since", time.time() - seconds)

    return up_for


def closed_port_url(scheme: str = "redis") -> str:
    """A URL on a loopback port that was free a moment ago and that nothing is started on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}/0"


def asgi_get(path: str, host: bytes = b"127.0.0.1") -> tuple[int, bytes]:
    async def scenario() -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", host)],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8001),
        }
        communicator = ApplicationCommunicator(asgi_application, scope)
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(10)
        body = b""
        while True:
            message = await communicator.receive_output(10)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await communicator.wait(1)
        return start["status"], body

    return async_to_sync(scenario)()


# --- /healthz ---------------------------------------------------------------------------------


def test_healthz_answers_that_the_process_is_up():
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_answers_a_probe_by_address_whatever_the_host_header(settings):
    settings.ALLOWED_HOSTS = ["presence.example"]

    response = Client(HTTP_HOST="10.0.0.7:8000").get("/healthz")

    assert response.status_code == 200


def test_healthz_touches_no_dependency(settings):
    # No django_db mark: a database query here raises. Redis and the broker are unreachable.
    settings.REDIS_URL = closed_port_url()
    settings.CELERY_BROKER_URL = closed_port_url()

    response = Client().get("/healthz")

    assert response.status_code == 200


def test_the_asgi_app_answers_healthz():
    status, body = asgi_get("/healthz", host=b"10.0.0.7")

    assert status == 200
    assert body == b'{"status": "ok"}'


# --- /readyz ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_is_200_when_database_redis_and_broker_answer():
    response = Client().get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failed"] == []
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "redis": "ok",
        "broker": "ok",
        "sweep": "ok",
    }


@pytest.mark.django_db
def test_readyz_is_503_naming_redis_when_redis_is_down(settings):
    down = closed_port_url()
    settings.REDIS_URL = down
    settings.CELERY_BROKER_URL = down

    response = Client().get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    # The sweep's record is in Redis too: whether it runs cannot be told.
    assert body["failed"] == ["redis", "broker", "sweep"]
    assert body["checks"]["redis"]["status"] == "failed"
    assert body["checks"]["redis"]["error"] == "ConnectionError"
    assert body["checks"]["sweep"]["error"] == "ConnectionError"
    assert body["checks"]["database"]["status"] == "ok"


@pytest.mark.django_db
def test_readyz_names_the_broker_alone_when_only_the_broker_is_down(settings):
    settings.CELERY_BROKER_URL = closed_port_url()

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]


@pytest.mark.django_db
def test_readyz_does_not_leak_the_broker_url(settings):
    settings.CELERY_BROKER_URL = closed_port_url().replace("redis://", "redis://:s3cret-password@")

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert b"s3cret-password" not in response.content


@pytest.mark.django_db
def test_readyz_names_the_database_when_it_cannot_be_reached(monkeypatch):
    # The check opens a connection of its own from these settings; the test's connection is open already.
    port = closed_port_url().rsplit(":", 1)[1].split("/")[0]
    monkeypatch.setitem(connections.settings["default"], "HOST", "127.0.0.1")
    monkeypatch.setitem(connections.settings["default"], "PORT", port)

    response = Client().get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["database"]
    assert body["checks"]["database"]["error"] == "OperationalError"


@pytest.mark.django_db
def test_readyz_skips_redis_and_broker_on_the_embedded_default(settings):
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = "memory://"

    response = Client().get("/readyz")

    assert response.status_code == 200
    checks = response.json()["checks"]
    assert (checks["redis"]["status"], checks["broker"]["status"]) == ("skipped", "skipped")


@pytest.mark.django_db(transaction=True)
def test_the_asgi_app_answers_readyz_with_503_when_redis_is_down(settings):
    down = closed_port_url()
    settings.REDIS_URL = down
    settings.CELERY_BROKER_URL = down

    status, body = asgi_get("/readyz")

    assert status == 503
    assert b'"redis"' in body


@pytest.mark.django_db(transaction=True)
def test_the_asgi_app_answers_readyz_with_200_when_all_answer():
    status, _ = asgi_get("/readyz")

    assert status == 200


# --- /readyz: the expiry sweep ------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_says_how_long_ago_the_sweep_ran(settings):
    settings.READINESS_SWEEP_STALE_SECONDS = 30
    sweep_clock.record_sweep(time.time() - 3)

    response = Client().get("/readyz")

    assert response.status_code == 200
    sweep = response.json()["checks"]["sweep"]
    assert sweep["status"] == "ok"
    assert 3 <= sweep["last_run_seconds_ago"] < 5


@pytest.mark.django_db
def test_readyz_is_503_naming_the_sweep_when_it_stopped_running(settings):
    settings.READINESS_SWEEP_STALE_SECONDS = 30
    sweep_clock.record_sweep(time.time() - 100)

    response = Client().get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["sweep"]
    assert body["checks"]["sweep"]["error"] == "stale"
    assert 100 <= body["checks"]["sweep"]["last_run_seconds_ago"] < 102
    assert body["checks"]["database"]["status"] == "ok"


@pytest.mark.django_db
def test_readyz_is_503_when_no_sweep_ever_ran_in_a_process_up_for_long(settings, process_up_for):
    settings.READINESS_SWEEP_STALE_SECONDS = 30
    sweep_clock.forget_sweep()
    process_up_for(31)

    response = Client().get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["sweep"]
    assert body["checks"]["sweep"] == {
        "status": "failed",
        "error": "never_ran",
        "last_run_seconds_ago": None,
        "duration_ms": body["checks"]["sweep"]["duration_ms"],
    }


@pytest.mark.django_db
def test_a_process_just_started_is_ready_before_the_first_sweep(settings, process_up_for):
    settings.READINESS_SWEEP_STALE_SECONDS = 30
    sweep_clock.forget_sweep()
    process_up_for(2)

    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"]["sweep"]["last_run_seconds_ago"] is None


@pytest.mark.django_db
def test_a_lost_record_is_given_the_window_again_from_when_it_was_missed(settings, process_up_for):
    """After a Redis restart, a long-running process waits a window for the next sweep's record."""
    settings.READINESS_SWEEP_STALE_SECONDS = 30
    process_up_for(1000)
    assert Client().get("/readyz").status_code == 200  # a record: the watch is reset
    sweep_clock.forget_sweep()

    assert Client().get("/readyz").status_code == 200
    assert Client().get("/readyz").json()["checks"]["sweep"]["status"] == "ok"


@pytest.mark.django_db
def test_on_the_embedded_default_the_record_is_the_process_s_own(settings):
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = "memory://"
    sweep_clock.forget_sweep()
    sweep_clock.record_sweep(time.time() - 100)
    settings.READINESS_SWEEP_STALE_SECONDS = 30

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["failed"] == ["sweep"]
    sweep_clock.record_sweep()
    assert Client().get("/readyz").status_code == 200


@pytest.mark.parametrize(("interval", "window"), [("5", 30.0), ("20", 60.0)])
def test_the_default_window_is_three_sweep_intervals_and_at_least_30_s(interval, window):
    env = {key: value for key, value in os.environ.items() if key != "READINESS_SWEEP_STALE_SECONDS"}
    env.update(PRESENCE_SWEEP_INTERVAL_SECONDS=interval, DJANGO_SETTINGS_MODULE="sparks_site.settings")
    code = "from django.conf import settings; print(settings.READINESS_SWEEP_STALE_SECONDS)"

    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=PROJECT_DIR, capture_output=True, text=True, check=True, timeout=60
    )

    assert float(result.stdout) == window


@pytest.mark.django_db
def test_the_beat_task_records_its_sweep():
    sweep_clock.forget_sweep()

    tasks.sweep_expired_presence.delay()

    assert time.time() - sweep_clock.last_sweep() < 2


@pytest.mark.django_db
def test_a_sweep_check_that_hangs_fails_within_the_timeout(settings, monkeypatch):
    settings.READINESS_TIMEOUT_SECONDS = 0.5

    def hanging(timeout: float) -> float:
        time.sleep(3)
        return time.time()

    monkeypatch.setattr(ops, "last_sweep", hanging)
    started = time.monotonic()

    response = Client().get("/readyz")

    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert response.json()["checks"]["sweep"]["error"] == "timeout"
