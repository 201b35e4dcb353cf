"""The API's strict input fields: each takes values of one JSON type only and names the type it
got otherwise, an object refuses the fields it does not know, and a time must carry its UTC
offset. The serializers of `presence.serializers` are built from them, and `presence.contract`
publishes them as closed, typed schemas."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from rest_framework import serializers
from rest_framework.settings import api_settings

from presence.wire import json_type_of


class JsonTyped:
    """A field that takes values of one JSON type only, and names the type it got otherwise:
    DRF would turn 5 into "5" for a string, "5" or 5.0 into 5 for an integer, "yes" into true."""

    json_types: tuple[type, ...] = ()
    expected = ""

    def to_internal_value(self, data):
        if isinstance(data, bool) is not (bool in self.json_types) or not isinstance(data, self.json_types):
            raise serializers.ValidationError(f"Expected {self.expected}, got {json_type_of(data)}.", code="invalid")
        return super().to_internal_value(data)


class StringField(JsonTyped, serializers.CharField):
    json_types, expected = (str,), "a string"


class IntegerField(JsonTyped, serializers.IntegerField):
    json_types, expected = (int,), "an integer"


class BooleanField(JsonTyped, serializers.BooleanField):
    json_types, expected = (bool,), "true or false"


class ChoiceField(JsonTyped, serializers.ChoiceField):
    json_types, expected = (str,), "a string"


class ListField(JsonTyped, serializers.ListField):
    json_types, expected = (list,), "an array"


class UUIDField(JsonTyped, serializers.UUIDField):
    json_types, expected = (str,), "a string"


class StrictSerializer(serializers.Serializer):
    """Takes a JSON object only, and rejects fields it does not know, so that a typo is an error
    rather than silently ignored."""

    # Schema keywords of the request shape that no field can carry (a rule between fields), added
    # by `presence.contract` to the closed object it publishes.
    contract_rules: dict = {}

    def run_validation(self, data=serializers.empty):
        if data is None and self.parent is None:
            self._not_an_object(data)
        return super().run_validation(data)

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            self._not_an_object(data)
        known = {name for name, field in self.fields.items() if not field.read_only}
        unknown = {str(name): ["Unknown field."] for name in sorted(set(data) - known, key=str)}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value

    @staticmethod
    def _not_an_object(data: object) -> None:
        what = "null" if data is None else json_type_of(data)
        raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [f"Expected a JSON object, got {what}."]})


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that carries its UTC offset: a naive time is ambiguous, so refused."""

    default_error_messages = {"naive": "Give the time with its UTC offset, e.g. 2026-11-25T14:00:00Z."}

    def to_internal_value(self, value):
        if not isinstance(value, str):
            raise serializers.ValidationError(f"Expected a string, got {json_type_of(value)}.", code="invalid")
        try:
            naive = datetime.fromisoformat(value).tzinfo is None
        except ValueError:
            naive = False  # not ISO 8601 at all: DRF's own message says so
        if naive:
            self.fail("naive")
        return super().to_internal_value(value)
