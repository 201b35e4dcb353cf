"""Presence published end to end by the processes of a deployment: a real Celery worker and beat,
on the test Redis and the test database, deliver a member's presence to a real Synapse (as the
appservice) and to the Microsoft Graph fake.

This process only changes the member's presence, as the web server would: its tasks go to the
broker (not run in-process, as elsewhere in the suite), and everything after that is the
worker's and beat's. What the member's colleagues would see is read back from Synapse and from
the fake; every check polls until a deadline, none sleeps a fixed time.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import redis

from integrations.mapping import MATRIX_BUSY, MATRIX_ONLINE, MATRIX_UNAVAILABLE
from integrations.models import DispatchState, ExternalAccount, MicrosoftTenant
from orgs.models import PresencePolicy, User
from presence import selectors, services
from presence.vocabulary import Status
from sparks_site.beat import LOCK_NAME
from sparks_site.celery import app
from tests.databases import process_environment
from tests.factories import MatrixHomeserverFactory
from tests.integrations.fake_microsoft import FakeMicrosoft, Fault
from tests.integrations.synapse import MatrixUser, Synapse
from tests.real_processes import CeleryProcesses, eventually

# Transactional: the worker and beat read what this process writes, so it must be committed.
pytestmark = [pytest.mark.synapse, pytest.mark.django_db(transaction=True)]

# What the worker and beat run with, besides the test database, Redis and the secrets: server-side
# dispatch on, and intervals of a second so that a test sees beat's periodic work within seconds.
PROCESS_SETTINGS = {
    "CELERY_TASK_ALWAYS_EAGER": "0",
    "PRESENCE_USE_AGGREGATOR": "true",
    "PRESENCE_SERVER_DISPATCH": "true",
    "INTEGRATIONS_DISPATCH_COALESCE_SECONDS": "0.2",
    "MATRIX_PRESENCE_REFRESH_SECONDS": "1",
    "MICROSOFT_IMPORT_INTERVAL_SECONDS": "1",
    # The shortest lock allowed: a beat that did not stop cleanly frees it within 3 s.
    "BEAT_LOCK_TTL_SECONDS": "3",
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "INFO",
}
REPORT = "Writing the quarterly report"


# --- The worker and beat ------------------------------------------------------------------------


class Processes(CeleryProcesses):
    """`celery worker` and `celery beat`, each logging to a file of its own."""

    def running(self, name: str, says: str) -> bool:
        if self.processes[name].poll() is not None:
            raise AssertionError(f"celery {name} exited:\n{self.log(name)[-6000:]}")
        return says in self.log(name)

    def ready(self) -> None:
        eventually("the worker is ready", lambda: self.running("worker", " ready."), timeout=30)
        eventually("beat runs the schedule", lambda: self.running("beat", "Beat holds the lock"), timeout=30)

    def stop(self) -> None:
        """SIGTERM to both, as a deployment stops them: the worker finishes its task, beat syncs its
        schedule and releases its lock.

        Beat syncs from inside its SIGTERM handler: a signal that lands while beat is in a database
        query deadlocks it on its own connection, and it never exits. Killed then, after a few
        seconds, and its lock freed (it would expire within BEAT_LOCK_TTL_SECONDS anyway)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for name, process in self.processes.items():
            try:
                process.wait(5 if name == "beat" else 20)
            except subprocess.TimeoutExpired:
                print(f"celery {name} did not stop on SIGTERM: killed")
                process.kill()
                process.wait(10)
                if name == "beat":
                    redis.Redis.from_url(self.env["REDIS_URL"]).delete(LOCK_NAME)


def _purge_default_queue() -> None:
    """Drop whatever waits on the broker's default queue: nothing sent before (or left after) this
    test's processes may be run by them (or by a later test's)."""
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(app.conf.task_default_queue)


