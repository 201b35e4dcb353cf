"""Who is on the other end of a long-lived connection (the presence websocket, the SSE stream).

A connection carries at most one explicit credential, named by a scheme: a DRF token (`token`),
from the query (`?token=…`), a websocket subprotocol (`token.<key>`) or an `Authorization: Token …`
header; or an OIDC access token of the organization account (`bearer`), from `?access_token=…`, a
subprotocol `bearer.<token>` or an `Authorization: Bearer …` header. Without a credential, the Django session decides.
An explicit credential that does not resolve makes the connection anonymous, never falls back to
the session: as with the REST API, a wrong token is an error, not a silent sign-in as someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils.http import is_same_domain
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.settings import api_settings

from orgs import bearer
from orgs.models import User

TOKEN_SCHEME = "token"
TOKEN_SUBPROTOCOL_PREFIX = "token."
BEARER_SCHEME = "bearer"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
_SUBPROTOCOL_SCHEMES = {TOKEN_SUBPROTOCOL_PREFIX: TOKEN_SCHEME, BEARER_SUBPROTOCOL_PREFIX: BEARER_SCHEME}
# Offered beside `token.<key>`, the server selects this one, so the token is not echoed back.
PRESENCE_SUBPROTOCOL = "sparks.presence.v1"


@dataclass(frozen=True, slots=True)
class Credential:
    scheme: str
    value: str


def credential_from_authorization(header: str | None) -> Credential | None:
    """`Authorization: Token <key>` or `Bearer <token>`; other schemes are left alone, as DRF does."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in (TOKEN_SCHEME, BEARER_SCHEME):
        return None
    return Credential(scheme.lower(), value.strip())


def credential_from_websocket(scope: dict) -> Credential | None:
    """A token from the query (`?token=`, `?access_token=`), a `token.<key>` or `bearer.<token>`
    subprotocol (browsers cannot set headers), or else an Authorization header (other clients)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "token" in query:
        return Credential(TOKEN_SCHEME, query["token"][0])
    if "access_token" in query:
        return Credential(BEARER_SCHEME, query["access_token"][0])
    for protocol in scope.get("subprotocols") or ():
        for prefix, scheme in _SUBPROTOCOL_SCHEMES.items():
            if protocol.startswith(prefix):
                return Credential(scheme, protocol.removeprefix(prefix))
    authorization = dict(scope.get("headers") or ()).get(b"authorization")
    return credential_from_authorization(authorization.decode("latin-1")) if authorization else None


def chosen_subprotocol(scope: dict) -> str | None:
    """The subprotocol to accept with: a browser drops a socket whose offered protocols all went unanswered."""
    offered = scope.get("subprotocols") or ()
    if PRESENCE_SUBPROTOCOL in offered:
        return PRESENCE_SUBPROTOCOL
    return next((p for p in offered if p.startswith(tuple(_SUBPROTOCOL_SCHEMES))), None)


def _token_authentication() -> TokenAuthentication:
    """The token authentication the REST API is configured with: a token valid (or revoked) there
    is valid (or revoked) here too."""
    for authentication_class in api_settings.DEFAULT_AUTHENTICATION_CLASSES:
        if issubclass(authentication_class, TokenAuthentication):
            return authentication_class()
    return TokenAuthentication()


def _users_for_drf_tokens(keys: list[str]) -> dict[str, User]:
    """The users of valid tokens among `keys`, all at once when the authentication can."""
    authentication = _token_authentication()
    if hasattr(authentication, "users_for"):
        return authentication.users_for(keys)
    users = {}
    for key in keys:
        with contextlib.suppress(exceptions.AuthenticationFailed):
            users[key], _ = authentication.authenticate_credentials(key)
    return users


# Tokens resolved in one go at most: one query's `IN` list.
TOKEN_BATCH = 500


class _TokenSignIns:
    """The DRF tokens of the connections signing in on one event loop, resolved a batch at a time.

    In a reconnect storm thousands of connections sign in at once. One at a time, each took a
    thread hand-off and three round trips (cache, database, cache) on the one thread all database
    work of the process shares, waiting at every step for the event loop's thread to let go of
    the interpreter: that thread was the storm's bottleneck. Tokens arriving while a batch is
    resolved wait for the next one, which takes the same few round trips for all of them."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[asyncio.Future]] = {}
        self.worker: asyncio.Task | None = None

    async def user_for(self, key: str) -> User | None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.setdefault(key, []).append(future)
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._resolve_all())
        return await future

    async def _resolve_all(self) -> None:
        while self.waiting:
            keys = list(self.waiting)[:TOKEN_BATCH]
            batch = {key: self.waiting.pop(key) for key in keys}
            try:
                users = await database_sync_to_async(_users_for_drf_tokens)(keys)
            except Exception as error:
                self._settle(batch, error=error)
            else:
                self._settle(batch, users=users)

    @staticmethod
    def _settle(batch: dict[str, list[asyncio.Future]], users=None, error: Exception | None = None) -> None:
        for key, futures in batch.items():
            for future in futures:
                if future.done():  # its connection went away meanwhile
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(users.get(key))


