"""The user's own endpoints over real HTTP: /config, /me/presence, /me/status, /me/calendar, /me/privacy.

Every test goes through DRF token authentication and the URL conf, on PostgreSQL. Time-driven
behaviour (a manual status expiring, a calendar block starting) is checked with a frozen clock and
a plain read afterwards: no sweep runs, so the read itself has to notice that time has passed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import time_machine

from orgs.models import PresencePolicy
from presence.models import CalendarBlock, ManualStatus, PresenceState
from tests.factories import UserFactory
from tests.presence.api_shapes import MY_PRESENCE_KEYS as PRESENCE_KEYS

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CONFIG_KEYS = {
    "aggregator",
    "server_dispatch",
    "sse",
    "device_timeout_seconds",
    "heartbeat_interval_seconds",
    "idle_timeout_seconds",
}
ME_ENDPOINTS = [
    ("get", "/api/v1/me/presence", None),
    ("get", "/api/v1/me/status", None),
    ("put", "/api/v1/me/status", {"status": "busy"}),
    ("delete", "/api/v1/me/status", None),
    ("get", "/api/v1/me/calendar", None),
    ("put", "/api/v1/me/calendar", {"blocks": []}),
    ("get", "/api/v1/me/privacy", None),
    ("patch", "/api/v1/me/privacy", {"share_externally": False}),
]


# --- Helpers ----------------------------------------------------------------------------------


@pytest.fixture
def clock():
    """A frozen clock at T0; `clock.shift(...)` moves it."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def register(api, installation_id: str = "laptop-install") -> str:
    response = api.post("/api/v1/devices", {"installation_id": installation_id}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()["device_id"]


def presence(api) -> dict:
    response = api.get("/api/v1/me/presence")
    assert response.status_code == 200, response.content
    return response.json()


def put_status(api, **body):
    return api.put("/api/v1/me/status", body, format="json")


def put_calendar(api, blocks):
    return api.put("/api/v1/me/calendar", {"blocks": blocks}, format="json")


def patch_privacy(api, **body):
    return api.patch("/api/v1/me/privacy", body, format="json")


def block(start: datetime, end: datetime) -> dict:
    return {"start": iso(start), "end": iso(end)}


def assert_validation_error(response, *field_paths: str) -> dict:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["detail"] == "Invalid input."
    for path in field_paths:
        assert path in body["fields"], body["fields"]
        assert body["fields"][path], body["fields"]
        assert all(isinstance(message, str) and message for message in body["fields"][path])
    return body["fields"]


def set_policy(organization, **changes) -> None:
    assert PresencePolicy.objects.filter(organization=organization).update(**changes) == 1


# --- /config ------------------------------------------------------------------------------------


def test_config_answers_anonymous_callers_with_the_deployment_settings(api_for, settings):
    settings.PRESENCE_USE_AGGREGATOR = True
    settings.PRESENCE_SERVER_DISPATCH = False
    settings.PRESENCE_USE_SSE = False
    settings.PRESENCE_DEVICE_TIMEOUT_SECONDS = 120
    settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS = 30
    settings.PRESENCE_IDLE_TIMEOUT_SECONDS = 300

    response = api_for(None).get("/api/v1/config")

    assert response.status_code == 200
    assert response.json() == {
        "aggregator": True,
        "server_dispatch": False,
        "sse": False,
        "device_timeout_seconds": 120,
        "heartbeat_interval_seconds": 30,
        "idle_timeout_seconds": 300,
    }


def test_config_follows_changed_presence_settings(api_for, settings):
    settings.PRESENCE_USE_AGGREGATOR = False
    settings.PRESENCE_SERVER_DISPATCH = True
    settings.PRESENCE_USE_SSE = True
    settings.PRESENCE_DEVICE_TIMEOUT_SECONDS = 90
    settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS = 20
    settings.PRESENCE_IDLE_TIMEOUT_SECONDS = 600

    body = api_for(None).get("/api/v1/config").json()

    assert set(body) == CONFIG_KEYS
    assert body == {
        "aggregator": False,
        "server_dispatch": True,
        "sse": True,
        "device_timeout_seconds": 90,
        "heartbeat_interval_seconds": 20,
        "idle_timeout_seconds": 600,
    }


def test_config_gives_a_member_the_device_timeout_of_their_organization_policy(
    alice_api, api_for, organization, settings
):
    settings.PRESENCE_DEVICE_TIMEOUT_SECONDS = 120
    set_policy(organization, device_timeout_seconds=45)

    assert alice_api.get("/api/v1/config").json()["device_timeout_seconds"] == 45
    assert api_for(None).get("/api/v1/config").json()["device_timeout_seconds"] == 120


def test_config_gives_a_member_the_server_default_when_the_policy_sets_no_timeout(alice_api, organization, settings):
    settings.PRESENCE_DEVICE_TIMEOUT_SECONDS = 150
    set_policy(organization, device_timeout_seconds=None)

    assert alice_api.get("/api/v1/config").json()["device_timeout_seconds"] == 150


def test_config_gives_a_user_outside_any_organization_the_server_default(api_for, settings):
    settings.PRESENCE_DEVICE_TIMEOUT_SECONDS = 100
    loner = UserFactory(username="loner")

    response = api_for(loner).get("/api/v1/config")

    assert response.status_code == 200
    assert response.json()["device_timeout_seconds"] == 100


# --- /me/presence ---------------------------------------------------------------------------------


def test_presence_of_a_user_without_devices_is_offline_with_no_live_device(alice_api):
    body = presence(alice_api)

    assert set(body) == PRESENCE_KEYS
    assert body == {
        "status": "offline",
        "activity": "offline",
        "status_msg": None,
        "last_active": None,
        "last_active_ago": None,
        "currently_active": False,
        "reason": "no_live_device",
        "status_until": None,
    }


def test_registering_a_device_makes_the_user_available_and_currently_active(alice_api, clock):
    register(alice_api)

    body = presence(alice_api)

    assert body == {
        "status": "available",
        "activity": "available",
        "status_msg": None,
        "last_active": iso(T0),
        "last_active_ago": 0,
        "currently_active": True,
        "reason": "device_active",
        "status_until": None,
    }


def test_last_active_ago_counts_milliseconds_since_the_last_activity(alice_api, clock):
    register(alice_api)
    clock.shift(timedelta(seconds=30, milliseconds=250))

    body = presence(alice_api)

    assert body["last_active"] == iso(T0)
    assert body["last_active_ago"] == 30250
    assert isinstance(body["last_active_ago"], int)
    assert body["currently_active"] is True


def test_currently_active_ends_a_minute_after_the_last_activity(alice_api, clock):
    register(alice_api)
    clock.shift(timedelta(seconds=61))

    body = presence(alice_api)

    assert body["status"] == "available"
    assert body["currently_active"] is False
    assert body["last_active_ago"] == 61000


# --- /me/status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "activity"),
    [
        ("available", "available"),
        ("busy", "busy"),
        ("away", "away"),
        ("dnd", "do_not_disturb"),
        ("offline", "offline"),
    ],
)
def test_a_manual_status_with_a_live_device_gives_that_status(alice_api, status, activity):
    register(alice_api)

    response = put_status(alice_api, status=status)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == status
    assert response.json()["activity"] == activity
    reason = "appear_offline" if status == "offline" else "manual_status"
    assert response.json()["reason"] == reason
    read = presence(alice_api)
    assert (read["status"], read["activity"], read["reason"]) == (status, activity, reason)


