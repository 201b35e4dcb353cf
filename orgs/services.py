"""Writes for organizations and memberships."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from orgs import claims as claims_rules
from orgs import signals
from orgs.models import Membership, Organization, PresencePolicy, User

logger = logging.getLogger(__name__)


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


# --- Sign-in with the organization account (OIDC) -------------------------------------------


class InvalidClaims(ValueError):
    """The provider's claims cannot identify a user (no usable `sub`)."""


def organization_slug_from_claims(claims: Mapping[str, Any]) -> str | None:
    """The organization the claims name, or None (none named, or the claim not carried)."""
    return claims_rules.organization_of(claims).slug


def _free_username(claims: Mapping[str, Any], subject: str) -> str:
    """The provider's preferred username when no one has it yet, else one derived from the subject:
    a local account with the same name is someone else until an administrator links them."""
    limit = User._meta.get_field("username").max_length
    wanted = str(claims.get("preferred_username") or claims.get("email") or "").strip()[:limit]
    if wanted and not User.objects.filter(username=wanted).exists():
        return wanted
    suffix = hashlib.sha256(subject.encode()).hexdigest()[:12]
    return f"{(wanted or 'oidc')[: limit - 13]}-{suffix}"


def user_from_claims(claims: Mapping[str, Any]) -> User:
    """The user the provider's claims describe, created or updated, in the organization they name.

    `sub` is the stable key (User.oidc_subject). Email and names follow the provider when the claims
    carry them; so do the membership (another organization moves the user, a claim naming none
    takes them out) and, with OIDC_ADMIN_ROLES, the role. A claim that is not carried changes
    nothing (see orgs/claims.py). Called on each browser sign-in and for each new bearer token.
    """
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        raise InvalidClaims("The provider's claims carry no usable subject (sub).")
    organization = claims_rules.organization_of(claims)
    admin = claims_rules.admin_by_roles(claims)
    with transaction.atomic():
        user = User.objects.select_for_update().filter(oidc_subject=subject).first()
        if user is None:
            try:
                with transaction.atomic():
                    user = User(oidc_subject=subject, username=_free_username(claims, subject))
                    user.set_unusable_password()
                    user.save()
            except IntegrityError:
                # The same new user signed in twice at once: the other request created them.
                user = User.objects.select_for_update().get(oidc_subject=subject)
        changed = _apply_profile_claims(user, claims)
        changed += _apply_membership(user, organization, admin)
        if changed:
            user.save(update_fields=sorted(set(changed)))
        signals.claims_applied.send(sender=User, user=user, claims=claims)
    return user


def _apply_profile_claims(user: User, claims: Mapping[str, Any]) -> list[str]:
    wanted = claims_rules.profile_of(claims)
    changed = [name for name, value in wanted.items() if getattr(user, name) != value]
    for name in changed:
        setattr(user, name, wanted[name])
    return changed


def _apply_membership(user: User, organization: claims_rules.OrganizationClaim, admin: bool | None) -> list[str]:
    """Membership and role as the claims say; the user's fields changed (staff status), to save."""
    current = Membership.objects.filter(user=user).select_related("organization").first()
    if organization.carried and organization.slug is None:
        if current is not None:
            current.delete()
        return []
    if organization.carried and (current is None or current.organization.slug != organization.slug):
        old_role = current.role if current is not None else None
        slug = organization.slug
        target = ensure_organization(slug, slug.replace("-", " ").title())
        current = set_membership(user, target, Membership.Role.ADMIN if admin else Membership.Role.MEMBER)
        return _follow_role_with_staff(user, old_role, current.role) if admin is not None else []
    if current is None or admin is None:
        # No organization to be admin of, or no roles claim: the role an administrator gave stays.
        return []
    wanted = Membership.Role.ADMIN if admin else Membership.Role.MEMBER
    old_role = current.role
    if old_role != wanted:
        current.role = wanted
        current.save(update_fields=["role"])
    return _follow_role_with_staff(user, old_role, wanted)


def _follow_role_with_staff(user: User, old_role: str | None, new_role: str) -> list[str]:
    """An organization admin needs staff status to enter the admin: roles that appoint one give it,
    roles that demote one take it back. Staff status given by hand to a member is left alone, and
    superusers are never touched."""
    if user.is_superuser:
        return []
    if new_role == Membership.Role.ADMIN and not user.is_staff:
        user.is_staff = True
        return ["is_staff"]
    if old_role == Membership.Role.ADMIN and new_role != Membership.Role.ADMIN and user.is_staff:
        user.is_staff = False
        return ["is_staff"]
    return []
