"""Faults of the services behind a running deployment: Redis restarted mid-traffic (everything it
held is lost), and the Celery worker down for a while.

Each test runs the real processes of a deployment — the web server (`deploy/processes.py`'s), a
Celery worker and beat — on the
test database and on a Redis server of its own (`redis-server` on a free loopback port, keeping
nothing on disk), so that Redis can be killed and started again without touching anyone else's.
Devices heartbeat and change state through the REST API; what the API and PostgreSQL say is
checked against what the engine decides from the devices' last signals, the manual status and
the preferences.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import redis
from django.utils import timezone

from deploy import processes
from integrations.mapping import MATRIX_BUSY, MATRIX_BUSY_FEATURE, MATRIX_OFFLINE, MATRIX_ONLINE
from orgs.models import User
from presence import selectors
from presence.engine import DeviceInput, aggregate
from presence.hot import layout
from presence.models import Device, ManualStatus, PresenceHistory, PresencePreferences, PresenceState
from presence.vocabulary import ActivityValue, NetworkValue, VisibilityValue
from tests.databases import process_environment
from tests.factories import MatrixHomeserverFactory
from tests.presence.live_helpers import GroupListener, token_of
from tests.real_processes import PrivateRedis, eventually, free_port

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The suite runs tasks eagerly; here the server processes send theirs to a real worker.
    pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored"),
]

PROJECT_DIR = Path(__file__).resolve().parents[2]
HEARTBEAT_SECONDS = 2
DEVICE_TIMEOUT_SECONDS = 10
# What the server processes run with: short intervals, so that a test sees timeouts, sweeps and
# writes behind within seconds.
SERVER_SETTINGS = {
    "PRESENCE_HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT_SECONDS),
    "PRESENCE_DEVICE_TIMEOUT_SECONDS": str(DEVICE_TIMEOUT_SECONDS),
    "PRESENCE_SWEEP_INTERVAL_SECONDS": "1",
    "PRESENCE_PERSIST_INTERVAL_SECONDS": "1",
    "PRESENCE_WRITE_BEHIND": "1",
    "BEAT_IN_PROCESS": "0",
    "PRESENCE_SERVER_DISPATCH": "1",
    "INTEGRATIONS_DISPATCH_COALESCE_SECONDS": "0.2",
    "CELERY_TASK_ALWAYS_EAGER": "0",
    "DEBUG": "0",
}


class Deployment:
    """The production web server, a Celery worker and beat on the test database and a private Redis."""

    def __init__(self, workdir: Path, redis_url: str) -> None:
        self.workdir = workdir
        self.env = process_environment(redis_url, **SERVER_SETTINGS)
        self.processes: dict[str, subprocess.Popen] = {}
        self.base_url = ""

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("a")
        process = subprocess.Popen(command, cwd=PROJECT_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_server(self) -> None:
        port = free_port()
        process = self._spawn("web", processes.web_command(Path(sys.executable).parent, "127.0.0.1", port, workers=1))
        self.base_url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the web server exited:\n{self.log('web')}")
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually("the web server answers", up, 20)

    def start_worker(self) -> None:
        name = "worker"
        before = self.log(name).count(" ready.")
        process = self._spawn(
            name,
            [sys.executable, "-m", "celery", "-A", "sparks_site", "worker", "--pool=solo", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
        )  # fmt: skip

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the Celery worker exited:\n{self.log(name)}")
            return self.log(name).count(" ready.") > before

        eventually("the Celery worker is ready", ready, 30)

    def stop_worker(self) -> None:
        self._stop("worker")

    def start_beat(self) -> None:
        self._spawn(
            "beat",
            [sys.executable, "-m", "celery", "-A", "sparks_site", "beat", "--loglevel=INFO",
             "--schedule", str(self.workdir / "beat-schedule")],
        )  # fmt: skip

    def _stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def stop(self) -> None:
        for name in list(self.processes):
            self._stop(name)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def deployment(transactional_db, tmp_path, private_redis, settings) -> Iterator[Deployment]:
    """The web server, a worker and beat; stopped before the test database is emptied. This process
    decides with the servers' timeouts, and its channel layer is the servers' (to listen)."""
    settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS = HEARTBEAT_SECONDS
    settings.PRESENCE_DEVICE_TIMEOUT_SECONDS = DEVICE_TIMEOUT_SECONDS
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": private_redis.url}], "prefix": "sparks0"},
        }
    }
    stack = Deployment(tmp_path, private_redis.url)
    try:
        stack.start_server()
        stack.start_worker()
        stack.start_beat()
        yield stack
    except BaseException:
        for name in ("web", "worker", "beat"):
            print(f"--- {name} ---\n{stack.log(name)[-6000:]}")
        raise
    finally:
        stack.stop()


class FakeMatrix:
    """The two endpoints of a Matrix homeserver that publishing uses, on loopback: it records the
    presence last set for each Matrix user (with the appservice's token) and answers 200."""

    def __init__(self, as_token: str) -> None:
        self.as_token = as_token
        self.presence: dict[str, dict] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urlsplit(self.path).path == "/_matrix/client/versions":
                    self._answer(200, {"versions": ["v1.11"], "unstable_features": {MATRIX_BUSY_FEATURE: True}})
                else:
                    self._answer(404, {"errcode": "M_NOT_FOUND"})

            def do_PUT(self) -> None:
                parts = urlsplit(self.path).path.split("/")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {fake.as_token}":
                    self._answer(401, {"errcode": "M_UNKNOWN_TOKEN"})
                elif parts[:5] == ["", "_matrix", "client", "v3", "presence"] and parts[6:] == ["status"]:
                    with fake.lock:
                        fake.presence[unquote(parts[5])] = body
                    self._answer(200, {})
                else:
                    self._answer(404, {"errcode": "M_NOT_FOUND"})

            def _answer(self, code: int, body: dict) -> None:
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def presence_of(self, matrix_user_id: str) -> str | None:
        with self.lock:
            body = self.presence.get(matrix_user_id)
        return body["presence"] if body else None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_matrix() -> Iterator[FakeMatrix]:
    server = FakeMatrix("sparks-fault-as-token")
    try:
        yield server
    finally:
        server.close()


# --- Members and their devices, through the API --------------------------------------------------


@dataclass
class FakeDevice:
    """A signed-in device as the server knows it from its signals: what it last reported."""

    user: User
    client: httpx.Client
    device_id: str
    seq: int = 0
    activity: str = ActivityValue.ACTIVE
    visibility: str = VisibilityValue.VISIBLE
    in_call: bool = False
    in_meeting: bool = False
    network: str = NetworkValue.ONLINE

    def send(self, *signals: tuple[str, str | None]) -> httpx.Response:
        """Signals with the next seqs; the device's state moves on only when the server took them."""
        batch = []
        for kind, value in signals:
            self.seq += 1
            batch.append({"type": kind, "seq": self.seq} | ({"value": value} if value is not None else {}))
        response = self.client.post(f"/api/v1/devices/{self.device_id}/signals", json={"signals": batch})
        if response.status_code == 202:
            for kind, value in signals:
                self._apply(kind, value)
        return response

    def heartbeat(self) -> httpx.Response:
        return self.send(("heartbeat", None))

    def _apply(self, kind: str, value: str | None) -> None:
        if kind == "network":
            self.network = value
            return
        self.network = NetworkValue.ONLINE
        if kind == "activity":
            self.activity = value
        elif kind == "visibility":
            self.visibility = value
            if value == VisibilityValue.VISIBLE:
                self.activity = ActivityValue.ACTIVE
        elif kind == "call":
            self.in_call = value == "start"
        elif kind == "meeting":
            self.in_meeting = value == "start"

    def engine_input(self, now) -> DeviceInput:
        return DeviceInput(
            device_id=self.device_id,
            last_seen=now,
            last_active=now,
            activity=ActivityValue(self.activity),
            visibility=VisibilityValue(self.visibility),
            in_call=self.in_call,
            in_meeting=self.in_meeting,
            network=NetworkValue(self.network),
        )


def api_client(base_url: str, user: User) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token_of(user)}"}, timeout=15)