@pytest.fixture
def deployment(transactional_db, settings, server_dispatch, fake_microsoft, tmp_path) -> Iterator[Processes]:
    """A Celery worker and beat on the suite's Redis (broker, cache, hot store: this process's) and
    the test database, pointed at the Graph fake and trusting its CA; stopped before the test
    database is emptied. Meanwhile this process sends its tasks to them. Started here, ready
    once `ready()` returned (the broker holds what is sent before)."""
    env = process_environment(
        settings.REDIS_URL,
        **PROCESS_SETTINGS,
        MICROSOFT_LOGIN_URL=settings.MICROSOFT_LOGIN_URL,
        MICROSOFT_GRAPH_URL=settings.MICROSOFT_GRAPH_URL,
        INTEGRATIONS_CA_BUNDLE=settings.INTEGRATIONS_CA_BUNDLE,
        # The same keys as this process: the tenant's client secret and the appservice token
        # this process encrypted must decrypt there.
        INTEGRATIONS_SECRET_KEY=settings.INTEGRATIONS_SECRET_KEY,
        INTEGRATIONS_SECRET_KEYS=",".join(settings.INTEGRATIONS_SECRET_KEYS),
    )
    processes = Processes(tmp_path, env)
    was_eager = app.conf.task_always_eager
    _purge_default_queue()
    try:
        processes.start("worker", "--pool=solo", "--without-gossip", "--without-mingle", "--without-heartbeat")
        processes.start("beat", "--schedule", str(tmp_path / "beat-schedule"))
        app.conf.task_always_eager = False
        yield processes
    finally:
        app.conf.task_always_eager = was_eager
        processes.stop()
        _purge_default_queue()
        # Shown by pytest only when the test failed.
        for name in processes.processes:
            print(f"--- celery {name} ---\n{processes.log(name)[-8000:]}")


# --- The member and what their colleagues see ----------------------------------------------------


@dataclass
class Member:
    """A SPARKS member who shares their presence, known on Matrix and in Entra."""

    user: User
    account: ExternalAccount
    tenant: MicrosoftTenant
    on_matrix: MatrixUser
    colleague: MatrixUser  # on Matrix, in a room with the member
    synapse: Synapse
    graph: FakeMicrosoft

    def matrix(self) -> dict:
        """The member's presence, as their Matrix colleague reads it."""
        return self.synapse.presence_of(self.colleague, self.on_matrix.user_id)

    def teams_session(self) -> dict | None:
        """SPARKS' presence session for the member in Graph (its sessionId: the app's client id)."""
        with self.graph.lock:
            return self.graph.sessions.get((self.account.microsoft_object_id, self.tenant.client_id))

    def teams_preferred(self) -> dict | None:
        with self.graph.lock:
            return self.graph.preferred.get(self.account.microsoft_object_id)

    def dispatch(self, target: str) -> DispatchState | None:
        return DispatchState.objects.filter(user=self.user, target=target).first()

    def delivered(self, target: str, status: str) -> bool:
        """The worker has sent `status` to `target` and nothing newer is waiting."""
        row = self.dispatch(target)
        return row is not None and not row.pending and (row.sent or {}).get("status") == status


def available_session(member: Member) -> bool:
    return member.teams_session() == {"availability": "Available", "activity": "Available"}


@pytest.fixture
def member(deployment, organization, make_member, synapse, tenant, sharing, fake_microsoft) -> Member:
    MatrixHomeserverFactory(
        organization=organization, base_url=synapse.base_url, server_name=synapse.server_name, as_token=synapse.as_token
    )
    localpart = f"sparks{uuid.uuid4().hex[:10]}"
    user = make_member(localpart)
    with ThreadPoolExecutor(2) as registering:
        on_matrix, colleague = registering.map(synapse.register, [localpart, f"colleague{uuid.uuid4().hex[:10]}"])
    synapse.share_a_room(colleague, on_matrix)
    account = sharing(user, matrix_user_id=on_matrix.user_id)
    deployment.ready()
    return Member(user, account, tenant, on_matrix, colleague, synapse, fake_microsoft)


# --- The tests ------------------------------------------------------------------------------------


