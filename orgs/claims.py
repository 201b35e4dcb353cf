"""What the provider's claims say about a user's organization and role, read without side effects.

The rule throughout: a claim the token (or userinfo) does not carry says nothing. Keycloak's
lightweight access tokens, and realms whose group or role mappers are not added to a token, leave
claims out; reading "absent" as "none" would take people out of their organization, or strip an
admin role given by hand, on their next API call. A claim that is present and names nothing does
count: that is how the provider says "no organization" or "not an admin".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.text import slugify

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OrganizationClaim:
    """Whether the claims speak of the organization at all (`carried`), and which one they name."""

    carried: bool
    slug: str | None = None


NOT_CARRIED = OrganizationClaim(carried=False)


def _organization_candidates(value: Any) -> list[str]:
    # Keycloak 26 Organizations send a list of aliases (["acme"]), or, with "Add organization
    # attributes/id" on the mapper, a map alias → attributes ({"acme": {"id": "…"}}); a user
    # attribute mapper sends a string.
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [str(key) for key in value]
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []


def _group_candidates(groups: Any, prefix: str) -> list[str]:
    if not isinstance(groups, list | tuple):
        return []
    # Keycloak sends `/group` with "full group path" on, `group` without: accept both.
    bare_prefix = prefix.lstrip("/")
    return [
        group.lstrip("/")[len(bare_prefix) :]
        for group in groups
        if isinstance(group, str) and group.lstrip("/").startswith(bare_prefix)
    ]


def organization_of(claims: Mapping[str, Any]) -> OrganizationClaim:
    """The organization the claims put the user in, if they speak of one.

    The organization claim (OIDC_ORG_CLAIM) decides when it names one; else groups with the
    configured prefix (`/sparks-org-acme` → acme). A user belongs to one organization: with several,
    the first in alphabetical order, so that the same token always gives the same answer.
    """
    claim_name = settings.OIDC_ORG_CLAIM
    prefix = settings.OIDC_ORG_GROUP_PREFIX
    groups_claim = settings.OIDC_ORG_GROUPS_CLAIM
    org_carried = bool(claim_name) and claims.get(claim_name) is not None
    groups_carried = bool(prefix) and claims.get(groups_claim) is not None
    if not (org_carried or groups_carried):
        return NOT_CARRIED
    candidates = _organization_candidates(claims[claim_name]) if org_carried else []
    if not candidates and groups_carried:
        candidates = _group_candidates(claims[groups_claim], prefix)
    slugs = sorted({slugify(candidate)[:64] for candidate in candidates} - {""})
    if len(slugs) > 1:
        logger.warning("Claims name several organizations %s; the user is put in %s.", slugs, slugs[0])
    return OrganizationClaim(carried=True, slug=slugs[0] if slugs else None)


def _role_names(container: Any) -> set[str] | None:
    if not isinstance(container, Mapping):
        return None
    roles = container.get("roles")
    return {role for role in roles if isinstance(role, str)} if isinstance(roles, list | tuple) else set()


def roles_of(claims: Mapping[str, Any]) -> set[str] | None:
    """The realm roles and this client's roles, or None when neither claim is carried.

    Keycloak puts realm roles in `realm_access.roles` and a client's roles in
    `resource_access.<client id>.roles`; only our own client's roles count.
    """
    realm_roles = _role_names(claims.get("realm_access"))
    resource_access = claims.get("resource_access")
    client_roles = (
        _role_names(resource_access.get(settings.OIDC_RP_CLIENT_ID)) if isinstance(resource_access, Mapping) else None
    )
    if realm_roles is None and client_roles is None:
        return None
    return (realm_roles or set()) | (client_roles or set())


def admin_by_roles(claims: Mapping[str, Any]) -> bool | None:
    """Whether the roles make the user their organization's admin; None when roles decide nothing
    (OIDC_ADMIN_ROLES empty, or no roles claim carried)."""
    admin_roles = {role.strip() for role in settings.OIDC_ADMIN_ROLES if role.strip()}
    if not admin_roles:
        return None
    roles = roles_of(claims)
    return None if roles is None else bool(roles & admin_roles)


def _text(claims: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = claims.get(name)
    if value is None or value == "":
        return None
    return str(value)[:limit]


def profile_of(claims: Mapping[str, Any]) -> dict[str, str]:
    """The user's fields the claims carry (email, first and last name); a field whose claim is
    absent is left out, so that a token without profile claims blanks nothing."""
    profile = {
        name: value
        for name, value in (
            ("email", _text(claims, "email", 254)),
            ("first_name", _text(claims, "given_name", 150)),
            ("last_name", _text(claims, "family_name", 150)),
        )
        if value is not None
    }
    full_name = _text(claims, "name", 150)
    if "first_name" not in profile and "last_name" not in profile and full_name is not None:
        # A provider that sends only `name`: it goes where the admin shows it first.
        profile["first_name"] = full_name
    return profile
