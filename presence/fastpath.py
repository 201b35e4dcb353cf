"""`POST /api/v1/devices/{id}/signals` without DRF, for the requests devices send all day.

A request signed in with a known API token whose body is valid (`wire.read_batch`) is answered
here: a lone heartbeat of a live device in one step of the hot store, any other batch by
`services.ingest_signals`, an unknown device with the API's 404. Everything else — a session, an
unknown token, a body that is not valid JSON or not a valid batch — goes on to the DRF view
(`api.SignalsView`), which authenticates, parses and names the error in full.

A request is passed on only before anything of it was counted against the rate limits: the
door that counts a request is the one that answers it, so each request is counted once.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from orgs.authentication import cached_user, cached_user_fields
from presence import services, wire
from presence.api import SignalsView
from presence.ratelimits import RateLimited
from presence.vocabulary import SignalType
from sparks_site.errors import rate_limited_response

_signals_view = SignalsView.as_view()
_TOKEN_PREFIX = "Token "


def quick_signals(
    method: str, authorization: str, content_type: str, body: bytes, device_id: str
) -> wire.Answer | None:
    """The answer (202, or 404 for a device of no one's or someone else's) to a valid request
    signed in with a known API token; None for any other request, which the DRF view then answers
    in full and which nothing here has counted. Raises `RateLimited` for a request over the
    device's or the user's signal limits."""
    if method != "POST" or not settings.PRESENCE_USE_AGGREGATOR or not authorization.startswith(_TOKEN_PREFIX):
        return None
    if content_type != "application/json" or not services.possible_device_id(device_id):
        return None
    fields = cached_user_fields(authorization[len(_TOKEN_PREFIX) :].strip())
    if fields is None:
        return None
    signals = wire.read_body(body)
    if signals is None:
        return None  # the DRF view names what is wrong with the body
    # From here on the request is counted against the rate limits, so it is answered here.
    rate_counted = False
    if len(signals) == 1 and signals[0].type == SignalType.HEARTBEAT:
        outcome = services.steady_heartbeat(fields["id"], device_id, signals[0].seq)
        if outcome is not None:
            applied, ignored, decision = outcome
            return wire.Answer(202, wire.decision_answer(decision, applied, ignored))
        rate_counted = True
    try:
        result = services.ingest_signals(cached_user(fields), device_id, signals, rate_counted=rate_counted)
    except services.DeviceNotFound:
        return wire.Answer(404, wire.DEVICE_NOT_FOUND)
    return wire.Answer(202, wire.state_answer(result.presence, result.applied, result.ignored))


@csrf_exempt  # token requests only; a session request goes on to the DRF view and its CSRF check
@functools.wraps(_signals_view)  # the schema generator sees the DRF view behind this one
def signals_endpoint(request: HttpRequest, device_id: str) -> HttpResponse:
    try:
        answer = quick_signals(
            request.method, request.headers.get("Authorization", ""), request.content_type, request.body, device_id
        )
    except RateLimited as refused:
        return rate_limited_response(refused)
    if answer is not None:
        return JsonResponse(answer.body, status=answer.status, json_dumps_params={"separators": (",", ":")})
    return _signals_view(request, device_id=device_id)
