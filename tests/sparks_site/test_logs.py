"""Structured logs: a JSON line per request and per Celery task, never a token or a body."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.test import Client

from presence import tasks
from sparks_site.logs import JsonFormatter
from tests.real_processes import eventually, runserver

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_a_request_is_one_json_line_with_method_path_status_duration_and_user(alice, alice_api):
    lines = read_lines(lambda: alice_api.get("/api/v1/me/presence"))

    assert len(lines) == 1
    line = lines[0]
    assert line["logger"] == "sparks.request"
    assert (line["method"], line["path"], line["status"], line["user_id"]) == (
        "GET",
        "/api/v1/me/presence",
        200,
        alice.pk,
    )
    assert isinstance(line["duration_ms"], float)
    assert line["level"] == "INFO"
    assert line["time"].endswith("Z")


@pytest.mark.django_db
def test_an_anonymous_request_is_logged_without_a_user():
    lines = read_lines(lambda: Client().get("/api/v1/config"))

    assert [(line["path"], line["status"], line["user_id"]) for line in lines] == [("/api/v1/config", 200, None)]


@pytest.mark.django_db
def test_a_request_log_never_holds_a_token_a_query_string_or_a_body(alice_api):
    secret = "installation-secret-0042"

    def send() -> None:
        alice_api.post("/api/v1/devices?token=query-token-0042", {"installation_id": secret}, format="json")

    lines = read_lines(send)
    token = alice_api._credentials["HTTP_AUTHORIZATION"].split()[1]

    text = json.dumps(lines)
    assert lines[0]["path"] == "/api/v1/devices"
    assert secret not in text
    assert "query-token-0042" not in text
    assert token not in text


def test_operations_probes_are_not_logged():
    lines = read_lines(lambda: Client().get("/healthz"))

    assert lines == []


@pytest.mark.django_db
def test_a_celery_task_is_one_json_line_with_name_id_state_and_duration():
    lines = read_lines(lambda: tasks.flush_device_activity.delay())

    task_lines = [line for line in lines if line["logger"] == "sparks.task"]
    assert len(task_lines) == 1
    line = task_lines[0]
    assert (line["task"], line["state"]) == ("presence.tasks.flush_device_activity", "SUCCESS")
    assert line["task_id"]
    assert isinstance(line["duration_ms"], float)


def test_the_json_formatter_keeps_an_exception_on_its_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("sparks.test", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())

    line = json.loads(JsonFormatter().format(record))

    assert line["message"] == "failed x"
    assert "ValueError: boom" in line["exception"]


@pytest.mark.parametrize(("debug", "expected"), [("0", "json"), ("1", "text")])
def test_logs_are_json_unless_debug(debug, expected):
    env = {key: value for key, value in os.environ.items() if key != "LOG_FORMAT"}
    env.update(DEBUG=debug, SECRET_KEY="test-only-secret-key", DJANGO_SETTINGS_MODULE="sparks_site.settings")
    code = (
        "from django.conf import settings; "
        "print(settings.LOG_FORMAT, settings.LOGGING['handlers']['console']['formatter'])"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=BASE_DIR, capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.split() == [expected, expected]


def test_make_run_logs_one_line_per_request(tmp_path):
    """`make run`'s server (daphne's runserver, DEBUG, text lines) writes one line per request: a
    200, a 401 and a 404 each appear once, as the project's request line."""
    env = {key: value for key, value in os.environ.items() if key not in ("LOG_FORMAT", "REDIS_URL")}
    env.update(
        DEBUG="1",
        SECRET_KEY="test-only-secret-key",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        BEAT_IN_PROCESS="0",
        CELERY_BROKER_URL="memory://",
        PYTHONUNBUFFERED="1",
    )
    with runserver(env, tmp_path / "runserver.log") as server:
        paths = {"/api/v1/config": 200, "/api/v1/me/presence": 401, "/no-such-page": 404}
        for path, status in paths.items():
            assert httpx.get(f"{server.base_url}{path}", timeout=10).status_code == status
        eventually("the last request is logged", lambda: "/no-such-page" in server.log(), 30, about=server.log)
        time.sleep(0.5)  # anything else the server was going to write about these requests

    lines = server.log().splitlines()
    for path, status in paths.items():
        mentions = [line for line in lines if path in line]
        assert len(mentions) == 1, "\n".join(lines)
        assert f"sparks.request: GET {path} {status}" in mentions[0]


# --- Helpers ------------------------------------------------------------------------------------


def read_lines(action) -> list[dict]:
    """Run `action` with the request and task loggers writing JSON to a buffer; the parsed lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger("sparks.request"), logging.getLogger("sparks.task")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        action()
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]
