"""An organization's admin sees and changes their own organization in the Django admin, and
nothing of another: not in the changelists, not at direct URLs, not through choices or filters."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db.models import Model
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from rest_framework.authtoken.models import Token, TokenProxy

from integrations.models import DispatchState, GraphPublication
from orgs.models import Membership, Organization, PresencePolicy, User
from presence import selectors, services
from presence.models import (
    CalendarBlock,
    Device,
    DeviceHistory,
    ManualStatus,
    MicrosoftPresence,
    PresenceHistory,
    PresencePreferences,
    PresenceState,
)
from presence.vocabulary import SignalType, Status
from tests.admin_forms import form_data
from tests.factories import ExternalAccountFactory, MatrixHomeserverFactory, MicrosoftTenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def olga(make_member) -> User:
    """The admin of the demo organization (alice's and bob's)."""
    user = make_member("olga", role=Membership.Role.ADMIN)
    user.is_staff = True
    user.save()
    return user


@pytest.fixture
def org_admin_client(client, olga):
    client.force_login(olga)
    return client


def _fill(user: User, name: str) -> User:
    """A row for the user in every table the admin shows."""
    services.register_device(user, f"{name}-laptop", f"{name}-laptop")
    services.set_manual_status(user, Status.DND, f"{name}-focus")
    services.replace_calendar(user, [(timezone.now(), timezone.now() + timedelta(hours=1))])
    services.update_preferences(user, share_externally=True)
    PresenceHistory.objects.create(
        entry_id=uuid.uuid4(),
        user=user,
        status="dnd",
        activity="do_not_disturb",
        source=f"{name}-src",
        at=timezone.now(),
    )
    return user


@pytest.fixture
def carol_everywhere(carol) -> User:
    """Carol, of another organization."""
    return _fill(carol, "carol")


@pytest.fixture
def alice_everywhere(alice) -> User:
    return _fill(alice, "alice")


def _objects_of(user: User) -> dict[str, object]:
    """Admin URL name → primary key of each of the user's rows."""
    return {
        "orgs_user": user.pk,
        "orgs_membership": user.membership.pk,
        "orgs_organization": user.membership.organization_id,
        "presence_device": Device.objects.get(user=user).pk,
        "presence_presencestate": PresenceState.objects.get(user=user).pk,
        "presence_manualstatus": ManualStatus.objects.get(user=user).pk,
        "presence_calendarblock": CalendarBlock.objects.filter(user=user).first().pk,
        "presence_presencehistory": PresenceHistory.objects.filter(user=user).first().pk,
        "presence_devicehistory": DeviceHistory.objects.filter(user=user).first().pk,
    }


CHANGELISTS = [
    "orgs_user",
    "orgs_membership",
    "orgs_organization",
    "presence_device",
    "presence_presencestate",
    "presence_manualstatus",
    "presence_calendarblock",
    "presence_presencepreferences",
    "presence_presencehistory",
    "presence_devicehistory",
]


@pytest.mark.parametrize("model", CHANGELISTS)
def test_an_org_admin_changelist_shows_their_organization_only(
    org_admin_client, alice_everywhere, carol_everywhere, model
):
    response = org_admin_client.get(reverse(f"admin:{model}_changelist"))

    assert response.status_code == 200
    content = response.content.decode()
    # Carol's own words ("carol", "carol-laptop"), not a generated name that starts the same ("Caroline").
    assert not re.search(r"\bcarol\b", content, re.IGNORECASE) and "Acme" not in content
    shown = {obj.pk for obj in response.context["cl"].result_list}
    assert shown, "the organization's own rows are listed"


# --- Every model registered in the admin ---------------------------------------------------------


