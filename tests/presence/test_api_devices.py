"""The device endpoints of the REST API: sign-in, sign-out and signals, through real token auth.

POST /api/v1/devices, GET /api/v1/devices, DELETE /api/v1/devices/{id},
POST /api/v1/devices/{id}/signals, and GET /api/v1/me/presence to read what the signals decided.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.apps import apps
from django.db import models

from presence import services
from presence.models import Device, PresenceState
from tests.presence.api_shapes import MY_PRESENCE_KEYS

pytestmark = pytest.mark.django_db

DEVICES = "/api/v1/devices"
MY_PRESENCE = "/api/v1/me/presence"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# A signal's answer: my presence, and what became of the signals.
PRESENCE_KEYS = MY_PRESENCE_KEYS | {"signals_applied", "signals_ignored"}


# --- Helpers -------------------------------------------------------------------------------


def stored_device(device_id: str) -> Device:
    """The device's database row once the changes written behind have reached it."""
    services.persist_pending()
    return Device.objects.get(device_id=device_id)


def stored_presence(user) -> PresenceState:
    services.persist_pending()
    return PresenceState.objects.get(user=user)


def register(api, installation_id: str = "install-1", label: str | None = None) -> str:
    body = {"installation_id": installation_id}
    if label is not None:
        body["label"] = label
    response = api.post(DEVICES, body, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()["device_id"]


def sig(type_: str, value: str | None, seq: int) -> dict:
    signal = {"type": type_, "seq": seq}
    if value is not None:
        signal["value"] = value
    return signal


def post_signals(api, device_id: str, *signals: dict):
    return api.post(f"{DEVICES}/{device_id}/signals", {"signals": list(signals)}, format="json")


def send(api, device_id: str, *signals: dict) -> dict:
    response = post_signals(api, device_id, *signals)
    assert response.status_code == 202, response.content
    return response.json()


def presence(api) -> dict:
    response = api.get(MY_PRESENCE)
    assert response.status_code == 200, response.content
    return response.json()


def decided(body: dict) -> tuple[str, str, str]:
    return body["status"], body["activity"], body["reason"]


def assert_rejected(response, field: str) -> dict:
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["detail"] == "Invalid input."
    assert set(body["fields"]) == {field}, body["fields"]
    messages = body["fields"][field]
    assert messages
    assert all(isinstance(message, str) and message for message in messages)
    return body


@pytest.fixture
def device(alice_api) -> str:
    return register(alice_api, "alice-laptop", label="laptop")


# --- Registering devices -------------------------------------------------------------------


def test_registering_a_new_installation_creates_a_device(alice_api, alice):
    response = alice_api.post(DEVICES, {"installation_id": "install-1", "label": "laptop"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"device_id", "label", "registered_at", "last_seen_at"}
    assert body["label"] == "laptop"
    stored = Device.objects.get(device_id=body["device_id"])
    assert stored.user == alice
    assert stored.label == "laptop"


def test_a_new_device_makes_the_user_available(alice_api, alice):
    register(alice_api)

    body = presence(alice_api)
    assert decided(body) == ("available", "available", "device_active")
    assert body["currently_active"] is True
    assert body["status_msg"] is None
    assert stored_presence(alice).status == "available"


def test_registering_the_same_installation_again_returns_the_same_device(alice_api):
    first = alice_api.post(DEVICES, {"installation_id": "install-1"}, format="json")
    again = alice_api.post(DEVICES, {"installation_id": "install-1"}, format="json")

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["device_id"] == first.json()["device_id"]
    assert Device.objects.count() == 1


def test_two_installations_of_one_user_are_two_devices(alice_api, alice):
    laptop = register(alice_api, "install-1")
    phone = register(alice_api, "install-2")

    assert laptop != phone
    assert Device.objects.filter(user=alice).count() == 2


def test_the_same_installation_of_another_user_is_another_device(alice_api, api_for, bob, alice):
    alices = register(alice_api, "shared-installation")
    bobs_response = api_for(bob).post(DEVICES, {"installation_id": "shared-installation"}, format="json")

    assert bobs_response.status_code == 201
    bobs = bobs_response.json()["device_id"]
    assert bobs != alices
    assert Device.objects.get(device_id=alices).user == alice
    assert Device.objects.get(device_id=bobs).user == bob


def test_the_raw_installation_id_is_stored_nowhere(alice_api):
    installation_id = "raw-installation-9f2c41d7"
    device_id = register(alice_api, installation_id, label="laptop")

    assert device_id != installation_id
    assert installation_id not in device_id
    for field in Device._meta.concrete_fields:
        assert installation_id not in str(field.value_from_object(Device.objects.get(device_id=device_id)))
    # Nor in any text column of any table.
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, (models.CharField, models.TextField)):
                lookup = {f"{field.name}__contains": installation_id}
                assert not model._default_manager.filter(**lookup).exists(), f"{model.__name__}.{field.name}"


def test_the_device_id_is_not_a_plain_hash_of_the_installation(alice_api, alice):
    installation_id = "install-1"
    device_id = register(alice_api, installation_id)

    plain = hashlib.sha256(installation_id.encode()).hexdigest()
    with_user = hashlib.sha256(f"{alice.pk}\x00{installation_id}".encode()).hexdigest()
    assert device_id not in (plain, plain[:32], with_user, with_user[:32])
    assert device_id not in (hashlib.md5(installation_id.encode()).hexdigest(),)


def test_the_device_id_depends_on_the_server_key(alice_api, settings):
    before = register(alice_api, "install-1")
    settings.PRESENCE_DEVICE_ID_KEY = "another-server-key"

    after = register(alice_api, "install-1")

    assert after != before


def test_registering_again_updates_the_label(alice_api):
    device_id = register(alice_api, "install-1", label="laptop")

    response = alice_api.post(DEVICES, {"installation_id": "install-1", "label": "work laptop"}, format="json")

    assert response.status_code == 200
    assert response.json()["label"] == "work laptop"
    assert Device.objects.get(device_id=device_id).label == "work laptop"


def test_registering_again_without_a_label_keeps_the_label(alice_api):
    device_id = register(alice_api, "install-1", label="laptop")

    response = alice_api.post(DEVICES, {"installation_id": "install-1"}, format="json")

    assert response.status_code == 200
    assert response.json()["label"] == "laptop"
    assert Device.objects.get(device_id=device_id).label == "laptop"


def test_listing_devices_shows_only_my_devices(alice_api, api_for, bob, carol):
    mine = {register(alice_api, "install-1", "laptop"), register(alice_api, "install-2", "phone")}
    register(api_for(bob), "install-1", "bob's laptop")
    register(api_for(carol), "install-3", "carol's laptop")

    response = alice_api.get(DEVICES)

    assert response.status_code == 200
    listed = response.json()
    assert {d["device_id"] for d in listed} == mine
    assert {d["label"] for d in listed} == {"laptop", "phone"}
    assert all(set(d) == {"device_id", "label", "registered_at", "last_seen_at"} for d in listed)


def test_listing_devices_is_empty_before_any_sign_in(alice_api, api_for, bob):
    register(api_for(bob), "install-1")

    response = alice_api.get(DEVICES)

    assert response.status_code == 200
    assert response.json() == []


def test_an_installation_id_of_256_characters_is_accepted(alice_api):
    response = alice_api.post(DEVICES, {"installation_id": "i" * 256, "label": "l" * 64}, format="json")

    assert response.status_code == 201
    assert response.json()["label"] == "l" * 64


# --- Signing devices out -------------------------------------------------------------------


def test_signing_out_the_only_device_makes_the_user_offline(alice_api, alice, device):
    assert presence(alice_api)["status"] == "available"

    response = alice_api.delete(f"{DEVICES}/{device}")

    assert response.status_code == 204
    assert response.content == b""
    assert not Device.objects.filter(device_id=device).exists()
    # Recomputed and stored by the sign-out itself, not only on the next read.
    stored = stored_presence(alice)
    assert (stored.status, stored.activity, stored.reason) == ("offline", "offline", "no_live_device")
    assert decided(presence(alice_api)) == ("offline", "offline", "no_live_device")
    assert alice_api.get(DEVICES).json() == []


def test_signing_out_one_device_recomputes_from_the_others(alice_api, alice):
    in_call = register(alice_api, "install-1")
    idle = register(alice_api, "install-2")
    send(alice_api, in_call, sig("call", "start", 1))
    send(alice_api, idle, sig("activity", "idle", 1))
    assert presence(alice_api)["status"] == "busy"

    assert alice_api.delete(f"{DEVICES}/{in_call}").status_code == 204

    assert stored_presence(alice).status == "away"
    assert decided(presence(alice_api)) == ("away", "inactive", "all_devices_idle_or_hidden")


def test_a_colleagues_device_cannot_be_signed_out(alice_api, api_for, bob):
    bob_api = api_for(bob)
    bobs = register(bob_api, "install-1")

    response = alice_api.delete(f"{DEVICES}/{bobs}")

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "No such device."}
    assert Device.objects.filter(device_id=bobs, user=bob).exists()
    assert presence(bob_api)["status"] == "available"


