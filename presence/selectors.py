"""Reads: gather what the engine needs and who may see whom. No writes here."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet

from orgs.models import Organization, PresencePolicy, User
from presence.engine import (
    CalendarBlockInput,
    DeviceInput,
    ManualInput,
    MicrosoftInput,
    PolicyInput,
    PreferencesInput,
    PresenceInputs,
)
from presence.models import CalendarBlock, Device, ManualStatus, MicrosoftPresence, PresencePreferences
from presence.vocabulary import ActivityValue, NetworkValue, Priority, Status, VisibilityValue


def organization_of(user: User) -> Organization | None:
    membership = getattr(user, "membership", None)
    return membership.organization if membership is not None else None


def policy_of(organization: Organization | None) -> PresencePolicy:
    """The organization's policy; an unsaved default one for users outside any organization."""
    if organization is None:
        return PresencePolicy()
    try:
        return organization.policy
    except PresencePolicy.DoesNotExist:
        return PresencePolicy(organization=organization)


def device_timeout_for(policy: PresencePolicy) -> timedelta:
    return timedelta(seconds=policy.device_timeout_seconds or settings.PRESENCE_DEVICE_TIMEOUT_SECONDS)


def idle_timeout_for(policy: PresencePolicy) -> timedelta:
    return timedelta(seconds=policy.idle_timeout_seconds or settings.PRESENCE_IDLE_TIMEOUT_SECONDS)


def policy_input(policy: PresencePolicy) -> PolicyInput:
    return PolicyInput(
        device_timeout=device_timeout_for(policy),
        idle_timeout=idle_timeout_for(policy),
        microsoft_max_age=timedelta(seconds=settings.PRESENCE_MICROSOFT_MAX_AGE_SECONDS),
        allow_calendar=policy.allow_calendar,
        allow_microsoft=policy.allow_microsoft,
        default_priority=Priority(policy.default_priority),
    )


def preferences_of(user: User) -> PresencePreferences:
    """The user's saved preferences, or the unsaved defaults when they never chose."""
    try:
        return user.presence_preferences
    except PresencePreferences.DoesNotExist:
        return PresencePreferences(user=user)


def device_input(device: Device) -> DeviceInput:
    return DeviceInput(
        device_id=device.device_id,
        label=device.label,
        last_seen=device.last_seen_at,
        last_active=device.last_active_at,
        activity=ActivityValue(device.activity),
        visibility=VisibilityValue(device.visibility),
        in_call=device.in_call,
        in_meeting=device.in_meeting,
        network=NetworkValue(device.network),
    )


def presence_context_for(user: User, now: datetime) -> tuple[PresenceInputs, int | None]:
    """The user's slow inputs at `now` (everything but devices, which the hot store keeps), and
    the user's organization id."""
    organization = organization_of(user)
    policy = policy_of(organization)
    # Read what is stored, not `user.presence_preferences`: that relation may be cached on this
    # user object from before a change in the same request (PATCH me/privacy), deciding on stale choices.
    preferences = PresencePreferences.objects.filter(user=user).first() or PresencePreferences()
    manual = ManualStatus.objects.filter(user=user).first()
    # Only blocks that are running or still to come matter; the next one is enough to know
    # when the decision changes, but a running block may overlap it, so take a few.
    blocks = CalendarBlock.objects.filter(user=user, end__gt=now).order_by("start")[:8]
    microsoft = MicrosoftPresence.objects.filter(user=user).first()
    inputs = PresenceInputs(
        manual=ManualInput(Status(manual.status), manual.message, manual.until, manual.set_at) if manual else None,
        calendar=tuple(CalendarBlockInput(b.start, b.end) for b in blocks),
        microsoft=MicrosoftInput(microsoft.availability, microsoft.activity, microsoft.observed_at, microsoft.echo)
        if microsoft
        else None,
        preferences=PreferencesInput(
            use_calendar_busy=preferences.use_calendar_busy,
            include_microsoft_presence=preferences.include_microsoft_presence,
            priority=Priority(preferences.priority) if preferences.priority else None,
        ),
        policy=policy_input(policy),
    )
    return inputs, organization.pk if organization else None


def colleagues_of(user: User) -> QuerySet[User]:
    """The other members of the user's organization (none for a user outside any)."""
    organization = organization_of(user)
    if organization is None:
        return User.objects.none()
    return (
        User.objects.filter(membership__organization=organization, is_active=True)
        .exclude(pk=user.pk)
        .select_related("presence_state")
        .order_by("username", "pk")
    )


def colleague(user: User, public_id: str) -> User | None:
    """A member of the user's own organization by public id; None for anyone else."""
    organization = organization_of(user)
    if organization is None:
        return None
    return (
        User.objects.filter(membership__organization=organization, is_active=True, public_id=public_id)
        .select_related("presence_state")
        .first()
    )


def devices_of(user: User) -> QuerySet[Device]:
    return Device.objects.filter(user=user).order_by("registered_at")


def calendar_of(user: User) -> QuerySet[CalendarBlock]:
    return CalendarBlock.objects.filter(user=user).order_by("start")
