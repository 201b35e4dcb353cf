"""Every API operation, fuzzed from the published OpenAPI schema against a live server.

Schemathesis generates valid and invalid requests from `/api/schema/` and sends them, signed in
with an organization member's API token, to a real server on loopback. Whatever it sends, the
server must never fail (no 5xx), and every answer must be one the schema documents: its status
code, its content type and its body.
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
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

# Path parameters the member's data answers to: each generated request with a path parameter is
# also sent with these, so that the signals, sign-out and colleague operations get past their 404.
KNOWN_PATH_PARAMETERS = {
    "device_id": "0" * 32,
    "user_id": str(uuid.UUID("00000000-0000-4000-8000-00000000b0b0")),
}


def bounded(max_examples: int):
    """Hypothesis settings for a fast, reproducible run: the same examples every time."""
    return hypothesis_settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


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
    bob = UserFactory(username="bob", public_id=uuid.UUID(KNOWN_PATH_PARAMETERS["user_id"]))
    MembershipFactory(user=bob, organization=organization, role=Membership.Role.MEMBER)
    DeviceFactory(user=alice, device_id=KNOWN_PATH_PARAMETERS["device_id"])
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
@bounded(max_examples=25)
def test_every_operation_answers_as_documented_and_never_fails(case, live_server, member_token):
    headers = {"Authorization": f"Token {member_token}"}
    case.call_and_validate(base_url=live_server.url, headers=headers, checks=CHECKS)
    known = {name: KNOWN_PATH_PARAMETERS[name] for name in case.path_parameters or {} if name in KNOWN_PATH_PARAMETERS}
    if known:
        case.path_parameters = {**case.path_parameters, **known}
        case.call_and_validate(base_url=live_server.url, headers=headers, checks=CHECKS)


@schema.parametrize()
@bounded(max_examples=3)
def test_every_operation_refuses_an_unknown_token_as_documented(case, live_server):
    case.call_and_validate(base_url=live_server.url, headers={"Authorization": "Token not-a-token"}, checks=CHECKS)


@schema.parametrize()
@bounded(max_examples=3)
def test_every_operation_answers_as_documented_in_classic_mode(case, live_server, member_token, settings):
    settings.PRESENCE_USE_AGGREGATOR = False
    case.call_and_validate(base_url=live_server.url, headers={"Authorization": f"Token {member_token}"}, checks=CHECKS)
