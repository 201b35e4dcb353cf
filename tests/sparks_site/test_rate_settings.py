"""PRESENCE_RATE_LIMIT_* as the environment gives them: "<count>/<period>" or "off"."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from sparks_site import settings as project_settings


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("120/m", (120, 60.0)),
        ("120/min", (120, 60.0)),
        ("20/10s", (20, 10.0)),
        (" 5 / 2h ", (5, 7200.0)),
        ("1000/day", (1000, 86400.0)),
        ("off", None),
        ("0", None),
    ],
)
def test_a_rate_is_read_as_count_and_seconds(monkeypatch, text, rate):
    monkeypatch.setenv("PRESENCE_RATE_LIMIT_DEVICE", text)

    assert project_settings._rate("PRESENCE_RATE_LIMIT_DEVICE", "120/m") == rate


@pytest.mark.parametrize("text", ["120", "fast", "0/m", "5/0s", "5/week", "-1/m", "1.5/m"])
def test_a_rate_that_cannot_be_read_stops_the_start_naming_the_key(monkeypatch, text):
    monkeypatch.setenv("PRESENCE_RATE_LIMIT_USER", text)

    with pytest.raises(ImproperlyConfigured, match="PRESENCE_RATE_LIMIT_USER"):
        project_settings._rate("PRESENCE_RATE_LIMIT_USER", "600/m")


KEYS = ["PRESENCE_RATE_LIMIT_DEVICE", "PRESENCE_RATE_LIMIT_USER", "PRESENCE_RATE_LIMIT_STATUS"]


@pytest.mark.parametrize("key", KEYS)
def test_env_example_documents_the_limits_in_force_by_default(monkeypatch, settings, key):
    lines = (project_settings.BASE_DIR / ".env.example").read_text().splitlines()
    documented = next(line.split("=", 1)[1] for line in lines if line.startswith(f"{key}="))
    monkeypatch.setenv(key, documented)

    assert project_settings._rate(key, "off") == getattr(settings, key)
