"""The two hot stores, Redis and process memory, keep the same promises."""

from __future__ import annotations

import pytest
from django.conf import settings

from presence.hotstate import HotDecision, HotDevice, HotUser, LocalHotStore, RedisHotStore


@pytest.fixture(params=["redis", "memory"])
def store(request):
    hot = RedisHotStore(settings.REDIS_URL, prefix="test:hotstate:") if request.param == "redis" else LocalHotStore()
    hot.reset()
    yield hot
    hot.reset()


def device(seq: int, last_seen: float = 1000.0, **changes) -> HotDevice:
    return HotDevice(device_id="dev1", last_seen=last_seen, last_active=last_seen, seq=seq, **changes)


DECISION = HotDecision("available", "available", None, 1000.0, True, "device_active", 1060.0)


def prime(store, version: int = 0) -> None:
    store.commit_user(7, version, {"loaded": "1", "ctx": "{}", "dec": DECISION.encode()}, [], 1060.0)
    store.commit_device(7, device(seq=1), None)


def test_a_user_is_read_back_as_written(store):
    prime(store)

    user = HotUser.parse(store.read(7))

    assert user.version == 0
    assert user.ready
    assert user.devices["dev1"] == device(seq=1)
    assert user.decision == DECISION


def test_a_steady_commit_lands_when_nothing_moved(store):
    prime(store)

    assert store.commit_steady(7, device(seq=2, last_seen=1030.0), 0, 1, DECISION.encode(), 1090.0, True)

    assert HotUser.parse(store.read(7)).devices["dev1"].seq == 2
    assert store.due(1089.0, 10) == []
    assert store.due(1090.0, 10) == [7]
    assert store.pop_dirty(10) == [(7, "dev1")]
    assert store.pop_dirty(10) == []


def test_a_steady_commit_is_refused_after_a_recompute(store):
    prime(store)
    store.commit_user(7, 1, {"dec": DECISION.encode()}, [], 1060.0)

    assert not store.commit_steady(7, device(seq=2), 0, 1, DECISION.encode(), 1090.0, False)
    assert HotUser.parse(store.read(7)).devices["dev1"].seq == 1


def test_a_steady_commit_is_refused_when_the_device_moved_on(store):
    prime(store)
    store.commit_device(7, device(seq=5), 1)

    assert not store.commit_steady(7, device(seq=2), 0, 1, DECISION.encode(), 1090.0, False)
    assert HotUser.parse(store.read(7)).devices["dev1"].seq == 5


def test_a_device_commit_compares_its_seq(store):
    assert store.commit_device(7, device(seq=3), -1)  # no seq yet
    assert not store.commit_device(7, device(seq=4), 2)
    assert store.commit_device(7, device(seq=4), 3)
    assert store.commit_device(7, device(seq=0), None)  # a new session: whatever was there
    assert HotUser.parse(store.read(7)).devices["dev1"].seq == 0


def test_only_a_newer_version_of_a_user_is_stored(store):
    prime(store, version=3)

    assert not store.commit_user(7, 3, {"ctx": "older"}, [], None)
    assert store.commit_user(7, 4, {"ctx": "newer"}, ["d:dev1", "q:dev1"], None)

    user = HotUser.parse(store.read(7))
    assert (user.version, user.context, user.devices) == (4, "newer", {})
    assert store.due(float("inf"), 10) == []


def test_due_users_come_in_order_up_to_the_limit(store):
    for user_id, due in ((1, 30.0), (2, 10.0), (3, 20.0), (4, 99.0)):
        store.commit_user(user_id, 0, {}, [], due)

    assert store.due(50.0, 2) == [2, 3]
    assert store.due(50.0, 10) == [2, 3, 1]


def test_a_forgotten_user_is_gone_and_unscheduled(store):
    prime(store)

    store.forget_user(7)

    assert store.read(7) == {}
    assert store.due(float("inf"), 10) == []


def test_the_store_says_once_that_it_lost_its_data(store):
    assert store.check_epoch()
    assert not store.check_epoch()

    store.reset()

    assert store.check_epoch()


def test_decisions_of_many_users_are_read_at_once(store):
    prime(store)

    assert store.read_decisions([7, 8]) == {7: DECISION.encode()}
