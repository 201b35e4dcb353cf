"""Beat's work on the embedded default: the schedule run in the server process, and countdowns
waited for when tasks run in-process."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from celery import shared_task
from celery.schedules import crontab
from celery.signals import task_prerun
from django.conf import settings as project_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from presence import services, sweep_clock
from presence.models import PresenceState
from sparks_site.periodic import DeferredTasks, InProcessBeat, deferred, start_in_process_beat

pytestmark = pytest.mark.django_db(transaction=True)

ran_with: list[object] = []


@shared_task(name="tests.periodic.remember")
def remember(value: object) -> None:
    ran_with.append(value)


@shared_task(name="tests.periodic.fail")
def fail() -> None:
    raise RuntimeError("this task always fails")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def started_tasks() -> list[str]:
    """The names of the tasks that started, as Celery announces them."""
    names: list[str] = []

    def record(sender, **kwargs) -> None:
        names.append(sender.name)

    task_prerun.connect(record, weak=False)
    yield names
    task_prerun.disconnect(record)


@pytest.fixture(autouse=True)
def _forget_runs() -> None:
    ran_with.clear()


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


# --- One schedule: what beat does, the in-process beat does -------------------------------------


@pytest.mark.parametrize("entry_name", sorted(project_settings.CELERY_BEAT_SCHEDULE))
def test_every_entry_of_beats_schedule_runs_in_process_on_its_interval(settings, clock, started_tasks, entry_name):
    entry = settings.CELERY_BEAT_SCHEDULE[entry_name]
    interval = entry["schedule"].total_seconds()
    beat = InProcessBeat({entry_name: entry}, queue=DeferredTasks(clock), clock=clock)

    clock.now += interval - 0.5
    assert beat.run_due() == []
    clock.now += 0.5
    assert beat.run_due() == [entry["task"]]
    clock.now += interval - 0.5
    assert beat.run_due() == []
    clock.now += 0.5
    assert beat.run_due() == [entry["task"]]

    assert started_tasks == [entry["task"], entry["task"]]


def test_the_embedded_default_runs_the_whole_schedule(settings, clock):
    beat = InProcessBeat(settings.CELERY_BEAT_SCHEDULE, queue=DeferredTasks(clock), clock=clock)

    clock.now += max(entry["schedule"].total_seconds() for entry in settings.CELERY_BEAT_SCHEDULE.values())

    assert sorted(beat.run_due()) == sorted(entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values())


def test_a_failing_task_does_not_stop_the_schedule(clock, capfd):
    beat = InProcessBeat(
        {"fails": {"task": "tests.periodic.fail", "schedule": 1.0}, "works": {"task": "tests.periodic.remember",
         "schedule": timedelta(seconds=1), "args": ("after the failure",)}},
        queue=DeferredTasks(clock),
        clock=clock,
    )  # fmt: skip
    clock.now += 1

    beat.run_due()

    assert ran_with == ["after the failure"]
    assert "In-process task tests.periodic.fail failed" in capfd.readouterr().err


def test_an_entry_that_is_not_an_interval_is_refused():
    with pytest.raises(ImproperlyConfigured, match="nightly"):
        InProcessBeat({"nightly": {"task": "tests.periodic.remember", "schedule": crontab(hour=3)}})


def test_no_beat_starts_in_process_where_celery_beat_runs(settings):
    settings.BEAT_IN_PROCESS = False

    assert start_in_process_beat() is None


def test_the_in_process_beat_turns_a_silent_device_offline_and_records_the_sweep(alice, settings):
    with time_machine.travel(timezone.now() - timedelta(minutes=10), tick=False):
        services.register_device(alice, "laptop-installation")
    assert PresenceState.objects.get(user=alice).status == "available"
    sweep_clock.forget_sweep()
    sweep = {**settings.CELERY_BEAT_SCHEDULE["presence-sweep-expired"], "schedule": 0.05}

    beat = InProcessBeat({"presence-sweep-expired": sweep}).start()
    try:
        _wait_until(lambda: PresenceState.objects.get(user=alice).status == "offline")
    finally:
        beat.stop()

    assert PresenceState.objects.get(user=alice).reason == "no_live_device"
    assert time.time() - sweep_clock.last_sweep() < 5  # for /readyz


# --- Countdowns -----------------------------------------------------------------------------------


def test_in_process_a_task_sent_with_a_countdown_waits_for_it(settings):
    assert remember.app.conf.task_always_eager  # the suite runs tasks in-process

    remember.apply_async(args=["later"], countdown=30)
    remember.delay("now")

    assert ran_with == ["now"]
    assert [(name, round(seconds)) for name, seconds in deferred.pending()] == [("tests.periodic.remember", 30)]


def test_a_deferred_task_runs_once_its_countdown_is_over(clock):
    queue = DeferredTasks(clock)
    beat = InProcessBeat({}, queue=queue, clock=clock)
    queue.add("tests.periodic.remember", ("second",), {}, 2.0)
    queue.add("tests.periodic.remember", ("first",), {}, 1.0)

    clock.now += 0.9
    assert beat.run_due() == []
    clock.now += 1.1

    assert beat.run_due() == ["tests.periodic.remember", "tests.periodic.remember"]
    assert ran_with == ["first", "second"]
    assert queue.pending() == []


def test_a_task_sent_with_an_eta_waits_for_it():
    remember.apply_async(args=["at the eta"], eta=timezone.now() + timedelta(seconds=20))

    assert ran_with == []
    assert 18 < deferred.pending()[0][1] <= 20


def test_the_running_beat_wakes_up_for_a_countdown_shorter_than_its_schedule():
    beat = InProcessBeat({"hourly": {"task": "tests.periodic.remember", "schedule": 3600, "args": ("hourly",)}})
    beat.start()
    try:
        sent_at = time.monotonic()
        remember.apply_async(args=["soon"], countdown=0.3)
        _wait_until(lambda: ran_with == ["soon"])
        waited = time.monotonic() - sent_at
    finally:
        beat.stop()

    assert 0.3 <= waited < 3
