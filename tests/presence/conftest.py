"""Fixtures shared by the presence tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.presence.live_helpers import GroupListener


@pytest.fixture
def listen() -> Iterator[Callable[[int], GroupListener]]:
    """Listen to an organization's group on the channel layer, as a server process's hub does: a
    listener per call, each closed after the test."""
    listeners: list[GroupListener] = []

    def make(organization_id: int) -> GroupListener:
        listener = GroupListener(organization_id)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        listener.close()


def pytest_terminal_summary(terminalreporter, config) -> None:
    """The delays the browser tests measured (tests/presence/test_people_browser.py), in every
    run's output: what one person's page took to show another's change."""
    from tests.presence.browser_people import DELAYS

    rows = config.stash.get(DELAYS, [])
    if not rows:
        return
    terminalreporter.section("people in browsers: delays until Bob's page showed Ada's change")
    for row in rows:
        extra = f" (through {row['path']})" if row.get("path") else ""
        terminalreporter.write_line(f"{row['delay_ms']:>6} ms  {row['case']}, from {row['from']}{extra}")
