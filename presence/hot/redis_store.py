"""The hot store in Redis, shared by every web and worker process: one server (`REDIS_URL`) or a
Redis Cluster (`REDIS_CLUSTER_NODES`).

Keys are spread over the layout's logical shards (`layout.shard_of`); each script touches keys of
one shard alone, so of one cluster slot. What spans users (the sweep's schedule, the write-behind's
queue, the dirty devices, the history's buffer, the epoch) exists once per shard, and the readers
of it walk the shards, pipelined.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from presence import ratelimits
from presence.hot.connection import Target, sync_client
from presence.hot.layout import (
    DIRTY_KEY,
    DUE_KEY,
    EPOCH_KEY,
    FIELD_DECISION,
    HISTORY_KEY,
    HISTORY_LOCK_KEY,
    KEY_PREFIX,
    PERSIST_KEY,
    PERSIST_SEQ_KEY,
    SHARDS,
    USER_KEY_PREFIX,
    shard_of,
    shard_tag,
)
from presence.hot.pipeline import ClusterHeartbeats, HeartbeatPipeline, for_running_loop
from presence.hot.protocol import Heartbeat, SteadyCommit, UserCommit
from presence.hot.records import HotDecision, HotDevice, settings_fingerprint
from presence.hot.scripts import lua_source

logger = logging.getLogger(__name__)


def heartbeat_args(user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]) -> list[str]:
    """Arguments of the heartbeat script (`lua/heartbeat.lua`)."""
    return [
        device_id,
        str(seq),
        repr(now),
        str(settings.PRESENCE_DEVICE_FLUSH_SECONDS),
        str(user_id),
        *(str(value) for value in settings_fingerprint()),
        *ratelimits.script_args(limits),
    ]


def heartbeat_result(result: list, limits: Sequence[ratelimits.Limit]) -> Heartbeat | None:
    """The heartbeat script's reply, as `HotStore.heartbeat` answers it."""
    if result[0] == 3:
        raise ratelimits.refused(limits, result[1], result[2])
    if result[0] == 0:
        return None
    return Heartbeat(applied=result[0] == 1, decision=HotDecision.decode(result[1]))


@dataclass(frozen=True)
class ShardKeys:
    """The keys of one shard, all under its hash tag."""

    number: int
    prefix: str  # the store's prefix and the shard's tag

    def user(self, user_id: int) -> str:
        return f"{self.prefix}{USER_KEY_PREFIX}{user_id}"

    @property
    def due(self) -> str:
        return self.prefix + DUE_KEY

    @property
    def dirty(self) -> str:
        return self.prefix + DIRTY_KEY

    @property
    def epoch(self) -> str:
        return self.prefix + EPOCH_KEY

    @property
    def persist(self) -> str:
        return self.prefix + PERSIST_KEY

    @property
    def persist_seq(self) -> str:
        return self.prefix + PERSIST_SEQ_KEY

    @property
    def history(self) -> str:
        return self.prefix + HISTORY_KEY


def _score(due: float | None) -> str:
    return "" if due is None else repr(due)


