"""Publishing visible presence changes to the organization's group on the real (Redis) channel layer."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import time_machine
from channels.layers import get_channel_layer
from django.utils import timezone

from presence import events, hot, services
from presence.models import PresenceState
from presence.tasks import sweep_expired_presence
from presence.vocabulary import Status

# Publishing happens when the transaction commits: these tests need real commits.
pytestmark = pytest.mark.django_db(transaction=True)

QUIET_SECONDS = 0.5


@pytest.fixture
def bob_api(api_for, bob):
    client = api_for(bob)
    response = client.post("/api/v1/devices", {"installation_id": "install-1"}, format="json")
    assert response.status_code == 201
    client.device_id = response.json()["device_id"]
    return client


def _heartbeat(client, seq: int):
    return client.post(
        f"/api/v1/devices/{client.device_id}/signals", {"signals": [{"type": "heartbeat", "seq": seq}]}, format="json"
    )


def test_the_channel_layer_is_redis():
    assert type(get_channel_layer()).__module__.startswith("channels_redis")


def test_an_announcement_in_the_hot_stores_step_is_the_groups_own_message(listen, organization, bob):
    """A device's change is published by the hot store's script (one Redis step with the change);
    listeners must not tell it from the layer's group send."""
    listener = listen(organization.id)
    change = events.PresenceChange(organization.id, str(bob.public_id), "away", "inactive", None, False, None)

    events.publish(change)
    sent = listener.receive()
    channel, payload = events.announcement(change)
    hot.store().client.publish(channel, payload)
    announced = listener.receive()

    assert sent is not None
    assert announced == sent
    assert (announced["user_id"], announced["status"]) == (str(bob.public_id), "away")


@pytest.mark.parametrize("prefix", ["elsewhere", None], ids=["another prefix", "the layer's default prefix"])
def test_an_announcement_follows_the_prefix_the_layer_is_configured_with(settings, prefix, listen, organization, bob):
    layer = settings.CHANNEL_LAYERS["default"]
    config = {name: value for name, value in layer["CONFIG"].items() if name != "prefix"}
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": config | ({"prefix": prefix} if prefix else {})}}
    listener = listen(organization.id)
    change = events.PresenceChange(organization.id, str(bob.public_id), "busy", "busy", None, True, None)

    channel, payload = events.announcement(change)
    hot.store().client.publish(channel, payload)

    assert channel == f"{prefix or 'asgi'}__group__presence.org.{organization.id}"
    announced = listener.receive()
    assert (announced["user_id"], announced["status"]) == (str(bob.public_id), "busy")


def test_there_is_no_announcement_without_the_redis_pub_sub_layer(settings, organization, bob):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    change = events.PresenceChange(organization.id, str(bob.public_id), "busy", "busy", None, True, None)

    assert events.announcement(change) is None


def test_a_status_change_of_a_device_is_announced_once(listen, organization, bob, bob_api):
    assert _heartbeat(bob_api, 1).status_code == 202
    listener = listen(organization.id)

    response = bob_api.post(
        f"/api/v1/devices/{bob_api.device_id}/signals",
        {"signals": [{"type": "visibility", "value": "hidden", "seq": 2}]},
        format="json",
    )

    assert response.status_code == 202
    message = listener.receive()
    assert (message["user_id"], message["status"]) == (str(bob.public_id), "away")
    assert listener.receive(QUIET_SECONDS) is None


def test_a_manual_status_is_published_to_the_organization(listen, organization, bob, bob_api):
    listener = listen(organization.id)

    response = bob_api.put("/api/v1/me/status", {"status": "busy", "message": "release"}, format="json")
    assert response.status_code == 200

    message = listener.receive()
    assert message is not None
    assert message["type"] == "presence.change"
    assert message["organization_id"] == organization.id
    assert message["user_id"] == str(bob.public_id)
    assert message["status"] == "busy"
    assert message["status_msg"] == "release"
    assert listener.receive(QUIET_SECONDS) is None


def test_a_change_is_not_published_to_another_organization(listen, other_organization, bob_api):
    listener = listen(other_organization.id)

    bob_api.put("/api/v1/me/status", {"status": "busy", "message": "release"}, format="json")

    assert listener.receive(QUIET_SECONDS) is None


def test_a_signal_that_changes_nothing_visible_publishes_nothing(listen, organization, bob_api):
    assert _heartbeat(bob_api, 1).status_code == 202
    listener = listen(organization.id)

    response = _heartbeat(bob_api, 2)

    assert response.status_code == 202
    assert response.json()["signals_applied"] == 1
    assert listener.receive(QUIET_SECONDS) is None


def test_signing_the_last_device_out_publishes_offline(listen, organization, bob, bob_api):
    listener = listen(organization.id)

    assert bob_api.delete(f"/api/v1/devices/{bob_api.device_id}").status_code == 204

    message = listener.receive()
    assert message is not None
    assert (message["user_id"], message["status"]) == (str(bob.public_id), "offline")


