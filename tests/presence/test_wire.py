"""The wire format of signals: one reading for every door, and the published contract says
exactly what it accepts."""

from __future__ import annotations

import random

import jsonschema
import pytest
from drf_spectacular.generators import SchemaGenerator

from presence import wire
from presence.vocabulary import SignalType


@pytest.fixture(scope="module")
def contract() -> jsonschema.Draft4Validator:
    """The published schema of a batch (`SignalBatchRequest`), references and all."""
    components = SchemaGenerator().get_schema(request=None, public=True)["components"]
    return jsonschema.Draft4Validator({"$ref": "#/components/schemas/SignalBatchRequest", "components": components})


def accepted(body: object) -> bool:
    try:
        wire.read_batch(body)
    except wire.Invalid:
        return False
    return True


VALID = [("heartbeat", None), ("activity", "idle"), ("visibility", "hidden"), ("call", "start"), ("meeting", "end")]
TYPES = ["heartbeat", "activity", "visibility", "call", "meeting", "network", "nap", "", 7, None, True]
VALUES = [None, "active", "idle", "visible", "hidden", "start", "end", "online", "offline", "", "x" * 21, 3, True, []]
SEQS = [0, 1, 41, 2**63 - 1, 2**63, -1, "5", 5.0, True, None]


def random_body(rng: random.Random) -> object:
    if rng.random() < 0.02:
        return rng.choice([None, [], "signals", 5])
    signals = []
    for _ in range(rng.choice([0, 1, 1, 2, 3, 100, 101])):
        if rng.random() < 0.8:  # mostly plausible signals, so that many bodies are valid
            kind, value = rng.choice(VALID)
            signal = {"type": kind, "seq": rng.choice(SEQS[:4])}
            if value is not None or rng.random() < 0.3:
                signal["value"] = value
        else:
            signal = {"type": rng.choice(TYPES), "seq": rng.choice(SEQS)}
            if rng.random() < 0.7:
                signal["value"] = rng.choice(VALUES)
        if rng.random() < 0.01:
            signal["extra"] = 1
        if rng.random() < 0.01:
            del signal["seq"]
        signals.append(rng.choice([signal, signal, signal, None]) if rng.random() < 0.02 else signal)
    return {"signals": signals} if rng.random() < 0.97 else {"signals": signals, "more": 1}


def test_the_published_contract_accepts_exactly_the_batches_the_server_accepts(contract):
    rng = random.Random(20261201)
    verdicts = {True: 0, False: 0}
    for _ in range(3000):
        body = random_body(rng)

        assert accepted(body) is contract.is_valid(body), body
        verdicts[accepted(body)] += 1
    assert min(verdicts.values()) > 300  # plenty of both


def test_the_only_leniency_is_whitespace_around_a_value(contract):
    # Values have always been read trimmed; the contract names them exactly.
    body = {"signals": [{"type": "activity", "value": " idle ", "seq": 1}]}

    assert wire.read_batch(body) == [wire.Signal(SignalType.ACTIVITY, "idle", 1)]
    assert not contract.is_valid(body)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (None, {"non_field_errors": ["Expected a JSON object, got null."]}),
        ([], {"non_field_errors": ["Expected a JSON object, got an array."]}),
        ({}, {"signals": ["This field is required."]}),
        ({"signals": None}, {"signals": ["This field may not be null."]}),
        ({"signals": {}}, {"signals": ["Expected an array, got an object."]}),
        ({"signals": []}, {"signals": ["This list may not be empty."]}),
        (
            {"signals": [{"type": "heartbeat", "seq": 1}] * 101},
            {"signals": ["Ensure this field has no more than 100 elements."]},
        ),
        ({"signals": [None]}, {"signals.0": ["This field may not be null."]}),
        ({"signals": ["beat"]}, {"signals.0.non_field_errors": ["Expected a JSON object, got a string."]}),
        (
            {"signals": [{"seq": 1.0, "value": 3}], "more": 1},
            {
                "signals.0.type": ["This field is required."],
                "signals.0.value": ["Expected a string, got a number."],
                "signals.0.seq": ["Expected an integer, got a number."],
                "more": ["Unknown field."],
            },
        ),
        ({"signals": [{"type": "nap", "seq": 1}]}, {"signals.0.type": ['"nap" is not a valid choice.']}),
        ({"signals": [{"type": "heartbeat", "seq": True}]}, {"signals.0.seq": ["Expected an integer, got a boolean."]}),
        (
            {"signals": [{"type": "heartbeat", "seq": -1}]},
            {"signals.0.seq": ["Ensure this value is greater than or equal to 0."]},
        ),
        (
            {"signals": [{"type": "heartbeat", "seq": 2**63}]},
            {"signals.0.seq": ["Ensure this value is less than or equal to 9223372036854775807."]},
        ),
        (
            {"signals": [{"type": "heartbeat", "value": "x", "seq": 1}]},
            {"signals.0.value": ["A heartbeat signal carries no value."]},
        ),
        ({"signals": [{"type": "call", "seq": 1}]}, {"signals.0.value": ["A call signal takes one of: end, start."]}),
        (
            {"signals": [{"type": "call", "value": "  ", "seq": 1}]},
            {"signals.0.value": ["This field may not be blank."]},
        ),
        (
            {"signals": [{"type": "call", "value": "a\x00" + "b" * 20, "seq": 1}]},
            {
                "signals.0.value": [
                    "Ensure this field has no more than 20 characters.",
                    "Null characters are not allowed.",
                ]
            },
        ),
        (
            {
                "signals": [
                    {"type": "heartbeat", "seq": 1, "colour": "red"},
                    {"type": "visibility", "value": "maybe", "seq": 2},
                ]
            },
            {
                "signals.0.colour": ["Unknown field."],
                "signals.1.value": ["A visibility signal takes one of: hidden, visible."],
            },
        ),
    ],
)
def test_an_invalid_batch_is_refused_in_the_apis_words(body, fields):
    with pytest.raises(wire.Invalid) as refused:
        wire.read_batch(body)

    assert refused.value.fields == fields
    assert list(refused.value.fields) == list(fields)  # in the order the fields were judged


def test_signals_are_read_in_the_order_given():
    body = {"signals": [{"type": "call", "value": "start", "seq": 9}, {"type": "heartbeat", "value": None, "seq": 3}]}

    assert wire.read_batch(body) == [
        wire.Signal(SignalType.CALL, "start", 9),
        wire.Signal(SignalType.HEARTBEAT, None, 3),
    ]
