"""The WSGI lane: lone heartbeats answered before Django, everything else passed on intact."""

from __future__ import annotations

import io
import json
import sys

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from presence import services
from presence.fastlane import HeartbeatLane
from presence.models import Device
from sparks_site.wsgi import application, django_application

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keep_the_test_transactions_connection():
    """Django's handler closes old connections around each request, which would end the test's
    transaction; its test client turns that off the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def call(
    path: str, body: dict | None, token: str | None, method: str = "POST", app=application, **extra: str
) -> tuple[str, dict, dict]:
    raw = json.dumps(body).encode() if body is not None else b""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }
    environ.update(extra)
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Token {token}"
    started: list = []
    content = b"".join(app(environ, lambda status, headers, *_: started.extend((status, dict(headers)))))
    return started[0], started[1], json.loads(content) if content else {}


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
