"""The presence vocabulary, and the words other apps store in it."""

from __future__ import annotations

from orgs.models import PresencePolicy
from presence.vocabulary import Priority


def test_the_organizations_policy_stores_exactly_the_priorities_the_engine_knows():
    """orgs, below presence, keeps its own choices for its policy's default priority."""
    assert [(choice.value, choice.label) for choice in PresencePolicy.Priority] == [
        (priority.value, priority.value.replace("_", " ")) for priority in Priority
    ]
    assert PresencePolicy._meta.get_field("default_priority").default == Priority.CALENDAR_FIRST
