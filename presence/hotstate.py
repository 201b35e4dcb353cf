"""Hot presence state: what changes every few seconds, kept out of the database.

Per user, one hash holds everything a heartbeat needs: each device's state (liveness, last
activity, sequence number), the user's slow inputs as last read from the database (the
"context": policy, preferences, manual status, calendar, Microsoft import), and the last
decision with its version. A steady heartbeat is then one read and one conditional write of
that hash, and no database query at all.

Two stores share this interface: Redis (with `REDIS_URL`, shared by every web and worker
process) and process memory (the embedded default, one process). What must survive a restart of
Redis lives in the database; after one, the hash is rebuilt from the database on first use.

Layout of the user hash (`<prefix>u:<user id>`):
    d:<device id>  device state (JSON)          q:<device id>  the device's last seq (decimal)
    ctx            slow inputs (JSON)            dec            last decision (JSON)
    ver            version of ctx/dec            loaded         "1" once devices came from the DB

Besides: `due` (sorted set of users by their decision's `valid_until`, for the expiry sweep),
`dirty` (devices whose times are due for the database copy), and `persist` (users whose device
states or decision changed in the hot store and are not yet in the database: a signal that
changes a user's status is answered and pushed at once, and written behind in batches; each
member's score is a number from the `persist:seq` counter, so the writer removes only what it
wrote and keeps a user changed again in between).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol

import hiredis
from django.conf import settings

from presence import ratelimits
from presence.engine import (
    CalendarBlockInput,
    Decision,
    DeviceInput,
    ManualInput,
    MicrosoftInput,
    PolicyInput,
    PreferencesInput,
    PresenceInputs,
)
from presence.vocabulary import ActivityValue, NetworkValue, Priority, Status, VisibilityValue

DEVICE_PREFIX = "d:"
SEQ_PREFIX = "q:"
SEEN_PREFIX = "s:"
FLUSHED_PREFIX = "f:"
# Every field a device has in the user hash. The times have fields of their own so that a
# heartbeat writes them as the exact strings Python made, never re-encoded by the script.
DEVICE_FIELD_PREFIXES = (DEVICE_PREFIX, SEQ_PREFIX, SEEN_PREFIX, FLUSHED_PREFIX)


def to_epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def from_epoch(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


# --- What is stored -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HotDevice:
    """A device's state as the hot path keeps it (times as epoch seconds)."""

    device_id: str
    last_seen: float
    last_active: float | None
    activity: str = ActivityValue.ACTIVE
    visibility: str = VisibilityValue.VISIBLE
    in_call: bool = False
    in_meeting: bool = False
    network: str = NetworkValue.ONLINE
    seq: int = -1
    label: str = ""
    # When last_seen/last_active were last written to the database (for the admin).
    flushed_at: float = 0.0

    def encode(self) -> str:
        """The state a heartbeat does not change (the key and the other fields carry the rest)."""
        return json.dumps(
            [self.last_active, self.activity, self.visibility, self.in_call, self.in_meeting, self.network, self.label],
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, device_id: str, raw: dict[str, str]) -> HotDevice:
        last_active, activity, visibility, in_call, in_meeting, network, label = json.loads(
            raw[DEVICE_PREFIX + device_id]
        )
        return cls(
            device_id=device_id,
            last_seen=float(raw[SEEN_PREFIX + device_id]),
            last_active=last_active,
            activity=activity,
            visibility=visibility,
            in_call=in_call,
            in_meeting=in_meeting,
            network=network,
            seq=int(raw.get(SEQ_PREFIX + device_id, -1)),
            label=label,
            flushed_at=float(raw.get(FLUSHED_PREFIX + device_id, 0.0)),
        )

    def persistent_state(self) -> tuple[object, ...]:
        """What the database keeps of a device besides timestamps: a change here is written at once."""
        return (self.activity, self.visibility, self.in_call, self.in_meeting, self.network)

    def engine_input(self) -> DeviceInput:
        return DeviceInput(
            device_id=self.device_id,
            label=self.label,
            last_seen=from_epoch(self.last_seen),
            last_active=from_epoch(self.last_active),
            activity=ActivityValue(self.activity),
            visibility=VisibilityValue(self.visibility),
            in_call=self.in_call,
            in_meeting=self.in_meeting,
            network=NetworkValue(self.network),
        )

    def with_changes(self, **changes: object) -> HotDevice:
        return replace(self, **changes)


