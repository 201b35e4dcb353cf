"""Past one machine: two web nodes behind one proxy, as README's "Several web nodes" deploys them.

Each node is its own group of the production servers, started as `make serve-prod` starts its web
and live servers (`deploy.serve.start_servers`, the command lines of `deploy/processes.py`) under a
supervisor of its own, on ports of its own, with a Prometheus directory of its own; node A also
runs the Celery worker and beat (they run wherever convenient). The nodes share only PostgreSQL (a
database of the deployment's own, created and dropped here) and a `redis-server` of the test's
own. One nginx, rendered from serve-prod's template, lists both nodes' web servers in its `web`
upstream and both live servers in its `live` one.

Through real HTTP and websockets: a change made on one node reaches sockets held by the other; a
device that moves between nodes keeps its `seq` and its state; the proxy spreads requests over
both nodes.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import ClientConnection, connect

from deploy import processes, serve
from tests.real_processes import (
    NGINX,
    PrivateRedis,
    deployment_environment,
    eventually,
    free_port,
    nginx_available,
    seed_colleagues,
    throwaway_database,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]
BIN_DIR = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
STARTUP_SECONDS = 60
SUBPROTOCOL = "sparks.presence.v1"


@dataclass
class Node:
    """One node: its web server (REST) and live server (websockets), reached directly."""

    name: str
    web_port: int
    live_port: int
    supervisor: serve.Supervisor
    metrics_token: str

    @property
    def web(self) -> str:
        return f"http://{LOOPBACK}:{self.web_port}"

    @property
    def live(self) -> str:
        return f"ws://{LOOPBACK}:{self.live_port}"

    def signals_counted(self) -> float:
        """Device signals this node's processes counted (`sparks_presence_signals_total`, all types):
        each node adds up its own processes only, from its own Prometheus directory."""
        answer = httpx.get(f"{self.web}/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        return sum(
            sample.value
            for family in text_string_to_metric_families(answer.text)
            if family.name == "sparks_presence_signals"
            for sample in family.samples
            if sample.name == "sparks_presence_signals_total"
        )


@dataclass
class Deployment:
    nodes: tuple[Node, Node]
    proxy_port: int
    people: dict[str, dict[str, str]]
    log_dirs: list[Path] = field(default_factory=list)

    @property
    def entry(self) -> str:
        return f"http://{LOOPBACK}:{self.proxy_port}"

    @property
    def entry_live(self) -> str:
        return f"ws://{LOOPBACK}:{self.proxy_port}"

    def token(self, name: str) -> str:
        return self.people[name]["token"]

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.parent.name}/{path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for directory in self.log_dirs
            for path in sorted(directory.glob("*.log"))
        )


def _api(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=15)


def _migrate(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _all_running(supervisors: list[serve.Supervisor], about: Callable[[], str]) -> None:
    for supervisor in supervisors:
        for name, child in supervisor.children.items():
            if child.poll() is not None:
                raise AssertionError(f"{name} exited with {child.returncode}:\n{about()}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    if not nginx_available():
        pytest.skip(f"nginx is not installed at {NGINX} and could not be installed")
    workdir = tmp_path_factory.mktemp("nodes")
    redis_server = PrivateRedis(workdir)
    supervisors: list[serve.Supervisor] = []
    with throwaway_database(f"nodes_{uuid.uuid4().hex[:8]}") as database_url:
        redis_server.start()
        try:
            # What every process of the deployment shares, wherever it runs.
            shared = {
                **deployment_environment(),
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_server.url,
                "SECRET_KEY": secrets.token_urlsafe(50),
                "PRESENCE_METRICS_TOKEN": secrets.token_urlsafe(20),
                # Kept out of the working tree (nothing is collected: no static file is asked for).
                "STATIC_ROOT": str(workdir / "static"),
            }
            (workdir / "static").mkdir()
            envs = {}
            for name in ("a", "b"):
                (workdir / f"node-{name}" / "metrics").mkdir(parents=True)
                envs[name] = serve.app_environment(shared, tls=False, metrics_dir=workdir / f"node-{name}" / "metrics")
            # The first node to start prepares the database, as serve-prod does.
            _migrate(envs["a"])
            people = seed_colleagues(envs["a"], "ada", "ben", "cy", "dee")

            nodes = []
            for name, env in envs.items():
                supervisor = serve.Supervisor(env, log_dir=workdir / f"node-{name}")
                supervisors.append(supervisor)
                node = Node(name, free_port(), free_port(), supervisor, shared["PRESENCE_METRICS_TOKEN"])
                serve.start_servers(supervisor, BIN_DIR, LOOPBACK, node.web_port, node.live_port, 1, proxy=LOOPBACK)
                if name == "a":
                    supervisor.start("worker", processes.worker_command(BIN_DIR))
                    supervisor.start("beat", processes.beat_command(BIN_DIR))
                nodes.append(node)

            proxy_dir = workdir / "proxy"
            (proxy_dir / "run").mkdir(parents=True)
            proxy_port = free_port()
            config = serve.render_nginx(
                proxy_dir / "run",
                LOOPBACK,
                proxy_port,
                [f"{LOOPBACK}:{node.web_port}" for node in nodes],
                [f"{LOOPBACK}:{node.live_port}" for node in nodes],
                workdir / "static",
                shared,
            )
            proxy = serve.Supervisor(shared, log_dir=proxy_dir)
            supervisors.insert(0, proxy)  # stopped first: no request comes in while the nodes stop
            proxy.start("nginx", [NGINX, "-e", "stderr", "-p", str(proxy_dir / "run"), "-c", str(config)])

            stack = Deployment((nodes[0], nodes[1]), proxy_port, people, [s.log_dir for s in supervisors])
            probes = [f"{n.web}/readyz" for n in nodes] + [f"http://{LOOPBACK}:{n.live_port}/healthz" for n in nodes]
            # The proxy last, once every node answers: a node nginx found not listening yet would be
            # left out of its rotation for 10 s (its max_fails), and the spreading test would see one.
            probes.append(f"{stack.entry}/readyz")

            def ready() -> bool:
                _all_running(supervisors, stack.logs)
                return all(_answers(url) for url in probes)

            eventually("both nodes and the proxy answer", ready, STARTUP_SECONDS, interval=0.3, about=stack.logs)
            yield stack
            _all_running(supervisors, stack.logs)
        finally:
            for supervisor in supervisors:
                supervisor.stop()
            redis_server.kill()


@contextmanager
def watching(live_url: str, token: str) -> Iterator[ClientConnection]:
    """A colleague's presence websocket at `live_url`, once its whole snapshot has arrived."""
    with connect(f"{live_url}/ws/presence/", subprotocols=[SUBPROTOCOL, f"token.{token}"], open_timeout=10) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        message = json.loads(ws.recv(timeout=10))
        while not (message["type"] == "snapshot" and message["last"]):
            message = json.loads(ws.recv(timeout=10))
        yield ws


