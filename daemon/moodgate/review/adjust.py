"""Learnt rule adjustments: per child, a shift of each rule threshold, applied on top of the
policy file and stored as JSON in ``state_dir/learnt/<child>.json``.

A shift is relative to the policy's value, so editing the policy file still moves the rule;
deleting the file (``moodgate learn --reset``) restores the policy exactly.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from moodgate.policy import Client, Policy, Profile, Rule
from moodgate.policy.conditions import Comparison, Condition

_RANGES = {"valence": (-1.0, 1.0), "arousal": (-1.0, 1.0), "explicit": (0.0, 1.0)}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def learnt_dir(state_dir: Path) -> Path:
    return state_dir / "learnt"


@dataclass(frozen=True)
class ChildAdjustment:
    """Threshold shifts for one child's rules: rule name → one shift per comparison."""

    child: str
    shifts: dict[str, tuple[float, ...]]
    labels: int = 0
    fitted_at: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    def is_identity(self) -> bool:
        return all(abs(s) < 1e-9 for shifts in self.shifts.values() for s in shifts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "child": self.child,
            "shifts": {name: list(values) for name, values in self.shifts.items()},
            "labels": self.labels,
            "fitted_at": self.fitted_at,
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChildAdjustment:
        return cls(
            child=str(data["child"]),
            shifts={str(k): tuple(float(x) for x in v) for k, v in data["shifts"].items()},
            labels=int(data.get("labels", 0)),
            fitted_at=str(data.get("fitted_at", "")),
            report=dict(data.get("report", {})),
        )


def shifted_rule(rule: Rule, shifts: tuple[float, ...], labels: int) -> Rule:
    if len(shifts) != len(rule.condition.comparisons) or all(abs(s) < 1e-9 for s in shifts):
        return rule  # the rule's shape changed in the policy file: the old fit does not apply
    comparisons = []
    for comparison, shift in zip(rule.condition.comparisons, shifts, strict=True):
        low, high = _RANGES[comparison.variable]
        value = round(min(high, max(low, comparison.value + shift)), 4)
        comparisons.append(Comparison(comparison.variable, comparison.op, value))
    origin = f"{rule.origin or 'policy'}; learnt from {labels} parent labels"
    origin += f", the policy says {rule.condition}"
    return replace(rule, condition=Condition(tuple(comparisons)), origin=origin)


def adjust_profile(profile: Profile, adjustment: ChildAdjustment | None) -> Profile:
    if adjustment is None or profile.pass_all or adjustment.child != profile.child:
        return profile
    rules = tuple(
        shifted_rule(rule, adjustment.shifts[rule.name], adjustment.labels)
        if rule.name in adjustment.shifts
        else rule
        for rule in profile.rules
    )
    return replace(profile, rules=rules)


class AdjustmentFiles:
    """Reads and writes the per-child JSON files."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = learnt_dir(state_dir)

    def path(self, child: str) -> Path:
        if not _SAFE_NAME.match(child):
            raise ValueError(f"cannot store an adjustment for child name {child!r}")
        return self.directory / f"{child}.json"

    def load(self, child: str) -> ChildAdjustment | None:
        try:
            return ChildAdjustment.from_dict(json.loads(self.path(child).read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def load_all(self) -> dict[str, ChildAdjustment]:
        found: dict[str, ChildAdjustment] = {}
        if self.directory.exists():
            for path in sorted(self.directory.glob("*.json")):
                adjustment = self.load(path.stem)
                if adjustment is not None:
                    found[adjustment.child] = adjustment
        return found

    def save(self, adjustment: ChildAdjustment) -> Path:
        path = self.path(adjustment.child)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(adjustment.as_dict(), indent=2), encoding="utf-8")
        tmp.replace(path)
        return path

    def reset(self, child: str | None = None) -> list[str]:
        """Remove one child's (or every) adjustment; returns the children reset."""
        targets = [child] if child else list(self.load_all())
        removed = []
        for name in targets:
            try:
                self.path(name).unlink()
                removed.append(name)
            except FileNotFoundError:
                continue
        return removed

    def stamp(self) -> tuple[tuple[str, float], ...]:
        if not self.directory.exists():
            return ()
        return tuple(sorted((p.name, p.stat().st_mtime) for p in self.directory.glob("*.json")))


class AdjustedPolicy:
    """A Policy seen through learnt adjustments; quacks like Policy for explain_decision."""

    def __init__(self, policy: Policy, adjustments: dict[str, ChildAdjustment]) -> None:
        self.policy = policy
        self.adjustments = adjustments

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def profile_named(self, child: str, at: datetime) -> Profile:
        return adjust_profile(self.policy.profile_named(child, at), self.adjustments.get(child))

    def profile_for(self, client: Client, at: datetime) -> Profile:
        return self.profile_named(self.policy.owner(client), at)

    def profile_in(self, child: str, window: str | None = None) -> Profile:
        return adjust_profile(self.policy.profile_in(child, window), self.adjustments.get(child))


class LearntProfiles:
    """What the Engine uses on the hot path: adjusts a profile, cached per profile object,
    and notices new or removed adjustment files within ``recheck`` seconds."""

    def __init__(self, state_dir: Path, recheck: float = 2.0) -> None:
        self.files = AdjustmentFiles(state_dir)
        self.recheck = recheck
        self._lock = threading.Lock()
        self._adjustments: dict[str, ChildAdjustment] = {}
        self._stamp: tuple[tuple[str, float], ...] | None = None
        self._checked = 0.0
        self._cache: dict[int, tuple[Profile, Profile]] = {}
        self.reload()

    def reload(self) -> None:
        stamp = self.files.stamp()
        with self._lock:
            if stamp != self._stamp:
                self._adjustments = self.files.load_all()
                self._stamp = stamp
                self._cache.clear()
            self._checked = time.monotonic()

    @property
    def adjustments(self) -> dict[str, ChildAdjustment]:
        return dict(self._adjustments)

    def apply(self, profile: Profile) -> Profile:
        if time.monotonic() - self._checked > self.recheck:
            self.reload()
        if profile.child not in self._adjustments:
            return profile
        cached = self._cache.get(id(profile))
        if cached is not None and cached[0] is profile:
            return cached[1]
        adjusted = adjust_profile(profile, self._adjustments.get(profile.child))
        with self._lock:
            if len(self._cache) > 256:  # old policies' profiles; cheap to rebuild
                self._cache.clear()
            self._cache[id(profile)] = (profile, adjusted)
        return adjusted

    def policy(self, policy: Policy) -> AdjustedPolicy:
        if time.monotonic() - self._checked > self.recheck:
            self.reload()
        return AdjustedPolicy(policy, self.adjustments)
