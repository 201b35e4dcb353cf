"""A Keycloak 26 realm on loopback: Keycloak's endpoint paths, and tokens shaped as Keycloak issues them.

Serves `/realms/NAME/.well-known/openid-configuration` and, under `/realms/NAME/protocol/openid-connect/`,
`auth` (signs in the user named by `login_hint` at once), `token` (authorization code), `userinfo`,
`certs` and `logout` (end session). Mints, signed RS256 with the realm's published keys:

- access tokens: `typ: Bearer`, `azp` = the client that got the token, `aud: "account"` unless an
  audience mapper adds more, `sid`, `session_state`, `scope`, `jti`, `realm_access`,
  `resource_access`, profile claims, `groups` (full paths) and `organization` when the user has them;
  lightweight ones carry none of the user's claims;
- ID tokens (`typ: ID`, `aud` = the client id, `nonce`), refresh tokens (`typ: Refresh`, HS512 as
  Keycloak signs them, `aud` = the realm), logout tokens (`typ: Logout`, `events`, `sid`).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "sparks-presence"
CLIENT_SECRET = "test-client-secret"
REALM = "sparks"
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
DEFAULT_REALM_ROLES = ["offline_access", "uma_authorization", f"default-roles-{REALM}"]
ACCOUNT_ROLES = {"account": {"roles": ["manage-account", "manage-account-links", "view-profile"]}}

Key = tuple[rsa.RSAPrivateKey, str]


def new_key() -> Key:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), uuid.uuid4().hex[:8]


@dataclass
class RealmUser:
    """A user of the realm and what the realm's mappers put in their tokens."""

    sub: str
    username: str
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    groups: list[str] | None = None  # full paths, e.g. "/sparks-org-acme"
    organization: Any = None  # ["acme"], or {"acme": {"id": "…"}} with the organization id on
    realm_roles: list[str] = field(default_factory=list)
    client_roles: list[str] = field(default_factory=list)

    def profile(self) -> dict[str, Any]:
        claims: dict[str, Any] = {"preferred_username": self.username, "email_verified": self.email is not None}
        if self.email is not None:
            claims["email"] = self.email
        if self.given_name is not None:
            claims["given_name"] = self.given_name
        if self.family_name is not None:
            claims["family_name"] = self.family_name
        names = [name for name in (self.given_name, self.family_name) if name]
        if names:
            claims["name"] = " ".join(names)
        return claims

    def mapped(self) -> dict[str, Any]:
        """The claims of the group, organization and role mappers."""
        claims: dict[str, Any] = {}
        if self.groups is not None:
            claims["groups"] = list(self.groups)
        if self.organization is not None:
            claims["organization"] = self.organization
        claims["realm_access"] = {"roles": [*DEFAULT_REALM_ROLES, *self.realm_roles]}
        resource_access = dict(ACCOUNT_ROLES)
        if self.client_roles:
            # Keycloak leaves a client out of resource_access when the user has none of its roles.
            resource_access[CLIENT_ID] = {"roles": list(self.client_roles)}
        claims["resource_access"] = resource_access
        return claims


