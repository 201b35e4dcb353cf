"""The endpoints of operations: `/healthz`, `/readyz` and `/metrics`.

Answered by `OperationsMiddleware`, first in the chain, under WSGI and ASGI alike: a load balancer
or Prometheus calls them by address, often with a Host header `ALLOWED_HOSTS` does not list and
without TLS, and neither host validation, redirects, sessions nor the request log should stand in
the way (probes every few seconds would drown the log).

- `/healthz`: the process is up and answers. Touches nothing else.
- `/readyz`: the database, Redis and the Celery broker each answer within
  `READINESS_TIMEOUT_SECONDS` (checked in parallel), and the expiry sweep ran within
  `READINESS_SWEEP_STALE_SECONDS`; 200 with each check's status, 503 naming those that failed.
- `/metrics`: the Prometheus text (see `sparks_site.metrics`), for a bearer of
  `PRESENCE_METRICS_TOKEN`; 404 while no token is configured.
"""

from __future__ import annotations

import copy
import hmac
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import connections
from django.db.utils import load_backend
from django.http import HttpRequest, HttpResponse, JsonResponse

from presence.sweep_clock import last_sweep
from sparks_site import metrics

logger = logging.getLogger(__name__)

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"  # not part of this deployment (the embedded default has no Redis)


# --- Checks ------------------------------------------------------------------------------------


def check_database(timeout: float) -> str:
    """`SELECT 1` on a connection of its own, closed after: the request's connection (if any) and
    its transaction state stay untouched, and a connect cannot outlast the timeout by much."""
    params = copy.deepcopy(connections.settings["default"])
    if params["ENGINE"] == "django.db.backends.postgresql":
        params.setdefault("OPTIONS", {})["connect_timeout"] = max(2, math.ceil(timeout))  # libpq's minimum: 2
    connection = load_backend(params["ENGINE"]).DatabaseWrapper(params, "default")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()
    return OK


def _ping_redis(url: str, timeout: float) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
    return OK


def check_redis(timeout: float) -> str:
    if not settings.REDIS_URL:
        return SKIPPED
    if settings.REDIS_CLUSTER_NODES:
        _ping_cluster(settings.REDIS_CLUSTER_NODES, timeout)
    return _ping_redis(settings.REDIS_URL, timeout)


def _ping_cluster(nodes: list[str], timeout: float) -> None:
    """Every master of the hot state's cluster answers (one down leaves its shards unserved)."""
    from redis.cluster import RedisCluster

    from presence.hot.connection import Target, sync_client

    client = sync_client(Target(cluster_nodes=tuple(nodes)), socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping(target_nodes=RedisCluster.PRIMARIES)
    finally:
        client.close()


def check_broker(timeout: float) -> str:
    url = settings.CELERY_BROKER_URL
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return SKIPPED  # tasks run in-process
    if scheme in ("redis", "rediss"):
        return _ping_redis(url, timeout)
    from kombu import Connection

    with Connection(url, connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    return OK


class SweepWatch:
    """Since when this process has found no sweep on record: its start at first, so that a
    process just started (beat not yet sent the first sweep) is not failed; reset by a record,
    so that a record lost with a Redis restart is given the same time to come back."""

    def __init__(self) -> None:
        self.missing_since: float | None = time.time()


SWEEP_WATCH = SweepWatch()


def check_sweep(timeout: float) -> dict[str, Any]:
    """The expiry sweep (beat's task, on a worker or in the embedded default's in-process beat)
    completed within `READINESS_SWEEP_STALE_SECONDS`: one Redis GET (or a variable, on the
    embedded default)."""
    window = settings.READINESS_SWEEP_STALE_SECONDS
    last = last_sweep(timeout)
    now = time.time()
    if last is None:
        if SWEEP_WATCH.missing_since is None:
            SWEEP_WATCH.missing_since = now
        if now - SWEEP_WATCH.missing_since > window:
            return {"status": FAILED, "error": "never_ran", "last_run_seconds_ago": None}
        return {"status": OK, "last_run_seconds_ago": None}
    SWEEP_WATCH.missing_since = None
    ago = round(max(now - last, 0.0), 1)
    if ago > window:
        return {"status": FAILED, "error": "stale", "last_run_seconds_ago": ago}
    return {"status": OK, "last_run_seconds_ago": ago}


CHECKS: dict[str, Callable[[float], str | dict[str, Any]]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
    "sweep": check_sweep,
}


def readiness(timeout: float) -> dict[str, dict[str, Any]]:
    """Every check, in parallel, each given `timeout` seconds: {name: {"status", "duration_ms", "error"?}}.

    A check still hanging at the deadline counts as failed; its thread is left to finish on its
    own (each check has its own connect timeout), so a dead dependency cannot hold the answer."""
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="readyz")
    started = time.perf_counter()
    futures = {name: pool.submit(_timed, check, timeout) for name, check in CHECKS.items()}
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, future in futures.items():
            remaining = max(timeout - (time.perf_counter() - started), 0.0)
            try:
                results[name] = future.result(timeout=remaining + 0.25)
            except FutureTimeout:
                results[name] = {"status": FAILED, "error": "timeout", "duration_ms": round(timeout * 1000)}
    finally:
        pool.shutdown(wait=False)
    return results


def _timed(check: Callable[[float], str | dict[str, Any]], timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        outcome = check(timeout)
        result: dict[str, Any] = dict(outcome) if isinstance(outcome, dict) else {"status": outcome}
    except Exception as error:
        # The class only: a message may carry a host name or a URL with credentials.
        result = {"status": FAILED, "error": type(error).__name__}
    result["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


# --- Views -------------------------------------------------------------------------------------


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": OK})


def readyz(request: HttpRequest) -> HttpResponse:
    checks = readiness(settings.READINESS_TIMEOUT_SECONDS)
    failed = [name for name, result in checks.items() if result["status"] == FAILED]
    if failed:
        logger.warning("Not ready: %s", ", ".join(f"{name} ({checks[name].get('error')})" for name in failed))
        return JsonResponse({"status": "unavailable", "failed": failed, "checks": checks}, status=503)
    return JsonResponse({"status": OK, "failed": [], "checks": checks})


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.PRESENCE_METRICS_TOKEN
    if not token:
        return JsonResponse({"error": "not_found", "detail": "Not found."}, status=404)
    presented = request.headers.get("Authorization", "")
    if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
        response = JsonResponse(
            {"error": "not_authenticated", "detail": "Send the metrics token as Authorization: Bearer <token>."},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


ROUTES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics_view,
}


class OperationsMiddleware:
    """Answers the operations endpoints before any other middleware; passes everything else on.

    Sync and async capable, so that under ASGI no request is moved to a thread for its sake."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        view = ROUTES.get(request.path_info)
        return self.get_response(request) if view is None else view(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        view = ROUTES.get(request.path_info)
        if view is None:
            return await self.get_response(request)
        if view is healthz:
            return healthz(request)
        # The checks block (connects, pings) and the exposition reads files: off the event loop.
        return await sync_to_async(view, thread_sensitive=False)(request)
