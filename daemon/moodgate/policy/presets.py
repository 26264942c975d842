"""Age presets: sensible emotion regions a parent starts from and overrides by rule name.

Younger children get lower thresholds and must reach their calm target (else block); teens
see almost everything and only the extremes are touched.
"""

from __future__ import annotations

from moodgate.policy.conditions import parse_condition, parse_target
from moodgate.policy.model import Action, Rule

# name, when, action, target, if_unreached
_Row = tuple[str, str, Action, str | None, Action]

_TABLE: dict[str, tuple[_Row, ...]] = {
    "under-8": (
        ("explicit", "explicit > 0.3", Action.BLOCK, None, Action.CALM),
        ("scary", "valence < -0.3 and arousal > 0", Action.BLOCK, None, Action.CALM),
        ("sad", "valence < -0.5", Action.CALM, "valence >= -0.2 and arousal <= 0", Action.BLOCK),
        ("intense", "arousal > 0.3", Action.CALM, "arousal <= 0", Action.BLOCK),
    ),
    "8-12": (
        ("explicit", "explicit > 0.5", Action.BLOCK, None, Action.CALM),
        ("scary", "valence < -0.5 and arousal > 0.3", Action.BLOCK, None, Action.CALM),
        ("intense", "arousal > 0.5", Action.CALM, "arousal <= 0.2", Action.CALM),
    ),
    "teen": (
        ("explicit", "explicit > 0.7", Action.BLOCK, None, Action.CALM),
        ("scary", "valence < -0.7 and arousal > 0.6", Action.BLOCK, None, Action.CALM),
        ("intense", "arousal > 0.8", Action.CALM, "arousal <= 0.5", Action.CALM),
    ),
    "none": (),
}

PRESET_NAMES = tuple(_TABLE)
DEFAULT_PRESET = "8-12"


def preset_rules(name: str) -> tuple[Rule, ...]:
    """Raises KeyError for an unknown preset."""
    return tuple(
        Rule(
            name=rule_name,
            condition=parse_condition(when),
            action=action,
            target=parse_target(target) if target else None,
            if_unreached=if_unreached,
            origin=f"preset {name}",
        )
        for rule_name, when, action, target, if_unreached in _TABLE[name]
    )
