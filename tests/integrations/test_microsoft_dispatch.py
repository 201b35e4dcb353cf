"""Publishing aggregated presence to Microsoft Teams through Graph (msal + httpx against a fake)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from integrations import dispatch
from integrations.models import DispatchState, GraphPublication
from orgs.models import PresencePolicy
from presence import services
from presence.vocabulary import Status
from tests.factories import MatrixHomeserverFactory
from tests.integrations.fake_microsoft import Fault

# Dispatch starts when the change's transaction commits.
pytestmark = pytest.mark.django_db(transaction=True)


def _session(fake, account, tenant):
    return fake.sessions.get((account.microsoft_object_id, tenant.client_id))


def test_a_user_who_shares_gets_a_teams_session_when_their_presence_changes(
    alice, tenant, sharing, server_dispatch, fake_microsoft
):
    account = sharing(alice)

    services.register_device(alice, "laptop")

    assert _session(fake_microsoft, account, tenant) == {"availability": "Available", "activity": "Available"}
    set_presence = fake_microsoft.graph_calls("/setPresence")[-1]
    assert set_presence.body["sessionId"] == tenant.client_id
    assert set_presence.body["expirationDuration"] == "PT5M"
    state = DispatchState.objects.get(user=alice, target="microsoft")
    assert state.sent["status"] == "available"
    assert state.sent_at is not None


def test_msal_signs_in_once_per_tenant_and_reuses_its_token(alice, tenant, sharing, server_dispatch, fake_microsoft):
    sharing(alice)
    services.register_device(alice, "laptop")
    services.set_manual_status(alice, Status.AWAY)

    assert fake_microsoft.token_requests == 1


def test_a_call_is_busy_in_a_call_on_teams(alice, tenant, sharing, server_dispatch, fake_microsoft):
    account = sharing(alice)
    device, _ = services.register_device(alice, "laptop")

    services.ingest_signals(alice, device.device_id, [services.Signal("call", "start", 1)])

    assert _session(fake_microsoft, account, tenant) == {"availability": "Busy", "activity": "InACall"}
    assert account.microsoft_object_id not in fake_microsoft.preferred


def test_do_not_disturb_is_the_users_preferred_presence_over_an_available_session(
    alice, tenant, sharing, server_dispatch, fake_microsoft
):
    account = sharing(alice)
    services.register_device(alice, "laptop")

    services.set_manual_status(alice, Status.DND, "Focus")

    assert _session(fake_microsoft, account, tenant) == {"availability": "Available", "activity": "Available"}
    assert fake_microsoft.preferred[account.microsoft_object_id] == {
        "availability": "DoNotDisturb",
        "activity": "DoNotDisturb",
    }


def test_leaving_do_not_disturb_clears_the_preferred_presence(alice, tenant, sharing, server_dispatch, fake_microsoft):
    account = sharing(alice)
    services.register_device(alice, "laptop")
    services.set_manual_status(alice, Status.DND)

    services.clear_manual_status(alice)

    assert account.microsoft_object_id not in fake_microsoft.preferred
    assert _session(fake_microsoft, account, tenant) == {"availability": "Available", "activity": "Available"}


def test_going_offline_clears_the_teams_session(alice, tenant, sharing, server_dispatch, fake_microsoft):
    account = sharing(alice)
    device, _ = services.register_device(alice, "laptop")

    services.sign_out_device(alice, device.device_id)

    assert _session(fake_microsoft, account, tenant) is None
    assert DispatchState.objects.get(user=alice, target="microsoft").sent["status"] == "offline"


def test_appearing_offline_during_a_call_clears_the_teams_session(
    alice, tenant, sharing, server_dispatch, fake_microsoft
):
    account = sharing(alice)
    device, _ = services.register_device(alice, "laptop")
    services.ingest_signals(alice, device.device_id, [services.Signal("call", "start", 1)])

    services.set_manual_status(alice, Status.OFFLINE)

    assert _session(fake_microsoft, account, tenant) is None
    assert DispatchState.objects.get(user=alice, target="microsoft").sent["status"] == "offline"


def test_turning_sharing_off_clears_what_was_published(alice, tenant, sharing, server_dispatch, fake_microsoft):
    account = sharing(alice)
    services.register_device(alice, "laptop")
    services.set_manual_status(alice, Status.BUSY)

    services.update_preferences(alice, share_externally=False)

    assert _session(fake_microsoft, account, tenant) is None
    assert account.microsoft_object_id not in fake_microsoft.preferred


def test_turning_sharing_on_publishes_the_current_presence(alice, tenant, server_dispatch, fake_microsoft, sharing):
    services.register_device(alice, "laptop")
    assert fake_microsoft.graph_calls() == []

    account = sharing(alice)

    assert _session(fake_microsoft, account, tenant) == {"availability": "Available", "activity": "Available"}


def test_after_sharing_is_off_changes_are_not_published(alice, tenant, sharing, server_dispatch, fake_microsoft):
    sharing(alice)
    services.register_device(alice, "laptop")
    services.update_preferences(alice, share_externally=False)
    calls = len(fake_microsoft.graph_calls())

    services.set_manual_status(alice, Status.DND)

    assert len(fake_microsoft.graph_calls()) == calls


def test_a_user_who_does_not_share_is_never_published(alice, tenant, server_dispatch, fake_microsoft):
    from tests.factories import ExternalAccountFactory

    ExternalAccountFactory(user=alice)

    services.register_device(alice, "laptop")

    assert fake_microsoft.graph_calls() == []
    assert not DispatchState.objects.filter(user=alice).exists()


def test_an_organization_that_forbids_external_dispatch_is_never_published(
    alice, organization, tenant, sharing, server_dispatch, fake_microsoft
):
    PresencePolicy.objects.filter(organization=organization).update(allow_external_dispatch=False)
    sharing(alice)

    services.register_device(alice, "laptop")

    assert fake_microsoft.graph_calls() == []


def test_nothing_is_dispatched_while_server_dispatch_is_off(alice, tenant, sharing, settings, fake_microsoft):
    settings.PRESENCE_SERVER_DISPATCH = False
    sharing(alice)

    services.register_device(alice, "laptop")

    assert fake_microsoft.graph_calls() == []


def test_a_burst_of_changes_sends_one_request_with_the_newest_state(
    alice, tenant, sharing, server_dispatch, fake_microsoft, broker
):
    account = sharing(alice)
    services.register_device(alice, "laptop")
    services.set_manual_status(alice, Status.AWAY)
    services.set_manual_status(alice, Status.AVAILABLE)
    services.set_manual_status(alice, Status.AWAY)

    assert len(broker.queue) == 1  # one delivery was scheduled for the whole burst
    broker.run_next()

    assert [call.body["availability"] for call in fake_microsoft.graph_calls("/setPresence")] == ["Away"]
    assert _session(fake_microsoft, account, tenant) == {"availability": "Away", "activity": "Away"}


def test_an_unchanged_state_sends_nothing(alice, tenant, sharing, server_dispatch, fake_microsoft, broker):
    sharing(alice)
    services.register_device(alice, "laptop")
    broker.run_next()
    calls = len(fake_microsoft.graph_calls())

    dispatch.plan(
        [{"user_id": str(alice.public_id), "status": "available", "activity": "available", "status_msg": None}]
    )

    assert broker.queue == []
    assert dispatch.deliver(alice.pk, "microsoft").sent is False
    assert len(fake_microsoft.graph_calls()) == calls


def test_a_throttled_delivery_waits_as_long_as_graph_asks(
    alice, tenant, sharing, server_dispatch, fake_microsoft, broker
):
    sharing(alice)
    services.register_device(alice, "laptop")
    fake_microsoft.fail_next(Fault(429, {"Retry-After": "7"}))

    delivery = broker.run_next()

    assert delivery.retry_in == 7
    assert broker.queue[0].countdown == 7
    state = DispatchState.objects.get(user=alice, target="microsoft")
    assert "429" in state.last_error
    assert state.attempts == 1


def test_after_an_outage_the_final_state_is_delivered(alice, tenant, sharing, server_dispatch, fake_microsoft, broker):
    account = sharing(alice)
    services.register_device(alice, "laptop")
    fake_microsoft.down = True
    for _ in range(3):
        broker.run_next()
    services.set_manual_status(alice, Status.AWAY)  # changes during the outage: no extra delivery
    broker.run_next()
    fake_microsoft.down = False

    broker.run_next()

    assert [held.countdown for held in broker.history[1:]] == [2, 4, 8, 16]
    assert broker.queue == []
    assert _session(fake_microsoft, account, tenant) == {"availability": "Away", "activity": "Away"}
    state = DispatchState.objects.get(user=alice, target="microsoft")
    assert (state.sent["status"], state.attempts, state.last_error) == ("away", 0, "")


def test_the_retry_schedule_doubles_up_to_its_cap_and_honours_the_peer(settings):
    settings.INTEGRATIONS_RETRY_MAX_SECONDS = 300

    assert [dispatch.retry_delay(attempt) for attempt in range(1, 11)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert dispatch.retry_delay(3, retry_after=12.5) == 12.5


def test_a_request_graph_rejects_is_recorded_and_not_retried(
    alice, tenant, sharing, server_dispatch, fake_microsoft, broker
):
    sharing(alice)
    services.register_device(alice, "laptop")
    fake_microsoft.fail_next(Fault(400, body={"error": {"code": "BadRequest"}}))

    delivery = broker.run_next()

    assert delivery.sent is False and delivery.retry_in is None
    assert broker.queue == []
    assert "HTTP 400" in DispatchState.objects.get(user=alice, target="microsoft").last_error


def test_a_wrong_client_secret_is_recorded_and_not_retried(alice, tenant, sharing, server_dispatch, fake_microsoft):
    fake_microsoft.register_app(tenant.tenant_id, tenant.client_id, "another-secret")
    sharing(alice)

    services.register_device(alice, "laptop")

    state = DispatchState.objects.get(user=alice, target="microsoft")
    assert state.pending  # still to deliver: only the share while offline, which needed no call, was
    assert "invalid_client" in state.last_error or "AADSTS7000215" in state.last_error


def test_beat_refreshes_a_session_before_it_lapses(alice, tenant, sharing, server_dispatch, fake_microsoft):
    sharing(alice)
    services.register_device(alice, "laptop")
    sessions_set = len(fake_microsoft.graph_calls("/setPresence"))

    with time_machine.travel(timezone.now() + timedelta(minutes=4, seconds=1), tick=False):
        services.register_device(alice, "laptop")  # still live then
        dispatch.refresh_published()

    assert len(fake_microsoft.graph_calls("/setPresence")) == sessions_set + 1


def test_beat_leaves_a_recently_published_session_alone(alice, tenant, sharing, server_dispatch, fake_microsoft):
    sharing(alice)
    services.register_device(alice, "laptop")
    calls = len(fake_microsoft.graph_calls())

    dispatch.refresh_published()

    assert len(fake_microsoft.graph_calls()) == calls


def test_beat_does_not_refresh_an_offline_user(alice, tenant, sharing, server_dispatch, fake_microsoft):
    sharing(alice)
    device, _ = services.register_device(alice, "laptop")
    services.sign_out_device(alice, device.device_id)
    calls = len(fake_microsoft.graph_calls())

    with time_machine.travel(timezone.now() + timedelta(minutes=10), tick=False):
        dispatch.refresh_published()

    assert len(fake_microsoft.graph_calls()) == calls


def test_beat_withdraws_presence_once_the_organization_forbids_external_dispatch(
    alice, organization, tenant, sharing, server_dispatch, fake_microsoft
):
    account = sharing(alice)
    services.register_device(alice, "laptop")
    PresencePolicy.objects.filter(organization=organization).update(allow_external_dispatch=False)

    with time_machine.travel(timezone.now() + timedelta(minutes=4, seconds=1), tick=False):
        services.register_device(alice, "laptop")
        dispatch.refresh_published()

    assert _session(fake_microsoft, account, tenant) is None
    assert DispatchState.objects.get(user=alice, target="microsoft").sent["status"] == "offline"


# --- Only what SPARKS set is SPARKS' to change -----------------------------------------------------

AVAILABLE = ("Available", "Available")
DND = {"availability": "DoNotDisturb", "activity": "DoNotDisturb"}


def test_a_first_share_while_offline_makes_no_graph_call(alice, tenant, sharing, server_dispatch, fake_microsoft):
    sharing(alice)

    assert fake_microsoft.graph_calls() == []
    assert fake_microsoft.token_requests == 0
    assert DispatchState.objects.get(user=alice, target="microsoft").sent["status"] == "offline"


def test_a_message_only_change_while_offline_makes_no_graph_call(
    alice, tenant, sharing, server_dispatch, fake_microsoft
):
    sharing(alice)
    device, _ = services.register_device(alice, "laptop")
    services.sign_out_device(alice, device.device_id)
    calls = len(fake_microsoft.graph_calls())

    services.set_manual_status(alice, Status.AWAY, "Back on Monday")

    assert len(fake_microsoft.graph_calls()) == calls
    assert DispatchState.objects.get(user=alice, target="microsoft").sent["status_msg"] == "Back on Monday"


def test_going_offline_clears_the_preferred_presence_sparks_set(
    alice, tenant, sharing, server_dispatch, fake_microsoft
):
    account = sharing(alice)
    device, _ = services.register_device(alice, "laptop")
    services.set_manual_status(alice, Status.DND)

    services.sign_out_device(alice, device.device_id)

    assert len(fake_microsoft.graph_calls("/clearUserPreferredPresence")) == 1
    assert account.microsoft_object_id not in fake_microsoft.preferred
    assert fake_microsoft.presence_of(account.microsoft_object_id) == ("Offline", "Offline")


def test_a_preferred_presence_the_user_chose_in_teams_is_never_cleared(
    alice, tenant, sharing, server_dispatch, fake_microsoft
):
    account = sharing(alice)
    oid = account.microsoft_object_id
    fake_microsoft.user_sets_preferred_presence(oid, "Busy", "Busy")
    device, _ = services.register_device(alice, "laptop")

    services.sign_out_device(alice, device.device_id)  # offline
    services.register_device(alice, "laptop")
    services.update_preferences(alice, share_externally=False)  # withdrawn
    services.update_preferences(alice, share_externally=True)

    assert fake_microsoft.graph_calls("UserPreferredPresence") == []
    assert fake_microsoft.preferred[oid] == {"availability": "Busy", "activity": "Busy"}
    assert fake_microsoft.presence_of(oid) == ("Busy", "Busy")  # over SPARKS' Available session


def test_leaving_do_not_disturb_sets_nothing_but_clears_sparks_preferred_presence(
    alice, tenant, sharing, server_dispatch, fake_microsoft
):
    account = sharing(alice)
    services.register_device(alice, "laptop")
    services.set_manual_status(alice, Status.DND)
    sessions_set = len(fake_microsoft.graph_calls("/setPresence"))

    services.clear_manual_status(alice)

    assert len(fake_microsoft.graph_calls("/setPresence")) == sessions_set  # still Available
    assert len(fake_microsoft.graph_calls("/clearUserPreferredPresence")) == 1
    assert fake_microsoft.presence_of(account.microsoft_object_id) == AVAILABLE


def test_the_preferred_presence_expires_with_the_session(alice, tenant, sharing, server_dispatch, fake_microsoft):
    account = sharing(alice)
    services.register_device(alice, "laptop")

    services.set_manual_status(alice, Status.DND)

    (preferred,) = fake_microsoft.graph_calls("/setUserPreferredPresence")
    assert preferred.body["expirationDuration"] == "PT5M"
    assert fake_microsoft.preferred[account.microsoft_object_id] == DND
    published = GraphPublication.objects.get(user=alice, kind="preferred", ended_at=None)
    assert published.expires_at - published.set_at == timedelta(minutes=5)


def test_sparks_records_what_it_has_in_teams_and_when_it_ended(alice, tenant, sharing, server_dispatch, fake_microsoft):
    sharing(alice)
    device, _ = services.register_device(alice, "laptop")
    services.set_manual_status(alice, Status.DND)

    live = GraphPublication.objects.filter(user=alice, ended_at=None)
    assert sorted(live.values_list("kind", "availability", "activity")) == [
        ("preferred", "DoNotDisturb", "DoNotDisturb"),
        ("session", "Available", "Available"),
    ]

    services.sign_out_device(alice, device.device_id)

    assert not GraphPublication.objects.filter(user=alice, ended_at=None).exists()
    assert GraphPublication.objects.filter(user=alice).count() == 2  # ended just now: kept for the import


def test_a_decision_taken_from_teams_goes_to_matrix_but_not_back_to_teams(
    alice, organization, tenant, sharing, server_dispatch, fake_microsoft, broker
):
    MatrixHomeserverFactory(organization=organization)
    sharing(alice)

    dispatch.plan(
        [
            {
                "user_id": str(alice.public_id),
                "status": "dnd",
                "activity": "do_not_disturb",
                "status_msg": None,
                "reason": "microsoft_presence",
            }
        ]
    )

    assert DispatchState.objects.get(user=alice, target="matrix").desired["status"] == "dnd"
    # What SPARKS itself says in Teams: there, and nothing of its own keeping the user busy.
    assert DispatchState.objects.get(user=alice, target="microsoft").desired["status"] == "available"


# --- Renewal, by the recorded expiry ---------------------------------------------------------------


def test_a_session_is_renewed_by_its_recorded_expiry_also_after_a_delivery_without_a_call(
    alice, tenant, sharing, server_dispatch, fake_microsoft
):
    account = sharing(alice)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        services.register_device(alice, "laptop")
    sessions_set = len(fake_microsoft.graph_calls("/setPresence"))

    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        services.register_device(alice, "laptop")
        services.set_manual_status(alice, Status.AVAILABLE, "In the lab")  # the same session in Teams
    assert len(fake_microsoft.graph_calls("/setPresence")) == sessions_set
    assert DispatchState.objects.get(user=alice, target="microsoft").sent["status_msg"] == "In the lab"

    with time_machine.travel(start + timedelta(minutes=4, seconds=1), tick=False):
        services.register_device(alice, "laptop")
        dispatch.refresh_published()

    assert len(fake_microsoft.graph_calls("/setPresence")) == sessions_set + 1
    with time_machine.travel(start + timedelta(minutes=5, seconds=30), tick=False):
        assert fake_microsoft.session_shown(account.microsoft_object_id, tenant.client_id) == AVAILABLE


def test_an_available_session_is_set_again_before_graph_times_it_out(
    alice, tenant, sharing, server_dispatch, fake_microsoft, settings
):
    settings.MICROSOFT_PRESENCE_SESSION_MINUTES = 60
    account = sharing(alice)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        services.register_device(alice, "laptop")

    with time_machine.travel(start + timedelta(minutes=4, seconds=1), tick=False):
        services.register_device(alice, "laptop")
        dispatch.refresh_published()

    calls = fake_microsoft.graph_calls("/setPresence")
    assert [call.body["expirationDuration"] for call in calls] == ["PT60M", "PT60M"]
    with time_machine.travel(start + timedelta(minutes=6), tick=False):
        assert fake_microsoft.session_shown(account.microsoft_object_id, tenant.client_id) == AVAILABLE


def test_an_away_session_lives_until_its_expiry_without_renewal(
    alice, tenant, sharing, server_dispatch, fake_microsoft, settings
):
    settings.MICROSOFT_PRESENCE_SESSION_MINUTES = 60
    sharing(alice)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        services.register_device(alice, "laptop")
        services.set_manual_status(alice, Status.AWAY)
    sessions_set = len(fake_microsoft.graph_calls("/setPresence"))

    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        services.register_device(alice, "laptop")
        dispatch.refresh_published()

    assert len(fake_microsoft.graph_calls("/setPresence")) == sessions_set


def test_a_lapsed_session_is_not_cleared_and_is_set_again_while_online(
    alice, tenant, sharing, server_dispatch, fake_microsoft
):
    account = sharing(alice)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        services.register_device(alice, "laptop")
    sessions_set = len(fake_microsoft.graph_calls("/setPresence"))

    with time_machine.travel(start + timedelta(minutes=7), tick=False):  # beat was not running
        services.register_device(alice, "laptop")
        dispatch.refresh_published()

        assert len(fake_microsoft.graph_calls("/setPresence")) == sessions_set + 1
        assert fake_microsoft.session_shown(account.microsoft_object_id, tenant.client_id) == AVAILABLE
    assert fake_microsoft.graph_calls("/clearPresence") == []
