"""The two hot stores, Redis and process memory, keep the same promises."""

from __future__ import annotations

from dataclasses import replace

import pytest
from django.conf import settings

from presence.hot import HotDecision, HotDevice, HotUser, LocalHotStore, RedisHotStore, SteadyCommit, UserCommit
from presence.hot.layout import SHARDS, shard_of
from presence.ratelimits import DEVICE_SCOPE, USER_SCOPE, Limit, RateLimited


def redis_store() -> RedisHotStore:
    """A store on the test Redis: the cluster's when the suite runs on one."""
    return RedisHotStore(settings.REDIS_URL, prefix="test:hot:", cluster_nodes=settings.REDIS_CLUSTER_NODES)


@pytest.fixture(params=["redis", "memory"])
def store(request):
    hot = redis_store() if request.param == "redis" else LocalHotStore()
    hot.reset()
    yield hot
    hot.reset()


def device(seq: int, last_seen: float = 1000.0, **changes) -> HotDevice:
    return HotDevice(device_id="dev1", last_seen=last_seen, last_active=last_seen, seq=seq, **changes)


DECISION = HotDecision("available", "available", None, 1000.0, True, "device_active", 1060.0)
LATER = replace(DECISION, valid_until=1090.0)


def steady(device: HotDevice, **changes) -> SteadyCommit:
    """User 7's device after a signal, on version 0 and the device's seq 1, decided `LATER`."""
    return replace(SteadyCommit(7, device, 0, 1, LATER, mark_dirty=False), **changes)


def prime(store) -> None:
    """User 7 at version 0 with one device."""
    assert store.commit_users([UserCommit(7, -1, {"loaded": "1", "ctx": "{}", "dec": DECISION.encode()}, 1060.0)])
    store.commit_device(7, device(seq=1), None)


def test_a_user_is_read_back_as_written(store):
    prime(store)

    user = HotUser.parse(store.read(7))

    assert user.version == 0
    assert user.ready
    assert user.devices["dev1"] == device(seq=1)
    assert user.decision == DECISION


def test_a_steady_commit_lands_when_nothing_moved_and_moves_the_version_on(store):
    prime(store)

    assert store.commit_steady(steady(device(seq=2, last_seen=1030.0), mark_dirty=True))

    user = HotUser.parse(store.read(7))
    assert (user.devices["dev1"].seq, user.version, user.decision) == (2, 1, LATER)
    assert store.due(1089.0, 10) == []
    assert store.due(1090.0, 10) == [7]
    assert store.pop_dirty(10) == [(7, "dev1")]
    assert store.pop_dirty(10) == []


def test_a_steady_commit_marks_the_user_for_the_database_writer(store):
    prime(store)

    assert store.commit_steady(steady(device(seq=2), persist=True))

    assert [user_id for user_id, _ in store.pending_persist(10)] == [7]


def test_a_steady_commit_without_a_schedule_unschedules_the_user(store):
    prime(store)

    assert store.commit_steady(steady(device(seq=2), decision=replace(LATER, valid_until=None)))

    assert store.due(float("inf"), 10) == []


def test_only_redis_takes_a_history_entry_and_an_announcement_with_a_steady_commit(store):
    """Redis appends and publishes in the commit's own step; process memory buffers nothing (the
    caller inserts and publishes) and refuses them rather than drop them."""

    prime(store)
    commit = steady(device(seq=2), history_entry='{"id":"1"}', announcement=("test:hot:org", b"delta"))
    if not store.buffers_history:
        for refused in (replace(commit, announcement=None), replace(commit, history_entry=None)):
            with pytest.raises(ValueError):
                store.commit_steady(refused)
        assert HotUser.parse(store.read(7)).devices["dev1"].seq == 1
        return
    listener = store.client.pubsub()  # on a cluster, a PUBLISH reaches the subscribers of every node
    listener.subscribe("test:hot:org")
    try:
        assert listener.get_message(timeout=5)["type"] == "subscribe"
        assert store.commit_steady(commit)

        message = listener.get_message(timeout=5)
    finally:
        listener.close()
    assert (message["type"], message["data"]) == ("message", "delta")
    drained = []
    assert store.drain_history(lambda batch: drained.extend(batch) or len(batch), 10, 1, 30) == 1
    assert drained == ['{"id":"1"}']


def test_a_steady_commit_is_refused_after_a_recompute(store):
    prime(store)
    assert store.commit_users([UserCommit(7, 0, {"dec": DECISION.encode()}, 1060.0)]) == [True]

    assert not store.commit_steady(steady(device(seq=2)))
    assert HotUser.parse(store.read(7)).devices["dev1"].seq == 1


def test_a_steady_commit_is_refused_when_the_device_moved_on(store):
    prime(store)
    store.commit_device(7, device(seq=5), 1)

    assert not store.commit_steady(steady(device(seq=2)))
    assert HotUser.parse(store.read(7)).devices["dev1"].seq == 5


