"""`/healthz` and `/readyz` for a load balancer, under WSGI (Django's handler) and the ASGI app.

Readiness is checked against the real PostgreSQL and Redis; a dependency that is down is a
loopback port nothing listens on (the machine's Redis is never stopped).
"""

from __future__ import annotations

import socket

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.db import connections
from django.test import Client

from sparks_site.asgi import application as asgi_application


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
    assert body["failed"] == ["redis", "broker"]
    assert body["checks"]["redis"]["status"] == "failed"
    assert body["checks"]["redis"]["error"] == "ConnectionError"
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
