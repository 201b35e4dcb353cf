"""`GET /api/v1/peers/stream`: the snapshot and the deltas as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.test import AsyncClient

from orgs.models import Membership, User
from presence import events, hot, sse
from tests.presence.live_helpers import register_device, settle, token_of

# Changes are published when their transaction commits: these tests need real commits.
pytestmark = pytest.mark.django_db(transaction=True)

STREAM = "/api/v1/peers/stream"


class EventReader:
    """Reads a streaming response event by event, each within a timeout."""

    def __init__(self, response) -> None:
        self.response = response
        self.chunks = aiter(response.streaming_content)
        self.buffer = ""

    async def next(self, timeout: float = 5) -> tuple[str, dict | str]:
        """("snapshot" | "presence", data), or ("comment", text)."""
        while "\n\n" not in self.buffer:
            self.buffer += (await asyncio.wait_for(anext(self.chunks), timeout)).decode()
        raw, self.buffer = self.buffer.split("\n\n", 1)
        if raw.startswith(":"):
            return "comment", raw[1:].strip()
        fields = dict(line.split(": ", 1) for line in raw.splitlines())
        return fields["event"], json.loads(fields["data"])

    async def snapshot_ids(self) -> set[str]:
        ids: set[str] = set()
        while True:
            name, page = await self.next()
            assert name == "snapshot", (name, page)
            ids |= {peer["user_id"] for peer in page["peers"]}
            if page["last"]:
                return ids

    async def close(self) -> None:
        # As the server does when the client goes away: cancel the stream where it waits.
        pending = asyncio.ensure_future(anext(self.chunks))
        await asyncio.sleep(0.05)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await pending


class TokenClient:
    """An AsyncClient that sends `Authorization: Token …` (given per request: this Django's
    AsyncClient turns headers given to its constructor into the wrong ASGI names)."""

    def __init__(self, key: str, session_user: User | None = None) -> None:
        self.client = AsyncClient()
        if session_user is not None:
            self.client.force_login(User.objects.get(pk=session_user.pk))
        self.headers = {"Authorization": f"Token {key}"}

    async def get(self, path: str, data=None):
        return await self.client.get(path, data, headers=self.headers)

    async def post(self, path: str, data=None):
        return await self.client.post(path, data, headers=self.headers)


def token_client(user: User) -> TokenClient:
    return TokenClient(token_of(user))


def rest(client, method: str, path: str, body=None):
    return database_sync_to_async(lambda: getattr(client, method)(path, body, format="json"))()


def run(scenario: Callable) -> None:
    async_to_sync(scenario)()


@pytest.fixture
def fast_keepalive(monkeypatch) -> None:
    # A keep-alive comment in place of a delta proves nothing was sent, without ending the stream.
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.3)


def test_a_token_opens_the_stream_with_a_snapshot(alice, bob, carol):
    client = token_client(alice)

    async def scenario():
        response = await client.get(STREAM)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/event-stream")
        assert response["Cache-Control"] == "no-cache"
        reader = EventReader(response)
        try:
            assert await reader.snapshot_ids() == {str(bob.public_id)}
        finally:
            await reader.close()

    run(scenario)


def test_the_session_opens_the_stream(alice, bob):
    client = AsyncClient()
    client.force_login(User.objects.get(pk=alice.pk))  # as stored: the session is bound to the stored password

    async def scenario():
        response = await client.get(STREAM)
        assert response.status_code == 200
        reader = EventReader(response)
        try:
            assert await reader.snapshot_ids() == {str(bob.public_id)}
        finally:
            await reader.close()

    run(scenario)


def test_a_colleagues_change_follows_as_a_presence_event_and_another_organizations_does_not(
    api_for, alice, bob, carol, fast_keepalive
):
    register_device(bob)
    settle(alice, bob, carol)
    client, bob_api, carol_api = token_client(alice), api_for(bob), api_for(carol)

    async def scenario():
        reader = EventReader(await client.get(STREAM))
        try:
            await reader.snapshot_ids()
            assert (await rest(carol_api, "post", "/api/v1/devices", {"installation_id": "c"})).status_code == 201
            assert await reader.next() == ("comment", "keep-alive")

            response = await rest(bob_api, "put", "/api/v1/me/status", {"status": "busy", "message": "x"})
            assert response.status_code == 200
            name, delta = await reader.next()
            while name == "comment":
                name, delta = await reader.next()
        finally:
            await reader.close()

        assert name == "presence"
        assert set(delta) == {
            "type", "user_id", "status", "activity", "status_msg", "currently_active", "last_active_ago",
            "status_until",
        }  # fmt: skip
        assert (delta["type"], delta["user_id"]) == ("presence", str(bob.public_id))
        assert (delta["status"], delta["status_msg"]) == ("busy", "x")

    run(scenario)


def test_user_ids_restrict_the_stream(api_for, alice, bob, make_member, fast_keepalive):
    dave = make_member("dave")
    settle(alice, bob, dave)
    client, bob_api, dave_api = token_client(alice), api_for(bob), api_for(dave)

    async def scenario():
        reader = EventReader(await client.get(STREAM, {"user_ids": f"{bob.public_id}"}))
        try:
            assert await reader.snapshot_ids() == {str(bob.public_id)}
            assert (await rest(dave_api, "post", "/api/v1/devices", {"installation_id": "d"})).status_code == 201
            assert await reader.next() == ("comment", "keep-alive")
            assert (await rest(bob_api, "post", "/api/v1/devices", {"installation_id": "b"})).status_code == 201
            name, delta = await reader.next()
            while name == "comment":
                name, delta = await reader.next()
        finally:
            await reader.close()

        assert (name, delta["user_id"], delta["status"]) == ("presence", str(bob.public_id), "available")

    run(scenario)


def test_closing_the_stream_leaves_the_organizations_group(alice, organization):
    client = token_client(alice)

    channel = events.group_channel(organization.id)
    redis = hot.store().client

    def subscribers() -> int:
        return dict(redis.pubsub_numsub(channel))[channel]

    async def scenario():
        reader = EventReader(await client.get(STREAM))
        await reader.snapshot_ids()
        assert subscribers() == 1  # this process's hub listens for the organization
        await reader.close()
        for _ in range(50):  # the hub unsubscribes once the stream's task has ended
            if subscribers() == 0:
                break
            await asyncio.sleep(0.05)
        assert subscribers() == 0

    run(scenario)


# --- Refusals, as JSON --------------------------------------------------------------------------


def _refusal(client: AsyncClient | TokenClient, query: dict | None = None, method: str = "get") -> tuple:
    async def call():
        return await getattr(client, method)(STREAM, query)

    response = async_to_sync(call)()
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json(), response


def test_without_credentials_the_stream_is_401():
    status, body, response = _refusal(AsyncClient())
    assert (status, body["error"]) == (401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


def test_a_wrong_token_is_401_even_with_a_session(alice):
    status, body, _ = _refusal(TokenClient("not-a-token", session_user=alice))
    assert (status, body["error"]) == (401, "authentication_failed")


def test_classic_mode_is_409(settings, alice):
    settings.PRESENCE_USE_AGGREGATOR = False
    status, body, _ = _refusal(token_client(alice))
    assert (status, body["error"]) == (409, "aggregator_disabled")


def test_a_user_in_no_organization_is_403(alice):
    Membership.objects.filter(user=alice).delete()
    status, body, _ = _refusal(token_client(alice))
    assert (status, body["error"]) == (403, "permission_denied")


@pytest.mark.parametrize("whom", ["other_organization", "unknown"])
def test_user_ids_of_someone_not_a_colleague_are_404(alice, bob, carol, whom):
    target = str(carol.public_id) if whom == "other_organization" else str(uuid.uuid4())
    status, body, _ = _refusal(token_client(alice), {"user_ids": f"{bob.public_id},{target}"})
    assert (status, body) == (404, {"error": "not_found", "detail": "No such colleague."})


TOO_MANY = ",".join(str(uuid.uuid4()) for _ in range(501))


@pytest.mark.parametrize(
    ("user_ids", "field"), [("not-a-uuid", "user_ids.0"), ("", "user_ids"), (TOO_MANY, "user_ids")]
)
def test_malformed_user_ids_are_400_naming_the_field(alice, user_ids, field):
    status, body, _ = _refusal(token_client(alice), {"user_ids": user_ids})
    assert (status, body["error"]) == (400, "validation_error")
    assert field in body["fields"]


def test_only_get_is_allowed(alice):
    status, body, response = _refusal(token_client(alice), method="post")
    assert (status, body["error"], response["Allow"]) == (405, "method_not_allowed", "GET")
