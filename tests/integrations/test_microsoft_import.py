"""Importing Microsoft presence (getPresencesByUserId) as an input of aggregation."""

from __future__ import annotations

import pytest

from integrations import importer
from integrations.models import DispatchState, ExternalAccount
from orgs.models import Membership, PresencePolicy, User
from presence import selectors, services
from presence.models import MicrosoftPresence, PresencePreferences, PresenceState
from presence.vocabulary import Status
from tests.factories import ExternalAccountFactory
from tests.integrations.fake_microsoft import Fault

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def importing():
    def make(user: User) -> ExternalAccount:
        account = ExternalAccountFactory(user=user)
        services.update_preferences(user, include_microsoft_presence=True)
        return account

    return make


def test_imported_busy_makes_the_users_presence_busy(alice, tenant, importing, fake_microsoft):
    account = importing(alice)
    services.register_device(alice, "laptop")
    fake_microsoft.presences[account.microsoft_object_id] = ("Busy", "InACall")

    outcome = importer.import_tenant(tenant)

    assert outcome.imported == 1
    state = PresenceState.objects.get(user=alice)
    assert (state.status, state.activity, state.reason) == ("busy", "in_call", "microsoft_presence")


def test_imported_values_are_read_case_insensitively(alice, tenant, importing, fake_microsoft):
    account = importing(alice)
    services.register_device(alice, "laptop")
    fake_microsoft.presences[account.microsoft_object_id] = ("doNOTdisturb", "presenting")

    importer.import_tenant(tenant)

    assert PresenceState.objects.get(user=alice).status == "dnd"


def test_unknown_imported_values_are_kept_and_change_nothing(alice, tenant, importing, fake_microsoft):
    account = importing(alice)
    services.register_device(alice, "laptop")
    fake_microsoft.presences[account.microsoft_object_id] = ("PresenceUnknown", "SomethingNew")

    importer.import_tenant(tenant)

    assert MicrosoftPresence.objects.get(user=alice).availability == "PresenceUnknown"
    assert PresenceState.objects.get(user=alice).status == "available"


def test_users_who_do_not_include_microsoft_presence_are_not_read(alice, bob, tenant, importing, fake_microsoft):
    importing(alice)
    ExternalAccountFactory(user=bob)

    importer.import_tenant(tenant)

    (call,) = fake_microsoft.graph_calls("/getPresencesByUserId")
    assert call.body["ids"] == [alice.external_account.microsoft_object_id]


def test_an_organization_that_forbids_microsoft_presence_is_not_read(
    alice, organization, tenant, importing, fake_microsoft
):
    importing(alice)
    PresencePolicy.objects.filter(organization=organization).update(allow_microsoft=False)
    tenant.refresh_from_db()

    assert importer.import_tenant(tenant).imported == 0
    assert fake_microsoft.graph_calls() == []


def test_the_import_asks_for_at_most_650_users_a_request(organization, tenant, fake_microsoft):
    users = User.objects.bulk_create(User(username=f"member{i}") for i in range(651))
    Membership.objects.bulk_create(Membership(user=u, organization=organization) for u in users)
    PresencePreferences.objects.bulk_create(PresencePreferences(user=u, include_microsoft_presence=True) for u in users)
    ExternalAccount.objects.bulk_create(ExternalAccount(user=u, microsoft_object_id=f"oid-{u.pk}") for u in users)

    importer.import_tenant(tenant)

    assert sorted(len(call.body["ids"]) for call in fake_microsoft.graph_calls("/getPresencesByUserId")) == [1, 650]


def test_a_throttled_import_waits_until_graph_says_so(alice, tenant, importing, fake_microsoft):
    account = importing(alice)
    fake_microsoft.fail_next(Fault(429, {"Retry-After": "30"}))
    fake_microsoft.presences[account.microsoft_object_id] = ("Busy", "Busy")

    throttled = importer.import_tenant(tenant)
    again = importer.import_tenant(tenant)

    assert throttled.retry_after == 30
    assert again.imported == 0
    assert len(fake_microsoft.graph_calls("/getPresencesByUserId")) == 1


# --- Importing while sharing: SPARKS' own presence is not an input ------------------------------


@pytest.fixture
def importing_and_sharing(sharing, server_dispatch):
    """The user shares their presence with Teams and includes Teams' presence: the Entra object id."""

    def make(user: User) -> str:
        account = sharing(user)
        services.update_preferences(user, include_microsoft_presence=True)
        return account.microsoft_object_id

    return make


def presence(user: User) -> tuple[str, str, str]:
    state = selectors.current_presence(user)
    return state.status, state.activity, state.reason