def test_a_device_of_another_organization_cannot_be_signed_out(alice_api, api_for, carol):
    carol_api = api_for(carol)
    carols = register(carol_api, "install-1")

    response = alice_api.delete(f"{DEVICES}/{carols}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert Device.objects.filter(device_id=carols, user=carol).exists()
    assert presence(carol_api)["status"] == "available"


def test_signing_out_an_unknown_device_is_a_json_404(alice_api, device):
    response = alice_api.delete(f"{DEVICES}/{'0' * 32}")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"error": "not_found", "detail": "No such device."}
    assert Device.objects.filter(device_id=device).exists()


@pytest.mark.parametrize("send_to", ["sign-out", "signals"])
def test_a_device_id_with_a_nul_character_is_a_json_404_not_a_server_error(alice_api, device, send_to):
    # PostgreSQL refuses text with NUL in a query: such an id must be answered before any query.
    if send_to == "sign-out":
        response = alice_api.delete(f"{DEVICES}/{device}%00")
    else:
        response = post_signals(alice_api, f"{device}%00", sig("heartbeat", None, 1))

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "No such device."}
    assert Device.objects.filter(device_id=device).exists()


def test_signing_out_twice_is_a_404_the_second_time(alice_api, device):
    assert alice_api.delete(f"{DEVICES}/{device}").status_code == 204

    response = alice_api.delete(f"{DEVICES}/{device}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_a_signed_out_device_can_no_longer_send_signals(alice_api, device):
    alice_api.delete(f"{DEVICES}/{device}")

    response = post_signals(alice_api, device, sig("heartbeat", None, 1))

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "No such device."}
    assert presence(alice_api)["status"] == "offline"


