"""The presence history: every visible change is recorded with what caused it, buffered in Redis
and written in batches by the persist task, written at once on the embedded default, and pruned
after the retention period."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from presence import events, history, hot, services
from presence.models import DeviceHistory, PresenceHistory
from presence.services import Signal
from presence.tasks import prune_presence_history
from presence.vocabulary import SignalType, Status
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def laptop(alice) -> str:
    device, _ = services.register_device(alice, "alice-laptop", "laptop")
    services.ingest_signals(alice, device.device_id, [Signal(SignalType.HEARTBEAT, None, 1)])
    services.persist_pending()
    return device.device_id


def entries_of(user) -> list[tuple[str, str, str]]:
    rows = PresenceHistory.objects.filter(user=user).order_by("at", "pk")
    return list(rows.values_list("status", "reason", "source"))


def test_a_signal_change_is_buffered_in_redis_and_written_by_the_persist_task(alice, laptop):
    services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, "hidden", 2)])

    assert entries_of(alice) == []
    services.persist_pending()

    assert entries_of(alice) == [(Status.AWAY, "all_devices_idle_or_hidden", "signal:visibility")]


def test_a_manual_status_leaves_an_entry_with_its_source(alice, laptop, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.set_manual_status(alice, Status.DND, "focus")
    services.persist_pending()

    entry = PresenceHistory.objects.get(user=alice, source="manual_status")
    assert (entry.status, entry.status_msg, entry.reason) == (Status.DND, "focus", "manual_status")


def test_the_sweep_records_a_device_going_silent(alice, laptop, django_capture_on_commit_callbacks):
    later = timezone.now() + timedelta(minutes=10)
    with time_machine.travel(later, tick=False), django_capture_on_commit_callbacks(execute=True):
        services.sweep_expired()
    services.persist_pending()

    assert entries_of(alice)[-1] == (Status.OFFLINE, "no_live_device", "sweep")


def test_a_policy_change_records_the_recompute_it_causes(
    alice, laptop, organization, django_capture_on_commit_callbacks, settings
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    services.replace_calendar(alice, [(timezone.now() - timedelta(minutes=1), timezone.now() + timedelta(hours=1))])
    policy = organization.policy
    policy.allow_calendar = False

    with django_capture_on_commit_callbacks(execute=True):
        policy.save()
    services.persist_pending()

    assert entries_of(alice)[-1] == (Status.AVAILABLE, "device_active", "policy")


def test_the_embedded_default_writes_entries_at_once(alice, settings):
    settings.REDIS_URL = ""
    settings.REDIS_CLUSTER_NODES = []
    assert isinstance(hot.store(), hot.LocalHotStore)
    hot.store().reset()
    device, _ = services.register_device(alice, "alice-laptop")

    services.ingest_signals(alice, device.device_id, [Signal(SignalType.CALL, "start", 1)])

    assert entries_of(alice)[-1] == (Status.BUSY, "in_call", "signal:call")


def test_a_second_flusher_leaves_the_buffer_to_the_one_holding_the_lock(alice, laptop):
    services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, "hidden", 2)])
    store = hot.store()
    lock = store.client.lock(store.history_lock_key, timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert history.flush() == 0
        assert entries_of(alice) == []
    finally:
        lock.release()

    assert history.flush() >= 1
    assert len(entries_of(alice)) == 1


def test_entries_inserted_by_a_flusher_that_died_before_trimming_are_not_inserted_twice(alice, laptop):
    services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, "hidden", 2)])
    store = hot.store()
    buffered = store.client.lrange(store.shard(alice.pk).history, 0, -1)
    history._insert([entry for entry in map(history._parse, buffered) if entry is not None])  # then it died

    history.flush()

    assert len(entries_of(alice)) == 1
    assert store.client.llen(store.shard(alice.pk).history) == 0


def test_entries_of_a_user_deleted_before_the_flush_are_dropped_and_the_rest_written(alice, laptop):
    ghost = UserFactory(username="ghost")
    events.publish(events.PresenceChange(None, str(ghost.public_id), "available", "available", None, True, None))
    ghost.delete()
    services.ingest_signals(alice, laptop, [Signal(SignalType.VISIBILITY, "hidden", 2)])

    history.flush()

    assert len(entries_of(alice)) == 1
    assert not PresenceHistory.objects.filter(user_id=ghost.public_id).exists()


def test_device_state_changes_are_recorded_when_the_device_is_written(alice, laptop):
    services.ingest_signals(alice, laptop, [Signal(SignalType.CALL, "start", 2)])
    services.persist_pending()
    services.sign_out_device(alice, laptop)

    states = list(DeviceHistory.objects.filter(user=alice).order_by("at", "pk").values_list("label", "state"))
    assert states == [("laptop", "live"), ("laptop", "in_call"), ("laptop", "signed_out")]


def test_the_writer_records_a_batch_of_device_changes_in_one_insert(make_member):
    # The write behind runs every 2 s for every user changed since: its device history is one
    # INSERT for the batch, not one per device (which cost the worker ~1 ms per changed device).
    devices = []
    for i in range(5):
        user = make_member(f"member{i}")
        device, _ = services.register_device(user, f"laptop-{i}", "laptop")
        devices.append((user, device.device_id))
    services.persist_pending()
    for user, device_id in devices:
        services.ingest_signals(user, device_id, [Signal(SignalType.VISIBILITY, "hidden", 1)])

    with CaptureQueriesContext(connection) as queries:
        assert services.persist_pending() == 5

    inserts = [q["sql"] for q in queries.captured_queries if 'INSERT INTO "presence_devicehistory"' in q["sql"]]
    assert len(inserts) == 1
    assert DeviceHistory.objects.filter(state="hidden").count() == 5


def test_pruning_deletes_entries_older_than_the_retention_period_only(alice, settings):
    settings.PRESENCE_HISTORY_RETENTION_DAYS = 30
    now = timezone.now()
    for days, source in ((31, "old"), (29, "recent")):
        PresenceHistory.objects.create(
            entry_id=f"{days:032x}",
            user=alice,
            status="available",
            activity="available",
            source=source,
            at=now - timedelta(days=days),
        )
        history.record_devices([history.device_entry(alice.pk, "d1", "laptop", source, now - timedelta(days=days))])

    assert prune_presence_history() == 2

    assert list(PresenceHistory.objects.values_list("source", flat=True)) == ["recent"]
    assert list(DeviceHistory.objects.values_list("state", flat=True)) == ["recent"]


def test_watchers_are_not_sent_the_history_only_fields(alice):
    change = events.PresenceChange(1, str(alice.public_id), "away", "away", None, False, None, "idle", "sweep")

    message = events._message(change)

    assert "reason" not in message and "source" not in message
    assert message["status"] == "away"
