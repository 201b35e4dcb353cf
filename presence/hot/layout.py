"""The hot store's data layout: the one definition of its keys, the user hash's fields and the
names inside the JSON values that both Python and the Lua scripts read.

Python uses these constants; the scripts in `lua/` name the same things with `{{NAME}}`
placeholders, filled from `LUA_NAMES` when the scripts are loaded (`presence.hot.scripts`). A
name changed here is thus changed on both sides at once, and a changed format of what is stored
moves `LAYOUT_VERSION` on (see the package's docstring: stored state of another layout is never
read, but rebuilt from the database).
"""

from __future__ import annotations

from presence.vocabulary import NetworkValue

# The version of everything below. It is part of every key, so hashes written by code of another
# layout are never read (and a deployment's first sweep rebuilds the hot state, see `presence.hot`).
LAYOUT_VERSION = 3
KEY_PREFIX = f"sparks:presence:v{LAYOUT_VERSION}:"

# --- Shards -------------------------------------------------------------------------------------

# Users are spread over a fixed number of logical shards (`shard_of`). Every key of a shard carries
# the shard's hash tag (`{p:07}`), so a user's hash and the bookkeeping a script touches with it
# (due, dirty, persist, history) lie in one Redis Cluster hash slot, and one Lua step may touch
# them all. On a single Redis the tags change nothing but the key names. The count bounds how many
# cluster masters the hot state can use (one shard is never split), so it is generous: moving it
# moves the layout's version.
SHARDS = 64


def shard_of(user_id: int) -> int:
    """The logical shard of a user's hot state."""
    return user_id % SHARDS


def shard_tag(shard: int) -> str:
    """The shard's hash tag: Redis Cluster hashes only what stands between the braces."""
    return f"{{p:{shard:02d}}}:"


# --- Keys under the prefix and a shard's tag ----------------------------------------------------


def user_key(user_id: int, prefix: str = KEY_PREFIX) -> str:
    """The key of a user's hash (`RedisHotStore.user_key`)."""
    return f"{prefix}{shard_tag(shard_of(user_id))}{USER_KEY_PREFIX}{user_id}"


USER_KEY_PREFIX = "u:"  # + user id: the user's hash (`user_key`)
DUE_KEY = "due"  # sorted set: the shard's users by their decision's valid_until
DIRTY_KEY = "dirty"  # set of "<user id>:<device id>": device times due for the database copy
EPOCH_KEY = "epoch"  # set once per shard; missing after its Redis lost its data (or a layout change)
PERSIST_KEY = "persist"  # sorted set: users to write to the database, scored by PERSIST_SEQ_KEY
PERSIST_SEQ_KEY = "persist:seq"
HISTORY_KEY = "history"  # list: the shard's part of the history's buffer (`presence.history`)
HISTORY_LOCK_KEY = "history:lock"  # one key (no shard's): held by the one process draining the buffers

# --- Fields of the user hash ----------------------------------------------------------------------

FIELD_VERSION = "ver"  # version of ctx/dec, moved on by every write that may change the decision
FIELD_LOADED = "loaded"  # "1" once the devices came from the database
FIELD_CONTEXT = "ctx"  # the slow inputs (JSON, `records.encode_context`)
FIELD_DECISION = "dec"  # the last decision (JSON, `records.HotDecision`)
LOADED = "1"

# Per device, four fields: its state (JSON, below), its last seq (decimal), when it was last seen
# and when its times were last written to the database (epoch seconds, as Python's repr wrote
# them). The times have fields of their own so that a heartbeat writes them as the exact strings
# Python made, never re-encoded by the script.
DEVICE_PREFIX = "d:"
SEQ_PREFIX = "q:"
SEEN_PREFIX = "s:"
FLUSHED_PREFIX = "f:"
DEVICE_FIELD_PREFIXES = (DEVICE_PREFIX, SEQ_PREFIX, SEEN_PREFIX, FLUSHED_PREFIX)

# --- Inside the JSON values ---------------------------------------------------------------------

# The device's state (`d:<device id>`): an object with these keys, HotDevice's fields of the same
# names; the heartbeat script reads the network.
STATE_LAST_ACTIVE = "last_active"
STATE_ACTIVITY = "activity"
STATE_VISIBILITY = "visibility"
STATE_IN_CALL = "in_call"
STATE_IN_MEETING = "in_meeting"
STATE_NETWORK = "network"
STATE_LABEL = "label"
NETWORK_ONLINE = NetworkValue.ONLINE.value

# The decision (`dec`): an object keyed by HotDecision's field names; the scripts read this one.
DECISION_VALID_UNTIL = "valid_until"

# The context (`ctx`): the keys the heartbeat script reads. `cfg` is `settings_fingerprint()`,
# compared with the heartbeat's arguments; the policy is an object whose device timeout decides
# whether the device is still live.
CONTEXT_SETTINGS = "cfg"
CONTEXT_POLICY = "policy"
POLICY_DEVICE_TIMEOUT = "device_timeout"

# What the scripts' `{{NAME}}` placeholders stand for. Each value lands inside a Lua string
# literal, so it must be plain (`scripts` refuses one with quotes or backslashes).
LUA_NAMES: dict[str, str] = {
    "FIELD_VERSION": FIELD_VERSION,
    "FIELD_LOADED": FIELD_LOADED,
    "FIELD_CONTEXT": FIELD_CONTEXT,
    "FIELD_DECISION": FIELD_DECISION,
    "LOADED": LOADED,
    "DEVICE_PREFIX": DEVICE_PREFIX,
    "SEQ_PREFIX": SEQ_PREFIX,
    "SEEN_PREFIX": SEEN_PREFIX,
    "FLUSHED_PREFIX": FLUSHED_PREFIX,
    "STATE_NETWORK": STATE_NETWORK,
    "NETWORK_ONLINE": NETWORK_ONLINE,
    "DECISION_VALID_UNTIL": DECISION_VALID_UNTIL,
    "CONTEXT_SETTINGS": CONTEXT_SETTINGS,
    "CONTEXT_POLICY": CONTEXT_POLICY,
    "POLICY_DEVICE_TIMEOUT": POLICY_DEVICE_TIMEOUT,
}
