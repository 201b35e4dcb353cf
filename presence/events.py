"""Publishing visible presence changes to whoever listens (colleagues' sockets, dispatchers).

Called by `presence.services.recompute` after the transaction commits, and only when the visible
decision changed. A failed publish never fails the change itself: the decision is stored, and
readers get it on their next read.
"""

from __future__ import annotations

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
        last_active: datetime | None = state.last_active_at
        return cls(
            organization_id=membership.organization_id if membership else None,
            user_id=str(user.public_id),
            status=state.status,
            activity=state.activity,
            status_msg=state.status_msg or None,
            currently_active=state.currently_active,
            last_active=last_active.isoformat() if last_active else None,
        )


def publish(change: PresenceChange) -> None:
    if change.organization_id is None:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            organization_group(change.organization_id), {"type": "presence.change", **asdict(change)}
        )
    except Exception:
        logger.exception("Could not publish the presence change of user %s", change.user_id)
