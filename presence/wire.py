"""The wire format of device signals, written once for every door a signal comes in by.

A batch of signals reaches the server by the WSGI lane (`presence.fastlane`), the quick view
(`presence.fastpath`), the DRF view (`presence.api.SignalsView`) or the websocket
(`presence.live`). Each reads it with `read_batch` (`read_body` for raw bytes: same bounds, same
field names and messages) and answers with `state_answer` / `decision_answer` (the same 202
body). The OpenAPI schema of the batch is built from the same tables and bounds
(`presence.contract`), so that the contract says exactly what is accepted.

Plain Python, no DRF: a lone heartbeat is read in a few microseconds, and an invalid body is
refused with the messages the API has always given (DRF's words, where DRF used to judge).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from presence.models import DEVICE_ID_MAX_LENGTH
from presence.services import Signal
from presence.vocabulary import SIGNAL_VALUES, SignalType

if TYPE_CHECKING:
    from presence.hot import HotDecision
    from presence.models import PresenceState

MAX_SIGNALS_PER_REQUEST = 100
MAX_SEQ = 2**63 - 1  # PostgreSQL's bigint
# The longest value any signal had room for (the serializer's max_length): kept for the message
# a longer one gets before its type is even looked at.
MAX_VALUE_LENGTH = 20
NON_FIELD_ERRORS = "non_field_errors"  # DRF's NON_FIELD_ERRORS_KEY, as the API has always named it
NO_SUCH_DEVICE = "No such device."
DEVICE_NOT_FOUND = {"error": "not_found", "detail": NO_SUCH_DEVICE}

_REQUIRED = "This field is required."
_NULL = "This field may not be null."
_UNKNOWN = "Unknown field."
_SIGNAL_FIELDS = frozenset({"type", "value", "seq"})
_TYPES = {str(kind): kind for kind in SignalType}
_MISSING = object()


class Invalid(Exception):
    """A batch that cannot be applied: each offending field by dotted path ("signals.1.value")."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__(fields)
        self.fields = fields


@dataclass(frozen=True, slots=True)
class Answer:
    """What a door answers a signal request with: an HTTP status and its JSON body."""

    status: int
    body: dict[str, Any]


