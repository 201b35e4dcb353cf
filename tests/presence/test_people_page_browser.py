"""The people page in a real browser (Debian's chromium, driven by Playwright) against `make run`'s
server (`manage.py runserver`, websockets, tasks and beat in-process, the demo colleagues acting
out their presence): the list fills in live and in order, a status chosen from the menu is set
with its message and end. Also saves the README's screenshots (light and dark) when asked:
`SPARKS_UPDATE_SCREENSHOTS=1`; a test run otherwise leaves the checkout as it found it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from orgs.models import User
from presence.models import ManualStatus
from tests.browsers import chromium, needs_chromium, session_cookie
from tests.real_processes import RunningServer, make_run_environment, runserver

DOCS = Path(__file__).resolve().parents[2] / "docs"
# The order the page promises: available, busy, dnd, away, offline, then by name.
DEMO_LIST = [
    ("Bob Berg", "available"),
    ("Dana Admin", "busy"),
    ("Dave Dunn", "busy"),
    ("Erin Eze", "dnd"),
    ("Frank Falk", "away"),
    ("Grace Gray", "offline"),
]

pytestmark = needs_chromium


@pytest.fixture
def demo_server(tmp_path, transactional_db) -> Iterator[RunningServer]:
    """`make run`'s server on the test database, the demo seeded and its colleagues playing."""
    call_command("seed_demo", stdout=StringIO())
    env = make_run_environment(
        DEMO_COLLEAGUES="1",
        # The demo colleagues first play one heartbeat interval after the start: soon, here.
        PRESENCE_HEARTBEAT_INTERVAL_SECONDS="2",
    )
    with runserver(env, tmp_path / "runserver.log") as server:
        yield server


@pytest.fixture
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


def open_people_page(browser, server: RunningServer, color_scheme: str = "light"):
    context = browser.new_context(
        viewport={"width": 1100, "height": 860}, color_scheme=color_scheme, locale="en-GB", timezone_id="Europe/Berlin"
    )
    context.add_cookies([session_cookie(User.objects.get(username="alice"), server.base_url)])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server.base_url}/")
    page.wait_for_selector("#connection[data-state=open]", timeout=20_000)
    page.wait_for_function(
        "n => document.querySelectorAll('#colleagues [data-user-id]:not([data-status=offline])').length >= n",
        arg=5,
        timeout=30_000,
    )
    return page, errors


def listed(page) -> list[tuple[str, str]]:
    script = "items => items.map(i => [i.querySelector('.name').textContent, i.dataset.status])"
    return page.eval_on_selector_all("#colleagues [data-user-id]", script)


def test_the_people_page_lists_colleagues_live_and_sets_my_status(demo_server, browser, tmp_path):
    page, errors = open_people_page(browser, demo_server)

    assert [tuple(item) for item in listed(page)] == DEMO_LIST
    assert page.get_attribute("#people", "data-user-id") == str(User.objects.get(username="alice").public_id)

    page.fill("#status-message", "Writing the release notes")
    page.select_option("#clear-after", "2h")
    page.click("[data-status-choice=dnd]")
    page.wait_for_selector("#my-status[data-status=dnd]")
    page.wait_for_selector("[data-status-choice=dnd][aria-pressed=true]")
    assert "Writing the release notes" in page.inner_text("#my-status")
    assert "until" in page.inner_text("#my-status")
    manual = ManualStatus.objects.get(user__username="alice")
    assert (manual.status, manual.message, manual.until is not None) == ("dnd", "Writing the release notes", True)
    assert page.evaluate("typeof window.sparksPresence.setCall") == "function"
    assert errors == []

    update = os.environ.get("SPARKS_UPDATE_SCREENSHOTS")
    light = DOCS / "people-page-light.png" if update else tmp_path / "light.png"
    page.screenshot(path=str(light), full_page=True)
    dark_page, _ = open_people_page(browser, demo_server, color_scheme="dark")
    dark_page.wait_for_selector("#my-status[data-status=dnd]")
    dark = DOCS / "people-page-dark.png" if update else tmp_path / "dark.png"
    dark_page.screenshot(path=str(dark), full_page=True)
    assert light.stat().st_size > 0 and dark.stat().st_size > 0
