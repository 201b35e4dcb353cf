"""The WSGI lane: lone heartbeats answered before Django, everything else passed on intact."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from presence import services
from presence.fastlane import HeartbeatLane
from presence.models import Device
from sparks_site.wsgi import django_application
from tests.wsgi_calls import wsgi_call as call

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("keep_the_test_transaction")]


@pytest.fixture
def token(alice) -> str:
    return Token.objects.create(user=alice).key


@pytest.fixture
def device(token) -> str:
    _, _, body = call("/api/v1/devices", {"installation_id": "install-1"}, token)
    call(f"/api/v1/devices/{body['device_id']}/signals", {"signals": [{"type": "heartbeat", "seq": 1}]}, token)
    return body["device_id"]


def test_a_lone_heartbeat_is_answered_in_the_lane_without_the_database(token, device):
    with CaptureQueriesContext(connection) as queries:
        status, headers, body = call(
            f"/api/v1/devices/{device}/signals", {"signals": [{"type": "heartbeat", "seq": 2}]}, token
        )

    assert status == "202 Accepted"
    assert queries.captured_queries == []
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert (body["status"], body["signals_applied"], body["signals_ignored"]) == ("available", 1, 0)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_lanes_answer_carries_the_headers_django_would_give_it(token, device, scheme):
    beat = {"signals": [{"type": "heartbeat", "seq": 2}]}
    quick = call(f"/api/v1/devices/{device}/signals", beat, token, **{"wsgi.url_scheme": scheme})
    beat["signals"][0]["seq"] = 3
    full = call(f"/api/v1/devices/{device}/signals", beat, token, app=django_application, **{"wsgi.url_scheme": scheme})

    assert (quick[0], full[0]) == ("202 Accepted", "202 Accepted")
    quick[1].pop("Content-Length"), full[1].pop("Content-Length")  # the bodies' own
    assert quick[1] == full[1]
    assert ("Strict-Transport-Security" in quick[1]) is (scheme == "https")


def test_behind_a_proxy_the_lane_reads_the_scheme_from_the_proxys_header_as_django_does(settings, token, device):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    lane = HeartbeatLane(django_application)  # reads the settings once, as at startup
    path = f"/api/v1/devices/{device}/signals"

    with CaptureQueriesContext(connection) as queries:
        secure = call(
            path, {"signals": [{"type": "heartbeat", "seq": 2}]}, token, app=lane, HTTP_X_FORWARDED_PROTO="https"
        )
        plain = call(
            path, {"signals": [{"type": "heartbeat", "seq": 3}]}, token, app=lane, HTTP_X_FORWARDED_PROTO="http"
        )

    assert queries.captured_queries == []  # both answered in the lane
    assert (secure[0], plain[0]) == ("202 Accepted", "202 Accepted")
    assert "Strict-Transport-Security" in secure[1]
    assert "Strict-Transport-Security" not in plain[1]


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example:8000", ""])
def test_a_foreign_host_is_refused_by_the_lane_as_by_django(token, device, host):
    beat = {"signals": [{"type": "heartbeat", "seq": 2}]}

    lane = call(f"/api/v1/devices/{device}/signals", beat, token, HTTP_HOST=host)
    django = call(f"/api/v1/devices/{device}/signals", beat, token, app=django_application, HTTP_HOST=host)

    assert lane == django
    assert lane[0].startswith("400")
    assert lane[2] == {"error": "bad_request", "detail": "Bad request."}
    assert hot_seq(device) == 1  # nothing of it was applied


def hot_seq(device: str) -> int:
    from presence import hot

    user_id = Device.objects.get(device_id=device).user_id
    return hot.HotUser.parse(hot.store().read(user_id)).devices[device].seq


def test_with_https_redirects_on_plain_http_goes_to_django_for_its_redirect(settings, token, device):
    settings.SECURE_SSL_REDIRECT = True
    reached: list[dict] = []

    def django_stand_in(environ, start_response):
        reached.append(environ)
        start_response("301 Moved Permanently", [("Location", "https://127.0.0.1/")])
        return [b""]

    lane = HeartbeatLane(django_stand_in)
    beat = {"signals": [{"type": "heartbeat", "seq": 2}]}

    plain = call(f"/api/v1/devices/{device}/signals", beat, token, app=lane)
    secure = call(f"/api/v1/devices/{device}/signals", beat, token, app=lane, **{"wsgi.url_scheme": "https"})

    assert plain[0] == "301 Moved Permanently"
    assert len(reached) == 1
    assert secure[0] == "202 Accepted"


def test_any_other_signal_reaches_django_with_its_body(token, device):
    status, _, body = call(
        f"/api/v1/devices/{device}/signals", {"signals": [{"type": "visibility", "value": "hidden", "seq": 2}]}, token
    )

    assert status.startswith("202")
    assert body["status"] == "away"
    services.persist_pending()
    assert Device.objects.get(device_id=device).visibility == "hidden"


def test_a_bad_heartbeat_gets_djangos_full_validation(token, device):
    status, _, body = call(f"/api/v1/devices/{device}/signals", {"signals": [{"type": "heartbeat", "seq": "x"}]}, token)

    assert status.startswith("400")
    assert "signals.0.seq" in body["fields"]


def test_an_unknown_token_is_refused_by_django(device):
    status, _, body = call(f"/api/v1/devices/{device}/signals", {"signals": [{"type": "heartbeat", "seq": 2}]}, "nope")

    assert status.startswith("401")
    assert body["error"] == "authentication_failed"


def test_other_paths_pass_through(token):
    status, _, body = call("/api/v1/me/presence", None, token, method="GET")

    assert status.startswith("200")
    assert body["status"] == "offline"


@pytest.fixture
def one_signal_a_minute(settings) -> None:
    settings.PRESENCE_RATE_LIMIT_DEVICE = (1, 60.0)


def test_a_lone_heartbeat_over_the_limit_is_refused_in_the_lane_with_retry_after(one_signal_a_minute, token, device):
    # The device's first heartbeat (seq 1, in its fixture) was the one of this minute.
    second = {"signals": [{"type": "heartbeat", "seq": 2}]}

    status, headers, body = call(f"/api/v1/devices/{device}/signals", second, token)

    assert status == "429 Too Many Requests"
    assert headers["Retry-After"] == str(body["retry_after"])
    assert 59 <= body["retry_after"] <= 60
    assert (body["error"], headers["Content-Type"]) == ("rate_limited", "application/json")
