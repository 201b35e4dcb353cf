"""Reads: gather what the engine needs and who may see whom, and presence as it is now. No
writes here: nothing in this module locks, stores, records or publishes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Case, CharField, F, Q, QuerySet, Value, When, Window
from django.db.models.functions import Concat, Left, RowNumber, StrIndex
from django.utils import timezone

from orgs import authentication
from orgs.models import Membership, Organization, PresencePolicy, User
from presence import decisions, hot
from presence.engine import (
    CalendarBlockInput,
    Decision,
    DeviceInput,
    ManualInput,
    MicrosoftInput,
    PolicyInput,
    PreferencesInput,
    PresenceInputs,
    aggregate,
)
from presence.models import (
    CalendarBlock,
    Device,
    ManualStatus,
    MicrosoftPresence,
    PresencePreferences,
    PresenceState,
)
from presence.vocabulary import ActivityValue, NetworkValue, Priority, Status, VisibilityValue


def organization_of(user: User) -> Organization | None:
    membership = getattr(user, "membership", None)
    return membership.organization if membership is not None else None


def organization_id_of(user: User) -> int | None:
    """The id of the user's organization, all a live connection needs to know of it: as read with
    the user's token when they signed in with one, else in one query (`organization_of` reads the
    membership, then the organization)."""
    known, organization_id = authentication.known_organization(user)
    if known:
        return organization_id
    return Membership.objects.filter(user_id=user.pk).values_list("organization_id", flat=True).first()


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
        allow_appear_offline=policy.allow_appear_offline,
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


# Only calendar blocks that are running or still to come matter; the next one is enough to know
# when the decision changes, but a running block may overlap it, so take a few.
CALENDAR_BLOCKS_READ = 8


def presence_context_for(user: User, now: datetime) -> tuple[PresenceInputs, int | None]:
    """The user's slow inputs at `now` (everything but devices, which the hot store keeps), and
    the user's organization id."""
    organization = organization_of(user)
    policy = policy_of(organization)
    # Read what is stored, not `user.presence_preferences`: that relation may be cached on this
    # user object from before a change in the same request (PATCH me/privacy), deciding on stale choices.
    preferences = PresencePreferences.objects.filter(user=user).first() or PresencePreferences()
    manual = ManualStatus.objects.filter(user=user).first()
    blocks = CalendarBlock.objects.filter(user=user, end__gt=now).order_by("start")[:CALENDAR_BLOCKS_READ]
    microsoft = MicrosoftPresence.objects.filter(user=user).first()
    inputs = _slow_inputs(policy_input(policy), preferences, manual, blocks, microsoft)
    return inputs, organization.pk if organization else None


def presence_contexts_for(users: Sequence[User], now: datetime) -> dict[int, tuple[PresenceInputs, int | None]]:
    """`presence_context_for` of many users at once, by user id: one query per kind of input
    (memberships with their organization's policy, preferences, manual statuses, calendar
    blocks, Microsoft imports), whatever the number of users."""
    user_ids = [user.pk for user in users]
    memberships = {
        m.user_id: m for m in Membership.objects.filter(user_id__in=user_ids).select_related("organization__policy")
    }
    preferences = {p.user_id: p for p in PresencePreferences.objects.filter(user_id__in=user_ids)}
    manuals = {m.user_id: m for m in ManualStatus.objects.filter(user_id__in=user_ids)}
    microsoft = {m.user_id: m for m in MicrosoftPresence.objects.filter(user_id__in=user_ids)}
    blocks: dict[int, list[CalendarBlock]] = defaultdict(list)
    rank = Window(RowNumber(), partition_by=[F("user_id")], order_by=[F("start").asc()])
    upcoming = CalendarBlock.objects.filter(user_id__in=user_ids, end__gt=now).annotate(rank=rank)
    for block in upcoming.filter(rank__lte=CALENDAR_BLOCKS_READ).order_by("user_id", "start"):
        blocks[block.user_id].append(block)
    policies: dict[int | None, PolicyInput] = {}
    contexts = {}
    for user_id in user_ids:
        membership = memberships.get(user_id)
        organization_id = membership.organization_id if membership is not None else None
        if organization_id not in policies:
            policies[organization_id] = policy_input(policy_of(membership.organization if membership else None))
        inputs = _slow_inputs(
            policies[organization_id],
            preferences.get(user_id) or PresencePreferences(),
            manuals.get(user_id),
            blocks.get(user_id, ()),
            microsoft.get(user_id),
        )
        contexts[user_id] = (inputs, organization_id)
    return contexts


