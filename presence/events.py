"""Publishing visible presence changes to whoever listens (colleagues' sockets, subscribers).

Called by the funnel every decision leaves through (`presence.services.funnel`), once the
decision is stored, and only when what colleagues see changed. A failed publish never fails the
change itself: the decision is stored, and readers get it on their next read.

Apps above presence hear of changes by subscribing (`subscribe`, from their AppConfig.ready()):
the integrations' dispatch to Matrix and Microsoft Teams does, so presence needs to know nothing
of them.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

from presence import history
from presence.changes import PresenceChange  # also known as events.PresenceChange
from sparks_site import metrics

logger = logging.getLogger(__name__)


def organization_group(organization_id: int) -> str:
    """The channel-layer group of everyone watching an organization's presence."""
    return f"presence.org.{organization_id}"


def publish(change: PresenceChange, wait: bool = True, recorded: bool = False, announced: bool = False) -> None:
    publish_many([change], wait, recorded, announced)


def publish_many(
    changes: list[PresenceChange], wait: bool = True, recorded: bool = False, announced: bool = False
) -> None:
    """Record changes in the history and send them to their organizations' groups; with `wait`,
    return once they are sent. Without, return at once: the process's publisher sends them in
    the order they came (a request that answers a device need not wait for its colleagues).
    `recorded` / `announced`: the writer of the change already appended it to the history /
    published it to the organization's group (see `announcement`)."""
    if not recorded:
        history.record(changes)
    metrics.count_changes(changes)
    changes = [change for change in changes if change.organization_id is not None]
    dispatch_externally(changes)
    layer = get_channel_layer()
    if layer is None or not changes or announced:
        return
    try:
        _publisher().send(layer, changes, wait)
    except Exception:
        logger.exception("Could not publish %d presence change(s)", len(changes))


def announcement(change: PresenceChange) -> tuple[str, bytes] | None:
    """The Redis PUBLISH (channel, payload) that delivers `change` to its organization's group,
    for a writer that publishes in the same Redis step as it writes the change: no round trip and
    no hand-off to the publisher thread, and announced exactly when the change is stored. None
    unless the channel layer is Redis pub/sub (on the hot store's Redis server)."""
    channel = group_channel(change.organization_id)
    if channel is None:
        return None
    return channel, get_channel_layer().serialize(_group_message(change))


def group_channel(organization_id: int | None) -> str | None:
    """The Redis pub/sub channel of an organization's group, with the Redis pub/sub layer."""
    layer = get_channel_layer()
    if organization_id is None or not isinstance(layer, RedisPubSubChannelLayer):
        return None
    # As the layer's group_send names it (channels_redis.pubsub, pinned in requirements.txt;
    # tests/presence/test_events.py holds an announcement and a group send to the same message),
    # with the prefix the layer is configured with (the layer's own default without one).
    prefix = settings.CHANNEL_LAYERS[DEFAULT_CHANNEL_LAYER].get("CONFIG", {}).get("prefix", _PUBSUB_DEFAULT_PREFIX)
    return f"{prefix}__group__{organization_group(organization_id)}"


_PUBSUB_DEFAULT_PREFIX = "asgi"  # RedisPubSubChannelLayer's default `prefix`


def _group_message(change: PresenceChange) -> dict:
    return {"type": "presence.change", **_message(change)}


# --- Subscribers -------------------------------------------------------------------------------

ChangesSubscriber = Callable[[list[PresenceChange]], None]
"""Hears of a batch of changes of users of organizations; must return quickly (enqueue, never send)."""

_subscribers: tuple[ChangesSubscriber, ...] = ()
_subscribers_lock = threading.Lock()


def subscribe(subscriber: ChangesSubscriber) -> None:
    """Hand `subscriber` every batch of changes from now on (see `dispatch_externally`), after
    those subscribed before it. Subscribing again changes nothing."""
    global _subscribers
    with _subscribers_lock:
        if subscriber not in _subscribers:
            _subscribers = (*_subscribers, subscriber)


