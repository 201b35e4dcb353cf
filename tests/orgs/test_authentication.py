"""Token authentication from the cache: no database query per request, revocation at once."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from orgs import services
from orgs.authentication import CachedTokenAuthentication, cached_user
from orgs.models import Membership, User
from presence import selectors

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


# --- The user's organization, read with the token -----------------------------------------------


def sign_in(key: str):
    user, _ = CachedTokenAuthentication().authenticate_credentials(key)
    return user


def test_a_token_brings_its_users_organization_in_the_same_query_and_then_from_the_cache(alice, organization):
    key = Token.objects.create(user=alice).key

    with CaptureQueriesContext(connection) as first:
        user = sign_in(key)
        organization_id = selectors.organization_id_of(user)
    with CaptureQueriesContext(connection) as again:
        cached = sign_in(key)
        cached_organization_id = selectors.organization_id_of(cached)

    assert organization_id == cached_organization_id == organization.id
    assert len(first.captured_queries) == 1
    assert again.captured_queries == []


def test_a_user_who_changed_organization_or_left_it_is_known_so_at_the_next_sign_in(
    alice, organization, other_organization
):
    key = Token.objects.create(user=alice).key
    assert selectors.organization_id_of(sign_in(key)) == organization.id

    services.set_membership(alice, other_organization)
    assert selectors.organization_id_of(sign_in(key)) == other_organization.id

    Membership.objects.filter(user=alice).delete()
    assert selectors.organization_id_of(sign_in(key)) is None


def test_a_user_signed_in_otherwise_has_their_organization_read(alice, organization):
    with CaptureQueriesContext(connection) as queries:
        organization_id = selectors.organization_id_of(User.objects.get(pk=alice.pk))

    assert organization_id == organization.id
    assert len(queries.captured_queries) == 2  # the user, then the membership


def test_many_tokens_are_resolved_together_each_to_its_own_user_in_one_query(make_member, organization):
    members = [make_member(f"member-{n}") for n in range(5)]
    keys = [Token.objects.create(user=member).key for member in members]
    gone = make_member("gone")
    gone_key = Token.objects.create(user=gone).key
    User.objects.filter(pk=gone.pk).update(is_active=False)
    sign_in(keys[0])  # known to the caches already

    with CaptureQueriesContext(connection) as queries:
        users = CachedTokenAuthentication().users_for([*keys, gone_key, "no-such-token"])

    assert {key: user.pk for key, user in users.items()} == {key: m.pk for key, m in zip(keys, members, strict=True)}
    assert len(queries.captured_queries) == 1
    assert {selectors.organization_id_of(user) for user in users.values()} == {organization.id}
