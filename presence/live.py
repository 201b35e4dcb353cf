"""Live presence, shared by the websocket consumer and the SSE stream.

What a watcher gets: a snapshot of the colleagues it watches, in pages, then one `presence` message
per visible change published to its organization's group (`presence.events`). The functions here
that touch the database are synchronous; the consumer and the stream call them off the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import connections
from django.utils import timezone

from orgs import authentication
from orgs.models import User
from presence import hot, ratelimits, selectors, services, wire
from presence.ratelimits import RateLimited
from presence.serializers import PeerSerializer, PeerSubscriptionSerializer
from presence.vocabulary import SignalType
from presence.wire import json_type_of, last_active_ago_ms
from sparks_site import metrics
from sparks_site.errors import flatten_field_errors, rate_limited_body

SNAPSHOT_PAGE_SIZE = 500
MAX_REQUEST_ID_LENGTH = 200

# What every message may carry besides its content: its type and the client's correlation id.
_ENVELOPE = ("type", "id")


class MessageError(Exception):
    """A client message that cannot be acted on; answered with an error message, never a crash."""

    def __init__(self, error: str, detail: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.fields = fields

    def as_message(self, request_id: Any = None) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "error", "id": request_id, "error": self.error, "detail": self.detail}
        if self.fields is not None:
            message["fields"] = self.fields
        return message


def validation_error(fields: dict[str, list[str]]) -> MessageError:
    return MessageError("validation_error", "Invalid input.", fields)


class NotColleagues(Exception):
    """Some of the requested user ids are not colleagues (another organization, or nobody)."""


@dataclass(frozen=True, slots=True)
class Watch:
    """What one connection watches: its organization, and within it everyone or only some users."""

    organization_id: int
    user_ids: frozenset[str] | None = None

    def accepts(self, change: dict[str, Any]) -> bool:
        # The group is the organization's already; checking again keeps a misrouted message out.
        if change.get("organization_id") != self.organization_id:
            return False
        return self.user_ids is None or change.get("user_id") in self.user_ids


def presence_delta(change: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The watcher's message for a `presence.change` group message; `last_active_ago` as of sending."""
    last_active = change.get("last_active")
    return {
        "type": "presence",
        "user_id": change["user_id"],
        "status": change["status"],
        "activity": change["activity"],
        "status_msg": change.get("status_msg"),
        "currently_active": change["currently_active"],
        "last_active_ago": last_active_ago_ms(datetime.fromisoformat(last_active) if last_active else None, now),
        "status_until": _utc_iso(change.get("status_until")),
    }


def _utc_iso(moment: str | None) -> str | None:
    """An ISO 8601 time as the REST API writes it (UTC, `Z`)."""
    return moment.replace("+00:00", "Z") if moment else None


async def organization_id_of(user: User) -> int | None:
    """The id of the user's organization: on the event loop when it came with the user's token,
    else read off the loop (a thread hand-off and a query, most of a connection's sign-in)."""
    known, organization_id = authentication.known_organization(user)
    if known:
        return organization_id
    return await database_sync_to_async(selectors.organization_id_of)(user)


def snapshot_pages(user: User, peers: list[User] | None = None) -> list[dict[str, Any]]:
    """The snapshot messages: `peers` (a subscription), or else every colleague; at least one page."""
    now = timezone.now()
    if peers is None:
        peers = list(selectors.colleagues_of(user))
    chunks = [peers[i : i + SNAPSHOT_PAGE_SIZE] for i in range(0, len(peers), SNAPSHOT_PAGE_SIZE)] or [[]]
    pages = []
    for number, chunk in enumerate(chunks, start=1):
        context = {"states": selectors.fresh_presence_of(chunk, now), "now": now}
        pages.append(
            {
                "type": "snapshot",
                "peers": PeerSerializer(chunk, many=True, context=context).data,
                "page": number,
                "last": number == len(chunks),
            }
        )
    return pages


def organization_peers(organization_id: int) -> tuple[list[dict[str, Any]], list[float | None]]:
    """Every active member of the organization as a colleague sees them (`PeerSerializer`'s fields,
    in the snapshot's order), and when each was last active (epoch seconds): what
    `presence.snapshots` shares among the organization's connections."""
    now = timezone.now()
    members = list(selectors.members_of(organization_id))
    states = selectors.fresh_presence_of(members, now)
    peers = PeerSerializer(members, many=True, context={"states": states, "now": now}).data
    return list(peers), [hot.to_epoch(states[member.pk].last_active_at) for member in members]


def parse_user_ids(message: dict[str, Any]) -> list[str] | None:
    """Validate a subscription's `user_ids` (None: the whole organization again)."""
    serializer = PeerSubscriptionSerializer(data={k: v for k, v in message.items() if k not in _ENVELOPE})
    if not serializer.is_valid():
        raise validation_error(flatten_field_errors(serializer.errors))
    user_ids = serializer.validated_data["user_ids"]
    return None if user_ids is None else list(dict.fromkeys(str(u) for u in user_ids))


def subscribed_peers(user: User, user_ids: list[str]) -> list[User]:
    """The users behind `user_ids`, in the order asked, if every one is a colleague (or the user)."""
    found = {str(peer.public_id): peer for peer in selectors.colleagues_of(user).filter(public_id__in=user_ids)}
    if str(user.public_id) in user_ids:
        # Oneself is no colleague to list, but may be watched, as `GET peers/{own id}` may be read.
        found[str(user.public_id)] = selectors.colleague(user, str(user.public_id))
    if set(user_ids) - found.keys():
        raise NotColleagues()
    return [found[user_id] for user_id in user_ids]


