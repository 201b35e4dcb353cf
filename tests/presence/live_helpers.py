"""Helpers shared by the live presence tests (websocket, SSE, several processes)."""

from __future__ import annotations

import asyncio
import threading

from channels.layers import get_channel_layer
from django.utils import timezone
from rest_framework.authtoken.models import Token

from orgs.models import User
from presence import selectors, services
from presence.events import organization_group


def token_of(user: User) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def settle(*users: User) -> None:
    """Give the users a stored presence now, so that nobody's first read publishes it mid-test."""
    selectors.fresh_presence_of(list(users), timezone.now())


def register_device(user: User, installation_id: str = "laptop") -> str:
    device, _ = services.register_device(user, installation_id)
    return device.device_id


class GroupListener:
    """A channel in an organization's group, as a server process's hub has one. The Redis
    pub/sub layer keeps channels per event loop, so the listener keeps one loop of its own."""

    def __init__(self, organization_id: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.layer = get_channel_layer()
        self.group = organization_group(organization_id)
        self.channel = self._run(self.layer.new_channel())
        self._run(self.layer.group_add(self.group, self.channel))

    def _run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def receive(self, timeout: float = 5) -> dict | None:
        async def wait() -> dict | None:
            try:
                return await asyncio.wait_for(self.layer.receive(self.channel), timeout)
            except TimeoutError:
                return None

        return self._run(wait(), timeout + 5)

    def close(self) -> None:
        self._run(self.layer.group_discard(self.group, self.channel))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
