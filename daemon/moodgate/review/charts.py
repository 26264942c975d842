"""Server-side SVG: the circumplex (items and rule regions) and the decisions-per-day bars.

Plain strings, no plotting library and no JavaScript, so the page works offline on any phone.
Every text that comes from data goes through ``escape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from html import escape
from typing import Any

from moodgate.policy import Profile, Rule

COLOURS = {"pass": "#3a9d5d", "calm": "#e09a1a", "block": "#d0393e"}
_SIZE = 320
_PAD = 26
_INNER = _SIZE - 2 * _PAD


def _x(valence: float) -> float:
    return _PAD + (valence + 1.0) / 2.0 * _INNER


def _y(arousal: float) -> float:
    return _PAD + (1.0 - arousal) / 2.0 * _INNER


def rule_box(rule: Rule) -> tuple[float, float, float, float] | None:
    """(valence low, high, arousal low, high) of a rule's region; None if it tests only
    explicitness, which the plane cannot show."""
    box = {"valence": [-1.0, 1.0], "arousal": [-1.0, 1.0]}
    drawable = not rule.condition.comparisons
    for comparison in rule.condition.comparisons:
        if comparison.variable not in box:
            continue
        drawable = True
        bounds = box[comparison.variable]
        if comparison.op in (">", ">="):
            bounds[0] = max(bounds[0], comparison.value)
        else:
            bounds[1] = min(bounds[1], comparison.value)
    if not drawable:
        return None
    return box["valence"][0], box["valence"][1], box["arousal"][0], box["arousal"][1]


def _rect(box: tuple[float, float, float, float], style: str) -> str:
    v0, v1, a0, a1 = box
    x, y = _x(v0), _y(a1)
    w, h = max(0.0, _x(v1) - x), max(0.0, _y(a0) - y)
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" {style}/>'


def _frame(title: str) -> list[str]:
    mid = _SIZE / 2
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_SIZE} {_SIZE}" '
        f'role="img" aria-label="{escape(title)}" class="circumplex">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{_PAD}" y="{_PAD}" width="{_INNER}" height="{_INNER}" fill="#fafafa" '
        'stroke="#bbb"/>',
        f'<circle cx="{mid}" cy="{mid}" r="{_INNER / 2}" fill="none" stroke="#ddd"/>',
        f'<line x1="{_PAD}" y1="{mid}" x2="{_SIZE - _PAD}" y2="{mid}" stroke="#ccc"/>',
        f'<line x1="{mid}" y1="{_PAD}" x2="{mid}" y2="{_SIZE - _PAD}" stroke="#ccc"/>',
        f'<text x="{_SIZE - _PAD}" y="{_SIZE - _PAD + 13}" text-anchor="end" class="axis">'
        "pleasant →</text>",
        f'<text x="{_PAD}" y="{_SIZE - _PAD + 13}" class="axis">← unpleasant</text>',
        f'<text x="{_PAD + 4}" y="{_PAD - 8}" class="axis">↑ exciting (arousal)</text>',
    ]


def circumplex(
    profile: Profile | None,
    points: Sequence[dict[str, Any]],
    policy_profile: Profile | None = None,
    title: str = "Recent media on the valence–arousal circumplex",
) -> str:
    """Items as dots coloured by action over the profile's rule regions; where learning moved
    a rule, the policy file's region is drawn dashed beside the learnt one."""
    parts = _frame(title)
    rules = list(profile.rules) if profile and not profile.pass_all else []
    original = {r.name: r for r in policy_profile.rules} if policy_profile else {}
    hidden: list[str] = []
    labels: list[tuple[float, float, str]] = []
    for rule in reversed(rules):  # first rule wins, so it is drawn last, on top
        box = rule_box(rule)
        colour = COLOURS.get(rule.action.value, "#888")
        if box is None:
            hidden.append(f"{rule.name} ({rule.condition})")
            continue
        parts.append(_rect(box, f'fill="{colour}" fill-opacity="0.14" stroke="{colour}"'))
        before = original.get(rule.name)
        before_box = rule_box(before) if before else None
        if before_box is not None and before_box != box:
            parts.append(_rect(before_box, f'fill="none" stroke="{colour}" '
                               'stroke-dasharray="4 3" class="policy-region"'))  # fmt: skip
        labels.append((_x(box[0]) + 3, _y(box[3]) + 12, f'fill="{colour}">{escape(rule.name)} '
                       f"→ {rule.action.value}"))  # fmt: skip
    for point in points:
        action = escape(str(point["action"]))
        x, y = _x(float(point["valence"])), _y(float(point["arousal"]))
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill="{COLOURS.get(action, "#888")}" '
            f'fill-opacity="0.8" class="dot {action}"/>'
        )
    placed: list[tuple[float, float]] = []
    # Labels go over the dots, in rule order; labels that would overlap stack downwards.
    for x, y, text in reversed(labels):
        while any(abs(x - px) < 60 and abs(y - py) < 12 for px, py in placed):
            y += 13
        placed.append((x, y))
        parts.append(f'<text x="{x:.1f}" y="{y:.1f}" class="region" {text}</text>')
    if hidden:
        parts.append(f'<text x="{_PAD}" y="{_SIZE - 2}" class="axis">not drawn: '
                     f'{escape("; ".join(hidden))}</text>')  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts)


def rating_widget(decision_id: int, valence: float | None, arousal: float | None) -> str:
    """A small circumplex a parent clicks or drags on; review.js moves the marker and fills
    the form's hidden inputs."""
    marked = valence is not None and arousal is not None
    cx, cy = (_x(valence), _y(arousal)) if marked else (_SIZE / 2, _SIZE / 2)  # type: ignore[arg-type]
    parts = _frame("Rate how this felt: click or drag")
    parts[0] = parts[0].replace('class="circumplex"', f'class="rate" data-for="{decision_id}"')
    parts.append(
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="9" class="marker" '
        f'fill="#3060d0" fill-opacity="{0.9 if marked else 0.0}" stroke="#3060d0"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def timeline(days: Sequence[tuple[date, dict[str, int]]]) -> str:
    """Stacked bars: passed, calmed and blocked per day."""
    width, height, bottom = 28 * max(1, len(days)) + 20, 150, 126
    peak = max([sum(counts.values()) for _, counts in days] + [1])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="Decisions per day" class="timeline"><title>Decisions per day</title>',
        f'<line x1="10" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#bbb"/>',
        f'<text x="10" y="12" class="axis">max {peak}/day</text>',
    ]
    for index, (day, counts) in enumerate(days):
        x, y = 14 + index * 28, float(bottom)
        for action in ("pass", "calm", "block"):
            h = counts.get(action, 0) / peak * (bottom - 20)
            if h > 0:
                y -= h
                parts.append(
                    f'<rect x="{x}" y="{y:.1f}" width="20" height="{h:.1f}" '
                    f'fill="{COLOURS[action]}"><title>{day:%a %d %b}: {counts.get(action, 0)} '
                    f"{action}</title></rect>"
                )
        parts.append(f'<text x="{x + 10}" y="{bottom + 14}" text-anchor="middle" class="axis">'
                     f"{day:%d}</text>")  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts)