def sign_in(client: httpx.Client, user: User, installation_id: str) -> FakeDevice:
    response = client.post("/api/v1/devices", json={"installation_id": installation_id, "label": installation_id})
    assert response.status_code == 201, response.text
    return FakeDevice(user, client, response.json()["device_id"])


def expected(user: User, devices: list[FakeDevice]) -> dict[str, object]:
    """What the engine decides now from the stored slow inputs (PostgreSQL: preferences, manual
    status, calendar, policy) and the devices' last signals, in the API's words."""
    now = timezone.now()
    inputs, _ = selectors.presence_context_for(user, now)
    mine = tuple(d.engine_input(now) for d in devices if d.user == user)
    decision = aggregate(replace(inputs, devices=mine), now)
    return {
        "status": decision.status.value,
        "activity": decision.activity.value,
        "status_msg": decision.status_msg or None,
        "reason": decision.reason.value,
    }


def visible(expectation: dict[str, object]) -> dict[str, object]:
    return {k: expectation[k] for k in ("status", "activity", "status_msg")}


def read_presence(client: httpx.Client) -> dict[str, object]:
    response = client.get("/api/v1/me/presence")
    assert response.status_code == 200, response.text
    body = response.json()
    return {k: body[k] for k in ("status", "activity", "status_msg", "reason")}


