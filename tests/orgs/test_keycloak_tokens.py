"""Which Keycloak tokens open the API, the SSE stream and the websocket: access tokens only, and only
those meant for this API. Every token here is shaped as Keycloak 26 issues it (tests/orgs/keycloak_realm.py).

A JWT that names no type (no `typ` claim, no `at+jwt` header) is refused: an ID token of a provider
that does not type its tokens looks exactly like that.
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from rest_framework.test import APIClient

from orgs.models import User
from tests.orgs.keycloak_realm import CLIENT_ID
from tests.presence.test_websocket import refused_with

ME = "/api/v1/me/presence"
STREAM = "/api/v1/peers/stream"


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def refusal(token: str) -> str:
    response = bearer(token).get(ME)
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "authentication_failed"
    return response.json()["detail"]


# --- Token types ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_access_token_of_the_realm_opens_the_api(keycloak_realm):
    token = keycloak_realm.token("kc-erin", organization=["acme"])

    assert bearer(token).get(ME).status_code == 200
    assert User.objects.get(oidc_subject="kc-erin").membership.organization.slug == "acme"


@pytest.mark.django_db
def test_an_id_token_is_not_an_access_token(keycloak_realm):
    # An ID token has every other mark of a good token here: our signature, our issuer, aud = our client.
    assert refusal(keycloak_realm.id_token("kc-erin")) == "Invalid token: An ID token is not an access token."


@pytest.mark.django_db
def test_a_refresh_token_is_refused_by_its_name(keycloak_realm):
    # Keycloak signs refresh tokens with the realm's HMAC key (HS512): never verifiable here anyway.
    assert refusal(keycloak_realm.refresh_token("kc-erin")) == "Invalid token: A refresh token is not an access token."


@pytest.mark.django_db
def test_a_forged_token_claiming_to_be_an_access_token_is_refused_by_its_signature(keycloak_realm):
    header, _, signature = keycloak_realm.token("kc-erin").split(".")
    _, payload, _ = keycloak_realm.token("kc-mallory", realm_access={"roles": ["sparks-admin"]}).split(".")

    assert "signature" in refusal(f"{header}.{payload}.{signature}")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("typ", "named"),
    [("Refresh", "A refresh token"), ("Offline", "An offline token"), ("Logout", "A logout token"), ("X", "'X'")],
)
def test_a_token_of_another_type_is_refused_by_its_name(keycloak_realm, typ, named):
    detail = refusal(keycloak_realm.token("kc-erin", typ=typ))

    assert named in detail
    assert "is not an access token" in detail


@pytest.mark.django_db
def test_a_token_without_a_type_is_refused(keycloak_realm):
    assert "does not say it is an access token" in refusal(keycloak_realm.token("kc-erin", typ=None))


@pytest.mark.django_db
def test_an_rfc_9068_access_token_is_accepted_by_its_header_type(keycloak_realm):
    token = keycloak_realm.token("kc-erin", typ=None, headers={"typ": "at+jwt"}, organization=["acme"])

    assert bearer(token).get(ME).status_code == 200


@pytest.mark.django_db
def test_an_id_token_with_an_access_token_header_is_refused(keycloak_realm):
    token = keycloak_realm.id_token("kc-erin")
    forged = keycloak_realm.token("kc-erin", typ="ID", headers={"typ": "at+jwt"})

    assert refusal(token) == refusal(forged) == "Invalid token: An ID token is not an access token."


@pytest.mark.django_db
def test_the_sse_stream_refuses_an_id_token(keycloak_realm):
    response = Client().get(STREAM, HTTP_AUTHORIZATION=f"Bearer {keycloak_realm.id_token('kc-erin')}")

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token: An ID token is not an access token."
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.django_db(transaction=True)
def test_the_websocket_refuses_an_id_token_with_4401(keycloak_realm):
    token = keycloak_realm.id_token("kc-erin", organization=["demo"])

    async def scenario():
        assert await refused_with(subprotocols=["sparks.presence.v1", f"bearer.{token}"]) == 4401
        assert await refused_with(path=f"/ws/presence/?access_token={token}") == 4401

    async_to_sync(scenario)()


# --- Audience: tokens Keycloak issued to other clients -------------------------------------------


@pytest.mark.django_db
def test_a_token_of_another_client_without_this_api_in_its_audience_is_refused(keycloak_realm):
    token = keycloak_realm.token("kc-erin", azp="sparks-desktop", aud="account")

    assert refusal(token) == "Invalid token: The token is meant for another audience."


@pytest.mark.django_db
def test_a_token_of_another_client_with_this_api_added_by_an_audience_mapper_is_accepted(keycloak_realm):
    token = keycloak_realm.token("kc-erin", azp="sparks-desktop", aud=[CLIENT_ID, "account"])

    assert bearer(token).get(ME).status_code == 200


@pytest.mark.django_db
def test_a_token_of_this_client_is_accepted_with_only_account_in_its_audience(keycloak_realm):
    token = keycloak_realm.token("kc-erin", azp=CLIENT_ID, aud="account")

    assert bearer(token).get(ME).status_code == 200


@pytest.mark.django_db
def test_an_extra_api_audience_admits_another_clients_tokens(keycloak_realm, settings):
    settings.OIDC_API_AUDIENCES = [CLIENT_ID, "sparks-api"]

    assert bearer(keycloak_realm.token("kc-erin", azp="sparks-desktop", aud=["sparks-api"])).get(ME).status_code == 200


# --- Never a server error ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "claims",
    [
        {"sub": None},
        {"sub": ""},
        {"sub": 42},
        {"exp": "tomorrow"},
        {"aud": 7, "azp": None},
        {"aud": [None, {"x": 1}], "azp": ["sparks-presence"]},
        {"typ": 7},
        {"typ": ["Bearer"]},
        {"organization": 5},
        {"organization": {"": {}}},
        {"groups": "sparks-org-acme"},
        {"realm_access": "admin"},
        {"realm_access": {"roles": "sparks-admin"}},
        {"resource_access": {CLIENT_ID: ["sparks-admin"]}},
        {"given_name": {"first": "Erin"}, "email": ["erin@acme.test"]},
        {"sid": 3, "iat": "now"},
    ],
)
def test_odd_claims_are_a_401_or_ignored_never_a_server_error(keycloak_realm, settings, claims):
    settings.OIDC_ADMIN_ROLES = ["sparks-admin"]
    settings.OIDC_ORG_GROUP_PREFIX = "/sparks-org-"

    claims = dict(claims)
    response = bearer(keycloak_realm.token(claims.pop("sub", "kc-erin"), **claims)).get(ME)

    assert response.status_code in (200, 401), response.content
