"""Which slice scores the next item: the widest that keeps added latency inside the budget.

Pure logic (no threads, no model): a ladder of slices from the calibration table, the queue
depth, the rate items start and their observed service times in; a rung out. The clock is
injected so tests can drive minutes of load in microseconds.

Two signals, both scaled from the calibration by how much slower items really are here (decode
and contention with the proxy and other processes: an EWMA of observed / calibrated time):
- latency: an item joining the queue now waits `p95 × (1 + queued / workers)`;
- utilisation: items arriving per second × mean service time / workers. Past 1 the queue only
  grows, so a rung is left before that, and a wider rung is only tried again when it would
  run well below it. Arrivals count the items shed unscored too: they are load the rung
  would have faced, and counting only the scored ones would make shedding look like calm.
Stepping down happens at once, as far as needed; stepping back up needs the wider rung to fit
for `hold_s`, one rung at a time. The gap between `down_util` and `up_util` is the hysteresis
that stops the choice flapping at a load the wider rung can only just carry; and a climb that
has to be undone within a few holds doubles the hold (up to `max_hold_s`), so noise near the
budget costs a switch now and then, not one every two seconds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from moodgate.runtime.calibration import SliceKey, SliceTiming, slice_label

# The share of the latency budget that waiting for and running a worker may take when items are
# shed; the rest is the proxy's own path (reading the body, the event loop, sending it on).
QUEUE_SHARE = 0.75


@dataclass(frozen=True)
class Rung:
    key: SliceKey
    p50_ms: float
    p95_ms: float

    @property
    def label(self) -> str:
        return slice_label(self.key)


def mean_r(timing: SliceTiming) -> float | None:
    """Mean validation Pearson r of valence and arousal, when the manifest has them."""
    values = [
        timing.accuracy[k] for k in ("valence_r", "arousal_r") if k in (timing.accuracy or {})
    ]
    return sum(values) / len(values) if values else None


def build_ladder(
    timings: Sequence[SliceTiming], cheaper_by: float = 0.9, min_accuracy_share: float = 0.5
) -> list[Rung]:
    """Widest first, fp32 before int8 at a width; a slice is a rung only if it is clearly
    cheaper than the rung above (an int8 slice that measures no faster is no step down) and
    keeps at least `min_accuracy_share` of the best slice's accuracy: a fast slice that scores
    no better than chance would filter nothing, which is worse than filtering late."""
    known = [r for r in (mean_r(t) for t in timings) if r is not None]
    floor = min_accuracy_share * max(known) if known else None
    ordered = sorted(timings, key=lambda t: (-t.width, t.precision != "fp32", t.p50_ms))
    ladder: list[Rung] = []
    for timing in ordered:
        accuracy = mean_r(timing)
        if ladder and floor is not None and accuracy is not None and accuracy < floor:
            continue
        if ladder and timing.p50_ms > ladder[-1].p50_ms * cheaper_by:
            continue
        ladder.append(Rung(timing.key, timing.p50_ms, timing.p95_ms))
    return ladder


def initial_rung(ladder: Sequence[Rung], budget_ms: float) -> int:
    """The widest rung whose calibrated p95 fits the budget; the cheapest when none does."""
    for index, rung in enumerate(ladder):
        if rung.p95_ms <= budget_ms:
            return index
    return len(ladder) - 1


@dataclass(frozen=True)
class Switch:
    at: float
    rung: str
    reason: str
    predicted_ms: float
    in_flight: int


class SliceSelector:
    def __init__(
        self,
        ladder: Sequence[Rung],
        budget_ms: float,
        workers: int,
        clock: Callable[[], float] = time.monotonic,
        alpha: float = 0.2,
        down_util: float = 0.9,
        up_util: float = 0.65,
        hold_s: float = 2.0,
        rate_window_s: float = 2.0,
        max_hold_s: float = 32.0,
    ) -> None:
        if not ladder:
            raise ValueError("a selector needs at least one slice")
        self.ladder = list(ladder)
        self.budget_ms = budget_ms
        self.workers = max(1, workers)
        self.clock = clock
        self.alpha = alpha
        self.down_util = down_util
        self.up_util = up_util
        self.hold_s = hold_s
        self.max_hold_s = max_hold_s
        self.hold = hold_s  # the hold in force: longer after climbs that did not last
        self.rate_window_s = rate_window_s
        self.base = initial_rung(self.ladder, budget_ms)
        self.level = self.base
        self.slowdown = 1.0  # observed model time / calibrated median
        # Worker time outside the model (decode, resize, policy): about the same on every
        # slice, so it is added to each rung's model time rather than scaled with it.
        self.overhead_ms = 0.0
        # Observed wait of a scored item / the wait predicted when it was let in: what the
        # prediction misses (the event loop, the interpreter lock, other processes).
        self.wait_error = 1.0
        self.switches: deque[Switch] = deque(maxlen=64)
        self._index = {rung.key: i for i, rung in enumerate(self.ladder)}
        self._arrivals: deque[float] = deque(maxlen=8192)
        self._calm_since: float | None = None
        self._last_switch = clock()
        self._last_up: float | None = None

    @property
    def current(self) -> Rung:
        return self.ladder[self.level]

    @property
    def chosen(self) -> Rung:
        """The rung picked for an idle machine from the calibration alone."""
        return self.ladder[self.base]

    def observe(self, key: SliceKey, service_ms: float, model_ms: float | None = None) -> None:
        """One scored item's worker time (decode + score + act) on the slice that scored it,
        and, when known, the part of it spent in the model."""
        index = self._index.get(key)
        if index is None or service_ms <= 0:
            return
        if model_ms is None or not 0 < model_ms <= service_ms:
            model_ms, overhead = service_ms, None  # unsplit: all of it scales with the slice
        else:
            overhead = service_ms - model_ms
        ratio = model_ms / max(self.ladder[index].p50_ms, 1e-3)
        ratio = min(max(ratio, 0.25), 10.0)  # one stalled item must not swing everything
        self.slowdown += self.alpha * (ratio - self.slowdown)
        if overhead is not None:
            overhead = min(overhead, 10.0 * max(self.overhead_ms, self.ladder[index].p50_ms))
            self.overhead_ms += self.alpha * (overhead - self.overhead_ms)

    def service_ms(self, level: int, p95: bool = True) -> float:
        """Predicted worker time per item on `level`: the fixed part plus the scaled model."""
        rung = self.ladder[level]
        return self.overhead_ms + self.slowdown * (rung.p95_ms if p95 else rung.p50_ms)

    def predicted_ms(self, level: int, in_flight: int) -> float:
        """p95 added latency for an item that joins the queue now, were `level` scoring it."""
        queued = max(0, in_flight - self.workers)
        return self.service_ms(level) * (1.0 + queued / self.workers)

    def rate(self) -> float:
        """Items arriving per second over the last window, shed ones included."""
        return len(self._arrivals) / self.rate_window_s

    def _arrive(self, now: float) -> None:
        self._arrivals.append(now)
        while self._arrivals and self._arrivals[0] < now - self.rate_window_s:
            self._arrivals.popleft()

    def turned_away(self) -> None:
        """An arriving item was shed unscored: it still counts as demand."""
        self._arrive(self.clock())

    def utilisation(self, level: int) -> float:
        service_s = self.service_ms(level, p95=False) / 1000.0
        return self.rate() * service_s / self.workers

    def _fits(self, level: int, in_flight: int, utilisation: float) -> bool:
        return (
            self.predicted_ms(level, in_flight) <= self.budget_ms
            and self.utilisation(level) <= utilisation
        )

    def saturated(self, in_flight: int) -> bool:
        """On the narrowest rung and still predicted over the queue's share of the budget, as
        corrected by the waits items really had: slicing has nothing left."""
        last = len(self.ladder) - 1
        predicted = self.predicted_ms(last, in_flight) * max(1.0, self.wait_error)
        return self.level == last and predicted > self.budget_ms * QUEUE_SHARE

    def observe_wait(self, predicted_ms: float, waited_ms: float) -> None:
        """A scored item waited `waited_ms` from arrival to verdict, `predicted_ms` foreseen."""
        if predicted_ms <= 0 or waited_ms <= 0:
            return
        ratio = min(max(waited_ms / predicted_ms, 0.25), 10.0)
        self.wait_error += self.alpha * (ratio - self.wait_error)

    def update(self, in_flight: int) -> Rung:
        """Called as a worker starts an item; returns the rung that scores it."""
        now = self.clock()
        self._arrive(now)
        last = len(self.ladder) - 1
        if self.level < last and not self._fits(self.level, in_flight, self.down_util):
            target = self.level + 1
            while target < last and not self._fits(target, in_flight, self.down_util):
                target += 1
            self._switch(target, "down", now, in_flight)
            return self.current
        wider = self.level - 1
        if wider >= self.base and self._fits(wider, in_flight, self.up_util):
            if self._calm_since is None:
                self._calm_since = now
            if now - self._calm_since >= self.hold and now - self._last_switch >= self.hold:
                self._switch(wider, "up", now, in_flight)
        else:
            self._calm_since = None
        return self.current

    def _switch(self, level: int, reason: str, now: float, in_flight: int) -> None:
        if now - self._last_switch > self.max_hold_s:
            self.hold = self.hold_s  # long stable: forget earlier flapping
        if reason == "down" and self._last_up is not None and now - self._last_up < 4 * self.hold:
            self.hold = min(2 * self.hold, self.max_hold_s)
        if reason == "up":
            self._last_up = now
        self.level = level
        self._last_switch = now
        self._calm_since = None
        predicted = round(self.predicted_ms(level, in_flight), 2)
        self.switches.append(Switch(now, self.current.label, reason, predicted, in_flight))

    def state(self) -> dict[str, object]:
        return {
            "current": self.current.label,
            "chosen": self.chosen.label,
            "budget_ms": self.budget_ms,
            "slowdown": round(self.slowdown, 3),
            "overhead_ms": round(self.overhead_ms, 2),
            "wait_error": round(self.wait_error, 3),
            "rate_per_s": round(self.rate(), 2),
            "switches": len(self.switches),
            "hold_s": self.hold,
            "ladder": [rung.label for rung in self.ladder],
        }
