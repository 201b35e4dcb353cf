"""One error shape for the whole API: a 4xx JSON body that names the offending field.

{"error": "validation_error", "detail": "Invalid input.", "fields": {"signals.1.value": ["..."]}}
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from presence.ratelimits import RateLimited
from sparks_site import metrics


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    service = unavailable_service(exc)
    if service is not None:
        return Response(*_unavailable(service), headers={"Retry-After": RETRY_AFTER_SECONDS})
    if isinstance(exc, RateLimited):
        return Response(rate_limited_body(exc), status=429, headers={"Retry-After": str(exc.retry_after)})
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "error": "validation_error",
            "detail": "Invalid input.",
            "fields": flatten_field_errors(exc.detail),
        }
    elif isinstance(exc, exceptions.APIException):
        response.data = {"error": _code_of(exc), "detail": _message_of(exc.detail)}
    return response


def rate_limited_body(exc: RateLimited) -> dict[str, Any]:
    """The API's answer to a request over a rate limit (HTTP 429, and the websocket's error)."""
    metrics.RATE_LIMITED.labels(exc.scope).inc()
    return {"error": "rate_limited", "detail": exc.detail, "retry_after": exc.retry_after}


def rate_limited_response(exc: RateLimited) -> JsonResponse:
    response = JsonResponse(rate_limited_body(exc), status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


def flatten_field_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error detail into dotted field paths: {"signals.1.value": [...]}."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            path = f"{prefix}.{_encodable(str(key))}" if prefix else _encodable(str(key))
            flat.update(flatten_field_errors(value, path))
        return flat
    if isinstance(detail, list) and detail and all(isinstance(item, (dict, list)) for item in detail):
        flat = {}
        for index, value in enumerate(detail):
            if value:
                flat.update(flatten_field_errors(value, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    messages = detail if isinstance(detail, list) else [detail]
    return {prefix or "non_field_errors": [_encodable(str(message)) for message in messages]}


def _encodable(text: str) -> str:
    """The text with any lone surrogate written as its escape. A JSON body may carry one
    ("\\ud800"); echoed in an error (an unknown field, a choice that is not valid), it would make
    the answer impossible to encode in UTF-8 and so a server error instead of the 400."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _code_of(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def _message_of(detail: Any) -> str:
    if isinstance(detail, list) and detail:
        return _encodable(str(detail[0]))
    return _encodable(str(detail))


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None):
    if _wants_json(request):
        return JsonResponse({"error": "not_found", "detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error(request: HttpRequest):
    if _wants_json(request):
        return JsonResponse(
            {"error": "server_error", "detail": "The server failed; the request can be retried."},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    from django.views.defaults import server_error as html_server_error

    return html_server_error(request)


def bad_request(request: HttpRequest, exception: Exception | None = None):
    """Requests Django refuses before any view (a body over REQUEST_BODY_MAX_BYTES, too many
    fields, a forbidden host): in the API's shape under /api/."""
    if _wants_json(request):
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse(
                {
                    "error": "request_too_large",
                    "detail": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
                },
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        return JsonResponse({"error": "bad_request", "detail": "Bad request."}, status=status.HTTP_400_BAD_REQUEST)
    from django.views.defaults import bad_request as html_bad_request

    return html_bad_request(request, exception)


# --- A backing service that is down: 503, not 500 ---------------------------------------------

RETRY_AFTER_SECONDS = "1"


def unavailable_service(exc: BaseException) -> str | None:
    """ "database" or "redis" when `exc` says that service cannot be reached (a dropped or refused
    connection, a timeout), else None. Such a failure is the deployment's, not the request's: the
    client should retry, and nothing was changed."""
    from django.db import InterfaceError, OperationalError
    from redis.exceptions import ClusterDownError, SlotNotCoveredError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, OperationalError | InterfaceError):
        return "database"
    # A Redis Cluster between a master's failure and its replica's promotion answers CLUSTERDOWN,
    # or leaves the master's slots uncovered: down for a few seconds, as a dropped connection is.
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | ClusterDownError | SlotNotCoveredError):
        return "redis"
    return None


def _unavailable(service: str) -> tuple[dict[str, str], int]:
    return (
        {"error": f"{service}_unavailable", "detail": f"The {service} cannot be reached; retry in a moment."},
        status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def unavailable_response(exc: BaseException) -> JsonResponse | None:
    service = unavailable_service(exc)
    if service is None:
        return None
    body, code = _unavailable(service)
    response = JsonResponse(body, status=code)
    response["Retry-After"] = RETRY_AFTER_SECONDS
    return response


class ServiceUnavailableMiddleware(MiddlewareMixin):
    """Answers 503 (JSON, Retry-After) under /api/ when a view outside DRF's exception handling
    fails because the database or Redis cannot be reached. Sync and async capable (the mixin), so
    that under ASGI no request is moved to a thread for its sake."""

    def process_exception(self, request: HttpRequest, exception: Exception):
        return unavailable_response(exception) if _wants_json(request) else None