def test_the_sweep_turns_a_timed_out_user_offline_and_publishes_it(api_for, listen, organization, bob):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        api_for(bob).post("/api/v1/devices", {"installation_id": "install-1"}, format="json")
    assert PresenceState.objects.get(user=bob).status == "available"

    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        listener = listen(organization.id)
        swept = sweep_expired_presence.apply().get()
        message = listener.receive()

    assert swept == 1
    state = PresenceState.objects.get(user=bob)
    assert (state.status, state.reason) == ("offline", "no_live_device")
    assert message is not None
    assert (message["user_id"], message["status"]) == (str(bob.public_id), "offline")


def test_running_the_sweep_twice_is_idempotent(api_for, listen, organization, bob):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        api_for(bob).post("/api/v1/devices", {"installation_id": "install-1"}, format="json")

    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        assert sweep_expired_presence.apply().get() == 1
        state_after_first = PresenceState.objects.filter(user=bob).values().get()
        listener = listen(organization.id)
        swept_again = sweep_expired_presence.apply().get()
        message = listener.receive(QUIET_SECONDS)

    assert swept_again == 0
    assert message is None
    assert PresenceState.objects.filter(user=bob).values().get() == state_after_first


def test_the_sweep_leaves_a_live_user_alone(api_for, listen, organization, bob):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        api_for(bob).post("/api/v1/devices", {"installation_id": "install-1"}, format="json")

    with time_machine.travel(start + timedelta(seconds=10), tick=False):
        listener = listen(organization.id)
        swept = sweep_expired_presence.apply().get()
        message = listener.receive(QUIET_SECONDS)

    assert swept == 0
    assert message is None
    assert PresenceState.objects.get(user=bob).status == "available"


# --- Subscribers: the apps above presence hear of changes ------------------------------------------


class Heard:
    def __init__(self) -> None:
        self.batches: list[list[events.PresenceChange]] = []

    def __call__(self, changes: list[events.PresenceChange]) -> None:
        self.batches.append(list(changes))


@pytest.fixture
def subscribe():
    subscribed: list[events.ChangesSubscriber] = []

    def make(subscriber: events.ChangesSubscriber) -> events.ChangesSubscriber:
        events.subscribe(subscriber)
        subscribed.append(subscriber)
        return subscriber

    yield make
    for subscriber in subscribed:
        events.unsubscribe(subscriber)


def test_a_subscriber_hears_of_a_change_once_it_is_committed(subscribe, organization, bob, bob_api):
    heard = subscribe(Heard())

    services.set_manual_status(bob, Status.DND, "focus")

    [[change]] = heard.batches
    assert (change.organization_id, change.user_id) == (organization.id, str(bob.public_id))
    assert (change.status, change.status_msg, change.source) == ("dnd", "focus", "manual_status")


def test_a_change_of_sharing_is_heard_though_nothing_visible_changed(subscribe, bob, bob_api):
    heard = subscribe(Heard())

    services.update_preferences(bob, share_externally=True)

    [[change]] = heard.batches
    assert (change.user_id, change.status) == (str(bob.public_id), "available")


def test_a_failing_subscriber_fails_no_change_and_keeps_no_one_else_from_hearing(
    subscribe, listen, organization, bob, bob_api, caplog
):
    def broken(changes: list[events.PresenceChange]) -> None:
        raise ConnectionError("broker down")

    subscribe(broken)
    heard = subscribe(Heard())
    listener = listen(organization.id)

    services.set_manual_status(bob, Status.DND)

    assert PresenceState.objects.get(user=bob).status == "dnd"
    assert listener.receive()["status"] == "dnd"
    assert [[change.status for change in batch] for batch in heard.batches] == [["dnd"]]
    assert "Could not hand 1 presence change(s) to" in caplog.text and "broken" in caplog.text


def test_subscribing_twice_hears_once(subscribe, bob, bob_api):
    heard = Heard()
    subscribe(heard)
    subscribe(heard)

    services.set_manual_status(bob, Status.AWAY)

    assert len(heard.batches) == 1


def test_nothing_is_heard_of_a_signal_that_changes_nothing_visible(subscribe, bob_api):
    assert _heartbeat(bob_api, 1).status_code == 202
    heard = subscribe(Heard())

    assert _heartbeat(bob_api, 2).status_code == 202

    assert heard.batches == []


def test_changes_handed_over_without_waiting_are_sent_before_the_process_exits():
    """The publisher's close (run at exit) sends what is queued, then stops its loop."""
    sent: list[str] = []

    class SlowLayer:
        async def group_send(self, group: str, message: dict) -> None:
            await asyncio.sleep(0.2)
            sent.append(message["user_id"])

    publisher = events._Publisher()
    changes = [events.PresenceChange(5, f"user-{n}", "busy", "busy", None, False, None) for n in range(3)]
    publisher.send(SlowLayer(), changes, wait=False)

    publisher.close()

    assert sorted(sent) == ["user-0", "user-1", "user-2"]
    assert not publisher.thread.is_alive()
