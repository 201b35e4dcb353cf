"""The limits of what the REST API takes in, one scenario a test.

Every bad input is a 4xx in the API's error shape naming the field, never a 500, and changes
nothing stored. The limits themselves (batch sizes, string lengths, how far back and ahead a time
may be) are `presence.serializers`'; the websocket's messages are `test_websocket.py`'s.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from presence import services
from presence.models import CalendarBlock, Device, ManualStatus, PresencePreferences, PresenceState
from presence.serializers import MAX_CALENDAR_AHEAD, MAX_CALENDAR_BEHIND
from presence.vocabulary import Status

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
INSTALLATION = "laptop-install"


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def device(alice) -> str:
    return services.register_device(alice, INSTALLATION, "laptop")[0].device_id


@pytest.fixture
def stored(alice, device):
    """Everything of alice's a write endpoint could change, as it is now."""
    services.set_manual_status(alice, Status.BUSY, "Workshop")
    services.replace_calendar(alice, [(T0 + timedelta(hours=1), T0 + timedelta(hours=2))])

    def snapshot() -> dict:
        return {
            "devices": list(Device.objects.filter(user=alice).values()),
            "manual_status": list(ManualStatus.objects.filter(user=alice).values()),
            "calendar": list(CalendarBlock.objects.filter(user=alice).values("start", "end")),
            "preferences": list(PresencePreferences.objects.filter(user=alice).values()),
            "presence": list(PresenceState.objects.filter(user=alice).values("status", "status_msg", "reason")),
        }

    return snapshot


def write_endpoints(device: str) -> list[tuple[str, str]]:
    return [
        ("post", "/api/v1/devices"),
        ("post", f"/api/v1/devices/{device}/signals"),
        ("put", "/api/v1/me/status"),
        ("put", "/api/v1/me/calendar"),
        ("patch", "/api/v1/me/privacy"),
    ]


WRITE_ENDPOINT_NAMES = ["register", "signals", "status", "calendar", "privacy"]


def send_raw(api, method: str, path: str, raw: str):
    return getattr(api, method)(path, raw, content_type="application/json")


def assert_rejected(response, *field_paths: str) -> dict[str, list[str]]:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error", body
    assert body["detail"] == "Invalid input."
    for path in field_paths:
        assert body["fields"].get(path), body["fields"]
        assert all(isinstance(message, str) and message for message in body["fields"][path])
    return body["fields"]


# --- The body as a whole -------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", range(5), ids=WRITE_ENDPOINT_NAMES)
@pytest.mark.parametrize("nesting", ["[" * 5000, '{"a": ' * 5000], ids=["arrays", "objects"])
def test_a_body_nested_too_deeply_is_a_parse_error_not_a_server_error(alice_api, device, stored, endpoint, nesting):
    before = stored()
    method, path = write_endpoints(device)[endpoint]

    response = send_raw(alice_api, method, path, nesting)

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "parse_error"
    assert stored() == before


@pytest.mark.parametrize("endpoint", range(5), ids=WRITE_ENDPOINT_NAMES)
@pytest.mark.parametrize(
    ("raw", "json_type"),
    [("[]", "an array"), ('"busy"', "a string"), ("null", "null"), ("3", "a number"), ("true", "a boolean")],
)
def test_a_body_that_is_not_a_json_object_is_refused_naming_what_it_is(
    alice_api, device, stored, endpoint, raw, json_type
):
    before = stored()
    method, path = write_endpoints(device)[endpoint]

    fields = assert_rejected(send_raw(alice_api, method, path, raw), "non_field_errors")

    assert fields["non_field_errors"] == [f"Expected a JSON object, got {json_type}."]
    assert stored() == before


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        (0, {"installation_id": "tablet", "serial": "X1"}, "serial"),
        (1, {"signals": [{"type": "heartbeat", "seq": 5}], "sent_at": "now"}, "sent_at"),
        (1, {"signals": [{"type": "heartbeat", "seq": 5, "battery": 80}]}, "signals.0.battery"),
        (2, {"status": "away", "emoji": ":)"}, "emoji"),
        (3, {"blocks": [], "source": "outlook"}, "source"),
        (
            3,
            {"blocks": [{"start": "2026-11-25T12:00:00Z", "end": "2026-11-25T13:00:00Z", "title": "x"}]},
            "blocks.0.title",
        ),
        (4, {"share_externally": False, "theme": "dark"}, "theme"),
    ],
    ids=["register", "signals", "a-signal", "status", "calendar", "a-block", "privacy"],
)
def test_an_unknown_field_is_refused_by_name_on_every_write_endpoint(
    alice_api, device, stored, clock, endpoint, body, field
):
    before = stored()
    method, path = write_endpoints(device)[endpoint]

    fields = assert_rejected(getattr(alice_api, method)(path, body, format="json"), field)

    assert fields[field] == ["Unknown field."]
    assert stored() == before