_sign_ins: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TokenSignIns] = weakref.WeakKeyDictionary()


async def _user_for_drf_token(key: str) -> tuple[User | None, str]:
    loop = asyncio.get_running_loop()
    sign_ins = _sign_ins.get(loop)
    if sign_ins is None:
        sign_ins = _sign_ins[loop] = _TokenSignIns()
    user = await sign_ins.user_for(key)
    return (user, "") if user is not None else (None, "Invalid token.")


@database_sync_to_async
def _user_for_bearer_token(token: str) -> tuple[User | None, str]:
    """The organization account's user, or None and why (e.g. "an ID token is not an access
    token"); ProviderUnavailable goes up (the caller answers "retry", not "sign in again")."""
    try:
        return bearer.user_for_token(token), ""
    except bearer.InvalidToken as error:
        return None, f"Invalid token: {error}"


_RESOLVERS: dict[str, Callable[[str], Awaitable[tuple[User | None, str]]]] = {
    TOKEN_SCHEME: _user_for_drf_token,
    BEARER_SCHEME: _user_for_bearer_token,
}


async def authenticate(credential: Credential) -> tuple[User | None, str]:
    """The credential's user, or None and why it was refused (for the SSE stream's 401 detail)."""
    resolver = _RESOLVERS.get(credential.scheme)
    if resolver is None or not credential.value:
        return None, "Invalid token."
    return await resolver(credential.value)


async def user_for(credential: Credential) -> User | None:
    user, _ = await authenticate(credential)
    return user


def _origin_may_use_session(scope: dict) -> bool:
    """A page of another site must not open a socket on the browser's session cookie (cross-site
    websocket hijacking): the session counts only from this site's own origin or a trusted one,
    as Django's CSRF check has it. Without an Origin header the client is no browser, so no risk."""
    headers = dict(scope.get("headers") or ())
    origin = headers.get(b"origin")
    if origin is None:
        return True
    origin_text = origin.decode("latin-1")
    parsed = urlsplit(origin_text)
    if parsed.netloc and parsed.netloc == headers.get(b"host", b"").decode("latin-1"):
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if origin_text == trusted:
            return True
        # "https://*.example.com" trusts every subdomain, as in CSRF_TRUSTED_ORIGINS.
        trusted_parsed = urlsplit(trusted)
        wildcard = "*" in trusted_parsed.netloc and trusted_parsed.scheme == parsed.scheme
        if wildcard and is_same_domain(parsed.netloc, trusted_parsed.netloc.replace("*", "", 1)):
            return True
    return False


class CredentialAuthMiddleware(BaseMiddleware):
    """Runs inside Channels' session stack: an explicit credential replaces the session user."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        credential = credential_from_websocket(scope)
        if credential is not None:
            try:
                scope["user"] = await user_for(credential) or AnonymousUser()
            except bearer.ProviderUnavailable:
                # The token could not be checked: the consumer closes with "try again later".
                scope["user"] = AnonymousUser()
                scope["auth_unavailable"] = True
        elif not _origin_may_use_session(scope):
            scope["user"] = AnonymousUser()
        return await super().__call__(scope, receive, send)


def live_auth_stack(inner):
    """The explicit credential of the connection if it has one, else the session cookie (Channels)."""
    by_credential = CredentialAuthMiddleware(inner)
    by_session = AuthMiddlewareStack(by_credential)

    async def authenticate_connection(scope, receive, send):
        # A credential decides alone (it never falls back to the session), so the session is not
        # read for it: a thread hand-off per connection saved, a reconnect storm's sockets sign in sooner.
        if scope["type"] == "websocket" and credential_from_websocket(scope) is not None:
            return await by_credential(scope, receive, send)
        return await by_session(scope, receive, send)

    return authenticate_connection
