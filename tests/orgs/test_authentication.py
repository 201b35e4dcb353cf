"""Token authentication from the cache: no database query per request, revocation at once."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from orgs.authentication import cached_user

pytestmark = pytest.mark.django_db


def test_a_known_token_is_authenticated_without_a_database_query(alice_api, alice):
    device = alice_api.post("/api/v1/devices", {"installation_id": "install-1"}, format="json").json()["device_id"]
    url = f"/api/v1/devices/{device}/signals"
    alice_api.post(url, {"signals": [{"type": "heartbeat", "seq": 1}]}, format="json")

    with CaptureQueriesContext(connection) as queries:
        response = alice_api.post(url, {"signals": [{"type": "heartbeat", "seq": 2}]}, format="json")

    assert response.status_code == 202
    assert queries.captured_queries == []


def test_a_revoked_token_is_refused_at_once(alice_api, alice):
    assert alice_api.get("/api/v1/me/presence").status_code == 200

    Token.objects.filter(user=alice).delete()

    response = alice_api.get("/api/v1/me/presence")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_a_deactivated_user_is_refused_at_once(alice_api, alice):
    assert alice_api.get("/api/v1/me/presence").status_code == 200

    alice.is_active = False
    alice.save()

    assert alice_api.get("/api/v1/me/presence").status_code == 401


def test_a_user_rebuilt_from_the_cache_refuses_to_be_saved(alice):
    partial = cached_user({"id": alice.pk, "username": alice.username, "is_active": True})

    with pytest.raises(RuntimeError):
        partial.save()
