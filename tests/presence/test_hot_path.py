"""The heartbeat hot path: steady heartbeats touch no database; what changes is persisted; a
Redis that lost its data (restarted, it keeps nothing on disk) converges within a heartbeat."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orgs.models import User
from presence import hot, selectors, services
from presence.models import Device, PresencePreferences, PresenceState
from presence.services import Signal
from presence.vocabulary import SignalType, Status
from tests.captured_sql import writes_in

pytestmark = pytest.mark.django_db


def heartbeat(seq: int) -> list[Signal]:
    return [Signal(SignalType.HEARTBEAT, None, seq)]


@pytest.fixture
def laptop(alice) -> str:
    device, _ = services.register_device(alice, "alice-laptop", "laptop")
    services.ingest_signals(alice, device.device_id, heartbeat(1))
    return device.device_id


def test_a_steady_heartbeat_runs_no_database_query_at_all(alice, laptop):
    with CaptureQueriesContext(connection) as queries:
        outcome = services.ingest_signals(alice, laptop, heartbeat(2))

    assert queries.captured_queries == []
    assert (outcome.applied, outcome.presence.status) == (1, Status.AVAILABLE)


def test_a_steady_heartbeat_over_the_api_writes_nothing_to_the_database(alice_api, alice, laptop):
    with CaptureQueriesContext(connection) as queries:
        response = alice_api.post(
            f"/api/v1/devices/{laptop}/signals", {"signals": [{"type": "heartbeat", "seq": 2}]}, format="json"
        )

    assert response.status_code == 202
    assert writes_in(queries) == []


def test_repeated_activity_reports_are_steady_too(alice, laptop):
    with CaptureQueriesContext(connection) as queries:
        services.ingest_signals(alice, laptop, [Signal(SignalType.ACTIVITY, "active", 2)])

    assert queries.captured_queries == []


def test_a_status_change_is_answered_from_the_hot_store_and_written_behind(alice, laptop):
    with CaptureQueriesContext(connection) as queries:
        outcome = services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, "hidden", 2)])

    assert outcome.presence.status == Status.AWAY
    assert queries.captured_queries == []
    assert selectors.current_presence(alice).status == Status.AWAY
    assert PresenceState.objects.get(user=alice).status == Status.AVAILABLE  # not written yet

    assert services.persist_pending() == 1

    assert Device.objects.get(device_id=laptop).visibility == "hidden"
    assert PresenceState.objects.get(user=alice).status == Status.AWAY
    assert services.persist_pending() == 0  # written once


def test_a_user_changed_many_times_is_written_once_with_the_latest(alice, laptop):
    for seq, value in enumerate(["hidden", "visible", "hidden"], start=2):
        services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, value, seq)])

    with CaptureQueriesContext(connection) as queries:
        assert services.persist_pending() == 1

    stored = Device.objects.get(device_id=laptop)
    assert (stored.visibility, stored.last_seq) == ("hidden", 4)
    assert PresenceState.objects.get(user=alice).status == Status.AWAY
    # One batch update of devices, one of presence rows, one batch insert into each history table.
    tables = sorted(sql.split('"')[1] for sql in writes_in(queries))
    assert tables == ["presence_device", "presence_devicehistory", "presence_presencehistory", "presence_presencestate"]


def test_a_user_changed_again_while_written_stays_marked_for_the_next_run(alice, laptop):
    services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, "hidden", 2)])
    marks = hot.store().pending_persist(10)
    services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, "visible", 3)])

    hot.store().clear_persisted(marks)  # a writer that read before the second change

    assert [user_id for user_id, _ in hot.store().pending_persist(10)] == [alice.pk]
    services.persist_pending()
    assert Device.objects.get(device_id=laptop).last_seq == 3


def test_without_write_behind_a_status_change_is_written_before_the_answer(alice, laptop, settings):
    settings.PRESENCE_WRITE_BEHIND = False

    with CaptureQueriesContext(connection) as queries:
        services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, "hidden", 2)])

    assert writes_in(queries)
    assert Device.objects.get(device_id=laptop).visibility == "hidden"
    assert PresenceState.objects.get(user=alice).status == Status.AWAY
    assert services.persist_pending() == 0


def test_the_database_writer_never_stores_an_older_device_state(alice, laptop):
    services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, "hidden", 5)])
    services.persist_pending()
    # The slow path wrote a newer seq to the database in between (e.g. after a Redis restart).
    Device.objects.filter(device_id=laptop).update(last_seq=9, visibility="visible")
    services.ingest_signals(alice, laptop, [Signal(SignalType.ACTIVITY, "idle", 6)])

    services.persist_pending()

    stored = Device.objects.get(device_id=laptop)
    assert (stored.last_seq, stored.visibility) == (9, "visible")


def test_a_hidden_second_device_changes_the_device_row_but_not_the_presence(alice, laptop):
    phone, _ = services.register_device(alice, "alice-phone", "phone")
    changed_at = PresenceState.objects.get(user=alice).changed_at

    services.ingest_signals(alice, phone.device_id, [Signal(SignalType.VISIBILITY, "hidden", 1)])
    services.persist_pending()

    assert Device.objects.get(device_id=phone.device_id).visibility == "hidden"
    state = PresenceState.objects.get(user=alice)
    assert (state.status, state.changed_at) == (Status.AVAILABLE, changed_at)


def test_heartbeats_reach_the_database_copy_at_most_every_flush_interval(alice, laptop, settings):
    settings.PRESENCE_DEVICE_FLUSH_SECONDS = 60
    start = timezone.now()
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        services.ingest_signals(alice, laptop, [Signal(SignalType.ACTIVITY, "active", 2)])
    assert services.flush_device_activity() == 0
    assert Device.objects.get(device_id=laptop).last_seq == -1  # as registration left it

    with time_machine.travel(start + timedelta(seconds=90), tick=False):
        services.ingest_signals(alice, laptop, [Signal(SignalType.ACTIVITY, "active", 3)])
    assert services.flush_device_activity() == 1

    stored = Device.objects.get(device_id=laptop)
    assert stored.last_seen_at == start + timedelta(seconds=90)
    assert stored.last_active_at == start + timedelta(seconds=90)
    assert stored.last_seq == 3


def test_devices_due_for_their_database_copy_are_written_in_one_batch(make_member, settings):
    settings.PRESENCE_DEVICE_FLUSH_SECONDS = 60
    start = timezone.now()
    devices = {}
    for name in ("ann", "ben", "cy", "dee", "eve"):
        user = make_member(name)
        device, _ = services.register_device(user, f"{name}-laptop")
        devices[device.device_id] = user
    with time_machine.travel(start + timedelta(seconds=90), tick=False):
        for device_id, user in devices.items():
            services.ingest_signals(user, device_id, [Signal(SignalType.ACTIVITY, "active", 2)])

    with CaptureQueriesContext(connection) as queries:
        assert services.flush_device_activity() == len(devices)

    assert len(writes_in(queries)) == 1  # one UPDATE for the batch, not one per device
    copies = Device.objects.filter(device_id__in=devices)
    assert {(d.last_seen_at, d.last_seq) for d in copies} == {(start + timedelta(seconds=90), 2)}


def test_a_flush_leaves_a_newer_database_copy_as_it_is(make_member, settings):
    settings.PRESENCE_DEVICE_FLUSH_SECONDS = 60
    start = timezone.now()
    ann, ben = make_member("ann"), make_member("ben")
    anns, _ = services.register_device(ann, "ann-laptop")
    bens, _ = services.register_device(ben, "ben-laptop")
    with time_machine.travel(start + timedelta(seconds=90), tick=False):
        for user, device in ((ann, anns), (ben, bens)):
            services.ingest_signals(user, device.device_id, [Signal(SignalType.ACTIVITY, "active", 2)])
    Device.objects.filter(pk=anns.pk).update(last_seq=5)  # written by a newer signal meanwhile

    assert services.flush_device_activity() == 1

    assert Device.objects.get(pk=anns.pk).last_seq == 5
    assert Device.objects.get(pk=bens.pk).last_seq == 2


def test_a_heartbeat_keeps_the_hot_decision_fresh_for_readers(alice, laptop):
    later = timezone.now() + timedelta(seconds=100)
    with time_machine.travel(later, tick=False):
        services.ingest_signals(alice, laptop, heartbeat(2))
    # Past the first heartbeat's timeout, but not the second's: still available, read from Redis.
    with time_machine.travel(later + timedelta(seconds=100), tick=False), CaptureQueriesContext(connection) as queries:
        state = selectors.current_presence(alice)

    assert state.status == Status.AVAILABLE
    assert queries.captured_queries == []


@pytest.mark.django_db(transaction=True)
def test_heartbeats_and_a_manual_change_at_once_end_in_the_engines_decision(alice, laptop):
    """Heartbeats from two devices race a manual status change; the stored decision must be the
    one the inputs give, whatever the interleaving."""
    phone, _ = services.register_device(alice, "alice-phone", "phone")
    user_id = alice.pk
    errors: list[BaseException] = []

    def beat(device_id: str, first_seq: int) -> None:
        try:
            user = User.objects.get(pk=user_id)
            for seq in range(first_seq, first_seq + 40):
                services.ingest_signals(user, device_id, heartbeat(seq))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=beat, args=(laptop, 10)),
        threading.Thread(target=beat, args=(phone.device_id, 10)),
    ]
    for thread in threads:
        thread.start()
    services.set_manual_status(alice, Status.DND, "focus")
    for thread in threads:
        thread.join()

    assert errors == []
    stored = selectors.current_presence(alice)
    assert (stored.status, stored.status_msg) == (Status.DND, "focus")
    assert services.recompute(alice).status == Status.DND


def test_a_manual_change_that_loses_every_race_to_heartbeats_still_decides(alice, laptop, monkeypatch):
    store = hot.store()
    read = store.read
    beats = iter(range(100, 200))

    def read_then_a_heartbeat_lands(user_id):
        raw = read(user_id)
        store.heartbeat(user_id, laptop, next(beats), timezone.now().timestamp(), [])  # moves the version on
        return raw

    monkeypatch.setattr(store, "read", read_then_a_heartbeat_lands)
    services.set_manual_status(alice, Status.DND, "focus")
    monkeypatch.undo()

    outcome = services.ingest_signals(alice, laptop, heartbeat(500))
    assert (outcome.presence.status, outcome.presence.status_msg) == (Status.DND, "focus")
    assert selectors.current_presence(alice).status == Status.DND


# --- A Redis that lost its data -------------------------------------------------------------


def lose_hot_state() -> None:
    """What a restart of a Redis that keeps nothing on disk leaves: no hot state at all."""
    hot.store().reset()


def test_preferences_and_manual_status_survive_a_redis_restart(alice, laptop):
    services.update_preferences(alice, priority="manual_first", share_externally=True)
    services.set_manual_status(alice, Status.BUSY, "release day")

    lose_hot_state()
    outcome = services.ingest_signals(alice, laptop, heartbeat(5))

    assert (outcome.presence.status, outcome.presence.status_msg) == (Status.BUSY, "release day")
    preferences = PresencePreferences.objects.get(user=alice)
    assert (preferences.priority, preferences.share_externally) == ("manual_first", True)


def test_presence_converges_within_one_heartbeat_after_a_redis_restart(alice, laptop, settings):
    phone, _ = services.register_device(alice, "alice-phone", "phone")
    services.ingest_signals(alice, phone.device_id, [Signal(SignalType.CALL, "start", 1)])
    services.persist_pending()
    start = timezone.now()

    lose_hot_state()
    interval = timedelta(seconds=settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS)
    with time_machine.travel(start + interval, tick=False):
        services.ingest_signals(alice, laptop, heartbeat(2))
        services.ingest_signals(alice, phone.device_id, heartbeat(2))
        state = selectors.current_presence(alice)

    # The call was written to the database, so the rebuilt state still knows it.
    assert (state.status, state.activity) == (Status.BUSY, "in_call")


def test_the_sweep_rebuilds_its_schedule_after_a_redis_restart(alice, laptop):
    start = timezone.now()
    lose_hot_state()

    # Nobody reads alice's presence; only the sweep can notice her device went silent.
    with time_machine.travel(start + timedelta(seconds=10), tick=False):
        services.sweep_expired()
    with time_machine.travel(start + timedelta(minutes=5), tick=False):
        services.sweep_expired()

    assert PresenceState.objects.get(user=alice).status == Status.OFFLINE


def steady_until(user: User, device_id: str, start, seconds: int, interval: int) -> int:
    """A user at work: `activity: active` every `interval` seconds from `start` for `seconds`
    (steady: kept in the hot store), and beat's flush of device times every minute; returns the
    last seq."""
    seq = 1
    for offset in range(interval, seconds + 1, interval):
        seq += 1
        with time_machine.travel(start + timedelta(seconds=offset), tick=False):
            services.ingest_signals(user, device_id, [Signal(SignalType.ACTIVITY, "active", seq)])
            if offset % 60 == 0:
                services.flush_device_activity()
    return seq


def test_a_redis_restart_does_not_turn_steady_users_offline_before_their_next_heartbeat(alice, laptop, settings):
    interval = settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS
    start = timezone.now()
    # Minutes of steady heartbeats: the database copy of the device's last-seen time falls
    # behind by more than the device timeout.
    seq = steady_until(alice, laptop, start, 330, interval)
    restart = start + timedelta(seconds=331)
    assert Device.objects.get(device_id=laptop).last_seen_at < restart - timedelta(
        seconds=settings.PRESENCE_DEVICE_TIMEOUT_SECONDS
    )

    lose_hot_state()
    with time_machine.travel(restart, tick=False):
        services.sweep_expired()  # the first sweep after the restart rebuilds alice
        assert PresenceState.objects.get(user=alice).status == Status.AVAILABLE
        assert selectors.current_presence(alice).status == Status.AVAILABLE
    with time_machine.travel(restart + timedelta(seconds=interval - 1), tick=False):
        services.ingest_signals(alice, laptop, heartbeat(seq + 1))
    with time_machine.travel(restart + timedelta(seconds=3 * interval), tick=False):
        services.sweep_expired()
        assert selectors.current_presence(alice).status == Status.AVAILABLE
    assert PresenceState.objects.get(user=alice).status == Status.AVAILABLE


def test_a_device_that_does_not_come_back_after_a_redis_restart_goes_offline_a_heartbeat_later(alice, laptop, settings):
    interval = settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS
    start = timezone.now()
    steady_until(alice, laptop, start, 330, interval)
    restart = start + timedelta(seconds=331)

    lose_hot_state()
    with time_machine.travel(restart, tick=False):
        services.sweep_expired()
    with time_machine.travel(restart + timedelta(seconds=interval + 1), tick=False):
        services.sweep_expired()

    state = PresenceState.objects.get(user=alice)
    assert (state.status, state.reason) == (Status.OFFLINE, "no_live_device")


def test_a_redis_restart_brings_nobody_back_whom_the_database_holds_as_offline(alice, laptop, settings):
    went_silent = timezone.now()
    timeout = settings.PRESENCE_DEVICE_TIMEOUT_SECONDS
    with time_machine.travel(went_silent + timedelta(seconds=timeout + 5), tick=False):
        services.sweep_expired()
    assert PresenceState.objects.get(user=alice).status == Status.OFFLINE

    lose_hot_state()
    with time_machine.travel(went_silent + timedelta(seconds=timeout + 10), tick=False):
        services.sweep_expired()
        assert selectors.current_presence(alice).status == Status.OFFLINE
    assert PresenceState.objects.get(user=alice).status == Status.OFFLINE


def test_a_deleted_user_leaves_the_sweep_schedule(alice, laptop):
    user_id = alice.pk
    alice.delete()

    with time_machine.travel(timezone.now() + timedelta(minutes=5), tick=False):
        assert services.sweep_expired() == 0

    assert user_id not in hot.store().due(float("inf"), 100)


def test_the_embedded_default_runs_the_same_path_in_process_memory(alice, settings):
    settings.REDIS_URL = ""
    settings.REDIS_CLUSTER_NODES = []
    assert isinstance(hot.store(), hot.LocalHotStore)
    hot.store().reset()

    device, _ = services.register_device(alice, "alice-laptop")
    services.ingest_signals(alice, device.device_id, heartbeat(1))
    with CaptureQueriesContext(connection) as queries:
        outcome = services.ingest_signals(alice, device.device_id, heartbeat(2))

    assert queries.captured_queries == []
    assert outcome.presence.status == Status.AVAILABLE
    with time_machine.travel(timezone.now() + timedelta(minutes=5), tick=False):
        assert services.sweep_expired() >= 1
    assert PresenceState.objects.get(user=alice).status == Status.OFFLINE


def test_a_restart_with_another_device_timeout_applies_to_hot_users_at_once(alice, laptop, settings):
    settings.PRESENCE_DEVICE_TIMEOUT_SECONDS = 40
    later = timezone.now() + timedelta(seconds=20)
    with time_machine.travel(later, tick=False):
        services.ingest_signals(alice, laptop, [Signal(SignalType.ACTIVITY, "active", 2)])

    # Under the old 120 s the device would still be live; under the new 40 s it is not.
    with time_machine.travel(later + timedelta(seconds=45), tick=False):
        assert selectors.current_presence(alice).status == Status.OFFLINE


# --- The sweep, from the hot state --------------------------------------------------------


def test_a_sweep_that_changes_nothing_visible_runs_no_database_query(alice, laptop):
    # In a call the idle timer passing changes nothing: the user stays busy.
    services.ingest_signals(alice, laptop, [Signal(SignalType.CALL, "start", 2)])
    services.sweep_expired()  # the first sweep checks for a lost store
    later = timezone.now() + timedelta(seconds=61)

    with time_machine.travel(later, tick=False), CaptureQueriesContext(connection) as queries:
        swept = services.sweep_expired()

    assert swept == 1
    assert queries.captured_queries == []
    assert selectors.current_presence(alice).status == Status.BUSY


def test_a_sweep_turns_many_silent_users_offline_in_one_batch(make_member):
    users = [make_member(f"member{n}") for n in range(12)]
    for user in users:
        services.register_device(user, f"install-{user.pk}")
    services.sweep_expired()

    with time_machine.travel(timezone.now() + timedelta(minutes=3), tick=False):
        assert services.sweep_expired(batch_size=5) == 12

    statuses = set(PresenceState.objects.filter(user__in=users).values_list("status", "reason"))
    assert statuses == {(Status.OFFLINE, "no_live_device")}


def test_reading_colleagues_who_never_had_an_input_writes_nothing(alice, make_member):
    for n in range(20):
        make_member(f"quiet{n}")

    with CaptureQueriesContext(connection) as queries:
        states = selectors.fresh_presence_of(selectors.colleagues_of(alice))

    assert {state.status for state in states.values()} == {Status.OFFLINE}
    assert len(states) == 20
    assert writes_in(queries) == []
    assert len(queries.captured_queries) <= 2  # the organization, then the colleagues with their states


def test_a_stored_decision_is_read_while_current_when_the_hot_store_lost_it(alice, laptop, bob):
    services.set_manual_status(alice, Status.DND, "focus")
    lose_hot_state()

    with CaptureQueriesContext(connection) as queries:
        state = selectors.fresh_presence_of(selectors.colleagues_of(bob))[alice.pk]

    assert (state.status, state.status_msg) == (Status.DND, "focus")
    assert writes_in(queries) == []


def test_the_event_loop_heartbeat_survives_forgotten_scripts_and_a_dropped_connection(alice, laptop, settings):
    """The websocket's heartbeats write their batches to Redis themselves: a Redis that lost its
    scripts (restarted, flushed) gets them again; a connection it dropped fails the batch on it
    (the socket's client is told, and retries), and the next batch opens a new one."""
    import redis.exceptions

    store = hot.store()
    assert isinstance(store, hot.RedisHotStore)

    async def beats() -> list:
        now = timezone.now().timestamp
        outcomes = [await store.heartbeat_async(alice.pk, laptop, 2, now(), ())]
        store.client.script_flush()
        outcomes.append(await store.heartbeat_async(alice.pk, laptop, 3, now(), ()))
        if not settings.REDIS_CLUSTER_NODES:  # the single server's pipeline has one connection to drop
            store.client.client_kill_filter(_id=await store.loop_pipeline().client.client_id())
            with pytest.raises(redis.exceptions.ConnectionError):
                await store.heartbeat_async(alice.pk, laptop, 4, now(), ())
        outcomes.append(await store.heartbeat_async(alice.pk, laptop, 4, now(), ()))
        outcomes.append(await store.heartbeat_async(alice.pk, laptop, 4, now(), ()))  # a repeated seq
        return outcomes

    outcomes = asyncio.run(beats())

    assert [outcome.applied for outcome in outcomes] == [True, True, True, False]
    assert {outcome.decision.status for outcome in outcomes} == {Status.AVAILABLE}
