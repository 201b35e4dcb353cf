"""The demo organization's colleagues (`presence.demo`, `manage.py demo_presence`): a varied
presence for the people page on `make run`."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from orgs.models import User
from presence import selectors, services
from presence.demo import play_demo_colleagues

pytestmark = pytest.mark.django_db


def statuses() -> dict[str, str]:
    users = User.objects.filter(membership__organization__slug="demo").exclude(username="alice")
    return {user.username: selectors.current_presence(user).status for user in users}


def test_the_demo_colleagues_show_every_status():
    call_command("seed_demo", stdout=StringIO())
    out = StringIO()

    call_command("demo_presence", stdout=out)

    assert statuses() == {
        "bob": "available",
        "dave": "busy",
        "demo-admin": "busy",
        "erin": "dnd",
        "frank": "away",
        "grace": "offline",
    }
    assert "5" in out.getvalue()
    erin = selectors.current_presence(User.objects.get(username="erin"))
    assert erin.status_msg == "Focus time" and erin.status_until is not None


def test_playing_again_keeps_them_counted_and_keeps_a_status_someone_chose():
    call_command("seed_demo", stdout=StringIO())
    play_demo_colleagues()
    erin = User.objects.get(username="erin")
    services.set_manual_status(erin, "available", "Back")

    later = timezone.now() + timedelta(seconds=90)
    assert play_demo_colleagues(later) == 5

    assert selectors.current_presence(erin).status_msg == "Back"
    assert statuses()["bob"] == "available"


def test_nothing_is_played_before_the_demo_is_seeded():
    assert play_demo_colleagues() == 0


def test_the_beat_entry_is_there_only_when_asked_for(settings):
    # Read when the settings are loaded: `make run` sets DEMO_COLLEAGUES for its server only.
    assert "presence-demo-colleagues" not in settings.CELERY_BEAT_SCHEDULE
