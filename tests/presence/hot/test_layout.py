"""The hot store's layout is defined once (`presence.hot.layout`), and the Lua scripts and the
Python code read the same names from it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import redis
from django.conf import settings

from presence import hot
from presence.engine import PresenceInputs
from presence.hot import layout, scripts


def test_every_placeholder_of_every_script_is_filled():
    values = scripts.values()
    assert scripts.names(), "no scripts found"
    for name in scripts.names():
        wanted = set(scripts.PLACEHOLDER.findall(scripts.template(name)))
        assert wanted <= set(values), f"{name}.lua: no value for {wanted - set(values)}"
        assert not scripts.PLACEHOLDER.search(scripts.lua_source(name))
        assert "{{" not in scripts.lua_source(name)


def test_every_name_the_layout_gives_the_scripts_is_used():
    used = {found for name in scripts.names() for found in scripts.PLACEHOLDER.findall(scripts.template(name))}

    assert set(layout.LUA_NAMES) <= used


def test_a_placeholder_without_a_value_is_refused():
    with pytest.raises(KeyError, match="NO_SUCH_NAME"):
        scripts.render("redis.call('HGET', KEYS[1], '{{NO_SUCH_NAME}}')", scripts.values())


def test_a_name_that_cannot_stand_inside_a_lua_string_is_refused(monkeypatch):
    monkeypatch.setitem(layout.LUA_NAMES, "FIELD_VERSION", "ver' .. redis.call('FLUSHALL') .. '")

    with pytest.raises(ValueError, match="FIELD_VERSION"):
        scripts.values()


def test_the_scripts_read_the_stored_json_by_the_layouts_names():
    """What Python writes has the names the rendered scripts read."""
    device = hot.HotDevice("dev1", last_seen=1000.0, last_active=990.0)
    state = json.loads(hot.device_fields(device)[layout.DEVICE_PREFIX + "dev1"])
    decision = hot.HotDecision("available", "available", None, 1000.0, True, "device_active", 1060.0)
    context = json.loads(hot.encode_context(PresenceInputs(), organization_id=None))
    heartbeat = scripts.lua_source("heartbeat")

    assert set(state) == {
        layout.STATE_LAST_ACTIVE,
        layout.STATE_ACTIVITY,
        layout.STATE_VISIBILITY,
        layout.STATE_IN_CALL,
        layout.STATE_IN_MEETING,
        layout.STATE_NETWORK,
        layout.STATE_LABEL,
    }
    assert state[layout.STATE_NETWORK] == layout.NETWORK_ONLINE
    assert f"['{layout.STATE_NETWORK}']" in heartbeat
    assert json.loads(decision.encode())[layout.DECISION_VALID_UNTIL] == 1060.0
    assert layout.DECISION_VALID_UNTIL in {field.name for field in dataclasses.fields(hot.HotDecision)}
    assert f"['{layout.DECISION_VALID_UNTIL}']" in heartbeat
    assert context[layout.CONTEXT_SETTINGS] == hot.settings_fingerprint()
    timeout = PresenceInputs().policy.device_timeout.total_seconds()
    assert context[layout.CONTEXT_POLICY][layout.POLICY_DEVICE_TIMEOUT] == timeout
    assert f"['{layout.CONTEXT_POLICY}']['{layout.POLICY_DEVICE_TIMEOUT}']" in heartbeat


def test_the_key_prefix_carries_the_layouts_version():
    store = hot.RedisHotStore(settings.REDIS_URL)

    assert store.prefix == layout.KEY_PREFIX
    assert store.prefix.endswith(f":v{layout.LAYOUT_VERSION}:")
    assert store.user_key(7) == f"{layout.KEY_PREFIX}{{p:07}}:u:7"
    assert store.user_key(7 + layout.SHARDS) == f"{layout.KEY_PREFIX}{{p:07}}:u:{7 + layout.SHARDS}"
    assert layout.user_key(7 + layout.SHARDS) == store.user_key(7 + layout.SHARDS)
    assert store.shard(7).epoch == layout.KEY_PREFIX + "{p:07}:" + layout.EPOCH_KEY


def test_every_key_a_script_touches_with_a_user_lies_in_the_users_cluster_slot():
    """The shard's hash tag puts the user's hash and its shard's bookkeeping in one slot."""
    from redis.crc import key_slot

    store = hot.RedisHotStore(settings.REDIS_URL)
    for user_id in (7, 1234, 10_000_019):
        shard = store.shard(user_id)
        keys = [shard.user(user_id), shard.due, shard.dirty, shard.persist, shard.persist_seq, shard.history]
        assert {key_slot(key.encode()) for key in keys} == {key_slot(store.user_key(user_id).encode())}
    assert len({key_slot(shard.due.encode()) for shard in store.shards}) > layout.SHARDS // 2  # spread


def test_a_hash_of_the_previous_layout_is_not_read():
    """After a deployment of a new layout, the old hashes (positional device states) stay unread,
    and the epoch under the new prefix is missing, so the sweep rebuilds everyone."""
    old_prefix = "test:hot:old:"
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    old = f"{old_prefix}u:7"
    client.hset(old, mapping={"ver": "3", "loaded": "1", "d:dev1": '[null,"active","visible",false,false,"online",""]'})
    client.set(f"{old_prefix}epoch", "1")
    store = hot.RedisHotStore(settings.REDIS_URL, prefix=f"{old_prefix}v{layout.LAYOUT_VERSION}:")
    try:
        assert store.read(7) == {}
        assert store.lost_shards() == set(range(layout.SHARDS))
    finally:
        store.reset()
        client.delete(old, f"{old_prefix}epoch")