def test_a_device_commit_compares_its_seq(store):
    assert store.commit_device(7, device(seq=3), -1)  # no seq yet
    assert not store.commit_device(7, device(seq=4), 2)
    assert store.commit_device(7, device(seq=4), 3)
    assert store.commit_device(7, device(seq=0), None)  # a new session: whatever was there
    assert HotUser.parse(store.read(7)).devices["dev1"].seq == 0


def test_a_user_commit_lands_only_on_the_version_it_read(store):
    prime(store)

    results = store.commit_users(
        [
            UserCommit(7, 3, {"ctx": "read long ago"}, None),
            UserCommit(7, 0, {"ctx": "newer"}, None, ("d:dev1", "q:dev1", "s:dev1", "f:dev1")),
            UserCommit(7, 0, {"ctx": "raced"}, None),
        ]
    )

    assert results == [False, True, False]
    user = HotUser.parse(store.read(7))
    assert (user.version, user.context, user.devices) == (1, "newer", {})
    assert store.due(float("inf"), 10) == []


def test_due_users_come_in_order_up_to_the_limit(store):
    store.commit_users([UserCommit(uid, -1, {}, due) for uid, due in ((1, 30.0), (2, 10.0), (3, 20.0), (4, 99.0))])

    assert store.due(50.0, 2) == [2, 3]
    assert store.due(50.0, 10) == [2, 3, 1]


def test_a_forgotten_user_is_gone_and_unscheduled(store):
    prime(store)

    store.forget_user(7)

    assert store.read(7) == {}
    assert store.due(float("inf"), 10) == []


def test_the_store_says_once_that_it_lost_its_data(store):
    assert store.lost_shards() == set(range(SHARDS))
    assert store.lost_shards() == set()

    store.reset()

    assert store.lost_shards() == set(range(SHARDS))


def test_a_shard_that_lost_its_data_is_named_alone():
    """As after a cluster master failed with no replica to take over: the other shards kept theirs."""
    store = redis_store()
    store.reset()
    try:
        store.lost_shards()
        store.client.delete(store.shard(7).epoch)

        assert store.lost_shards() == {shard_of(7)}
    finally:
        store.reset()


def test_a_drain_gathers_many_shards_buffers_into_full_batches():
    """Entries spread over every shard are inserted a full batch at a time, not a shard at a time."""
    store = redis_store()
    store.reset()
    try:
        for n in range(SHARDS * 3):
            store.append_history([f"entry-{n}"])
        batches = []

        def insert(batch: list[str]) -> int:
            batches.append(batch)
            return len(batch)

        assert store.drain_history(insert, batch_size=100, max_batches=10, lock_seconds=30) == SHARDS * 3
        assert [len(batch) for batch in batches] == [100, 92]
        assert sorted(entry for batch in batches for entry in batch) == sorted(f"entry-{n}" for n in range(SHARDS * 3))
        assert store.drain_history(insert, batch_size=100, max_batches=10, lock_seconds=30) == 0
    finally:
        store.reset()


def test_the_schedule_and_the_write_behind_queue_span_every_shard(store):
    """Users of different shards are due, dirty and pending alike, each once."""
    users = [3, 3 + SHARDS, 4, 5 * SHARDS + 9]  # two share a shard
    for user_id in users:
        fields = {"loaded": "1", "ctx": "{}", "dec": DECISION.encode()}
        assert store.commit_users([UserCommit(user_id, -1, fields, 1060.0)])
        store.commit_device(user_id, device(seq=1), None)
        assert store.commit_steady(steady(device(seq=2), user_id=user_id, mark_dirty=True, persist=True))

    assert sorted(store.due(float("inf"), 10)) == sorted(users)
    assert len(store.due(float("inf"), 3)) == 3
    assert sorted(uid for uid, _ in store.pop_dirty(10)) == sorted(users)
    pending = store.pending_persist(10)
    assert sorted(uid for uid, _ in pending) == sorted(users)
    store.clear_persisted(pending)
    assert store.pending_persist(10) == []


def test_decisions_of_many_users_are_read_at_once(store):
    prime(store)

    assert store.read_decisions([7, 8]) == {7: DECISION.encode()}


# --- The history buffer (`presence.history`) ---------------------------------------------------


