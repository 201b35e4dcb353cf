"""A visible change of a user's presence, as it is recorded (`presence.history`) and published
(`presence.events`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from orgs.models import User
    from presence.models import PresenceState


@dataclass(frozen=True, slots=True)
class PresenceChange:
    organization_id: int | None
    user_id: str
    status: str
    activity: str
    status_msg: str | None
    currently_active: bool
    last_active: str | None
    # For the history only (not sent to watchers): the rule that decided, and what caused the change.
    reason: str = ""
    source: str = ""

    @classmethod
    def from_state(cls, user: User, state: PresenceState) -> PresenceChange:
        """The change to `state` of `user`, in the user's organization (None: of none)."""
        membership = getattr(user, "membership", None)
        return cls.of(membership.organization_id if membership else None, user.public_id, state)

    @classmethod
    def of(
        cls, organization_id: int | None, public_id: UUID | str, state: PresenceState, source: str = ""
    ) -> PresenceChange:
        """The change to `state` of the user `public_id` of `organization_id`, caused by `source`."""
        last_active: datetime | None = state.last_active_at
        return cls(
            organization_id=organization_id,
            user_id=str(public_id),
            status=state.status,
            activity=state.activity,
            status_msg=state.status_msg or None,
            currently_active=state.currently_active,
            last_active=last_active.isoformat() if last_active else None,
            reason=state.reason or "",
            source=source,
        )
