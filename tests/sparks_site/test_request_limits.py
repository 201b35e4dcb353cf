"""Requests Django refuses before any view still get the API's JSON errors."""

from __future__ import annotations

import json

import pytest

from presence.models import CalendarBlock

pytestmark = pytest.mark.django_db

BLOCK = {"start": "2026-11-25T10:00:00Z", "end": "2026-11-25T11:00:00Z"}


def test_a_body_over_the_limit_is_a_json_413_and_stores_nothing(api_for, alice, settings):
    api = api_for(alice)
    assert api.put("/api/v1/me/calendar", {"blocks": [BLOCK]}, format="json").status_code == 200
    body = json.dumps({"blocks": [BLOCK] * 1000, "padding": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE})

    response = api.generic("PUT", "/api/v1/me/calendar", body, content_type="application/json")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "request_too_large"
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in response.json()["detail"]
    assert CalendarBlock.objects.filter(user=alice).count() == 1


def test_the_largest_valid_calendar_fits_under_the_limit(api_for, alice):
    blocks = [
        {
            "start": f"2026-12-{1 + n // 40:02d}T{n % 20:02d}:00:00Z",
            "end": f"2026-12-{1 + n // 40:02d}T{n % 20:02d}:30:00Z",
        }
        for n in range(1000)
    ]

    response = api_for(alice).put("/api/v1/me/calendar", {"blocks": blocks}, format="json")

    assert response.status_code == 200
    assert CalendarBlock.objects.filter(user=alice).count() == 1000