def test_the_stored_presence_names_the_new_rule_even_when_the_status_looks_the_same(alice, alice_api, clock):
    register(alice_api)
    clock.shift(timedelta(seconds=10))

    put_status(alice_api, status="available")  # available already, from the device

    row = PresenceState.objects.get(user=alice)
    assert (row.status, row.reason) == ("available", "manual_status")
    assert row.changed_at == T0  # what colleagues see did not change


def test_appear_offline_hides_activity_after_it_was_set(alice_api, clock):
    device_id = register(alice_api)
    clock.shift(timedelta(seconds=10))
    assert put_status(alice_api, status="offline").status_code == 200
    clock.shift(timedelta(seconds=10))
    alice_api.post(
        f"/api/v1/devices/{device_id}/signals",
        {"signals": [{"type": "activity", "value": "active", "seq": 1}]},
        format="json",
    )

    body = presence(alice_api)

    assert body["status"] == "offline"
    assert body["currently_active"] is False
    # Activity after the user chose to appear offline is not shown.
    assert body["last_active"] == iso(T0 + timedelta(seconds=10))


def test_the_manual_message_becomes_the_status_message(alice_api):
    register(alice_api)

    response = put_status(alice_api, status="away", message="At lunch, back at 13:00")

    assert response.json()["status_msg"] == "At lunch, back at 13:00"
    assert presence(alice_api)["status_msg"] == "At lunch, back at 13:00"
    assert alice_api.get("/api/v1/me/status").json()["message"] == "At lunch, back at 13:00"


