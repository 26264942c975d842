"""Slice selection as pure logic: injected latency tables, a fake clock, no model."""

from __future__ import annotations

import itertools

import pytest

from moodgate.runtime import SliceSelector, SliceTiming, build_ladder, initial_rung
from moodgate.runtime.selector import QUEUE_SHARE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def timing(width: float, precision: str, p50: float, p95: float | None = None) -> SliceTiming:
    return SliceTiming(width, precision, 224, p50, p95 or p50 * 1.2, p50, 30)


# A table like a weak router's: int8 a bit faster than fp32 at each width.
TABLE = [
    timing(1.0, "fp32", 80.0),
    timing(1.0, "int8", 60.0),
    timing(0.5, "fp32", 40.0),
    timing(0.5, "int8", 30.0),
    timing(0.25, "fp32", 20.0),
    timing(0.25, "int8", 15.0),
    timing(0.12, "int8", 8.0),
]


def selector(
    budget: float = 150.0, workers: int = 2, **kw: float
) -> tuple[SliceSelector, FakeClock]:
    clock = FakeClock()
    return SliceSelector(build_ladder(TABLE), budget, workers, clock=clock, **kw), clock


def test_ladder_is_widest_first_and_every_step_is_cheaper() -> None:
    ladder = build_ladder(TABLE)
    assert [r.label for r in ladder][:3] == ["w1/fp32", "w1/int8", "w0.5/fp32"]
    assert all(b.p50_ms < a.p50_ms for a, b in itertools.pairwise(ladder))


def test_an_int8_slice_that_is_no_faster_is_no_rung() -> None:
    slow_int8 = [timing(1.0, "fp32", 50.0), timing(1.0, "int8", 55.0), timing(0.5, "fp32", 30.0)]
    assert [r.label for r in build_ladder(slow_int8)] == ["w1/fp32", "w0.5/fp32"]


def test_initial_choice_is_the_widest_whose_p95_fits() -> None:
    ladder = build_ladder(TABLE)
    assert ladder[initial_rung(ladder, 150.0)].label == "w1/fp32"  # p95 96
    assert ladder[initial_rung(ladder, 60.0)].label == "w0.5/fp32"  # p95 48
    assert ladder[initial_rung(ladder, 1.0)].label == "w0.12/int8"  # nothing fits: cheapest


def test_idle_machine_stays_on_the_chosen_slice() -> None:
    sel, clock = selector()
    for _ in range(100):
        sel.observe(sel.current.key, sel.current.p50_ms * 1.1)
        assert sel.update(in_flight=1).label == "w1/fp32"
        clock.advance(0.1)
    assert not sel.switches


def test_a_queue_steps_down_at_once_as_far_as_needed() -> None:
    sel, _ = selector()
    # 10 queued behind 2 workers: 80 ms x (1 + 10/2) = 480 ms predicted at full width.
    rung = sel.update(in_flight=12)
    assert sel.predicted_ms(sel.level, 12) <= 150
    assert rung.label == "w0.25/fp32"
    assert sel.switches[-1].reason == "down"


def test_slow_service_alone_steps_down() -> None:
    sel, _ = selector()
    for _ in range(30):  # items take 2x the calibration (another process on the cores)
        sel.observe(sel.current.key, 160.0)
    assert sel.update(in_flight=1).label != "w1/fp32"
    assert sel.slowdown > 1.8


def test_recovery_waits_for_the_hold_and_climbs_one_rung_at_a_time() -> None:
    sel, clock = selector(hold_s=2.0)
    sel.update(in_flight=12)
    low = sel.level
    assert low > sel.base
    climbed = []
    for _ in range(200):
        clock.advance(0.1)
        sel.update(in_flight=0)
        climbed.append(sel.level)
    assert climbed[0] == low  # no instant jump back
    steps = [b for a, b in itertools.pairwise(climbed) if b != a]
    assert steps == list(range(low - 1, sel.base - 1, -1))
    assert sel.current.label == "w1/fp32"


def test_no_flapping_near_the_threshold() -> None:
    sel, clock = selector(hold_s=2.0)
    # Alternating bursts: the queue comes back well inside the hold, so no climb back happens.
    for i in range(100):
        clock.advance(0.25)
        sel.update(in_flight=12 if i % 4 == 0 else 0)
    downs = [s for s in sel.switches if s.reason == "down"]
    ups = [s for s in sel.switches if s.reason == "up"]
    assert len(downs) == 1 and not ups


def test_never_climbs_above_the_calibrated_choice() -> None:
    sel, clock = selector(budget=60.0)
    assert sel.chosen.label == "w0.5/fp32"
    for _ in range(100):
        clock.advance(1.0)
        sel.update(in_flight=0)
    assert sel.current.label == "w0.5/fp32"


def test_narrowest_slice_is_the_floor() -> None:
    sel, _ = selector()
    assert sel.update(in_flight=10_000).label == "w0.12/int8"
    assert sel.update(in_flight=10_000).label == "w0.12/int8"


def test_one_stalled_item_cannot_swing_the_estimate() -> None:
    sel, _ = selector()
    sel.observe(sel.current.key, 1e9)
    assert sel.slowdown < 11


def test_unknown_slices_are_ignored() -> None:
    sel, _ = selector()
    sel.observe((0.7, "fp16"), 500.0)
    assert sel.slowdown == 1.0