# --- Wrong JSON types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "field", "message"),
    [
        (0, {"installation_id": 5}, "installation_id", "Expected a string, got a number."),
        (0, {"installation_id": "tablet", "label": 7.5}, "label", "Expected a string, got a number."),
        (0, {"installation_id": ["tablet"]}, "installation_id", "Expected a string, got an array."),
        (1, {"signals": [{"type": "heartbeat", "seq": "5"}]}, "signals.0.seq", "Expected an integer, got a string."),
        (1, {"signals": [{"type": "heartbeat", "seq": 5.0}]}, "signals.0.seq", "Expected an integer, got a number."),
        (1, {"signals": [{"type": "heartbeat", "seq": True}]}, "signals.0.seq", "Expected an integer, got a boolean."),
        (1, {"signals": [{"type": 5, "seq": 5}]}, "signals.0.type", "Expected a string, got a number."),
        (1, {"signals": {"type": "heartbeat"}}, "signals", "Expected an array, got an object."),
        (1, {"signals": ["heartbeat"]}, "signals.0.non_field_errors", "Expected a JSON object, got a string."),
        (2, {"status": ["away"]}, "status", "Expected a string, got an array."),
        (2, {"status": "away", "message": 42}, "message", "Expected a string, got a number."),
        (2, {"status": "away", "duration_seconds": "3600"}, "duration_seconds", "Expected an integer, got a string."),
        (2, {"status": "away", "duration_seconds": 3600.0}, "duration_seconds", "Expected an integer, got a number."),
        (2, {"status": "away", "until": 1795000000}, "until", "Expected a string, got a number."),
        (3, {"blocks": "2026-11-25T12:00:00Z"}, "blocks", "Expected an array, got a string."),
        (4, {"share_externally": "true"}, "share_externally", "Expected true or false, got a string."),
        (4, {"use_calendar_busy": 0}, "use_calendar_busy", "Expected true or false, got a number."),
        (4, {"priority": 1}, "priority", "Expected a string, got a number."),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused_naming_the_type(
    alice_api, device, stored, endpoint, body, field, message
):
    before = stored()
    method, path = write_endpoints(device)[endpoint]

    fields = assert_rejected(getattr(alice_api, method)(path, body, format="json"), field)

    assert fields[field] == [message]
    assert stored() == before


# --- Strings that reach PostgreSQL ---------------------------------------------------------------


@pytest.mark.parametrize("character", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        (0, {"installation_id": "tablet{}"}, "installation_id"),
        (0, {"installation_id": "tablet", "label": "Tablet{}"}, "label"),
        (2, {"status": "away", "message": "Lunch{}"}, "message"),
    ],
    ids=["installation-id", "label", "message"],
)
def test_a_character_postgresql_cannot_store_is_refused_by_field(
    alice_api, device, stored, endpoint, body, field, character
):
    before = stored()
    method, path = write_endpoints(device)[endpoint]
    raw = '{"' + '", "'.join(f'{k}": "{v}' for k, v in body.items()) + '"}'
    raw = raw.replace("{}", "\\u0000" if character == "\x00" else "\\ud800")

    assert_rejected(send_raw(alice_api, method, path, raw), field)
    assert stored() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"installation_id": "i" * 257}, "installation_id"),
        ({"installation_id": "tablet", "label": "l" * 65}, "label"),
    ],
)
def test_an_over_long_installation_id_or_label_is_refused(alice_api, stored, body, field):
    before = stored()

    assert_rejected(alice_api.post("/api/v1/devices", body, format="json"), field)
    assert stored() == before


def test_a_label_of_64_characters_is_accepted(alice_api):
    response = alice_api.post("/api/v1/devices", {"installation_id": "tablet", "label": "l" * 64}, format="json")

    assert response.status_code == 201
    assert response.json()["label"] == "l" * 64


