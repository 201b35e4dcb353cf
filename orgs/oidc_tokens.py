"""The provider's discovery document, its signing keys, and verifying the JWTs it signs.

The provider's endpoints come from its discovery document, fetched on first use and kept (in this
process and in the shared cache) for OIDC_METADATA_CACHE_SECONDS; its signing keys likewise, fetched
again at once when a token names a key id not seen yet (a key rotation), at most every
OIDC_JWKS_MIN_REFRESH_SECONDS so that made-up key ids cannot make us hammer the provider.
Used by the browser flow (orgs/oidc.py), bearer tokens (orgs/bearer.py) and the back-channel
logout (orgs/logout.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from django.conf import settings
from django.core.cache import cache

from orgs import token_types

logger = logging.getLogger(__name__)

SIGNING_ALGORITHMS = ["RS256"]
# Clocks of the provider and of this server differ a little.
LEEWAY_SECONDS = 30


class ProviderUnavailable(Exception):
    """The provider did not answer, or answered with an error of its own (5xx, garbage)."""


class InvalidToken(Exception):
    """A token that is not valid here: malformed, expired, wrongly signed, for another issuer or audience."""


# --- Discovery -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None


_lock = threading.Lock()
_providers: dict[str, tuple[float, Provider]] = {}


def enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def _fetch_json(url: str, what: str) -> dict[str, Any]:
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, headers={"Accept": "application/json"})
    except requests.RequestException as error:
        raise ProviderUnavailable(f"The sign-in provider's {what} could not be fetched: {error}") from error
    if response.status_code != 200:
        raise ProviderUnavailable(f"The sign-in provider's {what} answered {response.status_code}.")
    try:
        document = response.json()
    except ValueError as error:
        raise ProviderUnavailable(f"The sign-in provider's {what} is not JSON.") from error
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"The sign-in provider's {what} is not a JSON object.")
    return document


def provider() -> Provider:
    """The configured provider's endpoints, from its discovery document (cached)."""
    issuer = settings.OIDC_ISSUER
    if not issuer:
        raise ProviderUnavailable("Sign-in with the organization account is not configured (OIDC_ISSUER).")
    entry = _providers.get(issuer)
    if entry is not None and entry[0] > time.monotonic():
        return entry[1]
    cache_key = f"oidc:discovery:{issuer}"
    document = cache.get(cache_key)
    if document is None:
        document = _fetch_json(f"{issuer}/.well-known/openid-configuration", "discovery document")
        if document.get("issuer", "").rstrip("/") != issuer:
            # A discovery document for another issuer would make us trust tokens we should not.
            named = document.get("issuer")
            raise ProviderUnavailable(f"The discovery document names issuer {named!r}, not {issuer!r}.")
        missing = [
            name
            for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
            if not document.get(name)
        ]
        if missing:
            raise ProviderUnavailable(f"The discovery document lacks {', '.join(missing)}.")
        cache.set(cache_key, document, settings.OIDC_METADATA_CACHE_SECONDS)
    found = Provider(
        issuer=issuer,
        authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"],
        userinfo_endpoint=document["userinfo_endpoint"],
        jwks_uri=document["jwks_uri"],
        end_session_endpoint=document.get("end_session_endpoint"),
    )
    with _lock:
        _providers[issuer] = (time.monotonic() + settings.OIDC_METADATA_CACHE_SECONDS, found)
    return found


# --- Signing keys ------------------------------------------------------------------------------


@dataclass(slots=True)
class _KeySet:
    expires_at: float
    keys: list[jwt.PyJWK]
    forced_refresh_at: float | None = None  # when an unknown kid last made us fetch again


_key_sets: dict[str, _KeySet] = {}


def _load_keys(jwks_uri: str) -> list[jwt.PyJWK]:
    document = _fetch_json(jwks_uri, "signing keys")
    keys = []
    for entry in document.get("keys") or []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") != "RSA":
            continue
        try:
            keys.append(jwt.PyJWK(entry, algorithm=entry.get("alg") or "RS256"))
        except jwt.PyJWTError:
            logger.warning("The provider publishes a key this server cannot use: %s", entry.get("kid"))
    return keys


