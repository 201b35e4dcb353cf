import pytest

pytestmark = pytest.mark.django_db


def test_a_new_device_starts_the_user_available(alice_api):
    response = alice_api.post("/api/v1/devices", {"installation_id": "install-1", "label": "laptop"}, format="json")
    assert response.status_code == 201
    presence = alice_api.get("/api/v1/me/presence").json()
    assert presence["status"] == "available"
    assert presence["reason"] == "device_active"
