"""The one-heartbeat requests answered without DRF or the database, and everything else not."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from presence import services
from presence.models import PresenceState

pytestmark = pytest.mark.django_db


def heartbeat(client, device: str, seq: int, **extra):
    return client.post(
        f"/api/v1/devices/{device}/signals", {"signals": [{"type": "heartbeat", "seq": seq, **extra}]}, format="json"
    )


@pytest.fixture
def device(alice_api) -> str:
    device_id = alice_api.post("/api/v1/devices", {"installation_id": "install-1"}, format="json").json()["device_id"]
    assert heartbeat(alice_api, device_id, 1).status_code == 202  # the token is now known
    return device_id


def test_a_heartbeat_is_answered_without_any_database_query(alice_api, device):
    with CaptureQueriesContext(connection) as queries:
        response = heartbeat(alice_api, device, 2)

    assert queries.captured_queries == []
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["reason"], body["signals_applied"], body["signals_ignored"]) == (
        "available",
        "device_active",
        1,
        0,
    )


def test_the_quick_answer_is_the_full_answer(alice_api, device):
    quick = heartbeat(alice_api, device, 2).json()
    # A heartbeat with an explicit null value is still a lone heartbeat; one with a batch of two is not.
    full = alice_api.post(
        f"/api/v1/devices/{device}/signals",
        {"signals": [{"type": "heartbeat", "seq": 3}, {"type": "heartbeat", "seq": 4}]},
        format="json",
    ).json()

    ignore = {"last_active_ago", "signals_applied"}
    assert {k: v for k, v in quick.items() if k not in ignore} == {k: v for k, v in full.items() if k not in ignore}
    assert set(quick) == set(full)


def test_an_old_seq_is_ignored_on_the_quick_path_too(alice_api, device):
    response = heartbeat(alice_api, device, 1)

    assert (response.json()["signals_applied"], response.json()["signals_ignored"]) == (0, 1)


def test_a_heartbeat_that_brings_a_device_back_takes_the_full_path(alice_api, alice, device):
    # Past the device timeout (120 s), not yet idle (300 s).
    with time_machine.travel(timezone.now() + timedelta(minutes=3), tick=False):
        assert alice_api.get("/api/v1/me/presence").json()["status"] == "offline"

        body = heartbeat(alice_api, device, 2).json()

    assert body["status"] == "available"
    services.persist_pending()
    assert PresenceState.objects.get(user=alice).status == "available"


def test_someone_elses_device_is_still_not_found(api_for, bob, device):
    bob_api = api_for(bob)
    assert bob_api.get("/api/v1/me/presence").status_code == 200  # bob's token is known

    response = heartbeat(bob_api, device, 2)

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"signals": [{"type": "heartbeat", "seq": -1}]},
        {"signals": [{"type": "heartbeat", "seq": True}]},
        {"signals": [{"type": "heartbeat", "seq": 2, "value": "x"}]},
        {"signals": [{"type": "heartbeat", "seq": 2, "extra": 1}]},
        {"signals": [{"type": "heartbeat", "seq": 2}], "extra": 1},
    ],
    ids=["negative seq", "boolean seq", "value", "unknown field in signal", "unknown field"],
)
def test_a_malformed_heartbeat_still_gets_the_full_validation(alice_api, device, body):
    response = alice_api.post(f"/api/v1/devices/{device}/signals", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"


@pytest.mark.parametrize(
    "raw",
    [
        b'\xef\xbb\xbf{"signals": [{"type": "heartbeat", "seq": 2}]}',
        b'{"signals": [{"type": "heartbeat", "seq": NaN}]}',
        '{"signals": [{"type": "heartbeat", "seq": 2}]}'.encode("utf-16"),
    ],
    ids=["byte order mark", "NaN", "UTF-16"],
)
def test_a_body_drfs_parser_refuses_is_refused_alike(alice_api, device, raw):
    response = alice_api.generic("POST", f"/api/v1/devices/{device}/signals", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"


def test_a_session_request_still_needs_its_csrf_token(alice, device):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)

    response = heartbeat(client, device, 2)

    assert response.status_code == 403


def test_a_state_change_answers_alike_on_the_quick_and_the_full_path(alice_api, alice, device):
    quick = alice_api.post(
        f"/api/v1/devices/{device}/signals", {"signals": [{"type": "call", "value": "start", "seq": 2}]}, format="json"
    ).json()
    session = APIClient()
    session.force_login(alice)
    full = session.post(
        f"/api/v1/devices/{device}/signals", {"signals": [{"type": "call", "value": "end", "seq": 3}]}, format="json"
    ).json()

    assert set(quick) == set(full)
    assert (quick["status"], quick["activity"], quick["reason"]) == ("busy", "in_call", "in_call")
    assert (full["status"], full["reason"]) == ("available", "device_active")


@pytest.fixture
def redis_commands(monkeypatch) -> list[bytes]:
    """Every command this process sends to Redis from here on (a pipeline counts as one send)."""
    import redis.connection

    sent: list = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def test_a_heartbeat_is_one_redis_round_trip_rate_limits_included(alice_api, device, redis_commands):
    assert heartbeat(alice_api, device, 2).status_code == 202

    assert len(redis_commands) == 1


def test_a_state_change_is_two_redis_round_trips_rate_limits_included(alice_api, device, redis_commands):
    response = alice_api.post(
        f"/api/v1/devices/{device}/signals", {"signals": [{"type": "call", "value": "start", "seq": 2}]}, format="json"
    )

    assert (response.status_code, response.json()["status"]) == (202, "busy")
    assert len(redis_commands) == 2  # the user's state read (and the limits counted), then one commit
