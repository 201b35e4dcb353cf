"""The reference web client (`presence/static/presence/client.js`, tested itself by
`node --test tests/js/`) is a static file of the presence app: found by the staticfiles finders,
so collectstatic gathers it, and served as JavaScript, which browsers require of an ES module."""

from __future__ import annotations

from pathlib import Path

from django.contrib.staticfiles import finders
from django.test import Client

import presence

CLIENT = Path(presence.__file__).parent / "static" / "presence" / "client.js"


def test_the_finders_find_the_client_module():
    assert finders.find("presence/client.js") == str(CLIENT)


def test_the_app_serves_it_as_javascript_in_debug_mode(settings):
    # WhiteNoise serves from the finders in debug mode (`make run`), read when a handler is built.
    settings.DEBUG = True
    response = Client().get("/static/presence/client.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert b"".join(response.streaming_content) == CLIENT.read_bytes()