def _not_olgas(label: str, carol: User) -> Model:
    """An object of the model that is not of olga's organization: carol's, her organization's, or
    for models that belong to no organization, one a superuser made."""
    organization = carol.membership.organization
    rows = _objects_of(carol)
    makers: dict[str, Callable[[], Model]] = {
        **{known: (lambda name=name: _model_of(name).objects.get(pk=rows[name])) for name, known in _LABELS.items()},
        "presence.presencepreferences": lambda: PresencePreferences.objects.get(user=carol),
        "presence.microsoftpresence": lambda: MicrosoftPresence.objects.create(
            user=carol, availability="Busy", activity="InACall", observed_at=timezone.now()
        ),
        "authtoken.tokenproxy": lambda: TokenProxy.objects.get(pk=Token.objects.get_or_create(user=carol)[0].pk),
        "integrations.externalaccount": lambda: ExternalAccountFactory(user=carol),
        "integrations.microsofttenant": lambda: MicrosoftTenantFactory(organization=organization),
        "integrations.matrixhomeserver": lambda: MatrixHomeserverFactory(organization=organization),
        "integrations.dispatchstate": lambda: DispatchState.objects.create(
            user=carol, target="matrix", desired={"status": "dnd"}, desired_at=timezone.now()
        ),
        "integrations.graphpublication": lambda: GraphPublication.objects.create(
            user=carol,
            kind="session",
            availability="Available",
            activity="Available",
            set_at=timezone.now(),
            refreshed_at=timezone.now(),
            expires_at=timezone.now() + timedelta(minutes=5),
        ),
        "auth.group": lambda: Group.objects.create(name="acme-editors"),
        "django_celery_beat.intervalschedule": lambda: IntervalSchedule.objects.create(every=7, period="days"),
        "django_celery_beat.crontabschedule": lambda: CrontabSchedule.objects.create(minute="7"),
        "django_celery_beat.solarschedule": lambda: SolarSchedule.objects.create(
            event="sunrise", latitude=52.5, longitude=13.4
        ),
        "django_celery_beat.clockedschedule": lambda: ClockedSchedule.objects.create(clocked_time=timezone.now()),
        "django_celery_beat.periodictask": lambda: PeriodicTask.objects.create(
            name="acme-report",
            task="presence.tasks.sweep",
            interval=IntervalSchedule.objects.create(every=1, period="hours"),
        ),
    }
    assert label in makers, (
        f"{label} is registered in the admin: scope its admin (orgs.admin.OrgScopedAdmin) and add here an "
        "object of it that is not of olga's organization"
    )
    return makers[label]()


_LABELS = {
    "orgs_user": "orgs.user",
    "orgs_membership": "orgs.membership",
    "orgs_organization": "orgs.organization",
    "presence_device": "presence.device",
    "presence_presencestate": "presence.presencestate",
    "presence_manualstatus": "presence.manualstatus",
    "presence_calendarblock": "presence.calendarblock",
    "presence_presencehistory": "presence.presencehistory",
    "presence_devicehistory": "presence.devicehistory",
}


def _model_of(url_name: str) -> type[Model]:
    return apps.get_model(_LABELS[url_name])


# Read when the tests are collected, so that a model registered later is tried without a change here.
REGISTERED = sorted(model._meta.label_lower for model in admin.site._registry)


def _stored(obj: Model) -> list[dict]:
    # By the primary key column: an API token's `pk` is its user's id, as in its admin URLs.
    key = type(obj)._meta.pk.attname
    return list(type(obj)._base_manager.filter(**{key: getattr(obj, key)}).values())


@pytest.mark.parametrize("view", ["change", "delete", "history"])
@pytest.mark.parametrize("label", REGISTERED)
def test_an_org_admin_gets_a_404_for_any_object_not_of_their_organization(
    org_admin_client, carol_everywhere, label, view
):
    obj = _not_olgas(label, carol_everywhere)
    before = _stored(obj)
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_{view}", args=[obj.pk])

    read = org_admin_client.get(url)
    posted = org_admin_client.post(url, {"post": "yes", "name": "taken", "enabled": "on", "is_active": ""})

    assert before, "the object exists"
    assert (read.status_code, posted.status_code) == (404, 404), url
    assert _stored(obj) == before