def test_get_status_returns_the_manual_status_that_was_set(alice_api, clock):
    register(alice_api)
    put_status(alice_api, status="busy", message="Focus", duration_seconds=3600)

    response = alice_api.get("/api/v1/me/status")

    assert response.status_code == 200
    assert response.json() == {
        "status": "busy",
        "message": "Focus",
        "until": iso(T0 + timedelta(hours=1)),
        "set_at": iso(T0),
    }


def test_get_status_is_404_when_none_was_set(alice_api):
    response = alice_api.get("/api/v1/me/status")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_a_manual_status_for_a_duration_expires_on_read_without_a_sweep(alice_api, clock):
    register(alice_api)
    put_status(alice_api, status="busy", message="Focus", duration_seconds=60)

    clock.shift(timedelta(seconds=59))
    assert presence(alice_api)["status"] == "busy"
    assert alice_api.get("/api/v1/me/status").status_code == 200

    clock.shift(timedelta(seconds=1))
    # Nothing recomputed the stored decision since: only the read can notice the expiry.
    assert PresenceState.objects.get(user__username="alice").status == "busy"
    body = presence(alice_api)
    assert body["status"] == "available"
    assert body["reason"] == "device_active"
    assert body["status_msg"] is None
    assert alice_api.get("/api/v1/me/status").status_code == 404


def test_a_manual_status_until_a_time_expires_at_that_time(alice_api, clock):
    register(alice_api)
    until = T0 + timedelta(seconds=90)
    response = put_status(alice_api, status="dnd", until=iso(until))
    assert response.status_code == 200, response.content
    assert alice_api.get("/api/v1/me/status").json()["until"] == iso(until)

    clock.shift(timedelta(seconds=89))
    assert presence(alice_api)["status"] == "dnd"

    clock.shift(timedelta(seconds=1))
    body = presence(alice_api)
    assert (body["status"], body["reason"]) == ("available", "device_active")
    assert alice_api.get("/api/v1/me/status").status_code == 404


def test_until_with_a_non_utc_offset_is_the_same_instant(alice_api, clock):
    register(alice_api)
    until = (T0 + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=2)))

    response = put_status(alice_api, status="busy", until=until.isoformat())

    assert response.status_code == 200, response.content
    assert alice_api.get("/api/v1/me/status").json()["until"] == iso(T0 + timedelta(minutes=30))


def test_a_manual_status_without_until_does_not_expire(alice_api, clock):
    register(alice_api)
    put_status(alice_api, status="away")
    clock.shift(timedelta(days=30))
    register(alice_api)  # the same installation again: live again

    body = presence(alice_api)

    assert (body["status"], body["reason"]) == ("away", "manual_status")
    assert alice_api.get("/api/v1/me/status").json()["until"] is None


def test_a_new_manual_status_replaces_the_previous_one(alice_api):
    register(alice_api)
    put_status(alice_api, status="busy", message="Focus", duration_seconds=600)

    put_status(alice_api, status="away")

    body = alice_api.get("/api/v1/me/status").json()
    assert (body["status"], body["message"], body["until"]) == ("away", "", None)
    assert presence(alice_api)["status_msg"] is None


def test_delete_status_clears_the_manual_status(alice_api):
    register(alice_api)
    put_status(alice_api, status="dnd", message="Do not call")

    response = alice_api.delete("/api/v1/me/status")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["reason"]) == ("available", "device_active")
    assert response.json()["status_msg"] is None
    assert alice_api.get("/api/v1/me/status").status_code == 404
    assert presence(alice_api)["status"] == "available"


def test_a_manual_status_survives_while_offline_and_applies_when_a_device_registers(alice_api):
    response = put_status(alice_api, status="busy", message="Travelling")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["reason"]) == ("offline", "no_live_device")
    assert alice_api.get("/api/v1/me/status").json()["status"] == "busy"

    register(alice_api)

    body = presence(alice_api)
    assert (body["status"], body["reason"], body["status_msg"]) == ("busy", "manual_status", "Travelling")


def test_a_manual_status_survives_a_device_signing_out_and_in_again(alice_api):
    device_id = register(alice_api)
    put_status(alice_api, status="away")
    assert alice_api.delete(f"/api/v1/devices/{device_id}").status_code == 204
    assert presence(alice_api)["status"] == "offline"

    register(alice_api)

    assert presence(alice_api)["status"] == "away"