def receive_until(ws: ClientConnection, wanted: Callable[[dict], bool], timeout: float = 10) -> dict:
    """The first message `wanted` accepts, skipping others (a colleague's earlier changes)."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if wanted(message):
            return message


def delta(user_id: str, status: str) -> Callable[[dict], bool]:
    return lambda m: m["type"] == "presence" and m["user_id"] == user_id and m["status"] == status


def sign_in(base_url: str, token: str, installation_id: str) -> str:
    with _api(base_url, token) as api:
        answer = api.post("/api/v1/devices", json={"installation_id": installation_id})
    assert answer.status_code == 201, answer.text
    return answer.json()["device_id"]


def send(base_url: str, token: str, device_id: str, kind: str, value: str | None, seq: int) -> dict:
    signal = {"type": kind, "seq": seq, **({"value": value} if value is not None else {})}
    with _api(base_url, token) as api:
        answer = api.post(f"/api/v1/devices/{device_id}/signals", json={"signals": [signal]})
    assert answer.status_code == 202, answer.text
    return answer.json()


def my_presence(base_url: str, token: str, reads: int = 1) -> list[dict]:
    """`reads` answers of GET /api/v1/me/presence, sent one after the other on one connection."""
    bodies = []
    with _api(base_url, token) as api:
        for _ in range(reads):
            answer = api.get("/api/v1/me/presence")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            body.pop("last_active_ago")  # milliseconds as of the read: differs from one read to the next
            bodies.append(body)
    return bodies


def test_a_change_made_on_one_node_reaches_sockets_held_by_the_other(deployment: Deployment):
    a, b = deployment.nodes
    ada, ben = deployment.people["ada"], deployment.people["ben"]
    # Ben watches on each node's live server directly, and through the proxy.
    with (
        watching(a.live, ben["token"]) as on_a,
        watching(b.live, ben["token"]) as on_b,
        watching(deployment.entry_live, ben["token"]) as through_proxy,
    ):
        # A signal on node A: decided and announced from the hot store, in the node's Lua step.
        device = sign_in(a.web, ada["token"], "ada-laptop")
        assert send(a.web, ada["token"], device, "call", "start", 1)["status"] == "busy"
        for ws in (on_b, on_a, through_proxy):
            receive_until(ws, delta(ada["id"], "busy"))

        # A manual status on node B: decided from the database, announced once committed.
        with _api(b.web, ada["token"]) as api:
            answer = api.put("/api/v1/me/status", json={"status": "dnd", "message": "Focus time"})
        assert answer.status_code == 200, answer.text
        for ws in (on_a, on_b, through_proxy):
            assert receive_until(ws, delta(ada["id"], "dnd"))["status_msg"] == "Focus time"


def test_a_device_moving_between_nodes_keeps_its_sequence_and_state(deployment: Deployment):
    a, b = deployment.nodes
    token = deployment.token("cy")
    device = sign_in(a.web, token, "cy-phone")
    assert send(a.web, token, device, "heartbeat", None, 1)["signals_applied"] == 1
    assert send(a.web, token, device, "call", "start", 2)["status"] == "busy"

    # On node B, what the device sent through node A counts: seq 2 was taken, 1 is older.
    for kind, value, seq in (("call", "end", 2), ("visibility", "hidden", 1)):
        stale = send(b.web, token, device, kind, value, seq)
        assert (stale["signals_applied"], stale["signals_ignored"]) == (0, 1), (kind, seq)
        assert (stale["status"], stale["reason"]) == ("busy", "in_call")
    moved_on = send(b.web, token, device, "call", "end", 3)
    assert (moved_on["signals_applied"], moved_on["signals_ignored"]) == (1, 0)
    assert (moved_on["status"], moved_on["reason"]) == ("available", "device_active")

    # Back on node A, seq 3 is taken there too: the sequence went with the device, not the node.
    back = send(a.web, token, device, "call", "start", 3)
    assert (back["signals_applied"], back["signals_ignored"], back["status"]) == (0, 1, "available")

    # One decision, whichever node answers: each directly, and the proxy (which sends the requests
    # of one connection to the nodes in turn) twice.
    [read_on_a] = my_presence(a.web, token)
    assert (read_on_a["status"], read_on_a["reason"]) == ("available", "device_active")
    assert my_presence(b.web, token) == [read_on_a]
    assert my_presence(deployment.entry, token, reads=2) == [read_on_a, read_on_a]


def test_the_proxy_spreads_requests_over_both_nodes(deployment: Deployment):
    token = deployment.token("dee")
    device = sign_in(deployment.entry, token, "dee-laptop")
    before = [node.signals_counted() for node in deployment.nodes]

    # One client, one keep-alive connection to the proxy, as a device has.
    with _api(deployment.entry, token) as api:
        for seq in range(1, 11):
            heartbeat = {"signals": [{"type": "heartbeat", "seq": seq}]}
            answer = api.post(f"/api/v1/devices/{device}/signals", json=heartbeat)
            assert answer.status_code == 202, answer.text
            assert answer.json()["signals_applied"] == 1

    served = [node.signals_counted() - counted for node, counted in zip(deployment.nodes, before, strict=True)]
    assert sum(served) == 10, served
    assert all(count > 0 for count in served), served