def test_the_buffer_is_drained_in_order_in_batches_and_trimmed(store):
    if not store.buffers_history:
        with pytest.raises(ValueError):
            store.append_history(["a"])
        assert store.drain_history(len, 10, 10, 30) == 0
        return
    store.append_history(["a", "b", "c"])
    store.append_history(["d", "e"])
    batches = []

    def insert(batch: list[str]) -> int:
        batches.append(batch)
        return len(batch) * 10

    # Batches gather entries across the shards' buffers (each append's in one), in order within each.
    assert store.drain_history(insert, batch_size=2, max_batches=2, lock_seconds=30) == 40
    assert batches == [["a", "b"], ["c", "d"]]
    assert store.drain_history(insert, batch_size=2, max_batches=2, lock_seconds=30) == 10
    assert batches[2:] == [["e"]]
    assert store.drain_history(insert, batch_size=2, max_batches=2, lock_seconds=30) == 0


def test_one_drain_at_a_time():
    store = redis_store()
    store.reset()
    store.append_history(["a"])
    inner = []

    def insert(batch: list[str]) -> int:
        inner.append(store.drain_history(len, 10, 10, 30))  # another flusher meanwhile
        return len(batch)

    try:
        assert store.drain_history(insert, 10, 10, 30) == 1
        assert inner == [0]
        store.append_history(["b"])
        assert store.drain_history(len, 10, 10, 30) == 1  # the lock was released
    finally:
        store.reset()


def test_entries_stay_buffered_when_their_insert_fails():
    store = redis_store()
    store.reset()
    store.append_history(["a", "b"])

    def failing(batch: list[str]) -> int:
        raise RuntimeError("the database is away")

    try:
        with pytest.raises(RuntimeError):
            store.drain_history(failing, 10, 10, 30)
        drained = []
        assert store.drain_history(lambda batch: drained.extend(batch) or len(batch), 10, 10, 30) == 2
        assert drained == ["a", "b"]
    finally:
        store.reset()


def ready_user(store, last_seen: float = 1000.0, network: str = "online") -> None:
    """User 7 as a recompute leaves it: a context (device timeout 120 s), a decision, one device."""
    from presence.engine import PresenceInputs
    from presence.hot import encode_context

    context = encode_context(PresenceInputs(), organization_id=None)
    store.commit_users([UserCommit(7, -1, {"loaded": "1", "ctx": context, "dec": DECISION.encode()}, 1060.0)])
    store.commit_device(7, device(seq=1, last_seen=last_seen, network=network), None)


def test_a_heartbeat_of_a_live_device_is_recorded_in_one_step(store):
    ready_user(store)

    beat = store.heartbeat(7, "dev1", 2, 1030.0, [])

    assert (beat.applied, beat.decision) == (True, DECISION)
    user = HotUser.parse(store.read(7))
    assert (user.devices["dev1"].last_seen, user.devices["dev1"].seq, user.version) == (1030.0, 2, 1)


def test_a_heartbeat_with_an_old_seq_is_ignored_but_answered(store):
    ready_user(store)

    beat = store.heartbeat(7, "dev1", 1, 1030.0, [])

    assert (beat.applied, beat.decision) == (False, DECISION)
    assert HotUser.parse(store.read(7)).devices["dev1"].last_seen == 1000.0


def test_a_seq_beyond_double_precision_is_compared_exactly(store):
    ready_user(store)
    store.commit_device(7, device(seq=2**63 - 2), None)

    assert store.heartbeat(7, "dev1", 2**63 - 2, 1030.0, []).applied is False
    assert store.heartbeat(7, "dev1", 2**63 - 1, 1030.0, []).applied is True


@pytest.mark.parametrize(
    "case",
    ["timed out", "network offline", "decision outdated", "unknown device", "no hot state"],
)
def test_a_heartbeat_that_may_change_the_decision_is_left_to_the_full_path(store, case):
    if case != "no hot state":
        ready_user(store, network="offline" if case == "network offline" else "online")
    now = {"timed out": 1120.0, "decision outdated": 1060.0}.get(case, 1030.0)
    device_id = "other" if case == "unknown device" else "dev1"

    assert store.heartbeat(7, device_id, 2, now, []) is None


# --- Rate limits (`presence.ratelimits`), the same in both stores ------------------------------

THREE_A_MINUTE = [Limit(DEVICE_SCOPE, "rd:dev1", interval=20.0, burst_window=40.0)]


def test_a_burst_of_the_limits_count_passes_and_the_next_request_waits_one_interval(store):
    for _ in range(3):
        store.charge(7, THREE_A_MINUTE, 1000.0)

    with pytest.raises(RateLimited) as refused:
        store.charge(7, THREE_A_MINUTE, 1000.0)

    assert refused.value.scope == DEVICE_SCOPE
    assert refused.value.wait_seconds == pytest.approx(20.0)
    store.charge(7, THREE_A_MINUTE, 1020.0)


def test_a_refused_request_does_not_count(store):
    for _ in range(3):
        store.charge(7, THREE_A_MINUTE, 1000.0)
    for _ in range(10):
        with pytest.raises(RateLimited):
            store.charge(7, THREE_A_MINUTE, 1000.0)

    store.charge(7, THREE_A_MINUTE, 1020.0)  # as if the ten had never come
    with pytest.raises(RateLimited):
        store.charge(7, THREE_A_MINUTE, 1020.0)


