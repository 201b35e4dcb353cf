"""The in-process sweep of the embedded default, where no Celery beat runs."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from presence import services, sweep_clock
from presence.models import PresenceState
from presence.sweeper import InProcessSweeper, start_in_process_sweeper

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_in_process_sweeper_turns_a_silent_device_offline(alice):
    with time_machine.travel(timezone.now() - timedelta(minutes=10), tick=False):
        services.register_device(alice, "laptop-installation")
    assert PresenceState.objects.get(user=alice).status == "available"

    sweeper = InProcessSweeper(interval_seconds=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while PresenceState.objects.get(user=alice).status != "offline" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sweeper.stop()

    assert PresenceState.objects.get(user=alice).reason == "no_live_device"


def test_no_sweeper_thread_starts_when_celery_beat_does_the_sweeping(settings):
    settings.PRESENCE_IN_PROCESS_SWEEP = False
    assert start_in_process_sweeper() is None


def test_the_in_process_sweeper_records_when_it_swept(alice):
    sweep_clock.forget_sweep()

    sweeper = InProcessSweeper(interval_seconds=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while sweep_clock.last_sweep() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sweeper.stop()

    assert time.time() - sweep_clock.last_sweep() < 5
