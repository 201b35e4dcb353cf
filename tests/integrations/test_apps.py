"""The integrations hear of presence changes by subscribing to them (presence knows nothing of
Matrix or Microsoft): dispatch gets every change, and its failures never fail one."""

from __future__ import annotations

import pytest

from integrations import dispatch
from integrations.models import DispatchState
from presence import events, services
from presence.models import PresenceState
from presence.vocabulary import Status

# Dispatch starts when the change's transaction commits.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def planned(monkeypatch) -> list[list[dict]]:
    """What dispatch put on the broker, instead of planning it."""
    sent: list[list[dict]] = []
    monkeypatch.setattr(dispatch.plan_dispatch, "apply_async", lambda args, **options: sent.append(args[0]))
    return sent


def test_dispatch_is_subscribed_to_presence_changes():
    events.subscribe(dispatch.enqueue)  # subscribed at start-up already: changes nothing

    assert events.subscribers().count(dispatch.enqueue) == 1


def test_a_change_of_a_sharing_user_reaches_dispatch(alice, tenant, sharing, server_dispatch, broker):
    sharing(alice)
    services.register_device(alice, "laptop")

    services.set_manual_status(alice, Status.DND, "Focus")

    desired = DispatchState.objects.get(user=alice, target="microsoft").desired
    assert (desired["status"], desired["status_msg"]) == ("dnd", "Focus")
    assert broker.history and broker.history[-1].user_id == alice.pk


def test_dispatch_is_handed_the_change_as_one_broker_message(alice, server_dispatch, planned):
    services.register_device(alice, "laptop")
    planned.clear()

    services.set_manual_status(alice, Status.BUSY, "release")

    [[change]] = planned
    assert change == {
        "user_id": str(alice.public_id),
        "status": "busy",
        "activity": "busy",
        "status_msg": "release",
        "reason": "manual_status",
    }


def test_dispatch_hears_nothing_while_server_dispatch_is_off(alice, settings, planned):
    settings.PRESENCE_USE_AGGREGATOR = True
    settings.PRESENCE_SERVER_DISPATCH = False
    services.register_device(alice, "laptop")

    services.set_manual_status(alice, Status.BUSY)

    assert planned == []


def test_a_broker_that_is_down_fails_no_change(alice, server_dispatch, monkeypatch, caplog):
    def down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(dispatch.plan_dispatch, "apply_async", down)
    services.register_device(alice, "laptop")

    state = services.set_manual_status(alice, Status.DND)

    assert state.status == "dnd"
    assert PresenceState.objects.get(user=alice).status == "dnd"
    assert "Could not hand 1 presence change(s) to integrations.dispatch.enqueue" in caplog.text
