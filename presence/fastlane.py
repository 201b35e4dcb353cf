"""A WSGI lane in front of Django for the requests devices send all day: their signals.

Under a WSGI server, `POST /api/v1/devices/{id}/signals` with a valid body and a known API token
is answered here, before Django's request handling and middleware, by the same function the Django
view uses (`fastpath.quick_signals`). Anything else — another path, another method, a doubtful
body, an unknown token — goes to Django unchanged, with its body as it came, and nothing of it
counted against a rate limit.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus

from django.db import close_old_connections
from django.http import JsonResponse

from presence.fastpath import quick_signals
from presence.ratelimits import RateLimited
from sparks_site.errors import rate_limited_response, unavailable_response

_SIGNALS_PATH = re.compile(r"^/api/v1/devices/([^/]+)/signals$")
_MAX_BODY = 16384  # 100 signals fit; a bigger body is left to Django's own limits and errors
# What Django's SecurityMiddleware and the JSON renderer would add to an answer.
_SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Vary", "Accept"),
]
_HEADERS = [("Content-Type", "application/json"), *_SECURITY_HEADERS]


class HeartbeatLane:
    def __init__(self, application: Callable) -> None:
        self.application = application

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = _SIGNALS_PATH.match(environ.get("PATH_INFO", ""))
        if match is None or environ.get("REQUEST_METHOD") != "POST" or "HTTP_AUTHORIZATION" not in environ:
            return self.application(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_BODY:
            return self.application(environ, start_response)
        body = environ["wsgi.input"].read(length)
        try:
            answer = quick_signals(
                "POST",
                environ["HTTP_AUTHORIZATION"],
                environ.get("CONTENT_TYPE", "").split(";")[0].strip(),
                body,
                match.group(1),
            )
        except RateLimited as refused:
            return _answer(rate_limited_response(refused), "429 Too Many Requests", start_response)
        except Exception as error:
            unavailable = unavailable_response(error)
            if unavailable is None:
                raise
            close_old_connections()  # a broken database connection is not kept for the next request
            return _answer(unavailable, "503 Service Unavailable", start_response)
        if answer is None:
            environ["wsgi.input"] = io.BytesIO(body)  # Django reads the body again
            return self.application(environ, start_response)
        payload = json.dumps(answer.body, separators=(",", ":")).encode()
        start_response(
            f"{answer.status} {HTTPStatus(answer.status).phrase}", [*_HEADERS, ("Content-Length", str(len(payload)))]
        )
        return [payload]


def _answer(response: JsonResponse, status_line: str, start_response: Callable) -> list[bytes]:
    headers = [*_SECURITY_HEADERS, *response.items(), ("Content-Length", str(len(response.content)))]
    start_response(status_line, headers)
    return [response.content]
