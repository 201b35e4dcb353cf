"""What Keycloak's claims change: the organization (both shapes of Keycloak 26 Organizations, or
groups), the admin role (OIDC_ADMIN_ROLES from realm and client roles), and the profile.

The rule: a claim that is absent changes nothing (lightweight access tokens carry no profile, group,
organization or role claims); a claim that is present applies, even when it names nothing.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from rest_framework.test import APIClient

from orgs.models import Membership, User
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.orgs.keycloak_realm import CLIENT_ID

pytestmark = pytest.mark.django_db

ME = "/api/v1/me/presence"


def call_api(token: str) -> User:
    """One API call with the token; the user as the claims left them."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.get(ME)
    assert response.status_code in (200, 403), response.content  # 403: signed in, in no organization
    return User.objects.select_related("membership__organization").get(oidc_subject=client_subject(token))


def client_subject(token: str) -> str:
    from orgs.oidc import unverified_claims

    return unverified_claims(token)["sub"]


def organization_of(user: User) -> str | None:
    membership = Membership.objects.filter(user=user).select_related("organization").first()
    return membership.organization.slug if membership else None


def role_of(user: User) -> str | None:
    membership = Membership.objects.filter(user=user).first()
    return membership.role if membership else None


@pytest.fixture
def group_mode(settings) -> None:
    """Organizations from groups `/sparks-org-<slug>` (a Group Membership mapper), not a claim."""
    settings.OIDC_ORG_CLAIM = ""
    settings.OIDC_ORG_GROUP_PREFIX = "/sparks-org-"


@pytest.fixture
def admin_roles(settings) -> None:
    settings.OIDC_ADMIN_ROLES = ["sparks-admin"]


@pytest.fixture
def dana(keycloak_realm) -> User:
    """A user of the realm already in Acme, made its admin by hand (no roles configured then)."""
    acme = OrganizationFactory(slug="acme", name="Acme")
    user = UserFactory(username="dana", oidc_subject="kc-dana", email="dana@acme.test", first_name="Dana")
    MembershipFactory(user=user, organization=acme, role=Membership.Role.ADMIN)
    user.is_staff = True
    user.save()
    return user


# --- The organization ----------------------------------------------------------------------------


def test_the_organization_claim_as_a_list_of_aliases(keycloak_realm):
    keycloak_realm.add_user("kc-erin", organization=["acme"])

    assert organization_of(call_api(keycloak_realm.token("kc-erin"))) == "acme"


def test_the_organization_claim_as_a_map_of_alias_to_attributes(keycloak_realm):
    keycloak_realm.add_user("kc-erin", organization={"acme": {"id": "4f1c7a2e-0c1d-4b8e-9f55-2d6b7a1e3c90"}})

    assert organization_of(call_api(keycloak_realm.token("kc-erin"))) == "acme"


@pytest.mark.parametrize("group", ["/sparks-org-initech", "sparks-org-initech"], ids=["full-path", "plain-name"])
def test_groups_give_the_organization_with_or_without_the_full_path(keycloak_realm, group_mode, group):
    keycloak_realm.add_user("kc-erin", groups=["/staff", group])

    assert organization_of(call_api(keycloak_realm.token("kc-erin"))) == "initech"


def test_an_organization_claim_naming_none_takes_the_user_out(keycloak_realm, dana):
    keycloak_realm.add_user("kc-dana", organization=[])

    assert organization_of(call_api(keycloak_realm.token("kc-dana"))) is None


def test_groups_naming_no_organization_take_the_user_out(keycloak_realm, group_mode, dana):
    keycloak_realm.add_user("kc-dana", groups=["/staff"])

    assert organization_of(call_api(keycloak_realm.token("kc-dana"))) is None


def test_another_organization_moves_the_user_as_a_member(keycloak_realm, dana):
    keycloak_realm.add_user("kc-dana", organization=["globex"])

    user = call_api(keycloak_realm.token("kc-dana"))

    assert (organization_of(user), role_of(user)) == ("globex", Membership.Role.MEMBER)


# --- An absent claim changes nothing ---------------------------------------------------------------


def test_a_lightweight_token_keeps_the_membership_the_hand_given_admin_role_and_the_profile(keycloak_realm, dana):
    user = call_api(keycloak_realm.token("kc-dana", lightweight=True))

    assert (organization_of(user), role_of(user)) == ("acme", Membership.Role.ADMIN)
    assert (user.email, user.first_name, user.is_staff) == ("dana@acme.test", "Dana", True)


def test_a_lightweight_token_keeps_the_admin_role_even_with_admin_roles_configured(keycloak_realm, admin_roles, dana):
    user = call_api(keycloak_realm.token("kc-dana", lightweight=True))

    assert role_of(user) == Membership.Role.ADMIN


def test_a_token_without_groups_keeps_the_membership_in_group_mode(keycloak_realm, group_mode, dana):
    keycloak_realm.add_user("kc-dana")  # the realm's group mapper is not on the access token

    user = call_api(keycloak_realm.token("kc-dana"))

    assert (organization_of(user), role_of(user)) == ("acme", Membership.Role.ADMIN)


def test_a_token_without_profile_claims_blanks_no_name_or_email(keycloak_realm, dana):
    keycloak_realm.add_user("kc-dana", email=None, organization=["acme"])

    user = call_api(keycloak_realm.token("kc-dana"))

    assert (user.email, user.first_name) == ("dana@acme.test", "Dana")


