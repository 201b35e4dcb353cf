"""One listener per server process for each organization's presence changes.

A change reaches a server process once (through the channel layer, as a member of the
organization's group) and is rendered once; the hub then writes it to every socket of that
organization the process holds. Without it, each socket would be a member of the group in its
own right: the channel layer would hand the same change to a thousand consumers one by one, and
each would render it again — the cost that dominated fan-out to large organizations.

Each event loop has its own hub (a server process has one loop; tests have many). A socket is
registered paused: changes wait until its snapshot has been sent, then go out in order, so a
client never sees a change before the state it changes.
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

from presence import events, live

logger = logging.getLogger(__name__)

# Channel-layer group memberships expire (a day by default): renew them well before.
GROUP_RENEWAL_SECONDS = 3600


@dataclass(eq=False)
class Listener:
    """One socket: what it watches and how to write to it."""

    watch: live.Watch
    send_text: Callable[[str], Awaitable[None]]
    paused: bool = True
    backlog: list[str] = field(default_factory=list)


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.listeners: dict[int, set[Listener]] = {}
        self.channel: str | None = None
        self.task: asyncio.Task | None = None

    async def join(self, listener: Listener) -> None:
        """Start delivering the listener's organization's changes to it (paused: see `resume`)."""
        organization_id = listener.watch.organization_id
        if self.channel is None:
            self.channel = await self.layer.new_channel()
            self.task = asyncio.get_running_loop().create_task(self._deliver_forever())
        if organization_id not in self.listeners:
            self.listeners[organization_id] = set()
            await self.layer.group_add(events.organization_group(organization_id), self.channel)
        self.listeners[organization_id].add(listener)

    async def leave(self, listener: Listener) -> None:
        organization_id = listener.watch.organization_id
        members = self.listeners.get(organization_id)
        if members is None or listener not in members:
            return
        members.discard(listener)
        if not members:
            del self.listeners[organization_id]
            await self.layer.group_discard(events.organization_group(organization_id), self.channel)
        if not self.listeners and self.task is not None:
            self.task.cancel()
            self.task, self.channel = None, None

    def pause(self, listener: Listener) -> None:
        listener.paused = True

    async def resume(self, listener: Listener) -> None:
        """Send what arrived while paused, in order, then deliver directly again."""
        while listener.backlog:
            await listener.send_text(listener.backlog.pop(0))
        listener.paused = False  # no await since the backlog was found empty: nothing slips past

    async def _deliver_forever(self) -> None:
        renewed = asyncio.get_running_loop().time()
        while True:
            try:
                message = await asyncio.wait_for(self.layer.receive(self.channel), GROUP_RENEWAL_SECONDS / 4)
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
                    await self.layer.group_add(events.organization_group(organization_id), self.channel)
            if message is not None and message.get("type") == "presence.change":
                await self._deliver(message)

    async def _deliver(self, change: dict[str, Any]) -> None:
        members = self.listeners.get(change.get("organization_id"))
        if not members:
            return
        text = json.dumps(live.presence_delta(change, timezone.now()))
        for listener in list(members):
            if not listener.watch.accepts(change):
                continue
            if listener.paused:
                listener.backlog.append(text)
                continue
            try:
                await listener.send_text(text)
            except Exception:
                logger.exception("Could not send a presence change to a socket")


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found