def test_presence_changes_reach_matrix_and_teams_through_the_worker(member):
    # A device signs in: the member is available.
    services.register_device(member.user, "laptop")

    eventually("Matrix shows the member online", lambda: member.matrix()["presence"] == MATRIX_ONLINE)
    eventually("Teams has SPARKS' Available session", lambda: available_session(member))
    assert member.teams_preferred() is None

    # Do not disturb, with a message: busy on Matrix, a preferred DoNotDisturb in Teams.
    services.set_manual_status(member.user, Status.DND, REPORT)

    busy = eventually("Matrix shows the member busy", lambda: (p := member.matrix())["presence"] == MATRIX_BUSY and p)
    assert busy["status_msg"] == REPORT
    eventually(
        "Teams has DoNotDisturb as the member's preferred presence",
        lambda: member.teams_preferred() == {"availability": "DoNotDisturb", "activity": "DoNotDisturb"},
    )
    assert available_session(member)  # the session stays Available; the preferred presence says it all

    # Nothing changes for a while, yet beat's refresh sends the Matrix presence again every
    # MATRIX_PRESENCE_REFRESH_SECONDS (1 s here): Synapse would let a presence that no client
    # syncs decay to offline.
    eventually("the busy state is delivered to Matrix", lambda: member.delivered("matrix", "dnd"))
    sent_at = [member.dispatch("matrix").sent_at]

    def sent_again() -> bool:
        latest = member.dispatch("matrix").sent_at
        if latest > sent_at[-1]:
            sent_at.append(latest)
        return len(sent_at) >= 3

    eventually("beat's refresh sends the Matrix presence again, twice", sent_again)
    # Synapse took them: busy was set more than two refreshes ago, yet the member was active less
    # than 1.5 s ago.
    eventually(
        "Synapse saw a refreshed presence",
        lambda: (p := member.matrix())["presence"] == MATRIX_BUSY and p.get("last_active_ago", 10_000) < 1500,
    )
    assert member.matrix()["status_msg"] == REPORT

    # Do not disturb cleared: online again, no message, and SPARKS' preferred presence removed.
    services.clear_manual_status(member.user)

    online = eventually(
        "Matrix shows the member online again", lambda: (p := member.matrix())["presence"] == MATRIX_ONLINE and p
    )
    assert online.get("status_msg") is None
    eventually("Teams no longer has a preferred presence from SPARKS", lambda: member.teams_preferred() is None)
    assert available_session(member)
    eventually(
        "both deliveries are recorded",
        lambda: member.delivered("matrix", "available") and member.delivered("microsoft", "available"),
    )


def test_a_throttled_teams_delivery_is_retried_after_the_wait_graph_asked_for(member):
    services.register_device(member.user, "laptop")
    eventually(
        "the Available session is delivered",
        lambda: available_session(member) and member.delivered("microsoft", "available"),
    )

    # Graph answers the next request 429, asking to wait a second.
    calls_before = len(member.graph.graph_calls())
    member.graph.fail_next(Fault(429, {"Retry-After": "1"}))
    services.set_manual_status(member.user, Status.AWAY)

    # Matrix does not wait for Teams.
    eventually("Matrix shows the member away", lambda: member.matrix()["presence"] == MATRIX_UNAVAILABLE)
    eventually("Graph turns a request away", lambda: not member.graph.faults, interval=0.02)
    throttled_at = time.monotonic()
    eventually(
        "the newest presence reaches Teams within Retry-After and a few seconds",
        lambda: member.teams_session() == {"availability": "Away", "activity": "Away"},
        timeout=1 + 5,
        interval=0.02,
    )
    # The worker sent the throttled request again, not at once but after the wait.
    waited = time.monotonic() - throttled_at
    assert waited > 0.5, f"sent again after {waited:.2f} s, before the Retry-After of 1 s"
    throttled, *after = member.graph.graph_calls()[calls_before:]
    assert throttled in after
    eventually("the delivery is recorded", lambda: member.delivered("microsoft", "away"))
    assert member.dispatch("microsoft").attempts == 0


def test_beat_imports_the_microsoft_presence_of_members_who_include_it(member, organization):
    services.register_device(member.user, "laptop")
    eventually(
        "the member is published",
        lambda: member.delivered("matrix", "available") and member.delivered("microsoft", "available"),
    )

    # Beat's import runs every second, but reads nobody until a member includes Microsoft presence.
    assert member.graph.graph_calls("/getPresencesByUserId") == []

    PresencePolicy.objects.filter(organization=organization).update(allow_microsoft=True)  # the default
    services.update_preferences(member.user, include_microsoft_presence=True)

    def reads() -> bool:
        calls = member.graph.graph_calls("/getPresencesByUserId")
        assert all(call.body["ids"] == [member.account.microsoft_object_id] for call in calls)
        return len(calls) >= 2

    eventually("beat's import reads the member's Microsoft presence, again and again", reads)
    # Nothing busier was read back than what the member's devices say: still available.
    assert selectors.current_presence(member.user).status == Status.AVAILABLE
    assert member.matrix()["presence"] == MATRIX_ONLINE
