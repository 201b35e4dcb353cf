"""Rate limits on a device's signals, a user's devices together, and a user's own changes:
answered 429 with Retry-After, nothing of the refused request applied, other users unaffected."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from presence import hot
from presence.models import ManualStatus, PresenceState
from tests.wsgi_calls import status_code, wsgi_call

pytestmark = pytest.mark.django_db


def signals(client, device: str, *batch: dict):
    return client.post(f"/api/v1/devices/{device}/signals", {"signals": list(batch)}, format="json")


def heartbeat(client, device: str, seq: int):
    return signals(client, device, {"type": "heartbeat", "seq": seq})


def register(client, installation_id: str) -> str:
    response = client.post("/api/v1/devices", {"installation_id": installation_id}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["device_id"]


def hot_seq(user, device: str) -> int:
    return hot.HotUser.parse(hot.store().read(user.pk)).devices[device].seq


@pytest.fixture
def three_a_minute_per_device(settings) -> None:
    settings.PRESENCE_RATE_LIMIT_DEVICE = (3, 60.0)  # a burst of 3, then one every 20 s


@pytest.fixture
def laptop(alice_api) -> str:
    return register(alice_api, "alice-laptop")


def test_a_device_over_its_limit_is_answered_429_with_retry_after(alice, alice_api, laptop, three_a_minute_per_device):
    accepted = [heartbeat(alice_api, laptop, seq).status_code for seq in (1, 2, 3)]

    refused = heartbeat(alice_api, laptop, 4)

    assert accepted == [202, 202, 202]
    assert refused.status_code == 429
    assert refused["Retry-After"] == "20"
    assert refused.json() == {
        "error": "rate_limited",
        "detail": "Too many signals from this device; retry in 20 s.",
        "retry_after": 20,
    }
    assert hot_seq(alice, laptop) == 3  # the refused heartbeat was not applied


def test_after_retry_after_the_device_is_heard_again(alice, alice_api, laptop, three_a_minute_per_device):
    for seq in (1, 2, 3):
        heartbeat(alice_api, laptop, seq)
    wait = int(heartbeat(alice_api, laptop, 4)["Retry-After"])

    with time_machine.travel(timezone.now() + timedelta(seconds=wait)):
        again = heartbeat(alice_api, laptop, 4)
        refused_next = heartbeat(alice_api, laptop, 5)

    assert again.status_code == 202
    assert again.json()["signals_applied"] == 1
    assert refused_next.status_code == 429  # one interval's worth, not a new burst
    assert hot_seq(alice, laptop) == 4


def test_a_state_change_over_the_limit_changes_nothing(alice, alice_api, laptop, three_a_minute_per_device):
    for seq in (1, 2, 3):
        heartbeat(alice_api, laptop, seq)

    refused = signals(alice_api, laptop, {"type": "call", "value": "start", "seq": 4})

    assert refused.status_code == 429
    assert alice_api.get("/api/v1/me/presence").json()["status"] == "available"
    assert PresenceState.objects.get(user=alice).status == "available"
    device = hot.HotUser.parse(hot.store().read(alice.pk)).devices[laptop]
    assert (device.in_call, device.seq) == (False, 3)


def test_a_refused_request_is_not_counted_so_a_flood_gets_exactly_the_rate(
    alice_api, laptop, three_a_minute_per_device
):
    for seq in range(1, 30):  # 3 accepted, 26 refused
        heartbeat(alice_api, laptop, seq)

    with time_machine.travel(timezone.now() + timedelta(seconds=20)):
        after_one_interval = heartbeat(alice_api, laptop, 100)

    assert after_one_interval.status_code == 202


def test_a_users_devices_share_the_user_limit(alice_api, settings):
    settings.PRESENCE_RATE_LIMIT_USER = (3, 60.0)
    laptop, phone = register(alice_api, "alice-laptop"), register(alice_api, "alice-phone")

    accepted = [heartbeat(alice_api, device, seq).status_code for device, seq in ((laptop, 1), (phone, 1), (laptop, 2))]
    refused = heartbeat(alice_api, phone, 2)

    assert accepted == [202, 202, 202]
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("Too many signals from this user's devices")


def test_a_flooding_device_does_not_hold_back_another_user(api_for, alice, bob, settings):
    settings.PRESENCE_RATE_LIMIT_DEVICE = (5, 60.0)
    alice_api, bob_api = api_for(alice), api_for(bob)
    flooder, bobs = register(alice_api, "alice-script"), register(bob_api, "bob-laptop")

    flood, bob_answers = [], []
    for seq in range(1, 21):
        flood.append(heartbeat(alice_api, flooder, seq).status_code)
        if seq % 4 == 0:
            bob_answers.append(heartbeat(bob_api, bobs, seq // 4).status_code)

    assert flood.count(202) == 5
    assert flood.count(429) == 15
    assert bob_answers == [202] * 5
    assert hot_seq(bob, bobs) == 5


def test_a_heartbeat_passed_on_to_the_full_path_is_counted_once(alice, alice_api, laptop, settings):
    settings.PRESENCE_RATE_LIMIT_DEVICE = (2, 60.0)
    # Past the device timeout, the heartbeat step cannot decide alone and passes the request on.
    with time_machine.travel(timezone.now() + timedelta(minutes=3)):
        back = heartbeat(alice_api, laptop, 1)
        steady = heartbeat(alice_api, laptop, 2)
        over = heartbeat(alice_api, laptop, 3)

    assert (back.status_code, back.json()["status"]) == (202, "available")
    assert steady.status_code == 202
    assert over.status_code == 429


def test_an_invalid_request_is_refused_for_its_input_not_counted(alice_api, laptop, three_a_minute_per_device):
    invalid = [signals(alice_api, laptop, {"type": "activity", "value": "dancing", "seq": seq}) for seq in range(5)]

    assert {response.status_code for response in invalid} == {400}
    assert [heartbeat(alice_api, laptop, seq).status_code for seq in (1, 2, 3)] == [202, 202, 202]


def test_limits_switched_off_refuse_nothing(alice_api, laptop, settings):
    settings.PRESENCE_RATE_LIMIT_DEVICE = None
    settings.PRESENCE_RATE_LIMIT_USER = None

    answers = {heartbeat(alice_api, laptop, seq).status_code for seq in range(1, 151)}

    assert answers == {202}


def test_the_default_limits_let_a_busy_client_through(alice_api, laptop):
    # A heartbeat every 30 s and state changes as they come: far below 120 a minute per device.
    answers = [heartbeat(alice_api, laptop, seq).status_code for seq in range(1, 101)]

    assert set(answers) == {202}


# --- Changes of a user's own inputs ------------------------------------------------------------


def test_status_changes_over_the_limit_are_refused_and_the_status_kept(alice, alice_api, settings):
    settings.PRESENCE_RATE_LIMIT_STATUS = (2, 60.0)
    reads = [alice_api.get("/api/v1/me/presence").status_code for _ in range(5)]  # reads are free

    first = alice_api.put("/api/v1/me/status", {"status": "busy"}, format="json")
    second = alice_api.put("/api/v1/me/status", {"status": "dnd", "message": "Focus"}, format="json")
    third = alice_api.put("/api/v1/me/status", {"status": "away"}, format="json")

    assert reads == [200] * 5
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert third.json()["error"] == "rate_limited"
    assert third.json()["detail"].startswith("Too many changes of this user's status and settings")
    assert int(third["Retry-After"]) == third.json()["retry_after"] == 30
    assert ManualStatus.objects.get(user=alice).status == "dnd"
    assert alice_api.get("/api/v1/me/status").json()["message"] == "Focus"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("delete", "/api/v1/me/status", None),
        ("put", "/api/v1/me/calendar", {"blocks": []}),
        ("patch", "/api/v1/me/privacy", {"use_calendar_busy": False}),
        ("post", "/api/v1/devices", {"installation_id": "one-more"}),
    ],
)
def test_every_change_of_ones_inputs_counts_against_the_same_limit(alice_api, settings, method, path, body):
    settings.PRESENCE_RATE_LIMIT_STATUS = (1, 60.0)
    assert alice_api.put("/api/v1/me/status", {"status": "busy"}, format="json").status_code == 200

    refused = getattr(alice_api, method)(path, body, format="json")

    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"


def test_one_users_changes_do_not_count_against_anothers(api_for, alice, bob, settings):
    settings.PRESENCE_RATE_LIMIT_STATUS = (1, 60.0)
    alice_api, bob_api = api_for(alice), api_for(bob)
    alice_api.put("/api/v1/me/status", {"status": "busy"}, format="json")

    assert alice_api.put("/api/v1/me/status", {"status": "dnd"}, format="json").status_code == 429
    assert bob_api.put("/api/v1/me/status", {"status": "dnd"}, format="json").status_code == 200


def test_a_change_while_redis_is_unreachable_is_refused_before_anything_is_stored(alice, alice_api, settings):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    if settings.REDIS_CLUSTER_NODES:
        settings.REDIS_CLUSTER_NODES = [f"127.0.0.1:{closed_port}"]

    response = alice_api.put("/api/v1/me/status", {"status": "busy"}, format="json")

    assert (response.status_code, response.json()["error"]) == (503, "redis_unavailable")
    assert response["Retry-After"] == "1"
    assert not ManualStatus.objects.filter(user=alice).exists()


# --- A request is counted once, whichever doors it passes --------------------------------------


def made_up_device(number: int) -> str:
    return f"{number:032x}"  # a plausible id no device has: every request for it ends in a 404


def user_limit_due(user) -> float:
    """When the user's next signal request is due at the sustained rate (the user limit's field)."""
    return float(hot.store().read(user.pk)["ru"])


@pytest.mark.parametrize("door", ["lane", "quick view", "DRF view"])
@pytest.mark.parametrize(
    "signal", [{"type": "heartbeat", "seq": 1}, {"type": "activity", "value": "idle", "seq": 1}], ids=["beat", "change"]
)
def test_a_flood_for_made_up_devices_costs_the_user_one_charge_per_request(
    alice, alice_api, settings, keep_the_test_transaction, door, signal
):
    settings.PRESENCE_RATE_LIMIT_USER = (1000, 60.0)  # one request every 60 ms, never reached here
    interval = 60.0 / 1000
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    token = Token.objects.get(user=alice).key
    session = APIClient()
    session.force_login(alice)
    assert alice_api.get("/api/v1/me/presence").status_code == 200  # the token is known to the quick doors
    now = timezone.now()
    flood = 12

    with time_machine.travel(now, tick=False):
        answers = []
        for number in range(flood):
            path, body = f"/api/v1/devices/{made_up_device(number)}/signals", {"signals": [signal]}
            if door == "lane":
                answers.append(status_code(wsgi_call(path, body, token)[0]))
            else:
                answers.append(
                    (alice_api if door == "quick view" else session).post(path, body, format="json").status_code
                )

    assert answers == [404] * flood
    assert user_limit_due(alice) == pytest.approx(now.timestamp() + flood * interval, abs=1e-3)
    assert not any(field.startswith("rd:") for field in hot.store().read(alice.pk))  # no made-up device's limit
