"""A Channels layer on a Redis Cluster's sharded pub/sub, for the live fan-out of a clustered
deployment (`REDIS_CLUSTER_NODES`).

channels_redis speaks to single Redis servers only. Here a group is one sharded channel
(`SPUBLISH`/`SSUBSCRIBE`, Redis 7), named with the group inside a hash tag, so each group lives
on the one master that owns its slot: a change is published once, to that master, and reaches
the processes subscribed there. (Classic `PUBLISH` on a cluster is copied to every node over the
cluster bus, whatever the node's subscribers; sharded pub/sub is what scales with masters.)

What the presence hub needs and nothing more: a process-local channel per listener
(`new_channel`, `receive`), group membership (`group_add`, `group_discard`: the process
subscribes to a group's channel while any local channel is a member), `group_send` and `send`.
Nothing is buffered: a message published while a process is not subscribed is not delivered to
it, as with the single-server pub/sub layer.

Each event loop has its own clients (asyncio connections belong to their loop): the server
loop's subscriber, the publisher thread's loop's sender. Per master with subscriptions, one
plain connection reads its messages. When one fails (a master died and its replica took over,
slots moved, a connection dropped), the layer connects afresh to the cluster, subscribes again
to everything and hands every local channel `{"type": RESUBSCRIBED}`: changes may have been
missed in between, and the listener decides what to do (the hub closes its sockets, whose
clients reconnect and get a fresh snapshot).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import msgpack
from channels.layers import BaseChannelLayer

from presence.hot.connection import Target, async_client, parse_nodes

logger = logging.getLogger(__name__)

RESUBSCRIBED = "layer.resubscribed"
# How long to wait before connecting again after a failure (a failover takes a few seconds).
RECONNECT_SECONDS = 0.5


class ShardedPubSubChannelLayer(BaseChannelLayer):
    extensions = ["groups"]

    def __init__(self, nodes: str | Sequence[str], prefix: str = "sparks:live:", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = Target(cluster_nodes=parse_nodes(nodes))
        self.prefix = prefix
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSide] = weakref.WeakKeyDictionary()

    def redis_channel(self, name: str) -> str:
        """The sharded channel of a group or a channel: the name is its hash tag."""
        return f"{self.prefix}{{{name}}}"

    def _side(self) -> _LoopSide:
        loop = asyncio.get_running_loop()
        side = self._loops.get(loop)
        if side is None:
            side = self._loops[loop] = _LoopSide(self)
        return side

    # --- The layer's interface ------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific.") -> str:
        channel = f"{prefix}{uuid.uuid4().hex}"
        await self._side().open(channel)
        return channel

    async def receive(self, channel: str) -> dict[str, Any]:
        side = self._side()
        if channel not in side.queues:
            await side.open(channel)
        return await side.queues[channel].get()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._side().publish(self.redis_channel(channel), message)

    async def group_add(self, group: str, channel: str) -> None:
        await self._side().join(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await self._side().leave(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._side().publish(self.redis_channel(group), message)

    async def flush(self) -> None:
        side = self._loops.pop(asyncio.get_running_loop(), None)
        if side is not None:
            await side.close()

    def serialize(self, message: dict[str, Any]) -> bytes:
        return msgpack.packb(message, use_bin_type=True)

    def deserialize(self, payload: bytes) -> dict[str, Any]:
        return msgpack.unpackb(payload, raw=False)


class _LoopSide:
    """The layer within one event loop: its clients, local channels and subscriptions."""

    def __init__(self, layer: ShardedPubSubChannelLayer) -> None:
        self.layer = layer
        self.queues: dict[str, asyncio.Queue] = {}
        self.groups: dict[str, set[str]] = {}  # group -> local channels
        self.cluster = async_client(layer.target)
        self.readers: dict[str, _NodeReader] = {}  # "host:port" -> its reader
        self.lock = asyncio.Lock()

    async def publish(self, redis_channel: str, message: dict[str, Any]) -> None:
        await self.cluster.spublish(redis_channel, self.layer.serialize(message))

    async def open(self, channel: str) -> None:
        self.queues.setdefault(channel, asyncio.Queue())
        async with self.lock:
            await self._subscribe(self.layer.redis_channel(channel), channel)

    async def join(self, group: str, channel: str) -> None:
        async with self.lock:
            members = self.groups.setdefault(group, set())
            first = not members
            members.add(channel)
            if first:
                await self._subscribe(self.layer.redis_channel(group), group)

    async def leave(self, group: str, channel: str) -> None:
        async with self.lock:
            members = self.groups.get(group)
            if not members or channel not in members:
                return
            members.discard(channel)
            if not members:
                del self.groups[group]
                reader = self._reader_of(self.layer.redis_channel(group))
                if reader is not None:
                    await reader.unsubscribe(self.layer.redis_channel(group))

    def _reader_of(self, redis_channel: str) -> _NodeReader | None:
        return next((reader for reader in self.readers.values() if redis_channel in reader.names), None)

    async def _subscribe(self, redis_channel: str, name: str) -> None:
        await self.cluster.initialize()  # the cluster's slots, read once per client
        node = self.cluster.get_node_from_key(redis_channel)
        address = f"{node.host}:{node.port}"
        reader = self.readers.get(address)
        if reader is None:
            reader = self.readers[address] = _NodeReader(self, node.host, node.port)
        await reader.subscribe(redis_channel, name)

    def deliver(self, name: str, payload: bytes) -> None:
        message = self.layer.deserialize(payload)
        if name in self.queues:
            self.queues[name].put_nowait(message)
        for channel in self.groups.get(name, ()):
            queue = self.queues.get(channel)
            if queue is not None:
                queue.put_nowait(message)

    async def recover(self) -> None:
        """After a reader failed: a fresh view of the cluster, every subscription again, and every
        local channel told that messages may have been missed."""
        async with self.lock:
            for reader in self.readers.values():
                await reader.close()
            self.readers.clear()
            while True:
                try:
                    await self.cluster.aclose()
                    self.cluster = async_client(self.layer.target)
                    for channel in self.queues:
                        await self._subscribe(self.layer.redis_channel(channel), channel)
                    for group in self.groups:
                        await self._subscribe(self.layer.redis_channel(group), group)
                    break
                except Exception as error:
                    logger.warning("The live layer could not subscribe again (%r); it tries again", error)
                    for reader in self.readers.values():
                        await reader.close()
                    self.readers.clear()
                    await asyncio.sleep(RECONNECT_SECONDS)
        for queue in self.queues.values():
            queue.put_nowait({"type": RESUBSCRIBED})

    async def close(self) -> None:
        async with self.lock:
            for reader in self.readers.values():
                await reader.close()
            self.readers.clear()
        await self.cluster.aclose()


class _NodeReader:
    """One master's sharded subscriptions, on a connection of their own, read by one task."""

    def __init__(self, side: _LoopSide, host: str, port: int) -> None:
        import redis.asyncio

        self.side = side
        self.client = redis.asyncio.Redis(host=host, port=port)
        self.pubsub = self.client.pubsub()
        self.names: dict[str, str] = {}  # Redis channel -> group or channel name
        self.task: asyncio.Task | None = None

    async def subscribe(self, redis_channel: str, name: str) -> None:
        await self.pubsub.ssubscribe(redis_channel)
        self.names[redis_channel] = name
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._read_forever())

    async def unsubscribe(self, redis_channel: str) -> None:
        self.names.pop(redis_channel, None)
        await self.pubsub.sunsubscribe(redis_channel)

    async def _read_forever(self) -> None:
        try:
            while True:
                message = await self.pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind, channel = message["type"], message["channel"].decode()
                if kind == "smessage" and channel in self.names:
                    self.side.deliver(self.names[channel], message["data"])
                elif kind == "sunsubscribe" and channel in self.names:
                    # Not asked for: the slot moved to another master.
                    raise ConnectionError(f"the cluster unsubscribed {channel}: its slot moved")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("The live layer lost a cluster node's subscriptions (%r); it subscribes again", error)
            self.task = None  # recover() closes this reader; it must not cancel the task running it
            await asyncio.sleep(RECONNECT_SECONDS)
            await self.side.recover()

    async def close(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self.task = None
        try:
            await self.pubsub.aclose()
            await self.client.aclose()
        except Exception:  # already broken: nothing to close cleanly
            pass
