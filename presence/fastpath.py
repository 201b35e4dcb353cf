"""`POST /api/v1/devices/{id}/signals` without DRF, for the requests devices send all day.

A request signed in with a known API token whose body is certainly valid is answered here: a
lone heartbeat of a live device in one step of the hot store, any other well-formed batch by
`services.ingest_signals`. Everything else — a session, an unknown token, a body with anything
doubtful in it, an unknown device — goes on to the DRF view (`api.SignalsView`), which validates
and answers it in full. Both give the same 202 body.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from orgs.authentication import cached_user, cached_user_fields
from presence import services
from presence.api import SignalsView
from presence.hotstate import HotDecision
from presence.models import PresenceState
from presence.ratelimits import RateLimited
from presence.serializers import MAX_SEQ, MAX_SIGNALS_PER_REQUEST, last_active_ago_ms
from presence.vocabulary import SIGNAL_VALUES, SignalType
from sparks_site.errors import rate_limited_response

_signals_view = SignalsView.as_view()
_TOKEN_PREFIX = "Token "


def well_formed_signals(data: object) -> list[services.Signal] | None:
    """The signals of a body the REST serializer would accept as it is, else None.

    Deliberately narrower than the serializer (an integer seq must be a JSON integer, not "5"):
    whatever this refuses, the serializer judges and, if need be, names the error."""
    if not isinstance(data, dict) or data.keys() != {"signals"}:
        return None
    items = data["signals"]
    if not isinstance(items, list) or not 0 < len(items) <= MAX_SIGNALS_PER_REQUEST:
        return None
    signals = []
    for item in items:
        if not isinstance(item, dict) or not {"type", "seq"} <= item.keys() <= {"type", "seq", "value"}:
            return None
        kind, value, seq = item["type"], item.get("value"), item["seq"]
        if not isinstance(kind, str) or kind not in SIGNAL_VALUES:
            return None
        allowed = SIGNAL_VALUES[SignalType(kind)]
        if (value is not None) if allowed is None else (not isinstance(value, str) or value not in allowed):
            return None
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            return None
        signals.append(services.Signal(SignalType(kind), value, seq))
    return signals


def _body(
    status: str,
    activity: str,
    status_msg: str | None,
    last_active: datetime | None,
    currently_active: bool,
    reason: str,
    applied: int,
    ignored: int,
) -> dict:
    return {
        "status": status,
        "activity": activity,
        "status_msg": status_msg or None,
        "last_active": last_active.isoformat().replace("+00:00", "Z") if last_active else None,
        "last_active_ago": last_active_ago_ms(last_active, timezone.now()),
        "currently_active": currently_active,
        "reason": reason,
        "signals_applied": applied,
        "signals_ignored": ignored,
    }


def decision_answer(decision: HotDecision, applied: int, ignored: int) -> dict:
    last_active = datetime.fromtimestamp(decision.last_active, UTC) if decision.last_active is not None else None
    return _body(
        decision.status,
        decision.activity,
        decision.status_msg,
        last_active,
        decision.currently_active,
        decision.reason,
        applied,
        ignored,
    )


def _state_body(state: PresenceState, applied: int, ignored: int) -> dict:
    last_active = state.last_active_at.astimezone(UTC) if state.last_active_at else None
    return _body(
        state.status,
        state.activity,
        state.status_msg,
        last_active,
        state.currently_active,
        state.reason,
        applied,
        ignored,
    )


def quick_signals(method: str, authorization: str, content_type: str, body: bytes, device_id: str) -> dict | None:
    """The 202 body for a certainly valid request signed in with a known API token, or None for
    any other request (which the DRF view then answers in full). Raises `RateLimited` for a
    request over the device's or the user's signal limits."""
    if method != "POST" or not settings.PRESENCE_USE_AGGREGATOR or not authorization.startswith(_TOKEN_PREFIX):
        return None
    if content_type != "application/json" or not services.possible_device_id(device_id):
        return None
    fields = cached_user_fields(authorization[len(_TOKEN_PREFIX) :].strip())
    if fields is None:
        return None
    try:
        signals = well_formed_signals(json.loads(body))
    except (ValueError, RecursionError):
        return None  # the DRF view names what is wrong with the body
    if signals is None:
        return None
    rate_counted = False
    if len(signals) == 1 and signals[0].type == SignalType.HEARTBEAT:
        outcome = services.steady_heartbeat(fields["id"], device_id, signals[0].seq)
        if outcome is not None:
            return decision_answer(outcome[2], outcome[0], outcome[1])
        rate_counted = True
    try:
        result = services.ingest_signals(cached_user(fields), device_id, signals, rate_counted=rate_counted)
    except services.DeviceNotFound:
        return None  # the DRF view answers the 404, in the API's words
    return _state_body(result.presence, result.applied, result.ignored)


@csrf_exempt  # token requests only; a session request goes on to the DRF view and its CSRF check
@functools.wraps(_signals_view)  # the schema generator sees the DRF view behind this one
def signals_endpoint(request: HttpRequest, device_id: str) -> HttpResponse:
    try:
        body = quick_signals(
            request.method, request.headers.get("Authorization", ""), request.content_type, request.body, device_id
        )
    except RateLimited as refused:
        return rate_limited_response(refused)
    if body is not None:
        return JsonResponse(body, status=202, json_dumps_params={"separators": (",", ":")})
    return _signals_view(request, device_id=device_id)
