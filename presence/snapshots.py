"""An organization's colleague snapshot, read once and shared by the live connections of a process.

Every socket and SSE stream that watches a whole organization starts with the same list: its active
members and their presence, in username order, less the watcher itself. Read and rendered for each
connection, that cost ~38 ms of the server for 1,000 members and ~0.6 s for 10,000, so a reconnect
storm (every client of an organization at once, after a deploy) took from a minute to an hour. Here each
process reads it once and keeps it current: every change published to the organization passes
through the process's hub (`presence.hub`), which applies it to the shared snapshot before handing
it to the sockets: a change does not outdate the snapshot, and needs no new read.

Why a connection never misses a change. It joins the hub (paused) before it takes the snapshot, as
it did before taking one of its own. The shared snapshot holds, for each member, the state of the
last change of theirs the hub delivered since the snapshot's read began, or else the state the read
found, which is at least as new as every change delivered before the read began (a change is
published once stored). A change delivered after the connection joined is in its backlog, sent
after the snapshot; one delivered before is in the snapshot. Changes delivered while the read is
under way are kept and applied once it is done, in order, so it does not matter whether the read
saw them. The hub forgets a snapshot when it leaves the organization's group: from then on it would
miss changes.

What is the viewer's own: the viewer is left out of the pages it gets (it is no colleague of its
own), so the page texts are cut per viewer from shared fragments; nothing else of a colleague's
entry depends on who watches.

What no change announces (a member joining or leaving, a new name) shows in a shared snapshot once
it is read again: after PRESENCE_SNAPSHOT_MAX_AGE_SECONDS, or at the next connection after a change
of someone it does not hold (a new member). A decision outdated by time shows when the sweep
announces it (within PRESENCE_SWEEP_INTERVAL_SECONDS), as on the connections already open.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from presence import live

PAGE_SIZE = live.SNAPSHOT_PAGE_SIZE

# How old the `last_active_ago` of a served snapshot may be: ages are computed again for the whole
# organization when older (a few milliseconds for 10,000 members), never for each connection.
AGES_MAX_AGE_SECONDS = 1.0

# What a change sets of a colleague's entry: the rest (id, name) is the read's.
_CHANGED_FIELDS = ("status", "activity", "status_msg", "currently_active", "status_until")


def _halves(peer: dict[str, Any]) -> tuple[str, str]:
    """The peer's JSON text before and after its `last_active_ago` value (as `json.dumps` writes
    the whole): the age changes with time, the rest only with a change."""
    keys = list(peer)
    at = keys.index("last_active_ago")
    before = json.dumps({key: peer[key] for key in keys[:at]})
    after = json.dumps({key: peer[key] for key in keys[at + 1 :]})
    return before[:-1] + ', "last_active_ago": ', ", " + after[1:]


def _age(last_active: float | None, now: float) -> str:
    # As `wire.last_active_ago_ms`, on epoch seconds.
    return "null" if last_active is None else str(max(0, int((now - last_active) * 1000)))


def _page_text(fragments: list[str], number: int, last: bool) -> str:
    # As the consumer's encoder writes `{"type": "snapshot", "peers": [...], "page": n, "last": b}`.
    peers = ", ".join(fragments)
    return f'{{"type": "snapshot", "peers": [{peers}], "page": {number}, "last": {"true" if last else "false"}}}'


class OrganizationSnapshot:
    """One organization's members as a colleague sees them, as read, with every change since applied.

    Rendered as fragments, one entry's JSON each, and pages of them cached: a page of the whole
    list (kind 0), and a page of the list less one entry before it (kind 1: what a viewer listed
    earlier sees). Only the page that held the viewer is cut for that viewer."""

    def __init__(self, peers: list[dict[str, Any]], last_active: list[float | None], read_at: float) -> None:
        self.peers = peers
        self.last_active = last_active
        self.position = {peer["user_id"]: index for index, peer in enumerate(peers)}
        self.halves = [_halves(peer) for peer in peers]
        self.read_at = read_at
        self.outdated = False
        self.fragments: list[str] = []
        self.aged_at = -math.inf
        self._pages: dict[tuple[int, int, bool], str] = {}
        self.age(time.time())

    def expired(self, now: float, max_age: float) -> bool:
        """Read again before serving it (`now`, `read_at`: the event loop's clock)."""
        return self.outdated or now - self.read_at >= max_age

    def apply(self, change: dict[str, Any]) -> None:
        """A change the hub delivered: the colleague's entry shows it from now on."""
        index = self.position.get(change.get("user_id"))
        if index is None:
            # Someone the read did not find (a member since): only a new read can list them.
            self.outdated = True
            return
        delta = live.presence_delta(change, timezone.now())
        peer = self.peers[index]
        for key in _CHANGED_FIELDS:
            peer[key] = delta[key]
        last_active = change.get("last_active")
        self.last_active[index] = datetime.fromisoformat(last_active).timestamp() if last_active else None
        head, tail = self.halves[index] = _halves(peer)
        self.fragments[index] = head + _age(self.last_active[index], time.time()) + tail
        for kind, page in ((0, index // PAGE_SIZE), (1, (index - 1) // PAGE_SIZE)):
            self._pages.pop((kind, page, False), None)
            self._pages.pop((kind, page, True), None)

    def age(self, now: float) -> None:
        """Every entry's `last_active_ago` as of `now` (epoch seconds)."""
        self.fragments = [
            head + _age(last_active, now) + tail
            for (head, tail), last_active in zip(self.halves, self.last_active, strict=True)
        ]
        self._pages.clear()
        self.aged_at = now

    def page_texts(self, viewer_id: str | None, now: float) -> list[str]:
        """The snapshot messages for `viewer_id`, as JSON texts: everyone but the viewer, in pages."""
        if now - self.aged_at > AGES_MAX_AGE_SECONDS:
            self.age(now)
        skip = self.position.get(viewer_id)
        count = len(self.fragments) - (skip is not None)
        pages = max(1, math.ceil(count / PAGE_SIZE))
        texts = []
        for page in range(pages):
            last = page == pages - 1
            start = page * PAGE_SIZE
            if skip is None or start + PAGE_SIZE <= skip:
                texts.append(self._page(0, page, last))
            elif start > skip:
                texts.append(self._page(1, page, last))
            else:
                cut = self.fragments[start:skip] + self.fragments[skip + 1 : start + PAGE_SIZE + 1]
                texts.append(_page_text(cut, page + 1, last))
        return texts

    def _page(self, kind: int, page: int, last: bool) -> str:
        key = (kind, page, last)
        text = self._pages.get(key)
        if text is None:
            start = page * PAGE_SIZE + kind
            text = self._pages[key] = _page_text(self.fragments[start : start + PAGE_SIZE], page + 1, last)
        return text


def read_snapshot(organization_id: int, read_at: float) -> OrganizationSnapshot:
    """Read and render an organization's snapshot (synchronous: the database and the hot store)."""
    peers, last_active = live.organization_peers(organization_id)
    return OrganizationSnapshot(peers, last_active, read_at)


class _Read:
    """A read under way, and the changes delivered meanwhile, to apply once it is done."""

    def __init__(self) -> None:
        self.changes: list[dict[str, Any]] = []
        self.task: asyncio.Task | None = None


class SharedSnapshots:
    """The shared snapshots of one event loop's hub, by organization id."""

    def __init__(self) -> None:
        self.snapshots: dict[int, OrganizationSnapshot] = {}
        self.reads: dict[int, _Read] = {}

    def apply(self, change: dict[str, Any]) -> None:
        """A change the hub received (before it hands it to any socket)."""
        organization_id = change.get("organization_id")
        read = self.reads.get(organization_id)
        if read is not None:
            read.changes.append(change)
        snapshot = self.snapshots.get(organization_id)
        if snapshot is not None:
            snapshot.apply(change)

    def forget(self, organization_id: int) -> None:
        """The hub no longer hears of the organization's changes: what it holds of it would go stale."""
        self.snapshots.pop(organization_id, None)
        self.reads.pop(organization_id, None)

    async def pages(self, organization_id: int, viewer_id: str) -> list[str]:
        """The snapshot texts for a viewer whose connection joined the hub already (see the module)."""
        loop = asyncio.get_running_loop()
        snapshot = self.snapshots.get(organization_id)
        if snapshot is None or snapshot.expired(loop.time(), settings.PRESENCE_SNAPSHOT_MAX_AGE_SECONDS):
            snapshot = await self._read(organization_id)
        return snapshot.page_texts(viewer_id, time.time())

    async def _read(self, organization_id: int) -> OrganizationSnapshot:
        read = self.reads.get(organization_id)
        if read is None:
            # One read at a time per organization: connections arriving meanwhile share it.
            read = self.reads[organization_id] = _Read()
            read.task = asyncio.get_running_loop().create_task(self._read_and_keep(organization_id, read))
        # Shielded: a connection that goes away while waiting must not cancel the others' read.
        return await asyncio.shield(read.task)

    async def _read_and_keep(self, organization_id: int, read: _Read) -> OrganizationSnapshot:
        try:
            read_at = asyncio.get_running_loop().time()
            snapshot = await database_sync_to_async(read_snapshot)(organization_id, read_at)
        except BaseException:
            if self.reads.get(organization_id) is read:
                del self.reads[organization_id]
            raise
        for change in read.changes:
            snapshot.apply(change)
        # Kept only while the hub still hears of the organization (it may have left it meanwhile).
        if self.reads.get(organization_id) is read:
            del self.reads[organization_id]
            self.snapshots[organization_id] = snapshot
        return snapshot
