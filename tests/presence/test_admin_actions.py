"""The admin's presence operations (sign a device out, clear a manual status, recompute now) go
through the services, and the user's presence page shows the last 24 hours."""

from __future__ import annotations

import pytest
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from orgs.models import Membership, User
from presence import explain, services
from presence.admin import PresenceStateAdmin, back
from presence.models import Device, DeviceHistory, ManualStatus, PresenceHistory, PresenceState
from presence.vocabulary import Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def org_admin_client(client, make_member):
    olga = make_member("olga", role=Membership.Role.ADMIN)
    olga.is_staff = True
    olga.save()
    client.force_login(olga)
    return client


@pytest.fixture
def bob_device(bob) -> Device:
    device, _ = services.register_device(bob, "bob-laptop", "bob's laptop")
    return device


def run_action(client, model: str, action: str, pks: list, **extra):
    return client.post(
        reverse(f"admin:presence_{model}_changelist"), {"action": action, "_selected_action": pks, **extra}
    )


def test_signing_out_a_device_in_the_admin_goes_through_the_service(
    org_admin_client, bob, bob_device, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(org_admin_client, "device", "sign_out", [bob_device.pk])

    assert response.status_code == 302
    assert not Device.objects.filter(pk=bob_device.pk).exists()
    assert PresenceState.objects.get(user=bob).status == Status.OFFLINE
    assert DeviceHistory.objects.filter(user=bob, state="signed_out").exists()
    services.persist_pending()
    assert PresenceHistory.objects.filter(user=bob, source="admin:sign_out", status=Status.OFFLINE).exists()


def test_clearing_a_manual_status_in_the_admin_recomputes(org_admin_client, bob, bob_device):
    services.set_manual_status(bob, Status.DND, "focus")
    assert PresenceState.objects.get(user=bob).status == Status.DND

    response = run_action(org_admin_client, "manualstatus", "clear", [bob.pk])

    assert response.status_code == 302
    assert not ManualStatus.objects.filter(user=bob).exists()
    assert PresenceState.objects.get(user=bob).status == Status.AVAILABLE


def test_clearing_a_manual_status_from_the_presence_page_comes_back_to_it(org_admin_client, bob, bob_device):
    services.set_manual_status(bob, Status.BUSY)
    page = reverse("admin:presence_presencestate_change", args=[bob.pk])

    response = run_action(org_admin_client, "presencestate", "clear_manual_status", [bob.pk], next=page)

    assert response.status_code == 302 and response["Location"] == page
    assert PresenceState.objects.get(user=bob).status == Status.AVAILABLE


def test_recompute_now_applies_an_input_written_behind_the_services_back(org_admin_client, bob, bob_device):
    ManualStatus.objects.create(user=bob, status=Status.DND, set_at=bob_device.registered_at)
    assert PresenceState.objects.get(user=bob).status == Status.AVAILABLE

    response = run_action(org_admin_client, "presencestate", "recompute_now", [bob.pk])

    assert response.status_code == 302
    assert PresenceState.objects.get(user=bob).status == Status.DND


def test_an_org_admin_action_on_another_organization_user_does_nothing(org_admin_client, carol):
    services.register_device(carol, "carol-laptop")
    services.set_manual_status(carol, Status.DND)

    run_action(org_admin_client, "presencestate", "clear_manual_status", [carol.pk])
    run_action(org_admin_client, "manualstatus", "clear", [carol.pk])

    assert ManualStatus.objects.filter(user=carol).exists()


def test_the_presence_page_shows_the_timeline_and_the_operations(org_admin_client, bob, bob_device):
    services.set_manual_status(bob, Status.DND, "deep <work>")
    PresenceHistory.objects.create(
        entry_id="a" * 32,
        user=bob,
        status="dnd",
        activity="do_not_disturb",
        source="manual_status",
        at=bob_device.registered_at,
    )

    response = org_admin_client.get(reverse("admin:presence_presencestate_change", args=[bob.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in content
    assert 'class="band status state-dnd"' in content
    assert 'class="band device state-live"' in content and ">bob's laptop</text>" in content
    assert 'value="recompute_now"' in content and 'value="clear_manual_status"' in content
    assert "deep <work>" not in content


def test_the_user_page_links_to_the_presence_page(org_admin_client, bob, bob_device):
    response = org_admin_client.get(reverse("admin:orgs_user_change", args=[bob.pk]))

    assert reverse("admin:presence_presencestate_change", args=[bob.pk]) in response.content.decode()


def test_a_superuser_runs_the_actions_for_anyone(client, carol):
    client.force_login(User.objects.create_superuser(username="root", email="root@example.test", password="x"))
    services.register_device(carol, "carol-laptop")
    services.set_manual_status(carol, Status.DND)

    run_action(client, "presencestate", "clear_manual_status", [carol.pk])

    assert not ManualStatus.objects.filter(user=carol).exists()


def test_the_presence_page_says_why_the_status_is_what_it_is(org_admin_client, bob):
    services.register_device(bob, "bob-laptop", "laptop")
    services.set_manual_status(bob, Status.DND, "focus")

    page = org_admin_client.get(reverse("admin:presence_presencestate_change", args=[bob.pk])).content.decode()

    summary = explain.explain_user(bob, timezone.now())["summary"]
    assert summary.startswith("dnd")
    assert escape(summary) in page
    assert escape(explain.RULE_DESCRIPTIONS["manual_status"]) in page


@admin.action(description="Wave at them", permissions=["operate"])
def wave(modeladmin, request, queryset):
    modeladmin.message_user(request, f"Waved at {', '.join(s.user.username for s in queryset)}.", messages.SUCCESS)
    return back(request)


@pytest.fixture
def waving(monkeypatch):
    """An action an app above presence adds to the presence page."""
    monkeypatch.setattr(PresenceStateAdmin, "actions", PresenceStateAdmin.actions)
    PresenceStateAdmin.add_action(wave)
    PresenceStateAdmin.add_action(wave)


def test_an_action_added_from_above_is_offered_after_presences_own(waving, org_admin_client, bob, bob_device):
    content = org_admin_client.get(reverse("admin:presence_presencestate_change", args=[bob.pk])).content.decode()

    assert content.index('value="clear_manual_status"') < content.index('value="wave"')
    assert content.count('value="wave"') == 1 and "Wave at them" in content


def test_an_action_added_from_above_runs_for_the_org_admin_and_comes_back(waving, org_admin_client, bob, bob_device):
    page = reverse("admin:presence_presencestate_change", args=[bob.pk])

    response = run_action(org_admin_client, "presencestate", "wave", [bob.pk], next=page)

    assert (response.status_code, response["Location"]) == (302, page)
    assert "Waved at bob." in [m.message for m in messages.get_messages(response.wsgi_request)]
