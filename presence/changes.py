"""A visible change of a user's presence, as it is recorded (`presence.history`) and published
(`presence.events`)."""

from __future__ import annotations

from dataclasses import dataclass

from presence.hot import HotDecision, from_epoch


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
    # When the shown status is expected to end (ISO 8601), for watchers.
    status_until: str | None = None

    @classmethod
    def of(
        cls, organization_id: int | None, public_id: object, decision: HotDecision, source: str = ""
    ) -> PresenceChange:
        return cls(
            organization_id=organization_id,
            user_id=str(public_id),
            status=decision.status,
            activity=decision.activity,
            status_msg=decision.status_msg or None,
            currently_active=decision.currently_active,
            last_active=_iso(decision.last_active),
            reason=decision.reason or "",
            source=source,
            status_until=_iso(decision.status_until),
        )


def _iso(seconds: float | None) -> str | None:
    return from_epoch(seconds).isoformat() if seconds is not None else None
