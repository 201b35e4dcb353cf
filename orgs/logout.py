"""Sign-out at the provider reaching this server: OpenID Connect Back-Channel Logout 1.0.

When a session ends at Keycloak (the user signs out, an administrator ends it, it times out),
Keycloak POSTs a logout token to the client's "Backchannel logout URL". Here that token is
verified (`verify_logout_token`), then `end_provider_session` ends what belongs to that session:

- browser sessions: each browser sign-in records which Django session belongs to which provider
  session (`sid` of the ID token) and subject (`ProviderSession`); a logout with `sid` ends the
  sessions of that provider session, one with only `sub` every session of the user;
- bearer access tokens: a JWT still verifies here after its session ended, and its user is cached
  under the token's hash. So the logout is remembered in the shared cache for
  OIDC_LOGOUT_MEMORY_SECONDS (longer than an access token lives): the ended `sid`, and for a
  `sub`-only logout the time, before which that subject's tokens were issued (an opaque token:
  vouched for by userinfo). `orgs.bearer` asks `ended` for every token, cached or not, and
  refuses such tokens ("the session was signed out").

Websocket connections and SSE streams already open stay open until they close (they were
authenticated when they connected, and are served by whichever process holds them); a reconnect
with the same token is refused.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.core.cache import cache
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from orgs import oidc, token_types
from orgs.models import ProviderSession
from orgs.signals import browser_signed_in

logger = logging.getLogger(__name__)

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class InvalidLogoutToken(ValueError):
    """A logout token that must not be acted on; `error` is the OAuth error code to answer with."""

    def __init__(self, detail: str, error: str = "invalid_request") -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


@dataclass(frozen=True, slots=True)
class LogoutToken:
    sid: str | None
    sub: str | None
    issued_at: float


# --- Verifying the logout token --------------------------------------------------------------


def _optional_text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidLogoutToken(f"The logout token's `{name}` is not a usable string.")
    return value


def verify_logout_token(token: str) -> LogoutToken:
    """The session a logout token ends; InvalidLogoutToken naming why not, or
    oidc.ProviderUnavailable when the provider's keys cannot be fetched to check it."""
    if not token or len(token) > 16384 or not oidc.looks_like_jwt(token):
        raise InvalidLogoutToken("`logout_token` is missing or is not a JWT.")
    try:
        header, claims = oidc.verify_signed(token, ["iat"])
    except oidc.InvalidToken as error:
        raise InvalidLogoutToken(f"The logout token is not valid: {error}") from None
    if settings.OIDC_RP_CLIENT_ID not in oidc.audiences_of(claims):
        raise InvalidLogoutToken("The logout token is meant for another audience (`aud`).")
    try:
        token_types.require_logout_token(header, claims)
    except token_types.WrongTokenType as error:
        raise InvalidLogoutToken(f"The logout token's type is wrong: {error}") from None
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise InvalidLogoutToken(f"The logout token's `events` has no member {BACKCHANNEL_LOGOUT_EVENT}.")
    if "nonce" in claims:
        # Section 2.4: a nonce would make an ID token pass for a logout token.
        raise InvalidLogoutToken("A logout token must not carry a `nonce`.")
    sid, sub = _optional_text(claims, "sid"), _optional_text(claims, "sub")
    if sid is None and sub is None:
        raise InvalidLogoutToken("The logout token names neither a session (`sid`) nor a subject (`sub`).")
    issued_at = claims["iat"]
    if not isinstance(issued_at, int | float):
        raise InvalidLogoutToken("The logout token's `iat` is not a time.")
    return LogoutToken(sid=sid, sub=sub, issued_at=float(issued_at))


# --- What a logout ends ----------------------------------------------------------------------


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _sid_key(sid: str) -> str:
    return f"oidc:ended-sid:{_digest(sid)}"


def _sub_key(sub: str) -> str:
    return f"oidc:ended-sub:{_digest(sub)}"


def end_provider_session(logout: LogoutToken) -> int:
    """Ends the browser sessions of the provider session (`sid`), or of the user (only `sub`), and
    remembers the logout for bearer tokens. Returns how many browser sessions ended."""
    memory = settings.OIDC_LOGOUT_MEMORY_SECONDS
    if logout.sid is not None:
        cache.set(_sid_key(logout.sid), True, memory)
        rows = ProviderSession.objects.filter(provider_sid=logout.sid)
        if logout.sub is not None:
            rows = rows.filter(subject=logout.sub)
    else:
        # Tokens issued before the logout are of the ended sessions; later sign-ins are new ones.
        cache.set(_sub_key(logout.sub), max(time.time(), logout.issued_at), memory)
        rows = ProviderSession.objects.filter(subject=logout.sub)
    session_store = import_module(settings.SESSION_ENGINE).SessionStore
    with transaction.atomic():
        keys = list(rows.select_for_update().values_list("session_key", flat=True))
        for key in keys:
            session_store(session_key=key).delete()
        rows.delete()
    logger.info("Back-channel logout ended %d browser session(s).", len(keys))
    return len(keys)


def marker_keys(claims: dict[str, Any]) -> list[str]:
    """The cache keys `ended` reads for a token with these claims (fetched with the token's entry)."""
    keys = []
    sid = claims.get("sid") or claims.get("session_state")
    if isinstance(sid, str) and sid:
        keys.append(_sid_key(sid))
    if isinstance(claims.get("sub"), str) and claims["sub"]:
        keys.append(_sub_key(claims["sub"]))
    return keys


def ended(claims: dict[str, Any], markers: dict[str, Any] | None = None) -> bool:
    """Whether the token with these claims belongs to a session signed out at the provider.
    `markers` are the cache entries of `marker_keys(claims)` when already fetched."""
    keys = marker_keys(claims)
    if markers is None:
        markers = cache.get_many(keys) if keys else {}
    sid = claims.get("sid") or claims.get("session_state")
    if isinstance(sid, str) and markers.get(_sid_key(sid)):
        return True
    signed_out_at = markers.get(_sub_key(claims["sub"])) if isinstance(claims.get("sub"), str) else None
    if signed_out_at is None:
        return False
    issued_at = claims.get("iat")
    # A token that does not say when it was issued may be from before the logout.
    return not isinstance(issued_at, int | float) or issued_at <= signed_out_at


# --- Which browser session belongs to which provider session ---------------------------------


@receiver(browser_signed_in)
def record_browser_session(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
    """Notes the provider session of a browser session that just signed in with the organization account."""
    id_token = request.session.get("oidc_id_token")
    session_key = request.session.session_key
    if not id_token or not session_key:
        return
    # Verified moments ago in this same request (the callback), so read without checking again.
    claims = oidc.unverified_claims(id_token)
    subject = claims.get("sub")
    if not isinstance(subject, str):
        return
    sid = claims.get("sid") or claims.get("session_state") or ""
    ProviderSession.objects.update_or_create(
        session_key=session_key, defaults={"provider_sid": str(sid)[:255], "subject": subject[:255]}
    )
    # Rows of sessions that expired without a sign-out: no session lives longer than its cookie.
    too_old = timezone.now() - timedelta(seconds=settings.SESSION_COOKIE_AGE)
    ProviderSession.objects.filter(recorded_at__lt=too_old).delete()


@receiver(user_logged_out)
def forget_browser_session(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """The session was signed out here: nothing is left to end at a back-channel logout."""
    session_key = request.session.session_key if request is not None else None
    if session_key:
        ProviderSession.objects.filter(session_key=session_key).delete()
