"""What every hot store promises (`HotStore`), and the values its writes take and give."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from presence import ratelimits
from presence.hot.records import HotDecision, HotDevice


@dataclass(frozen=True, slots=True)
class UserCommit:
    """A recomputed user: fields of the hash to set and to remove, and when its decision is due."""

    user_id: int
    expected_version: int | None  # None: write whatever the version is now
    fields: dict[str, str]
    due: float | None
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SteadyCommit:
    """A signal's device and the decision it leaves, written in one step if neither the user's
    version nor the device's seq moved since they were read.

    `mark_dirty` queues the device's times for the database copy, `persist` the user for the
    database writer. `history_entry` is appended to the history buffer and `announcement`
    (channel, payload) published in the same step: only on a store that `buffers_history` (see
    `presence.history.buffered_entry` and `presence.events.announcement`)."""

    user_id: int
    device: HotDevice
    expected_version: int
    expected_seq: int
    decision: HotDecision  # scheduled for its valid_until
    mark_dirty: bool
    persist: bool = False
    history_entry: str | None = None
    announcement: tuple[str, bytes] | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    applied: bool  # False: its seq was not newer, it was ignored
    decision: HotDecision


class HotStore(Protocol):
    """Every write that touches a user's decision is a compare-and-set on the user's version and
    moves it on by one, so a writer that read before another wrote must read again: no decision
    computed from older inputs can replace one computed from newer ones."""

    # Whether the store keeps a buffer of history entries (`append_history`, `drain_history`)
    # and takes them, and announcements, with a steady commit. Without, the caller inserts the
    # entries and publishes itself.
    buffers_history: bool

    def read(self, user_id: int) -> dict[str, str]: ...

    def read_charged(
        self, user_id: int, device_id: str, limits: Sequence[ratelimits.Limit], now: float
    ) -> dict[str, str]:
        """`read`, counting a request of `device_id` against `limits` in the same step
        (`presence.ratelimits`; the device's own limit only if the hash knows the device); raises
        `RateLimited`, having read and counted nothing, when one of them refuses it."""
        ...

    def charge(self, user_id: int, limits: Sequence[ratelimits.Limit], now: float) -> None:
        """Count a request against `limits`, or raise `RateLimited` (and count nothing)."""
        ...

    def read_many(self, user_ids: list[int]) -> list[dict[str, str]]: ...

    def read_decisions(self, user_ids: list[int]) -> dict[int, str]: ...

    def commit_steady(self, commit: SteadyCommit) -> bool:
        """Write `commit` if neither the user's version nor the device's seq moved since they were
        read; False, having written nothing, if one did (the caller reads again). A store that
        does not buffer history refuses a commit with a history entry or an announcement
        (`ValueError`)."""
        ...

    def pending_persist(self, limit: int) -> list[tuple[int, int]]:
        """Users marked for the database writer before this call, as (user id, mark); at most
        `limit`. Oldest mark first within a shard (marks of different shards do not compare), no
        shard left behind the others from one call to the next."""
        ...

    def clear_persisted(self, marks: list[tuple[int, int]]) -> None:
        """Unmark users written to the database, unless marked again since (a newer mark)."""
        ...

    def commit_device(self, user_id: int, device: HotDevice, expected_seq: int | None) -> bool:
        """Write one device if its seq is still `expected_seq` (None: whatever it is)."""
        ...

    def commit_users(self, commits: list[UserCommit]) -> list[bool]:
        """Write recomputed users, each if its version is still the expected one."""
        ...

    def heartbeat(
        self, user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]
    ) -> Heartbeat | None:
        """A lone heartbeat of a live device, in one step: it changes no decision, so record it
        and answer with the stored decision. None when this cannot be decided here (the device is
        unknown or had timed out, the decision is outdated, ...): the caller takes the full path,
        the heartbeat already counted against `limits`. Raises `RateLimited` when they refuse it."""
        ...

    async def heartbeat_async(
        self, user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]
    ) -> Heartbeat | None:
        """`heartbeat` for code on an event loop, without handing off to a thread."""
        ...

    def append_history(self, entries: Sequence[str]) -> None:
        """Append entries to the history buffer (a store that `buffers_history`; else `ValueError`)."""
        ...

    def drain_history(
        self, insert: Callable[[list[str]], int], batch_size: int, max_batches: int, lock_seconds: float
    ) -> int:
        """Hand the buffered history to `insert`, oldest first (within a shard's buffer: entries
        carry their times), in batches of `batch_size` (at most `max_batches` in all); returns the
        sum of what `insert` answered. Each batch is trimmed from the buffer only once `insert`
        returned, so a drain that fails or dies halfway loses nothing. One drain at a time, under a
        lock of `lock_seconds`: another one meanwhile returns 0. 0 on a store without a buffer."""
        ...

    def due(self, now: float, limit: int) -> list[int]: ...

    def pop_dirty(self, limit: int) -> list[tuple[int, str]]: ...

    def forget_user(self, user_id: int) -> None: ...

    def lost_shards(self) -> set[int]:
        """The shards (`layout.shard_of`) whose data the store lost since last asked: every one
        on first use or after a restarted Redis, a master's share after a cluster master failed
        without a replica to take over."""
        ...

    def reset(self) -> None: ...