def test_manual_dnd_stays_dnd_during_a_call(alice_api):
    device_id = register(alice_api)
    put_status(alice_api, status="dnd")

    response = alice_api.post(
        f"/api/v1/devices/{device_id}/signals",
        {"signals": [{"type": "call", "value": "start", "seq": 1}]},
        format="json",
    )

    assert response.status_code == 202, response.content
    body = presence(alice_api)
    assert (body["status"], body["activity"], body["reason"]) == ("dnd", "in_call", "manual_dnd_during_call")


def test_a_call_overrides_a_manual_status_other_than_dnd(alice_api):
    device_id = register(alice_api)
    put_status(alice_api, status="away")

    alice_api.post(
        f"/api/v1/devices/{device_id}/signals",
        {"signals": [{"type": "call", "value": "start", "seq": 1}]},
        format="json",
    )

    body = presence(alice_api)
    assert (body["status"], body["activity"], body["reason"]) == ("busy", "in_call", "in_call")


# --- /me/status validation ------------------------------------------------------------------------


def test_put_status_rejects_an_unknown_status(alice_api):
    fields = assert_validation_error(put_status(alice_api, status="sleeping"), "status")
    assert set(fields) == {"status"}


def test_put_status_requires_a_status(alice_api):
    assert_validation_error(put_status(alice_api, message="hello"), "status")


def test_put_status_rejects_a_message_longer_than_280_characters(alice_api):
    fields = assert_validation_error(put_status(alice_api, status="busy", message="x" * 281), "message")
    assert set(fields) == {"message"}


def test_put_status_accepts_a_message_of_exactly_280_characters(alice_api):
    response = put_status(alice_api, status="busy", message="x" * 280)

    assert response.status_code == 200
    assert alice_api.get("/api/v1/me/status").json()["message"] == "x" * 280


def test_put_status_rejects_until_in_the_past(alice_api, clock):
    fields = assert_validation_error(
        put_status(alice_api, status="busy", until=iso(T0 - timedelta(minutes=1))), "until"
    )
    assert set(fields) == {"until"}


def test_put_status_rejects_until_now(alice_api, clock):
    assert_validation_error(put_status(alice_api, status="busy", until=iso(T0)), "until")


def test_put_status_rejects_a_naive_until(alice_api, clock):
    naive = (T0 + timedelta(hours=1)).replace(tzinfo=None).isoformat()

    fields = assert_validation_error(put_status(alice_api, status="busy", until=naive), "until")

    assert "UTC offset" in fields["until"][0]


def test_put_status_rejects_until_more_than_a_year_ahead(alice_api, clock):
    assert_validation_error(put_status(alice_api, status="busy", until=iso(T0 + timedelta(days=400))), "until")


def test_put_status_rejects_an_until_that_is_not_a_time(alice_api):
    assert_validation_error(put_status(alice_api, status="busy", until="tomorrow"), "until")


def test_put_status_rejects_both_until_and_duration(alice_api, clock):
    response = put_status(alice_api, status="busy", until=iso(T0 + timedelta(hours=1)), duration_seconds=3600)

    assert_validation_error(response, "until", "duration_seconds")


def test_put_status_rejects_a_duration_under_a_minute(alice_api):
    assert_validation_error(put_status(alice_api, status="busy", duration_seconds=59), "duration_seconds")


@pytest.mark.parametrize("duration", [90.5, "soon", True])
def test_put_status_rejects_a_non_integer_duration(alice_api, duration):
    fields = assert_validation_error(
        put_status(alice_api, status="busy", duration_seconds=duration), "duration_seconds"
    )
    assert set(fields) == {"duration_seconds"}


def test_put_status_rejects_an_unknown_field(alice_api):
    fields = assert_validation_error(put_status(alice_api, status="busy", colour="red"), "colour")

    assert set(fields) == {"colour"}
    assert not ManualStatus.objects.filter(user__username="alice").exists()


def test_a_rejected_put_status_leaves_the_previous_manual_status(alice_api):
    register(alice_api)
    put_status(alice_api, status="away", message="Coffee")

    assert put_status(alice_api, status="busy", message="y" * 281).status_code == 400
    assert put_status(alice_api, status="dnd", duration_seconds=10).status_code == 400

    status = alice_api.get("/api/v1/me/status").json()
    assert (status["status"], status["message"], status["until"]) == ("away", "Coffee", None)
    body = presence(alice_api)
    assert (body["status"], body["status_msg"]) == ("away", "Coffee")


# --- /me/calendar -------------------------------------------------------------------------------


