"""Browser sign-in with the organization account against a real OIDC provider on loopback."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from orgs.models import Membership, User
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db


def sign_in(client: Client, provider, sub: str, next_url: str = "/settings/privacy/"):
    """The whole authorization-code flow: our redirect, the provider's form, the callback."""
    start = client.get("/oidc/authenticate/", {"next": next_url})
    assert start.status_code == 302
    back = provider.authorize(start["Location"], sub)
    parts = urlsplit(back)
    assert parts.path == "/oidc/callback/"
    return client.get(parts.path, parse_qs(parts.query))


def test_sign_in_redirects_to_the_authorization_endpoint_of_the_discovered_provider(mock_provider):
    response = Client().get("/oidc/authenticate/")

    location = urlsplit(response["Location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{mock_provider.url}/oauth2/authorize"
    assert query["client_id"] == ["sparks-presence"]
    assert query["redirect_uri"] == ["http://testserver/oidc/callback/"]
    assert "openid" in query["scope"][0].split()


def test_signing_in_creates_the_user_from_the_claims_in_the_claimed_organization(mock_provider):
    mock_provider.set_user(
        "kc-7f3a",
        email="dana@acme.test",
        preferred_username="dana",
        given_name="Dana",
        family_name="Scully",
        organization="acme",
    )
    client = Client()

    response = sign_in(client, mock_provider, "kc-7f3a")

    assert response.status_code == 302
    assert response["Location"] == "/settings/privacy/"
    user = User.objects.get(oidc_subject="kc-7f3a")
    assert (user.username, user.email, user.get_full_name()) == ("dana", "dana@acme.test", "Dana Scully")
    assert user.membership.organization.slug == "acme"
    assert not user.has_usable_password()
    assert client.get("/settings/privacy/").status_code == 200


def test_signing_in_again_applies_a_changed_organization_claim(mock_provider):
    mock_provider.set_user("kc-7f3a", email="dana@acme.test", organization="acme")
    sign_in(Client(), mock_provider, "kc-7f3a")

    mock_provider.set_user("kc-7f3a", email="dana@globex.test", organization="globex")
    sign_in(Client(), mock_provider, "kc-7f3a")

    user = User.objects.get(oidc_subject="kc-7f3a")
    assert user.membership.organization.slug == "globex"
    assert user.email == "dana@globex.test"
    assert User.objects.filter(oidc_subject="kc-7f3a").count() == 1


def test_signing_in_with_an_organization_claim_naming_none_takes_the_user_out_of_their_organization(mock_provider):
    mock_provider.set_user("kc-7f3a", organization="acme")
    sign_in(Client(), mock_provider, "kc-7f3a")

    mock_provider.set_user("kc-7f3a", email="dana@example.test", organization=[])
    sign_in(Client(), mock_provider, "kc-7f3a")

    assert not Membership.objects.filter(user__oidc_subject="kc-7f3a").exists()


def test_signing_in_without_an_organization_claim_changes_no_membership(mock_provider):
    mock_provider.set_user("kc-7f3a", organization="acme")
    sign_in(Client(), mock_provider, "kc-7f3a")

    mock_provider.set_user("kc-7f3a", email="dana@example.test")
    sign_in(Client(), mock_provider, "kc-7f3a")

    assert User.objects.get(oidc_subject="kc-7f3a").membership.organization.slug == "acme"


def test_groups_with_the_configured_prefix_give_the_organization(mock_provider, settings):
    settings.OIDC_ORG_CLAIM = ""
    settings.OIDC_ORG_GROUP_PREFIX = "/sparks-org-"
    mock_provider.set_user("kc-7f3a", groups=["/staff", "/sparks-org-initech"])

    sign_in(Client(), mock_provider, "kc-7f3a")

    assert User.objects.get(oidc_subject="kc-7f3a").membership.organization.slug == "initech"


def test_an_unchanged_organization_keeps_the_role_an_administrator_gave(mock_provider):
    acme = OrganizationFactory(slug="acme")
    user = UserFactory(username="dana", oidc_subject="kc-7f3a")
    MembershipFactory(user=user, organization=acme, role=Membership.Role.ADMIN)
    mock_provider.set_user("kc-7f3a", organization="acme")

    sign_in(Client(), mock_provider, "kc-7f3a")

    assert Membership.objects.get(user=user).role == Membership.Role.ADMIN


def test_a_local_account_with_the_same_user_name_is_not_taken_over(mock_provider, alice):
    mock_provider.set_user("kc-7f3a", preferred_username="alice", organization="acme")

    sign_in(Client(), mock_provider, "kc-7f3a")

    newcomer = User.objects.get(oidc_subject="kc-7f3a")
    assert newcomer.pk != alice.pk
    assert newcomer.username.startswith("alice-")
    alice.refresh_from_db()
    assert alice.oidc_subject is None
    assert alice.membership.organization.slug == "demo"


def test_signing_out_ends_the_session_here_and_at_the_provider(mock_provider):
    mock_provider.set_user("kc-7f3a", organization="acme")
    client = Client()
    sign_in(client, mock_provider, "kc-7f3a")

    response = client.post("/accounts/sign-out/")

    location = urlsplit(response["Location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{mock_provider.url}/oauth2/end_session"
    assert query["post_logout_redirect_uri"] == ["http://testserver/accounts/sign-in/"]
    assert query["id_token_hint"]
    assert client.get("/settings/privacy/").status_code == 302  # signed out here


def test_a_failed_sign_in_at_the_provider_signs_no_one_in(mock_provider):
    client = Client()
    start = client.get("/oidc/authenticate/")
    state = parse_qs(urlsplit(start["Location"]).query)["state"][0]

    response = client.get("/oidc/callback/", {"code": "made-up", "state": state})

    assert response["Location"].startswith("/accounts/sign-in/?failed=1")
    assert not User.objects.exists()


def test_the_sign_in_page_offers_the_organization_account_when_configured(mock_provider):
    page = Client().get("/accounts/sign-in/", {"next": "/me/"})

    assert b'href="/oidc/authenticate/?next=%2Fme%2F"' in page.content


def test_without_an_issuer_the_organization_sign_in_is_off(settings):
    settings.OIDC_ISSUER = ""

    assert Client().get("/oidc/authenticate/").status_code == 404
    page = Client().get("/accounts/sign-in/")
    assert page.status_code == 200
    assert b"/oidc/authenticate/" not in page.content
