"""The hot store in Redis, shared by every web and worker process (with `REDIS_URL`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from django.conf import settings

from presence import ratelimits
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
    USER_KEY_PREFIX,
)
from presence.hot.pipeline import HeartbeatPipeline, for_running_loop
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


def _score(due: float | None) -> str:
    return "" if due is None else repr(due)


class RedisHotStore:
    buffers_history = True

    def __init__(self, url: str, prefix: str = KEY_PREFIX) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.prefix = prefix
        self.due_key = prefix + DUE_KEY
        self.dirty_key = prefix + DIRTY_KEY
        self.epoch_key = prefix + EPOCH_KEY
        self.persist_key = prefix + PERSIST_KEY
        self.persist_seq_key = prefix + PERSIST_SEQ_KEY
        self.history_key = prefix + HISTORY_KEY
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

    def user_key(self, user_id: int) -> str:
        return f"{self.prefix}{USER_KEY_PREFIX}{user_id}"

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
        keys = [
            self.user_key(user_id),
            self.due_key,
            self.dirty_key,
            self.persist_key,
            self.persist_seq_key,
            self.history_key,
        ]
        return bool(self._steady(keys=keys, args=args))

    def pending_persist(self, limit: int) -> list[tuple[int, int]]:
        found = self._pending(keys=[self.persist_key, self.persist_seq_key], args=[limit])
        return [(int(found[i]), int(found[i + 1])) for i in range(0, len(found), 2)]

    def clear_persisted(self, marks: list[tuple[int, int]]) -> None:
        if marks:
            self._clear(keys=[self.persist_key], args=[str(v) for mark in marks for v in mark])

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
        if not commits:
            return []
        pipe = self.client.pipeline(transaction=False)
        for commit in commits:
            expected = "*" if commit.expected_version is None else str(commit.expected_version)
            args = [expected, _score(commit.due), str(commit.user_id), str(len(commit.fields))]
            for name, value in commit.fields.items():
                args.extend((name, value))
            args.extend(commit.remove)
            self._user(keys=[self.user_key(commit.user_id), self.due_key], args=args, client=pipe)
        return [bool(result) for result in pipe.execute()]

    def heartbeat(
        self, user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]
    ) -> Heartbeat | None:
        keys = [self.user_key(user_id), self.dirty_key]
        return heartbeat_result(
            self._heartbeat(keys=keys, args=heartbeat_args(user_id, device_id, seq, now, limits)), limits
        )

    async def heartbeat_async(
        self, user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]
    ) -> Heartbeat | None:
        """The same script through an asyncio Redis client, pipelined with the loop's other
        heartbeats (`presence.hot.pipeline`)."""
        keys = [self.user_key(user_id), self.dirty_key]
        args = heartbeat_args(user_id, device_id, seq, now, limits)
        return heartbeat_result(await self.loop_pipeline().call(keys, args), limits)

    def loop_pipeline(self) -> HeartbeatPipeline:
        """The running event loop's pipeline of this store's heartbeats."""
        return for_running_loop(self.url, self._heartbeat_source)

    def append_history(self, entries: Sequence[str]) -> None:
        if entries:
            self.client.rpush(self.history_key, *entries)

    def drain_history(
        self, insert: Callable[[list[str]], int], batch_size: int, max_batches: int, lock_seconds: float
    ) -> int:
        lock = self.client.lock(self.history_lock_key, timeout=lock_seconds)
        if not lock.acquire(blocking=False):
            return 0
        written = 0
        try:
            for _ in range(max_batches):
                raw = self.client.lrange(self.history_key, 0, batch_size - 1)
                if not raw:
                    break
                written += insert(raw)
                self.client.ltrim(self.history_key, len(raw), -1)
                if len(raw) < batch_size:
                    break
        finally:
            try:
                lock.release()
            except Exception:  # expired meanwhile: another drain may hold it now, which is fine
                logger.warning("The presence history flush outlived its lock")
        return written

    def due(self, now: float, limit: int) -> list[int]:
        return [int(uid) for uid in self.client.zrangebyscore(self.due_key, "-inf", now, start=0, num=limit)]

    def pop_dirty(self, limit: int) -> list[tuple[int, str]]:
        members = self.client.spop(self.dirty_key, limit) or []
        return [(int(uid), device_id) for uid, device_id in (m.split(":", 1) for m in members)]

    def forget_user(self, user_id: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.user_key(user_id)).zrem(self.due_key, user_id).zrem(self.persist_key, user_id).execute()

    def check_epoch(self) -> bool:
        # SET NX succeeds only when the key is missing: first use, Redis lost its data, or the
        # layout's version (in the prefix) moved on.
        return bool(self.client.set(self.epoch_key, str(time.time()), nx=True))

    def reset(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        if keys:
            self.client.delete(*keys)