def test_calendar_is_empty_at_first(alice_api):
    response = alice_api.get("/api/v1/me/calendar")

    assert response.status_code == 200
    assert response.json() == {"blocks": []}


def test_put_calendar_replaces_every_block(alice_api, clock):
    first = block(T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    second = block(T0 + timedelta(hours=3), T0 + timedelta(hours=4))
    third = block(T0 + timedelta(days=1), T0 + timedelta(days=1, hours=1))
    assert put_calendar(alice_api, [second, first]).status_code == 200
    assert alice_api.get("/api/v1/me/calendar").json() == {"blocks": [first, second]}

    assert put_calendar(alice_api, [third]).status_code == 200

    assert alice_api.get("/api/v1/me/calendar").json() == {"blocks": [third]}


def test_a_calendar_block_in_progress_makes_the_user_busy(alice_api, clock):
    register(alice_api)

    response = put_calendar(alice_api, [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))])

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["reason"]) == ("busy", "calendar_busy")
    body = presence(alice_api)
    assert (body["status"], body["activity"], body["reason"]) == ("busy", "in_calendar_event", "calendar_busy")


def test_a_calendar_block_without_a_live_device_leaves_the_user_offline(alice_api, clock):
    put_calendar(alice_api, [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))])

    body = presence(alice_api)

    assert (body["status"], body["reason"]) == ("offline", "no_live_device")


def test_a_future_calendar_block_applies_when_its_time_comes(alice_api, clock):
    register(alice_api)
    put_calendar(alice_api, [block(T0 + timedelta(seconds=60), T0 + timedelta(hours=1))])
    assert presence(alice_api)["status"] == "available"

    clock.shift(timedelta(seconds=59))
    assert presence(alice_api)["status"] == "available"

    clock.shift(timedelta(seconds=1))
    assert PresenceState.objects.get(user__username="alice").reason == "device_active"
    body = presence(alice_api)
    assert (body["status"], body["activity"], body["reason"]) == ("busy", "in_calendar_event", "calendar_busy")


def test_a_calendar_block_stops_applying_when_it_ends(alice_api, clock):
    register(alice_api)
    put_calendar(alice_api, [block(T0 - timedelta(minutes=5), T0 + timedelta(seconds=90))])
    assert presence(alice_api)["status"] == "busy"

    clock.shift(timedelta(seconds=90))

    assert presence(alice_api)["reason"] == "device_active"


def test_an_empty_calendar_clears_every_block(alice_api, clock):
    register(alice_api)
    put_calendar(alice_api, [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))])

    response = put_calendar(alice_api, [])

    assert response.status_code == 200
    assert response.json()["status"] == "available"
    assert alice_api.get("/api/v1/me/calendar").json() == {"blocks": []}
    assert not CalendarBlock.objects.filter(user__username="alice").exists()


def test_put_calendar_rejects_a_block_that_ends_before_it_starts(alice_api, clock):
    blocks = [
        block(T0 + timedelta(hours=1), T0 + timedelta(hours=2)),
        block(T0 + timedelta(hours=3), T0 + timedelta(hours=2)),
    ]

    fields = assert_validation_error(put_calendar(alice_api, blocks), "blocks.1.end")

    assert set(fields) == {"blocks.1.end"}


def test_put_calendar_rejects_a_block_that_ends_when_it_starts(alice_api, clock):
    moment = T0 + timedelta(hours=1)

    assert_validation_error(put_calendar(alice_api, [block(moment, moment)]), "blocks.0.end")


def test_put_calendar_rejects_a_naive_time(alice_api, clock):
    blocks = [{"start": "2026-11-25T10:00:00", "end": iso(T0 + timedelta(hours=2))}]

    fields = assert_validation_error(put_calendar(alice_api, blocks), "blocks.0.start")

    assert set(fields) == {"blocks.0.start"}


def test_put_calendar_rejects_a_block_longer_than_31_days(alice_api, clock):
    blocks = [block(T0, T0 + timedelta(days=31, seconds=1))]

    assert_validation_error(put_calendar(alice_api, blocks), "blocks.0.end")


def test_put_calendar_accepts_a_block_of_exactly_31_days(alice_api, clock):
    assert put_calendar(alice_api, [block(T0, T0 + timedelta(days=31))]).status_code == 200


def test_put_calendar_rejects_more_than_1000_blocks(alice_api, clock):
    blocks = [block(T0 + timedelta(hours=i), T0 + timedelta(hours=i, minutes=30)) for i in range(1001)]

    fields = assert_validation_error(put_calendar(alice_api, blocks), "blocks")

    assert set(fields) == {"blocks"}