@pytest.mark.parametrize("label", REGISTERED)
def test_no_admin_changelist_lists_an_object_not_of_the_org_admins_organization(
    org_admin_client, carol_everywhere, label
):
    obj = _not_olgas(label, carol_everywhere)

    response = org_admin_client.get(reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_changelist"))

    assert response.status_code in (200, 403)
    if response.status_code == 200:
        assert obj.pk not in {shown.pk for shown in response.context["cl"].result_list}


@pytest.mark.parametrize("model", ["orgs_user", "orgs_membership", "orgs_organization", "presence_presencestate"])
def test_an_org_admin_opens_their_own_organization_objects(org_admin_client, alice_everywhere, model):
    pk = _objects_of(alice_everywhere)[model]

    response = org_admin_client.get(reverse(f"admin:{model}_change", args=[pk]))

    assert response.status_code == 200


def test_an_org_admin_cannot_change_another_organization_user_by_posting(org_admin_client, carol):
    url = reverse("admin:orgs_user_change", args=[carol.pk])

    response = org_admin_client.post(url, {"username": "taken-over", "email": "x@example.test"})

    assert response.status_code == 404
    assert User.objects.get(pk=carol.pk).username == "carol"


def test_an_org_admin_cannot_set_another_organization_user_password(org_admin_client, carol):
    url = reverse("admin:auth_user_password_change", args=[carol.pk])

    response = org_admin_client.post(url, {"password1": "NewPass-12345", "password2": "NewPass-12345"})

    assert response.status_code == 404
    assert User.objects.get(pk=carol.pk).check_password("correct horse battery staple")


def test_an_org_admin_cannot_delete_another_organization_device_in_bulk(org_admin_client, carol_everywhere):
    device = Device.objects.get(user=carol_everywhere)

    org_admin_client.post(
        reverse("admin:presence_device_changelist"),
        {"action": "delete_selected", "_selected_action": [device.pk], "post": "yes"},
    )

    assert Device.objects.filter(pk=device.pk).exists()


def test_an_org_admin_cannot_grant_themselves_superuser(org_admin_client, olga):
    url = reverse("admin:orgs_user_change", args=[olga.pk])
    page = org_admin_client.get(url)
    assert "is_superuser" not in page.context["adminform"].form.fields
    data = {
        "username": "olga",
        "email": "olga@example.test",
        "is_active": "on",
        "is_staff": "on",
        "is_superuser": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "09:00:00",
    }

    response = org_admin_client.post(url, data)

    assert response.status_code == 302, response.context and response.context["errors"]
    olga.refresh_from_db()
    assert (olga.email, olga.is_superuser) == ("olga@example.test", False)


def test_an_org_admin_cannot_move_a_member_to_another_organization(org_admin_client, alice, other_organization):
    url = reverse("admin:orgs_membership_change", args=[alice.membership.pk])
    data = {**form_data(org_admin_client.get(url)), "organization": other_organization.pk, "role": "admin"}

    response = org_admin_client.post(url, data)

    assert response.status_code == 302
    membership = Membership.objects.get(user=alice)
    assert (membership.organization_id, membership.role) == (alice.membership.organization_id, "admin")


def test_an_org_admin_picks_users_only_from_their_organization(org_admin_client, alice, carol):
    response = org_admin_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "orgs", "model_name": "membership", "field_name": "user", "term": ""},
    )

    assert response.status_code == 200
    names = {result["text"] for result in response.json()["results"]}
    assert "alice" in names and "carol" not in names


def test_the_membership_filter_names_no_other_organization(org_admin_client, alice, carol):
    response = org_admin_client.get(reverse("admin:orgs_membership_changelist"))

    assert "Acme" not in response.content.decode()


def test_a_user_an_org_admin_creates_joins_their_organization(org_admin_client, organization):
    response = org_admin_client.post(
        reverse("admin:orgs_user_add"),
        {
            "username": "newbie",
            "password1": "Sparks-newbie-123",
            "password2": "Sparks-newbie-123",
            "usable_password": "true",
        },
    )

    assert response.status_code == 302
    assert User.objects.get(username="newbie").membership.organization == organization


