"""The presence websocket signed in with an organization account's access token."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from sparks_site.asgi import application
from tests.presence.test_websocket import peers_of, refused_with

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/presence/"


def test_a_bearer_subprotocol_signs_in_and_the_presence_protocol_is_selected(jwt_provider, bob):
    token = jwt_provider.token("kc-erin", organization="demo")

    async def scenario():
        communicator = WebsocketCommunicator(application, PATH, subprotocols=["sparks.presence.v1", f"bearer.{token}"])
        assert await communicator.connect(timeout=5) == (True, "sparks.presence.v1")
        assert set(await peers_of(communicator)) == {str(bob.public_id)}
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_a_bearer_token_in_the_query_signs_in(jwt_provider, bob):
    token = jwt_provider.token("kc-erin", organization="demo")

    async def scenario():
        communicator = WebsocketCommunicator(application, f"{PATH}?access_token={token}")
        assert (await communicator.connect(timeout=5))[0]
        assert set(await peers_of(communicator)) == {str(bob.public_id)}
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize(
    "claims",
    [
        {"expires_in": -3600},
        {"iss": "https://evil.example/realms/acme"},
        {"aud": "other-api", "azp": "other-app"},
    ],
    ids=["expired", "wrong-issuer", "wrong-audience"],
)
def test_an_invalid_bearer_token_closes_the_socket_4401(jwt_provider, claims):
    token = jwt_provider.token("kc-erin", organization="demo", **claims)

    async def scenario():
        assert await refused_with(subprotocols=["sparks.presence.v1", f"bearer.{token}"]) == 4401
        assert await refused_with(path=f"{PATH}?access_token={token}") == 4401

    async_to_sync(scenario)()


def test_a_wrongly_signed_bearer_token_closes_the_socket_4401(jwt_provider):
    header, _, signature = jwt_provider.token("kc-erin").split(".")
    _, payload, _ = jwt_provider.token("kc-mallory").split(".")

    async def scenario():
        assert await refused_with(path=f"{PATH}?access_token={header}.{payload}.{signature}") == 4401

    async_to_sync(scenario)()


def test_a_provider_that_is_down_closes_the_socket_4503(unreachable_issuer):
    async def scenario():
        assert await refused_with(path=f"{PATH}?access_token=opaque-anything") == 4503

    async_to_sync(scenario)()
