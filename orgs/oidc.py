"""Sign-in with the organization account (OIDC, e.g. Keycloak), configured from the issuer alone.

The provider's endpoints and keys come from its discovery document (orgs/oidc_tokens.py, which
also verifies the JWTs it signs); the names below re-exported from there are what other modules use.

mozilla-django-oidc runs the browser flow; the classes below only feed it the discovered
endpoints (it reads them from settings otherwise), verify ID tokens with the same code as bearer
tokens (issuer, audience, expiry and signature, which it does not all check), and map the claims
to the user and their organization (`orgs.services.user_from_claims`).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.middleware import SessionRefresh as BaseSessionRefresh
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from orgs import services, signals, token_types
from orgs.models import User
from orgs.oidc_tokens import (
    InvalidToken,
    ProviderUnavailable,
    audiences_of,
    decode_jwt,
    enabled,
    forget_provider_caches,
    looks_like_jwt,
    provider,
    unverified_claims,
    verify_signed,
)

# The provider and token names other modules (and tests) use, from here as before the split.
__all__ = [
    "InvalidToken",
    "ProviderUnavailable",
    "audiences_of",
    "decode_jwt",
    "enabled",
    "forget_provider_caches",
    "looks_like_jwt",
    "provider",
    "unverified_claims",
    "verify_signed",
]

logger = logging.getLogger(__name__)

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
        claims = decode_jwt(token, [settings.OIDC_RP_CLIENT_ID], kind=token_types.require_id_token)
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

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        # orgs.logout notes which provider session this is, for the provider's back-channel logout.
        signals.browser_signed_in.send(sender=type(self), request=self.request)
        return response


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
