"""Per-child preference learning: shift rule thresholds so labelled items get the labelled
action, regularised toward the policy file's values.

The model is the policy itself made soft: each comparison ``arousal > t`` becomes
``sigmoid((arousal − t − shift) / temperature)``, a rule fires with the product of its
comparisons, rules are tried in order (first match wins) and an item no rule takes passes.
The shifts minimise the expected number of labels decided wrongly, Σ (1 − P(labelled action)),
plus ``strength · Σ shift²`` (a prior centred on the policy). Each label counts at most 1, so
a handful of labels, or contradictory ones, cannot pay for a big move, while many consistent
ones move a rule to where the parents draw the line. numpy only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from moodgate.emotion.base import Emotion
from moodgate.policy import Action, Policy, Profile
from moodgate.review.adjust import AdjustmentFiles, ChildAdjustment, adjust_profile

log = logging.getLogger(__name__)

LABEL_ACTIONS: dict[str, Action] = {
    "fine": Action.PASS,
    "calm": Action.CALM,
    "block": Action.BLOCK,
}
_ACTIONS = (Action.PASS, Action.CALM, Action.BLOCK)
_VARIABLES = ("valence", "arousal", "explicit")
MAX_SHIFT = 0.5


@dataclass(frozen=True)
class LabelledItem:
    emotion: Emotion
    action: Action  # what the parents say should have happened
    profile: Profile  # the policy's profile that applied to the item (unadjusted)


@dataclass(frozen=True)
class FitSettings:
    temperature: float = 0.04  # softness of a threshold, about a scorer's noise
    # prior: a shift of 0.1 costs half a wrongly decided label, 0.3 costs 4.5 of them
    strength: float = 50.0
    grid: int = 101
    sweeps: int = 4


@dataclass(frozen=True)
class _Param:
    rule: str
    index: int


class ThresholdModel:
    """The soft policy over a fixed set of items, as a function of the shifts."""

    def __init__(self, items: Sequence[LabelledItem], settings: FitSettings) -> None:
        self.items = list(items)
        self.settings = settings
        self.params: list[_Param] = []
        shapes: dict[str, int] = {}
        for item in self.items:
            for rule in item.profile.rules:
                count = len(rule.condition.comparisons)
                if rule.name in shapes or count == 0:
                    continue
                shapes[rule.name] = count
                self.params += [_Param(rule.name, i) for i in range(count)]
        self._index = {(p.rule, p.index): k for k, p in enumerate(self.params)}
        self._values = np.array(
            [[getattr(i.emotion, v) if getattr(i.emotion, v) is not None else np.nan
              for v in _VARIABLES] for i in self.items], dtype=np.float64,
        ).reshape(len(self.items), len(_VARIABLES))  # fmt: skip
        self._target = np.array([_ACTIONS.index(i.action) for i in self.items], dtype=np.int64)
        groups: dict[int, tuple[Profile, list[int]]] = {}
        for row, item in enumerate(self.items):
            groups.setdefault(id(item.profile), (item.profile, []))[1].append(row)
        self._groups = [(profile, np.array(rows)) for profile, rows in groups.values()]

    def probabilities(self, shifts: np.ndarray) -> np.ndarray:
        """P(action) per item, shape (items, 3); vectorised over the items sharing a profile."""
        tau = self.settings.temperature
        out = np.zeros((len(self.items), len(_ACTIONS)))
        for profile, rows in self._groups:
            if profile.pass_all:
                out[rows, 0] = 1.0
                continue
            remaining = np.ones(len(rows))
            for rule in profile.rules:
                fires = np.ones(len(rows))
                for index, comparison in enumerate(rule.condition.comparisons):
                    values = self._values[rows, _VARIABLES.index(comparison.variable)]
                    k = self._index.get((rule.name, index))
                    threshold = comparison.value + (shifts[k] if k is not None else 0.0)
                    sign = 1.0 if comparison.op in (">", ">=") else -1.0
                    with np.errstate(over="ignore", invalid="ignore"):
                        soft = 1.0 / (1.0 + np.exp(-sign * (values - threshold) / tau))
                    # An unrated variable never trips a rule, as in Comparison.holds.
                    fires *= np.where(np.isnan(values), 0.0, soft)
                out[rows, _ACTIONS.index(rule.action)] += remaining * fires
                remaining = remaining * (1.0 - fires)
            out[rows, 0] += remaining
        return out

    def loss(self, shifts: np.ndarray) -> float:
        p = self.probabilities(shifts)[np.arange(len(self.items)), self._target]
        return float(np.sum(1.0 - p) + self.settings.strength * np.sum(shifts**2))

    def fit(self) -> np.ndarray:
        """Coordinate descent over a grid, then a finer grid: robust to the flat, non-convex
        landscape a few labels make, and cheap for the handful of thresholds a child has."""
        shifts = np.zeros(len(self.params))
        if not self.params or not self.items:
            return shifts
        steps = (np.linspace(-MAX_SHIFT, MAX_SHIFT, self.settings.grid),
                 np.linspace(-0.02, 0.02, 21))  # fmt: skip
        for grid_index, grid in enumerate(steps):
            for _ in range(self.settings.sweeps if grid_index == 0 else 2):
                changed = False
                for k in range(len(shifts)):
                    base = shifts[k] if grid_index else 0.0
                    best, best_loss = shifts[k], self.loss(shifts)
                    for value in np.clip(base + grid, -MAX_SHIFT, MAX_SHIFT):
                        trial = shifts.copy()
                        trial[k] = value
                        current = self.loss(trial)
                        if current < best_loss - 1e-9:
                            best, best_loss = value, current
                    changed |= best != shifts[k]
                    shifts[k] = best
                if not changed:
                    break
        return np.round(shifts, 4)

    def as_shifts(self, vector: np.ndarray) -> dict[str, tuple[float, ...]]:
        shifts: dict[str, list[float]] = {}
        for param, value in zip(self.params, vector, strict=True):
            shifts.setdefault(param.rule, []).append(float(value))
        return {name: tuple(values) for name, values in shifts.items()}


def fit_shifts(
    items: Sequence[LabelledItem], settings: FitSettings | None = None
) -> dict[str, tuple[float, ...]]:
    model = ThresholdModel(items, settings or FitSettings())
    return model.as_shifts(model.fit())


def _agreement(items: Sequence[LabelledItem], adjustment: ChildAdjustment | None) -> int:
    return sum(
        adjust_profile(item.profile, adjustment).decide(item.emotion).action is item.action
        for item in items
    )


@dataclass
class FitReport:
    child: str
    labels: int
    folds: int
    agreement_before: float | None  # share of held-out labels the policy already got right
    agreement_after: float | None  # ... and the learnt rules, fitted without those labels
    shifts: dict[str, tuple[float, ...]] = field(default_factory=dict)
    week_decisions: int = 0
    week_changed: int = 0
    rules: dict[str, str] = field(default_factory=dict)  # rule → "arousal > 0.5 → 0.42"

    def as_dict(self) -> dict[str, Any]:
        return {
            "child": self.child, "labels": self.labels, "folds": self.folds,
            "agreement_before": self.agreement_before, "agreement_after": self.agreement_after,
            "shifts": {k: list(v) for k, v in self.shifts.items()},
            "week_decisions": self.week_decisions, "week_changed": self.week_changed,
            "rules": self.rules,
        }  # fmt: skip

    def text(self) -> str:
        lines = [f"{self.child}: {self.labels} labels used"]
        if self.agreement_before is not None and self.agreement_after is not None:
            lines.append(
                f"  agreement on held-out labels ({self.folds}-fold): "
                f"{self.agreement_before:.0%} → {self.agreement_after:.0%}"
            )
        else:
            lines.append("  too few labels to cross-validate")
        for rule, change in self.rules.items():
            lines.append(f"  rule {rule}: {change}")
        if not self.rules:
            lines.append("  no rule moved: the policy's rules stay as written")
        lines.append(
            f"  last week: {self.week_changed} of {self.week_decisions} decisions would change"
        )
        return "\n".join(lines)


def cross_validate(
    items: Sequence[LabelledItem], settings: FitSettings, folds: int = 5, seed: int = 0
) -> tuple[int, float | None, float | None]:
    if len(items) < 4:
        return 0, None, None
    folds = min(folds, len(items))
    order = np.random.default_rng(seed).permutation(len(items))
    before = after = 0
    for fold in range(folds):
        held = [items[i] for i in order[fold::folds]]
        train = [items[i] for i in order if i not in set(order[fold::folds])]
        adjustment = ChildAdjustment(held[0].profile.child, fit_shifts(train, settings))
        before += _agreement(held, None)
        after += _agreement(held, adjustment)
    return folds, before / len(items), after / len(items)


def _parse_time(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _emotion(row: dict[str, Any]) -> Emotion | None:
    if row.get("valence") is None or row.get("arousal") is None:
        return None
    return Emotion(float(row["valence"]), float(row["arousal"]), row.get("explicit"))


def items_from_labels(
    policy: Policy, child: str, labels: Iterable[dict[str, Any]]
) -> list[LabelledItem]:
    """The newest action label per decision, with the profile in force at decision time."""
    latest: dict[Any, dict[str, Any]] = {}
    for label in labels:
        if label.get("label") in LABEL_ACTIONS and label.get("child") == child:
            key = label.get("decision_uid") or label.get("decision_id")
            if key not in latest or label["id"] > latest[key]["id"]:
                latest[key] = label
    items = []
    for label in sorted(latest.values(), key=lambda row: row["id"]):
        emotion = _emotion(label)
        if emotion is None:
            continue
        try:
            profile = policy.profile_named(child, _parse_time(label["decision_time"]))
        except (KeyError, ValueError, TypeError):
            continue
        items.append(LabelledItem(emotion, LABEL_ACTIONS[label["label"]], profile))
    return items


def count_changes(
    policy: Policy, child: str, adjustment: ChildAdjustment, rows: Iterable[dict[str, Any]]
) -> tuple[int, int]:
    """(scored decisions, how many the adjustment would decide differently)."""
    total = changed = 0
    for row in rows:
        emotion = _emotion(row)
        if emotion is None or row.get("outcome") not in ("scored", "cached"):
            continue
        try:
            profile = policy.profile_named(child, _parse_time(row["time"]))
        except (KeyError, ValueError):
            continue
        total += 1
        before = profile.decide(emotion).action
        changed += adjust_profile(profile, adjustment).decide(emotion).action is not before
    return total, changed


def describe_changes(items: Sequence[LabelledItem], adjustment: ChildAdjustment) -> dict[str, str]:
    described: dict[str, str] = {}
    for item in items:
        for rule in item.profile.rules:
            shifts = adjustment.shifts.get(rule.name)
            if rule.name in described or not shifts or all(abs(s) < 1e-9 for s in shifts):
                continue
            moved = adjust_profile(item.profile, adjustment)
            new = next(r for r in moved.rules if r.name == rule.name)
            described[rule.name] = f"{rule.condition} → {new.condition}"
    return described


class PreferenceLearner:
    """Refits children's adjustments from their labels and stores them (nightly, on demand)."""

    def __init__(
        self,
        state_dir: Path,
        policy: Callable[[], Policy],
        labels: Callable[[str | None], list[dict[str, Any]]],
        recent: Callable[[str, timedelta], list[dict[str, Any]]],
        settings: FitSettings | None = None,
    ) -> None:
        self.files = AdjustmentFiles(state_dir)
        self.policy = policy
        self.labels = labels
        self.recent = recent
        self.settings = settings or FitSettings()

    def children(self) -> list[str]:
        policy = self.policy()
        named = set(policy.profile_names())
        return sorted({str(r["child"]) for r in self.labels(None) if r["child"] in named})

    def refit(self, child: str, save: bool = True) -> FitReport:
        policy = self.policy()
        items = items_from_labels(policy, child, self.labels(child))
        shifts = fit_shifts(items, self.settings)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        adjustment = ChildAdjustment(child, shifts, len(items), stamp)
        folds, before, after = cross_validate(items, self.settings)
        week, changed = count_changes(policy, child, adjustment, self.recent(child, timedelta(7)))
        report = FitReport(child, len(items), folds, before, after, shifts, week, changed,
                           describe_changes(items, adjustment))  # fmt: skip
        if save:
            if items and not adjustment.is_identity():
                self.files.save(ChildAdjustment(child, shifts, len(items), stamp,
                                                report.as_dict()))  # fmt: skip
            else:
                self.files.reset(child)
        return report

    def refit_all(self) -> list[FitReport]:
        reports = []
        for child in self.children():
            try:
                reports.append(self.refit(child))
            except Exception:  # one child's odd data must not stop the others' refit
                log.exception("preference refit failed for %s", child)
        for report in reports:
            log.info("preference refit: %s", report.text().replace("\n", ";"))
        return reports
