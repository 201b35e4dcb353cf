"""The Redis cache: one client per process, however many websockets (async contexts) use it."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import redis
from django.conf import settings

from tests.presence.socket_helpers import run, snapshot, socket

pytestmark = pytest.mark.django_db(transaction=True)


def redis_connections() -> int:
    """Connections to the tests' Redis db, this count's own included."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    try:
        return sum(1 for entry in client.client_list() if int(entry["db"]) == db)
    finally:
        client.close()


def test_sockets_signing_in_with_tokens_hold_no_redis_connection_each(make_member):
    members = [make_member(f"member-{n}") for n in range(8)]

    async def scenario():
        async with AsyncExitStack() as sockets:
            first = await sockets.enter_async_context(socket(members[0]))
            await snapshot(first)
            before = redis_connections()
            for member in members[1:]:
                await snapshot(await sockets.enter_async_context(socket(member)))
            return before, redis_connections()

    before, during = run(scenario)
    # One shared pool: a connection more at most (two threads at once), never one per socket.
    assert during - before <= 1
