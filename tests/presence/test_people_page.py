"""The people page at `/` (`presence.pages.people`): the server-rendered shell that the page's
script (`presence/static/presence/people.js`, with the reference client) keeps live. What the
browser does with it is tested against a running server (tests/presence/test_people_page_browser.py)."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from orgs.models import User
from presence import services
from presence.vocabulary import SignalType

pytestmark = pytest.mark.django_db


class Elements(HTMLParser):
    """Every start tag of a page, as (tag, attributes)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))

    def with_attr(self, name: str) -> list[tuple[str, dict[str, str | None]]]:
        return [(tag, attrs) for tag, attrs in self.found if name in attrs]

    def by_id(self, element_id: str) -> tuple[str, dict[str, str | None]]:
        (found,) = [(tag, attrs) for tag, attrs in self.found if attrs.get("id") == element_id]
        return found


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


def live(user: User) -> None:
    device, _ = services.register_device(user, f"{user.username}-installation", "laptop")
    services.ingest_signals(user, device.device_id, [services.Signal(SignalType.ACTIVITY, "active", 1)])


def test_the_page_needs_a_sign_in():
    response = Client().get("/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/sign-in/?next=/"


def test_signing_in_without_a_next_page_lands_on_it(alice):
    alice.set_password("pw-of-alice")
    alice.save()

    response = Client().post("/accounts/sign-in/", {"username": alice.username, "password": "pw-of-alice"})

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_the_shell_carries_my_public_id_and_sets_the_csrf_cookie(alice):
    response = signed_in(alice).get("/")

    assert response.status_code == 200
    page = Elements(response.content.decode())
    assert page.by_id("people")[1]["data-user-id"] == str(alice.public_id)
    assert "csrftoken" in response.cookies
    scripts = [attrs["src"] for tag, attrs in page.found if tag == "script" and attrs.get("type") == "module"]
    assert scripts == ["/static/presence/people.js"]


def test_my_status_is_shown_with_its_label_message_and_end(alice):
    live(alice)
    services.set_manual_status(alice, "dnd", "Focus time", timezone.now() + timedelta(hours=1))

    html = signed_in(alice).get("/").content.decode()

    _, attrs = Elements(html).by_id("my-status")
    assert attrs["data-status"] == "dnd"
    assert attrs["aria-live"] == "polite"
    assert "Do not disturb" in html and "Focus time" in html
    assert "until " in html


def test_the_menu_offers_every_status_and_the_clear_after_presets(alice):
    page = Elements(signed_in(alice).get("/").content.decode())

    choices = [attrs["data-status-choice"] for tag, attrs in page.with_attr("data-status-choice")]
    assert choices == ["available", "busy", "away", "dnd", "offline"]
    assert all(tag == "button" for tag, _ in page.with_attr("data-status-choice"))
    presets = [attrs["value"] for tag, attrs in page.found if tag == "option"]
    assert page.by_id("clear-after")[0] == "select"
    assert presets == ["30m", "1h", "2h", "today", "week", "never", "custom"]
    assert page.by_id("clear-after-custom")[1]["type"] == "datetime-local"
    assert page.by_id("status-message")[1]["maxlength"] == "280"


def test_no_appear_offline_choice_when_the_organization_forbids_it(alice, organization):
    organization.policy.allow_appear_offline = False
    organization.policy.save()

    page = Elements(signed_in(alice).get("/").content.decode())

    choices = [attrs["data-status-choice"] for tag, attrs in page.with_attr("data-status-choice")]
    assert choices == ["available", "busy", "away", "dnd"]


def test_it_links_the_privacy_settings_and_the_explanation(alice):
    page = Elements(signed_in(alice).get("/").content.decode())

    links = {attrs.get("href") for tag, attrs in page.found if tag == "a"}
    assert {"/settings/privacy/", "/me/#why"} <= links


def test_it_says_classic_mode_when_the_aggregator_is_off(alice, settings):
    settings.PRESENCE_USE_AGGREGATOR = False

    html = signed_in(alice).get("/").content.decode()

    assert "classic mode" in html
    assert "data-status-choice" not in html and "people.js" not in html


def test_the_explanation_page_says_appear_offline_and_when_a_status_ends(alice):
    live(alice)
    services.set_manual_status(alice, "offline", until=timezone.now() + timedelta(hours=2))

    html = signed_in(alice).get("/me/").content.decode()

    assert "You chose to appear offline." in html
    assert 'data-testid="until"' in html
    assert 'id="why"' in html


@pytest.mark.parametrize("name", ["presence/people.js", "presence/client.js"])
def test_the_finders_find_the_page_script_and_the_client(name):
    assert finders.find(name)


def test_the_page_script_is_served_as_javascript_in_debug_mode(settings):
    settings.DEBUG = True

    response = Client().get("/static/presence/people.js")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