def read_peers(client: httpx.Client) -> dict[str, dict[str, object]]:
    response = client.get("/api/v1/peers")
    assert response.status_code == 200, response.text
    return {
        peer["user_id"]: {k: peer[k] for k in ("status", "activity", "status_msg")}
        for peer in response.json()["results"]
    }


def stored_presence(user: User) -> dict[str, object] | None:
    state = PresenceState.objects.filter(user=user).first()
    if state is None:
        return None
    return {
        "status": state.status,
        "activity": state.activity,
        "status_msg": state.status_msg or None,
        "reason": state.reason,
    }


def stored_device_state(device: FakeDevice) -> tuple[object, ...]:
    row = Device.objects.get(device_id=device.device_id)
    return (row.activity, row.visibility, row.in_call, row.in_meeting, row.network)


def reported_state(device: FakeDevice) -> tuple[object, ...]:
    return (device.activity, device.visibility, device.in_call, device.in_meeting, device.network)


def heartbeat_all(devices: list[FakeDevice]) -> None:
    for device in devices:
        response = device.heartbeat()
        assert response.status_code == 202, response.text


def user_key(user: User) -> str:
    """The user's hash in the deployment's hot store."""
    return layout.user_key(user.pk)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "redis_unavailable"
    assert response.headers["Retry-After"] == "1"


# --- Redis restarted mid-traffic --------------------------------------------------------------------


