"""Every API operation, fuzzed from the published OpenAPI schema against a live server.

Schemathesis generates valid and invalid requests from `/api/schema/` and sends them, signed in
with an organization member's API token, to a real server on loopback. Whatever it sends, the
server must never fail (no 5xx), every answer must be one the schema documents (its status code,
its content type and its body), and every request the schema calls valid must be accepted
(positive data acceptance: no 400 for it).
"""

from __future__ import annotations

import json
import uuid
import zlib
from datetime import UTC, datetime, timedelta

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
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orgs.models import Membership
from presence.serializers import (
    MAX_CALENDAR_AHEAD,
    MAX_CALENDAR_BEHIND,
    MAX_CALENDAR_BLOCK_LENGTH,
    MAX_MANUAL_STATUS_AHEAD,
)
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
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
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


# --- Times inside the windows the schema states in words ----------------------------------------
# A manual status ends in the future and within a year; a busy block ends after it starts, lasts at
# most 31 days, ends at most 31 days ago and starts within a year. OpenAPI has no keyword for a time
# relative to the clock or to another field: the schema says it in the fields' descriptions, and the
# server refuses a time outside with a 400 naming the field. The generated times are moved inside
# those windows (each to a place that depends on the generated value, so that examples still vary),
# so that the positive data check judges everything the schema states (`move_times_into_windows`, before
# each call: in every phase, explicit examples and coverage probes included). A string that is no
# date-time is left as it is.


def _is_date_time(value: object) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _moved(value: str, earliest: datetime, span: timedelta) -> datetime:
    return earliest + timedelta(seconds=zlib.crc32(value.encode("utf-8", "surrogatepass")) % int(span.total_seconds()))


def _text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _manual_status_in_window(body: dict, now: datetime) -> dict:
    if not _is_date_time(body.get("until")):
        return body
    margin = timedelta(minutes=5)  # the request is checked a moment after it is generated
    return {**body, "until": _text(_moved(body["until"], now + margin, MAX_MANUAL_STATUS_AHEAD - 2 * margin))}


def _calendar_in_window(body: dict, now: datetime) -> dict:
    if not isinstance(body.get("blocks"), list):
        return body
    margin = timedelta(days=1)
    blocks = []
    for block in body["blocks"]:
        if isinstance(block, dict) and _is_date_time(block.get("start")) and _is_date_time(block.get("end")):
            start = _moved(
                block["start"],
                now - MAX_CALENDAR_BEHIND + margin,
                MAX_CALENDAR_BEHIND + MAX_CALENDAR_AHEAD - 2 * margin,
            )
            second = timedelta(seconds=1)
            end = _moved(block["end"], start + second, MAX_CALENDAR_BLOCK_LENGTH - second)
            block = {**block, "start": _text(start), "end": _text(end)}
        blocks.append(block)
    return {**body, "blocks": blocks}


_WINDOWED = {
    ("PUT", "/api/v1/me/status"): _manual_status_in_window,
    ("PUT", "/api/v1/me/calendar"): _calendar_in_window,
}


def move_times_into_windows(case) -> None:
    """The case's times inside the documented windows of its operation, if it has any."""
    within = _WINDOWED.get((case.method.upper(), case.path))
    if within is not None and isinstance(case.body, dict):
        case.body = within(case.body, datetime.now(UTC))


@pytest.mark.django_db
def test_the_fuzzed_schema_is_the_served_one(live_server):
    response = requests.get(f"{live_server.url}/api/schema/", headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 200
    assert response.json() == SCHEMA


@schema.parametrize()
@bounded(max_examples=25)
def test_every_operation_answers_as_documented_and_never_fails(case, live_server, member_token):
    headers = {"Authorization": f"Token {member_token}"}
    move_times_into_windows(case)
    case.call_and_validate(base_url=live_server.url, headers=headers, checks=CHECKS)
    known = {name: KNOWN_PATH_PARAMETERS[name] for name in case.path_parameters or {} if name in KNOWN_PATH_PARAMETERS}
    if known:
        case.path_parameters = {**case.path_parameters, **known}
        case.call_and_validate(base_url=live_server.url, headers=headers, checks=CHECKS)


@schema.parametrize()
@bounded(max_examples=3)
def test_every_operation_refuses_an_unknown_token_as_documented(case, live_server):
    move_times_into_windows(case)
    case.call_and_validate(base_url=live_server.url, headers={"Authorization": "Token not-a-token"}, checks=CHECKS)


@schema.parametrize()
@bounded(max_examples=3)
def test_every_operation_answers_as_documented_in_classic_mode(case, live_server, member_token, settings):
    settings.PRESENCE_USE_AGGREGATOR = False
    move_times_into_windows(case)
    case.call_and_validate(base_url=live_server.url, headers={"Authorization": f"Token {member_token}"}, checks=CHECKS)
