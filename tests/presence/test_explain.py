"""`GET /api/v1/me/presence/explain` and `presence.explain.explain_user`: every rule of the engine
explained from inputs gathered as the engine's own are (hot store devices, the database's rest).

Devices are driven through the API (registration and signals), the slow inputs through their
services; the clock is frozen and moved, and no sweep runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from presence import explain, selectors, services
from presence.vocabulary import Priority, Status

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
URL = "/api/v1/me/presence/explain"


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def register(api, installation_id: str, label: str) -> str:
    response = api.post("/api/v1/devices", {"installation_id": installation_id, "label": label}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()["device_id"]


def signal(api, device_id: str, seq: int, kind: str, value: str | None = None) -> None:
    item = {"type": kind, "seq": seq} if value is None else {"type": kind, "value": value, "seq": seq}
    response = api.post(f"/api/v1/devices/{device_id}/signals", {"signals": [item]}, format="json")
    assert response.status_code == 202, response.content


def explained(api) -> dict:
    response = api.get(URL)
    assert response.status_code == 200, response.content
    return response.json()


def rule(body: dict, name: str) -> dict:
    return next(r for r in body["rules"] if r["rule"] == name)


def deciding_rules(body: dict) -> list[str]:
    return [r["rule"] for r in body["rules"] if r["applied"]]


# --- Rule 1: offline ---------------------------------------------------------------------------


def test_offline_names_the_last_device_and_how_long_ago_it_reported(alice_api, clock):
    laptop = register(alice_api, "laptop-install", "laptop")
    clock.shift(timedelta(seconds=30))
    register(alice_api, "phone-install", "phone")
    clock.shift(timedelta(seconds=240))

    body = explained(alice_api)

    assert body["status"] == "offline"
    assert body["reason"] == "no_live_device"
    assert body["summary"] == "offline: no device reported in the last 120 s (last: phone, 4 min ago)"
    assert deciding_rules(body) == ["device_liveness"]
    devices = {d["label"]: d for d in body["inputs"]["devices"]}
    assert devices["laptop"]["device_id"] == laptop
    assert devices["laptop"]["age_seconds"] == 270
    assert devices["phone"]["age_seconds"] == 240
    assert [d["state"] for d in body["inputs"]["devices"]] == ["offline", "offline"]
    assert not any(d["counted"] for d in body["inputs"]["devices"])


def test_offline_without_any_device_says_none_is_signed_in(alice_api):
    body = explained(alice_api)

    assert body["summary"] == "offline: no device is signed in"
    assert body["inputs"]["devices"] == []


def test_offline_after_every_device_reported_its_network_offline(alice_api, clock):
    laptop = register(alice_api, "laptop-install", "laptop")
    signal(alice_api, laptop, 1, "network", "offline")

    body = explained(alice_api)

    assert body["summary"] == "offline: every device reported that its network is offline"
    assert body["inputs"]["devices"][0]["network"] == "offline"


def test_the_rules_after_the_deciding_one_are_marked_not_reached(alice_api):
    body = explained(alice_api)

    assert [r["rule"] for r in body["rules"]] == [
        "appear_offline",
        "device_liveness",
        "call_or_meeting",
        "calendar_busy",
        "manual_status",
        "microsoft_presence",
        "idle_or_hidden",
        "available",
    ]
    assert [r["evaluated"] for r in body["rules"]] == [True, True, False, False, False, False, False, False]
    assert rule(body, "available")["note"] == explain.NOT_REACHED


# --- Rule 2: call or meeting -------------------------------------------------------------------


def test_a_call_explains_busy_and_names_the_device_in_it(alice_api, clock):
    laptop = register(alice_api, "laptop-install", "laptop")
    register(alice_api, "phone-install", "phone")
    signal(alice_api, laptop, 1, "call", "start")

    body = explained(alice_api)

    assert body["summary"] == "busy: laptop is in a call"
    assert deciding_rules(body) == ["call_or_meeting"]
    assert rule(body, "device_liveness") == {**rule(body, "device_liveness"), "applied": False, "evaluated": True}
    assert rule(body, "device_liveness")["note"] == "2 of 2 device(s) live"
    devices = {d["label"]: d for d in body["inputs"]["devices"]}
    assert devices["laptop"]["in_call"] is True
    assert devices["laptop"]["state"] == "busy"
    assert devices["phone"]["state"] == "online"


def test_a_meeting_explains_busy_in_a_meeting(alice_api, clock):
    laptop = register(alice_api, "laptop-install", "laptop")
    signal(alice_api, laptop, 1, "meeting", "start")

    body = explained(alice_api)

    assert (body["status"], body["activity"], body["reason"]) == ("busy", "in_meeting", "in_meeting")
    assert body["summary"] == "busy: laptop is in a meeting"


def test_manual_dnd_during_a_call_is_explained_as_kept(alice, alice_api, clock):
    laptop = register(alice_api, "laptop-install", "laptop")
    services.set_manual_status(alice, Status.DND, "Focus")
    signal(alice_api, laptop, 1, "call", "start")

    body = explained(alice_api)

    assert (body["status"], body["reason"]) == ("dnd", "manual_dnd_during_call")
    assert body["summary"] == "dnd: laptop is in a call; the manual do not disturb stays"
    assert body["inputs"]["manual"]["status"] == "dnd"


# --- Rule 3: calendar and manual, in both priorities --------------------------------------------


def test_calendar_first_makes_a_busy_block_win_over_the_manual_status(alice, alice_api, clock):
    register(alice_api, "laptop-install", "laptop")
    services.set_manual_status(alice, Status.AWAY, "Lunch")
    services.replace_calendar(alice, [(T0 - timedelta(minutes=10), T0 + timedelta(minutes=25))])

    body = explained(alice_api)

    assert (body["status"], body["reason"]) == ("busy", "calendar_busy")
    assert body["summary"] == (
        "busy: a calendar busy block ends in 25 min; calendar first, so it wins over the manual status away"
    )
    assert body["inputs"]["effective_priority"] == "calendar_first"
    assert [r["rule"] for r in body["rules"]][3:5] == ["calendar_busy", "manual_status"]
    assert deciding_rules(body) == ["calendar_busy"]
    assert rule(body, "manual_status")["evaluated"] is False
    assert body["inputs"]["calendar"]["in_busy_block"] is True
    assert body["inputs"]["calendar"]["current_block"] == {
        "start": "2026-11-25T08:50:00Z",
        "end": "2026-11-25T09:25:00Z",
    }


def test_manual_first_makes_the_manual_status_win_over_a_busy_block(alice, alice_api, clock):
    register(alice_api, "laptop-install", "laptop")
    services.update_preferences(alice, priority=Priority.MANUAL_FIRST)
    services.set_manual_status(alice, Status.AWAY, "Lunch", T0 + timedelta(hours=1))
    services.replace_calendar(alice, [(T0 - timedelta(minutes=10), T0 + timedelta(minutes=25))])

    body = explained(alice_api)

    assert (body["status"], body["reason"]) == ("away", "manual_status")
    assert body["summary"] == (
        'away: manual status "Lunch" for another 60 min; manual first, so it wins over the calendar busy block'
    )
    assert body["inputs"]["preferences"]["priority"] == "manual_first"
    assert [r["rule"] for r in body["rules"]][3:5] == ["manual_status", "calendar_busy"]
    assert deciding_rules(body) == ["manual_status"]
    assert rule(body, "calendar_busy")["evaluated"] is False
    assert body["inputs"]["manual"] == {
        "status": "away",
        "message": "Lunch",
        "until": "2026-11-25T10:00:00Z",
        "set_at": "2026-11-25T09:00:00Z",
        "in_force": True,
    }


def test_an_expired_manual_status_is_shown_as_no_longer_in_force(alice, alice_api, clock):
    laptop = register(alice_api, "laptop-install", "laptop")
    services.set_manual_status(alice, Status.BUSY, "", T0 + timedelta(minutes=5))
    clock.shift(timedelta(minutes=6))
    signal(alice_api, laptop, 1, "activity", "active")

    body = explained(alice_api)

    assert body["status"] == "available"
    assert body["inputs"]["manual"]["in_force"] is False
    assert rule(body, "manual_status")["note"] == "expired"


# --- Rule 4: Microsoft import -------------------------------------------------------------------


def test_a_fresh_microsoft_busy_import_explains_busy_with_its_age(alice, alice_api, clock):
    register(alice_api, "laptop-install", "laptop")
    services.update_preferences(alice, include_microsoft_presence=True)
    services.record_microsoft_presence(alice, "Busy", "InACall", T0 - timedelta(seconds=45))

    body = explained(alice_api)

    assert (body["status"], body["activity"], body["reason"]) == ("busy", "in_call", "microsoft_presence")
    assert body["summary"] == "busy: Microsoft reports Busy/InACall (imported 45 s ago)"
    assert deciding_rules(body) == ["microsoft_presence"]
    assert body["inputs"]["microsoft"] == {
        "availability": "Busy",
        "activity": "InACall",
        "observed_at": "2026-11-25T08:59:15Z",
        "age_seconds": 45,
        "fresh": True,
        "contributes": "busy",
        "echo": False,
    }


def test_a_microsoft_import_the_user_did_not_include_is_shown_but_not_used(alice, alice_api, clock):
    register(alice_api, "laptop-install", "laptop")
    services.record_microsoft_presence(alice, "Busy", "InACall", T0)

    body = explained(alice_api)

    assert body["status"] == "available"
    assert rule(body, "microsoft_presence")["note"] == "not included (user preference)"
    assert body["inputs"]["preferences"]["include_microsoft_presence"] is False


# --- Rules 5 and 6: away and available ----------------------------------------------------------


def test_hidden_and_idle_devices_explain_away_device_by_device(alice_api, clock):
    laptop = register(alice_api, "laptop-install", "laptop")
    phone = register(alice_api, "phone-install", "phone")
    signal(alice_api, laptop, 1, "visibility", "hidden")
    signal(alice_api, phone, 1, "activity", "idle")

    body = explained(alice_api)

    assert (body["status"], body["reason"]) == ("away", "all_devices_idle_or_hidden")
    # Both reported at the same (frozen) moment: named by label.
    assert body["summary"] == "away: every live device is idle or hidden (laptop: hidden; phone: idle)"
    assert deciding_rules(body) == ["idle_or_hidden"]
    assert {d["state"] for d in body["inputs"]["devices"]} == {"unavailable"}


def test_a_device_without_activity_for_the_idle_timeout_explains_away(alice_api, clock, settings):
    laptop = register(alice_api, "laptop-install", "laptop")
    clock.shift(timedelta(seconds=settings.PRESENCE_IDLE_TIMEOUT_SECONDS + 60))
    signal(alice_api, laptop, 1, "heartbeat")

    body = explained(alice_api)

    assert body["summary"] == "away: every live device is idle or hidden (laptop: no activity for 6 min)"
    assert body["inputs"]["devices"][0]["last_active_age_seconds"] == 360
    assert body["inputs"]["devices"][0]["age_seconds"] == 0


def test_an_active_device_explains_available(alice_api, clock):
    laptop = register(alice_api, "laptop-install", "laptop")
    clock.shift(timedelta(seconds=20))
    signal(alice_api, laptop, 1, "heartbeat")

    body = explained(alice_api)

    assert (body["status"], body["reason"]) == ("available", "device_active")
    assert body["summary"] == "available: laptop is active (last activity 20 s ago)"
    assert deciding_rules(body) == ["available"]
    assert all(r["evaluated"] for r in body["rules"])
    assert body["inputs"]["policy"]["device_timeout_seconds"] == 120


# --- What it reads and who may ask --------------------------------------------------------------


def test_the_explanation_agrees_with_the_presence_the_api_answers(alice_api, clock):
    laptop = register(alice_api, "laptop-install", "laptop")
    signal(alice_api, laptop, 1, "visibility", "hidden")

    presence = alice_api.get("/api/v1/me/presence").json()
    body = explained(alice_api)

    assert (body["status"], body["activity"], body["reason"]) == (
        presence["status"],
        presence["activity"],
        presence["reason"],
    )


def test_the_explanation_sees_heartbeats_the_database_has_not_been_told_of(alice, alice_api, clock, settings):
    settings.PRESENCE_DEVICE_FLUSH_SECONDS = 3600
    laptop = register(alice_api, "laptop-install", "laptop")
    clock.shift(timedelta(seconds=100))
    signal(alice_api, laptop, 1, "heartbeat")
    clock.shift(timedelta(seconds=100))

    body = explained(alice_api)

    assert alice.devices.get().last_seen_at == T0  # the database copy lags behind
    assert body["status"] == "available"  # live thanks to the heartbeat the hot store holds
    assert body["inputs"]["devices"][0]["age_seconds"] == 100


def test_only_the_users_own_devices_are_listed(alice_api, api_for, bob, clock):
    register(alice_api, "laptop-install", "laptop")
    register(api_for(bob), "bob-install", "bob's desktop")

    body = explained(alice_api)

    assert [d["label"] for d in body["inputs"]["devices"]] == ["laptop"]


def test_explaining_changes_nothing_stored(alice, alice_api, clock):
    register(alice_api, "laptop-install", "laptop")
    before = selectors.current_presence(alice)
    clock.shift(timedelta(minutes=10))

    explained(alice_api)

    stored = alice.presence_state
    stored.refresh_from_db()
    assert (stored.status, stored.valid_until) == (before.status, before.valid_until)


def test_explain_user_gives_the_admin_the_same_explanation(alice, alice_api, clock):
    register(alice_api, "laptop-install", "laptop")

    assert explain.explain_user(alice, timezone.now()) == explained(alice_api)


def test_explain_requires_authentication(api_for):
    response = api_for(None).get(URL)

    assert response.status_code == 401


def test_explain_answers_409_in_classic_mode(alice_api, settings):
    settings.PRESENCE_USE_AGGREGATOR = False

    response = alice_api.get(URL)

    assert response.status_code == 409
    assert response.json()["error"] == "aggregator_disabled"


def test_the_schema_documents_every_key_of_the_explanation(alice_api, clock):
    register(alice_api, "laptop-install", "laptop")
    body = explained(alice_api)

    schema = SchemaGenerator().get_schema(request=None, public=True)

    components = schema["components"]["schemas"]
    response = schema["paths"][URL]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    documented = components[response["$ref"].rsplit("/", 1)[1]]["properties"]
    assert set(documented) == set(body)
    inputs = documented["inputs"].get("allOf", [documented["inputs"]])[0]["$ref"]
    assert set(components[inputs.rsplit("/", 1)[1]]["properties"]) == set(body["inputs"])
