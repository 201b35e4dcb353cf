"""`/metrics`: Prometheus text, protected by a bearer token, and counters that move with real requests.

Each test reads `/metrics` before and after and asserts the difference: the registry is the
process's own and other tests move it too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from presence import services
from sparks_site import metrics
from sparks_site.asgi import application as asgi_application
from tests.presence.live_helpers import token_of
from tests.wsgi_calls import wsgi_call

METRICS_TOKEN = "metrics-scrape-token-for-tests"
SIGNALS = "sparks_presence_signals_total"
CHANGES = "sparks_presence_changes_total"
BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _metrics_token(settings) -> None:
    settings.PRESENCE_METRICS_TOKEN = METRICS_TOKEN


def scrape(client: Client | None = None) -> str:
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"{name}{labels} is not in the metrics")


def signals_of(text: str) -> dict[str, float]:
    kinds = ("heartbeat", "activity", "visibility", "call", "meeting", "network")
    return {kind: value(text, SIGNALS, type=kind) for kind in kinds}


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in before if after[key] != before[key]}


def register(api, installation_id: str = "laptop-install") -> str:
    response = api.post("/api/v1/devices", {"installation_id": installation_id}, format="json")
    assert response.status_code in (200, 201)
    return response.json()["device_id"]


# --- Protection -------------------------------------------------------------------------------


def test_metrics_are_off_while_no_token_is_configured(settings):
    settings.PRESENCE_METRICS_TOKEN = ""

    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything")

    assert response.status_code == 404


def test_metrics_refuse_a_request_without_the_token():
    response = Client().get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "not_authenticated"


def test_metrics_refuse_a_wrong_token():
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")

    assert response.status_code == 401


def test_metrics_are_served_to_the_token_bearer_from_any_host():
    text = scrape(Client(HTTP_HOST="10.1.2.3:9100"))

    assert "# TYPE sparks_presence_signals_total counter" in text
    assert "# TYPE sparks_presence_websocket_connections gauge" in text
    assert "# TYPE sparks_presence_sweep_duration_seconds histogram" in text
    assert "# TYPE sparks_presence_dispatch_duration_seconds histogram" in text


# --- Signals ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_signal_batch_counts_each_signal_by_type(alice_api):
    device = register(alice_api)
    before = signals_of(scrape())

    response = alice_api.post(
        f"/api/v1/devices/{device}/signals",
        {
            "signals": [
                {"type": "heartbeat", "seq": 1},
                {"type": "activity", "value": "active", "seq": 2},
                {"type": "visibility", "value": "hidden", "seq": 3},
                {"type": "visibility", "value": "visible", "seq": 4},
            ]
        },
        format="json",
    )

    assert response.status_code == 202
    assert moved(before, signals_of(scrape())) == {"heartbeat": 1, "activity": 1, "visibility": 2}


@pytest.mark.django_db
def test_signals_of_an_unknown_device_are_not_counted(alice_api):
    before = signals_of(scrape())

    response = alice_api.post(
        "/api/v1/devices/0123456789abcdef0123456789abcdef/signals",
        {"signals": [{"type": "heartbeat", "seq": 1}]},
        format="json",
    )

    assert response.status_code == 404
    assert moved(before, signals_of(scrape())) == {}


@pytest.mark.django_db
@pytest.mark.usefixtures("keep_the_test_transaction")
def test_a_heartbeat_answered_by_the_wsgi_lane_is_counted_once(alice, alice_api):
    device = register(alice_api)
    token = token_of(alice)
    first, _, _ = wsgi_call(f"/api/v1/devices/{device}/signals", {"signals": [{"type": "heartbeat", "seq": 1}]}, token)
    assert first == "202 Accepted"
    before = signals_of(scrape())

    status, _, _ = wsgi_call(f"/api/v1/devices/{device}/signals", {"signals": [{"type": "heartbeat", "seq": 2}]}, token)

    assert status == "202 Accepted"
    assert moved(before, signals_of(scrape())) == {"heartbeat": 1}


# --- Presence changes, websockets, the sweep, dispatch -----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_visible_change_is_counted_by_its_new_status(alice_api):
    device = register(alice_api)
    before = value(scrape(), CHANGES, status="away")

    response = alice_api.post(
        f"/api/v1/devices/{device}/signals",
        {"signals": [{"type": "visibility", "value": "hidden", "seq": 1}]},
        format="json",
    )

    assert response.json()["status"] == "away"
    assert value(scrape(), CHANGES, status="away") - before == 1


@pytest.mark.django_db(transaction=True)
def test_a_signal_that_changes_nothing_visible_counts_no_change(alice_api):
    device = register(alice_api)
    before = scrape()

    alice_api.post(f"/api/v1/devices/{device}/signals", {"signals": [{"type": "heartbeat", "seq": 1}]}, format="json")

    after = scrape()
    statuses = ("available", "busy", "away", "dnd", "offline")
    assert [value(after, CHANGES, status=s) - value(before, CHANGES, status=s) for s in statuses] == [0] * 5


@pytest.mark.django_db(transaction=True)
def test_the_websocket_gauge_counts_open_sockets(alice):
    token = token_of(alice)

    async def scenario() -> tuple[float, float, float]:
        before = metrics.WEBSOCKETS._value.get()
        communicator = WebsocketCommunicator(asgi_application, f"/ws/presence/?token={token}")
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        await communicator.receive_json_from(10)  # the snapshot: the socket is fully set up
        during = metrics.WEBSOCKETS._value.get()
        await communicator.disconnect()
        return before, during, metrics.WEBSOCKETS._value.get()

    before, during, after = async_to_sync(scenario)()

    assert (during - before, after - before) == (1, 0)


@pytest.mark.django_db(transaction=True)
def test_a_refused_websocket_is_counted_only_while_open():
    async def scenario() -> tuple[float, float]:
        before = metrics.WEBSOCKETS._value.get()
        communicator = WebsocketCommunicator(asgi_application, "/ws/presence/?token=not-a-token")
        await communicator.connect(timeout=5)
        closed = await communicator.receive_output(5)
        assert closed["type"] == "websocket.close"
        await communicator.disconnect()
        return before, metrics.WEBSOCKETS._value.get()

    before, after = async_to_sync(scenario)()

    assert after == before


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_sent_over_the_websocket_is_counted(alice):
    token = token_of(alice)
    device = services.register_device(alice, "laptop-install")[0].device_id
    before = signals_of(scrape())

    async def scenario() -> dict:
        communicator = WebsocketCommunicator(asgi_application, f"/ws/presence/?token={token}")
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        await communicator.receive_json_from(10)  # the snapshot
        beat = {"type": "signals", "id": 1, "device_id": device, "signals": [{"type": "heartbeat", "seq": 1}]}
        await communicator.send_json_to(beat)
        ack = await communicator.receive_json_from(10)
        await communicator.disconnect()
        return ack

    ack = async_to_sync(scenario)()

    assert (ack["type"], ack["signals_applied"]) == ("ack", 1)
    assert moved(before, signals_of(scrape())) == {"heartbeat": 1}


@pytest.mark.django_db
def test_each_sweep_is_timed():
    before = value(scrape(), "sparks_presence_sweep_duration_seconds_count")

    services.sweep_expired()
    services.sweep_expired()

    assert value(scrape(), "sparks_presence_sweep_duration_seconds_count") - before == 2


def test_dispatch_successes_failures_and_latency_are_recorded_by_target():
    before = scrape()

    with metrics.observe_dispatch("matrix"):
        pass
    with pytest.raises(RuntimeError), metrics.observe_dispatch("matrix"):
        raise RuntimeError("homeserver down")

    after = scrape()
    for outcome in ("success", "failure"):
        name, labels = "sparks_presence_dispatch_total", {"target": "matrix", "outcome": outcome}
        assert value(after, name, **labels) - _or_zero(before, name, **labels) == 1
    latency = "sparks_presence_dispatch_duration_seconds_count"
    assert value(after, latency, target="matrix") - _or_zero(before, latency, target="matrix") == 2


def _or_zero(text: str, name: str, **labels: str) -> float:
    try:
        return value(text, name, **labels)
    except AssertionError:
        return 0.0


# --- Several processes --------------------------------------------------------------------------


def test_with_a_multiprocess_dir_metrics_add_up_over_processes(tmp_path, monkeypatch):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = "from sparks_site import metrics; metrics.count_heartbeat(); metrics.count_heartbeat()"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, cwd=BASE_DIR, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    text = scrape()

    assert value(text, SIGNALS, type="heartbeat") == 4
    # Only what the processes wrote: no per-process series of this (test) process.
    assert "process_cpu_seconds_total" not in text


def test_a_process_that_exits_drops_its_open_websockets_from_the_gauge(tmp_path, monkeypatch):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    opened = "from sparks_site import metrics; metrics.WEBSOCKETS.inc(); metrics.count_heartbeat()"
    subprocess.run([sys.executable, "-c", opened], env=env, cwd=BASE_DIR, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    text = scrape()

    assert value(text, SIGNALS, type="heartbeat") == 1  # counters outlive the process
    assert _or_zero(text, "sparks_presence_websocket_connections") == 0


def test_a_multiprocessing_worker_that_exits_drops_its_open_websockets_too(tmp_path, monkeypatch):
    """granian's workers are `multiprocessing` processes: they leave through os._exit, which skips
    atexit, and must still take their share of the live gauges with them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = (
        "import multiprocessing\n"
        "def serve():\n"
        "    from sparks_site import metrics\n"
        "    metrics.WEBSOCKETS.inc()\n"
        "    metrics.count_heartbeat()\n"
        "if __name__ == '__main__':\n"
        "    process = multiprocessing.get_context('fork').Process(target=serve)\n"
        "    process.start()\n"
        "    process.join()\n"
    )
    subprocess.run([sys.executable, "-c", worker], env=env, cwd=BASE_DIR, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    text = scrape()

    assert value(text, SIGNALS, type="heartbeat") == 1
    assert _or_zero(text, "sparks_presence_websocket_connections") == 0