def json_type_of(value: object) -> str:
    """What a parsed JSON value is, in JSON's words: "a string", "an array", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _not_an_object(value: object) -> str:
    return f"Expected a JSON object, got {json_type_of(value)}."


def _unknown_fields(data: Mapping, known: frozenset[str], prefix: str, errors: dict[str, list[str]]) -> None:
    # A typo is an error rather than silently ignored.
    for name in sorted(set(data) - known, key=str):
        errors[f"{prefix}{name}"] = [_UNKNOWN]


def read_body(body: bytes) -> list[Signal] | None:
    """The signals of a raw JSON request body, or None for a body the API would refuse: not
    UTF-8 (a byte order mark included), not JSON (NaN and Infinity included), or not a valid
    batch. Parsed as DRF's parser parses it; the DRF view names what is wrong. A valid batch is
    ASCII, which reads alike whatever charset the Content-Type names; a body in another charset
    is no UTF-8 JSON and goes on to the DRF view, which reads that charset."""
    try:
        return read_batch(json.loads(body.decode("utf-8"), parse_constant=_not_json))
    except (ValueError, RecursionError, Invalid):
        return None


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")


def read_batch(data: object) -> list[Signal]:
    """The signals of a batch (`{"signals": [...]}`, a parsed JSON body or a websocket message's
    content), in the order given; `Invalid` naming every offending field otherwise."""
    if not isinstance(data, Mapping):
        raise Invalid({NON_FIELD_ERRORS: [_not_an_object(data)]})
    errors: dict[str, list[str]] = {}
    signals: list[Signal] = []
    items = data.get("signals", _MISSING)
    if items is _MISSING:
        errors["signals"] = [_REQUIRED]
    elif items is None:
        errors["signals"] = [_NULL]
    elif not isinstance(items, list):
        errors["signals"] = [f"Expected an array, got {json_type_of(items)}."]
    elif not items:
        errors["signals"] = ["This list may not be empty."]
    else:
        for index, item in enumerate(items):
            signal = _read_signal(item, f"signals.{index}", errors)
            if signal is not None:
                signals.append(signal)
        # The bound is judged once every signal is valid, as DRF's validators ran after the items.
        if not errors and len(items) > MAX_SIGNALS_PER_REQUEST:
            errors["signals"] = [f"Ensure this field has no more than {MAX_SIGNALS_PER_REQUEST} elements."]
    if len(data) != 1 or items is _MISSING:
        _unknown_fields(data, frozenset({"signals"}), "", errors)
    if errors:
        raise Invalid(errors)
    return signals


def _read_signal(item: object, path: str, errors: dict[str, list[str]]) -> Signal | None:
    if item is None:
        errors[path] = [_NULL]
        return None
    if not isinstance(item, Mapping):
        errors[f"{path}.{NON_FIELD_ERRORS}"] = [_not_an_object(item)]
        return None
    found: dict[str, list[str]] = {}
    kind = item.get("type", _MISSING)
    if not isinstance(kind, str) or kind not in _TYPES:
        found["type"] = [_type_error(kind)]
    value = item.get("value")
    if value is not None:
        value, problems = _read_value(value)
        if problems:
            found["value"] = problems
    seq = item.get("seq", _MISSING)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        found["seq"] = [_seq_error(seq)]
    if found or not item.keys() <= _SIGNAL_FIELDS:
        for name, problems in found.items():
            errors[f"{path}.{name}"] = problems
        _unknown_fields(item, _SIGNAL_FIELDS, f"{path}.", errors)
        return None
    allowed = SIGNAL_VALUES[_TYPES[kind]]
    if allowed is None:
        if value is not None:
            errors[f"{path}.value"] = [f"A {kind} signal carries no value."]
            return None
    elif value not in allowed:
        errors[f"{path}.value"] = [f"A {kind} signal takes one of: {', '.join(sorted(allowed))}."]
        return None
    return Signal(_TYPES[kind], value, seq)


def _type_error(kind: object) -> str:
    if kind is _MISSING:
        return _REQUIRED
    if kind is None:
        return _NULL
    if not isinstance(kind, str):
        return f"Expected a string, got {json_type_of(kind)}."
    return f'"{kind}" is not a valid choice.'


def _read_value(value: object) -> tuple[str | None, list[str]]:
    """A signal's value as given, without surrounding whitespace (as it has always been read),
    or what is wrong with it."""
    if not isinstance(value, str):
        return None, [f"Expected a string, got {json_type_of(value)}."]
    value = value.strip()
    if not value:
        return None, ["This field may not be blank."]
    problems = []
    if len(value) > MAX_VALUE_LENGTH:
        problems.append(f"Ensure this field has no more than {MAX_VALUE_LENGTH} characters.")
    if "\x00" in value:
        problems.append("Null characters are not allowed.")
    surrogate = next((ch for ch in value if 0xD800 <= ord(ch) <= 0xDFFF), None)
    if surrogate is not None:
        problems.append(f"Surrogate characters are not allowed: U+{ord(surrogate):X}.")
    return value, problems


def _seq_error(seq: object) -> str:
    if seq is _MISSING:
        return _REQUIRED
    if seq is None:
        return _NULL
    if not isinstance(seq, int) or isinstance(seq, bool):
        return f"Expected an integer, got {json_type_of(seq)}."
    if seq > MAX_SEQ:
        return f"Ensure this value is less than or equal to {MAX_SEQ}."
    return "Ensure this value is greater than or equal to 0."


def device_id_errors(device_id: object) -> list[str]:
    """What is wrong with the device id a websocket message names (the URL names it for REST)."""
    if device_id is None:
        return [_REQUIRED]
    if not isinstance(device_id, str) or not device_id or len(device_id) > DEVICE_ID_MAX_LENGTH:
        return ["A device id as returned by POST devices."]
    return []


# --- The 202 answer ------------------------------------------------------------------------


def last_active_ago_ms(last_active: datetime | None, now: datetime) -> int | None:
    if last_active is None:
        return None
    return max(0, int((now - last_active).total_seconds() * 1000))


def _answer(
    status: str,
    activity: str,
    status_msg: str | None,
    last_active: datetime | None,
    currently_active: bool,
    reason: str,
    status_until: datetime | None,
    applied: int,
    ignored: int,
) -> dict[str, Any]:
    return {
        "status": status,
        "activity": activity,
        "status_msg": status_msg or None,
        "last_active": _iso(last_active),
        "last_active_ago": last_active_ago_ms(last_active, timezone.now()),
        "currently_active": currently_active,
        "reason": reason,
        "status_until": _iso(status_until),
        "signals_applied": applied,
        "signals_ignored": ignored,
    }


def _iso(moment: datetime | None) -> str | None:
    """A time as the API writes it: ISO 8601 in UTC, with `Z`."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _moment(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def decision_answer(decision: HotDecision, applied: int, ignored: int) -> dict[str, Any]:
    """The 202 body from the hot store's decision (a heartbeat answered in one step)."""
    return _answer(
        decision.status,
        decision.activity,
        decision.status_msg,
        _moment(decision.last_active),
        decision.currently_active,
        decision.reason,
        _moment(decision.status_until),
        applied,
        ignored,
    )


def state_answer(state: PresenceState, applied: int, ignored: int) -> dict[str, Any]:
    """The 202 body from the user's presence after `services.ingest_signals`."""
    return _answer(
        state.status,
        state.activity,
        state.status_msg,
        state.last_active_at.astimezone(UTC) if state.last_active_at else None,
        state.currently_active,
        state.reason,
        state.status_until.astimezone(UTC) if state.status_until else None,
        applied,
        ignored,
    )