def test_signals_to_a_colleagues_device_are_a_404_and_change_nothing(alice_api, api_for, bob):
    bob_api = api_for(bob)
    bobs = register(bob_api, "install-1")

    response = post_signals(alice_api, bobs, sig("call", "start", 1))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    stored = Device.objects.get(device_id=bobs)
    assert (stored.last_seq, stored.in_call) == (-1, False)
    assert presence(bob_api)["status"] == "available"


def test_signals_to_an_unknown_device_are_a_json_404(alice_api):
    response = post_signals(alice_api, "f" * 32, sig("heartbeat", None, 1))

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "No such device."}


# --- Signals and what they decide ----------------------------------------------------------


def test_signals_are_accepted_with_the_users_presence(alice_api, device):
    response = post_signals(alice_api, device, sig("heartbeat", None, 1))

    assert response.status_code == 202
    body = response.json()
    assert set(body) == PRESENCE_KEYS
    assert decided(body) == ("available", "available", "device_active")
    assert body["status_msg"] is None
    assert body["currently_active"] is True
    assert body["last_active"] is not None
    assert isinstance(body["last_active_ago"], int)
    assert body["last_active_ago"] >= 0
    assert (body["signals_applied"], body["signals_ignored"]) == (1, 0)


def test_a_heartbeat_records_that_the_device_was_seen_once_flushed(alice_api, settings):
    settings.PRESENCE_DEVICE_FLUSH_SECONDS = 30
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        clock.shift(timedelta(seconds=45))

        send(alice_api, device, sig("heartbeat", None, 1))
        services.flush_device_activity()

    stored = stored_device(device)
    assert stored.last_seen_at == T0 + timedelta(seconds=45)
    # A heartbeat proves the device is there, not that the user is.
    assert stored.last_active_at == T0
    assert stored.last_seq == 1


def test_a_heartbeat_keeps_the_device_live_past_the_timeout(alice_api):
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        clock.shift(timedelta(seconds=100))
        send(alice_api, device, sig("heartbeat", None, 1))
        clock.shift(timedelta(seconds=100))  # 200 s after registering, 100 s after the heartbeat

        body = presence(alice_api)

    assert decided(body) == ("available", "available", "device_active")


def test_activity_idle_makes_the_user_away(alice_api, device):
    body = send(alice_api, device, sig("activity", "idle", 1))

    assert decided(body) == ("away", "inactive", "all_devices_idle_or_hidden")
    assert body["currently_active"] is False
    assert decided(presence(alice_api)) == ("away", "inactive", "all_devices_idle_or_hidden")


def test_activity_active_after_idle_makes_the_user_available(alice_api):
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        send(alice_api, device, sig("activity", "idle", 1))
        clock.shift(timedelta(seconds=90))

        body = send(alice_api, device, sig("activity", "active", 2))

    assert decided(body) == ("available", "available", "device_active")
    assert body["currently_active"] is True
    assert body["last_active_ago"] == 0
    assert stored_device(device).last_active_at == T0 + timedelta(seconds=90)


