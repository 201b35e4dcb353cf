"""The expiry sweep run by a real Celery worker process, on Redis and the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone

from orgs.models import PresencePolicy
from presence import services
from presence.models import PresenceState
from sparks_site.celery import app
from tests.databases import database_url
from tests.presence.live_helpers import GroupListener

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The suite runs tasks eagerly; these tests send theirs to a real worker on purpose.
    pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored"),
]

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker_queue():
    """A Celery worker in its own process, consuming a queue of its own on the Redis broker."""
    queue = f"test-sweep-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "sparks_site", "worker", "-Q", queue, "--pool=solo",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=WARNING"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield queue
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=20)
        if worker.returncode not in (0, -15):
            print(output.decode(errors="replace"))


def _wait_for_status(user, status: str, timeout: float = 30.0) -> PresenceState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = PresenceState.objects.get(user=user)
        if state.status == status:
            return state
        time.sleep(0.2)
    raise AssertionError(f"presence did not become {status} within {timeout} s (is {state.status})")


def test_a_worker_sweep_turns_a_silent_device_offline_and_tells_the_organization(alice, organization, worker_queue):
    with time_machine.travel(timezone.now() - timedelta(minutes=10), tick=False):
        services.register_device(alice, "laptop-installation")
    assert PresenceState.objects.get(user=alice).status == "available"

    listener = GroupListener(organization.id)
    try:
        app.send_task("presence.tasks.sweep_expired_presence", queue=worker_queue)

        state = _wait_for_status(alice, "offline")
        assert state.reason == "no_live_device"
        message = listener.receive(timeout=30)
    finally:
        listener.close()

    assert message["type"] == "presence.change"
    assert message["user_id"] == str(alice.public_id)
    assert message["status"] == "offline"


def test_a_worker_recomputes_an_organization_after_its_policy_changes(alice, organization, worker_queue):
    services.register_device(alice, "laptop-installation")
    now = timezone.now()
    services.replace_calendar(alice, [(now - timedelta(minutes=5), now + timedelta(hours=1))])
    assert PresenceState.objects.get(user=alice).status == "busy"

    # A queryset update fires no receiver: the only recompute is the one the worker does.
    PresencePolicy.objects.filter(organization=organization).update(allow_calendar=False)
    assert PresenceState.objects.get(user=alice).status == "busy"
    app.send_task("presence.tasks.recompute_organization", args=[organization.id], queue=worker_queue)

    state = _wait_for_status(alice, "available")
    assert state.reason == "device_active"
