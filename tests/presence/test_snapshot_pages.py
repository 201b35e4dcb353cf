"""A shared organization snapshot cut into each viewer's pages, and kept current by the changes
delivered to it: no database, no sockets."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest
from asgiref.sync import async_to_sync

from presence import snapshots

ORG = 41


def peer(user_id: str, status: str = "offline") -> dict:
    return {
        "user_id": user_id,
        "display_name": user_id.upper(),
        "status": status,
        "activity": status,
        "status_msg": None,
        "last_active_ago": None,
        "currently_active": False,
        "status_until": None,
    }


def change(user_id: str, status: str, organization_id: int = ORG) -> dict:
    return {
        "type": "presence.change",
        "organization_id": organization_id,
        "user_id": user_id,
        "status": status,
        "activity": status,
        "status_msg": f"now {status}",
        "currently_active": True,
        "last_active": "2026-11-25T09:00:00+00:00",
        "status_until": None,
    }


def organization(count: int) -> snapshots.OrganizationSnapshot:
    return snapshots.OrganizationSnapshot([peer(f"u{i:02d}") for i in range(count)], [None] * count, 0.0)


def pages_of(snapshot: snapshots.OrganizationSnapshot, viewer: str | None) -> list[dict]:
    return [json.loads(text) for text in snapshot.page_texts(viewer, time.time())]


def expected_pages(peers: list[dict], viewer: str | None, size: int) -> list[tuple[int, list[str], bool]]:
    others = [p["user_id"] for p in peers if p["user_id"] != viewer]
    chunks = [others[i : i + size] for i in range(0, len(others), size)] or [[]]
    return [(n, chunk, n == len(chunks)) for n, chunk in enumerate(chunks, start=1)]


def shape(pages: list[dict]) -> list[tuple[int, list[str], bool]]:
    assert all(page["type"] == "snapshot" for page in pages)
    return [(page["page"], [p["user_id"] for p in page["peers"]], page["last"]) for page in pages]


@pytest.fixture
def small_pages(monkeypatch) -> int:
    monkeypatch.setattr(snapshots, "PAGE_SIZE", 3)
    return 3


@pytest.mark.parametrize("count", [0, 1, 3, 4, 7, 10])
def test_every_viewer_gets_everyone_else_in_full_pages_in_order(small_pages, count):
    snapshot = organization(count)
    everyone = [peer(f"u{i:02d}") for i in range(count)]
    for viewer in [None, "someone-else", *(p["user_id"] for p in everyone)]:
        assert shape(pages_of(snapshot, viewer)) == expected_pages(everyone, viewer, small_pages), viewer


def test_a_change_shows_in_every_viewers_pages_served_after_it(small_pages):
    snapshot = organization(10)
    for viewer in ("u00", "u05", "u09", None):  # fill the shared pages
        pages_of(snapshot, viewer)

    for user_id in ("u00", "u03", "u04", "u09"):
        snapshot.apply(change(user_id, "busy"))

    for viewer in [None, *(f"u{i:02d}" for i in range(10))]:
        seen = {p["user_id"]: p for page in pages_of(snapshot, viewer) for p in page["peers"]}
        for user_id in {"u00", "u03", "u04", "u09"} - {viewer}:
            assert (seen[user_id]["status"], seen[user_id]["status_msg"]) == ("busy", "now busy"), (viewer, user_id)
            assert seen[user_id]["currently_active"] is True
            assert seen[user_id]["display_name"] == user_id.upper()
        assert all(p["status"] == "offline" for u, p in seen.items() if u not in {"u00", "u03", "u04", "u09"})


def test_the_entry_of_a_change_is_shaped_as_the_changes_delta():
    snapshot = organization(1)
    snapshot.apply(change("u00", "dnd"))
    [page] = pages_of(snapshot, None)
    [entry] = page["peers"]
    assert list(entry) == list(peer("u00"))
    assert entry["last_active_ago"] >= 0


def test_a_change_of_someone_the_read_did_not_find_asks_for_a_new_read():
    snapshot = organization(2)
    assert not snapshot.expired(0.0, 30.0)
    snapshot.apply(change("newcomer", "available"))
    assert snapshot.expired(0.0, 30.0)


def test_a_snapshot_expires_with_its_max_age():
    snapshot = organization(2)
    assert not snapshot.expired(29.9, 30.0)
    assert snapshot.expired(30.0, 30.0)
    assert snapshot.expired(0.0, 0.0)


# --- Reads shared, and the changes delivered meanwhile ------------------------------------------


class GatedRead:
    """A read of the organization that waits until let go, as a slow database would."""

    def __init__(self, peers: list[dict]) -> None:
        self.peers = peers
        self.started = threading.Event()
        self.go = threading.Event()
        self.count = 0

    def __call__(self, organization_id: int, read_at: float) -> snapshots.OrganizationSnapshot:
        self.count += 1
        self.started.set()
        assert self.go.wait(5)
        return snapshots.OrganizationSnapshot([dict(p) for p in self.peers], [None] * len(self.peers), read_at)


@pytest.fixture
def gated(monkeypatch) -> GatedRead:
    read = GatedRead([peer("u00"), peer("u01"), peer("u02")])
    monkeypatch.setattr(snapshots, "read_snapshot", read)
    return read


def statuses(texts: list[str]) -> dict[str, str]:
    return {p["user_id"]: p["status"] for text in texts for p in json.loads(text)["peers"]}


def test_connections_arriving_during_a_read_share_it_and_get_the_changes_delivered_meanwhile(gated):
    async def scenario():
        shared = snapshots.SharedSnapshots()
        first = asyncio.ensure_future(shared.pages(ORG, "u00"))
        await asyncio.to_thread(gated.started.wait, 5)
        second = asyncio.ensure_future(shared.pages(ORG, "u01"))
        shared.apply(change("u02", "busy"))  # delivered while the read is under way
        shared.apply(change("u02", "away", ORG + 1))  # another organization's
        gated.go.set()
        texts = await asyncio.gather(first, second)
        shared.apply(change("u00", "dnd"))  # delivered after: applied to the shared snapshot
        return [statuses(t) for t in texts], statuses(await shared.pages(ORG, "u02"))

    (first, second), third = async_to_sync(scenario)()
    assert gated.count == 1
    assert first == {"u01": "offline", "u02": "busy"}
    assert second == {"u00": "offline", "u02": "busy"}
    assert third == {"u00": "dnd", "u01": "offline"}


def test_a_read_finished_after_the_hub_left_the_organization_is_not_kept(gated):
    async def scenario():
        shared = snapshots.SharedSnapshots()
        waiting = asyncio.ensure_future(shared.pages(ORG, "u00"))
        await asyncio.to_thread(gated.started.wait, 5)
        shared.forget(ORG)  # the last connection left: changes from now on go unheard
        gated.go.set()
        await waiting
        return shared.snapshots

    assert async_to_sync(scenario)() == {}


def test_a_connection_going_away_during_the_read_does_not_end_it_for_the_others(gated):
    async def scenario():
        shared = snapshots.SharedSnapshots()
        leaving = asyncio.ensure_future(shared.pages(ORG, "u00"))
        await asyncio.to_thread(gated.started.wait, 5)
        staying = asyncio.ensure_future(shared.pages(ORG, "u01"))
        await asyncio.sleep(0)
        leaving.cancel()
        gated.go.set()
        return statuses(await staying)

    assert async_to_sync(scenario)() == {"u00": "offline", "u02": "offline"}


def test_every_fragment_is_valid_json_whatever_the_names():
    odd = [peer(str(uuid.uuid4())) | {"display_name": name} for name in ('a "quoted" name', "back\\slash", "é ü 名")]
    snapshot = snapshots.OrganizationSnapshot(odd, [None, 1.0, None], 0.0)
    [page] = pages_of(snapshot, None)
    assert [p["display_name"] for p in page["peers"]] == [p["display_name"] for p in odd]