def _slow_inputs(
    policy: PolicyInput,
    preferences: PresencePreferences,
    manual: ManualStatus | None,
    blocks: Iterable[CalendarBlock],
    microsoft: MicrosoftPresence | None,
) -> PresenceInputs:
    return PresenceInputs(
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
        policy=policy,
    )


def colleagues_of(user: User, query: str = "") -> QuerySet[User]:
    """The other members of the user's organization (none for a user outside any), in username order.

    With a query, only those it finds: a part of the display name (first and last name, as shown),
    of the username or of the e-mail address before its @, in any case; runs of whitespace count as
    one space, and an empty query finds everyone. A query no name can contain (NUL, which
    PostgreSQL refuses even to compare with, or a lone surrogate) finds nobody.

    A part of a name (`LIKE '%…%'`) is found by no B-tree index: a search filters the members'
    names row by row, in username order, so it costs at most a read of the organization's members
    (about 15 ms for 10,000, with another 10,000 users elsewhere), and the page's LIMIT ends it early
    when matches are common. A trigram index (pg_trgm) would be the step beyond."""
    organization = organization_of(user)
    if organization is None:
        return User.objects.none()
    colleagues = members_of(organization.pk).exclude(pk=user.pk)
    query = " ".join(query.split())
    if not query:
        return colleagues
    if not _searchable(query):
        return User.objects.none()
    return colleagues.alias(
        search_full_name=Concat("first_name", Value(" "), "last_name", output_field=CharField()),
        search_email_local=Case(
            When(email__contains="@", then=Left("email", StrIndex("email", Value("@")) - 1)),
            default=F("email"),
            output_field=CharField(),
        ),
    ).filter(
        Q(search_full_name__icontains=query) | Q(username__icontains=query) | Q(search_email_local__icontains=query)
    )


def members_of(organization_id: int) -> QuerySet[User]:
    """The organization's active members, in username order, with their stored presence: everyone
    a member sees as a colleague, the member among them."""
    return (
        User.objects.filter(membership__organization_id=organization_id, is_active=True)
        .select_related("presence_state")
        .order_by("username", "pk")
    )


def _searchable(query: str) -> bool:
    """False for text no name can hold: NUL (PostgreSQL refuses it in a comparison) or a lone surrogate."""
    if "\x00" in query:
        return False
    try:
        query.encode()
    except UnicodeEncodeError:
        return False
    return True


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


# --- Presence as it is now ------------------------------------------------------------------


def current_presence(user: User, now: datetime | None = None) -> PresenceState:
    """The user's presence, right at read time even if no sweep has run since it went stale."""
    return fresh_presence_of([user], now)[user.pk]


def fresh_presence_of(users: Iterable[User], now: datetime | None = None) -> dict[int, PresenceState]:
    """Presence of several users, right at read time, decided in memory where time has outdated it.

    A user's hot decision is used while it is current. Without one (a user no heartbeat reached
    since the hot store was emptied), the database's last decision is used while it is current,
    and a user with no decision at all has never had an input: offline. A decision past its
    `valid_until` is decided again by the engine from the user's inputs as they are (see
    `_decide_now`) and answered as such.

    A read only: nothing is locked, stored, recorded or published. Making a change that time
    brought persistent and announcing it is the sweep's work (beat's, or the in-process beat's
    in the embedded default), which reaches the same decision from the same inputs. Pass users
    with `presence_state` preloaded (`select_related`) to read many at one query.
    """
    now = now or timezone.now()
    users = list(users)
    hot_decisions = hot.store().read_decisions([u.pk for u in users])
    states: dict[int, PresenceState] = {}
    stale: list[User] = []
    for user in users:
        encoded = hot_decisions.get(user.pk)
        if encoded is not None:
            decision = hot.HotDecision.decode(encoded)
            if decision.is_stale(now.timestamp()):
                stale.append(user)
            else:
                states[user.pk] = decisions.unsaved_row(user.pk, decision)
            continue
        stored = _stored_state(user)
        if stored is None:
            states[user.pk] = PresenceState(user_id=user.pk)  # the model's defaults: offline
        elif stored.valid_until is not None and stored.valid_until <= now:
            stale.append(user)
        else:
            states[user.pk] = stored
    if stale:
        for user_id, decision in _decide_now(stale, now).items():
            states[user_id] = decisions.unsaved_row(user_id, hot.HotDecision.of(decision))
    return {user.pk: states[user.pk] for user in users}


