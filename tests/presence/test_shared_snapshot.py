"""The organization's snapshot, read once per process and shared by its connections: what each
connection gets is what a snapshot of its own would show, less itself, and no change is lost."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from orgs.models import Membership, User
from presence import live, services, snapshots
from presence.vocabulary import Status
from tests.presence.live_helpers import register_device, settle
from tests.presence.socket_helpers import is_delta_of, peers_of, receive_until, rest, run, snapshot, socket

pytestmark = pytest.mark.django_db(transaction=True)

QUIET_SECONDS = 0.5


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """The organizations whose snapshot was read from the database, one entry per read."""
    done: list[int] = []
    read = snapshots.read_snapshot

    def counted(organization_id: int, read_at: float) -> snapshots.OrganizationSnapshot:
        done.append(organization_id)
        return read(organization_id, read_at)

    monkeypatch.setattr(snapshots, "read_snapshot", counted)
    return done


# --- One read, every connection served ----------------------------------------------------------


def test_a_change_between_two_connections_is_in_the_second_ones_snapshot(api_for, alice, bob, make_member, reads):
    dave = make_member("dave")
    register_device(bob)  # a manual status shows while a device is there
    settle(alice, bob, dave)
    bob_api = api_for(bob)

    async def scenario():
        async with socket(alice) as alice_ws:
            await snapshot(alice_ws)
            response = await rest(bob_api, "put", "/api/v1/me/status", {"status": "dnd", "message": "focus"})
            assert response.status_code == 200
            await receive_until(alice_ws, is_delta_of(bob, status="dnd"))  # this process has it
            async with socket(dave) as dave_ws:
                return await peers_of(dave_ws)

    peers = run(scenario)
    bob_seen = peers[str(bob.public_id)]
    assert (bob_seen["status"], bob_seen["status_msg"]) == ("dnd", "focus")
    assert reads == [alice.membership.organization_id]  # both served from one read


def test_a_change_delivered_while_the_snapshot_is_read_is_never_lost(alice, bob, make_member, monkeypatch, reads):
    """The read may or may not see a change the hub delivers meanwhile: either way the change is
    in the shared snapshot once the read is done, for every connection that takes it later."""
    dave = make_member("dave")
    register_device(bob)
    settle(alice, bob, dave)
    delivered = threading.Event()
    apply = snapshots.SharedSnapshots.apply

    def noting_delivery(self, change: dict) -> None:
        apply(self, change)
        delivered.set()

    monkeypatch.setattr(snapshots.SharedSnapshots, "apply", noting_delivery)
    read = snapshots.read_snapshot

    def read_then_change(organization_id: int, read_at: float) -> snapshots.OrganizationSnapshot:
        before = read(organization_id, read_at)  # bob as he was
        services.set_manual_status(bob, Status.DND, "focus")
        assert delivered.wait(5)  # the hub had the change while the read was under way
        return before

    monkeypatch.setattr(snapshots, "read_snapshot", read_then_change)

    async def scenario():
        async with socket(alice) as alice_ws:
            seen = (await peers_of(alice_ws))[str(bob.public_id)]
            async with socket(dave) as dave_ws:
                return seen, (await peers_of(dave_ws))[str(bob.public_id)]

    seen_by_alice, seen_by_dave = run(scenario)
    # Alice's connection took the snapshot once the read was done; Dave's came later still.
    assert (seen_by_alice["status"], seen_by_alice["status_msg"]) == ("dnd", "focus")
    assert (seen_by_dave["status"], seen_by_dave["status_msg"]) == ("dnd", "focus")


def test_a_change_while_nobody_of_the_organization_is_connected_is_read_again(api_for, alice, bob, reads):
    register_device(bob)
    settle(alice, bob)
    bob_api = api_for(bob)

    async def scenario():
        async with socket(alice) as ws:
            before = (await peers_of(ws))[str(bob.public_id)]
        # Nobody here hears of the organization's changes now: what this process held is forgotten.
        response = await rest(bob_api, "put", "/api/v1/me/status", {"status": "busy", "message": "call"})
        assert response.status_code == 200
        async with socket(alice) as ws:
            return before, (await peers_of(ws))[str(bob.public_id)]

    before, after = run(scenario)
    assert before["status"] == "available"
    assert (after["status"], after["status_msg"]) == ("busy", "call")
    assert len(reads) == 2


def test_a_member_who_joined_since_the_read_is_listed_once_they_change(alice, bob, make_member, organization, reads):
    settle(alice, bob)
    joined: list[User] = []

    async def scenario():
        async with socket(alice) as alice_ws:
            assert set(await peers_of(alice_ws)) == {str(bob.public_id)}
            dave = await asyncio.to_thread(make_member, "dave")
            joined.append(dave)
            await asyncio.to_thread(register_device, dave, "dave-laptop")
            await receive_until(alice_ws, is_delta_of(dave, status="available"))
            async with socket(bob) as bob_ws:
                return await peers_of(bob_ws)

    peers = run(scenario)
    assert peers[str(joined[0].public_id)]["status"] == "available"
    assert set(peers) == {str(alice.public_id), str(joined[0].public_id)}
    assert reads == [organization.id, organization.id]


def test_without_a_max_age_each_connection_reads_a_new_name(alice, bob, make_member, settings, reads):
    settings.PRESENCE_SNAPSHOT_MAX_AGE_SECONDS = 0
    dave = make_member("dave")
    settle(alice, bob, dave)

    def rename() -> None:
        User.objects.filter(pk=bob.pk).update(first_name="Robert", last_name="Moog")

    async def scenario():
        async with socket(alice) as alice_ws:
            await snapshot(alice_ws)
            await asyncio.to_thread(rename)  # announces nothing
            async with socket(dave) as dave_ws:
                return await peers_of(dave_ws)

    assert run(scenario)[str(bob.public_id)]["display_name"] == "Robert Moog"
    assert len(reads) == 2


# --- What each viewer sees ----------------------------------------------------------------------


def test_each_viewer_sees_everyone_but_itself_and_only_its_own_organization(
    api_for, alice, bob, carol, make_member, other_organization
):
    erin = make_member("erin", other_organization)
    register_device(bob)
    eve = make_member("eve")
    User.objects.filter(pk=eve.pk).update(is_active=False)  # an inactive member is nobody's colleague
    settle(alice, bob, carol, erin)
    bob_api = api_for(bob)

    async def scenario():
        async with socket(alice) as alice_ws, socket(bob) as bob_ws, socket(carol) as carol_ws:
            seen = {"alice": set(await peers_of(alice_ws)), "bob": set(await peers_of(bob_ws))}
            seen["carol"] = set(await peers_of(carol_ws))
            response = await rest(bob_api, "put", "/api/v1/me/status", {"status": "dnd"})
            assert response.status_code == 200
            await receive_until(alice_ws, is_delta_of(bob, status="dnd"))
            assert await carol_ws.receive_nothing(QUIET_SECONDS)
            async with socket(erin) as erin_ws:
                seen["erin"] = await peers_of(erin_ws)
            return seen

    seen = run(scenario)
    assert seen["alice"] == {str(bob.public_id)}
    assert seen["bob"] == {str(alice.public_id)}
    assert seen["carol"] == {str(erin.public_id)}
    assert set(seen["erin"]) == {str(carol.public_id)}
    assert seen["erin"][str(carol.public_id)]["status"] == "offline"


def test_the_shared_snapshot_shows_what_a_snapshot_of_ones_own_shows(alice, bob, make_member, organization):
    dave = make_member("dave")
    make_member("olga")
    now = timezone.now().replace(microsecond=0)
    with time_machine.travel(now, tick=False):
        services.set_manual_status(bob, Status.BUSY, "in a meeting", now + timedelta(hours=1))
        register_device(dave, "dave-laptop")
        settle(alice, bob, dave)

    with time_machine.travel(now + timedelta(seconds=42), tick=False):
        own = live.snapshot_pages(alice)
        shared = snapshots.read_snapshot(organization.id, 0.0).page_texts(str(alice.public_id), time.time())

    assert [json.loads(text) for text in shared] == json.loads(json.dumps(own))
    ages = {peer["user_id"]: peer["last_active_ago"] for peer in own[0]["peers"]}
    assert ages[str(dave.public_id)] == 42_000


def test_the_pages_of_many_members_hold_everyone_but_the_viewer_once(alice, organization):
    users = User.objects.bulk_create(User(username=f"peer-{i:04d}", password="!") for i in range(1001))
    Membership.objects.bulk_create(Membership(user=user, organization=organization) for user in users)
    viewer = users[600]  # in the second page of the whole list

    async def scenario():
        async with socket(viewer) as ws:
            return await snapshot(ws)

    pages = run(scenario)
    assert [(page["page"], len(page["peers"]), page["last"]) for page in pages] == [
        (1, 500, False),
        (2, 500, False),
        (3, 1, True),
    ]
    ids = [peer["user_id"] for page in pages for peer in page["peers"]]
    expected = [str(user.public_id) for user in [*users, alice] if user != viewer]
    assert sorted(ids) == sorted(expected)
    assert len(set(ids)) == len(ids)
