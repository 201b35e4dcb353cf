"""Helpers for the tests in a real browser: Debian's chromium driven by Playwright, signed in with a
session made in the test database."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client

from orgs.models import User

CHROMIUM = "/usr/bin/chromium"

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium. Playwright's event loop runs in the test's thread: Django must not
    refuse the test's own queries beside it for that; they ran on a connection of their own, closed
    afterwards, or it would keep the test database from being emptied or dropped."""
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                yield browser
            finally:
                browser.close()
                connections.close_all()


def session_cookie(user: User, base_url: str) -> dict[str, Any]:
    """A session of `user` as the organization account's sign-in opens it, as a Playwright cookie
    (for a server on the test database, with the suite's SECRET_KEY)."""
    client = Client()
    # As stored: a factory's password is not saved, and the session is bound to the stored one.
    client.force_login(User.objects.get(pk=user.pk), backend="orgs.oidc.OrganizationAccountBackend")
    name = settings.SESSION_COOKIE_NAME
    return {"name": name, "value": client.cookies[name].value, "url": base_url}