def test_the_do_not_disturb_sparks_published_does_not_come_back_as_the_users(
    alice, tenant, importing_and_sharing, fake_microsoft
):
    oid = importing_and_sharing(alice)
    services.register_device(alice, "laptop")
    services.set_manual_status(alice, Status.DND, "Focus")
    assert fake_microsoft.presence_of(oid) == ("DoNotDisturb", "DoNotDisturb")  # what SPARKS set
    importer.import_tenant(tenant)
    assert MicrosoftPresence.objects.get(user=alice).echo is True

    services.clear_manual_status(alice)
    importer.import_tenant(tenant)
    importer.import_tenant(tenant)

    assert presence(alice) == ("available", "available", "device_active")
    assert fake_microsoft.presence_of(oid) == ("Available", "Available")
    assert len(fake_microsoft.graph_calls("/setUserPreferredPresence")) == 1  # the manual dnd, once


def test_the_users_own_do_not_disturb_in_teams_is_imported_and_never_cleared(
    alice, tenant, importing_and_sharing, fake_microsoft
):
    oid = importing_and_sharing(alice)
    device, _ = services.register_device(alice, "laptop")
    fake_microsoft.user_sets_preferred_presence(oid, "DoNotDisturb", "DoNotDisturb")

    importer.import_tenant(tenant)

    assert presence(alice) == ("dnd", "do_not_disturb", "microsoft_presence")
    assert MicrosoftPresence.objects.get(user=alice).echo is False
    # Teams is not told what it told SPARKS: SPARKS' own part stays an Available session.
    assert fake_microsoft.session_shown(oid, tenant.client_id) == ("Available", "Available")

    services.sign_out_device(alice, device.device_id)  # offline
    services.register_device(alice, "laptop")
    importer.import_tenant(tenant)
    services.update_preferences(alice, share_externally=False)  # withdrawn
    services.update_preferences(alice, share_externally=True)
    importer.import_tenant(tenant)

    assert fake_microsoft.graph_calls("UserPreferredPresence") == []  # neither set nor cleared
    assert fake_microsoft.preferred[oid] == {"availability": "DoNotDisturb", "activity": "DoNotDisturb"}
    assert presence(alice) == ("dnd", "do_not_disturb", "microsoft_presence")

    fake_microsoft.user_resets_status(oid)  # the user ends it in Teams
    importer.import_tenant(tenant)

    assert presence(alice) == ("available", "available", "device_active")
    assert fake_microsoft.presence_of(oid) == ("Available", "Available")


def test_a_teams_meeting_counts_while_sparks_session_is_available(alice, tenant, importing_and_sharing, fake_microsoft):
    oid = importing_and_sharing(alice)
    services.register_device(alice, "laptop")
    fake_microsoft.presences[oid] = ("Busy", "InAMeeting")  # the user's Teams client, in a meeting
    assert fake_microsoft.session_shown(oid, tenant.client_id) == ("Available", "Available")

    importer.import_tenant(tenant)

    assert presence(alice) == ("busy", "in_meeting", "microsoft_presence")
    assert DispatchState.objects.get(user=alice, target="microsoft").sent["status"] == "available"

    fake_microsoft.presences[oid] = ("Available", "Available")  # the meeting is over
    importer.import_tenant(tenant)

    assert presence(alice) == ("available", "available", "device_active")
    assert fake_microsoft.graph_calls("UserPreferredPresence") == []


def test_sparks_own_call_read_back_adds_nothing_once_the_call_is_over(
    alice, tenant, importing_and_sharing, fake_microsoft
):
    oid = importing_and_sharing(alice)
    device, _ = services.register_device(alice, "laptop")
    services.ingest_signals(alice, device.device_id, [services.Signal("call", "start", 1)])
    assert fake_microsoft.presence_of(oid) == ("Busy", "InACall")
    importer.import_tenant(tenant)

    services.ingest_signals(alice, device.device_id, [services.Signal("call", "end", 2)])

    assert presence(alice) == ("available", "available", "device_active")


def test_a_genuine_import_is_replaced_by_the_next_one_even_when_that_is_sparks_own(
    alice, tenant, importing_and_sharing, fake_microsoft
):
    oid = importing_and_sharing(alice)
    services.register_device(alice, "laptop")
    fake_microsoft.presences[oid] = ("Busy", "InAMeeting")
    importer.import_tenant(tenant)
    fake_microsoft.presences[oid] = ("Available", "Available")
    services.set_manual_status(alice, Status.DND)  # SPARKS' preferred presence now shows

    importer.import_tenant(tenant)
    services.clear_manual_status(alice)

    imported = MicrosoftPresence.objects.get(user=alice)
    assert (imported.availability, imported.echo) == ("DoNotDisturb", True)
    assert presence(alice) == ("available", "available", "device_active")