def test_a_hidden_window_makes_the_user_away(alice_api, device):
    body = send(alice_api, device, sig("visibility", "hidden", 1))

    assert decided(body) == ("away", "inactive", "all_devices_idle_or_hidden")


def test_a_visible_window_after_hidden_makes_the_user_available(alice_api, device):
    send(alice_api, device, sig("visibility", "hidden", 1))

    body = send(alice_api, device, sig("visibility", "visible", 2))

    assert decided(body) == ("available", "available", "device_active")


def test_a_visible_window_after_idle_counts_as_activity(alice_api, device):
    send(alice_api, device, sig("activity", "idle", 1))

    body = send(alice_api, device, sig("visibility", "visible", 2))

    assert decided(body) == ("available", "available", "device_active")
    assert stored_device(device).activity == "active"


def test_a_call_start_makes_the_user_busy_in_a_call(alice_api, device):
    body = send(alice_api, device, sig("call", "start", 1))

    assert decided(body) == ("busy", "in_call", "in_call")
    assert body["currently_active"] is False
    assert decided(presence(alice_api)) == ("busy", "in_call", "in_call")


def test_a_call_end_makes_the_user_available_again(alice_api, device):
    send(alice_api, device, sig("call", "start", 1))

    body = send(alice_api, device, sig("call", "end", 2))

    assert decided(body) == ("available", "available", "device_active")


def test_a_meeting_start_makes_the_user_busy_in_a_meeting(alice_api, device):
    body = send(alice_api, device, sig("meeting", "start", 1))

    assert decided(body) == ("busy", "in_meeting", "in_meeting")


def test_a_meeting_end_makes_the_user_available_again(alice_api, device):
    send(alice_api, device, sig("meeting", "start", 1))

    body = send(alice_api, device, sig("meeting", "end", 2))

    assert decided(body) == ("available", "available", "device_active")


def test_a_call_on_a_hidden_window_still_makes_the_user_busy(alice_api, device):
    body = send(alice_api, device, sig("visibility", "hidden", 1), sig("call", "start", 2))

    assert decided(body) == ("busy", "in_call", "in_call")


def test_network_offline_makes_the_user_offline(alice_api, device):
    body = send(alice_api, device, sig("network", "offline", 1))

    assert decided(body) == ("offline", "offline", "no_live_device")
    assert body["currently_active"] is False
    assert decided(presence(alice_api)) == ("offline", "offline", "no_live_device")


def test_network_offline_wins_over_a_call(alice_api, device):
    body = send(alice_api, device, sig("call", "start", 1), sig("network", "offline", 2))

    assert decided(body) == ("offline", "offline", "no_live_device")


def test_network_online_after_offline_makes_the_user_available(alice_api, device):
    send(alice_api, device, sig("network", "offline", 1))

    body = send(alice_api, device, sig("network", "online", 2))

    assert decided(body) == ("available", "available", "device_active")


def test_a_heartbeat_after_network_offline_makes_the_device_live_again(alice_api, device):
    send(alice_api, device, sig("network", "offline", 1))

    body = send(alice_api, device, sig("heartbeat", None, 2))

    assert decided(body) == ("available", "available", "device_active")
    assert stored_device(device).network == "online"


def test_one_offline_device_does_not_make_the_user_offline(alice_api):
    laptop = register(alice_api, "install-1")
    phone = register(alice_api, "install-2")
    send(alice_api, phone, sig("visibility", "hidden", 1))

    body = send(alice_api, laptop, sig("network", "offline", 1))

    assert decided(body) == ("away", "inactive", "all_devices_idle_or_hidden")


def test_the_most_present_device_decides(alice_api):
    laptop = register(alice_api, "install-1")
    phone = register(alice_api, "install-2")

    body = send(alice_api, phone, sig("visibility", "hidden", 1))

    assert decided(body) == ("available", "available", "device_active")
    send(alice_api, laptop, sig("activity", "idle", 1))
    assert decided(presence(alice_api)) == ("away", "inactive", "all_devices_idle_or_hidden")


# --- Sequence numbers ----------------------------------------------------------------------


def test_an_older_seq_never_overrides_a_newer_one(alice_api, device):
    send(alice_api, device, sig("activity", "idle", 10))

    body = send(alice_api, device, sig("activity", "active", 9))

    assert (body["signals_applied"], body["signals_ignored"]) == (0, 1)
    assert decided(body) == ("away", "inactive", "all_devices_idle_or_hidden")
    stored = stored_device(device)
    assert (stored.activity, stored.last_seq) == ("idle", 10)


def test_an_equal_seq_is_ignored(alice_api, device):
    send(alice_api, device, sig("call", "start", 3))

    body = send(alice_api, device, sig("call", "end", 3))

    assert (body["signals_applied"], body["signals_ignored"]) == (0, 1)
    assert decided(body) == ("busy", "in_call", "in_call")
    assert stored_device(device).in_call is True


