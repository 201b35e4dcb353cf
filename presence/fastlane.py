"""A WSGI lane in front of Django for the requests devices send all day: their signals.

Under a WSGI server, `POST /api/v1/devices/{id}/signals` with a valid body and a known API token
is answered here, before Django's request handling and middleware, by the same function the Django
view uses (`fastpath.quick_signals`). Anything else — another path, another method, a doubtful
body, an unknown token, a host Django would refuse, plain HTTP that Django would redirect — goes
to Django unchanged, with its body as it came, and nothing of it counted against a rate limit.

What Django would judge or add around such an answer is taken from Django itself, not copied:
the host is checked by `HttpRequest.get_host` (ALLOWED_HOSTS), the scheme read by `is_secure`
(SECURE_PROXY_SSL_HEADER), and the headers are those Django's security middleware add, as
configured in MIDDLEWARE (`security_headers`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from http import HTTPStatus

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.db import close_old_connections
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django.utils.module_loading import import_string

from presence.fastpath import quick_signals
from presence.ratelimits import RateLimited
from sparks_site.errors import rate_limited_response, unavailable_response

_SIGNALS_PATH = re.compile(r"^/api/v1/devices/([^/]+)/signals$")
_MAX_BODY = 16384  # 100 signals fit; a bigger body is left to Django's own limits and errors
# The middleware whose headers every answer of Django's carries, whatever the view.
_HEADER_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)


def _envelope(where: dict[str, str]) -> WSGIRequest:
    """Django's own request, for its reading of a host and a scheme (`get_host`, `is_secure`):
    only what those read of the WSGI environ, and no body. Built once per distinct host and
    scheme (`_judged`), never per heartbeat."""
    return WSGIRequest({"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(), **where})


def security_headers(secure: bool) -> list[tuple[str, str]]:
    """The headers Django's security middleware (those of MIDDLEWARE) add to a JSON answer to a
    plain or a secure request: built by the middleware themselves, from the same settings."""
    request = _envelope({"wsgi.url_scheme": "https" if secure else "http"})
    response = HttpResponse(content_type="application/json")
    plain = set(response.headers)
    for path in reversed(settings.MIDDLEWARE):  # answers go back through them last to first
        if path in _HEADER_MIDDLEWARE:
            import_string(path)(lambda request: response).process_response(request, response)
    return [(name, value) for name, value in response.items() if name not in plain]


# What of the request Django reads to judge its host and its scheme (`_envelope`), besides the
# proxy's header of SECURE_PROXY_SSL_HEADER.
_WHERE = (
    "HTTP_HOST",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "SERVER_NAME",
    "SERVER_PORT",
    "wsgi.url_scheme",
)


@lru_cache(maxsize=1024)
def _judged(where: tuple[str | None, ...], proxy_header: str | None) -> tuple[bool, bool]:
    # Few distinct hosts reach a server: Django's verdict on each is kept rather than redone.
    keys = (*_WHERE, proxy_header) if proxy_header else _WHERE
    request = _envelope({key: value for key, value in zip(keys, where, strict=False) if value is not None})
    try:
        request.get_host()
    except DisallowedHost:
        return False, False
    return True, request.is_secure()


@receiver(setting_changed)
def _forget_verdicts(*, setting: str, **_: object) -> None:
    # Under tests: a verdict holds for the settings it was given under.
    if setting in {"ALLOWED_HOSTS", "DEBUG", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT", "SECURE_PROXY_SSL_HEADER"}:
        _judged.cache_clear()


class HeartbeatLane:
    def __init__(self, application: Callable) -> None:
        self.application = application
        # Read once, as Django's security middleware read their settings once.
        self.headers = {secure: security_headers(secure) for secure in (False, True)}
        self.redirects_plain_http = settings.SECURE_SSL_REDIRECT
        self.proxy_header = settings.SECURE_PROXY_SSL_HEADER[0] if settings.SECURE_PROXY_SSL_HEADER else None

    def host_and_scheme(self, environ: dict) -> tuple[bool, bool]:
        """(Django accepts the request's host, the request is secure), as Django judges them."""
        get = environ.get
        where = (
            get("HTTP_HOST"),
            get("HTTP_X_FORWARDED_HOST"),
            get("HTTP_X_FORWARDED_PORT"),
            get("SERVER_NAME"),
            get("SERVER_PORT"),
            get("wsgi.url_scheme"),
            get(self.proxy_header) if self.proxy_header else None,
        )
        return _judged(where, self.proxy_header)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = _SIGNALS_PATH.match(environ.get("PATH_INFO", ""))
        if match is None or environ.get("REQUEST_METHOD") != "POST" or "HTTP_AUTHORIZATION" not in environ:
            return self.application(environ, start_response)
        host_allowed, secure = self.host_and_scheme(environ)
        # A foreign host is refused, and plain HTTP redirected, by Django in its own words.
        if not host_allowed or (self.redirects_plain_http and not secure):
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
            return self._answer(rate_limited_response(refused), secure, start_response)
        except Exception as error:
            unavailable = unavailable_response(error)
            if unavailable is None:
                raise
            close_old_connections()  # a broken database connection is not kept for the next request
            return self._answer(unavailable, secure, start_response)
        if answer is None:
            environ["wsgi.input"] = io.BytesIO(body)  # Django reads the body again
            return self.application(environ, start_response)
        payload = json.dumps(answer.body, separators=(",", ":")).encode()
        start_response(
            _status_line(answer.status),
            [("Content-Type", "application/json"), *self.headers[secure], ("Content-Length", str(len(payload)))],
        )
        return [payload]

    def _answer(self, response: JsonResponse, secure: bool, start_response: Callable) -> list[bytes]:
        headers = [*response.items(), *self.headers[secure], ("Content-Length", str(len(response.content)))]
        start_response(_status_line(response.status_code), headers)
        return [response.content]


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"
