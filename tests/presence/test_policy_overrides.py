"""An organization's idle timeout override decides when its members' devices count as idle."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orgs.models import PresencePolicy, User
from presence import selectors
from presence.engine import is_idle
from tests.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def test_the_policy_idle_timeout_replaces_the_server_default(alice, organization, settings):
    settings.PRESENCE_IDLE_TIMEOUT_SECONDS = 300
    PresencePolicy.objects.filter(organization=organization).update(idle_timeout_seconds=60)
    device = DeviceFactory(user=alice, last_active_at=timezone.now() - timedelta(seconds=90))
    member = User.objects.get(pk=alice.pk)  # as a request would load her
    policy = selectors.policy_input(selectors.policy_of(selectors.organization_of(member)))

    assert policy.idle_timeout == timedelta(seconds=60)
    assert is_idle(selectors.device_input(device), timezone.now(), policy)


def test_without_an_override_the_server_idle_timeout_applies(alice, settings):
    settings.PRESENCE_IDLE_TIMEOUT_SECONDS = 240

    policy = selectors.policy_input(selectors.policy_of(selectors.organization_of(alice)))

    assert policy.idle_timeout == timedelta(seconds=240)


def test_config_gives_a_member_the_idle_timeout_of_their_organization(alice_api, api_for, organization, settings):
    settings.PRESENCE_IDLE_TIMEOUT_SECONDS = 300
    PresencePolicy.objects.filter(organization=organization).update(idle_timeout_seconds=120)

    assert alice_api.get("/api/v1/config").json()["idle_timeout_seconds"] == 120
    assert api_for(None).get("/api/v1/config").json()["idle_timeout_seconds"] == 300
