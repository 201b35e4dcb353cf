"""One listener per server process for each organization's presence changes.

A change reaches a server process once (through the channel layer, as a member of the
organization's group) and is rendered once; the hub then writes it to every socket of that
organization the process holds. Without it, each socket would be a member of the group in its
own right: the channel layer would hand the same change to a thousand consumers one by one, and
each would render it again — the cost that dominated fan-out to large organizations.

Each event loop has its own hub (a server process has one loop; tests have many). A socket is
registered paused: changes wait until its snapshot has been sent, then go out in order, so a
client never sees a change before the state it changes. Each socket has its own outbox and
writer, so a slow client delays only itself; one that falls too far behind is closed (it
reconnects and gets a fresh snapshot).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer
from django.utils import timezone

from presence import events, live, snapshots
from presence.sharded_layer import RESUBSCRIBED

logger = logging.getLogger(__name__)

# Channel-layer group memberships expire (a day by default): renew them well before.
GROUP_RENEWAL_SECONDS = 3600


# Changes a socket may have waiting before it counts as gone (closed, to start afresh).
MAX_WAITING = 1000


@dataclass(eq=False)
class Listener:
    """One socket: what it watches, how to write to it, and how to close it when it lags."""

    watch: live.Watch
    send_text: Callable[[str], Awaitable[None]]
    close: Callable[[], Awaitable[None]] | None = None
    paused: bool = True
    backlog: list[str] = field(default_factory=list)
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    writer: asyncio.Task | None = None

    def offer(self, text: str) -> bool:
        """Queue a change for this socket; False when it is too far behind."""
        if self.paused:
            self.backlog.append(text)
            return len(self.backlog) <= MAX_WAITING
        if self.outbox.qsize() >= MAX_WAITING:
            return False
        self.outbox.put_nowait(text)
        return True

    async def write_forever(self) -> None:
        while True:
            text = await self.outbox.get()
            try:
                await self.send_text(text)
            except Exception:
                logger.exception("Could not send a presence change to a socket")
            finally:
                self.outbox.task_done()


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.listeners: dict[int, set[Listener]] = {}
        self.channel: str | None = None
        self.task: asyncio.Task | None = None
        # Joining and leaving wait on the layer (a Redis subscription): one at a time, or two
        # sockets joining at once would each open a channel, and one channel would be orphaned.
        self.membership = asyncio.Lock()
        # Each organization's colleague snapshot, shared by its sockets here and kept current with
        # the changes this hub delivers (see presence.snapshots for why none is missed).
        self.snapshots = snapshots.SharedSnapshots()

    async def join(self, listener: Listener) -> None:
        """Start delivering the listener's organization's changes to it (paused: see `resume`)."""
        organization_id = listener.watch.organization_id
        async with self.membership:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
                self.task = asyncio.get_running_loop().create_task(self._deliver_forever(self.channel))
            if organization_id not in self.listeners:
                await self.layer.group_add(events.organization_group(organization_id), self.channel)
                self.listeners[organization_id] = set()
            self.listeners[organization_id].add(listener)

    async def leave(self, listener: Listener) -> None:
        organization_id = listener.watch.organization_id
        async with self.membership:
            members = self.listeners.get(organization_id)
            if members is None or listener not in members:
                return
            members.discard(listener)
            if listener.writer is not None:
                listener.writer.cancel()
                listener.writer = None
            if not members:
                del self.listeners[organization_id]
                self.snapshots.forget(organization_id)
                await self.layer.group_discard(events.organization_group(organization_id), self.channel)
            if not self.listeners and self.task is not None:
                self.task.cancel()
                self.task, self.channel = None, None

    async def snapshot(self, listener: Listener, viewer_id: str) -> list[str]:
        """The whole organization's snapshot pages (JSON texts) for a joined listener's viewer."""
        return await self.snapshots.pages(listener.watch.organization_id, viewer_id)

    async def pause(self, listener: Listener) -> None:
        """Hold changes back (while a new snapshot is sent), once those already queued are out."""
        listener.paused = True
        await listener.outbox.join()

    async def resume(self, listener: Listener) -> None:
        """Deliver what arrived while paused, in order, then every change as it comes."""
        for text in listener.backlog:
            listener.outbox.put_nowait(text)
        listener.backlog.clear()
        listener.paused = False
        if listener.writer is None:
            listener.writer = asyncio.get_running_loop().create_task(listener.write_forever())

    async def _deliver_forever(self, channel: str) -> None:
        renewed = asyncio.get_running_loop().time()
        while True:
            try:
                message = await asyncio.wait_for(self.layer.receive(channel), GROUP_RENEWAL_SECONDS / 4)
            except TimeoutError:
                message = None
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("The presence hub could not receive; it tries again")
                await asyncio.sleep(1)
                continue
            if asyncio.get_running_loop().time() - renewed > GROUP_RENEWAL_SECONDS:
                renewed = asyncio.get_running_loop().time()
                for organization_id in list(self.listeners):
                    await self.layer.group_add(events.organization_group(organization_id), channel)
            if message is None:
                continue
            if message.get("type") == "presence.change":
                await self._deliver(message)
            elif message.get("type") == RESUBSCRIBED:
                await self._start_afresh()

    async def _deliver(self, change: dict[str, Any]) -> None:
        # The shared snapshot first: a socket that takes it from now on has this change in it.
        self.snapshots.apply(change)
        members = self.listeners.get(change.get("organization_id"))
        if not members:
            return
        text = json.dumps(live.presence_delta(change, timezone.now()))
        for listener in list(members):
            if listener.watch.accepts(change) and not listener.offer(text):
                logger.warning("Closing a presence socket %d changes behind", MAX_WAITING)
                await self.leave(listener)
                if listener.close is not None:
                    asyncio.get_running_loop().create_task(listener.close())

    async def _start_afresh(self) -> None:
        """The layer lost its subscriptions for a while (a cluster failover): changes may have been
        missed. The shared snapshots are dropped and every socket is closed; its client reconnects
        and gets a fresh snapshot, read again."""
        for organization_id in list(self.listeners):  # they missed the same changes
            self.snapshots.forget(organization_id)
        listeners = [listener for members in self.listeners.values() for listener in members]
        logger.warning("Presence changes may have been missed: closing %d socket(s) to start afresh", len(listeners))
        for listener in listeners:  # each leaves the hub as its socket closes
            if listener.close is not None:
                asyncio.get_running_loop().create_task(listener.close())


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found
