"""Bearer access tokens of the organization account, for the REST API, SSE and websockets.

No round trip to the provider per request: a JWT access token (Keycloak's) is verified here, its
signature against the provider's published keys (cached), its issuer, expiry, audience and type
(an access token: `typ: Bearer`, or the header `typ: at+jwt`; see orgs/token_types.py). An
opaque token is asked about at the provider's userinfo endpoint, and the answer kept in the shared
cache for OIDC_USERINFO_CACHE_SECONDS under the token's hash. Either way the user the claims
describe is created or updated as at a browser sign-in (membership included), then remembered
under the token's hash until the token expires (at most a few minutes), so a busy client costs
one cache read a request. That same read asks whether the token's session was signed out at the
provider since (back-channel logout, orgs/logout.py): such a token is refused even while cached.

A token that is not valid is a 401. A provider that cannot be reached (or answers with a server
error) when it must be asked is a 503: the client should retry, not sign in again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from orgs import logout, oidc, services, token_types
from orgs.authentication import BEARER_CHALLENGE, BEARER_KEYWORD, cached_user
from orgs.models import User

logger = logging.getLogger(__name__)

# How long a verified token's user is remembered at most; the token's own expiry comes first.
USER_CACHE_SECONDS = 300
# What is kept of a token's claims with its user, to refuse it once its session is signed out.
_SESSION_CLAIMS = ("sid", "session_state", "sub")
_USER_FIELDS = ("id", "username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser")

InvalidToken = oidc.InvalidToken
ProviderUnavailable = oidc.ProviderUnavailable


def _token_hash(token: str) -> str:
    # Tokens never go to the cache as they are: a cache dump must not hand out credentials.
    return hashlib.sha256(token.encode()).hexdigest()


def _userinfo_claims(token: str) -> tuple[dict[str, Any], float]:
    """The provider's userinfo answer for an opaque token, and when the provider gave it."""
    cache_key = "oidc:userinfo:" + _token_hash(token)
    entry = cache.get(cache_key)
    if entry is not None:
        return entry["claims"], entry["checked_at"]
    try:
        response = requests.get(
            oidc.provider().userinfo_endpoint,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=settings.OIDC_TIMEOUT,
        )
    except requests.RequestException as error:
        raise ProviderUnavailable(f"The userinfo endpoint could not be reached: {error}") from error
    if 400 <= response.status_code < 500:
        # 401 is the usual answer to an unknown or expired token; any other refusal (403 for a
        # token without the openid scope, 400, ...) says the token is no good here either.
        raise InvalidToken(f"The provider refused the token ({response.status_code}).")
    if response.status_code != 200:
        raise ProviderUnavailable(f"The userinfo endpoint answered {response.status_code}.")
    try:
        claims = response.json()
    except ValueError as error:
        raise ProviderUnavailable("The userinfo endpoint did not answer JSON.") from error
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        raise ProviderUnavailable("The userinfo answer carries no subject.")
    checked_at = time.time()
    cache.set(cache_key, {"claims": claims, "checked_at": checked_at}, settings.OIDC_USERINFO_CACHE_SECONDS)
    return claims, checked_at


def claims_of(token: str) -> tuple[dict[str, Any], float, Any]:
    """The claims of a valid access token, how long (seconds) they may be relied on, and since when
    the token is known good: a JWT's `iat`; for an opaque token, when the provider vouched for it
    (a logout at the provider after that time refuses the cached answer, not the next one)."""
    if oidc.looks_like_jwt(token):
        # Only access tokens: an ID, refresh or logout token of the same realm is refused by its type.
        claims = oidc.decode_jwt(token, settings.OIDC_API_AUDIENCES, kind=token_types.require_access_token)
        return claims, min(USER_CACHE_SECONDS, claims["exp"] - time.time()), claims.get("iat")
    claims, checked_at = _userinfo_claims(token)
    return claims, settings.OIDC_USERINFO_CACHE_SECONDS, checked_at


def user_for_token(token: str) -> User:
    """The active user a bearer token belongs to; InvalidToken or ProviderUnavailable otherwise."""
    if not oidc.enabled():
        raise InvalidToken("Sign-in with the organization account is not configured.")
    if not token or len(token) > 16384:
        raise InvalidToken("The token is malformed.")
    cache_key = "auth:bearer:" + _token_hash(token)
    # A JWT's session and subject are read before it is verified only to fetch, in the same cache
    # round trip as its user, whether that session was signed out; nothing else is trusted before
    # verification (a token whose user is cached was verified when it was cached: same hash, same claims).
    peeked = oidc.unverified_claims(token) if oidc.looks_like_jwt(token) else {}
    found = cache.get_many([cache_key, *logout.marker_keys(peeked)])
    fields = found.get(cache_key)
    if fields is None:
        claims, lifetime, known_since = claims_of(token)
        session = {name: claims.get(name) for name in _SESSION_CLAIMS} | {"iat": known_since}
        # A JWT's markers came with the first read (its verified claims are those peeked at); an
        # opaque token's are read now, from what userinfo says of its session and subject.
        if logout.ended(session, found if peeked else None):
            raise InvalidToken("The session was signed out.")
        try:
            user = services.user_from_claims(claims)
        except services.InvalidClaims as error:
            raise InvalidToken(str(error)) from error
        fields = {name: getattr(user, name) for name in _USER_FIELDS} | {"public_id": str(user.public_id)}
        fields["session"] = session
        if lifetime >= 1:
            cache.set(cache_key, fields, int(lifetime))
    elif logout.ended(peeked or fields.get("session") or {}, found if peeked else None):
        raise InvalidToken("The session was signed out.")
    if not fields["is_active"]:
        raise InvalidToken("The user is inactive.")
    return cached_user({name: value for name, value in fields.items() if name != "session"})


class ProviderUnavailableError(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "provider_unavailable"
    default_detail = "The sign-in provider cannot be reached to check the token; retry shortly."


class BearerTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <access token>` of the organization account (OIDC)."""

    def authenticate(self, request: Request) -> tuple[User, str] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != BEARER_KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid bearer header: give exactly one token.")
        try:
            token = parts[1].decode("ascii")
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid bearer header: the token is not ASCII.") from None
        try:
            return user_for_token(token), token
        except InvalidToken as error:
            raise exceptions.AuthenticationFailed(f"Invalid token: {error}") from None
        except ProviderUnavailable as error:
            logger.warning("Bearer token not checked, provider unavailable: %s", error)
            raise ProviderUnavailableError() from None

    def authenticate_header(self, request: Request) -> str:
        return BEARER_CHALLENGE


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes this authentication."""

    target_class = "orgs.bearer.BearerTokenAuthentication"
    name = "organizationAccount"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token of the organization account (OIDC); JWTs are verified locally.",
        }
