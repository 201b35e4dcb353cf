"""The hot store in process memory, for the embedded default (a single process, no Redis).

It keeps the user hashes exactly as Redis would (the same fields, the same encodings), so the
code above it cannot tell the two apart; what the Lua scripts do in Redis, it does in Python under
one lock. It buffers no history: on the embedded default every change is written through, and
`presence.history` inserts its entries at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence

from django.conf import settings

from presence import ratelimits
from presence.hot.layout import (
    CONTEXT_POLICY,
    CONTEXT_SETTINGS,
    DEVICE_PREFIX,
    FIELD_CONTEXT,
    FIELD_DECISION,
    FIELD_LOADED,
    FIELD_VERSION,
    LOADED,
    POLICY_DEVICE_TIMEOUT,
    SEQ_PREFIX,
    SHARDS,
)
from presence.hot.protocol import Heartbeat, SteadyCommit, UserCommit
from presence.hot.records import HotDecision, HotDevice, device_fields, settings_fingerprint
from presence.vocabulary import NetworkValue

_NO_BUFFER = "the in-process store neither buffers history nor publishes: presence.history and presence.events do"


class LocalHotStore:
    buffers_history = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._users: dict[int, dict[str, str]] = {}
        self._due: dict[int, float] = {}
        self._dirty: set[tuple[int, str]] = set()
        self._persist: dict[int, int] = {}
        self._persist_seq = 0
        self._epoch = False
        self._rates: dict[int, dict[str, float]] = {}

    def read(self, user_id: int) -> dict[str, str]:
        with self._lock:
            return dict(self._users.get(user_id, {}))

    def read_charged(
        self, user_id: int, device_id: str, limits: Sequence[ratelimits.Limit], now: float
    ) -> dict[str, str]:
        with self._lock:
            self._charge_locked(user_id, limits, now, self._knows(user_id, device_id))
            return dict(self._users.get(user_id, {}))

    def charge(self, user_id: int, limits: Sequence[ratelimits.Limit], now: float) -> None:
        with self._lock:
            self._charge_locked(user_id, limits, now, known_device=True)

    def _knows(self, user_id: int, device_id: str) -> bool:
        return DEVICE_PREFIX + device_id in self._users.get(user_id, {})

    def _charge_locked(self, user_id: int, limits: Sequence[ratelimits.Limit], now: float, known_device: bool) -> None:
        if not known_device:  # as the Redis store: no state for made-up device ids
            limits = [limit for limit in limits if limit.scope != ratelimits.DEVICE_SCOPE]
        if not limits:
            return
        state = self._rates.setdefault(user_id, {})
        due = [state.get(limit.field) for limit in limits]
        wait, binding = ratelimits.wait_for(due, limits, now)
        if binding >= 0:
            raise ratelimits.RateLimited(limits[binding].scope, wait)
        for limit, at in zip(limits, due, strict=True):
            state[limit.field] = ratelimits.next_due(at, limit, now)

    def read_many(self, user_ids: list[int]) -> list[dict[str, str]]:
        with self._lock:
            return [dict(self._users.get(uid, {})) for uid in user_ids]

    def read_decisions(self, user_ids: list[int]) -> dict[int, str]:
        with self._lock:
            found = {uid: self._users.get(uid, {}).get(FIELD_DECISION) for uid in user_ids}
        return {uid: dec for uid, dec in found.items() if dec}

    def _schedule(self, user_id: int, due: float | None) -> None:
        if due is None:
            self._due.pop(user_id, None)
        else:
            self._due[user_id] = due

    def commit_steady(self, commit: SteadyCommit) -> bool:
        if commit.history_entry is not None or commit.announcement is not None:
            raise ValueError(_NO_BUFFER)
        device = commit.device
        with self._lock:
            user = self._users.get(commit.user_id, {})
            if user.get(FIELD_VERSION, "-1") != str(commit.expected_version):
                return False
            if user.get(SEQ_PREFIX + device.device_id) != str(commit.expected_seq):
                return False
            user.update(device_fields(device))
            user[FIELD_DECISION] = commit.decision.encode()
            user[FIELD_VERSION] = str(commit.expected_version + 1)
            self._schedule(commit.user_id, commit.decision.valid_until)
            if commit.mark_dirty:
                self._dirty.add((commit.user_id, device.device_id))
            if commit.persist:
                self._persist_seq += 1
                self._persist[commit.user_id] = self._persist_seq
            return True

    def pending_persist(self, limit: int) -> list[tuple[int, int]]:
        with self._lock:
            return sorted(self._persist.items(), key=lambda mark: mark[1])[:limit]

    def clear_persisted(self, marks: list[tuple[int, int]]) -> None:
        with self._lock:
            for user_id, mark in marks:
                if self._persist.get(user_id) == mark:
                    del self._persist[user_id]

    def commit_device(self, user_id: int, device: HotDevice, expected_seq: int | None) -> bool:
        with self._lock:
            user = self._users.setdefault(user_id, {})
            if expected_seq is not None:
                stored = user.get(SEQ_PREFIX + device.device_id, "")
                if stored != ("" if expected_seq < 0 else str(expected_seq)):
                    return False
            user.update(device_fields(device))
            return True

    def commit_users(self, commits: list[UserCommit]) -> list[bool]:
        results = []
        with self._lock:
            for commit in commits:
                user = self._users.setdefault(commit.user_id, {})
                current = int(user.get(FIELD_VERSION, "-1"))
                if commit.expected_version is not None and current != commit.expected_version:
                    results.append(False)
                    continue
                user.update(commit.fields)
                user[FIELD_VERSION] = str(current + 1)
                for name in commit.remove:
                    user.pop(name, None)
                self._schedule(commit.user_id, commit.due)
                results.append(True)
        return results

    def heartbeat(
        self, user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]
    ) -> Heartbeat | None:
        """What `lua/heartbeat.lua` does in Redis."""
        with self._lock:
            self._charge_locked(user_id, limits, now, self._knows(user_id, device_id))
            user = self._users.get(user_id, {})
            stored_seq = user.get(SEQ_PREFIX + device_id)
            encoded, context = user.get(FIELD_DECISION), user.get(FIELD_CONTEXT)
            if user.get(FIELD_LOADED) != LOADED or None in (
                stored_seq,
                encoded,
                context,
                user.get(DEVICE_PREFIX + device_id),
            ):
                return None
            decision = HotDecision.decode(encoded)
            if seq <= int(stored_seq):
                return Heartbeat(applied=False, decision=decision)
            device = HotDevice.decode(device_id, user)
            context_data = json.loads(context)
            if (
                decision.is_stale(now)
                or context_data.get(CONTEXT_SETTINGS) != settings_fingerprint()
                or device.network != NetworkValue.ONLINE
                or device.last_seen + context_data[CONTEXT_POLICY][POLICY_DEVICE_TIMEOUT] <= now
            ):
                return None
            flush = now - device.flushed_at >= settings.PRESENCE_DEVICE_FLUSH_SECONDS
            device = device.with_changes(last_seen=now, seq=seq, flushed_at=now if flush else device.flushed_at)
            user.update(device_fields(device))
            user[FIELD_VERSION] = str(int(user[FIELD_VERSION]) + 1)
            if flush:
                self._dirty.add((user_id, device_id))
            return Heartbeat(applied=True, decision=decision)

    async def heartbeat_async(
        self, user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]
    ) -> Heartbeat | None:
        """`heartbeat`, called directly: memory behind a lock held for microseconds."""
        return self.heartbeat(user_id, device_id, seq, now, limits)

    def append_history(self, entries: Sequence[str]) -> None:
        raise ValueError(_NO_BUFFER)

    def drain_history(
        self, insert: Callable[[list[str]], int], batch_size: int, max_batches: int, lock_seconds: float
    ) -> int:
        return 0  # nothing is ever buffered here

    def due(self, now: float, limit: int) -> list[int]:
        with self._lock:
            return sorted((uid for uid, at in self._due.items() if at <= now), key=self._due.__getitem__)[:limit]

    def pop_dirty(self, limit: int) -> list[tuple[int, str]]:
        with self._lock:
            return [self._dirty.pop() for _ in range(min(limit, len(self._dirty)))]

    def forget_user(self, user_id: int) -> None:
        with self._lock:
            self._users.pop(user_id, None)
            self._due.pop(user_id, None)
            self._persist.pop(user_id, None)

    def lost_shards(self) -> set[int]:
        with self._lock:
            was_reset, self._epoch = not self._epoch, True
            return set(range(SHARDS)) if was_reset else set()
