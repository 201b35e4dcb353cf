"""Writes for organizations and memberships."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.text import slugify

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
    """The organization the claims put the user in, or None for none.

    The organization claim (OIDC_ORG_CLAIM) may hold a slug, a list of them or, as Keycloak's
    organization mapper with ids, an object keyed by slug; else groups with the configured prefix
    (`/sparks-org-acme` → acme) decide. A user belongs to one organization: with several, the
    first in alphabetical order, so that the same token always gives the same answer.
    """
    candidates: list[str] = []
    claim_name = settings.OIDC_ORG_CLAIM
    if claim_name and claims.get(claim_name) not in (None, "", [], {}):
        value = claims[claim_name]
        if isinstance(value, str):
            candidates = [value]
        elif isinstance(value, Mapping):
            candidates = [str(key) for key in value]
        elif isinstance(value, list | tuple):
            candidates = [str(item) for item in value if isinstance(item, str)]
    elif settings.OIDC_ORG_GROUP_PREFIX:
        prefix = settings.OIDC_ORG_GROUP_PREFIX.lstrip("/")
        groups = claims.get(settings.OIDC_ORG_GROUPS_CLAIM) or []
        if isinstance(groups, list | tuple):
            # Keycloak sends `/group` with "full group path" on, `group` without: accept both.
            candidates = [
                group.lstrip("/")[len(prefix) :]
                for group in groups
                if isinstance(group, str) and group.lstrip("/").startswith(prefix)
            ]
    slugs = sorted({slugify(candidate)[:64] for candidate in candidates} - {""})
    if len(slugs) > 1:
        logger.warning("Claims name several organizations %s; the user is put in %s.", slugs, slugs[0])
    return slugs[0] if slugs else None


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

    `sub` is the stable key (User.oidc_subject); email and names follow the provider on every
    sign-in, and so does the membership: a token that names another organization moves the user,
    one that names none takes the user out. Called on each browser sign-in and for each new bearer
    token, so what the provider says is what applies.
    """
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        raise InvalidClaims("The provider's claims carry no usable subject (sub).")
    slug = organization_slug_from_claims(claims)
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
        if changed:
            user.save(update_fields=changed)
        _apply_membership(user, slug)
        signals.claims_applied.send(sender=User, user=user, claims=claims)
    return user


def _apply_profile_claims(user: User, claims: Mapping[str, Any]) -> list[str]:
    wanted = {
        "email": str(claims.get("email") or user.email)[:254],
        "first_name": str(claims.get("given_name") or "")[:150],
        "last_name": str(claims.get("family_name") or "")[:150],
    }
    if not wanted["first_name"] and not wanted["last_name"] and claims.get("name"):
        wanted["first_name"] = str(claims["name"])[:150]
    changed = [name for name, value in wanted.items() if getattr(user, name) != value]
    for name in changed:
        setattr(user, name, wanted[name])
    return changed


def _apply_membership(user: User, slug: str | None) -> None:
    current = Membership.objects.filter(user=user).select_related("organization").first()
    if slug is None:
        if current is not None:
            current.delete()
        return
    if current is not None and current.organization.slug == slug:
        return  # unchanged: keep the role an administrator may have given
    organization = ensure_organization(slug, slug.replace("-", " ").title())
    set_membership(user, organization)
