"""Publishing to Microsoft Teams: SPARKS' own part of a user's Graph presence, and the record of it.

A user's presence in Teams is Graph's aggregate of several sources: a presence session per Teams
client and per application, and one preferred presence per user, which overrides the sessions
and which the user's own choice in Teams shares with applications
(https://learn.microsoft.com/graph/api/presence-setpresence,
https://learn.microsoft.com/graph/api/presence-setuserpreferredpresence). Nothing in Graph tells
which part is SPARKS', so every successful call is written down (`GraphPublication`), and the
record, not what dispatch last sent, decides what to call:

- SPARKS' session and preferred presence are set when the record has none live, a different
  pair, one about to expire, or when a refresh is asked for;
- SPARKS clears only what the record shows as its own and live: never a preferred presence the
  user chose in Teams, and no session it does not have;
- nothing to change, no call (a first share while offline, a message-only change while offline);
- a decision SPARKS took from the user's Teams presence is not published back (`own_state`).

Both are set with `expirationDuration` PT{MICROSOFT_PRESENCE_SESSION_MINUTES}M and renewed a
minute before the recorded expiry (`renewals_due`, from beat): an expired session shows Offline,
and a preferred presence left behind (a worker died before clearing it) lapses within minutes
instead of Graph's default of one day (DoNotDisturb, Busy) or seven. An Available session also
times out five minutes after it was last set, whatever its expiration, and then fades to
Available/AvailableInactive and Away/Away: it is renewed a minute before that too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from integrations import mapping, microsoft
from integrations.models import DispatchState, DispatchTarget, GraphPublication
from presence.vocabulary import Activity, Reason, Status

# Renewed this long before the recorded expiry: beat runs every few seconds, Graph starts the
# expiration a little before SPARKS records it, and a lapsed session shows Offline in Teams.
RENEW_AHEAD = timedelta(seconds=60)
# Graph's timeout of a session that is not set again (not configurable), for the one
# availability that times out.
AVAILABLE_TIMEOUT = timedelta(minutes=5)
_TIMES_OUT = "Available"
# Ended rows are kept while the echo rule can still match them, and a little longer for an import
# whose read happened shortly before the row ended was written.
KEEP_ENDED = 2 * mapping.ECHO_GRACE

Kind = GraphPublication.Kind

# What SPARKS itself has to say in Teams while its decision comes from Teams (rule 4 of the
# engine): such a decision means a live device and nothing of SPARKS' own in force (no call,
# meeting, manual status or calendar block), so "available". Its Available session is outranked
# by the busy or do-not-disturb Teams reports, and keeps the user's own preferred presence in
# force (Graph applies it only while a session exists).
_AVAILABLE_OF_OUR_OWN = {"status": Status.AVAILABLE.value, "activity": Activity.AVAILABLE.value}


def own_state(state: dict, reason: str) -> dict:
    """The state to publish to Teams for a decision: the decision, unless Teams told it.

    Teams is not told what Teams told SPARKS: it shows it already, and published back it would be
    SPARKS' own, a do-not-disturb SPARKS would clear once the decision changes (the user's own
    choice in Teams erased) or a busy outliving the Teams meeting it came from.
    """
    if reason == Reason.MICROSOFT_PRESENCE:
        return {**state, **_AVAILABLE_OF_OUR_OWN}
    return state


def publish(
    user_id: int, credentials: microsoft.Credentials, object_id: str, wanted: mapping.GraphPresence, refresh: bool
) -> None:
    """Make SPARKS' part of the user's Graph presence `wanted`, with as few calls as that takes.

    Each successful call is recorded at once, so a failure half-way leaves a true record and the
    retry does only what is left.
    """
    ours = _live(user_id, timezone.now())
    session, preferred = ours.get(Kind.SESSION), ours.get(Kind.PREFERRED)
    if wanted.session is None:
        # Offline or withdrawn: end what SPARKS set, and Teams falls back to the user's other
        # sources; a preferred presence that is not SPARKS' is the user's own and stays.
        if preferred is not None:
            microsoft.clear_preferred_presence(credentials, object_id)
            _end(preferred)
        if session is not None:
            microsoft.clear_presence(credentials, object_id)
            _end(session)
        return
    # The session first: Graph applies a preferred presence only while a session exists.
    if _due(session, wanted.session, refresh):
        microsoft.set_presence(credentials, object_id, *wanted.session)
        _set(user_id, Kind.SESSION, wanted.session, session)
    if wanted.preferred is not None:
        if _due(preferred, wanted.preferred, refresh):
            microsoft.set_preferred_presence(credentials, object_id, *wanted.preferred)
            _set(user_id, Kind.PREFERRED, wanted.preferred, preferred)
    elif preferred is not None:
        microsoft.clear_preferred_presence(credentials, object_id)
        _end(preferred)


def renewals_due(now: datetime) -> set[int]:
    """Users whose publication in Teams beat is to renew: one of SPARKS' about to expire (or
    lapsed since), or an online state delivered with no session of SPARKS' on record (delivered
    before the record was kept, or a row removed by hand)."""
    expiring = GraphPublication.objects.filter(ended_at__isnull=True).filter(
        Q(expires_at__lte=now + RENEW_AHEAD)
        | Q(kind=Kind.SESSION, availability=_TIMES_OUT, refreshed_at__lte=now + RENEW_AHEAD - AVAILABLE_TIMEOUT)
    )
    session = GraphPublication.objects.filter(user_id=OuterRef("user_id"), kind=Kind.SESSION, ended_at__isnull=True)
    unrecorded = (
        DispatchState.objects.filter(target=DispatchTarget.MICROSOFT, sent__isnull=False)
        .exclude(sent__status=Status.OFFLINE.value)
        .filter(~Exists(session))
    )
    return set(expiring.values_list("user_id", flat=True)) | set(unrecorded.values_list("user_id", flat=True))


def own_publications(user_ids: Iterable[int], observed_at: datetime) -> dict[int, list[mapping.OwnPublication]]:
    """What SPARKS had in these users' Graph presence around `observed_at`, for the echo rule."""
    rows = GraphPublication.objects.filter(user_id__in=list(user_ids), set_at__lte=observed_at + mapping.ECHO_GRACE)
    rows = rows.filter(
        Q(ended_at__gte=observed_at - mapping.ECHO_GRACE)
        | Q(ended_at__isnull=True, expires_at__gte=observed_at - mapping.ECHO_GRACE)
    )
    own: dict[int, list[mapping.OwnPublication]] = {}
    for row in rows:
        until = row.ended_at or row.expires_at
        own.setdefault(row.user_id, []).append(
            mapping.OwnPublication(row.availability, row.activity, row.set_at, until)
        )
    return own