def test_put_calendar_accepts_1000_blocks(alice_api, clock):
    blocks = [block(T0 + timedelta(hours=i), T0 + timedelta(hours=i, minutes=30)) for i in range(1000)]

    assert put_calendar(alice_api, blocks).status_code == 200
    assert CalendarBlock.objects.filter(user__username="alice").count() == 1000


@pytest.mark.parametrize("blocks", ["2026-11-25T10:00:00Z", {"start": "2026-11-25T10:00:00Z"}, None, 3])
def test_put_calendar_rejects_blocks_that_are_not_a_list(alice_api, blocks):
    assert_validation_error(put_calendar(alice_api, blocks), "blocks")


def test_put_calendar_requires_blocks(alice_api):
    assert_validation_error(alice_api.put("/api/v1/me/calendar", {}, format="json"), "blocks")


def test_put_calendar_rejects_an_unknown_top_level_field(alice_api):
    response = alice_api.put("/api/v1/me/calendar", {"blocks": [], "source": "outlook"}, format="json")

    fields = assert_validation_error(response, "source")

    assert set(fields) == {"source"}


def test_put_calendar_rejects_an_unknown_field_in_a_block(alice_api, clock):
    blocks = [{**block(T0, T0 + timedelta(hours=1)), "title": "1:1"}]

    fields = assert_validation_error(put_calendar(alice_api, blocks), "blocks.0.title")

    assert set(fields) == {"blocks.0.title"}


def test_a_rejected_put_calendar_keeps_the_old_blocks(alice_api, clock):
    register(alice_api)
    old = [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))]
    put_calendar(alice_api, old)

    rejected = put_calendar(alice_api, [block(T0 + timedelta(hours=2), T0 + timedelta(hours=1))])

    assert rejected.status_code == 400
    assert alice_api.get("/api/v1/me/calendar").json() == {"blocks": old}
    assert presence(alice_api)["reason"] == "calendar_busy"


# --- /me/privacy ----------------------------------------------------------------------------------


def test_privacy_defaults(alice_api):
    response = alice_api.get("/api/v1/me/privacy")

    assert response.status_code == 200
    assert response.json() == {
        "use_calendar_busy": True,
        "include_microsoft_presence": False,
        "share_externally": False,
        "priority": None,
        "effective_priority": "calendar_first",
        "organization_allows": {
            "use_calendar_busy": True,
            "include_microsoft_presence": True,
            "share_externally": True,
            "appear_offline": True,
        },
    }


def test_privacy_effective_priority_defaults_to_the_organization_policy(alice_api, organization):
    set_policy(organization, default_priority="manual_first")

    body = alice_api.get("/api/v1/me/privacy").json()

    assert (body["priority"], body["effective_priority"]) == (None, "manual_first")


def test_privacy_organization_allows_mirrors_the_policy(alice_api, organization):
    set_policy(
        organization,
        allow_calendar=False,
        allow_microsoft=True,
        allow_external_dispatch=False,
        allow_appear_offline=False,
    )

    body = alice_api.get("/api/v1/me/privacy").json()

    assert body["organization_allows"] == {
        "use_calendar_busy": False,
        "include_microsoft_presence": True,
        "share_externally": False,
        "appear_offline": False,
    }


def test_patch_privacy_changes_one_field_and_keeps_the_others(alice_api):
    patch_privacy(alice_api, priority="manual_first")

    response = patch_privacy(alice_api, share_externally=True)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["share_externally"] is True
    assert body["priority"] == "manual_first"
    assert body["use_calendar_busy"] is True
    assert body["include_microsoft_presence"] is False
    assert alice_api.get("/api/v1/me/privacy").json() == body


def test_manual_first_lets_a_manual_status_win_over_a_calendar_block(alice_api, clock):
    register(alice_api)
    put_calendar(alice_api, [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))])
    put_status(alice_api, status="away")
    assert presence(alice_api)["reason"] == "calendar_busy"

    response = patch_privacy(alice_api, priority="manual_first")

    assert response.json()["effective_priority"] == "manual_first"
    body = presence(alice_api)
    assert (body["status"], body["reason"]) == ("away", "manual_status")