def test_profile_claims_that_are_present_update_the_user(keycloak_realm, dana):
    keycloak_realm.add_user("kc-dana", email="dana@globex.test", given_name="Dana", family_name="Scully")

    user = call_api(keycloak_realm.token("kc-dana"))

    assert (user.email, user.get_full_name()) == ("dana@globex.test", "Dana Scully")


# --- Roles -----------------------------------------------------------------------------------------


def test_a_realm_role_makes_the_member_the_organizations_admin_with_staff_status(keycloak_realm, admin_roles):
    keycloak_realm.add_user("kc-erin", organization=["acme"], realm_roles=["sparks-admin"])

    user = call_api(keycloak_realm.token("kc-erin"))

    assert (role_of(user), user.is_staff) == (Membership.Role.ADMIN, True)
    browser = Client()
    browser.force_login(user)
    assert browser.get("/admin/").status_code == 200


def test_a_client_role_of_this_client_makes_an_admin(keycloak_realm, admin_roles):
    keycloak_realm.add_user("kc-erin", organization=["acme"], client_roles=["sparks-admin"])

    assert role_of(call_api(keycloak_realm.token("kc-erin"))) == Membership.Role.ADMIN


def test_a_role_of_another_client_makes_no_admin(keycloak_realm, admin_roles):
    keycloak_realm.add_user("kc-erin", organization=["acme"])
    token = keycloak_realm.token("kc-erin", resource_access={"sparks-desktop": {"roles": ["sparks-admin"]}})

    assert role_of(call_api(token)) == Membership.Role.MEMBER


def test_roles_without_an_admin_role_demote_the_admin_and_take_staff_status_back(keycloak_realm, admin_roles, dana):
    keycloak_realm.add_user("kc-dana", organization=["acme"], realm_roles=["sparks-user"])

    user = call_api(keycloak_realm.token("kc-dana"))

    assert (role_of(user), user.is_staff) == (Membership.Role.MEMBER, False)


def test_a_superuser_keeps_staff_status_when_roles_demote_them(keycloak_realm, admin_roles, dana):
    User.objects.filter(pk=dana.pk).update(is_superuser=True)
    keycloak_realm.add_user("kc-dana", organization=["acme"])

    user = call_api(keycloak_realm.token("kc-dana"))

    assert (role_of(user), user.is_staff, user.is_superuser) == (Membership.Role.MEMBER, True, True)


def test_staff_status_given_by_hand_to_a_member_is_left_alone(keycloak_realm, admin_roles):
    keycloak_realm.add_user("kc-erin", organization=["acme"])
    call_api(keycloak_realm.token("kc-erin"))
    User.objects.filter(oidc_subject="kc-erin").update(is_staff=True)

    user = call_api(keycloak_realm.token("kc-erin"))

    assert (role_of(user), user.is_staff) == (Membership.Role.MEMBER, True)


def test_a_user_moved_to_another_organization_by_claims_is_its_admin_when_the_roles_say_so(
    keycloak_realm, admin_roles, dana
):
    keycloak_realm.add_user("kc-dana", organization=["globex"], realm_roles=["sparks-admin"])

    user = call_api(keycloak_realm.token("kc-dana"))

    assert (organization_of(user), role_of(user)) == ("globex", Membership.Role.ADMIN)


def test_without_admin_roles_configured_roles_change_nothing(keycloak_realm, dana):
    keycloak_realm.add_user("kc-dana", organization=["acme"], realm_roles=[])

    user = call_api(keycloak_realm.token("kc-dana"))

    assert (role_of(user), user.is_staff) == (Membership.Role.ADMIN, True)


# --- The browser sign-in at the realm -------------------------------------------------------------


def sign_in(client: Client, realm, sub: str):
    """The authorization-code flow against the realm: our redirect, the realm's sign-in, the callback."""
    start = client.get("/oidc/authenticate/")
    assert start.status_code == 302
    assert start["Location"].startswith(realm.endpoint("auth"))
    back = urlsplit(realm.authorize(start["Location"], sub))
    assert back.path == "/oidc/callback/"
    return client.get(back.path, parse_qs(back.query))


def test_signing_in_at_the_realm_applies_the_organization_and_the_roles_of_its_id_token(keycloak_realm, admin_roles):
    keycloak_realm.add_user("kc-erin", given_name="Erin", organization={"acme": {}}, client_roles=["sparks-admin"])
    client = Client()

    response = sign_in(client, keycloak_realm, "kc-erin")

    assert response["Location"] == "/"  # the people page, where signing in lands
    user = User.objects.get(oidc_subject="kc-erin")
    assert (organization_of(user), role_of(user), user.is_staff) == ("acme", Membership.Role.ADMIN, True)
    assert client.get("/settings/privacy/").status_code == 200


def test_an_access_token_in_place_of_the_id_token_signs_no_one_in(keycloak_realm, monkeypatch):
    keycloak_realm.add_user("kc-erin", organization=["acme"])
    # An access token with everything an ID token has (aud = our client, the sign-in's nonce) but its type.
    monkeypatch.setattr(
        keycloak_realm,
        "id_token",
        lambda sub, nonce=None, sid=None: keycloak_realm.token(sub, aud=CLIENT_ID, nonce=nonce, sid=sid),
    )

    response = sign_in(Client(), keycloak_realm, "kc-erin")

    assert response["Location"].startswith("/accounts/sign-in/?failed=1")
    assert not User.objects.filter(oidc_subject="kc-erin").exists()