def test_a_quiet_while_earns_the_burst_back_but_no_more(store):
    for _ in range(3):
        store.charge(7, THREE_A_MINUTE, 1000.0)

    for _ in range(3):
        store.charge(7, THREE_A_MINUTE, 2000.0)
    with pytest.raises(RateLimited):
        store.charge(7, THREE_A_MINUTE, 2000.0)


def test_the_binding_limit_is_named_and_a_refusal_counts_against_none(store):
    device = Limit(DEVICE_SCOPE, "rd:dev1", interval=1.0, burst_window=99.0)
    user = Limit(USER_SCOPE, "ru", interval=30.0, burst_window=30.0)  # two a minute
    store.charge(7, [device, user], 1000.0)
    store.charge(7, [device, user], 1000.0)

    with pytest.raises(RateLimited) as refused:
        store.charge(7, [device, user], 1000.0)

    assert (refused.value.scope, refused.value.wait_seconds) == (USER_SCOPE, pytest.approx(30.0))
    # The device limit did not count the refused request: 98 more fit in its burst, not 97.
    for _ in range(98):
        store.charge(7, [device], 1000.0)
    with pytest.raises(RateLimited):
        store.charge(7, [device], 1000.0)


def test_users_are_limited_apart(store):
    for _ in range(3):
        store.charge(7, THREE_A_MINUTE, 1000.0)

    store.charge(8, THREE_A_MINUTE, 1000.0)


def test_a_heartbeat_over_the_limit_is_refused_before_it_is_recorded(store):
    ready_user(store)
    one_a_minute = [Limit(DEVICE_SCOPE, "rd:dev1", interval=60.0, burst_window=0.0)]
    assert store.heartbeat(7, "dev1", 2, 1030.0, one_a_minute).applied

    with pytest.raises(RateLimited):
        store.heartbeat(7, "dev1", 3, 1031.0, one_a_minute)

    assert HotUser.parse(store.read(7)).devices["dev1"].seq == 2
    assert store.heartbeat(7, "dev1", 3, 1090.0, one_a_minute) is None  # heard again (its decision outdated by then)


def test_a_charged_read_reads_the_user_or_refuses_without_counting(store):
    prime(store)
    one_a_minute = [Limit(DEVICE_SCOPE, "rd:dev1", interval=60.0, burst_window=0.0)]

    assert store.read_charged(7, "dev1", one_a_minute, 1000.0) == store.read(7)
    with pytest.raises(RateLimited):
        store.read_charged(7, "dev1", one_a_minute, 1001.0)
    assert HotUser.parse(store.read_charged(7, "dev1", one_a_minute, 1060.0)).devices["dev1"] == device(seq=1)


def test_every_process_shares_the_limits_through_redis():
    first = redis_store()
    second = redis_store()
    first.reset()
    try:
        for _ in range(3):
            first.charge(7, THREE_A_MINUTE, 1000.0)
        with pytest.raises(RateLimited):
            second.charge(7, THREE_A_MINUTE, 1000.0)
    finally:
        first.reset()


def test_a_made_up_device_id_counts_against_the_user_limit_only(store):
    prime(store)
    limits = [
        Limit(DEVICE_SCOPE, "rd:made-up", interval=60.0, burst_window=0.0),  # one a minute
        Limit(USER_SCOPE, "ru", interval=30.0, burst_window=30.0),  # two a minute
    ]
    store.read_charged(7, "made-up", limits, 1000.0)
    store.read_charged(7, "made-up", limits, 1000.0)  # the device's limit, were it counted, refuses this

    with pytest.raises(RateLimited) as refused:
        store.read_charged(7, "made-up", limits, 1000.0)

    assert refused.value.scope == USER_SCOPE
    if isinstance(store, RedisHotStore):  # and it left no field behind
        assert not [field for field in store.client.hkeys(store.user_key(7)) if field.startswith("rd:")]


def test_a_context_keeps_whether_the_microsoft_import_was_sparks_own_presence():
    from dataclasses import replace
    from datetime import UTC, datetime

    from presence.engine import MicrosoftInput, PresenceInputs
    from presence.hot import HotContext, encode_context

    imported = MicrosoftInput("DoNotDisturb", "DoNotDisturb", datetime(2026, 11, 25, 9, 0, tzinfo=UTC), echo=True)
    context = encode_context(PresenceInputs(microsoft=imported), organization_id=None)

    assert HotContext.decode(context).inputs.microsoft == imported
    assert (
        HotContext.decode(
            encode_context(PresenceInputs(microsoft=replace(imported, echo=False)), None)
        ).inputs.microsoft.echo
        is False
    )