def _find(keys: list[jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    if kid is None:
        # A token may name no key only when there is no choice to make.
        return keys[0] if len(keys) == 1 else None
    return next((key for key in keys if key.key_id == kid), None)


def signing_key(jwks_uri: str, kid: str | None) -> jwt.PyJWK:
    now = time.monotonic()
    key_set = _key_sets.get(jwks_uri)
    if key_set is None or key_set.expires_at <= now:
        key_set = _KeySet(now + settings.OIDC_METADATA_CACHE_SECONDS, _load_keys(jwks_uri))
        _key_sets[jwks_uri] = key_set
    key = _find(key_set.keys, kid)
    if key is not None:
        return key
    # An unknown key: the provider may have rotated its keys since we fetched them.
    with _lock:
        last = key_set.forced_refresh_at
        may_refresh = last is None or now - last >= settings.OIDC_JWKS_MIN_REFRESH_SECONDS
        if may_refresh:
            key_set.forced_refresh_at = now
    if may_refresh:
        key_set.keys = _load_keys(jwks_uri)
        key_set.expires_at = now + settings.OIDC_METADATA_CACHE_SECONDS
        key = _find(key_set.keys, kid)
    if key is None:
        raise InvalidToken("The token is signed with a key the provider does not publish.")
    return key


def forget_provider_caches() -> None:
    """Drop what this process knows of providers (their endpoints and keys)."""
    with _lock:
        _providers.clear()
        _key_sets.clear()


def looks_like_jwt(token: str) -> bool:
    if token.count(".") != 2:
        return False
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return False
    return isinstance(header, dict) and "alg" in header


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's claims read without any check: only for tokens verified before (e.g. cached by hash)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def verify_signed(token: str, require: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a token the provider signed, issued by it, not expired (when it has
    `exp`), carrying the `require`d claims; InvalidToken otherwise. The audience is the caller's."""
    current = provider()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise InvalidToken("The token is malformed.") from error
    if header.get("alg") not in SIGNING_ALGORITHMS:
        raise InvalidToken("The token is not signed with RS256.")
    key = signing_key(current.jwks_uri, header.get("kid"))
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=SIGNING_ALGORITHMS,
            issuer=current.issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", *require], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidToken("The token has expired.") from error
    except jwt.InvalidIssuerError as error:
        raise InvalidToken("The token was issued by another provider.") from error
    except jwt.InvalidSignatureError as error:
        raise InvalidToken("The token's signature is wrong.") from error
    except jwt.PyJWTError as error:
        raise InvalidToken(f"The token is not valid: {error}") from error
    return header, claims


def audiences_of(claims: dict[str, Any]) -> set[str]:
    audience = claims.get("aud")
    if isinstance(audience, str):
        return {audience}
    return {item for item in audience if isinstance(item, str)} if isinstance(audience, list) else set()


def decode_jwt(
    token: str,
    audiences: list[str],
    kind: Callable[[dict[str, Any], dict[str, Any]], None] = token_types.require_access_token,
) -> dict[str, Any]:
    """The claims of a token the provider signed for one of `audiences`, of the right `kind`
    (an access token unless told), else InvalidToken.

    The audience holds when `aud` names one of them, or, for a token without one of them in
    `aud` (Keycloak puts "account" there), when the authorized party `azp` is one of them: a
    token Keycloak issued to another client is refused unless an audience mapper names us.
    """
    # The type is checked first, on the unverified token: a refusal needs no trust, and it names
    # what was sent (a Keycloak refresh token is HS512-signed, and would otherwise be refused for
    # its algorithm). The signature then vouches for the very claims checked here.
    peeked = unverified_claims(token)
    try:
        if peeked:  # else malformed: verify_signed says so
            kind(jwt.get_unverified_header(token), peeked)
    except jwt.PyJWTError:
        pass
    except token_types.WrongTokenType as error:
        raise InvalidToken(str(error)) from error
    _, claims = verify_signed(token, ["exp", "sub"])
    if not (audiences_of(claims) & set(audiences)) and claims.get("azp") not in audiences:
        raise InvalidToken("The token is meant for another audience.")
    return claims