def test_an_org_admin_cannot_add_organizations(org_admin_client):
    assert org_admin_client.get(reverse("admin:orgs_organization_add")).status_code == 403


def test_an_org_admin_cannot_see_a_superuser_account_of_their_organization(org_admin_client, make_member):
    root = make_member("root-in-demo")
    root.is_superuser = root.is_staff = True
    root.save()

    response = org_admin_client.get(reverse("admin:orgs_user_change", args=[root.pk]))

    assert response.status_code == 404


def test_staff_without_an_admin_role_sees_no_organization_data(client, alice, carol):
    alice.is_staff = True
    alice.save()
    client.force_login(alice)

    assert client.get(reverse("admin:orgs_user_changelist")).status_code == 403
    assert client.get(reverse("admin:orgs_user_change", args=[alice.pk])).status_code in (403, 404)
    assert client.get(reverse("admin:index")).context["app_list"] == []


def test_a_superuser_sees_every_organization(client, alice, carol):
    client.force_login(User.objects.create_superuser(username="root", email="root@example.test", password="x"))

    content = client.get(reverse("admin:orgs_user_changelist")).content.decode()

    assert "alice" in content and "carol" in content


# --- The policy, edited by the organization's admin ------------------------------------------


def _policy_post(client, organization: Organization, **changes: str):
    url = reverse("admin:orgs_organization_change", args=[organization.pk])
    data = form_data(client.get(url))
    data.update({f"policy-0-{name}": value for name, value in changes.items()})
    return client.post(url, data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device_timeout_seconds", "29"),
        ("device_timeout_seconds", "3601"),
        ("idle_timeout_seconds", "10"),
        ("idle_timeout_seconds", "7200"),
    ],
)
def test_policy_timeouts_outside_30_seconds_to_an_hour_are_refused(org_admin_client, organization, field, value):
    response = _policy_post(org_admin_client, organization, **{field: value})

    assert response.status_code == 200
    assert field in response.context["inline_admin_formsets"][0].formset.errors[0]
    assert getattr(PresencePolicy.objects.get(organization=organization), field) is None


def test_a_device_timeout_a_heartbeat_cannot_beat_is_refused(org_admin_client, organization, settings):
    settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS = 60

    response = _policy_post(org_admin_client, organization, device_timeout_seconds="45")

    assert response.status_code == 200
    assert "heartbeat" in str(response.context["inline_admin_formsets"][0].formset.errors[0])


def test_an_org_admin_saves_the_policy_and_the_members_are_recomputed_under_it(
    org_admin_client, organization, alice, django_capture_on_commit_callbacks, settings
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.PRESENCE_IDLE_TIMEOUT_SECONDS = 300
    with time_machine.travel(timezone.now() - timedelta(seconds=70), tick=False):
        device, _ = services.register_device(alice, "alice-laptop")  # her last activity
    services.ingest_signals(alice, device.device_id, [services.Signal(SignalType.HEARTBEAT, None, 1)])
    assert selectors.current_presence(alice).status == Status.AVAILABLE

    with django_capture_on_commit_callbacks(execute=True):
        response = _policy_post(
            org_admin_client,
            organization,
            device_timeout_seconds="90",
            idle_timeout_seconds="60",
            allow_external_dispatch="",
            default_priority="manual_first",
        )

    assert response.status_code == 302, response.context and response.context["errors"]
    policy = PresencePolicy.objects.get(organization=organization)
    assert (policy.device_timeout_seconds, policy.idle_timeout_seconds) == (90, 60)
    assert (policy.allow_external_dispatch, policy.default_priority) == (False, "manual_first")
    # Recomputed under the new idle timeout: 70 s without activity is idle now.
    state = PresenceState.objects.get(user=alice)
    assert (state.status, state.reason) == (Status.AWAY, "all_devices_idle_or_hidden")
    services.persist_pending()
    assert PresenceHistory.objects.filter(user=alice, source="policy", status=Status.AWAY).exists()