def settings_fingerprint() -> list[int]:
    """The server settings a context was built under: a context from before a change of them
    (a restart with other timeouts) is not used, but rebuilt."""
    return [
        settings.PRESENCE_DEVICE_TIMEOUT_SECONDS,
        settings.PRESENCE_IDLE_TIMEOUT_SECONDS,
        settings.PRESENCE_MICROSOFT_MAX_AGE_SECONDS,
    ]


def encode_context(inputs: PresenceInputs, organization_id: int | None) -> str:
    """The slow inputs of `inputs` (everything but devices), as stored in the hot hash."""
    policy, preferences = inputs.policy, inputs.preferences
    manual, microsoft = inputs.manual, inputs.microsoft
    return json.dumps(
        {
            "cfg": settings_fingerprint(),
            "org": organization_id,
            "policy": [
                policy.device_timeout.total_seconds(),
                policy.idle_timeout.total_seconds(),
                policy.microsoft_max_age.total_seconds(),
                policy.allow_calendar,
                policy.allow_microsoft,
                policy.default_priority.value,
            ],
            "prefs": [preferences.use_calendar_busy, preferences.include_microsoft_presence, preferences.priority],
            "manual": [manual.status.value, manual.message, to_epoch(manual.until), to_epoch(manual.set_at)]
            if manual
            else None,
            "cal": [[b.start.timestamp(), b.end.timestamp()] for b in inputs.calendar],
            "ms": [microsoft.availability, microsoft.activity, microsoft.observed_at.timestamp(), microsoft.echo]
            if microsoft
            else None,
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True, slots=True)
class HotContext:
    organization_id: int | None
    inputs: PresenceInputs  # without devices
    current: bool  # built under the settings in force now

    @classmethod
    def decode(cls, text: str) -> HotContext:
        data = json.loads(text)
        timeout, idle, ms_age, allow_cal, allow_ms, default_priority = data["policy"]
        use_cal, include_ms, priority = data["prefs"]
        manual = data["manual"]
        microsoft = data["ms"]
        inputs = PresenceInputs(
            policy=PolicyInput(
                device_timeout=timedelta(seconds=timeout),
                idle_timeout=timedelta(seconds=idle),
                microsoft_max_age=timedelta(seconds=ms_age),
                allow_calendar=allow_cal,
                allow_microsoft=allow_ms,
                default_priority=Priority(default_priority),
            ),
            preferences=PreferencesInput(use_cal, include_ms, Priority(priority) if priority else None),
            manual=ManualInput(Status(manual[0]), manual[1], from_epoch(manual[2]), from_epoch(manual[3]))
            if manual
            else None,
            calendar=tuple(CalendarBlockInput(from_epoch(s), from_epoch(e)) for s, e in data["cal"]),
            # A context stored before imports carried `echo` has three items: no echo.
            microsoft=MicrosoftInput(
                microsoft[0], microsoft[1], from_epoch(microsoft[2]), len(microsoft) > 3 and microsoft[3]
            )
            if microsoft
            else None,
        )
        return cls(organization_id=data["org"], inputs=inputs, current=data.get("cfg") == settings_fingerprint())

    def with_devices(self, devices: list[HotDevice]) -> PresenceInputs:
        return replace(self.inputs, devices=tuple(d.engine_input() for d in devices))


@dataclass(frozen=True, slots=True)
class HotDecision:
    status: str
    activity: str
    status_msg: str | None
    last_active: float | None
    currently_active: bool
    reason: str
    valid_until: float | None

    @classmethod
    def of(cls, decision: Decision) -> HotDecision:
        return cls(
            status=decision.status.value,
            activity=decision.activity.value,
            status_msg=decision.status_msg,
            last_active=to_epoch(decision.last_active),
            currently_active=decision.currently_active,
            reason=decision.reason.value,
            valid_until=to_epoch(decision.valid_until),
        )

    def encode(self) -> str:
        # A JSON object (the heartbeat script reads `valid_until`); built by hand, as `asdict`
        # deep-copies and costs more than the rest of the encoding.
        return json.dumps(
            {
                "status": self.status,
                "activity": self.activity,
                "status_msg": self.status_msg,
                "last_active": self.last_active,
                "currently_active": self.currently_active,
                "reason": self.reason,
                "valid_until": self.valid_until,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> HotDecision:
        return cls(**json.loads(text))

    def visible_fields(self) -> tuple[object, ...]:
        return (self.status, self.activity, self.status_msg, self.currently_active)

    def is_stale(self, now: float) -> bool:
        return self.valid_until is not None and self.valid_until <= now


@dataclass(frozen=True, slots=True)
class HotUser:
    """One user's hot hash, parsed."""

    version: int
    loaded: bool
    devices: dict[str, HotDevice]
    context: str | None
    decision: HotDecision | None

    @classmethod
    def parse(cls, raw: dict[str, str]) -> HotUser:
        devices = {}
        for field in raw:
            if field.startswith(DEVICE_PREFIX):
                device_id = field[len(DEVICE_PREFIX) :]
                devices[device_id] = HotDevice.decode(device_id, raw)
        decision = raw.get("dec")
        return cls(
            version=int(raw.get("ver", -1)),
            loaded=raw.get("loaded") == "1",
            devices=devices,
            context=raw.get("ctx"),
            decision=HotDecision.decode(decision) if decision else None,
        )

    @property
    def ready(self) -> bool:
        """Everything a heartbeat needs is here (else it takes the slow path, which rebuilds it)."""
        return self.loaded and self.context is not None and self.decision is not None


def device_fields(device: HotDevice) -> dict[str, str]:
    device_id = device.device_id
    return {
        DEVICE_PREFIX + device_id: device.encode(),
        SEQ_PREFIX + device_id: str(device.seq),
        SEEN_PREFIX + device_id: repr(device.last_seen),
        FLUSHED_PREFIX + device_id: repr(device.flushed_at),
    }


# --- The stores -----------------------------------------------------------------------------


class HotStore(Protocol):
    """Every write that touches a user's decision is a compare-and-set on the user's version and
    moves it on by one, so a writer that read before another wrote must read again: no decision
    computed from older inputs can replace one computed from newer ones."""

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

    def commit_steady(
        self,
        user_id: int,
        device: HotDevice,
        expected_version: int,
        expected_seq: int,
        decision: str,
        due: float | None,
        mark_dirty: bool,
        persist: bool = False,
        history_entry: str | None = None,
        announcement: tuple[str, bytes] | None = None,
    ) -> bool:
        """Write a signal's device and the decision it leaves, if neither the user's version nor
        the device's seq moved since they were read (else the caller reads again). `persist`
        marks the user for the database writer; `history_entry` is appended to the history
        buffer in the same step, and `announcement` (channel, payload) published (the Redis store
        only, see `presence.history` and `presence.events.announcement`)."""
        ...

    def pending_persist(self, limit: int) -> list[tuple[int, int]]:
        """Users marked for the database writer before this call, oldest mark first, as
        (user id, mark); at most `limit`."""
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

    def due(self, now: float, limit: int) -> list[int]: ...

    def pop_dirty(self, limit: int) -> list[tuple[int, str]]: ...

    def forget_user(self, user_id: int) -> None: ...

    def check_epoch(self) -> bool:
        """True when the store lost its data since last asked (a restarted Redis)."""
        ...

    def reset(self) -> None: ...


@dataclass(frozen=True, slots=True)
class UserCommit:
    user_id: int
    expected_version: int | None  # None: write whatever the version is now
    fields: dict[str, str]
    due: float | None
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    applied: bool  # False: its seq was not newer, it was ignored
    decision: HotDecision


# A heartbeat only proves a device is still there: on a device that is live, it changes no
# decision (a device's liveness is all it moves, and the decision's `valid_until` already falls at
# or before the old expiry, where the sweep recomputes quietly). Anything else is left to Python.
_HEARTBEAT = (
    ratelimits.CHARGE_LUA
    + """
local h = KEYS[1]
local id = ARGV[1]
local now = tonumber(ARGV[3])
local limits = limit_fields(9)
local v = redis.call('HMGET', h, 'ver', 'loaded', 'ctx', 'dec', 'd:' .. id, 'q:' .. id, 's:' .. id, 'f:' .. id,
  unpack(limits))
local counted = {}
for i = 1, #limits do counted[i] = v[8 + i] end
local updates, refused = charge(counted, now, 9, v[5] ~= false)
if refused then return {3, refused[1], refused[2]} end
if #updates > 0 then redis.call('HSET', h, unpack(updates)) end
local ver, loaded, ctx, dec, dev, seq, seen, flushed = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
if not ver or loaded ~= '1' or not ctx or not dec or not dev or not seq or not seen then return {0} end
local function newer(a, b)  -- decimal strings of non-negative integers; b may be '-1'
  if b == '-1' then return true end
  if #a ~= #b then return #a > #b end
  return a > b
end
if not newer(ARGV[2], seq) then return {2, dec} end
local decision = cjson.decode(dec)
if decision.valid_until ~= cjson.null and decision.valid_until <= now then return {0} end
local context = cjson.decode(ctx)
local cfg = context.cfg
if not cfg or cfg[1] ~= tonumber(ARGV[6]) or cfg[2] ~= tonumber(ARGV[7]) or cfg[3] ~= tonumber(ARGV[8]) then
  return {0}
end
-- the device's state: [last_active, activity, visibility, in_call, in_meeting, network, label]
if cjson.decode(dev)[6] ~= 'online' or tonumber(seen) + context.policy[1] <= now then return {0} end
redis.call('HSET', h, 's:' .. id, ARGV[3], 'q:' .. id, ARGV[2], 'ver', ver + 1)
if now - tonumber(flushed or '0') >= tonumber(ARGV[4]) then
  redis.call('HSET', h, 'f:' .. id, ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[5] .. ':' .. id)
end
return {1, dec}
"""
)

_COMMIT_STEADY = """
if (redis.call('HGET', KEYS[1], 'ver') or '-1') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'q:' .. ARGV[3]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'd:' .. ARGV[3], ARGV[4], 'q:' .. ARGV[3], ARGV[5], 'dec', ARGV[6], 'ver', ARGV[1] + 1,
  's:' .. ARGV[3], ARGV[10], 'f:' .. ARGV[3], ARGV[11])
if ARGV[7] == '' then redis.call('ZREM', KEYS[2], ARGV[8]) else redis.call('ZADD', KEYS[2], ARGV[7], ARGV[8]) end
if ARGV[9] ~= '' then redis.call('SADD', KEYS[3], ARGV[9]) end
if ARGV[12] ~= '' then redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[5]), ARGV[8]) end
if ARGV[13] ~= '' then redis.call('RPUSH', KEYS[6], ARGV[13]) end
if ARGV[14] ~= '' then redis.call('PUBLISH', ARGV[14], ARGV[15]) end
return 1
"""

# A signal request's first read of the user's hash, counted against its rate limits in the same
# step (ARGV: now, the device id, the limits): {1, the hash's fields and values} or, refused,
# {0, milliseconds to wait, binding limit}.
_READ_CHARGED = (
    ratelimits.CHARGE_LUA
    + """
local limits = limit_fields(3)
local v = redis.call('HMGET', KEYS[1], 'd:' .. ARGV[2], unpack(limits))
local counted = {}
for i = 1, #limits do counted[i] = v[1 + i] end
local updates, refused = charge(counted, tonumber(ARGV[1]), 3, v[1] ~= false)
if refused then return {0, refused[1], refused[2]} end
if #updates > 0 then redis.call('HSET', KEYS[1], unpack(updates)) end
return {1, redis.call('HGETALL', KEYS[1])}
"""
)

_CHARGE = (
    ratelimits.CHARGE_LUA
    + """
local limits = limit_fields(2)
local updates, refused = charge(redis.call('HMGET', KEYS[1], unpack(limits)), tonumber(ARGV[1]), 2, true)
if refused then return refused end
redis.call('HSET', KEYS[1], unpack(updates))
return 0
"""
)

_PENDING_PERSIST = """
local upto = redis.call('GET', KEYS[2])
if not upto then return {} end
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', upto, 'WITHSCORES', 'LIMIT', 0, ARGV[1])
"""

_CLEAR_PERSISTED = """
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return 1
"""

_COMMIT_DEVICE = """
if ARGV[1] ~= '*' then
  local seq = redis.call('HGET', KEYS[1], 'q:' .. ARGV[2])
  if (seq or '') ~= ARGV[1] then return 0 end
end
redis.call('HSET', KEYS[1], 'd:' .. ARGV[2], ARGV[3], 'q:' .. ARGV[2], ARGV[4], 's:' .. ARGV[2], ARGV[5],
  'f:' .. ARGV[2], ARGV[6])
return 1
"""

_COMMIT_USER = """
local current = redis.call('HGET', KEYS[1], 'ver') or '-1'
if ARGV[1] ~= '*' and current ~= ARGV[1] then return 0 end
local nset = tonumber(ARGV[4])
local args = {'ver', tonumber(current) + 1}
for i = 5, 4 + 2 * nset do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
for i = 5 + 2 * nset, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
if ARGV[2] == '' then redis.call('ZREM', KEYS[2], ARGV[3]) else redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""


def heartbeat_args(user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]) -> list[str]:
    """Arguments of the heartbeat script, shared with the websocket's asynchronous client."""
    return [
        device_id,
        str(seq),
        repr(now),
        str(settings.PRESENCE_DEVICE_FLUSH_SECONDS),
        str(user_id),
        *(str(value) for value in settings_fingerprint()),
        *ratelimits.script_args(limits),
    ]


def _heartbeat_result(result: list, limits: Sequence[ratelimits.Limit]) -> Heartbeat | None:
    if result[0] == 3:
        raise ratelimits.refused(limits, result[1], result[2])
    if result[0] == 0:
        return None
    return Heartbeat(applied=result[0] == 1, decision=HotDecision.decode(result[1]))


def _score(due: float | None) -> str:
    return "" if due is None else repr(due)


class RedisHotStore:
    def __init__(self, url: str, prefix: str = "sparks:presence:") -> None:
        import redis

        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.prefix = prefix
        self.due_key = prefix + "due"
        self.dirty_key = prefix + "dirty"
        self.epoch_key = prefix + "epoch"
        self.persist_key = prefix + "persist"
        self.persist_seq_key = prefix + "persist:seq"
        self.history_key = prefix + "history"  # the history's buffer (`presence.history`)
        self._read_charged = self.client.register_script(_READ_CHARGED)
        self._charge = self.client.register_script(_CHARGE)
        self._pending = self.client.register_script(_PENDING_PERSIST)
        self._clear = self.client.register_script(_CLEAR_PERSISTED)
        self._steady = self.client.register_script(_COMMIT_STEADY)
        self._device = self.client.register_script(_COMMIT_DEVICE)
        self._user = self.client.register_script(_COMMIT_USER)
        self._heartbeat = self.client.register_script(_HEARTBEAT)

    def user_key(self, user_id: int) -> str:
        return f"{self.prefix}u:{user_id}"

    def read(self, user_id: int) -> dict[str, str]:
        return self.client.hgetall(self.user_key(user_id))

    def read_charged(self, user_id, device_id, limits, now) -> dict[str, str]:
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
            pipe.hget(self.user_key(user_id), "dec")
        return {uid: dec for uid, dec in zip(user_ids, pipe.execute(), strict=True) if dec}

    def commit_steady(
        self,
        user_id,
        device,
        expected_version,
        expected_seq,
        decision,
        due,
        mark_dirty,
        persist=False,
        history_entry=None,
        announcement=None,
    ) -> bool:
        args = [
            str(expected_version),
            str(expected_seq),
            device.device_id,
            device.encode(),
            str(device.seq),
            decision,
            _score(due),
            str(user_id),
            f"{user_id}:{device.device_id}" if mark_dirty else "",
            repr(device.last_seen),
            repr(device.flushed_at),
            "1" if persist else "",
            history_entry or "",
            *(announcement or ("", "")),
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

    def commit_device(self, user_id, device, expected_seq) -> bool:
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

    def heartbeat(self, user_id, device_id, seq, now, limits) -> Heartbeat | None:
        keys = [self.user_key(user_id), self.dirty_key]
        return _heartbeat_result(
            self._heartbeat(keys=keys, args=heartbeat_args(user_id, device_id, seq, now, limits)), limits
        )

    def due(self, now: float, limit: int) -> list[int]:
        return [int(uid) for uid in self.client.zrangebyscore(self.due_key, "-inf", now, start=0, num=limit)]

    def pop_dirty(self, limit: int) -> list[tuple[int, str]]:
        members = self.client.spop(self.dirty_key, limit) or []
        return [(int(uid), device_id) for uid, device_id in (m.split(":", 1) for m in members)]

    def forget_user(self, user_id: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.user_key(user_id)).zrem(self.due_key, user_id).zrem(self.persist_key, user_id).execute()

    def check_epoch(self) -> bool:
        # SET NX succeeds only when the key is missing: first use, or Redis lost its data.
        return bool(self.client.set(self.epoch_key, str(time.time()), nx=True))

    def reset(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        if keys:
            self.client.delete(*keys)


class LocalHotStore:
    """The same store in process memory, for the embedded default (a single process)."""

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

    def read_charged(self, user_id, device_id, limits, now) -> dict[str, str]:
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
            found = {uid: self._users.get(uid, {}).get("dec") for uid in user_ids}
        return {uid: dec for uid, dec in found.items() if dec}

    def _schedule(self, user_id: int, due: float | None) -> None:
        if due is None:
            self._due.pop(user_id, None)
        else:
            self._due[user_id] = due

    def commit_steady(
        self,
        user_id,
        device,
        expected_version,
        expected_seq,
        decision,
        due,
        mark_dirty,
        persist=False,
        history_entry=None,
        announcement=None,
    ) -> bool:
        if history_entry is not None:
            raise ValueError("the in-process store neither buffers history nor publishes: presence.events does")
        with self._lock:
            user = self._users.get(user_id, {})
            if user.get("ver", "-1") != str(expected_version):
                return False
            if user.get(SEQ_PREFIX + device.device_id) != str(expected_seq):
                return False
            user.update(device_fields(device))
            user["dec"] = decision
            user["ver"] = str(expected_version + 1)
            self._schedule(user_id, due)
            if mark_dirty:
                self._dirty.add((user_id, device.device_id))
            if persist:
                self._persist_seq += 1
                self._persist[user_id] = self._persist_seq
            return True

    def pending_persist(self, limit: int) -> list[tuple[int, int]]:
        with self._lock:
            return sorted(self._persist.items(), key=lambda mark: mark[1])[:limit]

    def clear_persisted(self, marks: list[tuple[int, int]]) -> None:
        with self._lock:
            for user_id, mark in marks:
                if self._persist.get(user_id) == mark:
                    del self._persist[user_id]

    def commit_device(self, user_id, device, expected_seq) -> bool:
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
                current = int(user.get("ver", "-1"))
                if commit.expected_version is not None and current != commit.expected_version:
                    results.append(False)
                    continue
                user.update(commit.fields)
                user["ver"] = str(current + 1)
                for name in commit.remove:
                    user.pop(name, None)
                self._schedule(commit.user_id, commit.due)
                results.append(True)
        return results

    def heartbeat(self, user_id, device_id, seq, now, limits) -> Heartbeat | None:
        with self._lock:
            self._charge_locked(user_id, limits, now, self._knows(user_id, device_id))
            user = self._users.get(user_id, {})
            stored_seq = user.get(SEQ_PREFIX + device_id)
            encoded, context = user.get("dec"), user.get("ctx")
            if user.get("loaded") != "1" or None in (stored_seq, encoded, context, user.get(DEVICE_PREFIX + device_id)):
                return None
            decision = HotDecision.decode(encoded)
            if seq <= int(stored_seq):
                return Heartbeat(applied=False, decision=decision)
            device = HotDevice.decode(device_id, user)
            context_data = json.loads(context)
            if (
                decision.is_stale(now)
                or context_data.get("cfg") != settings_fingerprint()
                or device.network != NetworkValue.ONLINE
                or device.last_seen + context_data["policy"][0] <= now
            ):
                return None
            flush = now - device.flushed_at >= settings.PRESENCE_DEVICE_FLUSH_SECONDS
            device = device.with_changes(last_seen=now, seq=seq, flushed_at=now if flush else device.flushed_at)
            user.update(device_fields(device))
            user["ver"] = str(int(user["ver"]) + 1)
            if flush:
                self._dirty.add((user_id, device_id))
            return Heartbeat(applied=True, decision=decision)

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

    def check_epoch(self) -> bool:
        with self._lock:
            was_reset, self._epoch = not self._epoch, True
            return was_reset


@lru_cache(maxsize=4)
def _store_for(redis_url: str) -> HotStore:
    return RedisHotStore(redis_url) if redis_url else LocalHotStore()


def store() -> HotStore:
    """The hot store of this deployment (one per process, shared across threads)."""
    return _store_for(settings.REDIS_URL)


# --- The websocket's heartbeat, on the event loop ---------------------------------------------


class _HeartbeatPipeline:
    """Heartbeats of one event loop to Redis, sent together: those that arrive while a batch is
    on its way wait for it and go out as the next one, in one write and one read.

    A heartbeat's own work is small; a Redis round trip of its own (a write and a read on the
    socket, each a system call) costs more than the rest. Under load many sockets' heartbeats
    arrive in the same turn of the loop, and each batch carries all of them at the price of one.
    A lone heartbeat goes out at once, as before.
    """

    def __init__(self, redis_url: str) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        self.sha = hashlib.sha1(_HEARTBEAT.encode()).hexdigest()
        self.waiting: list[tuple[list[str], list[str], asyncio.Future]] = []
        self.sending = False

    async def call(self, keys: list[str], args: list[str]) -> list:
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
                        await self.client.script_load(_HEARTBEAT)  # a restarted or flushed Redis
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


# Per event loop, one pipeline per Redis URL: an asyncio client's connections belong to the loop
# that opened them. A server has one loop per process; the tests open one per scenario, so each
# loop's clients are closed with it.
_async_heartbeats: dict[asyncio.AbstractEventLoop, dict[str, _HeartbeatPipeline]] = {}


def _heartbeat_pipeline(redis_url: str) -> _HeartbeatPipeline:
    loop = asyncio.get_running_loop()
    pipelines = _async_heartbeats.get(loop)
    if pipelines is None:
        pipelines = _async_heartbeats[loop] = {}
        _close_with_loop(loop)
    pipeline = pipelines.get(redis_url)
    if pipeline is None:
        pipeline = pipelines[redis_url] = _HeartbeatPipeline(redis_url)
    return pipeline


def _close_with_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close the loop's clients when the loop closes (as channels_redis does with its own)."""
    original = loop.close

    def close(self: asyncio.AbstractEventLoop) -> None:
        for pipeline in _async_heartbeats.pop(loop, {}).values():
            loop.run_until_complete(pipeline.client.aclose())
        self.close = original
        original()

    loop.close = types.MethodType(close, loop)


async def heartbeat_async(
    user_id: int, device_id: str, seq: int, now: float, limits: Sequence[ratelimits.Limit]
) -> Heartbeat | None:
    """`HotStore.heartbeat` for code on an event loop, without handing off to a thread: the same
    script through an asyncio Redis client, pipelined with the loop's other heartbeats. The
    in-process store is memory behind a lock held for microseconds, so it is called directly."""
    hot = store()
    if not isinstance(hot, RedisHotStore):
        return hot.heartbeat(user_id, device_id, seq, now, limits)
    keys = [hot.user_key(user_id), hot.dirty_key]
    args = heartbeat_args(user_id, device_id, seq, now, limits)
    return _heartbeat_result(await _heartbeat_pipeline(settings.REDIS_URL).call(keys, args), limits)
