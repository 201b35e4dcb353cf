"""Bearer access tokens of the organization account on the REST API and SSE.

JWTs are verified locally against the provider's published keys (a real loopback server here);
opaque tokens are checked at the userinfo endpoint, once per cache period."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient
from werkzeug.test import Client as WsgiClient

from orgs.models import User
from tests.orgs.keycloak_realm import new_key

pytestmark = pytest.mark.django_db


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_valid_jwt_signs_in_and_creates_the_user_in_the_claimed_organization(jwt_provider):
    response = bearer(jwt_provider.token("kc-erin", organization="acme")).get("/api/v1/me/presence")

    assert response.status_code == 200
    user = User.objects.get(oidc_subject="kc-erin")
    assert user.membership.organization.slug == "acme"


def test_a_valid_jwt_costs_the_provider_no_request_once_the_keys_are_known(jwt_provider):
    bearer(jwt_provider.token("kc-erin", organization="acme")).get("/api/v1/me/presence")
    before = dict(jwt_provider.hits)

    response = bearer(jwt_provider.token("kc-erin", organization="acme", jti="second")).get("/api/v1/me/presence")

    assert response.status_code == 200
    assert jwt_provider.hits == before


def test_an_expired_jwt_is_refused(jwt_provider):
    response = bearer(jwt_provider.token(expires_in=-3600)).get("/api/v1/me/presence")

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"
    assert "expired" in response.json()["detail"]
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_refused_api_token_is_challenged_for_an_api_token(alice):
    response = APIClient().get("/api/v1/me/presence", HTTP_AUTHORIZATION="Token not-a-known-token")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_a_jwt_with_a_wrong_signature_is_refused(jwt_provider):
    header, _, signature = jwt_provider.token().split(".")
    _, other_payload, _ = jwt_provider.token("kc-mallory").split(".")

    response = bearer(f"{header}.{other_payload}.{signature}").get("/api/v1/me/presence")

    assert response.status_code == 401
    assert "signature" in response.json()["detail"]


def test_a_jwt_signed_by_a_key_the_provider_does_not_publish_is_refused(jwt_provider):
    private_key, _ = new_key()
    forged = jwt_provider.token(key=(private_key, jwt_provider.keys[0][1]))

    assert bearer(forged).get("/api/v1/me/presence").status_code == 401


def test_a_jwt_of_another_issuer_is_refused(jwt_provider):
    response = bearer(jwt_provider.token(iss="https://evil.example/realms/acme")).get("/api/v1/me/presence")

    assert response.status_code == 401
    assert "another provider" in response.json()["detail"]


def test_a_jwt_for_another_audience_is_refused(jwt_provider):
    response = bearer(jwt_provider.token(aud="other-api", azp="other-app")).get("/api/v1/me/presence")

    assert response.status_code == 401
    assert "audience" in response.json()["detail"]


def test_a_jwt_whose_authorized_party_is_this_client_is_accepted(jwt_provider):
    token = jwt_provider.token(aud="account", azp="sparks-presence", organization="acme")

    assert bearer(token).get("/api/v1/me/presence").status_code == 200


def test_a_rotated_signing_key_is_fetched_when_a_token_names_it(jwt_provider):
    assert bearer(jwt_provider.token(organization="acme")).get("/api/v1/me/presence").status_code == 200
    new_key = jwt_provider.rotate()

    response = bearer(jwt_provider.token(key=new_key, organization="acme", jti="rotated")).get("/api/v1/me/presence")

    assert response.status_code == 200
    assert jwt_provider.hits["certs"] == 2


def test_unknown_key_ids_refresh_the_keys_at_most_once_per_interval(jwt_provider):
    bearer(jwt_provider.token(organization="acme")).get("/api/v1/me/presence")
    for n in range(3):
        stranger = new_key()
        assert bearer(jwt_provider.token(key=stranger, jti=str(n))).get("/api/v1/me/presence").status_code == 401

    assert jwt_provider.hits["certs"] == 2  # the first load, then one refresh for all three


def test_an_opaque_token_is_checked_at_userinfo_once_per_cache_period(jwt_provider):
    jwt_provider.userinfo["opaque-1"] = (200, {"sub": "kc-erin", "email": "erin@acme.test", "organization": "acme"})

    first = bearer("opaque-1").get("/api/v1/me/presence")
    second = bearer("opaque-1").get("/api/v1/me/presence")

    assert (first.status_code, second.status_code) == (200, 200)
    assert jwt_provider.hits["userinfo"] == 1
    assert User.objects.get(oidc_subject="kc-erin").membership.organization.slug == "acme"


def test_an_opaque_token_the_provider_refuses_with_403_is_a_401(jwt_provider):
    jwt_provider.userinfo["opaque-403"] = (403, {"error": "insufficient_scope"})

    response = bearer("opaque-403").get("/api/v1/me/presence")

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_an_unknown_opaque_token_is_a_401(jwt_provider):
    assert bearer("never-issued").get("/api/v1/me/presence").status_code == 401


def test_a_provider_that_is_down_is_a_503_in_the_error_envelope(unreachable_issuer):
    response = bearer("opaque-anything").get("/api/v1/me/presence")

    assert response.status_code == 503
    assert response.json() == {
        "error": "provider_unavailable",
        "detail": "The sign-in provider cannot be reached to check the token; retry shortly.",
    }


def test_a_provider_answering_userinfo_with_a_server_error_is_a_503(jwt_provider):
    jwt_provider.userinfo["opaque-500"] = (500, {})

    assert bearer("opaque-500").get("/api/v1/me/presence").status_code == 503


def test_an_opaque_token_of_the_mock_provider_signs_in(mock_provider):
    mock_provider.set_user("kc-frank", email="frank@acme.test", organization="acme")

    response = bearer(mock_provider.access_token("kc-frank")).get("/api/v1/me/presence")

    assert response.status_code == 200
    assert User.objects.get(oidc_subject="kc-frank").membership.organization.slug == "acme"


def test_bearer_tokens_are_refused_while_oidc_is_off(settings):
    settings.OIDC_ISSUER = ""

    assert bearer("anything").get("/api/v1/me/presence").status_code == 401


def test_a_bearer_signal_request_through_the_wsgi_lane_is_authenticated(jwt_provider):
    from sparks_site.wsgi import application

    token = jwt_provider.token("kc-erin", organization="acme")
    device = bearer(token).post("/api/v1/devices", {"installation_id": "erin-laptop"}, format="json").json()
    lane = WsgiClient(application)

    accepted = lane.post(
        f"/api/v1/devices/{device['device_id']}/signals",
        json={"signals": [{"type": "heartbeat", "seq": 1}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    refused = lane.post(
        f"/api/v1/devices/{device['device_id']}/signals",
        json={"signals": [{"type": "heartbeat", "seq": 2}]},
        headers={"Authorization": f"Bearer {jwt_provider.token('kc-erin', expires_in=-3600)}"},
    )

    assert accepted.status_code == 202
    assert accepted.json["status"] == "available"
    assert refused.status_code == 401


def test_the_sse_stream_refuses_an_invalid_bearer_token(jwt_provider):
    response = Client().get("/api/v1/peers/stream", HTTP_AUTHORIZATION=f"Bearer {jwt_provider.token(aud='x', azp='x')}")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_the_sse_stream_answers_503_when_the_provider_is_down(unreachable_issuer):
    response = Client().get("/api/v1/peers/stream", HTTP_AUTHORIZATION="Bearer opaque-anything")

    assert response.status_code == 503
    assert response.json()["error"] == "provider_unavailable"
