"""The presence websocket, `/ws/presence/`: colleagues' presence live, and a device's signals in.

Thin: who may connect and what they watch is decided here; the shapes, the validation and the
writes are `presence.live`'s and `presence.services`'.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from presence import hub, live
from sparks_site import metrics
from sparks_site.live_auth import chosen_subprotocol

logger = logging.getLogger(__name__)

# One encoder for every message: `json.dumps(..., cls=...)` builds a new one per call, which cost
# a heartbeat's ack as much again as the encoding itself. The same output.
_ENCODER = DjangoJSONEncoder()

# Close codes, in the application's range 4000-4999: 4000 + the HTTP status the REST API would answer.
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403  # no organization, or a subscription to someone who is not a colleague
CLOSE_AGGREGATOR_DISABLED = 4409
CLOSE_TOO_FAR_BEHIND = 4408  # the client read too slowly; it reconnects for a fresh snapshot
CLOSE_PROVIDER_UNAVAILABLE = 4503  # the sign-in provider could not check the token: retry later


class PresenceConsumer(AsyncWebsocketConsumer):
    watch: live.Watch | None = None
    listener: hub.Listener | None = None
    counted = False

    async def __call__(self, scope, receive, send) -> None:
        # Channels' own loop listens to the client and to a channel-layer channel of the socket's,
        # with two fresh tasks per message. Colleagues' changes reach this socket through the
        # process's hub instead, so the client is all there is to listen to: one plain loop.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive" and message.get("text") is not None:
                    # A client's text frame, the message of all day: straight to `receive`, as
                    # `dispatch` and `websocket_receive` would take it there.
                    await self.receive(text_data=message["text"])
                else:
                    await self.dispatch(message)
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes outdated database connections before every message, in a thread hand-off
        # that costs more than a heartbeat's whole work. Every database access of this consumer goes
        # through `database_sync_to_async`, which does that itself on the thread it runs on.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        # Accept first, then close: a refusal before accepting reaches the client as a bare HTTP
        # 403, and the close code is what tells it to sign in again rather than retry.
        await self.accept(subprotocol=chosen_subprotocol(self.scope))
        metrics.WEBSOCKETS.inc()
        self.counted = True
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            unavailable = self.scope.get("auth_unavailable")
            await self.close(CLOSE_PROVIDER_UNAVAILABLE if unavailable else CLOSE_NOT_AUTHENTICATED)
            return
        if not settings.PRESENCE_USE_AGGREGATOR:
            await self.close(CLOSE_AGGREGATOR_DISABLED)
            return
        organization_id = await live.organization_id_of(user)
        if organization_id is None:
            await self.close(CLOSE_FORBIDDEN)
            return
        # Join before taking the snapshot, paused: a change made meanwhile is sent after it, so
        # the client may see it twice but never misses it, nor sees it before the snapshot.
        self.watch = live.Watch(organization_id)
        self.listener = hub.Listener(self.watch, self._send_text, self._close_lagging)
        await hub.hub().join(self.listener)
        await self._send_snapshot(None)
        await hub.hub().resume(self.listener)

    async def disconnect(self, code: int) -> None:
        if self.counted:
            metrics.WEBSOCKETS.dec()
            self.counted = False
        if self.listener is not None:
            await hub.hub().leave(self.listener)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.watch is None:
            return  # refused and closing
        message = None
        try:
            message = live.parse_message(text_data)
            handler = self._handlers.get(message["type"])
            if handler is None:
                known = ", ".join(sorted(self._handlers))
                raise live.validation_error({"type": [f"Unknown message type; one of: {known}."]})
            await handler(self, message)
        except live.MessageError as error:
            await self._send_json(error.as_message(live.request_id_of(message)))
        except Exception:
            # One bad message must not take the colleagues' presence down with the socket.
            logger.exception("Presence websocket message failed")
            await self._send_json(
                live.MessageError("server_error", "The server failed; the message can be retried.").as_message(
                    live.request_id_of(message)
                )
            )

    async def _subscribe(self, message: dict[str, Any]) -> None:
        user_ids = live.parse_user_ids(message)
        peers = None
        if user_ids is not None:
            try:
                peers = await database_sync_to_async(live.subscribed_peers)(self.scope["user"], user_ids)
            except live.NotColleagues:
                self.watch = None
                await self.close(CLOSE_FORBIDDEN)
                return
        organization_id = self.watch.organization_id
        self.watch = live.Watch(organization_id, None if user_ids is None else frozenset(user_ids))
        # Changes wait while the new snapshot is sent, as on connecting.
        await hub.hub().pause(self.listener)
        self.listener.watch = self.watch
        await self._send_snapshot(peers)
        await hub.hub().resume(self.listener)

    async def _signals(self, message: dict[str, Any]) -> None:
        # A steady heartbeat, the message sent most, is answered on the event loop; a thread
        # hand-off would cost more than the whole Redis call.
        reply, rate_counted = await live.quick_signals_reply(self.scope["user"], message)
        if reply is None:
            reply = await database_sync_to_async(live.signals_reply)(self.scope["user"], message, rate_counted)
        await self._send_json(reply)

    _handlers = {"subscribe": _subscribe, "signals": _signals}

    async def _send_snapshot(self, peers) -> None:
        if peers is None:
            # The whole organization: the process's shared snapshot, less this user.
            for text in await hub.hub().snapshot(self.listener, str(self.scope["user"].public_id)):
                await self._send_text(text)
            return
        for page in await database_sync_to_async(live.snapshot_pages)(self.scope["user"], peers):
            await self._send_json(page)

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self.base_send({"type": "websocket.send", "text": _ENCODER.encode(message)})

    async def _send_text(self, text: str) -> None:
        await self.base_send({"type": "websocket.send", "text": text})

    async def _close_lagging(self) -> None:
        await self.close(CLOSE_TOO_FAR_BEHIND)