def parse_message(text: str | None) -> dict[str, Any]:
    """A client frame as a message object with a string `type`, and an `id` to echo if any."""
    if text is None:
        raise MessageError("parse_error", "Send JSON text frames, not binary ones.")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MessageError("parse_error", f"Malformed JSON: {exc}") from None
    if not isinstance(message, dict):
        raise validation_error({"non_field_errors": ["A message is a JSON object."]})
    if "type" not in message:
        raise validation_error({"type": ["This field is required."]})
    if not isinstance(message["type"], str):
        raise validation_error({"type": [f"Expected a string, got {json_type_of(message['type'])}."]})
    if message.get("id") is not None and request_id_of(message) is None:
        raise validation_error({"id": [f"A string of at most {MAX_REQUEST_ID_LENGTH} characters, or an integer."]})
    return message


def request_id_of(message: Any) -> str | int | None:
    """The client's correlation id to echo in the reply: a string or an integer, else none."""
    request_id = message.get("id") if isinstance(message, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
        return None
    if isinstance(request_id, str) and len(request_id) > MAX_REQUEST_ID_LENGTH:
        return None
    return request_id


def rate_limited_message(refused: RateLimited, request_id: Any) -> dict[str, Any]:
    """The error message for a message over a rate limit: the REST 429's body, `retry_after` in seconds."""
    return {"type": "error", "id": request_id, **rate_limited_body(refused)}


def signals_reply(user: User, message: dict[str, Any], rate_counted: bool = False) -> dict[str, Any]:
    """Apply a `signals` message as `POST devices/{id}/signals` would, and answer with an ack or
    an error. `rate_counted`: the message was counted against the rate limits already."""
    request_id = request_id_of(message)
    device_id = message.get("device_id")
    fields: dict[str, list[str]] = {}
    if problems := wire.device_id_errors(device_id):
        fields["device_id"] = problems
    # The very reading of the REST endpoint: same limits, same messages, unknown fields refused.
    try:
        signals = wire.read_batch({k: v for k, v in message.items() if k not in (*_ENVELOPE, "device_id")})
    except wire.Invalid as invalid:
        fields.update(invalid.fields)
    if fields:
        return validation_error(flatten_field_errors(fields)).as_message(request_id)
    if not services.possible_device_id(device_id):
        return _device_not_found(request_id)
    try:
        outcome = services.ingest_signals(user, device_id, signals, rate_counted=rate_counted)
    except services.DeviceNotFound:
        return _device_not_found(request_id)
    except RateLimited as refused:
        return rate_limited_message(refused, request_id)
    return {"type": "ack", "id": request_id, **wire.state_answer(outcome.presence, outcome.applied, outcome.ignored)}


def _device_not_found(request_id: str | int | None) -> dict[str, Any]:
    return MessageError(wire.DEVICE_NOT_FOUND["error"], wire.NO_SUCH_DEVICE).as_message(request_id)


# The keys of a `signals` message that is a lone heartbeat, besides the optional `id`.
_HEARTBEAT_MESSAGE_KEYS = {"type", "device_id", "signals"}


def lone_heartbeat(message: dict[str, Any]) -> tuple[str, int] | None:
    """(device id, seq) of a `signals` message that is exactly one valid heartbeat, else None.
    Anything doubtful is None, so that `signals_reply` judges it and names the error."""
    if not _HEARTBEAT_MESSAGE_KEYS <= message.keys() <= {*_HEARTBEAT_MESSAGE_KEYS, "id"}:
        return None
    device_id = message["device_id"]
    if not services.possible_device_id(device_id):
        return None
    # The very reading of a REST body, on this message's signals.
    try:
        signals = wire.read_batch({"signals": message["signals"]})
    except wire.Invalid:
        return None
    if len(signals) != 1 or signals[0].type != SignalType.HEARTBEAT:
        return None
    return device_id, signals[0].seq


async def quick_signals_reply(user: User, message: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """The ack of a lone heartbeat of a live device, on the event loop: one Redis call, no thread,
    serializer or database; or the error of one over a rate limit. None for anything else (an
    unknown or timed-out device, an outdated decision, any other message): `signals_reply` answers
    it in full. With it, whether the message was counted against the rate limits already (then
    `signals_reply` does not count it again)."""
    found = lone_heartbeat(message)
    if found is None:
        return None, False
    device_id, seq = found
    limits = ratelimits.signal_limits(device_id)
    try:
        beat = await hot.store().heartbeat_async(user.pk, device_id, seq, timezone.now().timestamp(), limits)
    except RateLimited as refused:
        return rate_limited_message(refused, request_id_of(message)), True
    if beat is None:
        return None, True
    metrics.count_heartbeat()
    applied, ignored = (1, 0) if beat.applied else (0, 1)
    return {"type": "ack", "id": request_id_of(message), **wire.decision_answer(beat.decision, applied, ignored)}, True


def release_db_connections() -> None:
    """Close this thread's database connections: a stream lives for hours and would otherwise hold
    one idle all along. Never inside a transaction (a test's, say), which closing would break."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
