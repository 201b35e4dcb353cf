"""Hot presence state: what changes every few seconds, kept out of the database.

Per user, one hash holds everything a heartbeat needs: each device's state (liveness, last
activity, sequence number), the user's slow inputs as last read from the database (the
"context": policy, preferences, manual status, calendar, Microsoft import), and the last
decision with its version. A steady heartbeat is then one read and one conditional write of
that hash, and no database query at all.

Two stores share one interface (`HotStore`): Redis (`RedisHotStore`, with `REDIS_URL`, or a Redis
Cluster with `REDIS_CLUSTER_NODES`, shared by every web and worker process) and process memory
(`LocalHotStore`, the embedded default, one process). What must survive a restart of Redis lives
in the database; after one, the hash is rebuilt from the database on first use.

Users are spread over `layout.SHARDS` logical shards; every key of a shard carries its hash tag,
`{p:NN}`, so one script's keys lie in one Redis Cluster slot. Layout of the user hash
(`<prefix>{p:NN}:u:<user id>`; every name is defined once, in `layout`, for
the Python code and the Lua scripts in `lua/` alike):
    d:<device id>  device state (JSON object: last_active, activity, visibility, in_call,
                   in_meeting, network, label)
    q:<device id>  the device's last seq (decimal)
    s:<device id>  last seen (epoch seconds)      f:<device id>  times last written to the DB
    ctx            slow inputs (JSON object; `cfg` the settings fingerprint, `policy` an object
                   with the device timeout among others)
    dec            last decision (JSON object keyed by HotDecision's fields, `valid_until` among them)
    ver            version of ctx/dec            loaded         "1" once devices came from the DB
    rd:<device id>, ru, rc                       rate limits' state (`presence.ratelimits`)

Besides, per shard: `due` (sorted set of users by their decision's `valid_until`, for the expiry sweep),
`dirty` (devices whose times are due for the database copy), `persist` (users whose device
states or decision changed in the hot store and are not yet in the database: a signal that
changes a user's status is answered and pushed at once, and written behind in batches; each
member's score is a number from the `persist:seq` counter, so the writer removes only what it
wrote and keeps a user changed again in between), `history` (the history's buffer, drained by
`presence.history.flush` under the shard's `history:lock`) and `epoch`.

The prefix carries the layout's version (`sparks:presence:v3:`): code of another layout never
reads these keys, nor this code theirs. After a deployment that moves the version, `epoch` is
missing under the new prefix, so the first sweep's `lost_shards` rebuilds every user the database
holds as live, exactly as after a Redis restart. As after a restart, what the old keys held and
the database did not yet (users waiting in the old `persist`, entries in the old `history`) is not
carried over; the old keys themselves are left behind, unread, until Redis is restarted or they
are deleted.
"""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from presence.hot import layout
from presence.hot.layout import DEVICE_FIELD_PREFIXES
from presence.hot.local_store import LocalHotStore
from presence.hot.protocol import Heartbeat, HotStore, SteadyCommit, UserCommit
from presence.hot.records import (
    HotContext,
    HotDecision,
    HotDevice,
    HotUser,
    device_fields,
    encode_context,
    from_epoch,
    settings_fingerprint,
    to_epoch,
)
from presence.hot.redis_store import RedisHotStore, heartbeat_args

__all__ = [
    "DEVICE_FIELD_PREFIXES",
    "Heartbeat",
    "HotContext",
    "HotDecision",
    "HotDevice",
    "HotStore",
    "HotUser",
    "LocalHotStore",
    "RedisHotStore",
    "SteadyCommit",
    "UserCommit",
    "device_fields",
    "encode_context",
    "from_epoch",
    "heartbeat_args",
    "layout",
    "settings_fingerprint",
    "store",
    "to_epoch",
]


@lru_cache(maxsize=4)
def _store_for(redis_url: str, cluster_nodes: tuple[str, ...]) -> HotStore:
    if cluster_nodes:
        return RedisHotStore(cluster_nodes=cluster_nodes)
    return RedisHotStore(redis_url) if redis_url else LocalHotStore()


def store() -> HotStore:
    """The hot store of this deployment (one per process, shared across threads): the Redis
    Cluster's when `REDIS_CLUSTER_NODES` names one, else `REDIS_URL`'s, else process memory."""
    return _store_for(settings.REDIS_URL, tuple(settings.REDIS_CLUSTER_NODES))
