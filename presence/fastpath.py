"""`POST /api/v1/devices/{id}/signals` for its most frequent request: one heartbeat of a live
device, signed in with an API token. That request is answered here without DRF, the ORM or the
database; every other request to the endpoint goes on to the DRF view (`api.SignalsView`),
which validates and answers it in full. Both give the same 202 body for a heartbeat.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from orgs.authentication import cached_user_fields
from presence import services
from presence.api import SignalsView
from presence.hotstate import HotDecision
from presence.serializers import MAX_SEQ, last_active_ago_ms

_signals_view = SignalsView.as_view()
_TOKEN_PREFIX = "Token "


def _lone_heartbeat_seq(body: bytes) -> int | None:
    """The seq of a body that is exactly one well-formed heartbeat, else None (validate in full)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.keys() != {"signals"}:
        return None
    signals = data["signals"]
    if not isinstance(signals, list) or len(signals) != 1 or not isinstance(signals[0], dict):
        return None
    signal = signals[0]
    if signal.get("type") != "heartbeat" or signal.get("value") is not None:
        return None
    if not signal.keys() <= {"type", "seq", "value"}:
        return None
    seq = signal.get("seq")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        return None
    return seq


def _answer_body(decision: HotDecision, applied: int, ignored: int) -> dict:
    now = timezone.now()
    last_active = datetime.fromtimestamp(decision.last_active, UTC) if decision.last_active is not None else None
    return {
        "status": decision.status,
        "activity": decision.activity,
        "status_msg": decision.status_msg or None,
        "last_active": last_active.isoformat().replace("+00:00", "Z") if last_active else None,
        "last_active_ago": last_active_ago_ms(last_active, now),
        "currently_active": decision.currently_active,
        "reason": decision.reason,
        "signals_applied": applied,
        "signals_ignored": ignored,
    }


def quick_heartbeat(method: str, authorization: str, content_type: str, body: bytes, device_id: str) -> dict | None:
    """The 202 body for a lone heartbeat of a live device signed in with a known API token, or
    None for any other request (which the DRF view then answers in full)."""
    if method != "POST" or not settings.PRESENCE_USE_AGGREGATOR or not authorization.startswith(_TOKEN_PREFIX):
        return None
    if content_type != "application/json":
        return None
    fields = cached_user_fields(authorization[len(_TOKEN_PREFIX) :].strip())
    seq = _lone_heartbeat_seq(body) if fields is not None else None
    if seq is None:
        return None
    outcome = services.steady_heartbeat(fields["id"], device_id, seq)
    if outcome is None:
        return None
    return _answer_body(outcome[2], outcome[0], outcome[1])


@csrf_exempt  # token requests only; a session request goes on to the DRF view and its CSRF check
@functools.wraps(_signals_view)  # the schema generator sees the DRF view behind this one
def signals_endpoint(request: HttpRequest, device_id: str) -> HttpResponse:
    body = quick_heartbeat(
        request.method, request.headers.get("Authorization", ""), request.content_type, request.body, device_id
    )
    if body is not None:
        return JsonResponse(body, status=202)
    return _signals_view(request, device_id=device_id)
