"""The one table between SPARKS' vocabulary and Matrix's and Microsoft Graph's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integrations.mapping import (
    ECHO_GRACE,
    GRAPH_PREFERRED_PAIRS,
    GRAPH_SESSION_PAIRS,
    GraphPresence,
    OwnPublication,
    graph_presence,
    is_own_echo,
    matrix_presence,
)
from presence.vocabulary import MANUAL_STATUS_ACTIVITY, Activity, Status
from tests.integrations.fake_microsoft import PREFERRED_PAIRS, SESSION_PAIRS

EVERY_STATE = [(status, activity) for status in Status for activity in Activity]


@pytest.mark.parametrize(
    ("status", "busy_supported", "expected"),
    [
        (Status.AVAILABLE, True, "online"),
        (Status.BUSY, True, "org.matrix.msc3026.busy"),
        (Status.BUSY, False, "unavailable"),
        (Status.DND, True, "org.matrix.msc3026.busy"),
        (Status.DND, False, "unavailable"),
        (Status.AWAY, True, "unavailable"),
        (Status.OFFLINE, True, "offline"),
    ],
)
def test_every_status_has_a_matrix_presence(status, busy_supported, expected):
    assert matrix_presence(status, None, busy_supported).presence == expected


def test_the_status_message_is_carried_to_matrix():
    assert matrix_presence(Status.DND, "Focus time", True).body() == {
        "presence": "org.matrix.msc3026.busy",
        "status_msg": "Focus time",
    }


def test_an_empty_message_is_left_out_so_matrix_clears_it():
    assert matrix_presence(Status.AVAILABLE, "", True).body() == {"presence": "online"}


def test_offline_carries_no_message_to_matrix():
    assert matrix_presence(Status.OFFLINE, "Gone fishing", True).body() == {"presence": "offline"}


@pytest.mark.parametrize(
    ("status", "activity", "expected"),
    [
        (Status.AVAILABLE, Activity.AVAILABLE, GraphPresence(("Available", "Available"))),
        (Status.BUSY, Activity.IN_CALL, GraphPresence(("Busy", "InACall"))),
        (Status.BUSY, Activity.IN_MEETING, GraphPresence(("Busy", "InAConferenceCall"))),
        (Status.BUSY, Activity.IN_CALENDAR_EVENT, GraphPresence(("Available", "Available"), ("Busy", "Busy"))),
        (Status.BUSY, Activity.BUSY, GraphPresence(("Available", "Available"), ("Busy", "Busy"))),
        (Status.AWAY, Activity.INACTIVE, GraphPresence(("Away", "Away"))),
        (Status.AWAY, Activity.AWAY, GraphPresence(("Away", "Away"))),
        (
            Status.DND,
            Activity.DO_NOT_DISTURB,
            GraphPresence(("Available", "Available"), ("DoNotDisturb", "DoNotDisturb")),
        ),
        (Status.OFFLINE, Activity.OFFLINE, GraphPresence(None)),
    ],
)
def test_every_status_has_a_graph_presence(status, activity, expected):
    assert graph_presence(status, activity) == expected


@pytest.mark.parametrize(("status", "activity"), EVERY_STATE)
def test_only_pairs_graph_accepts_are_ever_sent(status, activity):
    published = graph_presence(status, activity)

    assert published.session is None or published.session in SESSION_PAIRS
    assert published.preferred is None or published.preferred in PREFERRED_PAIRS


def test_the_table_knows_exactly_the_pairs_graph_accepts():
    assert set(GRAPH_SESSION_PAIRS) == SESSION_PAIRS
    assert set(GRAPH_PREFERRED_PAIRS) == PREFERRED_PAIRS


@pytest.mark.parametrize("status", list(Status))
def test_a_manual_status_maps_to_the_same_availability_on_both_targets(status):
    published = graph_presence(status, MANUAL_STATUS_ACTIVITY[status])
    shown = (published.preferred or published.session or ("Offline", "OffWork"))[0]

    assert shown == {"available": "Available", "busy": "Busy", "away": "Away", "dnd": "DoNotDisturb"}.get(
        status, "Offline"
    )


# --- The echo rule: SPARKS' own Teams presence read back adds nothing ----------------------------

READ_AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def ours(pair: tuple[str, str], since: int, until: int = 3600) -> OwnPublication:
    """A pair SPARKS had in Graph from `since` to `until` seconds relative to the read."""
    return OwnPublication(*pair, READ_AT + timedelta(seconds=since), READ_AT + timedelta(seconds=until))


SESSION_AVAILABLE = ("Available", "Available")
PREFERRED_DND = ("DoNotDisturb", "DoNotDisturb")
GRACE = int(ECHO_GRACE.total_seconds())


@pytest.mark.parametrize(
    ("imported", "published", "echo"),
    [
        pytest.param(
            ("DoNotDisturb", "DoNotDisturb"),
            [ours(SESSION_AVAILABLE, -600), ours(PREFERRED_DND, -120)],
            True,
            id="the manual dnd SPARKS published comes back: not the user's",
        ),
        pytest.param(
            ("DoNotDisturb", "DoNotDisturb"),
            [ours(SESSION_AVAILABLE, -600), ours(PREFERRED_DND, -600, until=-30)],
            True,
            id="read shortly after SPARKS cleared it: still SPARKS'",
        ),
        pytest.param(
            ("DoNotDisturb", "DoNotDisturb"),
            [ours(SESSION_AVAILABLE, -600), ours(PREFERRED_DND, -600, until=-GRACE - 1)],
            False,
            id="cleared longer ago than the grace: the user's own",
        ),
        pytest.param(
            ("DoNotDisturb", "DoNotDisturb"),
            [ours(PREFERRED_DND, 30)],
            True,
            id="read just before SPARKS recorded the set Graph had applied",
        ),
        pytest.param(
            ("DoNotDisturb", "Presenting"),
            [ours(SESSION_AVAILABLE, -600), ours(PREFERRED_DND, -120)],
            True,
            id="another do-not-disturb activity is the same contribution",
        ),
        pytest.param(
            ("DoNotDisturb", "DoNotDisturb"),
            [ours(SESSION_AVAILABLE, -600)],
            False,
            id="the user's own do-not-disturb in Teams over SPARKS' Available session",
        ),
        pytest.param(
            ("Busy", "InAMeeting"),
            [ours(SESSION_AVAILABLE, -600)],
            False,
            id="a Teams meeting while SPARKS' session is Available",
        ),
        pytest.param(("Busy", "InACall"), [ours(("Busy", "InACall"), -60)], True, id="SPARKS' own call"),
        pytest.param(
            ("Busy", "InAConferenceCall"), [ours(("Busy", "InACall"), -60)], True, id="a call either way is SPARKS'"
        ),
        pytest.param(
            ("Busy", "InAMeeting"),
            [ours(("Busy", "InAConferenceCall"), -60)],
            False,
            id="a Teams meeting is not SPARKS' call",
        ),
        pytest.param(("Busy", "Busy"), [ours(("Busy", "Busy"), -60)], True, id="SPARKS' own busy"),
        pytest.param(("Busy", "Busy"), [ours(PREFERRED_DND, -60)], False, id="busy is not SPARKS' dnd"),
        pytest.param(
            ("DoNotDisturb", "DoNotDisturb"),
            [ours(PREFERRED_DND, -3600, until=-GRACE - 1)],
            False,
            id="SPARKS' expired long before the read",
        ),
        pytest.param(("DoNotDisturb", "DoNotDisturb"), [], False, id="SPARKS published nothing"),
        pytest.param(
            ("Available", "Available"),
            [ours(SESSION_AVAILABLE, -60)],
            False,
            id="a pair that adds nothing needs no explaining",
        ),
    ],
)
def test_an_import_explained_by_what_sparks_published_is_an_echo(imported, published, echo):
    assert is_own_echo(*imported, READ_AT, published) is echo
