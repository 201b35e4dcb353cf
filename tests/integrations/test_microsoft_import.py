"""Importing Microsoft presence (getPresencesByUserId) as an input of aggregation."""

from __future__ import annotations

import pytest

from integrations import importer
from integrations.models import ExternalAccount
from orgs.models import Membership, PresencePolicy, User
from presence import services
from presence.models import MicrosoftPresence, PresencePreferences, PresenceState
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
