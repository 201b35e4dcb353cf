"""The published OpenAPI schema: complete, valid, and served."""

from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command

PUBLIC_PATHS = {
    "/api/v1/config",
    "/api/v1/devices",
    "/api/v1/devices/{device_id}",
    "/api/v1/devices/{device_id}/signals",
    "/api/v1/me/presence",
    "/api/v1/me/presence/explain",
    "/api/v1/me/status",
    "/api/v1/me/calendar",
    "/api/v1/me/privacy",
    "/api/v1/peers",
    "/api/v1/peers/{user_id}",
}


def test_the_schema_validates_without_warnings_and_lists_every_endpoint(tmp_path):
    schema_file = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(schema_file))
    schema = yaml.safe_load(schema_file.read_text())
    assert set(schema["paths"]) == PUBLIC_PATHS


@pytest.mark.django_db
def test_the_schema_and_its_browsable_ui_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    ui = client.get("/api/schema/swagger-ui/")
    assert ui.status_code == 200
    assert b"swagger-ui" in ui.content
