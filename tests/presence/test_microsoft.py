"""What an imported Microsoft presence adds to aggregation (rule 4), read from Graph's values."""

from __future__ import annotations

import pytest

from presence.microsoft import graph_import_contribution
from presence.vocabulary import Activity, Status


@pytest.mark.parametrize(
    ("availability", "activity", "expected"),
    [
        ("Available", "Available", None),
        ("Busy", "InACall", (Status.BUSY, Activity.IN_CALL)),
        ("Busy", "InAConferenceCall", (Status.BUSY, Activity.IN_CALL)),
        ("Busy", "InAMeeting", (Status.BUSY, Activity.IN_MEETING)),
        ("Busy", "Busy", (Status.BUSY, Activity.BUSY)),
        ("BusyIdle", "Busy", (Status.BUSY, Activity.BUSY)),
        ("DoNotDisturb", "Presenting", (Status.DND, Activity.DO_NOT_DISTURB)),
        ("DoNotDisturb", "DoNotDisturb", (Status.DND, Activity.DO_NOT_DISTURB)),
        ("Away", "Away", None),
        ("BeRightBack", "BeRightBack", None),
        ("Offline", "OffWork", None),
    ],
)
def test_every_pair_graph_reports_has_a_known_import_meaning(availability, activity, expected):
    assert graph_import_contribution(availability, activity) == expected


def test_graph_values_are_read_case_insensitively():
    assert graph_import_contribution("  bUSY ", "INACALL") == (Status.BUSY, Activity.IN_CALL)


def test_unknown_graph_values_add_nothing():
    assert graph_import_contribution("Sleepy", "Daydreaming") is None
    assert graph_import_contribution(None, None) is None
