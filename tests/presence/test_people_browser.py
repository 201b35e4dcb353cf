"""Two people in real browsers: Ada and Bob, colleagues in one organization, each signed in in a
browser context of their own (Debian's chromium, driven by Playwright) with the live page at `/`
open, on a server of the test's own (`manage.py runserver`: daphne, the websocket; the embedded
default, its beat sweeping every second). For each of Ada's changes, Bob's page shows it within
two seconds.

The tests hold to the page's DOM contract only:
- a colleague in the list: an element with `data-user-id` (the user's public id) and `data-status`;
- the status menu: buttons with `data-status-choice` (`available`, `busy`, `away`, `dnd`, `offline`),
  setting the status at once with the preset of `<select id="clear-after">` (`30m`, `1h`, `2h`,
  `today`, `week`, `never`, `custom`) and the message of `#status-message`;
- my own status: `#my-status` with `data-status`;
- the page's client: `window.sparksPresence` (a `PresenceClient`).

Each delay is measured from the moment of Ada's action (taken just before it, so a delay includes
Playwright's own round trip) to the moment Bob's page showed the change (a MutationObserver in his
page), on the machine's one wall clock; where the server cannot know before a timeout expires (an
idle time, a device that went silent), the delay is also measured from that expiry. The delays are
written to `people-browser-delays.json` in each test's directory and listed at the end of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from tests.browsers import chromium as launch_chromium
from tests.browsers import needs_chromium, session_cookie
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.presence.browser_people import (
    DELAYS,
    INSTRUMENTATION,
    SERVER_TIMINGS,
    Measurements,
    Person,
    choose,
    fill_in,
    now_ms,
    presence_server,
    sees,
)

BUDGET_MS = 2000
TIMEOUT_MS = 5000  # Playwright's default for actions and expectations here (30 s otherwise)

pytestmark = [pytest.mark.django_db(transaction=True), needs_chromium]


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One browser for the module; each person gets a context (cookies, storage) of their own."""
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def measurements(request, tmp_path, record_property) -> Measurements:
    return Measurements(
        request.node.name,
        tmp_path / "people-browser-delays.json",
        sink=request.config.stash.setdefault(DELAYS, []),
        record_property=record_property,
    )


@pytest.fixture
def meet(chromium, tmp_path, transactional_db) -> Iterator[Callable[..., tuple[Person, Person, object]]]:
    """`meet(**server_settings)`: a server with these settings, and Ada then Bob signed in with the
    page open, each seeing the other available. Everything is closed, the server last, before the
    database is emptied (the server's beat writes every second)."""
    stack = ExitStack()

    def make(**server_settings: str) -> tuple[Person, Person, object]:
        organization = OrganizationFactory(slug="browser-people", name="Browser People")
        users = {
            name: UserFactory(username=name.lower(), first_name=name, last_name="Tester") for name in ("Ada", "Bob")
        }
        for user in users.values():
            MembershipFactory(user=user, organization=organization)
        server = stack.enter_context(presence_server(tmp_path / "runserver.log", **server_settings))
        people = {}
        for name, user in users.items():
            context = chromium.new_context(viewport={"width": 1000, "height": 800})
            stack.callback(context.close)
            context.set_default_timeout(TIMEOUT_MS)
            context.add_init_script(INSTRUMENTATION)
            context.add_cookies([session_cookie(user, server.base_url)])
            person = people[name] = Person(name, user, context, page=None)
            context.expose_function("__sparksTestNote", lambda entry, person=person: person.network.append(entry))
            page = person.page = context.new_page()
            page.goto(f"{server.base_url}/")
            _is_the_live_page(page)
            # Signed in as a device and live before the next person arrives.
            _expect(page.locator("#my-status")).to_have_attribute("data-status", "available", timeout=15000)
        ada, bob = people["Ada"], people["Bob"]
        sees(bob, ada, "available", since_ms=0, about=server.log)
        sees(ada, bob, "available", since_ms=0, about=server.log)
        # The steady state: both clients beat on their websockets, the sign-ins' work is done.
        ada.wait_for_heartbeat_on_the_socket()
        bob.wait_for_heartbeat_on_the_socket()
        return ada, bob, server

    with stack:
        yield make


def _is_the_live_page(page) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator("#my-status").wait_for(state="attached")
    except PlaywrightTimeout:
        raise AssertionError(
            f"{page.url} is not the live page: no #my-status (the page's DOM contract is in this module's docstring)"
        ) from None


def _expect(locator):
    from playwright.sync_api import expect

    return expect(locator)


def _presence_of(person: Person) -> dict:
    """`GET /api/v1/me/presence` as the person's page would read it (their session)."""
    return person.page.evaluate("fetch('/api/v1/me/presence').then((r) => r.json())")


def test_a_status_chosen_from_the_menu_with_a_preset(meet, measurements):
    ada, bob, server = meet()

    fill_in(ada.page, "#clear-after", "1h")
    fill_in(ada.page, "#status-message", "Writing the report")
    acted = now_ms()
    how = choose(ada.page, '[data-status-choice="busy"]')

    shown = sees(bob, ada, "busy", since_ms=acted, about=server.log)
    delay = measurements.record("menu busy, 1h", shown - acted, "the click", how=how)
    _expect(bob.status_shown_of(ada)).to_have_attribute("data-status", "busy")
    _expect(ada.page.locator("#my-status")).to_have_attribute("data-status", "busy", timeout=BUDGET_MS)
    presence = _presence_of(ada)
    assert (presence["status"], presence["status_msg"]) == ("busy", "Writing the report")
    # The preset: the status ends in an hour.
    until = datetime.fromisoformat(presence["status_until"])
    assert abs(until - (timezone.now() + timedelta(hours=1))) < timedelta(seconds=30)
    assert delay <= BUDGET_MS


