"""Live presence across real processes: two ASGI servers (daphne) and a Celery worker sharing Redis
and the test database, as a deployment runs. A change made on one server, or computed in the
worker, reaches a socket held by the other server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from presence import services
from sparks_site.celery import app
from tests.databases import database_url
from tests.presence.live_helpers import settle, token_of

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The suite runs tasks eagerly; this test sends its task to a real worker on purpose.
    pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored"),
]

PROJECT_DIR = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 15


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment() -> dict[str, str]:
    return {
        **os.environ,
        # The test database pytest created, not the one DATABASE_URL names.
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        # The same key as here: device ids are a keyed hash, and this test registers one itself too.
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "BEAT_IN_PROCESS": "0",  # only the worker may sweep
    }


def _wait_for_port(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server on port {port} exited:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the server on port {port} did not start within {STARTUP_SECONDS} s:\n{log.read_text()}")


@dataclass
class Stack:
    server_a: str
    server_b: str
    queue: str


@pytest.fixture
def stack(transactional_db, tmp_path):
    """Two daphne servers and a Celery worker on a queue of its own; stopped before the database is flushed."""
    env = _environment()
    port_a, port_b = _free_port(), _free_port()
    queue = f"test-live-{uuid.uuid4().hex}"
    daphne = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p"]
    commands = {
        "server-a": [*daphne, str(port_a), "sparks_site.asgi:application"],
        "server-b": [*daphne, str(port_b), "sparks_site.asgi:application"],
        "worker": [sys.executable, "-m", "celery", "-A", "sparks_site", "worker", "-Q", queue, "--pool=solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=WARNING"],
    }  # fmt: skip
    processes: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for name, command in commands.items():
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                processes[name] = (
                    subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=out, stderr=subprocess.STDOUT),
                    log,
                )
        _wait_for_port(processes["server-a"][0], port_a, processes["server-a"][1])
        _wait_for_port(processes["server-b"][0], port_b, processes["server-b"][1])
        yield Stack(f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}", queue)
    finally:
        for process, _ in processes.values():
            process.terminate()
        for name, (process, log) in processes.items():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode not in (0, -15):
                print(f"--- {name} exited with {process.returncode}:\n{log.read_text()}")


def _receive(ws: ClientConnection, timeout: float = 5) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def _receive_until(ws: ClientConnection, predicate, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = _receive(ws, max(0.01, deadline - time.monotonic()))
        if predicate(message):
            return message


def test_changes_on_another_server_and_in_the_worker_reach_a_socket(stack, alice, bob):
    settle(alice, bob)
    alice_key, bob_key = token_of(alice), token_of(bob)
    bob_id = str(bob.public_id)

    def is_bob(status: str):
        return lambda m: m["type"] == "presence" and m["user_id"] == bob_id and m["status"] == status

    # Refusals reach a real client as close codes.
    with (
        connect(f"ws://{stack.server_a}/ws/presence/", open_timeout=5) as anonymous,
        pytest.raises(ConnectionClosed) as closed,
    ):
        anonymous.recv(timeout=5)
    assert closed.value.rcvd.code == 4401

    with connect(f"ws://{stack.server_a}/ws/presence/?token={alice_key}", open_timeout=5) as ws:
        snapshot = _receive(ws)
        assert (snapshot["type"], snapshot["last"]) == ("snapshot", True)
        assert [peer["user_id"] for peer in snapshot["peers"]] == [bob_id]

        # Bob signs a device in through server B: alice's socket on server A hears of it.
        response = httpx.post(
            f"http://{stack.server_b}/api/v1/devices",
            json={"installation_id": "bob-laptop"},
            headers={"Authorization": f"Token {bob_key}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        assert _receive_until(ws, is_bob("available"))["currently_active"] is True

        # Bob's device falls silent: signed in again ten minutes ago and not heard of since. Only
        # the worker's sweep can notice (no server sweeps, and nobody reads bob's presence).
        with time_machine.travel(timezone.now() - timedelta(minutes=10), tick=False):
            services.register_device(bob, "bob-laptop")
        app.send_task("presence.tasks.sweep_expired_presence", queue=stack.queue)

        delta = _receive_until(ws, is_bob("offline"), timeout=15)
        assert delta["activity"] == "offline"
        assert delta["currently_active"] is False
