"""Signing out at Keycloak ends the session here: OpenID Connect Back-Channel Logout 1.0, as Keycloak
sends it (a POST, form-encoded, `logout_token=<JWT>`, to the client's "Backchannel logout URL")."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from rest_framework.test import APIClient

from orgs.models import ProviderSession
from tests.orgs.keycloak_realm import new_key
from tests.presence.test_websocket import refused_with

LOGOUT_URL = "/oidc/backchannel-logout/"
# Where signing in without a next page lands (LOGIN_REDIRECT_URL: the people page), signed in only.
PRIVATE_PAGE = "/"
ME = "/api/v1/me/presence"


def backchannel_logout(logout_token: str | None):
    """What Keycloak sends to the Backchannel logout URL."""
    body = urlencode({"logout_token": logout_token}) if logout_token is not None else ""
    return Client().post(LOGOUT_URL, body, content_type="application/x-www-form-urlencoded")


def signed_in_browser(realm, sub: str) -> Client:
    """A browser signed in with the organization account at the realm (a new realm session)."""
    client = Client()
    start = client.get("/oidc/authenticate/")
    back = urlsplit(realm.authorize(start["Location"], sub))
    assert client.get(back.path, parse_qs(back.query))["Location"] == PRIVATE_PAGE
    assert client.get(PRIVATE_PAGE).status_code == 200
    return client


def api_status(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get(ME).status_code


@pytest.fixture
def erin(keycloak_realm):
    return keycloak_realm.add_user("kc-erin", organization=["acme"])


# --- Sessions ending ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_logout_of_the_realm_session_signs_the_browser_out(keycloak_realm, erin):
    browser = signed_in_browser(keycloak_realm, "kc-erin")
    sid = keycloak_realm.session_of("kc-erin")

    response = backchannel_logout(keycloak_realm.logout_token("kc-erin", sid=sid))

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert browser.get(PRIVATE_PAGE).status_code == 302  # anonymous: sent to sign in
    assert not ProviderSession.objects.exists()


@pytest.mark.django_db
def test_a_logout_of_one_realm_session_leaves_the_users_other_sessions(keycloak_realm, erin):
    laptop = signed_in_browser(keycloak_realm, "kc-erin")
    laptop_sid = keycloak_realm.session_of("kc-erin")
    phone = signed_in_browser(keycloak_realm, "kc-erin")

    assert backchannel_logout(keycloak_realm.logout_token("kc-erin", sid=laptop_sid)).status_code == 200

    assert laptop.get(PRIVATE_PAGE).status_code == 302
    assert phone.get(PRIVATE_PAGE).status_code == 200


@pytest.mark.django_db
def test_a_logout_naming_only_the_user_ends_all_their_sessions(keycloak_realm, erin):
    laptop = signed_in_browser(keycloak_realm, "kc-erin")
    phone = signed_in_browser(keycloak_realm, "kc-erin")

    assert backchannel_logout(keycloak_realm.logout_token("kc-erin", sid=None)).status_code == 200

    assert laptop.get(PRIVATE_PAGE).status_code == 302
    assert phone.get(PRIVATE_PAGE).status_code == 302


@pytest.mark.django_db
def test_a_logout_for_a_session_never_seen_here_is_still_a_200(keycloak_realm):
    assert backchannel_logout(keycloak_realm.logout_token("kc-nobody", sid="0f6e-unknown")).status_code == 200


@pytest.mark.django_db
def test_signing_out_here_forgets_the_realm_session(keycloak_realm, erin):
    browser = signed_in_browser(keycloak_realm, "kc-erin")
    assert ProviderSession.objects.filter(subject="kc-erin", provider_sid=keycloak_realm.session_of("kc-erin")).exists()

    browser.post("/accounts/sign-out/")

    assert not ProviderSession.objects.exists()


# --- Bearer tokens of an ended session ---------------------------------------------------------


@pytest.mark.django_db
def test_the_access_token_of_a_signed_out_session_is_refused_even_when_cached(keycloak_realm, erin):
    token = keycloak_realm.token("kc-erin", sid="realm-session-1")
    other_session = keycloak_realm.token("kc-erin", sid="realm-session-2")
    assert api_status(token) == 200  # verified, and its user cached under the token's hash

    backchannel_logout(keycloak_realm.logout_token("kc-erin", sid="realm-session-1"))

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.get(ME)
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token: The session was signed out."
    assert api_status(other_session) == 200


@pytest.mark.django_db
def test_a_logout_naming_only_the_user_refuses_tokens_issued_before_it_not_after(keycloak_realm, erin):
    before = keycloak_realm.token("kc-erin")
    assert api_status(before) == 200

    backchannel_logout(keycloak_realm.logout_token("kc-erin", sid=None))
    after = keycloak_realm.token("kc-erin", iat=int(time.time()) + 2)  # a new sign-in, later

    assert api_status(before) == 401
    assert api_status(after) == 200


@pytest.mark.django_db
def test_an_opaque_token_vouched_for_before_the_users_logout_is_refused_a_later_one_is_not(keycloak_realm, erin):
    keycloak_realm.userinfo["opaque-1"] = (200, {"sub": "kc-erin", "organization": ["acme"]})
    assert api_status("opaque-1") == 200

    backchannel_logout(keycloak_realm.logout_token("kc-erin", sid=None))
    keycloak_realm.userinfo["opaque-2"] = (200, {"sub": "kc-erin", "organization": ["acme"]})  # signed in again

    assert api_status("opaque-1") == 401
    assert api_status("opaque-2") == 200


@pytest.mark.django_db(transaction=True)
def test_the_websocket_refuses_the_token_of_a_signed_out_session_with_4401(keycloak_realm, erin):
    token = keycloak_realm.token("kc-erin", sid="realm-session-1")
    backchannel_logout(keycloak_realm.logout_token("kc-erin", sid="realm-session-1"))

    async def scenario():
        assert await refused_with(path=f"/ws/presence/?access_token={token}") == 4401

    async_to_sync(scenario)()


@pytest.mark.django_db
def test_the_sse_stream_refuses_the_token_of_a_signed_out_session(keycloak_realm, erin):
    token = keycloak_realm.token("kc-erin", sid="realm-session-1")
    backchannel_logout(keycloak_realm.logout_token("kc-erin", sid="realm-session-1"))

    assert Client().get("/api/v1/peers/stream", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


# --- Logout tokens that are refused -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"key": "forged"}, "signature is wrong"),
        ({"key": "stranger"}, "a key the provider does not publish"),
        ({"omit": ("events",)}, "`events`"),
        ({"events": {"http://schemas.openid.net/event/other": {}}}, "`events`"),
        ({"events": ["http://schemas.openid.net/event/backchannel-logout"]}, "`events`"),
        ({"nonce": "n-0S6_WzA2Mj"}, "`nonce`"),
        ({"sub": None, "sid": None}, "neither a session (`sid`) nor a subject (`sub`)"),
        ({"aud": "sparks-desktop"}, "another audience (`aud`)"),
        ({"aud": ["account"]}, "another audience (`aud`)"),
        ({"typ": "ID"}, "An ID token is not a logout token"),
        ({"typ": "Bearer"}, "An access token is not a logout token"),
        ({"iss": "https://evil.example/realms/sparks"}, "another provider"),
        ({"omit": ("iat",)}, "iat"),
        ({"exp": 1_000_000}, "expired"),
        ({"sid": 42}, "`sid`"),
    ],
)
def test_a_bad_logout_token_is_a_400_naming_why(keycloak_realm, change, named):
    change = dict(change)
    if change.get("key") == "forged":  # another key under the realm's key id
        change["key"] = (new_key()[0], keycloak_realm.keys[0][1])
    elif change.get("key") == "stranger":
        change["key"] = new_key()
    sub = change.pop("sub", "kc-erin")
    change.setdefault("sid", "realm-session-1")

    response = backchannel_logout(keycloak_realm.logout_token(sub, **change))

    assert response.status_code == 400
    assert response["Cache-Control"] == "no-store"
    assert response.json()["error"] == "invalid_request"
    assert named in response.json()["detail"]


@pytest.mark.django_db
def test_a_refused_logout_token_ends_nothing(keycloak_realm, erin):
    browser = signed_in_browser(keycloak_realm, "kc-erin")
    sid = keycloak_realm.session_of("kc-erin")

    assert backchannel_logout(keycloak_realm.logout_token("kc-erin", sid=sid, aud="other")).status_code == 400

    assert browser.get(PRIVATE_PAGE).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "logout_token",
    [None, "", "not-a-jwt", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 20000, "é.é.é"],
    ids=["missing", "empty", "word", "dots", "alg-none", "huge", "non-ascii"],
)
def test_a_logout_request_without_a_usable_token_is_a_400(keycloak_realm, logout_token):
    response = backchannel_logout(logout_token)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.django_db
def test_an_id_token_sent_as_a_logout_token_is_refused(keycloak_realm):
    # An ID token carries a nonce, no events, and says `typ: ID`: any one of them refuses it.
    response = backchannel_logout(keycloak_realm.id_token("kc-erin", nonce="abc", sid="realm-session-1"))

    assert response.status_code == 400


@pytest.mark.django_db
def test_the_logout_endpoint_takes_only_post(keycloak_realm):
    response = Client().get(LOGOUT_URL)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.django_db
def test_a_provider_whose_keys_cannot_be_fetched_is_a_503(keycloak_realm, unreachable_issuer):
    token = keycloak_realm.logout_token("kc-erin", sid="realm-session-1")

    response = backchannel_logout(token)

    assert response.status_code == 503
    assert response.json()["error"] == "provider_unavailable"


@pytest.mark.django_db
def test_the_logout_endpoint_is_off_without_an_issuer(settings):
    settings.OIDC_ISSUER = ""

    assert backchannel_logout("a.b.c").status_code == 404