def test_calendar_first_lets_a_calendar_block_win_over_a_manual_status(alice_api, organization, clock):
    set_policy(organization, default_priority="manual_first")
    register(alice_api)
    put_calendar(alice_api, [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))])
    put_status(alice_api, status="available")
    assert presence(alice_api)["reason"] == "manual_status"

    patch_privacy(alice_api, priority="calendar_first")

    body = presence(alice_api)
    assert (body["status"], body["reason"]) == ("busy", "calendar_busy")


def test_a_null_priority_returns_to_the_organization_default(alice_api, organization, clock):
    set_policy(organization, default_priority="manual_first")
    register(alice_api)
    put_calendar(alice_api, [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))])
    put_status(alice_api, status="away")
    patch_privacy(alice_api, priority="calendar_first")
    assert presence(alice_api)["reason"] == "calendar_busy"

    response = patch_privacy(alice_api, priority=None)

    assert response.status_code == 200, response.content
    assert (response.json()["priority"], response.json()["effective_priority"]) == (None, "manual_first")
    assert alice_api.get("/api/v1/me/privacy").json()["priority"] is None
    assert presence(alice_api)["reason"] == "manual_status"


def test_turning_calendar_busy_off_makes_a_calendar_block_stop_counting(alice_api, clock):
    register(alice_api)
    put_calendar(alice_api, [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))])
    assert presence(alice_api)["status"] == "busy"

    response = patch_privacy(alice_api, use_calendar_busy=False)

    assert response.json()["use_calendar_busy"] is False
    body = presence(alice_api)
    assert (body["status"], body["reason"]) == ("available", "device_active")


def test_a_later_privacy_change_applies_to_presence_at_once(alice_api, clock):
    # Regression: once preferences were saved, a second PATCH recomputed with the old choices.
    register(alice_api)
    put_calendar(alice_api, [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))])
    patch_privacy(alice_api, share_externally=True)
    assert presence(alice_api)["reason"] == "calendar_busy"

    patch_privacy(alice_api, use_calendar_busy=False)

    assert presence(alice_api)["reason"] == "device_active"


def test_a_calendar_block_does_not_count_when_the_organization_forbids_the_calendar(alice_api, organization, clock):
    set_policy(organization, allow_calendar=False)
    register(alice_api)

    put_calendar(alice_api, [block(T0 - timedelta(minutes=10), T0 + timedelta(minutes=50))])

    assert presence(alice_api)["reason"] == "device_active"


@pytest.mark.parametrize(
    ("field", "policy_field"),
    [
        ("use_calendar_busy", "allow_calendar"),
        ("include_microsoft_presence", "allow_microsoft"),
        ("share_externally", "allow_external_dispatch"),
    ],
)
def test_enabling_an_option_the_organization_forbids_is_rejected(alice_api, organization, field, policy_field):
    set_policy(organization, **{policy_field: False})
    before = alice_api.get("/api/v1/me/privacy").json()

    fields = assert_validation_error(patch_privacy(alice_api, **{field: True}), field)

    assert set(fields) == {field}
    assert alice_api.get("/api/v1/me/privacy").json() == before


@pytest.mark.parametrize(
    ("field", "policy_field"),
    [
        ("use_calendar_busy", "allow_calendar"),
        ("include_microsoft_presence", "allow_microsoft"),
        ("share_externally", "allow_external_dispatch"),
    ],
)
def test_turning_off_an_option_the_organization_forbids_is_allowed(alice_api, organization, field, policy_field):
    set_policy(organization, **{policy_field: False})

    response = patch_privacy(alice_api, **{field: False})

    assert response.status_code == 200, response.content
    assert response.json()[field] is False
    assert alice_api.get("/api/v1/me/privacy").json()[field] is False


def test_patch_privacy_rejects_an_unknown_priority(alice_api):
    fields = assert_validation_error(patch_privacy(alice_api, priority="whatever_first"), "priority")

    assert set(fields) == {"priority"}
    assert alice_api.get("/api/v1/me/privacy").json()["priority"] is None


@pytest.mark.parametrize("value", ["maybe", 2, None, [True]])
def test_patch_privacy_rejects_a_non_boolean_value(alice_api, value):
    fields = assert_validation_error(patch_privacy(alice_api, share_externally=value), "share_externally")

    assert set(fields) == {"share_externally"}
    assert alice_api.get("/api/v1/me/privacy").json()["share_externally"] is False


def test_patch_privacy_rejects_an_unknown_field(alice_api):
    fields = assert_validation_error(patch_privacy(alice_api, share_internally=True), "share_internally")

    assert set(fields) == {"share_internally"}


