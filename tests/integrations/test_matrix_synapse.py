"""Publishing to a real Synapse as an appservice; a colleague in a shared room reads it back."""

from __future__ import annotations

import uuid

import pytest

from integrations import matrix
from integrations.models import DispatchState
from presence import services
from presence.vocabulary import Status
from tests.factories import MatrixHomeserverFactory

pytestmark = [pytest.mark.synapse, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def homeserver(organization, synapse):
    return MatrixHomeserverFactory(
        organization=organization, base_url=synapse.base_url, server_name=synapse.server_name, as_token=synapse.as_token
    )


@pytest.fixture
def published(make_member, synapse, homeserver, sharing, server_dispatch):
    """A SPARKS member who shares their presence, and a Matrix colleague sharing a room with them."""
    localpart = f"sparks{uuid.uuid4().hex[:10]}"
    member = make_member(localpart)
    on_matrix = synapse.register(localpart)
    colleague = synapse.register(f"colleague{uuid.uuid4().hex[:10]}")
    synapse.share_a_room(colleague, on_matrix)
    sharing(member)
    return member, on_matrix, colleague


def test_the_homeserver_advertises_busy_presence(synapse):
    assert matrix.supports_busy(synapse.base_url) is True


def test_a_colleague_in_a_shared_room_sees_the_published_presence(published, synapse):
    member, on_matrix, colleague = published

    services.register_device(member, "laptop")

    assert synapse.presence_of(colleague, on_matrix.user_id)["presence"] == "online"
    assert DispatchState.objects.get(user=member, target="matrix").sent["status"] == "available"


def test_do_not_disturb_is_busy_with_its_message_on_matrix(published, synapse):
    member, on_matrix, colleague = published
    services.register_device(member, "laptop")

    services.set_manual_status(member, Status.DND, "Writing the quarterly report")

    presence = synapse.presence_of(colleague, on_matrix.user_id)
    assert presence["presence"] == "org.matrix.msc3026.busy"
    assert presence["status_msg"] == "Writing the quarterly report"


def test_away_is_unavailable_on_matrix(published, synapse):
    member, on_matrix, colleague = published
    services.register_device(member, "laptop")

    services.set_manual_status(member, Status.AWAY)

    assert synapse.presence_of(colleague, on_matrix.user_id)["presence"] == "unavailable"


def test_appearing_offline_during_a_call_is_offline_on_matrix(published, synapse):
    member, on_matrix, colleague = published
    device, _ = services.register_device(member, "laptop")
    services.ingest_signals(member, device.device_id, [services.Signal("call", "start", 1)])
    assert synapse.presence_of(colleague, on_matrix.user_id)["presence"] == "org.matrix.msc3026.busy"

    services.set_manual_status(member, Status.OFFLINE)

    assert synapse.presence_of(colleague, on_matrix.user_id)["presence"] == "offline"


def test_turning_sharing_off_sets_the_matrix_presence_offline(published, synapse):
    member, on_matrix, colleague = published
    services.register_device(member, "laptop")

    services.update_preferences(member, share_externally=False)

    assert synapse.presence_of(colleague, on_matrix.user_id)["presence"] == "offline"


def test_a_refresh_publishes_the_same_state_again(published, synapse):
    from integrations import dispatch

    member, on_matrix, colleague = published
    services.register_device(member, "laptop")
    sent_at = DispatchState.objects.get(user=member, target="matrix").sent_at

    delivery = dispatch.deliver(member.pk, "matrix", refresh=True)

    assert delivery.sent
    assert DispatchState.objects.get(user=member, target="matrix").sent_at > sent_at
    assert synapse.presence_of(colleague, on_matrix.user_id)["presence"] == "online"
