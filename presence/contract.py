"""The OpenAPI contract says exactly what the server accepts, built from what the server checks.

- A batch of signals is described from the wire format's own tables (`presence.wire`): one shape
  per signal type, as a `oneOf` with a discriminator on `type` (a heartbeat carries no value,
  the others one of their values), seq and batch bounds from the constants `read_batch` checks.
- Every strict input (`strict_fields.StrictSerializer`, which refuses fields it does not know) is a
  closed object: `additionalProperties: false`, with its rules between fields (`contract_rules`).
- A string field says by a pattern what DRF's character fields refuse (NUL; blank once trimmed).

What OpenAPI has no words for (a time relative to the clock or to another field) is said in the
field's description, and refused on arrival with a 400 naming the field.

drf-spectacular finds these extensions once this module is imported (by `presence.api`).
"""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent

from presence import wire
from presence.vocabulary import SIGNAL_VALUES, SignalType

_SIGNAL_HELP = {
    SignalType.HEARTBEAT: "The device is there (and its app running).",
    SignalType.ACTIVITY: "The user is at the device, or has left it idle.",
    SignalType.VISIBILITY: "The app's window is shown or hidden.",
    SignalType.CALL: "A call starts or ends on the device.",
    SignalType.MEETING: "A meeting starts or ends on the device.",
    SignalType.NETWORK: "The device goes offline (a goodbye) or is back online.",
}
_SEQ = {
    "type": "integer",
    "format": "int64",
    "minimum": 0,
    "maximum": wire.MAX_SEQ,
    "description": "The device's sequence number, a JSON integer from 0 to 2^63-1; a signal not newer than the "
    "last applied one is ignored.",
}


class SignalBatch:
    """The body of `POST devices/{device_id}/signals`, as `wire.read_batch` reads it: the request
    schema of the signals endpoint (`SignalBatchExtension` describes it)."""


BATCH = "SignalBatchRequest"
# A heartbeat's value: none, or null (a component, so that the enum naming of drf-spectacular's
# postprocessing leaves it whole rather than splitting an empty enum off it).
NO_VALUE = "NoSignalValue"
_NO_VALUE_SCHEMA = {"nullable": True, "enum": [None], "description": "This signal carries no value: null or none."}


def value_component_name(allowed: frozenset[str]) -> str:
    """The vocabulary's own name of a value set: `SessionValue` → "SessionValueEnum"."""
    return f"{type(next(iter(allowed))).__name__}Enum"


def components() -> dict[str, dict[str, Any]]:
    """Every component of a batch, by name: the batch, one shape per signal type, their values."""
    schemas: dict[str, dict[str, Any]] = {NO_VALUE: _NO_VALUE_SCHEMA}
    refs = {}
    for kind in SignalType:
        allowed = SIGNAL_VALUES[kind]
        if allowed is None:
            value, required = _ref(NO_VALUE), ["type", "seq"]
        else:
            schemas[value_component_name(allowed)] = {"type": "string", "enum": sorted(str(v) for v in allowed)}
            value, required = _ref(value_component_name(allowed)), ["type", "value", "seq"]
        name = f"{kind.value.capitalize()}SignalRequest"
        schemas[name] = {
            "type": "object",
            "description": _SIGNAL_HELP[kind],
            "properties": {"type": {"type": "string", "enum": [kind.value]}, "value": value, "seq": _SEQ},
            "required": required,
            "additionalProperties": False,
        }
        refs[kind.value] = _ref(name)
    schemas[BATCH] = {
        "type": "object",
        "properties": {
            "signals": {
                "type": "array",
                "minItems": 1,
                "maxItems": wire.MAX_SIGNALS_PER_REQUEST,
                "items": {
                    "oneOf": list(refs.values()),
                    "discriminator": {"propertyName": "type", "mapping": {k: r["$ref"] for k, r in refs.items()}},
                },
                "description": f"1 to {wire.MAX_SIGNALS_PER_REQUEST} signals, applied in seq order.",
            }
        },
        "required": ["signals"],
        "additionalProperties": False,
    }
    return schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class SignalBatchExtension(OpenApiSerializerExtension):
    target_class = SignalBatch

    def get_name(self, auto_schema, direction) -> str:
        return BATCH.removesuffix("Request")  # drf-spectacular adds it back, as to every request shape

    def map_serializer(self, auto_schema, direction) -> dict[str, Any]:
        schemas = components()
        for name, schema in schemas.items():
            if name != BATCH:
                auto_schema.registry.register_on_missing(
                    ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
                )
        return schemas[BATCH]


class ClosedObjectExtension(OpenApiSerializerExtension):
    """A strict serializer refuses unknown fields: its request shape says so."""

    target_class = "presence.strict_fields.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema.update(copy.deepcopy(self.target.contract_rules), additionalProperties=False)
        return schema


# --- Strings: what DRF's character fields refuse, as a pattern --------------------------------
# A string field refuses NUL, and trims whitespace (str.strip) before it judges blankness: a field
# that may not be blank needs one character that str.strip would not remove. (It refuses a lone
# surrogate too, which is no Unicode character: JSON Schema's regular expressions cannot name it.)
_REFUSED = "\\u0000"


def _escaped(characters: str) -> str:
    return "".join(f"\\u{ord(character):04x}" for character in characters)


_WHITESPACE = _escaped("".join(c for c in map(chr, range(0x10000)) if c.isspace()))
# Not empty: drf-spectacular adds the empty string as an alternative of its own (`oneOf`) to a field
# that may be blank.
ANY_TEXT = f"^[^{_REFUSED}]+$"
NOT_BLANK = f"^[^{_REFUSED}]*[^{_REFUSED}{_WHITESPACE}][^{_REFUSED}]*$"


class StringFieldExtension(OpenApiSerializerFieldExtension):
    """What a string field of an input accepts, pattern included."""

    target_class = "presence.strict_fields.StringField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if direction == "request":
            blank_allowed = self.target.allow_blank or not self.target.trim_whitespace
            schema["pattern"] = ANY_TEXT if blank_allowed else NOT_BLANK
        return schema
