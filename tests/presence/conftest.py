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