def test_patch_privacy_rejects_writing_a_computed_field(alice_api):
    fields = assert_validation_error(patch_privacy(alice_api, effective_priority="manual_first"), "effective_priority")

    assert set(fields) == {"effective_priority"}
    assert alice_api.get("/api/v1/me/privacy").json()["effective_priority"] == "calendar_first"


# --- Authentication, classic mode, unknown paths -------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ME_ENDPOINTS)
def test_me_endpoints_answer_401_json_without_credentials(api_for, method, path, body):
    response = getattr(api_for(None), method)(path, body, format="json")

    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "not_authenticated"
    assert response.json()["detail"]
    assert response.has_header("WWW-Authenticate")


@pytest.mark.parametrize(("method", "path", "body"), ME_ENDPOINTS)
def test_me_endpoints_answer_401_json_with_a_wrong_token(api_for, method, path, body):
    client = api_for(None)
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)

    response = getattr(client, method)(path, body, format="json")

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


@pytest.mark.parametrize(("method", "path", "body"), ME_ENDPOINTS)
def test_me_endpoints_answer_409_in_classic_mode(alice_api, settings, method, path, body):
    settings.PRESENCE_USE_AGGREGATOR = False

    response = getattr(alice_api, method)(path, body, format="json")

    assert response.status_code == 409
    assert response.json()["error"] == "aggregator_disabled"
    assert response.json()["detail"]


def test_classic_mode_stores_nothing_sent_to_me_endpoints(alice_api, settings, clock):
    settings.PRESENCE_USE_AGGREGATOR = False

    put_status(alice_api, status="busy")
    put_calendar(alice_api, [block(T0, T0 + timedelta(hours=1))])
    patch_privacy(alice_api, share_externally=True)

    assert not ManualStatus.objects.filter(user__username="alice").exists()
    assert not CalendarBlock.objects.filter(user__username="alice").exists()
    settings.PRESENCE_USE_AGGREGATOR = True
    assert alice_api.get("/api/v1/me/privacy").json()["share_externally"] is False


def test_config_still_answers_in_classic_mode(alice_api, api_for, settings):
    settings.PRESENCE_USE_AGGREGATOR = False

    for client in (api_for(None), alice_api):
        response = client.get("/api/v1/config")
        assert response.status_code == 200
        assert response.json()["aggregator"] is False


@pytest.mark.parametrize("path", ["/api/v1/nonexistent", "/api/v1/me/mood", "/api/v1/me/presence/extra"])
def test_an_unknown_api_path_is_a_json_404(alice_api, api_for, path):
    for client in (api_for(None), alice_api):
        response = client.get(path)
        assert response.status_code == 404
        assert response["Content-Type"].startswith("application/json")
        assert response.json() == {"error": "not_found", "detail": "Not found."}


@pytest.mark.parametrize(
    "method,path,raw_body,field",
    [
        ("put", "/api/v1/me/status", '{"status": "busy\\ud800"}', "status"),
        ("patch", "/api/v1/me/privacy", '{"priority": "\\ud800"}', "priority"),
        ("patch", "/api/v1/me/privacy", '{"\\ud800": true}', "\\ud800"),
    ],
)
def test_a_lone_surrogate_echoed_in_an_error_is_a_400_naming_the_field(alice_api, method, path, raw_body, field):
    # JSON may carry "\ud800", which UTF-8 cannot encode: the error writes it as its escape.
    response = getattr(alice_api, method)(path, raw_body, content_type="application/json")

    fields = assert_validation_error(response, field)
    assert "\\ud800" in response.content.decode()
    assert fields[field]


def test_appearing_offline_is_refused_naming_the_policy_when_the_organization_forbids_it(alice_api, organization):
    register(alice_api)
    before = presence(alice_api)
    set_policy(organization, allow_appear_offline=False)

    response = put_status(alice_api, status="offline")

    assert response.status_code == 400
    assert "organization's presence policy" in response.json()["fields"]["status"][0]
    assert presence(alice_api)["status"] == before["status"] == "available"


def test_an_existing_appear_offline_stops_applying_when_the_organization_forbids_it(
    alice_api, organization, django_capture_on_commit_callbacks
):
    register(alice_api)
    assert put_status(alice_api, status="offline").json()["reason"] == "appear_offline"

    policy = PresencePolicy.objects.get(organization=organization)
    policy.allow_appear_offline = False
    with django_capture_on_commit_callbacks(execute=True):
        policy.save()  # as the admin saves it

    body = presence(alice_api)
    assert (body["status"], body["reason"]) == ("available", "device_active")
