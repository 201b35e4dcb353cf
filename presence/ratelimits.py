"""Rate limits: how often a device may send signals, and a user change their inputs.

Three limits, each `count` requests per `period`, from the environment (`PRESENCE_RATE_LIMIT_*`,
see `.env.example`):
- a device's signals (a REST request or a websocket message is one, whatever its batch size),
- all signals of one user's devices together (a user cannot multiply the first by adding devices),
- changes of a user's inputs: manual status, calendar, presence settings, devices signed in or out.

Each limit is a generic cell rate algorithm (GCRA): per limited thing one number, the time its
next request is due at the sustained rate (`count / period`). A request is let through while that
time is at most `period - interval` ahead of now, so a client that was quiet may send a burst of
`count` at once; a refused request is not counted, so a flooding client gets exactly the rate.

The state is a few fields of the user's hot hash (Redis, shared by every process, or process
memory for the embedded default), checked inside the hot store's own step for a signal: a
heartbeat costs no round trip more than without limits (`presence.hot`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

DEVICE_SCOPE = "device"
USER_SCOPE = "user"
CHANGES_SCOPE = "changes"
# The fields of the limits in the user's hot hash (`presence.hot`): "rd:<device id>", "ru"
# (signals of all devices), "rc" (changes). None is a prefix of the presence state's fields.
DEVICE_LIMIT_PREFIX = "rd:"

_DETAILS = {
    DEVICE_SCOPE: "Too many signals from this device",
    USER_SCOPE: "Too many signals from this user's devices",
    CHANGES_SCOPE: "Too many changes of this user's status and settings",
}


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit applied to one thing: its field in the user's rate state and the schedule."""

    scope: str
    field: str  # in the user's hot hash
    interval: float  # seconds between two requests at the sustained rate
    burst_window: float  # how far ahead of now the schedule may run before a request is refused


class RateLimited(Exception):
    """A request over one of its limits; nothing of it was applied."""

    def __init__(self, scope: str, wait_seconds: float) -> None:
        super().__init__(f"{_DETAILS[scope]}; retry in {math.ceil(wait_seconds)} s.")
        self.scope = scope
        self.wait_seconds = wait_seconds

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait, as `Retry-After` says it (at least 1)."""
        return max(1, math.ceil(self.wait_seconds))

    @property
    def detail(self) -> str:
        return f"{_DETAILS[self.scope]}; retry in {self.retry_after} s."


def _limit(scope: str, field: str, rate: tuple[int, float] | None) -> tuple[Limit, ...]:
    if rate is None:
        return ()
    count, period = rate
    interval = period / count
    return (Limit(scope, field, interval, period - interval),)


def signal_limits(device_id: str) -> tuple[Limit, ...]:
    """The limits a signal request of `device_id` counts against (none when switched off)."""
    return _signal_limits(device_id, settings.PRESENCE_RATE_LIMIT_DEVICE, settings.PRESENCE_RATE_LIMIT_USER)


# Built once per device and settings: a heartbeat's own work is a few microseconds.
@lru_cache(maxsize=16384)
def _signal_limits(
    device_id: str, device_rate: tuple[int, float] | None, user_rate: tuple[int, float] | None
) -> tuple[Limit, ...]:
    return (
        *_limit(DEVICE_SCOPE, DEVICE_LIMIT_PREFIX + device_id, device_rate),
        *_limit(USER_SCOPE, "ru", user_rate),
    )


def change_limits() -> tuple[Limit, ...]:
    """The limits a change of a user's inputs counts against."""
    return _limit(CHANGES_SCOPE, "rc", settings.PRESENCE_RATE_LIMIT_STATUS)


def wait_for(due: list[float | None], limits: Sequence[Limit], now: float) -> tuple[float, int]:
    """(seconds to wait, index of the limit that says so) for a request at `now`, given when each
    limit's next request is due (None: never seen); (0, -1) when every limit lets it through."""
    wait, binding = 0.0, -1
    for index, (next_due, limit) in enumerate(zip(due, limits, strict=True)):
        ahead = max(next_due or now, now) - now
        if ahead - limit.burst_window > wait:
            wait, binding = ahead - limit.burst_window, index
    return wait, binding


def next_due(due: float | None, limit: Limit, now: float) -> float:
    """When the limit's next request is due once this one is let through."""
    return max(due or now, now) + limit.interval


def script_args(limits: Sequence[Limit]) -> tuple[str, ...]:
    """The limits as arguments of `CHARGE_LUA`'s `charge`: field, interval, burst window each."""
    return _script_args(tuple(limits))


@lru_cache(maxsize=16384)
def _script_args(limits: tuple[Limit, ...]) -> tuple[str, ...]:
    return tuple(value for limit in limits for value in (limit.field, repr(limit.interval), repr(limit.burst_window)))


# The same algorithm as `wait_for` and `next_due`, inside the hot store's Redis scripts, on
# fields of the user's own hash (read and written with the rest of the script's work, so a limit
# costs a heartbeat no command of its own). `limit_fields(first)` names the fields of the limits
# at ARGV[first..] (as `script_args` wrote them); `charge(stored, now, first, known)` takes their
# values as read and answers the HSET arguments that count the request, or nil and {milliseconds
# to wait, 1-based index of the binding limit}. A device's limit counts only for a device the
# hash knows (`known`): requests for made-up device ids leave no field behind.
CHARGE_LUA = (
    f"local DEVICE_LIMIT_PREFIX = '{DEVICE_LIMIT_PREFIX}'\n"
    + """
local function limit_fields(first)
  local fields = {}
  for i = first, #ARGV, 3 do fields[#fields + 1] = ARGV[i] end
  return fields
end

local function charge(stored, now, first, known)
  local wait, binding, updates = 0, 0, {}
  for i = 1, (#ARGV - first + 1) / 3 do
    local a = first + 3 * (i - 1)
    if known or string.sub(ARGV[a], 1, #DEVICE_LIMIT_PREFIX) ~= DEVICE_LIMIT_PREFIX then
      local at = tonumber(stored[i]) or now
      if at < now then at = now end
      local ahead = at - now - tonumber(ARGV[a + 2])
      if ahead > wait then wait, binding = ahead, i end
      updates[#updates + 1] = ARGV[a]
      updates[#updates + 1] = string.format('%.6f', at + tonumber(ARGV[a + 1]))
    end
  end
  if binding > 0 then return nil, {math.ceil(wait * 1000), binding} end
  return updates, nil
end
"""
)


def refused(limits: Sequence[Limit], wait_ms: int, binding: int) -> RateLimited:
    """The `RateLimited` for a script's refusal (`binding` 1-based, as Lua counts)."""
    return RateLimited(limits[binding - 1].scope, wait_ms / 1000)