def test_an_ignored_signal_does_not_count_as_being_seen(alice_api):
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        send(alice_api, device, sig("heartbeat", None, 5))
        clock.shift(timedelta(seconds=60))

        send(alice_api, device, sig("heartbeat", None, 5))

    assert stored_device(device).last_seen_at == T0


def test_a_batch_is_applied_in_seq_order_whatever_its_order(alice_api, device):
    body = send(alice_api, device, sig("call", "end", 2), sig("call", "start", 1))

    assert (body["signals_applied"], body["signals_ignored"]) == (2, 0)
    assert decided(body) == ("available", "available", "device_active")
    assert send(alice_api, device, sig("call", "start", 2))["signals_ignored"] == 1


def test_a_batch_counts_applied_and_ignored_signals(alice_api, device):
    send(alice_api, device, sig("heartbeat", None, 5))

    body = send(
        alice_api,
        device,
        sig("meeting", "start", 6),
        sig("visibility", "hidden", 4),
        sig("activity", "idle", 5),
        sig("heartbeat", None, 7),
    )

    assert (body["signals_applied"], body["signals_ignored"]) == (2, 2)
    assert decided(body) == ("busy", "in_meeting", "in_meeting")
    stored = stored_device(device)
    assert (stored.visibility, stored.activity, stored.last_seq) == ("visible", "active", 7)


def test_a_repeated_seq_within_a_batch_is_applied_once(alice_api, device):
    body = send(alice_api, device, sig("call", "start", 1), sig("call", "end", 1))

    assert (body["signals_applied"], body["signals_ignored"]) == (1, 1)
    assert decided(body) == ("busy", "in_call", "in_call")


def test_a_batch_of_only_old_signals_changes_nothing(alice_api, alice, device):
    send(alice_api, device, sig("activity", "idle", 8))
    changed_at = stored_presence(alice).changed_at

    response = post_signals(alice_api, device, sig("activity", "active", 7), sig("call", "start", 8))

    assert response.status_code == 202
    body = response.json()
    assert (body["signals_applied"], body["signals_ignored"]) == (0, 2)
    assert decided(body) == ("away", "inactive", "all_devices_idle_or_hidden")
    assert stored_presence(alice).changed_at == changed_at
    assert stored_device(device).last_seq == 8


def test_registering_again_restarts_the_sequence(alice_api, device):
    send(alice_api, device, sig("activity", "idle", 50))
    assert send(alice_api, device, sig("heartbeat", None, 0))["signals_ignored"] == 1

    register(alice_api, "alice-laptop")
    body = send(alice_api, device, sig("heartbeat", None, 0))

    assert (body["signals_applied"], body["signals_ignored"]) == (1, 0)
    assert send(alice_api, device, sig("heartbeat", None, 0))["signals_ignored"] == 1


def test_registering_again_counts_as_the_device_being_used(alice_api, device):
    send(alice_api, device, sig("activity", "idle", 1), sig("network", "offline", 2))
    assert presence(alice_api)["status"] == "offline"

    register(alice_api, "alice-laptop")

    assert decided(presence(alice_api)) == ("available", "available", "device_active")


def test_registering_again_forgets_the_previous_sessions_call_and_hidden_window(alice_api, device):
    # An app that restarts starts a new session: it knows nothing of the old one's call, so it
    # would never send the "call end" that clears it, and the user would stay busy forever.
    send(alice_api, device, sig("call", "start", 1), sig("meeting", "start", 2), sig("visibility", "hidden", 3))

    register(alice_api, "alice-laptop")

    assert decided(presence(alice_api)) == ("available", "available", "device_active")
    stored = stored_device(device)
    assert (stored.in_call, stored.in_meeting, stored.visibility) == (False, False, "visible")


def test_the_largest_seq_is_accepted(alice_api, device):
    body = send(alice_api, device, sig("heartbeat", None, 2**63 - 1))

    assert body["signals_applied"] == 1
    assert send(alice_api, device, sig("call", "start", 2**63 - 2))["signals_ignored"] == 1


# --- Time: timeouts read right without a sweep ----------------------------------------------


def test_a_silent_device_is_offline_on_read_without_a_sweep(alice_api, alice):
    with time_machine.travel(T0, tick=False) as clock:
        register(alice_api, "install-1")
        clock.shift(timedelta(seconds=120))
        # Nothing has recomputed since: the stored decision is stale.
        assert stored_presence(alice).status == "available"

        body = presence(alice_api)

    assert decided(body) == ("offline", "offline", "no_live_device")
    assert body["last_active_ago"] == 120_000
    # The read decided in memory and stored nothing: storing is the sweep's.
    assert stored_presence(alice).status == "available"
    with time_machine.travel(T0 + timedelta(seconds=120), tick=False):
        services.sweep_expired()
    assert stored_presence(alice).status == "offline"


