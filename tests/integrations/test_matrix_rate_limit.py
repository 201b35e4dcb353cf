"""Synapse's rate limit answer: 429 M_LIMIT_EXCEEDED with the wait in the body, no header."""

from __future__ import annotations

import httpx
import pytest

from integrations import http, matrix
from integrations.http import DeliveryError
from integrations.mapping import MatrixPresence


@pytest.fixture
def homeserver_answers(monkeypatch):
    def answer(response: httpx.Response) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def handle(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return response

        monkeypatch.setattr(http, "client", lambda: httpx.Client(transport=httpx.MockTransport(handle)))
        return seen

    return answer


def test_a_rate_limited_presence_update_waits_as_long_as_synapse_asks(homeserver_answers):
    homeserver_answers(httpx.Response(429, json={"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 8500}))

    with pytest.raises(DeliveryError) as raised:
        matrix.set_presence("https://matrix.example.org", "token", "@alice:example.org", MatrixPresence("online", None))

    assert raised.value.retryable
    assert raised.value.retry_after == 8.5


def test_the_presence_update_masquerades_as_the_user_with_the_appservice_token(homeserver_answers):
    seen = homeserver_answers(httpx.Response(200, json={}))

    matrix.set_presence("https://matrix.example.org/", "as-token", "@alice:example.org", MatrixPresence("online", "Hi"))

    (request,) = seen
    assert request.method == "PUT"
    assert request.url.path == "/_matrix/client/v3/presence/@alice:example.org/status"
    assert request.url.params["user_id"] == "@alice:example.org"
    assert request.headers["Authorization"] == "Bearer as-token"
    assert request.read() == b'{"presence":"online","status_msg":"Hi"}'


def test_a_homeserver_without_msc3026_gets_unavailable_for_busy(homeserver_answers):
    homeserver_answers(httpx.Response(200, json={"versions": ["v1.11"], "unstable_features": {}}))

    assert matrix.supports_busy("https://old-matrix.example.org") is False
