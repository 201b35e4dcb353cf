"""`manage.py seed_demo`: demo organizations and users, idempotent."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from orgs.models import Membership, User
from orgs.services import ensure_organization, set_membership

DEMO_USERS = (
    # username, organization slug, organization name, role, first name, last name
    ("demo-admin", "demo", "Demo", Membership.Role.ADMIN, "Dana", "Admin"),
    ("alice", "demo", "Demo", Membership.Role.MEMBER, "Alice", "Anders"),
    ("bob", "demo", "Demo", Membership.Role.MEMBER, "Bob", "Berg"),
    # Colleagues whose presence `manage.py demo_presence` acts out (presence/demo.py).
    ("dave", "demo", "Demo", Membership.Role.MEMBER, "Dave", "Dunn"),
    ("erin", "demo", "Demo", Membership.Role.MEMBER, "Erin", "Eze"),
    ("frank", "demo", "Demo", Membership.Role.MEMBER, "Frank", "Falk"),
    ("grace", "demo", "Demo", Membership.Role.MEMBER, "Grace", "Gray"),
    ("carol", "acme", "Acme", Membership.Role.MEMBER, "Carol", "Chen"),
)


def demo_password(username: str) -> str:
    return f"{username}-sparks-demo"


class Command(BaseCommand):
    help = "Create the demo organizations (demo, acme) and users; safe to run again."

    def handle(self, *args, **options) -> None:
        self.stdout.write("Demo accounts (password, API token):")
        for username, slug, org_name, role, first_name, last_name in DEMO_USERS:
            organization = ensure_organization(slug, org_name)
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"first_name": first_name, "last_name": last_name, "email": f"{username}@{slug}.example"},
            )
            if created:
                user.set_password(demo_password(username))
            if role == Membership.Role.ADMIN:
                # The organization admin runs the product from the Django admin.
                user.is_staff = user.is_superuser = True
            user.save()
            set_membership(user, organization, role)
            token, _ = Token.objects.get_or_create(user=user)
            password = demo_password(username) if user.check_password(demo_password(username)) else "(changed)"
            self.stdout.write(f"  {username:<11} org={slug:<5} role={role:<6} password={password}  token={token.key}")