def test_sustained_rate_the_slice_cannot_carry_steps_down_and_stays_down() -> None:
    sel, clock = selector(hold_s=2.0)
    levels = []
    for _ in range(300):  # 30 items/s; full width needs 30 x 80 ms / 2 workers = 1.2 cores
        clock.advance(1 / 30)
        levels.append(sel.update(in_flight=2).label)
    assert levels[0] == "w1/fp32" and levels[-1] != "w1/fp32"
    assert sel.utilisation(sel.level) <= sel.down_util
    assert not [s for s in sel.switches if s.reason == "up"]  # no flapping back and forth
    for _ in range(100):  # the load falls to 5 items/s
        clock.advance(0.2)
        sel.update(in_flight=1)
    assert sel.current.label == "w1/fp32"


def test_saturated_only_on_the_narrowest_rung_over_budget() -> None:
    sel, _ = selector()
    assert not sel.saturated(in_flight=200)  # still on the widest: slicing has room
    sel.update(in_flight=200)
    assert sel.current.label == "w0.12/int8"
    assert sel.saturated(in_flight=200)
    assert not sel.saturated(in_flight=2)


def test_shedding_leaves_part_of_the_budget_to_the_proxy_and_learns_from_real_waits() -> None:
    sel, _ = selector(workers=1)
    sel.level = len(sel.ladder) - 1  # 9.6 ms p95 an item, one worker
    assert QUEUE_SHARE < 1
    assert not sel.saturated(in_flight=11)  # 10 queued: 105.6 ms foreseen
    assert sel.saturated(in_flight=12)  # 115.2 ms: under the budget, over the queue's share
    for _ in range(60):  # items waited twice what was foreseen (the loop, other processes)
        sel.observe_wait(predicted_ms=50.0, waited_ms=100.0)
    assert sel.wait_error == pytest.approx(2.0, rel=0.01)
    assert sel.saturated(in_flight=6)
    for _ in range(60):  # far quicker than foreseen: never looser than the prediction itself
        sel.observe_wait(predicted_ms=100.0, waited_ms=10.0)
    assert not sel.saturated(in_flight=11) and sel.saturated(in_flight=12)
    assert sel.state()["wait_error"] < 1


def test_climbs_that_do_not_last_lengthen_the_hold() -> None:
    sel, clock = selector(hold_s=2.0)
    sel.update(in_flight=12)  # down
    climbs = []
    for _ in range(1200):  # 120 s: calm, except a burst right after every climb
        clock.advance(0.1)
        before = sel.level
        sel.update(in_flight=0)
        if sel.level < before:
            climbs.append(clock.now)
            clock.advance(0.5)
            sel.update(in_flight=12)  # the wider slice could not carry it: down again
    gaps = [b - a for a, b in itertools.pairwise(climbs)]
    assert len(gaps) >= 3 and gaps[-1] > 3 * gaps[0]  # backing off, not every 2 s
    assert sel.hold <= sel.max_hold_s


def test_a_long_stable_stretch_resets_the_hold() -> None:
    sel, clock = selector(hold_s=2.0)
    sel.hold = 32.0
    sel.update(in_flight=12)
    clock.advance(40.0)
    sel.update(in_flight=30)  # the next switch comes after a long stable stretch
    assert sel.switches[-1].at == clock.now
    assert sel.hold == 2.0


def test_a_slice_no_better_than_chance_is_no_rung() -> None:
    def accurate(width: float, precision: str, p50: float, r: float) -> SliceTiming:
        return SliceTiming(width, precision, 224, p50, p50 * 1.2, p50, 30,
                           accuracy={"valence_r": r, "arousal_r": r})  # fmt: skip

    table = [accurate(1.0, "int8", 10.0, 0.62), accurate(0.5, "fp32", 5.0, 0.58),
             accurate(0.25, "int8", 3.3, 0.52), accurate(0.12, "int8", 2.0, 0.09)]  # fmt: skip
    assert [r.label for r in build_ladder(table)] == ["w1/int8", "w0.5/fp32", "w0.25/int8"]
    # Without accuracy in the manifest every cheaper slice stays a rung.
    assert len(build_ladder(TABLE)) == 7


def test_the_fixed_cost_per_item_is_added_to_every_rung_not_scaled_with_it() -> None:
    """Decode costs the same on every slice; were it folded into the model's slowdown, a
    narrow slice's decode would make every wider rung look several times too slow."""
    sel, _ = selector()
    sel.level = len(sel.ladder) - 1  # w0.12/int8, calibrated p50 8 ms
    for _ in range(60):
        sel.observe(sel.current.key, 24.0, model_ms=8.0)  # 16 ms of decode around the model
    assert abs(sel.slowdown - 1.0) < 0.01 and abs(sel.overhead_ms - 16.0) < 0.1
    widest = sel.ladder[0]  # w1/fp32: p50 80, p95 96
    assert abs(sel.service_ms(0) - (16.0 + widest.p95_ms)) < 0.5
    assert abs(sel.predicted_ms(0, 4) - 2 * (16.0 + widest.p95_ms)) < 1.0  # one item queued each
    unsplit, _ = selector()
    unsplit.level = len(unsplit.ladder) - 1
    for _ in range(60):
        unsplit.observe(unsplit.current.key, 24.0)  # no split known: all of it scales
    assert unsplit.overhead_ms == 0.0 and unsplit.service_ms(0) > 2.5 * widest.p95_ms


def test_contention_on_the_model_scales_only_the_model() -> None:
    sel, _ = selector()
    for _ in range(60):
        sel.observe(sel.current.key, 170.0, model_ms=160.0)  # w1/fp32 at twice its p50
    assert abs(sel.slowdown - 2.0) < 0.02 and abs(sel.overhead_ms - 10.0) < 0.1
    narrow = len(sel.ladder) - 1
    assert abs(sel.service_ms(narrow, p95=False) - (10.0 + 2.0 * 8.0)) < 0.5
