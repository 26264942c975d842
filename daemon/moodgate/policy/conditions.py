"""The tiny language of rule conditions and calm targets.

``when: "valence < -0.5 and arousal > 0.3"`` and ``target: "arousal <= -0.1"``: comparisons of
valence, arousal or explicit against a number, joined by ``and``. Parents read and write these,
so every error names what was written and what would have worked.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from moodgate.emotion.base import Emotion, VATarget

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# Flipping lets parents write "0.3 < arousal" as naturally as "arousal > 0.3".
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_RANGES = {"valence": (-1.0, 1.0), "arousal": (-1.0, 1.0), "explicit": (0.0, 1.0)}
_ALWAYS = {"always", "true", "any", "anything"}
_COMPARISON = re.compile(
    r"^\s*(?P<left>[^<>=!\s]+)\s*(?P<op><=|>=|==|!=|=<|=>|<|>|=)\s*(?P<right>\S+)\s*$"
)
_EXAMPLE = '"valence < -0.5 and arousal > 0.3"'


@dataclass(frozen=True)
class Comparison:
    variable: str  # valence | arousal | explicit
    op: str  # < <= > >=
    value: float

    def holds(self, emotion: Emotion) -> bool:
        actual = getattr(emotion, self.variable)
        # An item the scorer could not rate for explicitness never trips an explicit rule.
        if actual is None:
            return False
        return _OPS[self.op](float(actual), self.value)

    def __str__(self) -> str:
        return f"{self.variable} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Condition:
    """All comparisons must hold; no comparisons at all means "always"."""

    comparisons: tuple[Comparison, ...]

    def holds(self, emotion: Emotion) -> bool:
        return all(c.holds(emotion) for c in self.comparisons)

    def __str__(self) -> str:
        if not self.comparisons:
            return "always"
        return " and ".join(str(c) for c in self.comparisons)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None


def _comparison(part: str) -> Comparison:
    match = _COMPARISON.match(part)
    if not match:
        raise ValueError(
            f"'{part.strip()}' is not a comparison; write e.g. 'arousal > 0.3' "
            "(valence, arousal or explicit, then <, <=, > or >=, then a number)"
        )
    left, op, right = match["left"], match["op"], match["right"]
    if op not in _OPS:
        raise ValueError(f"'{op}' is not a comparison a rule can use; use <, <=, > or >=")
    if left.lower() not in _RANGES and right.lower() in _RANGES:
        left, right, op = right, left, _FLIPPED[op]
    variable = left.lower()
    if variable not in _RANGES:
        raise ValueError(
            f"'{left}' is not something a rule can test; use valence, arousal or explicit"
        )
    value = _number(right)
    low, high = _RANGES[variable]
    if not low <= value <= high:
        raise ValueError(f"{variable} runs from {low:g} to {high:g}, so {value:g} is out of range")
    return Comparison(variable, op, value)


def _parts(text: str) -> list[str]:
    if re.search(r"\bor\b", text, re.IGNORECASE):
        raise ValueError("'or' is not supported; write two rules instead")
    return re.split(r"\band\b", text, flags=re.IGNORECASE)


def parse_condition(text: str) -> Condition:
    """Parse a rule's ``when``; raises ValueError with a plain-words message."""
    stripped = text.strip()
    if not stripped:
        raise ValueError(f'the condition is empty; write e.g. {_EXAMPLE} or "always"')
    if stripped.lower() in _ALWAYS:
        return Condition(())
    comparisons = []
    for part in _parts(stripped):
        if not part.strip():
            raise ValueError(f"'and' needs a comparison on both sides; write e.g. {_EXAMPLE}")
        comparisons.append(_comparison(part))
    return Condition(tuple(comparisons))


def parse_target(text: str) -> VATarget:
    """Parse a calm ``target``: only lower arousal and/or higher valence make sense."""
    stripped = text.strip()
    if not stripped:
        raise ValueError('the target is empty; write e.g. "arousal <= -0.1"')
    arousal: float | None = None
    valence: float | None = None
    for part in _parts(stripped):
        if not part.strip():
            raise ValueError(
                "'and' needs a comparison on both sides; write e.g. "
                '"arousal <= -0.1 and valence >= 0"'
            )
        c = _comparison(part)
        if c.variable == "arousal" and c.op in ("<", "<="):
            if arousal is not None:
                raise ValueError("the target limits arousal twice")
            arousal = c.value
        elif c.variable == "valence" and c.op in (">", ">="):
            if valence is not None:
                raise ValueError("the target limits valence twice")
            valence = c.value
        else:
            raise ValueError(
                f"'{part.strip()}' cannot be a calm target; calming can only lower arousal "
                "('arousal <= X') or raise valence ('valence >= X')"
            )
    return VATarget(arousal_at_most=arousal, valence_at_least=valence)


def describe_target(target: VATarget) -> str:
    parts = []
    if target.arousal_at_most is not None:
        parts.append(f"arousal <= {target.arousal_at_most:g}")
    if target.valence_at_least is not None:
        parts.append(f"valence >= {target.valence_at_least:g}")
    return " and ".join(parts) or "anything"
