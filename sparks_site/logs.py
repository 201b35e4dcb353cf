"""Structured logs: one JSON object per line, one line per request and per Celery task.

`LOG_FORMAT=json` (the default when DEBUG is off) formats every record with `JsonFormatter`;
`text` (the default in DEBUG) keeps plain lines for people. What is logged of a request is its
method, path (never the query string: `?token=` and `?access_token=` travel there), status,
duration and the user's id; of a task its name, id, state and duration. Never a body, a header or
a task's arguments: they may carry tokens and personal data.

Not here: the operations endpoints (answered before this middleware, see `sparks_site.ops`) and
the signals the WSGI lane answers in front of Django (`presence.fastlane`, counted in
`/metrics` instead: a line per heartbeat would cost more than the heartbeat).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.functional import SimpleLazyObject, empty

request_logger = logging.getLogger("sparks.request")
task_logger = logging.getLogger("sparks.task")

# The attributes every LogRecord has; anything else on a record came as `extra=` and is logged.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time, level, logger, message, the `extra` fields, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _user_id(request) -> int | None:
    """The signed-in user's id, if authentication already ran; never evaluates a lazy user (that
    would cost a session query on requests that had no need of one)."""
    user = request.__dict__.get("user")
    if isinstance(user, SimpleLazyObject):
        user = user._wrapped
        if user is empty:
            return None
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


def log_request(request, status: int, started: float) -> None:
    request_logger.info(
        "%s %s %s",
        request.method,
        request.path,
        status,
        extra={
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "user_id": _user_id(request),
        },
    )


class RequestLogMiddleware:
    """One line per request, after the response (a streamed response: when it starts)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        started = time.perf_counter()
        response = self.get_response(request)
        log_request(request, response.status_code, started)
        return response

    async def __acall__(self, request):
        started = time.perf_counter()
        response = await self.get_response(request)
        log_request(request, response.status_code, started)
        return response


# --- Celery ------------------------------------------------------------------------------------

_task_started: dict[str, float] = {}


def task_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None:
        _task_started[task_id] = time.perf_counter()


def task_postrun(task_id: str | None = None, task=None, state: str | None = None, **_: Any) -> None:
    started = _task_started.pop(task_id, None) if task_id is not None else None
    name = getattr(task, "name", None)
    task_logger.info(
        "task %s %s",
        name,
        state,
        extra={
            "task": name,
            "task_id": task_id,
            "state": state,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1) if started is not None else None,
        },
    )


def keep_django_logging(**_: Any) -> None:
    """Celery configures logging only when nobody answers `setup_logging`: answering keeps the
    worker and beat on Django's LOGGING, so their lines are JSON like the web processes'."""


def connect_task_logging() -> None:
    from celery import signals

    signals.task_prerun.connect(task_prerun, weak=False, dispatch_uid="sparks.logs.task_prerun")
    signals.task_postrun.connect(task_postrun, weak=False, dispatch_uid="sparks.logs.task_postrun")
    signals.setup_logging.connect(keep_django_logging, weak=False, dispatch_uid="sparks.logs.setup_logging")


class NotAnAccessLine(logging.Filter):
    """Drops the access lines of `make run`'s server (daphne's runserver, `HTTP GET /path 200 [...]`):
    `RequestLogMiddleware` already wrote the request's line. Daphne passes a request's details as
    the record's arguments; its websocket lines, which no other line covers, have no status."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.args, dict) and "status" in record.args)


def _not_below_info(level: str) -> str:
    """LOG_LEVEL for Django's own loggers, but not DEBUG: that would print every SQL query."""
    number = logging.getLevelName(level.upper())
    return level.upper() if isinstance(number, int) and number >= logging.INFO else "INFO"


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """The LOGGING setting: everything to stderr, as JSON lines or plain text, each record once.

    One line per request and per task: Django's default configuration gives its `django` logger a
    console handler of its own in DEBUG (each record of it was printed twice), `make run`'s server
    an access line, `django.request` a warning for every 4xx, Celery a line per task that
    succeeded. Errors (5xx with their traceback, failed tasks) are still logged."""
    quiet = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"not_an_access_line": {"()": "sparks_site.logs.NotAnAccessLine"}},
        "formatters": {
            "json": {"()": "sparks_site.logs.JsonFormatter"},
            "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Its records go to the root's handler only (Django's default adds a second one).
            "django": {**quiet, "level": _not_below_info(level)},
            "django.channels.server": {**quiet, "filters": ["not_an_access_line"]},
            # "Not Found: /path" for every 4xx repeats the request line; 5xx keep their traceback.
            "django.request": {**quiet, "level": "ERROR"},
            # "Task ... succeeded in 0.01 s" repeats the task line; failures are errors.
            "celery.app.trace": {**quiet, "level": "WARNING"},
        },
    }
