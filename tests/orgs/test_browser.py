"""A real browser (Debian's chromium, driven by Playwright) signs in through the OIDC provider,
changes a presence setting and sees it saved. Also saves the README's screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orgs.models import User
from presence.models import PresencePreferences
from tests.browsers import chromium, needs_chromium

# The README's screenshot is renewed on request only (SPARKS_UPDATE_SCREENSHOTS=1): a test run
# leaves the checkout as it found it.
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "privacy-page.png"

pytestmark = [pytest.mark.django_db(transaction=True), needs_chromium]


@pytest.fixture
def chromium_page():
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 1000, "height": 900})


def test_a_member_signs_in_with_the_organization_account_and_changes_a_presence_setting(
    live_server, mock_provider, chromium_page, tmp_path
):
    mock_provider.set_user(
        "kc-gina", email="gina@acme.test", given_name="Gina", family_name="Linetti", organization="acme"
    )
    page = chromium_page

    page.goto(f"{live_server.url}/accounts/sign-in/?next=/settings/privacy/")
    page.get_by_role("link", name="Sign in with your organization account").click()
    page.locator("input[name=sub]").fill("kc-gina")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{live_server.url}/settings/privacy/")

    calendar = page.get_by_label("Use calendar busy in aggregated presence")
    assert calendar.is_checked()
    calendar.uncheck()
    page.get_by_label("Manual first: your manual status wins over the calendar").check()
    page.get_by_role("button", name="Save").click()

    page.get_by_text("Your presence settings are saved.").wait_for()
    assert not page.get_by_label("Use calendar busy in aggregated presence").is_checked()
    assert page.get_by_label("Manual first: your manual status wins over the calendar").is_checked()
    preferences = PresencePreferences.objects.get(user=User.objects.get(oidc_subject="kc-gina"))
    assert (preferences.use_calendar_busy, preferences.priority) == (False, "manual_first")
    screenshot = README_SCREENSHOT if os.environ.get("SPARKS_UPDATE_SCREENSHOTS") else tmp_path / "privacy-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0
