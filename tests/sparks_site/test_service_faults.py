"""PostgreSQL or Redis going away under a running server: requests answer 503 (JSON, Retry-After),
never 500, and the server recovers by itself when the database is back. The server is a real
gunicorn process whose database connections pass through a proxy the test can cut."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.presence.live_helpers import token_of

pytestmark = pytest.mark.django_db(transaction=True)

PROJECT_DIR = Path(__file__).resolve().parents[2]


class CuttableProxy:
    """A TCP proxy to PostgreSQL on loopback. `cut` drops every connection and refuses new ones
    (the port stays reserved); `restore` accepts again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()  # refused: the database is down
                continue
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy():
    database = settings.DATABASES["default"]
    proxy = CuttableProxy((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
    yield proxy
    proxy.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_url() -> str:
    return settings.REDIS_URL


@pytest.fixture
def server(proxy, tmp_path, redis_url):
    """gunicorn on the test database, through the proxy, with persistent connections."""
    database = settings.DATABASES["default"]
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@127.0.0.1:{proxy.port}/{database['NAME']}",
        "DATABASE_CONN_MAX_AGE": "60",
        "REDIS_URL": redis_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        "BEAT_IN_PROCESS": "0",
    }
    log = tmp_path / "gunicorn.log"
    cmd = [sys.executable, "-m", "gunicorn", "sparks_site.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*cmd, "--workers", "1", "--worker-class", "gthread", "--threads", "2"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not start:\n{log.read_text()}") from None
            time.sleep(0.1)
    yield base
    process.terminate()
    process.wait(10)


def test_a_dropped_database_is_a_503_and_the_server_recovers_when_it_is_back(alice, server, proxy):
    client = httpx.Client(base_url=server, headers={"Authorization": f"Token {token_of(alice)}"}, timeout=10)
    assert client.get("/api/v1/me/calendar").status_code == 200  # a pooled connection is open

    proxy.cut()
    dropped = client.get("/api/v1/me/calendar")  # on the connection that was just dropped
    refused = client.get("/api/v1/me/calendar")  # a new connection, refused
    written = client.put("/api/v1/me/status", json={"status": "busy"})

    for response in (dropped, refused, written):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"] == "database_unavailable"

    proxy.restore()
    assert client.get("/api/v1/me/calendar").status_code == 200
    assert client.put("/api/v1/me/status", json={"status": "busy"}).status_code == 200


@pytest.mark.parametrize("redis_url", [f"redis://127.0.0.1:{_free_port()}/0"])  # nothing listens there
def test_an_unreachable_redis_is_a_503_on_the_api_and_on_the_signals_lane(alice, server):
    headers = {"Authorization": f"Token {token_of(alice)}"}

    read = httpx.get(f"{server}/api/v1/me/presence", headers=headers, timeout=10)
    signal = httpx.post(
        f"{server}/api/v1/devices/{'a' * 32}/signals",
        json={"signals": [{"type": "heartbeat", "seq": 1}]},
        headers=headers,
        timeout=10,
    )

    for response in (read, signal):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"] == "redis_unavailable"
