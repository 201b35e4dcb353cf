"""The live layer of a clustered deployment: organizations' groups on a Redis Cluster's sharded
pub/sub, across processes, through a master's failover.

A cluster of its own (`tests.redis_cluster`): the failover kills one of its masters.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from presence.sharded_layer import RESUBSCRIBED, ShardedPubSubChannelLayer
from tests.redis_cluster import LocalCluster, running

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

WAIT = 5.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running() as local:
        yield local


def two_processes(cluster: LocalCluster) -> tuple[ShardedPubSubChannelLayer, ShardedPubSubChannelLayer]:
    """Two server processes' layers: nothing shared but the cluster."""
    return ShardedPubSubChannelLayer(cluster.seeds), ShardedPubSubChannelLayer(cluster.seeds)


async def nothing_arrives(layer: ShardedPubSubChannelLayer, channel: str) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), 0.5)
    except TimeoutError:
        return True
    return False


def test_a_group_message_reaches_every_process_with_a_member_and_no_other_group(cluster):
    sender, listener = two_processes(cluster)

    async def scenario() -> None:
        first, second = await listener.new_channel(), await listener.new_channel()
        await listener.group_add("presence.org.1", first)
        await listener.group_add("presence.org.1", second)
        await listener.group_add("presence.org.2", second)

        await sender.group_send("presence.org.1", {"type": "presence.change", "status": "busy"})
        await sender.group_send("presence.org.3", {"type": "presence.change", "status": "away"})

        assert await asyncio.wait_for(listener.receive(first), WAIT) == {"type": "presence.change", "status": "busy"}
        assert await asyncio.wait_for(listener.receive(second), WAIT) == {"type": "presence.change", "status": "busy"}
        assert await nothing_arrives(listener, first)  # org 3 has no member here

        await listener.group_discard("presence.org.1", first)
        await sender.group_send("presence.org.1", {"type": "presence.change", "status": "dnd"})
        assert await asyncio.wait_for(listener.receive(second), WAIT) == {"type": "presence.change", "status": "dnd"}
        assert await nothing_arrives(listener, first)
        await sender.flush()
        await listener.flush()

    asyncio.run(scenario())


def test_a_channel_is_reached_from_another_process(cluster):
    sender, listener = two_processes(cluster)

    async def scenario() -> None:
        channel = await listener.new_channel()
        await sender.send(channel, {"type": "hello"})
        assert await asyncio.wait_for(listener.receive(channel), WAIT) == {"type": "hello"}
        await sender.flush()
        await listener.flush()

    asyncio.run(scenario())


def test_after_a_masters_failover_members_are_told_and_messages_flow_again(cluster):
    sender, listener = two_processes(cluster)

    async def scenario() -> None:
        channel = await listener.new_channel()
        await listener.group_add("presence.org.7", channel)
        await sender.group_send("presence.org.7", {"type": "presence.change", "n": 1})
        assert (await asyncio.wait_for(listener.receive(channel), WAIT))["n"] == 1

        victim = cluster.master_of(listener.redis_channel("presence.org.7"))
        cluster.kill(victim)
        # Changes published meanwhile may be missed: the member is told so.
        assert await asyncio.wait_for(listener.receive(channel), 30) == {"type": RESUBSCRIBED}
        await asyncio.to_thread(cluster.wait_for_failover, victim)

        await sender.group_send("presence.org.7", {"type": "presence.change", "n": 2})
        assert (await asyncio.wait_for(listener.receive(channel), WAIT))["n"] == 2
        await sender.flush()
        await listener.flush()

    asyncio.run(scenario())