def test_a_device_is_still_live_just_before_the_timeout(alice_api):
    with time_machine.travel(T0, tick=False) as clock:
        register(alice_api, "install-1")
        clock.shift(timedelta(seconds=119))

        body = presence(alice_api)

    assert decided(body) == ("available", "available", "device_active")
    assert body["currently_active"] is False  # no activity for over a minute
    assert body["last_active_ago"] == 119_000


def test_the_device_timeout_follows_the_setting(alice_api, settings):
    settings.PRESENCE_DEVICE_TIMEOUT_SECONDS = 40
    with time_machine.travel(T0, tick=False) as clock:
        register(alice_api, "install-1")
        clock.shift(timedelta(seconds=39))
        assert presence(alice_api)["status"] == "available"
        clock.shift(timedelta(seconds=1))

        body = presence(alice_api)

    assert decided(body) == ("offline", "offline", "no_live_device")


def test_a_device_in_a_call_that_goes_silent_is_offline(alice_api):
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        send(alice_api, device, sig("call", "start", 1))
        clock.shift(timedelta(seconds=121))

        body = presence(alice_api)

    assert decided(body) == ("offline", "offline", "no_live_device")


def test_a_device_that_reports_again_after_the_timeout_is_live_again(alice_api):
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        clock.shift(timedelta(seconds=200))
        assert presence(alice_api)["status"] == "offline"

        body = send(alice_api, device, sig("heartbeat", None, 1))

    assert decided(body) == ("available", "available", "device_active")


def test_heartbeats_without_activity_for_the_idle_timeout_make_the_user_away(alice_api):
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        for seq in range(1, 5):
            clock.shift(timedelta(seconds=60))
            assert send(alice_api, device, sig("heartbeat", None, seq))["status"] == "available"
        clock.shift(timedelta(seconds=60))  # 300 s after the last activity

        body = send(alice_api, device, sig("heartbeat", None, 5))

        assert decided(body) == ("away", "inactive", "all_devices_idle_or_hidden")
        assert body["last_active_ago"] == 300_000
        assert decided(presence(alice_api)) == ("away", "inactive", "all_devices_idle_or_hidden")


def test_the_idle_timeout_makes_the_user_away_on_read_without_a_sweep(alice_api, settings):
    settings.PRESENCE_IDLE_TIMEOUT_SECONDS = 90
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        clock.shift(timedelta(seconds=80))
        send(alice_api, device, sig("heartbeat", None, 1))
        clock.shift(timedelta(seconds=10))

        body = presence(alice_api)

    assert decided(body) == ("away", "inactive", "all_devices_idle_or_hidden")


def test_activity_after_the_idle_timeout_makes_the_user_available_again(alice_api):
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        for seq in range(1, 6):
            clock.shift(timedelta(seconds=60))
            send(alice_api, device, sig("heartbeat", None, seq))
        assert presence(alice_api)["status"] == "away"

        body = send(alice_api, device, sig("activity", "active", 6))

    assert decided(body) == ("available", "available", "device_active")
    assert body["currently_active"] is True


def test_a_call_never_idles(alice_api):
    with time_machine.travel(T0, tick=False) as clock:
        device = register(alice_api, "install-1")
        send(alice_api, device, sig("call", "start", 1))
        for seq in range(2, 9):
            clock.shift(timedelta(seconds=60))
            send(alice_api, device, sig("heartbeat", None, seq))

        body = presence(alice_api)

    assert decided(body) == ("busy", "in_call", "in_call")


# --- Validation ----------------------------------------------------------------------------


def test_signals_missing_is_rejected(alice_api, device):
    response = alice_api.post(f"{DEVICES}/{device}/signals", {}, format="json")

    assert_rejected(response, "signals")


def test_an_empty_signal_list_is_rejected(alice_api, device):
    assert_rejected(post_signals(alice_api, device), "signals")


def test_signals_that_are_not_a_list_are_rejected(alice_api, device):
    response = alice_api.post(
        f"{DEVICES}/{device}/signals", {"signals": {"type": "heartbeat", "seq": 1}}, format="json"
    )

    assert_rejected(response, "signals")


def test_signals_given_as_a_string_are_rejected(alice_api, device):
    response = alice_api.post(f"{DEVICES}/{device}/signals", {"signals": "heartbeat"}, format="json")

    assert_rejected(response, "signals")


