"""Sign-in with the organization account (OIDC, e.g. Keycloak), configured from the issuer alone.

The provider's endpoints come from its discovery document, fetched on first use and kept (in this
process and in the shared cache) for OIDC_METADATA_CACHE_SECONDS; its signing keys likewise, fetched
again at once when a token names a key id not seen yet (a key rotation), at most every
OIDC_JWKS_MIN_REFRESH_SECONDS so that made-up key ids cannot make us hammer the provider.

mozilla-django-oidc runs the browser flow; the classes below only feed it the discovered
endpoints (it reads them from settings otherwise), verify ID tokens with the same code as bearer
tokens (issuer, audience, expiry and signature, which it does not all check), and map the claims
to the user and their organization (`orgs.services.user_from_claims`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.middleware import SessionRefresh as BaseSessionRefresh
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from orgs import services
from orgs.models import User

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


def decode_jwt(token: str, audiences: list[str]) -> dict[str, Any]:
    """The claims of a token the provider signed for one of `audiences`, else InvalidToken.

    The audience holds when `aud` names one of them, or, for a token without one of them in
    `aud` (Keycloak puts "account" there), when the authorized party `azp` is one of them.
    """
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
            options={"require": ["exp", "iss", "sub"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidToken("The token has expired.") from error
    except jwt.InvalidIssuerError as error:
        raise InvalidToken("The token was issued by another provider.") from error
    except jwt.InvalidSignatureError as error:
        raise InvalidToken("The token's signature is wrong.") from error
    except jwt.PyJWTError as error:
        raise InvalidToken(f"The token is not valid: {error}") from error
    audience = claims.get("aud")
    token_audiences = {audience} if isinstance(audience, str) else set(audience or [])
    if not (token_audiences & set(audiences)) and claims.get("azp") not in audiences:
        raise InvalidToken("The token is meant for another audience.")
    return claims


# --- The browser flow (mozilla-django-oidc with discovered endpoints) --------------------------


class OrganizationAccountBackend(OIDCAuthenticationBackend):
    """Authorization-code sign-in; the claims decide the user and their organization."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The parent reads the endpoints from settings here; ours come from discovery, on use.
        self.UserModel = User
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:
        return provider().token_endpoint

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str:
        return provider().userinfo_endpoint

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:
        return provider().jwks_uri

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        if not enabled() or request is None:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (ProviderUnavailable, InvalidToken, services.InvalidClaims, requests.RequestException) as error:
            logger.warning("Sign-in with the organization account failed: %s", error)
            return None

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        claims = decode_jwt(token, [settings.OIDC_RP_CLIENT_ID])
        nonce = kwargs.get("nonce")
        if self.get_settings("OIDC_USE_NONCE", True) and nonce != claims.get("nonce"):
            raise SuspiciousOperation("The ID token's nonce does not match the sign-in request.")
        return claims

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> User | None:
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if userinfo.get("sub") != payload.get("sub"):
            # OIDC Core 5.3.4: userinfo of another subject must not be used.
            raise InvalidToken("The userinfo answer is about another subject than the ID token.")
        # The ID token's claims, completed by userinfo (which Keycloak fills from the same mappers).
        return services.user_from_claims({**payload, **userinfo})

    def get_user(self, user_id: int) -> User | None:
        return User.objects.filter(pk=user_id).first()


def signed_in_with_organization_account(request: HttpRequest) -> bool:
    """Whether the session was opened by the organization account sign-in (not a local password)."""
    backend = request.session.get(BACKEND_SESSION_KEY, "")
    return request.user.is_authenticated and backend == f"{__name__}.{OrganizationAccountBackend.__name__}"


def _unavailable(request: HttpRequest, error: ProviderUnavailable) -> HttpResponse:
    logger.warning("The sign-in provider is unavailable: %s", error)
    return render(request, "pages/provider_unavailable.html", status=503)


class AuthenticationRequestView(OIDCAuthenticationRequestView):
    """Redirects to the provider's sign-in (its authorization endpoint from discovery)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            raise Http404("Sign-in with the organization account is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider().authorization_endpoint
        except ProviderUnavailable as error:
            return _unavailable(request, error)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class AuthenticationCallbackView(OIDCAuthenticationCallbackView):
    def get(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            raise Http404("Sign-in with the organization account is not configured.")
        return super().get(request)


class SessionRefresh(BaseSessionRefresh):
    """Re-checks a session opened at the provider once its ID token's time is up (silently, with
    prompt=none). Idle while OIDC is off, and for sessions signed in with a local password."""

    def __init__(self, get_response: Any) -> None:
        # Endpoints are read on use (discovery), not when the middleware is built.
        super(BaseSessionRefresh, self).__init__(get_response)
        self.OIDC_EXEMPT_URLS = settings.OIDC_EXEMPT_URLS
        self.OIDC_STATE_SIZE = 32
        self.OIDC_AUTHENTICATION_CALLBACK_URL = "oidc_authentication_callback"
        self.OIDC_USE_NONCE = True
        self.OIDC_NONCE_SIZE = 32

    @property
    def OIDC_OP_AUTHORIZATION_ENDPOINT(self) -> str:
        return provider().authorization_endpoint

    @property
    def OIDC_RP_CLIENT_ID(self) -> str:
        return settings.OIDC_RP_CLIENT_ID

    @property
    def OIDC_RP_SCOPES(self) -> str:
        return settings.OIDC_RP_SCOPES

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if not enabled():
            return None
        try:
            return super().process_request(request)
        except ProviderUnavailable as error:
            # The session stays as it is: a provider outage must not sign everyone out.
            logger.warning("Session refresh skipped: %s", error)
            return None


def provider_logout_url(request: HttpRequest) -> str:
    """Where signing out sends the browser: the provider's end-session endpoint (so the provider's
    session ends too), back to the sign-in page afterwards; without a provider session, straight there."""
    back = request.build_absolute_uri(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get("oidc_id_token")
    if not enabled() or not id_token:
        return back
    try:
        end_session = provider().end_session_endpoint
    except ProviderUnavailable:
        return back
    if not end_session:
        return back
    query = urlencode(
        {"id_token_hint": id_token, "post_logout_redirect_uri": back, "client_id": settings.OIDC_RP_CLIENT_ID}
    )
    return f"{end_session}?{query}"


def sign_in_url(next_url: str = "") -> str:
    url = reverse("oidc_authentication_init")
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url
