"""Settings → Privacy → "Presence (server)" and "My presence", server-rendered (`presence.pages`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from orgs.models import User
from presence import services
from presence.models import CalendarBlock, PresencePreferences, PresenceState
from presence.vocabulary import SignalType
from tests.factories import DeviceFactory

pytestmark = pytest.mark.django_db

OIDC_BACKEND = "orgs.oidc.OrganizationAccountBackend"
PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"


def browser(user: User, backend: str = OIDC_BACKEND, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(User.objects.get(pk=user.pk), backend=backend)
    return client


def form(**ticked: str) -> dict[str, str]:
    return {"priority": "", **ticked}


def test_the_privacy_page_shows_the_four_options_to_an_organization_account(alice):
    page = browser(alice).get("/settings/privacy/")

    html = page.content.decode()
    assert page.status_code == 200
    for label in (
        "Use calendar busy in aggregated presence",
        "Include Microsoft Graph presence as a source",
        "Share aggregated presence externally",
        "Priority: calendar vs. manual",
    ):
        assert label in html
    assert '<label for="id_use_calendar_busy">' in html
    assert "<legend>" in html


def test_the_privacy_page_says_classic_mode_when_the_aggregator_is_off(alice, settings):
    settings.PRESENCE_USE_AGGREGATOR = False

    page = browser(alice).get("/settings/privacy/")

    assert "classic mode" in page.content.decode()
    assert 'name="use_calendar_busy"' not in page.content.decode()


def test_the_privacy_page_asks_for_the_organization_account_after_a_password_sign_in(alice):
    page = browser(alice, PASSWORD_BACKEND).get("/settings/privacy/")

    assert "sign in with your <strong>organization account</strong>" in page.content.decode()
    assert 'name="use_calendar_busy"' not in page.content.decode()


def test_saving_a_password_session_changes_nothing(alice):
    response = browser(alice, PASSWORD_BACKEND).post("/settings/privacy/", form())

    assert response.status_code == 409
    assert not PresencePreferences.objects.filter(user=alice).exists()


def test_the_privacy_page_needs_a_sign_in():
    response = Client().get("/settings/privacy/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/sign-in/?next=/settings/privacy/"


def test_an_option_the_policy_forbids_is_disabled_with_the_reason(alice, organization):
    organization.policy.allow_microsoft = False
    organization.policy.save()

    html = browser(alice).get("/settings/privacy/").content.decode()

    tag = html.split('id="id_include_microsoft_presence"')[1].split(">")[0]
    assert "disabled" in tag
    assert "Your organization&#x27;s presence policy does not allow this." in html


def test_turning_on_a_forbidden_option_anyway_is_refused_naming_it(alice, organization):
    organization.policy.allow_external_dispatch = False
    organization.policy.save()

    response = browser(alice).post("/settings/privacy/", form(share_externally="on"))

    assert response.status_code == 400
    assert "Not allowed by your organization&#x27;s presence policy." in response.content.decode()
    assert not PresencePreferences.objects.filter(user=alice).exists()


def test_saving_stores_the_choices_and_confirms_after_a_redirect(alice):
    client = browser(alice)

    response = client.post("/settings/privacy/", form(include_microsoft_presence="on", priority="manual_first"))

    assert response.status_code == 302
    assert response["Location"] == "/settings/privacy/"
    preferences = PresencePreferences.objects.get(user=alice)
    assert (preferences.use_calendar_busy, preferences.include_microsoft_presence) == (False, True)
    assert (preferences.share_externally, preferences.priority) == (False, "manual_first")
    confirmation = client.get("/settings/privacy/").content.decode()
    assert "Your presence settings are saved." in confirmation
    assert 'value="manual_first" checked' in confirmation


def test_saving_recomputes_the_presence_at_once(alice):
    now = timezone.now()
    DeviceFactory(user=alice)
    CalendarBlock.objects.create(user=alice, start=now - timedelta(minutes=5), end=now + timedelta(hours=1))
    assert services.recompute(alice).status == "busy"

    browser(alice).post("/settings/privacy/", form())  # calendar busy unticked

    state = PresenceState.objects.get(user=alice)
    assert (state.status, state.reason) == ("available", "device_active")


def test_an_unknown_priority_is_refused_naming_the_field(alice):
    response = browser(alice).post("/settings/privacy/", form(priority="coin_flip"))

    assert response.status_code == 400
    assert "is not a valid choice" in response.content.decode()


def test_saving_without_the_csrf_token_is_refused(alice):
    response = browser(alice, enforce_csrf_checks=True).post("/settings/privacy/", form())

    assert response.status_code == 403
    assert not PresencePreferences.objects.filter(user=alice).exists()


def live_device(user: User, label: str) -> str:
    device, _ = services.register_device(user, f"{label}-installation", label)
    services.ingest_signals(user, device.device_id, [services.Signal(SignalType.ACTIVITY, "active", 1)])
    return device.device_id


def test_my_presence_shows_the_status_the_rule_and_only_my_devices(alice, bob):
    mine = live_device(alice, "alice-laptop")
    theirs = live_device(bob, "bob-phone")

    html = browser(alice).get("/me/").content.decode()

    assert '<span data-testid="status">Available</span>' in html
    assert "device_active" in html
    assert "alice-laptop" in html and mine[:12] in html
    assert "bob-phone" not in html and theirs[:12] not in html


def test_my_presence_marks_a_timed_out_device_as_not_counted(alice):
    long_ago = timezone.now() - timedelta(hours=2)
    DeviceFactory(user=alice, label="old-desktop", last_seen_at=long_ago, last_active_at=long_ago)

    html = browser(alice).get("/me/").content.decode()

    assert "No (timed out or offline)" in html
    assert "no_live_device" in html


def test_my_presence_says_classic_mode_when_the_aggregator_is_off(alice, settings):
    settings.PRESENCE_USE_AGGREGATOR = False

    assert "classic mode" in browser(alice).get("/me/").content.decode()


def test_saving_over_the_change_limit_is_refused_and_nothing_stored(alice, settings):
    settings.PRESENCE_RATE_LIMIT_STATUS = (1, 60.0)
    client = browser(alice)
    assert client.post("/settings/privacy/", form(use_calendar_busy="on")).status_code == 302

    refused = client.post("/settings/privacy/", form(include_microsoft_presence="on"))

    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"
    assert "Too many changes of this user&#x27;s status and settings; retry in 60 s." in refused.content.decode()
    preferences = PresencePreferences.objects.get(user=alice)
    assert (preferences.use_calendar_busy, preferences.include_microsoft_presence) == (True, False)


def test_the_home_page_of_a_visitor_asks_for_a_sign_in(client):
    response = client.get("/", follow=True)

    assert response.redirect_chain[-1][0].startswith("/accounts/sign-in/")
    assert response.status_code == 200