class RedisHotStore:
    buffers_history = True

    def __init__(self, url: str = "", prefix: str = KEY_PREFIX, cluster_nodes: Sequence[str] = ()) -> None:
        self.target = Target(url, tuple(cluster_nodes))
        self.client = sync_client(self.target)
        self.prefix = prefix
        self.shards = [ShardKeys(number, prefix + shard_tag(number)) for number in range(SHARDS)]
        # One key, outside the shards: taken by a plain command, never inside a script.
        self.history_lock_key = prefix + HISTORY_LOCK_KEY
        self._heartbeat_source = lua_source("heartbeat")
        self._read_charged = self.client.register_script(lua_source("read_charged"))
        self._charge = self.client.register_script(lua_source("charge"))
        self._pending = self.client.register_script(lua_source("pending_persist"))
        self._clear = self.client.register_script(lua_source("clear_persisted"))
        self._steady = self.client.register_script(lua_source("commit_steady"))
        self._device = self.client.register_script(lua_source("commit_device"))
        self._user = self.client.register_script(lua_source("commit_user"))
        self._heartbeat = self.client.register_script(self._heartbeat_source)
        self._history_turn = itertools.count()
        self._persist_turn = itertools.count()

    def shard(self, user_id: int) -> ShardKeys:
        return self.shards[shard_of(user_id)]

    def user_key(self, user_id: int) -> str:
        return self.shard(user_id).user(user_id)

    def _run_many(self, script: Script, calls: list[tuple[list[str], list[str]]]) -> list:
        """The script for each (keys, args), pipelined (each routed to its slot's master on a
        cluster), in order. A master that does not know the script (a new one after a failover,
        a restarted one) is taught it and asked again."""
        results = self._pipelined(script, calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            self.client.script_load(script.script)  # on a cluster: every master
            for i, result in zip(missing, self._pipelined(script, [calls[i] for i in missing]), strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _pipelined(self, script: Script, calls: list[tuple[list[str], list[str]]]) -> list:
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            # Through execute_command: the cluster pipeline refuses its `evalsha` method (a script
            # may name keys of many slots). Routed to the master of its keys' slot by name: left
            # to itself, redis-py's cluster pipeline (8.1) asks a node for an EVALSHA's keys with
            # a COMMAND GETKEYS round trip per script before sending the batch.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, **self._route(keys[0]))
        return pipe.execute(raise_on_error=False)

    def _route(self, key: str) -> dict:
        if not self.target.is_cluster:
            return {}
        return {"target_nodes": self.client.get_node_from_key(key)}

    def _shares(
        self, shards: list[ShardKeys], size: Callable[[Any, ShardKeys], object], limit: int
    ) -> list[tuple[ShardKeys, int]]:
        """How many to take from each shard, in order, for `limit` in all: each shard's size
        (`size` queues the command that counts it, all in one pipeline), no more than it holds."""
        pipe = self.client.pipeline(transaction=False)
        for shard in shards:
            size(pipe, shard)
        shares, left = [], limit
        for shard, held in zip(shards, pipe.execute(), strict=True):
            if held and left > 0:
                shares.append((shard, min(held, left)))
                left -= held
        return shares

    def read(self, user_id: int) -> dict[str, str]:
        return self.client.hgetall(self.user_key(user_id))

    def read_charged(
        self, user_id: int, device_id: str, limits: Sequence[ratelimits.Limit], now: float
    ) -> dict[str, str]:
        if not limits:
            return self.read(user_id)
        args = [repr(now), device_id, *ratelimits.script_args(limits)]
        result = self._read_charged(keys=[self.user_key(user_id)], args=args)
        if result[0] == 0:
            raise ratelimits.refused(limits, result[1], result[2])
        pairs = result[1]
        return dict(zip(pairs[::2], pairs[1::2], strict=True))

    def charge(self, user_id: int, limits: Sequence[ratelimits.Limit], now: float) -> None:
        if not limits:
            return
        result = self._charge(keys=[self.user_key(user_id)], args=[repr(now), *ratelimits.script_args(limits)])
        if result != 0:
            raise ratelimits.refused(limits, result[0], result[1])

    def read_many(self, user_ids: list[int]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hgetall(self.user_key(user_id))
        return pipe.execute()

    def read_decisions(self, user_ids: list[int]) -> dict[int, str]:
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hget(self.user_key(user_id), FIELD_DECISION)
        return {uid: dec for uid, dec in zip(user_ids, pipe.execute(), strict=True) if dec}

    def commit_steady(self, commit: SteadyCommit) -> bool:
        user_id, device = commit.user_id, commit.device
        args = [
            str(commit.expected_version),
            str(commit.expected_seq),
            device.device_id,
            device.encode(),
            str(device.seq),
            commit.decision.encode(),
            _score(commit.decision.valid_until),
            str(user_id),
            f"{user_id}:{device.device_id}" if commit.mark_dirty else "",
            repr(device.last_seen),
            repr(device.flushed_at),
            "1" if commit.persist else "",
            commit.history_entry or "",
            *(commit.announcement or ("", "")),
        ]
        shard = self.shard(user_id)
        keys = [shard.user(user_id), shard.due, shard.dirty, shard.persist, shard.persist_seq, shard.history]
        return bool(self._steady(keys=keys, args=args))

    def pending_persist(self, limit: int) -> list[tuple[int, int]]:
        # Each shard's marks are its own counter's, oldest first; the shards are taken from a
        # starting point that moves on with every call, so that none waits behind the others
        # when there is more to write than one call takes; and each is asked for no more than
        # it holds and the call still wants.
        start = next(self._persist_turn) % SHARDS
        shards = self.shards[start:] + self.shards[:start]
        shares = self._shares(shards, lambda pipe, shard: pipe.zcard(shard.persist), limit)
        calls = [([shard.persist, shard.persist_seq], [str(count)]) for shard, count in shares]
        marks = [
            (int(found[i]), int(found[i + 1]))
            for found in (self._run_many(self._pending, calls) if calls else [])
            for i in range(0, len(found), 2)
        ]
        return marks[:limit]

    def clear_persisted(self, marks: list[tuple[int, int]]) -> None:
        by_shard: dict[int, list[str]] = {}
        for user_id, mark in marks:
            by_shard.setdefault(shard_of(user_id), []).extend((str(user_id), str(mark)))
        if by_shard:
            self._run_many(self._clear, [([self.shards[n].persist], args) for n, args in by_shard.items()])

    def commit_device(self, user_id: int, device: HotDevice, expected_seq: int | None) -> bool:
        expected = "*" if expected_seq is None else ("" if expected_seq < 0 else str(expected_seq))
        args = [
            expected,
            device.device_id,
            device.encode(),
            str(device.seq),
            repr(device.last_seen),
            repr(device.flushed_at),
        ]
        return bool(self._device(keys=[self.user_key(user_id)], args=args))

    def commit_users(self, commits: list[UserCommit]) -> list[bool]:
        calls = []
        for commit in commits:
            expected = "*" if commit.expected_version is None else str(commit.expected_version)
            args = [expected, _score(commit.due), str(commit.user_id), str(len(commit.fields))]
            for name, value in commit.fields.items():
                args.extend((name, value))
            args.extend(commit.remove)
            shard = self.shard(commit.user_id)
            calls.append(([shard.user(commit.user_id), shard.due], args))
        return [bool(result) for result in self._run_many(self._user, calls)] if calls else []

    def heartbeat(
        self, user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]
    ) -> Heartbeat | None:
        shard = self.shard(user_id)
        keys = [shard.user(user_id), shard.dirty]
        return heartbeat_result(
            self._heartbeat(keys=keys, args=heartbeat_args(user_id, device_id, seq, now, limits)), limits
        )

    async def heartbeat_async(
        self, user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]
    ) -> Heartbeat | None:
        """The same script through an asyncio Redis client, pipelined with the loop's other
        heartbeats on a single server (`presence.hot.pipeline`)."""
        shard = self.shard(user_id)
        keys = [shard.user(user_id), shard.dirty]
        args = heartbeat_args(user_id, device_id, seq, now, limits)
        return heartbeat_result(await self.loop_pipeline().call(keys, args), limits)

    def loop_pipeline(self) -> HeartbeatPipeline | ClusterHeartbeats:
        """The running event loop's pipeline of this store's heartbeats."""
        return for_running_loop(self.target, self._heartbeat_source)

    def append_history(self, entries: Sequence[str]) -> None:
        # Each call's entries go to one shard's buffer, the shards taken in turn: the buffer's
        # entries carry their times, and the database orders by them.
        if entries:
            self.client.rpush(self.shards[next(self._history_turn) % SHARDS].history, *entries)

    def drain_history(
        self, insert: Callable[[list[str]], int], batch_size: int, max_batches: int, lock_seconds: float
    ) -> int:
        """Batches gathered across the shards' buffers (one insert for many shards' entries), each
        trimmed from the buffers it came from once inserted; one drain at a time."""
        lock = self.client.lock(self.history_lock_key, timeout=lock_seconds)
        if not lock.acquire(blocking=False):
            return 0
        written = 0
        try:
            for _ in range(max_batches):
                taken = self._take_history(batch_size)
                if not taken:
                    break
                written += insert([entry for _, entries in taken for entry in entries])
                pipe = self.client.pipeline(transaction=False)
                for shard, entries in taken:
                    pipe.ltrim(shard.history, len(entries), -1)
                pipe.execute()
                if sum(len(entries) for _, entries in taken) < batch_size:
                    break
        finally:
            try:
                lock.release()
            except Exception:  # expired meanwhile: another drain may hold it now, which is fine
                logger.warning("The presence history flush outlived its lock")
        return written

    def _take_history(self, batch_size: int) -> list[tuple[ShardKeys, list[str]]]:
        """Up to `batch_size` entries from the heads of the shards' buffers, oldest first within
        each, and the shard each came from."""
        wanted = self._shares(self.shards, lambda pipe, shard: pipe.llen(shard.history), batch_size)
        if not wanted:
            return []
        pipe = self.client.pipeline(transaction=False)
        for shard, count in wanted:
            pipe.lrange(shard.history, 0, count - 1)
        return [(shard, entries) for (shard, _), entries in zip(wanted, pipe.execute(), strict=True) if entries]

    def due(self, now: float, limit: int) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        for shard in self.shards:
            pipe.zrangebyscore(shard.due, "-inf", now, start=0, num=limit, withscores=True)
        found = heapq.merge(*pipe.execute(), key=lambda member: member[1])  # the earliest first
        return [int(uid) for uid, _ in itertools.islice(found, limit)]

    def pop_dirty(self, limit: int) -> list[tuple[int, str]]:
        counts = self._shares(self.shards, lambda pipe, shard: pipe.scard(shard.dirty), limit)
        pipe = self.client.pipeline(transaction=False)
        for shard, count in counts:
            pipe.spop(shard.dirty, count)
        members = [member for popped in (pipe.execute() if counts else []) for member in popped or []]
        return [(int(uid), device_id) for uid, device_id in (m.split(":", 1) for m in members)]

    def forget_user(self, user_id: int) -> None:
        shard = self.shard(user_id)
        pipe = self.client.pipeline(transaction=True)  # one shard: one slot, one MULTI on a cluster
        pipe.delete(shard.user(user_id))
        pipe.zrem(shard.due, user_id)
        pipe.zrem(shard.persist, user_id)
        pipe.execute()

    def lost_shards(self) -> set[int]:
        # SET NX succeeds only where the key is missing: first use, a Redis (or cluster master
        # without a replica) that lost its data, or the layout's version (in the prefix) moved on.
        pipe = self.client.pipeline(transaction=False)
        for shard in self.shards:
            pipe.set(shard.epoch, str(time.time()), nx=True)
        return {shard.number for shard, created in zip(self.shards, pipe.execute(), strict=True) if created}

    def reset(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            pipe.delete(key)  # one by one: on a cluster, a DEL of many keys must stay within a slot
        pipe.execute()
