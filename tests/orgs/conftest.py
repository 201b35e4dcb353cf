"""Real OIDC providers on loopback: oidc-provider-mock for the whole browser flow (its access tokens
are opaque), and a Keycloak realm of our own (tests/orgs/keycloak_realm.py) that issues tokens
shaped as Keycloak 26 issues them, JWT access tokens included."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import werkzeug.serving

from orgs import oidc
from tests.orgs.keycloak_realm import CLIENT_ID, CLIENT_SECRET, KeycloakRealm
from tests.orgs.keycloak_realm import handler as keycloak_handler


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


# --- A Keycloak realm of our own, with JWT access tokens (tests/orgs/keycloak_realm.py) ---------


@pytest.fixture
def keycloak_realm(settings) -> Iterator[KeycloakRealm]:
    """A Keycloak 26 realm on 127.0.0.1 (a random port), in a thread; OIDC configured against it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # handler set once the URL is known
    realm = KeycloakRealm(base_url=f"http://127.0.0.1:{server.server_port}")
    server.RequestHandlerClass = keycloak_handler(realm)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _use_provider(settings, realm.url)
    try:
        yield realm
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def jwt_provider(keycloak_realm) -> KeycloakRealm:
    """The provider of the JWT access token cases: the Keycloak realm."""
    return keycloak_realm


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
