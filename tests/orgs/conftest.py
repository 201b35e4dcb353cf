"""Real OIDC providers on loopback: oidc-provider-mock for the whole browser flow (its access tokens
are opaque), and a small provider of our own that signs JWT access tokens with a test RSA key."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
import werkzeug.serving
from cryptography.hazmat.primitives.asymmetric import rsa

from orgs import oidc

CLIENT_ID = "sparks-presence"
CLIENT_SECRET = "test-client-secret"


@pytest.fixture(autouse=True)
def _fresh_provider_caches() -> Iterator[None]:
    oidc.forget_provider_caches()
    yield
    oidc.forget_provider_caches()


def _use_provider(settings, issuer: str) -> None:
    settings.OIDC_ISSUER = issuer
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_API_AUDIENCES = [CLIENT_ID]


# --- oidc-provider-mock ------------------------------------------------------------------------


@dataclass
class MockProvider:
    url: str

    def set_user(self, sub: str, **claims: Any) -> None:
        response = requests.put(f"{self.url}/users/{sub}", json=claims, timeout=5)
        assert response.status_code == 204, response.text

    def authorize(self, authorization_url: str, sub: str) -> str:
        """Signs in at the provider's authorization form as `sub`; the redirect back (with the code)."""
        response = requests.post(authorization_url, data={"sub": sub}, allow_redirects=False, timeout=5)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def access_token(self, sub: str) -> str:
        """An access token for `sub` from the authorization-code flow, as a client app gets one."""
        redirect_uri = "http://127.0.0.1/app/callback"
        query = {"client_id": CLIENT_ID, "response_type": "code", "scope": "openid email profile"}
        location = self.authorize(
            f"{self.url}/oauth2/authorize?"
            + "&".join(f"{k}={v}" for k, v in query.items())
            + "&redirect_uri="
            + requests.utils.quote(redirect_uri, safe=""),
            sub,
        )
        code = parse_qs(urlsplit(location).query)["code"][0]
        response = requests.post(
            f"{self.url}/oauth2/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
            auth=(CLIENT_ID, CLIENT_SECRET),
            timeout=5,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


@pytest.fixture
def mock_provider(settings, monkeypatch) -> Iterator[MockProvider]:
    """oidc-provider-mock on 127.0.0.1 (a random port), in a thread; OIDC configured against it."""
    from oidc_provider_mock import app as provider_app

    # The provider speaks plain HTTP on loopback; its OAuth library refuses that unless told.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    server = werkzeug.serving.make_server("127.0.0.1", 0, provider_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    _use_provider(settings, url)
    try:
        yield MockProvider(url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- A provider of our own with JWT access tokens ------------------------------------------------


def _new_key() -> tuple[rsa.RSAPrivateKey, str]:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), uuid.uuid4().hex[:8]


@dataclass
class JwtProvider:
    url: str
    keys: list[tuple[rsa.RSAPrivateKey, str]]
    userinfo: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def token(
        self,
        sub: str = "kc-alice",
        *,
        key: tuple[rsa.RSAPrivateKey, str] | None = None,
        expires_in: int = 300,
        **claims: Any,
    ) -> str:
        private_key, kid = key or self.keys[0]
        now = int(time.time())
        payload = {
            "iss": self.url,
            "sub": sub,
            "aud": ["account", CLIENT_ID],
            "azp": "sparks-web",
            "iat": now,
            "exp": now + expires_in,
            "preferred_username": sub,
            "email": f"{sub}@example.test",
            **claims,
        }
        return jwt.encode(payload, private_key, algorithm="RS256", headers={"kid": kid})

    def rotate(self) -> tuple[rsa.RSAPrivateKey, str]:
        """A new signing key replaces the old ones in the published set."""
        self.keys[:] = [_new_key()]
        return self.keys[0]


def _handler(provider: JwtProvider) -> type[BaseHTTPRequestHandler]:
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

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            provider.hits[path] = provider.hits.get(path, 0) + 1
            if path == "/.well-known/openid-configuration":
                self._json(
                    200,
                    {
                        "issuer": provider.url,
                        "authorization_endpoint": f"{provider.url}/auth",
                        "token_endpoint": f"{provider.url}/token",
                        "userinfo_endpoint": f"{provider.url}/userinfo",
                        "jwks_uri": f"{provider.url}/certs",
                        "end_session_endpoint": f"{provider.url}/logout",
                    },
                )
            elif path == "/certs":
                keys = [
                    {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig"}
                    for k, kid in provider.keys
                ]
                self._json(200, {"keys": keys})
            elif path == "/userinfo":
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                status, claims = provider.userinfo.get(token, (401, {"error": "invalid_token"}))
                self._json(status, claims)
            else:
                self._json(404, {})

    return Handler


@pytest.fixture
def jwt_provider(settings) -> Iterator[JwtProvider]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(None))  # handler set below, once the URL is known
    provider = JwtProvider(url=f"http://127.0.0.1:{server.server_port}", keys=[_new_key()])
    server.RequestHandlerClass = _handler(provider)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _use_provider(settings, provider.url)
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def unreachable_issuer(settings) -> str:
    """An issuer nobody listens at: a provider that is down."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    _use_provider(settings, url)
    return url
