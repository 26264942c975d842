"""Pick a scorer by name: the nested ONNX model (any slice) or the hand-crafted baseline."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from moodgate.emotion.base import Scorer
from moodgate.emotion.heuristic import HeuristicScorer

log = logging.getLogger(__name__)

SCORERS = ("auto", "nested", "heuristic")


def default_model_dir() -> Path:
    """models/ of a source checkout (where the shipped artifacts live)."""
    return Path(__file__).resolve().parents[3] / "models"


class ScorerUnavailable(RuntimeError):
    """The requested scorer cannot be loaded (missing or corrupt model files)."""


def create_scorer(
    kind: str = "auto",
    model_dir: Path | None = None,
    width: float | None = None,
    precision: str | None = None,
    threads: int = 1,
) -> Scorer:
    """`nested` loads a slice of the ONNX model; `auto` falls back to `heuristic` if it can't."""
    if ":" in kind:
        return _import_scorer(kind)
    if kind not in SCORERS:
        raise ValueError(
            f"unknown scorer {kind!r}; choose one of {', '.join(SCORERS)} or module:Class"
        )
    if kind == "heuristic":
        return HeuristicScorer()
    model_dir = model_dir or default_model_dir()
    try:
        from moodgate.emotion.nested import load_scorer

        return load_scorer(model_dir, width=width, precision=precision, intra_op_threads=threads)
    except Exception as exc:
        if kind == "nested":
            raise ScorerUnavailable(f"cannot load the model from {model_dir}: {exc}") from exc
        log.warning("model unavailable (%s); falling back to the hand-crafted scorer", exc)
        return HeuristicScorer()


def _import_scorer(spec: str) -> Scorer:
    """A custom scorer class named `package.module:ClassName`, built with no arguments."""
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        scorer = getattr(module, class_name)()
    except Exception as exc:
        raise ScorerUnavailable(f"cannot load scorer {spec!r}: {exc}") from exc
    if not isinstance(scorer, Scorer):
        raise ScorerUnavailable(f"{spec!r} does not implement the Scorer interface")
    return scorer