def subscribers() -> tuple[ChangesSubscriber, ...]:
    return _subscribers


def unsubscribe(subscriber: ChangesSubscriber) -> None:
    global _subscribers
    with _subscribers_lock:
        _subscribers = tuple(s for s in _subscribers if s != subscriber)


def dispatch_externally(changes: list[PresenceChange]) -> None:
    """Hand changes to the subscribers (the Matrix / Microsoft dispatch, which only enqueues).

    Called once changes are recorded, before they are sent to the organizations' groups, and by
    `services.update_preferences` when a user's external sharing changed. A subscriber that fails
    is logged and never fails the change, nor keeps the others from hearing of it."""
    if not changes:
        return
    for subscriber in _subscribers:
        try:
            subscriber(changes)
        except Exception:
            logger.exception("Could not hand %d presence change(s) to %s", len(changes), _name(subscriber))


def _name(subscriber: ChangesSubscriber) -> str:
    return f"{getattr(subscriber, '__module__', '?')}.{getattr(subscriber, '__qualname__', repr(subscriber))}"


# At most this many sends at once: a sweep may publish thousands, and the channel layer's
# connection pool is bounded.
_CONCURRENT_SENDS = 32


def _message(change: PresenceChange) -> dict:
    message = asdict(change)
    for name in _HISTORY_ONLY:
        del message[name]
    return message


_HISTORY_ONLY = ("reason", "source")


async def _send_all(layer, changes: list[PresenceChange]) -> None:
    limit = asyncio.Semaphore(_CONCURRENT_SENDS)

    async def send(change: PresenceChange) -> None:
        async with limit:
            await layer.group_send(organization_group(change.organization_id), _group_message(change))

    results = await asyncio.gather(*(send(change) for change in changes), return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            logger.error("Could not publish a presence change: %r", result)


class _Publisher:
    """One event loop per process for sending from synchronous code.

    The Redis channel layer keeps its connections per event loop; `async_to_sync` from a
    request or task thread would run each send on a fresh loop and open new connections every
    time (milliseconds per change). This loop lives as long as the process and reuses them.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="presence-publisher", daemon=True)
        self.thread.start()
        self.queue: asyncio.Queue = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._drainer = asyncio.get_running_loop().create_task(self._drain(queue))
        return queue

    async def _drain(self, queue: asyncio.Queue) -> None:
        # One batch after the other: a user's changes leave in the order they were made.
        while True:
            layer, changes, sent = await queue.get()
            try:
                await _send_all(layer, changes)
            except Exception:
                logger.exception("Could not publish %d presence change(s)", len(changes))
            finally:
                if sent is not None:
                    sent.set_result(None)

    def send(self, layer, changes: list[PresenceChange], wait: bool, timeout: float = 30.0) -> None:
        sent = concurrent.futures.Future() if wait else None
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (layer, changes, sent))
        if sent is not None:
            sent.result(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """At the process's exit: send what is queued (within `timeout`), then stop the loop, so
        no change handed over without waiting is dropped unsaid and no task dies pending."""
        try:
            self.send(None, [], wait=True, timeout=timeout)  # once every batch before it is sent
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout)
        except Exception:
            logger.warning("The presence publisher did not finish sending before the process exited")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)

    async def _stop(self) -> None:
        self._drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drainer


_publisher_lock = threading.Lock()
_publisher_instance: _Publisher | None = None
_publisher_pid: int | None = None


def _publisher() -> _Publisher:
    global _publisher_instance, _publisher_pid
    with _publisher_lock:
        # A forked worker (Celery prefork, gunicorn) must not use its parent's loop thread.
        if _publisher_instance is None or _publisher_pid != os.getpid():
            _publisher_instance, _publisher_pid = _Publisher(), os.getpid()
            atexit.register(_close_publisher, _publisher_instance, _publisher_pid)
        return _publisher_instance


def _close_publisher(publisher: _Publisher, pid: int) -> None:
    if pid == os.getpid():  # a forked child inherits the handler, not the thread
        publisher.close()
