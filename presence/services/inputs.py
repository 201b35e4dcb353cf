"""The slow inputs a user (or the server for them) changes: manual status, calendar, presence
settings and the imported Microsoft presence. Each is stored in the database and decided again
at once (`decide.recompute`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from orgs.models import User
from presence import decisions, events, hot, ratelimits
from presence.changes import PresenceChange
from presence.models import CalendarBlock, ManualStatus, MicrosoftPresence, PresencePreferences, PresenceState
from presence.services.decide import recompute
from presence.vocabulary import Status


def count_input_change(user: User) -> None:
    """Count a change of the user's inputs (manual status, calendar, presence settings, devices)
    against PRESENCE_RATE_LIMIT_STATUS; `RateLimited` when over it. Asked by the API and the
    settings page for the user's own requests; what an admin or the server changes is not counted."""
    hot.store().charge(user.pk, ratelimits.change_limits(), timezone.now().timestamp())


def set_manual_status(user: User, status: Status, message: str = "", until: datetime | None = None) -> PresenceState:
    ManualStatus.objects.update_or_create(
        user=user, defaults={"status": status, "message": message, "until": until, "set_at": timezone.now()}
    )
    return recompute(user, source="manual_status")


def clear_manual_status(user: User, source: str = "manual_status") -> PresenceState:
    ManualStatus.objects.filter(user=user).delete()
    return recompute(user, source=source)


def replace_calendar(user: User, blocks: Iterable[tuple[datetime, datetime]]) -> PresenceState:
    with transaction.atomic():
        CalendarBlock.objects.filter(user=user).delete()
        CalendarBlock.objects.bulk_create(CalendarBlock(user=user, start=start, end=end) for start, end in blocks)
    return recompute(user, source="calendar")


def update_preferences(user: User, **changes: object) -> PresencePreferences:
    with transaction.atomic():
        preferences, _ = PresencePreferences.objects.select_for_update().get_or_create(user=user)
        for field, value in changes.items():
            setattr(preferences, field, value)
        preferences.save()
    state = recompute(user, source="preferences")
    if "share_externally" in changes:
        # Nothing visible changed, so no publish: tell the subscribers themselves (the
        # integrations' dispatch publishes or withdraws the user's presence outside).
        membership = getattr(user, "membership", None)
        organization_id = membership.organization_id if membership else None
        change = PresenceChange.of(organization_id, user.public_id, decisions.of_row(state), "preferences")
        transaction.on_commit(lambda: events.dispatch_externally([change]))
    return preferences


def record_microsoft_presence(
    user: User, availability: str, activity: str, observed_at: datetime, echo: bool = False
) -> PresenceState:
    """Record the user's imported Microsoft presence; `echo`: it is SPARKS' own publication read
    back (`integrations.mapping.is_own_echo`), kept for the record but adding nothing."""
    MicrosoftPresence.objects.update_or_create(
        user=user,
        defaults={"availability": availability, "activity": activity, "observed_at": observed_at, "echo": echo},
    )
    return recompute(user, source="microsoft_import")
