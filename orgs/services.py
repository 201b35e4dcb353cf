"""Writes for organizations and memberships."""

from __future__ import annotations

from django.db import transaction

from orgs.models import Membership, Organization, PresencePolicy, User


def ensure_organization(slug: str, name: str) -> Organization:
    """The organization with this slug, created with a default policy if it does not exist."""
    with transaction.atomic():
        organization, _ = Organization.objects.get_or_create(slug=slug, defaults={"name": name})
        PresencePolicy.objects.get_or_create(organization=organization)
    return organization


def set_membership(user: User, organization: Organization, role: str = Membership.Role.MEMBER) -> Membership:
    """Put the user in the organization (a user belongs to one organization at a time)."""
    membership, _ = Membership.objects.update_or_create(
        user=user, defaults={"organization": organization, "role": role}
    )
    return membership
