"""The websocket's heartbeats to Redis, on the event loop (`RedisHotStore.heartbeat_async`)."""

from __future__ import annotations

import asyncio
import hashlib
import types

import hiredis

from presence.hot.connection import Target, async_client


class HeartbeatPipeline:
    """Heartbeats of one event loop to Redis, sent together: those that arrive while a batch is
    on its way wait for it and go out as the next one, in one write and one read.

    A heartbeat's own work is small; a Redis round trip of its own (a write and a read on the
    socket, each a system call) costs more than the rest. Under load many sockets' heartbeats
    arrive in the same turn of the loop, and each batch carries all of them at the price of one.
    A lone heartbeat goes out at once, as before.
    """

    def __init__(self, target: Target, script: str) -> None:
        self.client = async_client(target)
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self.waiting: list[tuple[list[str], list[str], asyncio.Future]] = []
        self.sending = False

    async def call(self, keys: list[str], args: list[str]) -> list:
        """The script's reply for `keys` and `args`, sent with the loop's other heartbeats."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((keys, args, future))
        if not self.sending:
            self.sending = True
            asyncio.get_running_loop().create_task(self._send_all())
        return await future

    async def _send_all(self) -> None:
        import redis.exceptions

        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    results = await self._send(batch)
                    if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                        await self.client.script_load(self.script)  # a restarted or flushed Redis
                        results = await self._send(batch)
                except Exception as error:  # the connection failed: every waiting heartbeat learns it
                    results = [error] * len(batch)
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue  # its socket went away meanwhile
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.sending = False

    async def _send(self, batch: list[tuple[list[str], list[str], asyncio.Future]]) -> list:
        """The batch's EVALSHAs in one write, their replies (or errors) read in order: what a
        pipeline of the client does, without its per-batch bookkeeping, and packed by hiredis in
        C (the asyncio client packs in Python: 24 µs a heartbeat against 4). Retried on a broken
        connection as the client's own commands are."""
        packed = b"".join(
            hiredis.pack_command(("EVALSHA", self.sha, len(keys), *keys, *args)) for keys, args, _ in batch
        )
        import redis.exceptions

        pool = self.client.connection_pool
        connection = await pool.get_connection()

        async def round_trip() -> list:
            await connection.send_packed_command(packed)
            results = []
            for _ in batch:
                try:
                    results.append(await connection.read_response())
                except redis.exceptions.ResponseError as error:
                    results.append(error)
            return results

        async def broken(_: Exception) -> None:
            await connection.disconnect()

        try:
            return await connection.retry.call_with_retry(round_trip, broken)
        finally:
            await pool.release(connection)


class ClusterHeartbeats:
    """Heartbeats of one event loop to a Redis Cluster: each its own EVALSHA, routed by the
    cluster client to the master of the user's shard (a batch would span masters; the single
    server's pipeline above is the measured fast path)."""

    def __init__(self, target: Target, script: str) -> None:
        self.client = async_client(target)
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()

    async def call(self, keys: list[str], args: list[str]) -> list:
        import redis.exceptions

        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # a new master after a failover, or a flushed one
            await self.client.script_load(self.script)
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)


# Per event loop, one pipeline per Redis target and script: an asyncio client's connections belong to
# the loop that opened them. A server has one loop per process; the tests open one per scenario, so
# each loop's clients are closed with it.
_pipelines: dict[asyncio.AbstractEventLoop, dict[tuple[Target, str], HeartbeatPipeline | ClusterHeartbeats]] = {}


def for_running_loop(target: Target, script: str) -> HeartbeatPipeline | ClusterHeartbeats:
    """The running loop's pipeline of `script` to `target`, opened on first use."""
    loop = asyncio.get_running_loop()
    pipelines = _pipelines.get(loop)
    if pipelines is None:
        pipelines = _pipelines[loop] = {}
        _close_with_loop(loop)
    pipeline = pipelines.get((target, script))
    if pipeline is None:
        kind = ClusterHeartbeats if target.is_cluster else HeartbeatPipeline
        pipeline = pipelines[target, script] = kind(target, script)
    return pipeline


def _close_with_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close the loop's clients when the loop closes (as channels_redis does with its own)."""
    original = loop.close

    def close(self: asyncio.AbstractEventLoop) -> None:
        for pipeline in _pipelines.pop(loop, {}).values():
            loop.run_until_complete(pipeline.client.aclose())
        self.close = original
        original()

    loop.close = types.MethodType(close, loop)