@dataclass
class KeycloakRealm:
    base_url: str
    name: str = REALM
    keys: list[Key] = field(default_factory=lambda: [new_key()])
    users: dict[str, RealmUser] = field(default_factory=dict)
    # Answers of userinfo for opaque tokens: token → (status, body).
    userinfo: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    # Requests by endpoint ("certs", "userinfo", "token", …, and "discovery").
    hits: dict[str, int] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    ended_sessions: set[str] = field(default_factory=set)
    hmac_secret: bytes = field(default_factory=lambda: secrets.token_bytes(64))

    @property
    def url(self) -> str:
        """The issuer: https://HOST/realms/NAME."""
        return f"{self.base_url}/realms/{self.name}"

    def endpoint(self, name: str) -> str:
        return f"{self.url}/protocol/openid-connect/{name}"

    def add_user(self, sub: str, **details: Any) -> RealmUser:
        details.setdefault("username", sub)
        details.setdefault("email", f"{sub}@example.test")
        user = RealmUser(sub=sub, **details)
        self.users[sub] = user
        return user

    def rotate(self) -> Key:
        """A new signing key replaces the old ones in the published set."""
        self.keys[:] = [new_key()]
        return self.keys[0]

    # --- Tokens ----------------------------------------------------------------------------

    def _sign(self, payload: dict[str, Any], key: Key | None, headers: dict[str, Any] | None = None) -> str:
        private_key, kid = key or self.keys[0]
        return jwt.encode(
            payload, private_key, algorithm="RS256", headers={"kid": kid, "typ": "JWT", **(headers or {})}
        )

    def _user(self, sub: str) -> RealmUser:
        return self.users.get(sub) or RealmUser(sub=sub, username=sub, email=f"{sub}@example.test")

    def _base(self, sub: str, expires_in: int, sid: str | None) -> dict[str, Any]:
        now = int(time.time())
        return {
            "exp": now + expires_in,
            "iat": now,
            "auth_time": now,
            "jti": f"onrtac:{uuid.uuid4()}",
            "iss": self.url,
            "sub": sub,
            "sid": sid or str(uuid.uuid4()),
        }

    def token(
        self,
        sub: str = "kc-alice",
        *,
        key: Key | None = None,
        expires_in: int = 300,
        azp: str = CLIENT_ID,
        aud: Any = "account",
        sid: str | None = None,
        lightweight: bool = False,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An access token, as the realm gives `azp` (default: our own client); extra claims override."""
        payload = self._base(sub, expires_in, sid) | {"aud": aud, "typ": "Bearer", "azp": azp, "acr": "1"}
        payload["session_state"] = payload["sid"]
        payload["scope"] = "openid email profile"
        if not lightweight:
            user = self._user(sub)
            payload |= {"allowed-origins": ["https://sparks.example"], **user.mapped(), **user.profile()}
        payload |= claims
        return self._sign({name: value for name, value in payload.items() if value is not None}, key, headers)

    def id_token(
        self, sub: str = "kc-alice", *, nonce: str | None = None, sid: str | None = None, **claims: Any
    ) -> str:
        user = self._user(sub)
        payload = self._base(sub, 300, sid) | {"aud": CLIENT_ID, "typ": "ID", "azp": CLIENT_ID, "at_hash": "x"}
        if nonce is not None:
            payload["nonce"] = nonce
        payload |= user.profile() | user.mapped() | claims
        return self._sign(payload, None)

    def refresh_token(self, sub: str = "kc-alice", *, sid: str | None = None) -> str:
        """Keycloak signs refresh tokens with the realm's HMAC key (HS512), aud = the realm."""
        payload = self._base(sub, 1800, sid) | {"aud": self.url, "typ": "Refresh", "azp": CLIENT_ID}
        payload["scope"] = "openid email profile"
        return jwt.encode(payload, self.hmac_secret, algorithm="HS512", headers={"kid": "hmac-key", "typ": "JWT"})

    def logout_token(
        self,
        sub: str | None = "kc-alice",
        *,
        sid: str | None = None,
        key: Key | None = None,
        omit: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        """A back-channel logout token as Keycloak POSTs it; `omit` drops claims, extra ones are added."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            "iss": self.url,
            "aud": CLIENT_ID,
            "sub": sub,
            "typ": "Logout",
            "sid": sid,
            "events": {BACKCHANNEL_LOGOUT_EVENT: {"revoke_offline_access": True}},
        } | claims
        payload = {name: value for name, value in payload.items() if value is not None and name not in omit}
        return self._sign(payload, key)

    # --- The browser flow ------------------------------------------------------------------

    def authorize(self, authorization_url: str, sub: str) -> str:
        """Signs `sub` in at the realm; the redirect back to the client, with the code."""
        import requests

        response = requests.get(
            f"{authorization_url}&{urlencode({'login_hint': sub})}", allow_redirects=False, timeout=5
        )
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def session_of(self, sub: str) -> str:
        """The realm session (`sid`) of the user's last sign-in."""
        return next(code["sid"] for code in reversed(self.codes.values()) if code["sub"] == sub)


def handler(realm: KeycloakRealm) -> type[BaseHTTPRequestHandler]:
    prefix = f"/realms/{realm.name}"
    protocol = f"{prefix}/protocol/openid-connect/"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _endpoint(self) -> str | None:
            path = urlsplit(self.path).path
            if path == f"{prefix}/.well-known/openid-configuration":
                name = "discovery"
            elif path.startswith(protocol):
                name = path.removeprefix(protocol)
            else:
                return None
            realm.hits[name] = realm.hits.get(name, 0) + 1
            return name

        def do_GET(self) -> None:
            name = self._endpoint()
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            if name == "discovery":
                self._json(200, discovery(realm))
            elif name == "certs":
                keys = [
                    {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig"}
                    | {"alg": "RS256"}
                    for k, kid in realm.keys
                ]
                self._json(200, {"keys": keys})
            elif name == "userinfo":
                self._userinfo()
            elif name == "auth":
                self._auth(query)
            elif name == "logout":
                hint = jwt.decode(query.get("id_token_hint", ""), options={"verify_signature": False})
                realm.ended_sessions.add(hint.get("sid", ""))
                self._redirect(query.get("post_logout_redirect_uri", realm.url))
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            name = self._endpoint()
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if name != "token":
                self._json(404, {"error": "not_found"})
                return
            if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
                self._json(401, {"error": "unauthorized_client"})
                return
            code = realm.codes.get(form.get("code", ""))
            if form.get("grant_type") != "authorization_code" or code is None or code.get("used"):
                self._json(400, {"error": "invalid_grant", "error_description": "Code not valid"})
                return
            code["used"] = True
            sub, sid = code["sub"], code["sid"]
            self._json(
                200,
                {
                    "access_token": realm.token(sub, sid=sid),
                    "expires_in": 300,
                    "refresh_expires_in": 1800,
                    "refresh_token": realm.refresh_token(sub, sid=sid),
                    "token_type": "Bearer",
                    "id_token": realm.id_token(sub, nonce=code["nonce"], sid=sid),
                    "not-before-policy": 0,
                    "session_state": sid,
                    "scope": "openid email profile",
                },
            )

        def _auth(self, query: dict[str, str]) -> None:
            sub = query.get("login_hint")
            if query.get("client_id") != CLIENT_ID or not sub or not query.get("redirect_uri"):
                self._json(400, {"error": "invalid_request"})
                return
            code = secrets.token_urlsafe(16)
            sid = str(uuid.uuid4())
            realm.codes[code] = {"sub": sub, "sid": sid, "nonce": query.get("nonce")}
            back = {"state": query.get("state", ""), "session_state": sid, "iss": realm.url, "code": code}
            self._redirect(f"{query['redirect_uri']}?{urlencode(back)}")

        def _userinfo(self) -> None:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if token in realm.userinfo:
                self._json(*realm.userinfo[token])
                return
            try:
                claims = jwt.decode(
                    token, realm.keys[0][0].public_key(), algorithms=["RS256"], options={"verify_aud": False}
                )
            except jwt.PyJWTError:
                self._json(401, {"error": "invalid_token"})
                return
            if claims.get("sid") in realm.ended_sessions:
                self._json(401, {"error": "invalid_token"})
                return
            user = realm._user(claims["sub"])
            self._json(200, {"sub": user.sub, **user.profile(), **user.mapped()})

    return Handler


def discovery(realm: KeycloakRealm) -> dict[str, Any]:
    """The parts of Keycloak's discovery document a client reads."""
    return {
        "issuer": realm.url,
        "authorization_endpoint": realm.endpoint("auth"),
        "token_endpoint": realm.endpoint("token"),
        "introspection_endpoint": realm.endpoint("token/introspect"),
        "userinfo_endpoint": realm.endpoint("userinfo"),
        "end_session_endpoint": realm.endpoint("logout"),
        "jwks_uri": realm.endpoint("certs"),
        "frontchannel_logout_session_supported": True,
        "frontchannel_logout_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "roles", "organization", "offline_access"],
    }
