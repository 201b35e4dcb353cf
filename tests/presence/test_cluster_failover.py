"""A failover drill on a real Redis Cluster (three masters, a replica each, on loopback): a master
is killed while the organization works, its replica takes over, and presence converges with
nothing the database held lost.

The drill has a cluster of its own (`tests.redis_cluster`), so it runs in every suite: it kills
one of its masters, which the suite's shared cluster must not suffer.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator

import pytest
import redis.exceptions
from django.test import Client

from orgs.models import User
from presence import history, hot, selectors, services
from presence.models import PresenceHistory, PresenceState
from presence.services import Signal
from presence.vocabulary import SignalType, Status
from tests.redis_cluster import LocalCluster, free_port, running

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

# What a device reports, and what its user is then seen as.
REPORTS: dict[str, tuple[list[Signal], str]] = {
    "hidden": ([Signal(SignalType.VISIBILITY, "hidden", 2)], Status.AWAY),
    "in a call": ([Signal(SignalType.CALL, "start", 2)], Status.BUSY),
    "at work": ([Signal(SignalType.ACTIVITY, "active", 2)], Status.AVAILABLE),
}
RETRY_SECONDS = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running() as local:
        yield local


@pytest.fixture
def on_the_cluster(cluster: LocalCluster, settings) -> hot.HotStore:
    """This deployment's hot store on the drill's cluster."""
    settings.REDIS_CLUSTER_NODES = cluster.seeds.split(",")
    settings.PRESENCE_WRITE_BEHIND = True
    store = hot.store()
    store.reset()
    return store


def until_redis_answers(action: Callable[[], object]) -> object:
    """What a client does while the cluster fails over: its request is refused (503, Redis
    unavailable), and it tries again a moment later."""
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            return action()
        except (redis.exceptions.ConnectionError, redis.exceptions.ClusterError, redis.exceptions.TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_readiness_asks_every_master_of_the_cluster(on_the_cluster, settings):
    assert Client().get("/readyz").json()["checks"]["redis"]["status"] == "ok"

    settings.REDIS_CLUSTER_NODES = [f"127.0.0.1:{free_port()}"]  # a cluster nobody runs
    response = Client().get("/readyz")

    assert response.status_code == 503
    assert "redis" in response.json()["failed"]
    assert response.json()["checks"]["redis"]["error"] == "ConnectionError"


def test_presence_converges_and_the_database_keeps_everything_when_a_master_fails(on_the_cluster, cluster, make_member):
    # Thirty colleagues spread over the shards (and so over the three masters), each on a device
    # that reported one of three things, all written behind to the database.
    people: list[tuple[User, str, str]] = []
    for n in range(30):
        user = make_member(f"member{n:02d}")
        device, _ = services.register_device(user, f"install-{n}")
        report = list(REPORTS)[n % len(REPORTS)]
        services.ingest_signals(user, device.device_id, REPORTS[report][0])
        people.append((user, device.device_id, report))
    services.persist_pending()
    history.flush()
    stored_before = dict(PresenceState.objects.values_list("user_id", "status"))
    history_before = PresenceHistory.objects.count()
    assert stored_before == {user.pk: REPORTS[report][1] for user, _, report in people}

    # The master of the first colleague's shard dies; its replica takes over.
    victim = cluster.master_of(on_the_cluster.user_key(people[0][0].pk))
    cluster.kill(victim)
    cluster.wait_for_failover(victim)

    # Every device carries on: its next report goes through once the cluster answers again.
    for user, device_id, report in people:
        signals = [Signal(s.type, s.value, 3) for s in REPORTS[report][0]]
        until_redis_answers(
            lambda user=user, device_id=device_id, signals=signals: services.ingest_signals(user, device_id, signals)
        )
    until_redis_answers(services.persist_pending)

    # Presence converged: everyone is seen as their device says, in the hot store and in the
    # database; nothing the database held before was lost.
    for user, _, report in people:
        assert selectors.current_presence(user).status == REPORTS[report][1], user.username
    assert dict(PresenceState.objects.values_list("user_id", "status")) == stored_before
    assert PresenceHistory.objects.count() >= history_before

    # And what changes from now on is written behind as before, from the new master too.
    first, device_id, _ = people[0]
    services.ingest_signals(first, device_id, [Signal(SignalType.MEETING, "start", 4)])
    assert services.persist_pending() == 1
    assert PresenceState.objects.get(user=first).status == Status.BUSY