def test_more_than_100_signals_are_rejected(alice_api, device):
    response = post_signals(alice_api, device, *(sig("heartbeat", None, seq) for seq in range(101)))

    assert_rejected(response, "signals")
    assert stored_device(device).last_seq == -1


def test_exactly_100_signals_are_accepted(alice_api, device):
    body = send(alice_api, device, *(sig("heartbeat", None, seq) for seq in range(100)))

    assert body["signals_applied"] == 100


def test_an_unknown_signal_type_is_rejected(alice_api, device):
    response = post_signals(alice_api, device, sig("heartbeat", None, 1), sig("typing", None, 2))

    assert_rejected(response, "signals.1.type")


def test_a_signal_without_a_type_is_rejected(alice_api, device):
    response = post_signals(alice_api, device, {"seq": 1})

    assert_rejected(response, "signals.0.type")


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("activity", "away"),
        ("visibility", "minimized"),
        ("call", "started"),
        ("meeting", "stop"),
        ("network", "wifi"),
        ("activity", "ACTIVE"),
    ],
)
def test_a_value_the_signal_type_does_not_take_is_rejected(alice_api, device, type_, value):
    response = post_signals(alice_api, device, sig(type_, value, 1))

    assert_rejected(response, "signals.0.value")


@pytest.mark.parametrize("type_", ["activity", "visibility", "call", "meeting", "network"])
def test_a_signal_type_that_takes_a_value_requires_one(alice_api, device, type_):
    response = post_signals(alice_api, device, sig(type_, None, 1))

    assert_rejected(response, "signals.0.value")


def test_a_heartbeat_with_a_value_is_rejected(alice_api, device):
    response = post_signals(alice_api, device, sig("heartbeat", "active", 1))

    assert_rejected(response, "signals.0.value")


def test_a_heartbeat_with_a_null_value_is_accepted(alice_api, device):
    body = send(alice_api, device, {"type": "heartbeat", "value": None, "seq": 1})

    assert body["signals_applied"] == 1


def test_a_signal_without_seq_is_rejected(alice_api, device):
    response = post_signals(alice_api, device, {"type": "heartbeat"})

    assert_rejected(response, "signals.0.seq")


def test_a_negative_seq_is_rejected(alice_api, device):
    response = post_signals(alice_api, device, sig("heartbeat", None, -1))

    assert_rejected(response, "signals.0.seq")


@pytest.mark.parametrize("seq", [1.5, "one", True, None, [1]])
def test_a_non_integer_seq_is_rejected(alice_api, device, seq):
    response = post_signals(alice_api, device, {"type": "heartbeat", "seq": seq})

    assert_rejected(response, "signals.0.seq")


def test_a_seq_beyond_64_bits_is_rejected(alice_api, device):
    response = post_signals(alice_api, device, sig("heartbeat", None, 2**63))

    assert_rejected(response, "signals.0.seq")
    assert stored_device(device).last_seq == -1


def test_an_unknown_top_level_field_is_rejected(alice_api, device):
    response = alice_api.post(
        f"{DEVICES}/{device}/signals", {"signals": [sig("heartbeat", None, 1)], "sent_at": "now"}, format="json"
    )

    assert_rejected(response, "sent_at")
    assert stored_device(device).last_seq == -1


def test_an_unknown_field_inside_a_signal_is_rejected(alice_api, device):
    response = post_signals(alice_api, device, sig("heartbeat", None, 1), {**sig("call", "start", 2), "callId": "x"})

    assert_rejected(response, "signals.1.callId")


def test_a_signal_that_is_not_an_object_is_rejected(alice_api, device):
    response = alice_api.post(f"{DEVICES}/{device}/signals", {"signals": ["heartbeat"]}, format="json")

    assert_rejected(response, "signals.0.non_field_errors")


def test_a_rejected_batch_loses_no_data(alice_api, alice, device):
    send(alice_api, device, sig("activity", "idle", 5))
    before = stored_device(device)
    stored_before = stored_presence(alice)

    response = post_signals(
        alice_api, device, sig("call", "start", 6), sig("visibility", "hidden", 7), sig("network", "sleeping", 8)
    )

    assert_rejected(response, "signals.2.value")
    after = stored_device(device)
    assert (after.last_seq, after.in_call, after.visibility, after.activity, after.last_seen_at) == (
        5,
        False,
        "visible",
        "idle",
        before.last_seen_at,
    )
    stored_after = stored_presence(alice)
    assert (stored_after.status, stored_after.computed_at) == ("away", stored_before.computed_at)
    # The valid part of the rejected batch was not consumed: sent again, it applies.
    body = send(alice_api, device, sig("call", "start", 6))
    assert body["signals_applied"] == 1
    assert decided(body) == ("busy", "in_call", "in_call")