def test_a_hidden_tab_makes_ada_away(meet, measurements):
    ada, bob, server = meet()

    # Headless chromium keeps every page visible (another tab brought to front, a minimized window:
    # `visibilityState` stays `visible`), so the page is told it is hidden as a browser tells it.
    acted = now_ms()
    ada.page.evaluate(
        """() => {
          Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
          Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
          document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )

    shown = sees(bob, ada, "away", since_ms=acted, about=server.log)
    delay = measurements.record("tab hidden → away", shown - acted, "visibilitychange (emulated)")
    _expect(ada.page.locator("#my-status")).to_have_attribute("data-status", "away", timeout=BUDGET_MS)
    assert _presence_of(ada)["reason"] == "all_devices_idle_or_hidden"
    assert delay <= BUDGET_MS

    acted = now_ms()
    ada.page.evaluate(
        """() => {
          delete document.visibilityState;
          delete document.hidden;
          document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    shown = sees(bob, ada, "available", since_ms=acted, about=server.log)
    delay = measurements.record("tab visible again → available", shown - acted, "visibilitychange (emulated)")
    assert delay <= BUDGET_MS


IDLE_SECONDS = 3


def test_quiet_past_the_idle_time_makes_ada_away_and_input_brings_her_back(meet, measurements):
    ada, bob, server = meet(PRESENCE_IDLE_TIMEOUT_SECONDS=str(IDLE_SECONDS))

    ada.page.mouse.move(200, 200)
    ada.page.mouse.move(220, 210)
    last_input = ada.page.evaluate("window.__lastInputAt")
    assert last_input is not None

    shown = sees(bob, ada, "away", since_ms=last_input, timeout=IDLE_SECONDS + 10, about=server.log)
    quiet_ended = last_input + IDLE_SECONDS * 1000
    # Not before the idle time was over.
    assert shown >= quiet_ended - 100, shown - quiet_ended
    delay = measurements.record(
        "quiet → away", shown - quiet_ended, f"the idle time's end ({IDLE_SECONDS} s after the last input)"
    )
    _expect(ada.page.locator("#my-status")).to_have_attribute("data-status", "away", timeout=BUDGET_MS)
    assert delay <= BUDGET_MS

    acted = now_ms()
    ada.page.keyboard.press("Shift")
    shown = sees(bob, ada, "available", since_ms=acted, about=server.log)
    delay = measurements.record("input → available", shown - acted, "the key press")
    assert delay <= BUDGET_MS


DEVICE_TIMEOUT_SECONDS = int(SERVER_TIMINGS["PRESENCE_DEVICE_TIMEOUT_SECONDS"])


def _offline_seen(case: str, ada: Person, bob: Person, server, measurements: Measurements, acted: float) -> None:
    """Bob sees Ada offline. Measured from the action, and from the device timeout's expiry (Ada's
    last signal before the action, plus the timeout), before which the server cannot know unless
    Ada's client tells it; which of the two it was is told by when it happened."""
    shown = sees(bob, ada, "offline", since_ms=acted, timeout=DEVICE_TIMEOUT_SECONDS + 10, about=server.log)
    last = ada.last_signal_sent_before(acted)
    expired = last["at"] + DEVICE_TIMEOUT_SECONDS * 1000
    after = [entry for entry in ada.network if acted <= entry["at"] <= shown]
    path = "the device timeout" if shown >= expired else "a signal of Ada's client"
    details = {
        "path": path,
        "last_signal_before": f"{Person.describe(last)} at -{round(acted - last['at'])} ms",
        "after_the_action": [f"{Person.describe(entry)} at +{round(entry['at'] - acted)} ms" for entry in after],
    }
    measurements.record(case, shown - acted, "the action", **details)
    delay = measurements.record(
        case, shown - expired, f"the device timeout's expiry ({DEVICE_TIMEOUT_SECONDS} s after the last signal)",
        **details,
    )  # fmt: skip
    # Once the server can know, Bob sees it within the budget (the sweep runs every second).
    assert delay <= BUDGET_MS, details
    # Nor does Ada stay online on Bob's page much longer than the timeout after she went.
    assert shown - acted <= DEVICE_TIMEOUT_SECONDS * 1000 + BUDGET_MS, details


def test_ada_s_browser_going_offline_makes_her_offline(meet, measurements):
    ada, bob, server = meet()

    # Right after a heartbeat, so that no other signal goes out while Playwright acts.
    ada.wait_for_next_heartbeat()
    acted = now_ms()
    ada.context.set_offline(True)

    _offline_seen("browser offline → offline", ada, bob, server, measurements, acted)


def test_ada_s_page_closed_makes_her_offline_after_the_device_timeout(meet, measurements):
    ada, bob, server = meet()

    # Right after a heartbeat: the page's last words, since a page that is closing tells no more.
    ada.wait_for_next_heartbeat()
    acted = now_ms()
    ada.page.close()

    _offline_seen("page closed → offline", ada, bob, server, measurements, acted)


def test_a_call_started_in_the_page_makes_ada_busy(meet, measurements):
    ada, bob, server = meet()

    acted = now_ms()
    ada.page.evaluate("window.sparksPresence.setCall(true)")

    shown = sees(bob, ada, "busy", since_ms=acted, about=server.log)
    delay = measurements.record("call started → busy", shown - acted, "setCall(true)")
    _expect(ada.page.locator("#my-status")).to_have_attribute("data-status", "busy", timeout=BUDGET_MS)
    assert _presence_of(ada)["reason"] == "in_call"
    assert delay <= BUDGET_MS