# --- Integers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        (1, {"signals": [{"type": "heartbeat", "seq": 2**64}]}, "signals.0.seq"),
        (1, {"signals": [{"type": "heartbeat", "seq": 10**40}]}, "signals.0.seq"),
        (2, {"status": "away", "duration_seconds": 2**64}, "duration_seconds"),
        (2, {"status": "away", "duration_seconds": -(2**64)}, "duration_seconds"),
    ],
)
def test_an_integer_beyond_64_bits_is_refused(alice_api, device, stored, endpoint, body, field):
    before = stored()
    method, path = write_endpoints(device)[endpoint]

    assert_rejected(getattr(alice_api, method)(path, body, format="json"), field)
    assert stored() == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=99999999999999999999999", "limit"),
        ("offset=-5", "offset"),
        ("offset=ten", "offset"),
        ("offset=9223372036854775808", "offset"),
        ("limit=1%00", "limit"),
    ],
)
def test_a_peers_page_limit_or_offset_that_is_no_valid_count_is_refused(alice_api, bob, query, field):
    assert_rejected(alice_api.get(f"/api/v1/peers?{query}"), field)


def test_a_peers_page_offset_past_the_end_is_an_empty_page(alice_api, bob):
    body = alice_api.get("/api/v1/peers?offset=9223372036854775807").json()

    assert body["results"] == []
    assert body["count"] == 1


# --- Times ---------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def put_calendar(api, start: str, end: str):
    return api.put("/api/v1/me/calendar", {"blocks": [{"start": start, "end": end}]}, format="json")


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T01:00:00Z"),
        ("2000-01-01T09:00:00Z", "2000-01-01T10:00:00Z"),
        (iso(T0 - MAX_CALENDAR_BEHIND - timedelta(hours=1)), iso(T0 - MAX_CALENDAR_BEHIND - timedelta(seconds=1))),
    ],
    ids=["year-1", "year-2000", "just-too-long-ago"],
)
def test_a_calendar_block_that_ended_too_long_ago_is_refused(alice_api, stored, clock, start, end):
    before = stored()

    fields = assert_rejected(put_calendar(alice_api, start, end), "blocks.0.end")

    assert fields["blocks.0.end"] == ["A busy block must end within the last 31 days or later."]
    assert stored() == before


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("9999-12-30T00:00:00Z", "9999-12-31T23:59:59Z"),
        ("2100-01-01T09:00:00Z", "2100-01-01T10:00:00Z"),
        (iso(T0 + MAX_CALENDAR_AHEAD + timedelta(seconds=1)), iso(T0 + MAX_CALENDAR_AHEAD + timedelta(hours=1))),
    ],
    ids=["year-9999", "year-2100", "just-too-far-ahead"],
)
def test_a_calendar_block_starting_too_far_ahead_is_refused(alice_api, stored, clock, start, end):
    before = stored()

    fields = assert_rejected(put_calendar(alice_api, start, end), "blocks.0.start")

    assert fields["blocks.0.start"] == ["A busy block must start within a year from now."]
    assert stored() == before


def test_a_calendar_block_at_the_bounds_is_accepted(alice_api, clock):
    recent = (T0 - MAX_CALENDAR_BEHIND - timedelta(hours=1), T0 - MAX_CALENDAR_BEHIND)
    ahead = (T0 + MAX_CALENDAR_AHEAD, T0 + MAX_CALENDAR_AHEAD + timedelta(hours=1))

    response = alice_api.put(
        "/api/v1/me/calendar",
        {"blocks": [{"start": iso(s), "end": iso(e)} for s, e in (recent, ahead)]},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert CalendarBlock.objects.count() == 2


@pytest.mark.parametrize(
    "moment",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
        "2026-11-25T12:00:00+25:00",  # no such offset
        "+002026-11-25T12:00:00Z",  # expanded years
        "2026-13-01T12:00:00Z",
        "2026-11-25T12:00:00",  # no offset
    ],
)
@pytest.mark.parametrize("field", ["until", "blocks.0.start", "blocks.0.end"])
def test_an_absurd_time_is_refused_naming_the_field(alice_api, stored, clock, moment, field):
    before = stored()
    if field == "until":
        response = alice_api.put("/api/v1/me/status", {"status": "away", "until": moment}, format="json")
    else:
        good = {"start": iso(T0), "end": iso(T0 + timedelta(hours=1))}
        block = {**good, field.rsplit(".", 1)[1]: moment}
        response = alice_api.put("/api/v1/me/calendar", {"blocks": [block]}, format="json")

    assert_rejected(response, field)
    assert stored() == before
