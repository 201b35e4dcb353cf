"""The per-process hub: a change received once, written to every socket of its organization, and
never before a socket's snapshot."""

from __future__ import annotations

import asyncio

from asgiref.sync import async_to_sync

from presence import events, live
from presence.hub import Hub, Listener

ORG = 41
OTHER_ORG = 42


def change(user_id: str, status: str, organization_id: int = ORG) -> dict:
    return {
        "type": "presence.change",
        "organization_id": organization_id,
        "user_id": user_id,
        "status": status,
        "activity": status,
        "status_msg": None,
        "currently_active": False,
        "last_active": None,
    }


def listener(received: list[str], organization_id: int = ORG, user_ids: frozenset[str] | None = None) -> Listener:
    async def send_text(text: str) -> None:
        received.append(text)

    return Listener(live.Watch(organization_id, user_ids), send_text)


def stuck_listener(closed: list[bool]) -> Listener:
    """A client that never reads: every write waits forever."""

    async def send_text(text: str) -> None:
        await asyncio.Event().wait()

    async def close() -> None:
        closed.append(True)

    return Listener(live.Watch(ORG), send_text, close)


async def publish_and_settle(hub: Hub, *changes: dict) -> None:
    for item in changes:
        await hub.layer.group_send(events.organization_group(item["organization_id"]), item)
    await asyncio.sleep(0.3)


def test_a_change_reaches_every_resumed_socket_of_its_organization_only():
    async def scenario():
        hub = Hub()
        first, second, elsewhere = [], [], []
        members = [listener(first), listener(second), listener(elsewhere, OTHER_ORG)]
        for member in members:
            await hub.join(member)
            await hub.resume(member)

        await publish_and_settle(hub, change("u1", "busy"))

        for member in members:
            await hub.leave(member)
        return first, second, elsewhere

    first, second, elsewhere = async_to_sync(scenario)()
    assert len(first) == len(second) == 1
    assert '"status": "busy"' in first[0]
    assert elsewhere == []


def test_sockets_joining_at_once_share_one_listener_and_all_get_every_change():
    """Joining waits on a Redis subscription: sockets connecting together must not each start a
    listener of their own (one would be orphaned, and its sockets would miss every change)."""

    async def scenario():
        hub = Hub()
        received = [[] for _ in range(20)]
        members = [listener(box) for box in received]
        await asyncio.gather(*(hub.join(member) for member in members))
        tasks = [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "Hub._deliver_forever"]
        for member in members:
            await hub.resume(member)

        await publish_and_settle(hub, change("u1", "busy"), change("u1", "away"))

        await asyncio.gather(*(hub.leave(member) for member in members))
        return received, len(tasks)

    received, listeners = async_to_sync(scenario)()
    assert listeners == 1
    assert all(len(box) == 2 for box in received)


def test_changes_wait_for_the_snapshot_and_then_come_in_order():
    async def scenario():
        hub = Hub()
        received = []
        member = listener(received)
        await hub.join(member)  # paused, as while its snapshot is sent

        await publish_and_settle(hub, change("u1", "busy"), change("u1", "away"))
        waiting = list(received)
        received.append("snapshot")
        await hub.resume(member)
        await publish_and_settle(hub, change("u1", "available"))

        await hub.leave(member)
        return waiting, received

    waiting, received = async_to_sync(scenario)()
    assert waiting == []
    assert received[0] == "snapshot"
    assert ['"busy"' in r for r in received[1:]] == [True, False, False]
    assert '"away"' in received[2] and '"available"' in received[3]


def test_a_subscription_filters_what_a_socket_gets():
    async def scenario():
        hub = Hub()
        received = []
        member = listener(received, user_ids=frozenset({"u2"}))
        await hub.join(member)
        await hub.resume(member)

        await publish_and_settle(hub, change("u1", "busy"), change("u2", "away"))

        await hub.leave(member)
        return received

    received = async_to_sync(scenario)()
    assert len(received) == 1 and '"u2"' in received[0]


def test_the_last_socket_leaving_stops_the_listener():
    async def scenario():
        hub = Hub()
        member = listener([])
        await hub.join(member)
        task = hub.task
        await hub.leave(member)
        await asyncio.sleep(0)
        return hub, task

    hub, task = async_to_sync(scenario)()
    assert hub.task is None and hub.listeners == {}
    assert task.cancelled() or task.done()


def test_a_client_that_does_not_read_delays_nobody_else():
    async def scenario():
        hub = Hub()
        received, closed = [], []
        stuck, reader = stuck_listener(closed), listener(received)
        for member in (stuck, reader):
            await hub.join(member)
            await hub.resume(member)

        await publish_and_settle(hub, change("u1", "busy"), change("u1", "away"))

        await hub.leave(stuck)
        await hub.leave(reader)
        return received

    assert len(async_to_sync(scenario)()) == 2


def test_a_client_too_far_behind_is_closed_and_left(monkeypatch):
    monkeypatch.setattr("presence.hub.MAX_WAITING", 2)

    async def scenario():
        hub = Hub()
        closed = []
        stuck = stuck_listener(closed)
        await hub.join(stuck)
        await hub.resume(stuck)

        await publish_and_settle(hub, *(change("u1", status) for status in ("busy", "away", "dnd", "available")))

        return closed, hub.listeners

    closed, listeners = async_to_sync(scenario)()
    assert closed == [True]
    assert listeners == {}


def test_sockets_are_closed_to_start_afresh_when_the_layer_may_have_missed_changes():
    """A clustered layer that lost its subscriptions for a while (a master failed over) says so:
    changes may have been missed, so every socket is closed and its client reconnects to a fresh
    snapshot."""
    from presence.sharded_layer import RESUBSCRIBED

    async def scenario():
        hub = Hub()
        closed, other_closed = [], []
        members = [stuck_listener(closed), stuck_listener(other_closed)]
        members[1].watch = live.Watch(OTHER_ORG)
        for member in members:
            await hub.join(member)
            await hub.resume(member)
        await hub.layer.send(hub.channel, {"type": RESUBSCRIBED})
        await asyncio.sleep(0.3)
        for member in members:
            await hub.leave(member)
        return closed, other_closed

    assert async_to_sync(scenario)() == ([True], [True])
