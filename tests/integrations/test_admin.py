"""The integrations in the Django admin: secrets written but never shown, dispatch state and what
SPARKS has in Teams shown."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from integrations.models import DispatchState, GraphPublication, MicrosoftTenant
from orgs.models import User
from presence import services
from tests.factories import MicrosoftTenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    superuser = User.objects.create_superuser(username="root", email="root@example.test", password="x")
    client.force_login(superuser)
    return client


def test_an_admin_sets_a_client_secret_that_is_stored_encrypted(admin_client, organization):
    response = admin_client.post(
        reverse("admin:integrations_microsofttenant_add"),
        {
            "organization": organization.pk,
            "tenant_id": "11111111-2222-3333-4444-555555555555",
            "client_id": "66666666-7777-8888-9999-000000000000",
            "secret": "very-secret-value",
            "enabled": "on",
        },
    )

    assert response.status_code == 302
    tenant = MicrosoftTenant.objects.get(organization=organization)
    assert tenant.client_secret == "very-secret-value"
    assert "very-secret-value" not in tenant.client_secret_encrypted


def test_the_client_secret_is_never_shown_back(admin_client, organization):
    tenant = MicrosoftTenantFactory(organization=organization, client_secret="very-secret-value")

    response = admin_client.get(reverse("admin:integrations_microsofttenant_change", args=[tenant.pk]))

    assert response.status_code == 200
    assert b"very-secret-value" not in response.content
    assert tenant.client_secret_encrypted.encode() not in response.content


def test_saving_without_a_new_secret_keeps_the_stored_one(admin_client, organization):
    tenant = MicrosoftTenantFactory(organization=organization, client_secret="very-secret-value")

    admin_client.post(
        reverse("admin:integrations_microsofttenant_change", args=[tenant.pk]),
        {"organization": organization.pk, "tenant_id": "new-tenant", "client_id": tenant.client_id, "secret": ""},
    )

    tenant.refresh_from_db()
    assert (tenant.tenant_id, tenant.client_secret, tenant.enabled) == ("new-tenant", "very-secret-value", False)


def test_the_admin_shows_the_last_dispatched_state_time_and_error(admin_client, alice):
    state = {"status": "dnd", "activity": "do_not_disturb", "status_msg": "Focus"}
    DispatchState.objects.create(
        user=alice,
        target="microsoft",
        desired=state,
        desired_at=timezone.now(),
        sent=state,
        sent_at=timezone.now(),
        attempts=2,
        last_error="POST /v1.0/users/x/presence/setPresence: HTTP 503",
        last_error_at=timezone.now(),
    )

    response = admin_client.get(reverse("admin:integrations_dispatchstate_changelist"))

    assert response.status_code == 200
    assert "dnd/do_not_disturb “Focus”" in response.content.decode()
    assert b"HTTP 503" in response.content


@pytest.mark.django_db(transaction=True)  # dispatch starts when the change's transaction commits
def test_re_dispatch_now_sends_the_current_presence_again(
    admin_client, alice, tenant, sharing, server_dispatch, fake_microsoft
):
    sharing(alice)
    services.register_device(alice, "laptop")
    before = len(fake_microsoft.graph_calls("/setPresence"))
    assert before == 1

    response = admin_client.post(
        reverse("admin:presence_presencestate_changelist"),
        {"action": "redispatch_now", "_selected_action": [alice.pk]},
    )

    assert response.status_code == 302
    calls = fake_microsoft.graph_calls("/setPresence")
    assert len(calls) == before + 1
    assert calls[-1].body["availability"] == "Available"
    assert DispatchState.objects.get(user=alice, target="microsoft").sent["status"] == "available"


def test_the_presence_page_offers_re_dispatch_now(admin_client, alice):
    services.register_device(alice, "laptop")

    response = admin_client.get(reverse("admin:presence_presencestate_change", args=[alice.pk]))

    content = response.content.decode()
    assert 'value="redispatch_now"' in content and "Re-dispatch now" in content


def test_re_dispatch_now_says_so_when_dispatch_is_off(admin_client, alice, settings):
    settings.PRESENCE_SERVER_DISPATCH = False
    services.register_device(alice, "laptop")

    response = admin_client.post(
        reverse("admin:presence_presencestate_changelist"),
        {"action": "redispatch_now", "_selected_action": [alice.pk]},
        follow=True,
    )

    assert "Dispatch is off" in response.content.decode()
    assert not DispatchState.objects.exists()


def test_the_admin_shows_what_sparks_has_in_teams_and_nobody_edits_it(admin_client, alice):
    now = timezone.now()
    publication = GraphPublication.objects.create(
        user=alice,
        kind="preferred",
        availability="DoNotDisturb",
        activity="DoNotDisturb",
        set_at=now,
        refreshed_at=now,
        expires_at=now + timedelta(minutes=5),
    )

    listed = admin_client.get(reverse("admin:integrations_graphpublication_changelist"))
    changed = admin_client.post(
        reverse("admin:integrations_graphpublication_change", args=[publication.pk]), {"availability": "Busy"}
    )

    assert listed.status_code == 200
    assert "DoNotDisturb" in listed.content.decode()
    assert changed.status_code == 403
    publication.refresh_from_db()
    assert publication.availability == "DoNotDisturb"
