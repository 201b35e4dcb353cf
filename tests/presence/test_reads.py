"""Reads never lock or write.

A stored decision carries the moment time alone may change it (`valid_until`: a device timing
out, a manual status ending, a calendar block starting). Whoever reads presence after that moment
— GET /api/v1/peers, GET /api/v1/peers/{id}, GET /api/v1/me/presence, the snapshot of the
websocket and of the SSE stream — gets the status the engine decides now, decided in memory from
the user's inputs (the hot store's, or the database's when Redis lost them). The read stores
nothing: the presence row, the hot state, the history and the organization's channel group stay
as they were, and no row is locked. Storing the change, recording it and announcing it is the
sweep's work (beat's; in the embedded default, the in-process beat's), done once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orgs.models import PresencePolicy, User
from presence import hot, live, selectors, services
from presence.models import (
    CalendarBlock,
    Device,
    ManualStatus,
    MicrosoftPresence,
    PresenceHistory,
    PresencePreferences,
    PresenceState,
)
from presence.services import Signal
from presence.vocabulary import SignalType, Status
from tests.captured_sql import locks_and_writes
from tests.factories import UserFactory

# Changes are published when their transaction commits: the tests that listen need real commits.
pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
QUIET_SECONDS = 0.5


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def register(api, installation_id: str = "install-1") -> str:
    response = api.post("/api/v1/devices", {"installation_id": installation_id}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()["device_id"]


def footprint(*users: User) -> dict:
    """All a read could have changed: the users' presence rows, their hot state (its version
    included) and place in the sweep's schedule, and the history. The write-behind runs first,
    so what the database is still to receive from the hot store is counted too."""
    services.persist_pending()  # also writes the history's buffer to the database
    store = hot.store()
    return {
        "rows": list(PresenceState.objects.filter(user__in=users).order_by("user_id").values()),
        "hot": [store.read(user.pk) for user in users],
        "due": [store.client.zscore(store.shard(user.pk).due, str(user.pk)) for user in users],
        "history": list(PresenceHistory.objects.order_by("pk").values_list("pk", flat=True)),
    }


# --- A read answers what time changed, and changes nothing ------------------------------------


def test_a_colleague_whose_device_went_silent_reads_offline_and_the_read_stores_nothing(
    api_for, alice, bob, organization, listen
):
    with time_machine.travel(T0, tick=False):
        register(api_for(bob))

    alice_api, bob_api = api_for(alice), api_for(bob)
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        before = footprint(bob)
        listener = listen(organization.id)
        with CaptureQueriesContext(connection) as queries:
            [peer] = alice_api.get("/api/v1/peers").json()["results"]
            detail = alice_api.get(f"/api/v1/peers/{bob.public_id}").json()
            own = bob_api.get("/api/v1/me/presence").json()
        message = listener.receive(QUIET_SECONDS)
        after = footprint(bob)

    assert (peer["status"], peer["activity"], peer["currently_active"]) == ("offline", "offline", False)
    assert peer["last_active_ago"] == 10 * 60 * 1000
    assert detail["status"] == "offline"
    assert (own["status"], own["reason"]) == ("offline", "no_live_device")
    # Nothing locked, nothing written, nothing announced: the row still holds the last stored decision.
    assert locks_and_writes(queries) == []
    assert message is None
    assert after == before
    assert before["rows"][0]["status"] == "available"


def test_an_expired_manual_status_reads_as_the_status_below_it(api_for, alice, bob, organization, listen):
    alice_api, bob_api = api_for(alice), api_for(bob)
    with time_machine.travel(T0, tick=False):
        register(bob_api)
        bob_api.put("/api/v1/me/status", {"status": "busy", "message": "Focus", "duration_seconds": 60}, format="json")

    # Past the status's end, well within the device's timeout: the device decides again.
    with time_machine.travel(T0 + timedelta(seconds=61), tick=False):
        before = footprint(bob)
        listener = listen(organization.id)
        with CaptureQueriesContext(connection) as queries:
            [peer] = alice_api.get("/api/v1/peers").json()["results"]
            own = bob_api.get("/api/v1/me/presence").json()
        message = listener.receive(QUIET_SECONDS)
        after = footprint(bob)

    assert (peer["status"], peer["status_msg"]) == ("available", None)
    assert (own["status"], own["reason"], own["status_msg"]) == ("available", "device_active", None)
    assert locks_and_writes(queries) == []
    assert message is None
    assert after == before
    assert (before["rows"][0]["status"], before["rows"][0]["status_msg"]) == ("busy", "Focus")


def test_the_live_snapshot_answers_the_same_without_storing_anything(api_for, alice, bob):
    with time_machine.travel(T0, tick=False):
        register(api_for(bob))

    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        before = footprint(bob)
        with CaptureQueriesContext(connection) as queries:
            [page] = live.snapshot_pages(alice)  # the websocket's and the SSE stream's first message
        after = footprint(bob)

    [peer] = page["peers"]
    assert (peer["user_id"], peer["status"]) == (str(bob.public_id), "offline")
    assert locks_and_writes(queries) == []
    assert after == before


# --- The sweep stores and announces it, once ----------------------------------------------------


def test_after_the_read_the_sweep_stores_records_and_announces_the_change_once(
    api_for, alice, bob, organization, listen
):
    with time_machine.travel(T0, tick=False):
        register(api_for(bob))
        services.persist_pending()
    history_before = PresenceHistory.objects.filter(user=bob.public_id).count()

    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        assert api_for(alice).get(f"/api/v1/peers/{bob.public_id}").json()["status"] == "offline"

        listener = listen(organization.id)
        assert services.sweep_expired() == 1
        message = listener.receive()
        services.sweep_expired()
        again = listener.receive(QUIET_SECONDS)
        services.persist_pending()
        read_after = api_for(alice).get(f"/api/v1/peers/{bob.public_id}").json()

    state = PresenceState.objects.get(user=bob)
    assert (state.status, state.reason) == ("offline", "no_live_device")
    assert (message["user_id"], message["status"]) == (str(bob.public_id), "offline")
    assert again is None
    entry = PresenceHistory.objects.filter(user=bob.public_id).order_by("-pk").first()  # the last recorded
    assert PresenceHistory.objects.filter(user=bob.public_id).count() == history_before + 1
    assert (entry.status, entry.source) == ("offline", "sweep")
    assert read_after["status"] == "offline"


# --- Without the hot state: the database's inputs, read in bulk -------------------------------


def test_stale_colleagues_are_decided_from_the_database_in_as_many_queries_for_twelve_as_for_three(
    api_for, alice, make_member
):
    """After Redis lost its data, nobody has a hot decision, and the rows' decisions went stale.
    The read gathers the inputs of every stale colleague on the page with one query per kind of
    input, whatever their number."""
    members = [make_member(f"member{n:02d}") for n in range(12)]
    with time_machine.travel(T0, tick=False):
        for n, member in enumerate(members):
            member_api = api_for(member)
            register(member_api, f"install-{n}")
            if n % 2:
                body = {"status": "busy", "message": "Focus", "duration_seconds": 60}
            else:
                block = {"start": iso(T0 + timedelta(seconds=30)), "end": iso(T0 + timedelta(hours=1))}
                body = {"blocks": [block]}
            response = member_api.put("/api/v1/me/status" if n % 2 else "/api/v1/me/calendar", body, format="json")
            assert response.status_code == 200, response.content
        services.persist_pending()
    hot.store().reset()  # a Redis restart

    # 90 s on: every device is still live; the manual statuses have ended, the blocks begun.
    with time_machine.travel(T0 + timedelta(seconds=90), tick=False):
        before = footprint(*members)
        alice_api = api_for(alice)
        alice_api.get("/api/v1/me/presence")  # the token is known from here on, as in any later request
        with CaptureQueriesContext(connection) as three:
            alice_api.get("/api/v1/peers?limit=3")
        with CaptureQueriesContext(connection) as twelve:
            peers = alice_api.get("/api/v1/peers?limit=12").json()["results"]
        after = footprint(*members)

    expected = {str(m.public_id): ("busy" if n % 2 == 0 else "available") for n, m in enumerate(members)}
    assert {peer["user_id"]: peer["status"] for peer in peers} == expected
    assert {row["status"] for row in before["rows"][1::2]} == {"busy"}  # the rows still hold the manual status
    assert {row["status"] for row in before["rows"][::2]} == {"available"}  # and not yet the calendar's busy
    assert len(twelve.captured_queries) == len(three.captured_queries)
    assert locks_and_writes(twelve) == []
    assert after == before


def test_the_inputs_read_in_bulk_are_those_read_one_by_one(alice, bob, carol, other_organization, organization):
    PresencePolicy.objects.filter(organization=organization).update(
        device_timeout_seconds=90, idle_timeout_seconds=200, allow_microsoft=False, default_priority="manual_first"
    )
    PresencePolicy.objects.filter(organization=other_organization).delete()  # carol's: the defaults
    dave = UserFactory(username="dave")  # in no organization
    now = T0
    PresencePreferences.objects.create(
        user=bob, use_calendar_busy=False, include_microsoft_presence=True, priority="calendar_first"
    )
    ManualStatus.objects.create(user=bob, status="dnd", message="Focus", until=now + timedelta(hours=1), set_at=now)
    MicrosoftPresence.objects.create(user=bob, availability="Busy", activity="InAMeeting", observed_at=now, echo=True)
    for hour in range(-2, 10):  # two ended, ten to come: the next eight count
        start = now + timedelta(hours=hour)
        CalendarBlock.objects.create(user=dave, start=start, end=start + timedelta(minutes=30))
    CalendarBlock.objects.create(user=carol, start=now - timedelta(minutes=5), end=now + timedelta(minutes=5))
    users = list(User.objects.filter(pk__in=[alice.pk, bob.pk, carol.pk, dave.pk]))

    with CaptureQueriesContext(connection) as queries:
        in_bulk = selectors.presence_contexts_for(users, now)

    assert in_bulk == {user.pk: selectors.presence_context_for(user, now) for user in users}
    assert len(queries.captured_queries) == 5  # memberships with policies, preferences, manual, Microsoft, calendar
    assert len(in_bulk[dave.pk][0].calendar) == selectors.CALENDAR_BLOCKS_READ


def test_after_a_redis_restart_a_read_answers_what_the_sweep_then_stores(alice, bob, settings):
    """The database's copy of a device's last-seen time lags behind the heartbeats; rebuilt from
    it, a steady device counts as live until its next heartbeat is due. A read applies the same
    rule as the sweep's rebuild, so both say the same."""
    timeout = timedelta(seconds=settings.PRESENCE_DEVICE_TIMEOUT_SECONDS)
    with time_machine.travel(T0, tick=False):
        device, _ = services.register_device(bob, "bob-laptop")
    for seq, offset in enumerate(range(30, 151, 30), start=1):
        with time_machine.travel(T0 + timedelta(seconds=offset), tick=False):
            services.ingest_signals(bob, device.device_id, [Signal(SignalType.HEARTBEAT, None, seq)])
            services.persist_pending()  # the write-behind, every few seconds under beat
    hot.store().reset()  # a Redis restart
    restart = T0 + timedelta(seconds=200)
    assert Device.objects.get(pk=device.device_id).last_seen_at + timeout < restart
    assert PresenceState.objects.get(user=bob).valid_until <= restart

    with time_machine.travel(restart, tick=False):
        before = footprint(bob)
        with CaptureQueriesContext(connection) as queries:
            read = selectors.fresh_presence_of(selectors.colleagues_of(alice))[bob.pk]
        unchanged = footprint(bob) == before
        services.sweep_expired()
    stored = PresenceState.objects.get(user=bob)

    assert (read.status, read.reason) == (Status.AVAILABLE, "device_active")
    assert (stored.status, stored.reason) == (read.status, read.reason)
    assert locks_and_writes(queries) == []
    assert unchanged


# --- The embedded default -------------------------------------------------------------------


def test_the_embedded_default_reads_without_storing_too(alice, bob, settings):
    settings.REDIS_URL = ""
    settings.REDIS_CLUSTER_NODES = []
    settings.PRESENCE_WRITE_BEHIND = False
    assert isinstance(hot.store(), hot.LocalHotStore)
    hot.store().reset()
    with time_machine.travel(T0, tick=False):
        services.register_device(bob, "bob-laptop")

    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        row_before = PresenceState.objects.filter(user=bob).values().get()
        history_before = PresenceHistory.objects.count()
        with CaptureQueriesContext(connection) as queries:
            state = selectors.fresh_presence_of(selectors.colleagues_of(alice))[bob.pk]
        assert PresenceState.objects.filter(user=bob).values().get() == row_before
        assert PresenceHistory.objects.count() == history_before
        # The in-process beat's sweep is what stores it.
        assert services.sweep_expired() >= 1

    assert state.status == Status.OFFLINE
    assert locks_and_writes(queries) == []
    assert PresenceState.objects.get(user=bob).status == Status.OFFLINE