def _live(user_id: int, now: datetime) -> dict[str, GraphPublication]:
    # What Graph let lapse is no longer SPARKS' to clear: the user may have chosen a preferred
    # presence of their own since.
    GraphPublication.objects.filter(user_id=user_id, ended_at__isnull=True, expires_at__lte=now).update(
        ended_at=F("expires_at")
    )
    return {row.kind: row for row in GraphPublication.objects.filter(user_id=user_id, ended_at__isnull=True)}


def _due(current: GraphPublication | None, pair: tuple[str, str], refresh: bool) -> bool:
    if current is None or refresh or (current.availability, current.activity) != pair:
        return True
    return _renew_by(current) <= timezone.now() + RENEW_AHEAD


def _renew_by(publication: GraphPublication) -> datetime:
    if publication.kind == Kind.SESSION and publication.availability == _TIMES_OUT:
        return min(publication.expires_at, publication.refreshed_at + AVAILABLE_TIMEOUT)
    return publication.expires_at


def _set(user_id: int, kind: str, pair: tuple[str, str], current: GraphPublication | None) -> None:
    now = timezone.now()
    expires_at = now + timedelta(minutes=settings.MICROSOFT_PRESENCE_SESSION_MINUTES)
    if current is not None and (current.availability, current.activity) == pair:
        # Set again: the same pair, shown since it was first set, lives longer.
        GraphPublication.objects.filter(pk=current.pk).update(refreshed_at=now, expires_at=expires_at)
        return
    with transaction.atomic():
        if current is not None:
            GraphPublication.objects.filter(pk=current.pk).update(ended_at=now)
        GraphPublication.objects.create(
            user_id=user_id,
            kind=kind,
            availability=pair[0],
            activity=pair[1],
            set_at=now,
            refreshed_at=now,
            expires_at=expires_at,
        )
    _forget_ended(user_id, now)


def _end(current: GraphPublication) -> None:
    now = timezone.now()
    GraphPublication.objects.filter(pk=current.pk).update(ended_at=now)
    _forget_ended(current.user_id, now)


def _forget_ended(user_id: int, now: datetime) -> None:
    GraphPublication.objects.filter(user_id=user_id, ended_at__lt=now - KEEP_ENDED).delete()
