"""The Django admin: what a superuser can open and change, and that changes made there recompute presence."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from orgs.models import PresencePolicy, User
from presence import services
from presence.models import Device, PresenceState
from sparks_site.celery import app as celery_app
from tests.admin_forms import form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    superuser = User.objects.create_superuser(username="root", email="root@example.test", password="x")
    client.force_login(superuser)
    return client


@pytest.fixture
def eager_tasks():
    """Run Celery tasks (the recomputes a policy or membership change queues) in-process."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture
def bob_device(bob) -> Device:
    device, _ = services.register_device(bob, "install-1", "bob's laptop")
    return device


@pytest.mark.parametrize(
    "url",
    [
        "admin:orgs_organization_changelist",
        "admin:orgs_membership_changelist",
        "admin:orgs_user_changelist",
        "admin:presence_device_changelist",
        "admin:presence_presencestate_changelist",
    ],
)
def test_superuser_opens_the_changelists(admin_client, bob_device, carol, url):
    response = admin_client.get(reverse(url))

    assert response.status_code == 200


def test_organization_change_page_shows_the_policy_and_the_members(admin_client, organization, alice, bob):
    response = admin_client.get(reverse("admin:orgs_organization_change", args=[organization.pk]))

    assert response.status_code == 200
    prefixes = {inline.formset.prefix for inline in response.context["inline_admin_formsets"]}
    assert prefixes == {"policy", "memberships"}
    content = response.content.decode()
    assert "allow_calendar" in content
    assert "alice" in content and "bob" in content


def test_membership_change_page_opens(admin_client, alice):
    response = admin_client.get(reverse("admin:orgs_membership_change", args=[alice.membership.pk]))

    assert response.status_code == 200


def test_user_change_page_shows_the_public_id(admin_client, alice):
    response = admin_client.get(reverse("admin:orgs_user_change", args=[alice.pk]))

    assert response.status_code == 200
    assert str(alice.public_id) in response.content.decode()


def test_device_change_page_opens_read_only(admin_client, bob_device):
    response = admin_client.get(reverse("admin:presence_device_change", args=[bob_device.pk]))

    assert response.status_code == 200
    assert "bob&#x27;s laptop" in response.content.decode()
    assert response.context["has_change_permission"] is False


def test_device_changelist_shows_the_state_now(admin_client, bob_device):
    response = admin_client.get(reverse("admin:presence_device_changelist"))

    content = response.content.decode()
    assert bob_device.device_id[:12] in content
    assert '<td class="field-state">online</td>' in content


def test_presence_state_changelist_shows_the_reason(admin_client, bob_device):
    response = admin_client.get(reverse("admin:presence_presencestate_changelist"))

    assert "device active" in response.content.decode()


def test_presence_state_change_page_shows_the_reason(admin_client, bob, bob_device):
    response = admin_client.get(reverse("admin:presence_presencestate_change", args=[bob.pk]))

    assert response.status_code == 200
    assert "device active" in response.content.decode()


@pytest.mark.parametrize("model", ["device", "presencestate"])
def test_computed_data_cannot_be_added_in_the_admin(admin_client, model):
    response = admin_client.get(reverse(f"admin:presence_{model}_add"))

    assert response.status_code == 403


def test_presence_state_cannot_be_changed_in_the_admin(admin_client, bob, bob_device):
    url = reverse("admin:presence_presencestate_change", args=[bob.pk])

    response = admin_client.post(url, {"status": "dnd", "reason": "manual_status"})

    assert response.status_code == 403
    assert PresenceState.objects.get(user=bob).status == "available"


def test_deleting_a_device_in_the_admin_signs_it_out_and_recomputes(admin_client, bob, bob_device):
    assert PresenceState.objects.get(user=bob).status == "available"
    url = reverse("admin:presence_device_delete", args=[bob_device.pk])

    response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not Device.objects.filter(pk=bob_device.pk).exists()
    state = PresenceState.objects.get(user=bob)
    assert (state.status, state.reason) == ("offline", "no_live_device")


def test_bulk_deleting_devices_in_the_admin_recomputes(admin_client, bob, bob_device):
    response = admin_client.post(
        reverse("admin:presence_device_changelist"),
        {"action": "delete_selected", "_selected_action": [bob_device.pk], "post": "yes"},
    )

    assert response.status_code == 302
    assert not Device.objects.filter(pk=bob_device.pk).exists()
    assert PresenceState.objects.get(user=bob).status == "offline"


def test_saving_the_policy_in_the_admin_recomputes_the_members(
    admin_client, organization, bob, bob_device, eager_tasks, django_capture_on_commit_callbacks
):
    now = timezone.now()
    services.replace_calendar(bob, [(now - timedelta(minutes=5), now + timedelta(hours=1))])
    assert PresenceState.objects.get(user=bob).reason == "calendar_busy"
    url = reverse("admin:orgs_organization_change", args=[organization.pk])
    data = form_data(admin_client.get(url))
    assert data.pop("policy-0-allow_calendar") == "on"

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, data)

    assert response.status_code == 302, response.context and response.context["errors"]
    assert PresencePolicy.objects.get(organization=organization).allow_calendar is False
    state = PresenceState.objects.get(user=bob)
    assert (state.status, state.reason) == ("available", "device_active")


def test_non_staff_user_is_sent_to_the_admin_login(client, alice):
    client.force_login(alice)

    response = client.get(reverse("admin:index"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_anonymous_visitor_is_sent_to_the_admin_login(client):
    response = client.get(reverse("admin:presence_device_changelist"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
