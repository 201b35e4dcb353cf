"""Publishing visible presence changes to whoever listens (colleagues' sockets, dispatchers).

Called by `presence.services.recompute` after the transaction commits, and only when the visible
decision changed. A failed publish never fails the change itself: the decision is stored, and
readers get it on their next read.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from datetime import datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def organization_group(organization_id: int) -> str:
    """The channel-layer group of everyone watching an organization's presence."""
    return f"presence.org.{organization_id}"


@dataclass(frozen=True, slots=True)
class PresenceChange:
    organization_id: int | None
    user_id: str
    status: str
    activity: str
    status_msg: str | None
    currently_active: bool
    last_active: str | None

    @classmethod
    def from_state(cls, user, state) -> PresenceChange:
        membership = getattr(user, "membership", None)
        return cls.of(membership.organization_id if membership else None, user.public_id, state)

    @classmethod
    def of(cls, organization_id: int | None, public_id, state) -> PresenceChange:
        last_active: datetime | None = state.last_active_at
        return cls(
            organization_id=organization_id,
            user_id=str(public_id),
            status=state.status,
            activity=state.activity,
            status_msg=state.status_msg or None,
            currently_active=state.currently_active,
            last_active=last_active.isoformat() if last_active else None,
        )


def publish(change: PresenceChange) -> None:
    publish_many([change])


def publish_many(changes: list[PresenceChange]) -> None:
    """Send changes to their organizations' groups, concurrently (a sweep may have many)."""
    changes = [change for change in changes if change.organization_id is not None]
    layer = get_channel_layer()
    if layer is None or not changes:
        return
    try:
        async_to_sync(_send_all)(layer, changes)
    except Exception:
        logger.exception("Could not publish %d presence change(s)", len(changes))


async def _send_all(layer, changes: list[PresenceChange]) -> None:
    sends = [
        layer.group_send(organization_group(change.organization_id), {"type": "presence.change", **asdict(change)})
        for change in changes
    ]
    for result in await asyncio.gather(*sends, return_exceptions=True):
        if isinstance(result, Exception):
            logger.error("Could not publish a presence change: %r", result)
