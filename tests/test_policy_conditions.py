"""The rule-condition and calm-target mini language."""

from __future__ import annotations

import pytest

from moodgate.emotion.base import Emotion, VATarget
from moodgate.policy.conditions import parse_condition, parse_target


@pytest.mark.parametrize(
    ("text", "emotion", "expected"),
    [
        ("valence < -0.5 and arousal > 0.3", Emotion(-0.6, 0.4), True),
        ("valence < -0.5 and arousal > 0.3", Emotion(-0.6, 0.3), False),
        ("valence < -0.5 and arousal > 0.3", Emotion(-0.5, 0.9), False),
        ("arousal >= 0.2", Emotion(0, 0.2), True),
        ("arousal <= 0.2", Emotion(0, 0.2), True),
        ("0.3 < arousal", Emotion(0, 0.4), True),
        ("0.3 < arousal", Emotion(0, 0.3), False),
        ("Valence < 0 AND arousal > 0", Emotion(-0.1, 0.1), True),
        ("explicit > 0.5", Emotion(0, 0, 0.6), True),
        ("explicit > 0.5", Emotion(0, 0, None), False),  # unrated never trips
        ("always", Emotion(0, 0), True),
    ],
)
def test_condition_holds(text: str, emotion: Emotion, expected: bool) -> None:
    assert parse_condition(text).holds(emotion) is expected


def test_condition_round_trips_to_readable_text() -> None:
    assert str(parse_condition("valence<-0.5 and   arousal>0.3")) == (
        "valence < -0.5 and arousal > 0.3"
    )
    assert str(parse_condition("always")) == "always"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'the condition is empty; write e.g. "valence < -0.5 and arousal > 0.3" or "always"'),
        (
            "excitement > 0.3",
            "'excitement' is not something a rule can test; use valence, arousal or explicit",
        ),
        ("arousal = 0.3", "'=' is not a comparison a rule can use; use <, <=, > or >="),
        ("arousal > high", "'high' is not a number"),
        ("valence < -1.5", "valence runs from -1 to 1, so -1.5 is out of range"),
        ("explicit > -0.1", "explicit runs from 0 to 1, so -0.1 is out of range"),
        ("valence < 0 or arousal > 0", "'or' is not supported; write two rules instead"),
        (
            "valence < 0 and",
            "'and' needs a comparison on both sides; write e.g. "
            '"valence < -0.5 and arousal > 0.3"',
        ),
        (
            "scary",
            "'scary' is not a comparison; write e.g. 'arousal > 0.3' (valence, arousal "
            "or explicit, then <, <=, > or >=, then a number)",
        ),
    ],
)
def test_condition_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_condition(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("arousal <= -0.1", VATarget(arousal_at_most=-0.1)),
        ("valence >= 0", VATarget(valence_at_least=0.0)),
        ("arousal <= 0 and valence >= -0.2", VATarget(arousal_at_most=0, valence_at_least=-0.2)),
        ("-0.1 >= arousal", VATarget(arousal_at_most=-0.1)),
    ],
)
def test_targets(text: str, target: VATarget) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "arousal >= 0.5",
            "'arousal >= 0.5' cannot be a calm target; calming can only lower "
            "arousal ('arousal <= X') or raise valence ('valence >= X')",
        ),
        ("arousal <= 0 and arousal <= 0.1", "the target limits arousal twice"),
        ("", 'the target is empty; write e.g. "arousal <= -0.1"'),
    ],
)
def test_target_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_target(text)
    assert str(info.value) == message
