"""Build the scorer the engine runs: adaptive over every slice when the model is there and no
width is pinned, else the plain registry choice (a pinned slice, the heuristic, a custom class)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from moodgate.config import Settings
from moodgate.emotion.base import Scorer
from moodgate.emotion.explicit import ExplicitScorer, WithExplicit, load_explicit
from moodgate.emotion.heuristic import HeuristicScorer
from moodgate.emotion.nested import SessionPool
from moodgate.emotion.registry import ScorerUnavailable, create_scorer, default_model_dir
from moodgate.runtime.adaptive import AdaptiveScorer
from moodgate.runtime.calibration import (
    CalibrationCache,
    CalibrationTable,
    Calibrator,
    MachineIdentity,
    SliceKey,
    calibrate,
    manifest_entries,
    ordered_keys,
)
from moodgate.runtime.selector import SliceSelector, build_ladder

log = logging.getLogger(__name__)

# Parallelism comes from the engine's worker threads, one item each; a session using more
# threads would only fight them for the same cores.
SESSION_THREADS = 1

SliceLoader = Callable[[Path, float, str, int], Scorer]


def load_nested_slice(
    model_dir: Path, width: float, precision: str, threads: int, pool: SessionPool | None = None
) -> Scorer:
    from moodgate.emotion.nested import load_scorer

    return load_scorer(
        model_dir, width=width, precision=precision, intra_op_threads=threads, pool=pool
    )


def read_manifest(model_dir: Path) -> dict[str, Any]:
    data = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data.get("slices"):
        raise ValueError(f"{model_dir / 'manifest.json'} lists no slices")
    return data


@dataclass
class SliceSet:
    """Every slice of the model, loaded, with its manifest entry and the calibration."""

    scorers: dict[SliceKey, Scorer]
    entries: dict[SliceKey, Mapping[str, Any]]
    table: CalibrationTable
    measured_now: bool


def load_slices(
    settings: Settings,
    loader: SliceLoader | None = None,
    calibrator: Calibrator | None = None,
    force: bool = False,
    threads: int = SESSION_THREADS,
    explicit: ExplicitScorer | None = None,
) -> SliceSet:
    """With `explicit`, each slice is timed together with the classifier at its paired size:
    the age presets test `explicit`, so that is what a picture costs on each rung."""
    model_dir = settings.model_dir or default_model_dir()
    entries = manifest_entries(read_manifest(model_dir))
    keys = ordered_keys(list(entries))
    # slices in one file share its session
    loader = loader or partial(load_nested_slice, pool=SessionPool())
    scorers = {key: loader(model_dir, key[0], key[1], threads) for key in keys}
    explicit_sha = str(explicit.spec["sha256"]) if explicit is not None else "none"
    identity = MachineIdentity.detect(model_dir / "manifest.json", threads, explicit_sha)
    timed: dict[SliceKey, Scorer] = (
        {key: WithExplicit(s, explicit) for key, s in scorers.items()} if explicit else scorers
    )
    table, measured = calibrate(
        CalibrationCache(settings.state_dir), identity, timed, entries, calibrator, force
    )
    return SliceSet(scorers, entries, table, measured)


def adaptive_scorer(
    slices: SliceSet,
    settings: Settings,
    in_flight: Callable[[], int] = lambda: 0,
    clock: Callable[[], float] | None = None,
) -> AdaptiveScorer:
    ladder = build_ladder(slices.table.slices)
    extra = {"clock": clock} if clock is not None else {}
    selector = SliceSelector(ladder, settings.latency_budget_ms, settings.worker_count, **extra)
    kept = {rung.key: slices.scorers[rung.key] for rung in ladder}
    return AdaptiveScorer(kept, selector, in_flight, settings.shed_overload)


@dataclass
class ExplicitModel:
    """The explicit classifier the engine runs, or why there is none."""

    scorer: ExplicitScorer | None
    error: str | None = None  # set when it was wanted but could not be loaded

    def state(self) -> dict[str, Any]:
        if self.scorer is not None:
            return {"model": self.scorer.name, "input_size": self.scorer.input_size}
        return {"model": None, "error": self.error}


def build_explicit(settings: Settings) -> ExplicitModel:
    """The explicit classifier beside the emotion model; a missing or corrupt one is logged
    and reported (rules testing `explicit` then never match), never fatal."""
    if not settings.explicit:
        return ExplicitModel(None)
    model_dir = settings.model_dir or default_model_dir()
    try:
        return ExplicitModel(load_explicit(model_dir, SESSION_THREADS))
    except Exception as exc:
        log.warning("explicit classifier unavailable (%s): rules testing explicit never match", exc)
        return ExplicitModel(None, f"cannot load the explicit classifier: {exc}")


def wants_adaptive(settings: Settings) -> bool:
    return settings.scorer in ("auto", "nested") and settings.model_width is None


def build_scorer(
    settings: Settings,
    in_flight: Callable[[], int] = lambda: 0,
    loader: SliceLoader | None = None,
    explicit: ExplicitScorer | None = None,
) -> Scorer:
    """The engine's scorer. `auto` without a usable model falls back to the heuristic."""
    model_dir = settings.model_dir or default_model_dir()
    if not wants_adaptive(settings) or not (model_dir / "manifest.json").exists():
        return create_scorer(
            settings.scorer, settings.model_dir, settings.model_width, settings.precision
        )
    try:
        slices = load_slices(settings, loader, explicit=explicit)
    except Exception as exc:
        if settings.scorer == "nested":
            raise ScorerUnavailable(f"cannot load the model from {model_dir}: {exc}") from exc
        log.warning("model unavailable (%s); falling back to the hand-crafted scorer", exc)
        return HeuristicScorer()
    scorer = adaptive_scorer(slices, settings, in_flight)
    state = scorer.state()
    log.info(
        "slice %s chosen for a %g ms budget (%s); ladder %s",
        state["chosen"], settings.latency_budget_ms,
        "calibrated now" if slices.measured_now else "cached calibration",
        " > ".join(state["ladder"]),  # type: ignore[arg-type]
    )  # fmt: skip
    return scorer
