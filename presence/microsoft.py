"""What an imported Microsoft presence adds to aggregation (the engine's rule 4): busy,
do-not-disturb, or nothing.

Pure Python (no Django), like the vocabulary: the engine decides with it, the decision trace
(`presence.explain`) explains with it, and `integrations.mapping` reads SPARKS' own Teams
presence back with it (the echo rule). Publishing to Microsoft Graph is `integrations.mapping`'s.
"""

from __future__ import annotations

from presence.vocabulary import Activity, Status

# Graph's `availability` and `activity` values are documented in PascalCase but compared
# case-insensitively, and unknown values (Graph adds some now and then) contribute nothing.
GRAPH_BUSY_AVAILABILITIES = frozenset({"busy", "busyidle"})
GRAPH_DND_AVAILABILITIES = frozenset({"donotdisturb"})
GRAPH_CALL_ACTIVITIES = frozenset({"inacall", "inaconferencecall"})
GRAPH_MEETING_ACTIVITIES = frozenset({"inameeting"})
GRAPH_DND_ACTIVITIES = frozenset({"donotdisturb", "presenting", "urgentinterruptionsonly"})


def graph_import_contribution(availability: str | None, activity: str | None) -> tuple[Status, Activity] | None:
    """What an imported Microsoft presence adds to aggregation: busy, dnd, or nothing.

    The import only ever adds busy or do-not-disturb; Microsoft's "Available" or "Away" never
    override what SPARKS devices say, because the devices are the better witnesses here.
    """
    availability_key = (availability or "").strip().lower()
    activity_key = (activity or "").strip().lower()
    if availability_key in GRAPH_DND_AVAILABILITIES or activity_key in GRAPH_DND_ACTIVITIES:
        return Status.DND, Activity.DO_NOT_DISTURB
    if activity_key in GRAPH_CALL_ACTIVITIES:
        return Status.BUSY, Activity.IN_CALL
    if activity_key in GRAPH_MEETING_ACTIVITIES:
        return Status.BUSY, Activity.IN_MEETING
    if availability_key in GRAPH_BUSY_AVAILABILITIES or activity_key == "busy":
        return Status.BUSY, Activity.BUSY
    return None