def test_presence_converges_within_a_heartbeat_after_redis_restarts_and_no_preference_is_lost(
    make_member, organization, deployment, private_redis
):
    alice, bob, dave, erin = (make_member(name) for name in ("alice", "bob", "dave", "erin"))
    clients = {user: api_client(deployment.base_url, user) for user in (alice, bob, dave, erin)}
    laptop = {user: sign_in(clients[user], user, f"{user.username}-laptop") for user in (alice, bob, dave, erin)}
    phone = sign_in(clients[alice], alice, "alice-phone")
    devices = [*laptop.values(), phone]

    # State changes, written behind to PostgreSQL a moment later.
    assert phone.send(("visibility", "hidden")).status_code == 202
    assert laptop[dave].send(("call", "start")).status_code == 202
    now = timezone.now()
    block = {"start": (now - timedelta(minutes=5)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    assert clients[bob].put("/api/v1/me/calendar", json={"blocks": [block]}).status_code == 200
    assert read_presence(clients[bob])["status"] == "busy"  # the calendar, while bob lets it count
    heartbeat_all(devices)
    eventually(
        "the devices' states are written behind to PostgreSQL",
        lambda: all(stored_device_state(d) == reported_state(d) for d in devices),
        20,
    )

    # Steady heartbeats from here on. They are kept in Redis only: the database copy of the
    # devices' last-seen times (refreshed every PRESENCE_DEVICE_FLUSH_SECONDS) falls behind,
    # past the device timeout, as it does for anyone whose state has not changed for a while.
    users = [alice, bob, dave, erin]

    def copies_behind() -> bool:
        heartbeat_all(devices)
        recent = timezone.now() - timedelta(seconds=DEVICE_TIMEOUT_SECONDS)
        return not Device.objects.filter(user__in=users, last_seen_at__gt=recent).exists()

    eventually("the database copies fall behind", copies_behind, DEVICE_TIMEOUT_SECONDS + 20, interval=1)

    # Preferences and a manual status: written to PostgreSQL before they are answered.
    response = clients[bob].patch("/api/v1/me/privacy", json={"use_calendar_busy": False, "priority": "manual_first"})
    assert response.status_code == 200, response.text
    response = clients[alice].put("/api/v1/me/status", json={"status": "dnd", "message": "Focus"})
    assert response.status_code == 200, response.text
    # A state change in the last instant before the crash: maybe not yet written behind.
    assert laptop[erin].send(("visibility", "hidden")).status_code == 202
    before = {user: expected(user, devices) for user in (alice, bob, dave, erin)}
    assert before[alice]["status"] == "dnd"
    assert before[bob]["status"] == "available"  # the calendar no longer counts for bob
    assert before[dave]["status"] == "busy"
    assert before[erin]["status"] == "away"
    for user in (alice, bob, dave, erin):
        assert read_presence(clients[user]) == before[user]

    private_redis.kill()
    # Traffic goes on while Redis is away: answered 503, never 500, and nothing is taken.
    for device in devices:
        assert_unavailable(device.heartbeat())
    assert_unavailable(clients[alice].get("/api/v1/me/presence"))
    assert_unavailable(clients[alice].get("/api/v1/peers"))
    assert_unavailable(clients[bob].get(f"/api/v1/peers/{alice.public_id}"))
    private_redis.start()  # the same port, empty
    back_at = timezone.now()

    # The worker's sweep notices the loss before the devices' next heartbeats come (as in a
    # deployment: it runs every few seconds, a device heartbeats every 30), and rebuilds the hot
    # state of everyone the database holds as not offline.
    hot = redis.Redis.from_url(private_redis.url, decode_responses=True)
    eventually(
        "the sweep rebuilds the hot state",
        lambda: all(hot.hget(user_key(user), layout.FIELD_LOADED) == layout.LOADED for user in users),
        30,
    )
    # The device state the database holds for erin: the hidden window if it was written behind
    # before the crash, else the one before it (the weak point of writing behind).
    erin_written = stored_device_state(laptop[erin])[1] == VisibilityValue.HIDDEN
    if not erin_written:
        laptop[erin].visibility = VisibilityValue.VISIBLE
    # Rebuilt from the database, nobody reads as offline for a copy that is behind: the devices
    # have until their next heartbeat.
    for user in users:
        assert read_presence(clients[user]) == expected(user, devices), user.username

    # One heartbeat interval of traffic: every device's next heartbeat.
    heartbeat_all(devices)
    if not erin_written:
        # Lost with Redis: the server went back to the database's copy, and says so...
        assert read_presence(clients[erin]) == expected(erin, devices)
        # ...until the device's next signal that reports it.
        assert laptop[erin].send(("visibility", "hidden")).status_code == 202

    after = {user: expected(user, devices) for user in (alice, bob, dave, erin)}
    assert after == before
    for user in (alice, bob, dave, erin):
        assert read_presence(clients[user]) == after[user], user.username
    peers = read_peers(clients[alice])
    for user in (bob, dave, erin):
        assert peers[str(user.public_id)] == visible(after[user]), user.username
    response = clients[erin].get(f"/api/v1/peers/{dave.public_id}")
    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("status", "activity", "status_msg")} == visible(after[dave])

    # Nothing the users chose was lost: PostgreSQL and the API still have it.
    preferences = PresencePreferences.objects.get(user=bob)
    assert (preferences.use_calendar_busy, preferences.priority) == (False, "manual_first")
    privacy = clients[bob].get("/api/v1/me/privacy").json()
    assert (privacy["use_calendar_busy"], privacy["priority"]) == (False, "manual_first")
    manual = ManualStatus.objects.get(user=alice)
    assert (manual.status, manual.message) == ("dnd", "Focus")
    assert clients[alice].get("/api/v1/me/status").json()["status"] == "dnd"

    # And the decisions reach PostgreSQL again (written behind, or by the sweep's rebuild).
    def stored_right() -> bool:
        heartbeat_all(devices)  # the devices go on; nobody times out meanwhile
        return all(stored_presence(user) == after[user] for user in (alice, bob, dave, erin))

    eventually("the decisions are in PostgreSQL", stored_right, 20, interval=0.5)
    assert all(stored_device_state(d) == reported_state(d) for d in devices)
    # Nobody was ever told (or shown in the history) that any of them went offline.
    assert not PresenceHistory.objects.filter(user__in=users, status="offline", at__gte=back_at).exists()


# --- The Celery worker down for a while ---------------------------------------------------------


def test_reads_stay_right_while_the_worker_is_down_and_expiry_writes_and_dispatch_catch_up(
    make_member, organization, deployment, fake_matrix
):
    MatrixHomeserverFactory(
        organization=organization,
        base_url=fake_matrix.base_url,
        server_name="example.test",
        as_token=fake_matrix.as_token,
    )
    alice, bob, erin = (make_member(name) for name in ("alice", "bob", "erin"))
    clients = {user: api_client(deployment.base_url, user) for user in (alice, bob, erin)}
    for user in (alice, bob, erin):
        response = clients[user].patch("/api/v1/me/privacy", json={"share_externally": True})
        assert response.status_code == 200, response.text
    laptop = {user: sign_in(clients[user], user, f"{user.username}-laptop") for user in (alice, bob, erin)}
    on_matrix = {user: f"@{user.username}:example.test" for user in (alice, bob, erin)}

    def published(user: User, presence: str) -> bool:
        return fake_matrix.presence_of(on_matrix[user]) == presence

    eventually("published online", lambda: all(published(user, MATRIX_ONLINE) for user in (alice, bob, erin)), 30)

    deployment.stop_worker()
    listener = GroupListener(organization.id)
    try:
        # While the worker is down: alice's and erin's laptops go silent, bob starts a call.
        silent_since = time.monotonic()
        response = laptop[bob].send(("call", "start"))
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "busy"
        while time.monotonic() - silent_since < DEVICE_TIMEOUT_SECONDS + 1:
            assert laptop[bob].heartbeat().status_code == 202
            time.sleep(1)

        # Reads decide afresh: nobody swept alice, yet she reads offline, and bob busy.
        assert read_presence(clients[alice]) == expected(alice, [laptop[bob]]) == {
            "status": "offline", "activity": "offline", "status_msg": None, "reason": "no_live_device",
        }  # fmt: skip
        for reader, peer in ((bob, alice), (alice, bob)):
            response = clients[reader].get(f"/api/v1/peers/{peer.public_id}")
            assert response.status_code == 200, response.text
            assert {k: response.json()[k] for k in ("status", "activity", "status_msg")} == visible(
                expected(peer, [laptop[bob]])
            )
        assert read_presence(clients[bob]) == expected(bob, [laptop[bob]])
        # What only the worker does has not happened: erin, whom nobody read, is not swept, and
        # bob's call is not yet written behind; Matrix still has everyone online.
        assert stored_presence(erin)["status"] == "available"
        assert stored_presence(bob)["status"] == "available"
        assert Device.objects.get(device_id=laptop[bob].device_id).in_call is False
        assert all(published(user, MATRIX_ONLINE) for user in (alice, bob, erin))

        deployment.start_worker()

        # Expiry catches up: erin is offline in PostgreSQL, and her organization is told.
        def erin_offline_told() -> dict | None:
            message = listener.receive(timeout=1)
            if message and message["user_id"] == str(erin.public_id) and message["status"] == "offline":
                return message
            return None

        message = eventually("the organization is told erin is offline", erin_offline_told, 30, interval=0)
        assert message["type"] == "presence.change"
    finally:
        listener.close()
    assert stored_presence(erin) == expected(erin, [laptop[bob]])

    # The write behind catches up, and dispatch delivers every final state.
    def caught_up() -> bool:
        assert laptop[bob].heartbeat().status_code == 202
        return (
            stored_presence(bob) == expected(bob, [laptop[bob]])
            and Device.objects.get(device_id=laptop[bob].device_id).in_call
            and published(bob, MATRIX_BUSY)
            and published(alice, MATRIX_OFFLINE)
            and published(erin, MATRIX_OFFLINE)
        )

    eventually("writes behind and dispatch caught up", caught_up, 30, interval=0.5)
    assert stored_presence(alice) == expected(alice, [laptop[bob]])
