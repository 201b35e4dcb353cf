"""Which kind of token a JWT is, as Keycloak and RFC 9068 say it, and where each kind is accepted.

Keycloak signs every token of a realm with the same keys and issuer: an ID token, a logout token
or (signed with RS256 by some realms) a refresh token passes the signature, issuer and expiry
checks of an access token. Only the type tells them apart: Keycloak's `typ` claim ("Bearer", "ID",
"Refresh", "Offline", "Logout"), or RFC 9068's JWT header `typ: at+jwt` for access tokens and
`logout+jwt` for logout tokens (OpenID Connect Back-Channel Logout 1.0).

A JWT that names no type at all is refused as an access token: an ID token of a provider that does
not type its tokens looks exactly like that, and must not open the API. (Such a provider's opaque
access tokens still work, checked at its userinfo endpoint.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ACCESS = "Bearer"
ID = "ID"
LOGOUT = "Logout"

_ACCESS_HEADER_TYPES = {"at+jwt", "application/at+jwt"}
_LOGOUT_HEADER_TYPES = {"logout+jwt", "application/logout+jwt"}
# How a refusal names the token it was given.
_NAMES = {
    "bearer": "an access token",
    "id": "an ID token",
    "refresh": "a refresh token",
    "offline": "an offline token",
    "logout": "a logout token",
}


class WrongTokenType(ValueError):
    """A valid token of the wrong kind for where it was presented."""


def _header_type(header: Mapping[str, Any]) -> str:
    value = header.get("typ")
    return value.lower() if isinstance(value, str) else ""


def _claimed_type(claims: Mapping[str, Any]) -> str | None:
    value = claims.get("typ")
    if value is None:
        return None
    return value if isinstance(value, str) else repr(value)


def _name(token_type: str) -> str:
    return _NAMES.get(token_type.lower(), f"a token of type {token_type!r}")


def kind_of(header: Mapping[str, Any], claims: Mapping[str, Any]) -> str | None:
    """The token's kind (ACCESS, ID, LOGOUT or the type it names), None when it names none."""
    claimed = _claimed_type(claims)
    if claimed is not None:
        for known in (ACCESS, ID, LOGOUT):
            if claimed.lower() == known.lower():
                return known
        return claimed
    header_type = _header_type(header)
    if header_type in _ACCESS_HEADER_TYPES:
        return ACCESS
    if header_type in _LOGOUT_HEADER_TYPES:
        return LOGOUT
    return None


def require(expected: str, header: Mapping[str, Any], claims: Mapping[str, Any], *, untyped_ok: bool) -> None:
    """WrongTokenType unless the token is of the `expected` kind (or names none, when `untyped_ok`)."""
    kind = kind_of(header, claims)
    header_type = _header_type(header)
    if kind is None:
        if untyped_ok:
            return
        raise WrongTokenType(f"The token does not say it is {_name(expected)} (no typ claim or header).")
    if kind != expected:
        raise WrongTokenType(f"{_name(kind)[0].upper()}{_name(kind)[1:]} is not {_name(expected)}.")
    # A header that says otherwise than the claim (at+jwt on an ID token…) is not trusted either way.
    contradicting = (_ACCESS_HEADER_TYPES | _LOGOUT_HEADER_TYPES) - (
        _ACCESS_HEADER_TYPES if expected == ACCESS else _LOGOUT_HEADER_TYPES if expected == LOGOUT else set()
    )
    if header_type in contradicting:
        raise WrongTokenType(f"The token's header type {header_type!r} is not that of {_name(expected)}.")


def require_access_token(header: Mapping[str, Any], claims: Mapping[str, Any]) -> None:
    """Only access tokens open the API, the websocket and the SSE stream; a token without a type is refused."""
    require(ACCESS, header, claims, untyped_ok=False)


def require_id_token(header: Mapping[str, Any], claims: Mapping[str, Any]) -> None:
    """The browser sign-in's ID token: Keycloak's say `typ: ID`; other providers' may say nothing."""
    require(ID, header, claims, untyped_ok=True)


def require_logout_token(header: Mapping[str, Any], claims: Mapping[str, Any]) -> None:
    """A logout token says so (Keycloak: `typ: Logout`) or names no type; the `events` claim proves it."""
    require(LOGOUT, header, claims, untyped_ok=True)
