"""Requests through the WSGI application as it is served (the heartbeat lane, then Django), for the
tests that must go past Django's test client. Use them with the `keep_the_test_transaction` fixture."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable

from sparks_site.wsgi import application


def wsgi_call(
    path: str,
    body: dict | None,
    token: str | None,
    method: str = "POST",
    app: Callable = application,
    **extra: str,
) -> tuple[str, dict[str, str], dict]:
    """`body` as JSON to `path`, with the user's DRF token if any; the status line, the headers and
    the JSON answer ({} when empty). `extra` adds to (or replaces) the WSGI environ."""
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


def status_code(status_line: str) -> int:
    """`"404 Not Found"` → 404."""
    return int(status_line.split()[0])
