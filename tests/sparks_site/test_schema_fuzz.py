"""Every API operation, fuzzed from the published OpenAPI schema against a live server.

Schemathesis generates valid and invalid requests from `/api/schema/` and sends them, signed in
with an organization member's API token, to a real server on loopback. Whatever it sends, the
server must never fail (no 5xx), and every answer must be one the schema documents: its status
code, its content type and its body.
"""

from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orgs.models import Membership
from tests.factories import DeviceFactory, MembershipFactory, UserFactory

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def member_token(organization, make_member) -> str:
    """A member of an organization with a colleague and a signed-in device, so that not every
    generated request ends at an empty list or an unknown id."""
    alice = make_member("alice")
    MembershipFactory(user=UserFactory(username="bob"), organization=organization, role=Membership.Role.MEMBER)
    DeviceFactory(user=alice, device_id="0" * 32)
    return Token.objects.create(user=alice).key


def published_schema() -> dict:
    """The document `/api/schema/` serves, generated in-process so that pytest can collect one
    test per operation (the test below checks the live server serves the very same)."""
    generator = SchemaGenerator()
    return json.loads(OpenApiJsonRenderer().render(generator.get_schema(request=None, public=True)))


SCHEMA = published_schema()
schema = schemathesis.openapi.from_dict(SCHEMA)


@pytest.mark.django_db
def test_the_fuzzed_schema_is_the_served_one(live_server):
    response = requests.get(f"{live_server.url}/api/schema/", headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 200
    assert response.json() == SCHEMA


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented_and_never_fails(case, live_server, member_token):
    case.call_and_validate(base_url=live_server.url, headers={"Authorization": f"Token {member_token}"}, checks=CHECKS)
