"""Driving the presence websocket in process, as a client would: shared by the live presence tests."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from orgs.models import User
from sparks_site.asgi import application
from tests.presence.live_helpers import token_of

PATH = "/ws/presence/"


def run(scenario: Callable) -> Any:
    """Run an async scenario to its end, and answer what it returns."""
    return async_to_sync(scenario)()


@asynccontextmanager
async def socket(user: User | None = None, *, path: str = PATH, headers=None, subprotocols=None, token=None):
    """A connected socket; signed in with the user's token in the query unless told otherwise."""
    if user is not None:
        token = await database_sync_to_async(token_of)(user)
    if token is not None:
        path = f"{path}?token={token}"
    communicator = WebsocketCommunicator(application, path, headers=headers, subprotocols=subprotocols)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def snapshot(communicator: WebsocketCommunicator, timeout: float = 10) -> list[dict]:
    pages = []
    while not pages or not pages[-1]["last"]:
        page = await communicator.receive_json_from(timeout)
        assert page["type"] == "snapshot", page
        pages.append(page)
    return pages


async def peers_of(communicator: WebsocketCommunicator) -> dict[str, dict]:
    return {peer["user_id"]: peer for page in await snapshot(communicator) for peer in page["peers"]}


async def receive_until(communicator: WebsocketCommunicator, predicate, timeout: float = 5) -> dict:
    while True:
        message = await communicator.receive_json_from(timeout)
        if predicate(message):
            return message


def rest(client, method: str, path: str, body=None):
    """A REST call made from the scenario, as another client would."""
    return database_sync_to_async(lambda: getattr(client, method)(path, body, format="json"))()


def is_delta_of(user: User, **fields) -> Callable[[dict], bool]:
    def matches(message: dict) -> bool:
        return (
            message["type"] == "presence"
            and message["user_id"] == str(user.public_id)
            and all(message[key] == value for key, value in fields.items())
        )

    return matches
