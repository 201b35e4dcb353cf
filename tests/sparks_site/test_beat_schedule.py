"""Celery beat's schedule lives in the database, where the admin shows and edits it."""

from __future__ import annotations

import pytest
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from sparks_site.celery import app

# Beat closes database connections as it sets up, which a test transaction would not survive.
pytestmark = pytest.mark.django_db(transaction=True)


def test_beat_writes_the_sweep_and_flush_schedules_to_the_database(settings):
    DatabaseScheduler(app=app)

    sweep = PeriodicTask.objects.get(name="presence-sweep-expired")
    assert sweep.task == "presence.tasks.sweep_expired_presence"
    assert sweep.interval.every == settings.PRESENCE_SWEEP_INTERVAL_SECONDS
    assert sweep.enabled
    flush = PeriodicTask.objects.get(name="presence-flush-device-activity")
    assert flush.task == "presence.tasks.flush_device_activity"


def test_an_admin_sees_the_periodic_tasks(admin_client):
    DatabaseScheduler(app=app)

    response = admin_client.get("/admin/django_celery_beat/periodictask/")

    assert response.status_code == 200
    assert b"presence-sweep-expired" in response.content


def test_beat_keeps_published_presence_alive_and_imports_microsoft_presence(settings):
    DatabaseScheduler(app=app)

    refresh = PeriodicTask.objects.get(name="integrations-refresh-published-presence")
    assert refresh.task == "integrations.tasks.refresh_published_presence"
    # Synapse decays an unsynced presence after ~30 s: the refresh must run well inside that.
    assert refresh.interval.every < 30
    assert PeriodicTask.objects.get(name="integrations-import-microsoft-presence").enabled