def _stored_state(user: User) -> PresenceState | None:
    # A missing row raises RelatedObjectDoesNotExist, an AttributeError: getattr gives None.
    return getattr(user, "presence_state", None)


def _decide_now(users: list[User], now: datetime) -> dict[int, Decision]:
    """The engine's decision at `now` for users whose decision went stale, from the inputs
    `services.recompute` would decide from: the hot state when it is complete and current (no
    database query), else the database's slow inputs, read in bulk for all of these users, with
    the hot store's devices when it holds them or else the database's copy."""
    user_ids = [user.pk for user in users]
    hot_users = dict(zip(user_ids, map(hot.HotUser.parse, hot.store().read_many(user_ids)), strict=True))
    decided: dict[int, Decision] = {}
    from_database: list[User] = []
    for user in users:
        hot_user = hot_users[user.pk]
        context = hot.HotContext.decode(hot_user.context) if hot_user.ready else None
        if context is not None and context.current:
            decided[user.pk] = aggregate(context.with_devices(list(hot_user.devices.values())), now)
        else:
            from_database.append(user)
    if not from_database:
        return decided
    contexts = presence_contexts_for(from_database, now)
    rows: dict[int, list[Device]] = defaultdict(list)
    unloaded = [user.pk for user in from_database if not hot_users[user.pk].loaded]
    if unloaded:
        for row in Device.objects.filter(user_id__in=unloaded):
            rows[row.user_id].append(row)
    for user in from_database:
        inputs, _ = contexts[user.pk]
        hot_user = hot_users[user.pk]
        if hot_user.loaded:
            devices = list(hot_user.devices.values())
        else:
            stored = _stored_state(user)
            status = stored.status if stored is not None else Status.OFFLINE
            devices = devices_on_rebuild(rows[user.pk], status, inputs.policy.device_timeout, now)
        decided[user.pk] = aggregate(replace(inputs, devices=tuple(d.engine_input() for d in devices)), now)
    return decided


def hot_device_of(row: Device, flushed_at: float | None = None) -> hot.HotDevice:
    """A device's database copy in the hot store's shape."""
    return hot.HotDevice(
        device_id=row.device_id,
        last_seen=row.last_seen_at.timestamp(),
        last_active=hot.to_epoch(row.last_active_at),
        activity=row.activity,
        visibility=row.visibility,
        in_call=row.in_call,
        in_meeting=row.in_meeting,
        network=row.network,
        seq=row.last_seq,
        label=row.label,
        flushed_at=flushed_at if flushed_at is not None else row.last_seen_at.timestamp(),
    )


# How far behind its hot last-seen time a live device's database copy may be: flushed at most
# every PRESENCE_DEVICE_FLUSH_SECONDS, by beat's flush task, which runs every minute.
_FLUSH_LAG = timedelta(seconds=60)


def devices_on_rebuild(
    rows: Iterable[Device], stored_status: str, device_timeout: timedelta, now: datetime
) -> list[hot.HotDevice]:
    """A user's devices from their database copy, as a hot state the store does not have is
    rebuilt from them (first use, or a restarted Redis that lost it).

    The copy's last-seen times lag behind the heartbeats (see `services.persist.flush_device_activity`),
    often by more than the device timeout: read as they are, every device that was live when
    Redis went away would count as timed out, and its user would be stored, pushed and
    dispatched as offline until the device's next heartbeat. So while the user's stored presence
    (`stored_status`) is not offline, an online device whose copy is no older than that lag
    allows counts as seen one heartbeat interval short of its timeout: live until its next
    heartbeat is due, offline soon after if none comes. Its state (hidden, idle, in a call) is
    the copy's, as always."""
    devices = [hot_device_of(row) for row in rows]
    if stored_status == Status.OFFLINE:
        return devices
    lag = timedelta(seconds=settings.PRESENCE_DEVICE_FLUSH_SECONDS) + _FLUSH_LAG
    heartbeat = timedelta(seconds=settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS)
    oldest_live = (now - device_timeout - lag).timestamp()
    grace = (now - device_timeout + heartbeat).timestamp()
    return [
        device.with_changes(last_seen=grace)
        if device.network == NetworkValue.ONLINE and oldest_live < device.last_seen < grace
        else device
        for device in devices
    ]
