"""The one table between SPARKS' presence vocabulary and Matrix's and Microsoft Graph's.

Pure Python (no Django): the dispatchers use the publishing direction, and no value is translated
anywhere else. What an imported Microsoft presence means for aggregation is the engine's
(`presence.microsoft.graph_import_contribution`); the echo rule (`is_own_echo`) here tells SPARKS'
own Teams presence apart from the rest when it is read back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from presence.microsoft import graph_import_contribution
from presence.vocabulary import Activity, Status

# --- Matrix ---------------------------------------------------------------------------------
MATRIX_ONLINE = "online"
MATRIX_UNAVAILABLE = "unavailable"
MATRIX_OFFLINE = "offline"
# Synapse accepts busy only under MSC3026's unstable name, and only when the homeserver enables
# the experiment (advertised as this unstable feature in /_matrix/client/versions).
MATRIX_BUSY = "org.matrix.msc3026.busy"
MATRIX_BUSY_FEATURE = "org.matrix.msc3026.busy_presence"

_MATRIX_PRESENCE: dict[Status, str] = {
    Status.AVAILABLE: MATRIX_ONLINE,
    Status.BUSY: MATRIX_BUSY,
    Status.AWAY: MATRIX_UNAVAILABLE,
    Status.DND: MATRIX_BUSY,
    Status.OFFLINE: MATRIX_OFFLINE,
}


@dataclass(frozen=True, slots=True)
class MatrixPresence:
    presence: str
    status_msg: str | None

    def body(self) -> dict[str, str]:
        # A PUT without status_msg clears the message on the homeserver, which is what an
        # empty SPARKS message means too.
        body = {"presence": self.presence}
        if self.status_msg:
            body["status_msg"] = self.status_msg
        return body


def matrix_presence(status: str, status_msg: str | None, busy_supported: bool) -> MatrixPresence:
    """What a homeserver is told for a SPARKS status; busy degrades to unavailable where the
    homeserver does not support MSC3026. Offline carries no message."""
    presence = _MATRIX_PRESENCE[Status(status)]
    if presence == MATRIX_BUSY and not busy_supported:
        presence = MATRIX_UNAVAILABLE
    return MatrixPresence(presence, status_msg or None if presence != MATRIX_OFFLINE else None)


# --- Microsoft Graph (publishing) -------------------------------------------------------------
# The only (availability, activity) pairs Graph accepts, per endpoint.
GRAPH_SESSION_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("Available", "Available"),
        ("Busy", "InACall"),
        ("Busy", "InAConferenceCall"),
        ("Away", "Away"),
        ("DoNotDisturb", "Presenting"),
    }
)
GRAPH_PREFERRED_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("Available", "Available"),
        ("Busy", "Busy"),
        ("DoNotDisturb", "DoNotDisturb"),
        ("BeRightBack", "BeRightBack"),
        ("Away", "Away"),
        ("Offline", "OffWork"),
    }
)


@dataclass(frozen=True, slots=True)
class GraphPresence:
    """The application's presence session and the user's preferred presence to publish.

    `session` None means: clear the session (and with it any preferred presence, which Graph
    applies only while a session exists). `preferred` None means: no preferred presence.
    """

    session: tuple[str, str] | None
    preferred: tuple[str, str] | None = None


_GRAPH_AVAILABLE = GraphPresence(("Available", "Available"))
_GRAPH_OFFLINE = GraphPresence(None)

# The session vocabulary is only honest for available, away, a call and a meeting. Everything
# else keeps an Available session alive and states the status as the user's preferred presence,
# which overrides the session in Teams, so "busy" never shows up as "in a call".
_GRAPH_BY_STATUS: dict[Status, GraphPresence] = {
    Status.AVAILABLE: _GRAPH_AVAILABLE,
    Status.BUSY: GraphPresence(("Available", "Available"), ("Busy", "Busy")),
    Status.AWAY: GraphPresence(("Away", "Away")),
    Status.DND: GraphPresence(("Available", "Available"), ("DoNotDisturb", "DoNotDisturb")),
    Status.OFFLINE: _GRAPH_OFFLINE,
}
_GRAPH_BY_BUSY_ACTIVITY: dict[Activity, GraphPresence] = {
    Activity.IN_CALL: GraphPresence(("Busy", "InACall")),
    Activity.IN_MEETING: GraphPresence(("Busy", "InAConferenceCall")),
}


def graph_presence(status: str, activity: str) -> GraphPresence:
    """What Microsoft Graph is told for a SPARKS status and activity."""
    status = Status(status)
    if status == Status.BUSY:
        by_activity = _GRAPH_BY_BUSY_ACTIVITY.get(activity)  # StrEnum keys match plain strings
        if by_activity is not None:
            return by_activity
    return _GRAPH_BY_STATUS[status]


# --- Microsoft Graph (SPARKS' own presence read back) ------------------------------------------
# What getPresencesByUserId reports is not one source's presence but Teams' aggregate of all of
# them (https://learn.microsoft.com/graph/api/presence-setpresence and "Manage presence state",
# https://learn.microsoft.com/graph/cloud-communications-manage-presence-state): the user's
# preferred presence overrides every session; otherwise the sessions combine, DoNotDisturb >
# Busy > Available > Away. SPARKS' own session and the preferred presence SPARKS sets are among
# those sources, so an import can be nothing but SPARKS' publication coming back: the
# DoNotDisturb published for a manual dnd would be imported as dnd and keep the user dnd after
# they cleared it. The echo rule: an imported pair adds nothing when its contribution
# (`graph_import_contribution`) is that of a pair SPARKS itself had in the user's Graph presence
# at the time of the read, within ECHO_GRACE. Only what Teams got from elsewhere (a Teams client,
# a Teams meeting or call, the user's own preferred presence) is an input.
#
# The grace covers Graph's propagation both ways: a read shortly after SPARKS cleared or replaced
# a pair may still show it, and one shortly before SPARKS' record of a set (which is written once
# Graph answered) may already show it. Both SPARKS' session and its preferred presence are
# compared: within the grace either may be the one Teams showed, and when SPARKS set both, its
# session is Available, which adds nothing and so explains nothing.
ECHO_GRACE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class OwnPublication:
    """A pair SPARKS itself had in a user's Graph presence (its session or the preferred presence),
    from `since` until `until` (when SPARKS cleared or replaced it, or it expired)."""

    availability: str
    activity: str
    since: datetime
    until: datetime


def is_own_echo(
    availability: str | None, activity: str | None, observed_at: datetime, own: Iterable[OwnPublication]
) -> bool:
    """Whether an imported pair is explained by SPARKS' own publications: then it adds nothing.

    A pair that contributes nothing needs no explaining (False), and one SPARKS had not published
    around `observed_at` came from elsewhere and counts (False).
    """
    imported = graph_import_contribution(availability, activity)
    if imported is None:
        return False
    return any(
        publication.since - ECHO_GRACE <= observed_at <= publication.until + ECHO_GRACE
        and graph_import_contribution(publication.availability, publication.activity) == imported
        for publication in own
    )
