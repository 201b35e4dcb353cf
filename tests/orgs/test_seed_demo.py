"""`manage.py seed_demo`: the demo organizations and users, safe to run again."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from orgs.models import Membership, Organization, PresencePolicy, User

pytestmark = pytest.mark.django_db


DEMO = {
    # username: (organization slug, role)
    "demo-admin": ("demo", "admin"),
    "alice": ("demo", "member"),
    "bob": ("demo", "member"),
    "dave": ("demo", "member"),
    "erin": ("demo", "member"),
    "frank": ("demo", "member"),
    "grace": ("demo", "member"),
    "carol": ("acme", "member"),
}


def _seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def _counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in (Organization, PresencePolicy, User, Membership, Token)}


def test_seed_demo_creates_the_demo_and_acme_organizations():
    _seed()

    assert set(Organization.objects.values_list("slug", flat=True)) == {"demo", "acme"}
    assert PresencePolicy.objects.count() == 2


def test_seed_demo_puts_each_user_in_their_organization_and_role():
    _seed()

    memberships = {
        m.user.username: (m.organization.slug, m.role)
        for m in Membership.objects.select_related("user", "organization")
    }
    assert memberships == DEMO


def test_seed_demo_admin_can_use_the_django_admin():
    _seed()

    admin = User.objects.get(username="demo-admin")
    assert admin.is_staff and admin.is_superuser
    assert not User.objects.filter(username__in=["alice", "bob", "carol"], is_staff=True).exists()


def test_seed_demo_prints_each_users_password_and_token():
    output = _seed()

    for username in DEMO:
        user = User.objects.get(username=username)
        assert f"password={username}-sparks-demo" in output
        assert user.check_password(f"{username}-sparks-demo")
        assert Token.objects.get(user=user).key in output


def test_seed_demo_twice_is_idempotent():
    _seed()
    counts = _counts()
    tokens = dict(Token.objects.values_list("user__username", "key"))

    output = _seed()

    assert _counts() == counts == {"Organization": 2, "PresencePolicy": 2, "User": 8, "Membership": 8, "Token": 8}
    assert dict(Token.objects.values_list("user__username", "key")) == tokens
    for username in DEMO:
        assert User.objects.get(username=username).check_password(f"{username}-sparks-demo")
        assert f"password={username}-sparks-demo" in output


def test_seed_demo_keeps_a_password_the_user_changed():
    _seed()
    alice = User.objects.get(username="alice")
    alice.set_password("a new secret")
    alice.save()

    output = _seed()

    alice.refresh_from_db()
    assert alice.check_password("a new secret")
    assert "alice-sparks-demo" not in output
    assert "(changed)" in output
