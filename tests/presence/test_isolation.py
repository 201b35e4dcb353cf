"""Tenant isolation: nobody reads or changes another user's devices, in another organization or their own."""

from __future__ import annotations

import pytest

from presence.models import Device, PresenceState

pytestmark = pytest.mark.django_db

SIGNALS = {"signals": [{"type": "network", "value": "offline", "seq": 1}]}


def _device_of(client) -> str:
    response = client.post("/api/v1/devices", {"installation_id": "install-1", "label": "laptop"}, format="json")
    assert response.status_code == 201
    return response.json()["device_id"]


def _snapshot(user, device_id: str) -> tuple[dict, dict]:
    device = Device.objects.filter(pk=device_id).values().get()
    state = PresenceState.objects.filter(user=user).values().get()
    return device, state


def _touch(client, method: str, device_id: str):
    if method == "delete":
        return client.delete(f"/api/v1/devices/{device_id}")
    return client.post(f"/api/v1/devices/{device_id}/signals", SIGNALS, format="json")


@pytest.fixture
def carol_device(api_for, carol) -> str:
    return _device_of(api_for(carol))


@pytest.fixture
def bob_device(api_for, bob) -> str:
    return _device_of(api_for(bob))


def test_my_device_list_does_not_show_another_organizations_device(api_for, alice, carol, carol_device):
    _device_of(api_for(alice))

    response = api_for(alice).get("/api/v1/devices")

    assert response.status_code == 200
    assert carol_device not in [device["device_id"] for device in response.json()]
    assert len(response.json()) == 1


@pytest.mark.parametrize("method", ["delete", "signals"])
def test_another_organizations_device_is_404_and_unchanged(api_for, alice, carol, carol_device, method):
    before = _snapshot(carol, carol_device)

    response = _touch(api_for(alice), method, carol_device)

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "No such device."}
    assert _snapshot(carol, carol_device) == before


@pytest.mark.parametrize("method", ["delete", "signals"])
def test_a_colleagues_device_is_404_and_unchanged(api_for, alice, bob, bob_device, method):
    before = _snapshot(bob, bob_device)

    response = _touch(api_for(alice), method, bob_device)

    assert response.status_code == 404
    assert _snapshot(bob, bob_device) == before


@pytest.mark.parametrize("method", ["delete", "signals"])
def test_someone_elses_device_answers_like_an_unknown_one(api_for, alice, carol, carol_device, method):
    alice_api = api_for(alice)

    foreign = _touch(alice_api, method, carol_device)
    unknown = _touch(alice_api, method, "0" * 32)

    assert (foreign.status_code, foreign.json()) == (unknown.status_code, unknown.json())


@pytest.mark.parametrize("method", ["delete", "signals"])
def test_the_owner_still_reaches_their_device(api_for, carol, carol_device, method):
    # The control of the 404 tests above: the same requests work for the owner.
    response = _touch(api_for(carol), method, carol_device)

    assert response.status_code == {"delete": 204, "signals": 202}[method]


def test_same_installation_id_gives_another_user_another_device(api_for, alice, carol, carol_device):
    alice_device = _device_of(api_for(alice))

    assert alice_device != carol_device
    assert Device.objects.get(pk=carol_device).user == carol


def test_another_organizations_member_is_not_a_peer(api_for, alice, carol, carol_device):
    alice_api = api_for(alice)

    detail = alice_api.get(f"/api/v1/peers/{carol.public_id}")
    listing = alice_api.get("/api/v1/peers")

    assert detail.status_code == 404
    assert str(carol.public_id) not in [peer["user_id"] for peer in listing.json()["results"]]


def test_carol_does_not_see_alice_either(api_for, alice, bob, carol):
    response = api_for(carol).get("/api/v1/peers")

    assert response.json()["count"] == 0
