"""`GET /api/v1/peers/stream`: the presence websocket's snapshot and deltas as server-sent events,
for clients that cannot hold a websocket open (`PRESENCE_USE_SSE`).

An async view and not DRF: a stream lives for hours, and must not hold a worker thread for it.
The answers before the stream starts are the API's JSON errors, in the REST order: 401, 409, 403,
400, 404.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from orgs.bearer import ProviderUnavailable, ProviderUnavailableError
from orgs.models import User
from presence import hub, live
from presence.api import AggregatorDisabled
from sparks_site.live_auth import authenticate, credential_from_authorization

# Proxies and load balancers drop connections that stay silent for long (often 30-60 s).
KEEPALIVE_SECONDS = 15.0


def _error(http_status: int, error: str, detail: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": error, "detail": detail, **extra}, status=http_status)


async def _authenticate(request: HttpRequest) -> tuple[User | None, JsonResponse | None]:
    """As the REST API: a token in the Authorization header first, else the session."""
    credential = credential_from_authorization(request.headers.get("Authorization"))
    if credential is not None:
        try:
            user, why = await authenticate(credential)
        except ProviderUnavailable:
            error = ProviderUnavailableError()
            return None, _error(503, error.default_code, str(error.default_detail))
        if user is None:
            refusal = _error(401, "authentication_failed", why)
            refusal["WWW-Authenticate"] = "Bearer" if credential.scheme == "bearer" else "Token"
            return None, refusal
        return user, None
    user = await request.auser()
    if not user.is_authenticated:
        refusal = _error(401, "not_authenticated", "Authentication credentials were not provided.")
        refusal["WWW-Authenticate"] = "Token"
        return None, refusal
    return user, None


async def peer_stream(request: HttpRequest) -> HttpResponseBase:
    if request.method != "GET":
        refusal = _error(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
        refusal["Allow"] = "GET"
        return refusal
    user, refusal = await _authenticate(request)
    if refusal is not None:
        return refusal
    if not settings.PRESENCE_USE_AGGREGATOR:
        return _error(409, AggregatorDisabled.default_code, str(AggregatorDisabled.default_detail))
    organization_id = await live.organization_id_of(user)
    if organization_id is None:
        return _error(403, "permission_denied", "You belong to no organization: there is no one to watch.")

    watch, peers = live.Watch(organization_id), None
    if "user_ids" in request.GET:
        raw = request.GET["user_ids"]
        try:
            user_ids = live.parse_user_ids({"user_ids": [part.strip() for part in raw.split(",")] if raw else []})
        except live.MessageError as error:
            return _error(400, error.error, error.detail, fields=error.fields)
        try:
            peers = await database_sync_to_async(live.subscribed_peers)(user, user_ids)
        except live.NotColleagues:
            return _error(404, "not_found", "No such colleague.")
        watch = live.Watch(organization_id, frozenset(user_ids))

    response = StreamingHttpResponse(_stream(user, watch, peers), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold the events back
    return response


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, cls=DjangoJSONEncoder)}\n\n"


async def _stream(user: User, watch: live.Watch, peers: list[User] | None) -> AsyncIterator[str]:
    changes: asyncio.Queue[str | None] = asyncio.Queue()

    async def queue_change(text: str) -> None:
        changes.put_nowait(text)

    async def end_lagging_stream() -> None:
        changes.put_nowait(None)  # the client reconnects and gets a fresh snapshot

    # Join (paused) before taking the snapshot: a change made meanwhile comes after it, never lost.
    listener = hub.Listener(watch, queue_change, end_lagging_stream)
    await hub.hub().join(listener)
    try:
        if peers is None:
            # The whole organization: the process's shared snapshot, less this user.
            for text in await hub.hub().snapshot(listener, str(user.public_id)):
                yield f"event: snapshot\ndata: {text}\n\n"
        else:
            for page in await database_sync_to_async(live.snapshot_pages)(user, peers):
                yield _event("snapshot", page)
        await sync_to_async(live.release_db_connections)()
        await hub.hub().resume(listener)
        while True:
            try:
                text = await asyncio.wait_for(changes.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if text is None:
                return
            yield f"event: presence\ndata: {text}\n\n"
    finally:
        # The client went away (the server cancels the stream) or the stream failed.
        await hub.hub().leave(listener)
