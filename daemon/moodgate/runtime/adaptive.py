"""A Scorer that hands each item to the slice the selector picks; all slices stay loaded.

The pipeline asks `pick()` for the slice that will score one item and records that slice's
name, width and precision, so a switch between picking and recording cannot mislabel a
decision. Everything else (the calm loop, the CLI) just calls `score_frames`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from moodgate.emotion.base import Emotion, Scorer
from moodgate.runtime.calibration import SliceKey
from moodgate.runtime.selector import SliceSelector

if TYPE_CHECKING:
    from moodgate.pipeline import Verdict

# Shed when the event loop runs later than this share of the latency budget.
LOOP_LAG_SHARE = 1 / 6


class AdaptiveScorer:
    """Implements the Scorer protocol; its name/width/precision are those of the current slice."""

    def __init__(
        self,
        slices: Mapping[SliceKey, Scorer],
        selector: SliceSelector,
        in_flight: Callable[[], int] = lambda: 0,
        shed_overload: bool = False,
    ) -> None:
        missing = [rung.label for rung in selector.ladder if rung.key not in slices]
        if missing:
            raise ValueError(f"no loaded scorer for slice(s) {', '.join(missing)}")
        self.slices = dict(slices)
        self.selector = selector
        self.in_flight = in_flight
        self.shed_overload = shed_overload
        self.shed_count = 0
        self.loop_lag_ms = 0.0
        self._lock = threading.Lock()
        self._model_time = threading.local()  # per worker: ms in the slice for its item

    @property
    def current(self) -> Scorer:
        return self.slices[self.selector.current.key]

    @property
    def name(self) -> str:
        return self.current.name

    @property
    def width(self) -> float:
        return self.current.width

    @property
    def precision(self) -> str:
        return self.current.precision

    @property
    def input_size(self) -> int:
        return self.current.input_size

    def pick(self) -> Scorer:
        """The slice for the next item, chosen from the load right now. Its scoring time is
        kept for `observe`, which the same worker thread calls when the item is done."""
        with self._lock:
            rung = self.selector.update(self.in_flight())
        self._model_time.ms = 0.0
        return _Timed(self.slices[rung.key], self._model_time)

    def shed(self, in_flight: int, loop_lag_ms: float = 0.0) -> bool:
        """Whether to skip scoring an arriving item (only when shedding is switched on): the
        narrowest slice would still miss the budget, or the event loop itself runs late (the
        workers have taken the cores; more scoring would delay every request)."""
        if not self.shed_overload:
            return False
        with self._lock:
            self.loop_lag_ms = loop_lag_ms
            # Late with every worker busy: scoring is what holds the loop up, not a blip.
            busy = in_flight >= self.selector.workers
            late = busy and loop_lag_ms > self.selector.budget_ms * LOOP_LAG_SHARE
            if late or self.selector.saturated(in_flight):
                self.shed_count += 1
                self.selector.turned_away()
                return True
        return False

    def expected_ms(self, in_flight: int) -> float:
        """The wait foreseen for an item let in now (for `waited`)."""
        with self._lock:
            return self.selector.predicted_ms(self.selector.level, in_flight)

    def waited(self, expected_ms: float, waited_ms: float) -> None:
        with self._lock:
            self.selector.observe_wait(expected_ms, waited_ms)

    def score_frames(self, frames: Sequence[np.ndarray]) -> list[Emotion]:
        return self.pick().score_frames(frames)

    def observe(self, verdict: Verdict, service_ms: float) -> None:
        """Feed back one item's worker time; only plain scorings say how fast a slice is
        (a cache hit costs nothing, a calmed item costs the calm loop)."""
        if verdict.outcome != "scored" or verdict.calm_alpha is not None:
            return
        if verdict.model_width is None or verdict.precision is None:
            return
        model_ms = getattr(self._model_time, "ms", None) or None
        self._model_time.ms = None
        with self._lock:
            self.selector.observe((verdict.model_width, verdict.precision), service_ms, model_ms)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {**self.selector.state(), "shed": self.shed_count,
                    "loop_lag_ms": round(self.loop_lag_ms, 1)}  # fmt: skip


class _Timed:
    """A slice as handed to one item: the same scorer, adding its scoring time to `clock.ms`."""

    def __init__(self, scorer: Scorer, clock: threading.local) -> None:
        self.scorer = scorer
        self.clock = clock
        self.name = scorer.name
        self.width = scorer.width
        self.precision = scorer.precision
        self.input_size = scorer.input_size
        self.square_input = getattr(scorer, "square_input", False)

    def score_frames(self, frames: Sequence[np.ndarray]) -> list[Emotion]:
        with self.timed():
            return self.scorer.score_frames(frames)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Charge a block's time to this item's model time: the explicit rating paired with the
        slice, which calibration timed together with it."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if getattr(self.clock, "ms", None) is not None:
                self.clock.ms += (time.perf_counter() - start) * 1000.0