def test_the_installation_id_is_required(alice_api):
    assert_rejected(alice_api.post(DEVICES, {"label": "laptop"}, format="json"), "installation_id")
    assert not Device.objects.exists()


def test_an_empty_installation_id_is_rejected(alice_api):
    assert_rejected(alice_api.post(DEVICES, {"installation_id": ""}, format="json"), "installation_id")
    assert not Device.objects.exists()


def test_a_blank_installation_id_is_rejected(alice_api):
    assert_rejected(alice_api.post(DEVICES, {"installation_id": "   "}, format="json"), "installation_id")


def test_a_null_installation_id_is_rejected(alice_api):
    assert_rejected(alice_api.post(DEVICES, {"installation_id": None}, format="json"), "installation_id")


def test_an_installation_id_longer_than_256_characters_is_rejected(alice_api):
    response = alice_api.post(DEVICES, {"installation_id": "i" * 257}, format="json")

    assert_rejected(response, "installation_id")
    assert not Device.objects.exists()


def test_a_label_longer_than_64_characters_is_rejected(alice_api):
    response = alice_api.post(DEVICES, {"installation_id": "install-1", "label": "l" * 65}, format="json")

    assert_rejected(response, "label")
    assert not Device.objects.exists()


def test_a_too_long_label_on_registering_again_keeps_the_old_label(alice_api, device):
    response = alice_api.post(DEVICES, {"installation_id": "alice-laptop", "label": "l" * 65}, format="json")

    assert_rejected(response, "label")
    assert stored_device(device).label == "laptop"


def test_an_unknown_field_on_registering_is_rejected(alice_api):
    response = alice_api.post(DEVICES, {"installation_id": "install-1", "platform": "linux"}, format="json")

    assert_rejected(response, "platform")
    assert not Device.objects.exists()


def test_malformed_json_is_a_json_400(alice_api, device):
    response = alice_api.post(f"{DEVICES}/{device}/signals", data='{"signals": [', content_type="application/json")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "parse_error"
    assert stored_device(device).last_seq == -1


def test_malformed_json_on_registering_is_a_json_400(alice_api):
    response = alice_api.post(DEVICES, data="{installation_id: x}", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"
    assert not Device.objects.exists()


def test_a_body_that_is_not_an_object_is_rejected(alice_api, device):
    response = alice_api.post(f"{DEVICES}/{device}/signals", [sig("heartbeat", None, 1)], format="json")

    assert_rejected(response, "non_field_errors")


def test_a_form_body_is_an_unsupported_media_type(alice_api, device):
    response = alice_api.post(
        f"{DEVICES}/{device}/signals",
        data="signals=heartbeat",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert stored_device(device).last_seq == -1


def test_registering_with_a_form_body_is_an_unsupported_media_type(alice_api):
    response = alice_api.post(DEVICES, data="installation_id=install-1", content_type="text/plain")

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert not Device.objects.exists()


# --- Authentication and classic mode --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", DEVICES),
        ("post", DEVICES),
        ("delete", f"{DEVICES}/{'0' * 32}"),
        ("post", f"{DEVICES}/{'0' * 32}/signals"),
        ("get", MY_PRESENCE),
    ],
)
def test_an_anonymous_request_is_a_json_401(api_for, method, path):
    response = getattr(api_for(None), method)(path, {}, format="json")

    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"


def test_an_unknown_token_is_a_json_401(api_for):
    client = api_for(None)
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)

    response = client.post(DEVICES, {"installation_id": "install-1"}, format="json")

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"
    assert not Device.objects.exists()


def test_an_anonymous_request_cannot_sign_out_a_device(api_for, device):
    response = api_for(None).delete(f"{DEVICES}/{device}")

    assert response.status_code == 401
    assert Device.objects.filter(device_id=device).exists()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", DEVICES, None),
        ("post", DEVICES, {"installation_id": "install-2"}),
        ("delete", "{device}", None),
        ("post", "{device}/signals", {"signals": [{"type": "call", "value": "start", "seq": 1}]}),
    ],
)
def test_classic_mode_answers_409_aggregator_disabled(alice_api, alice, device, settings, method, path, body):
    settings.PRESENCE_USE_AGGREGATOR = False
    url = path.format(device=f"{DEVICES}/{device}")

    response = getattr(alice_api, method)(url, body, format="json")

    assert response.status_code == 409
    payload = response.json()
    assert payload["error"] == "aggregator_disabled"
    assert "classic mode" in payload["detail"]
    # Nothing was changed.
    assert list(Device.objects.filter(user=alice).values_list("device_id", "last_seq", "in_call")) == [
        (device, -1, False)
    ]
