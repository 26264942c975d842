"""The adaptive scorer in the pipeline and the engine: the recorded slice is the one that scored,
the cache never hides a wider slice's better score, and the engine wires it from a manifest."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest

from moodgate.addon import OPTIONS
from moodgate.config import ConfigError, Settings
from moodgate.emotion.heuristic import HeuristicScorer
from moodgate.emotion.registry import ScorerUnavailable
from moodgate.pipeline import ImagePipeline
from moodgate.policy import Client, parse_policy
from moodgate.runtime import AdaptiveScorer, SliceSelector, SliceTiming, build_ladder, build_scorer
from moodgate.runtime import build as runtime_build
from moodgate.runtime.adaptive import LOOP_LAG_SHARE
from moodgate.runtime.lag import LoopLag
from runtime_fakes import FakeLoader, FakeSlice, write_manifest

PASS_ALL = "version: 1\ndefault:\n  preset: none\n"


def profile():
    return parse_policy(PASS_ALL).profile_for(Client("10.0.0.5", None), datetime.now().astimezone())


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def adaptive(in_flight: list[int]) -> tuple[AdaptiveScorer, dict[tuple[float, str], FakeSlice]]:
    timings = [
        SliceTiming(1.0, "fp32", 64, 80.0, 96.0, 80.0, 20),
        SliceTiming(0.5, "int8", 64, 30.0, 36.0, 30.0, 20),
        SliceTiming(0.25, "int8", 64, 10.0, 12.0, 10.0, 20),
    ]
    slices = {t.key: FakeSlice(*t.key) for t in timings}
    selector = SliceSelector(build_ladder(timings), 150.0, 2, clock=Clock())
    return AdaptiveScorer(slices, selector, lambda: in_flight[0]), slices


def test_it_is_a_scorer_that_reports_the_current_slice() -> None:
    load = [0]
    scorer, _ = adaptive(load)
    assert (scorer.name, scorer.width, scorer.precision) == ("nested", 1.0, "fp32")
    load[0] = 40
    scorer.score_frames([])
    assert (scorer.width, scorer.precision) == (0.25, "int8")


def test_decision_records_the_slice_that_scored_even_if_load_switches_meanwhile(media) -> None:
    load = [0]
    scorer, slices = adaptive(load)

    def surge() -> None:  # the queue explodes while the full slice is scoring this item
        load[0] = 40
        scorer.pick()

    slices[(1.0, "fp32")].during = surge
    verdict = ImagePipeline(scorer).judge(media["calm.jpg"], profile(), "x.org")
    assert scorer.width == 0.25  # switched...
    assert (verdict.model_width, verdict.precision) == (1.0, "fp32")  # ...but recorded right


def test_cache_keeps_scores_but_not_past_a_wider_slice(media) -> None:
    load = [40]
    scorer, slices = adaptive(load)
    pipeline = ImagePipeline(scorer)
    first = pipeline.judge(media["calm.jpg"], profile(), "x.org")
    assert (first.outcome, first.model_width) == ("scored", 0.25)
    again = pipeline.judge(media["calm.jpg"], profile(), "x.org")
    assert (again.outcome, again.model_width) == ("cached", 0.25)
    load[0] = 0  # load gone: the selector climbs back after its hold
    scorer.selector.level = scorer.selector.base
    wide = pipeline.judge(media["calm.jpg"], profile(), "x.org")
    assert (wide.outcome, wide.model_width) == ("scored", 1.0)
    assert pipeline.judge(media["calm.jpg"], profile(), "x.org").outcome == "cached"
    assert slices[(1.0, "fp32")].calls == 1 and slices[(0.25, "int8")].calls == 1


def test_only_plain_scorings_feed_the_estimate(media) -> None:
    scorer, _ = adaptive([0])
    pipeline = ImagePipeline(scorer)
    verdict = pipeline.judge(media["calm.jpg"], profile(), "x.org")
    level = scorer.selector.level
    calibrated = scorer.selector.service_ms(level)
    scorer.observe(verdict, 160.0)
    # The fake slice scores in no time: the 160 ms were decode and the rest, not the model.
    assert scorer.selector.overhead_ms > 0 and scorer.selector.slowdown < 1.0
    assert scorer.selector.service_ms(level) > calibrated
    before = (scorer.selector.slowdown, scorer.selector.overhead_ms)
    cached = pipeline.judge(media["calm.jpg"], profile(), "x.org")
    scorer.observe(cached, 10_000.0)
    assert (scorer.selector.slowdown, scorer.selector.overhead_ms) == before


def test_build_scorer_is_adaptive_over_the_manifest(tmp_path: Path) -> None:
    write_manifest(tmp_path / "models")
    settings = Settings(state_dir=tmp_path / "state", model_dir=tmp_path / "models")
    loader = FakeLoader()
    scorer = build_scorer(settings, loader=loader)
    assert isinstance(scorer, AdaptiveScorer)
    assert {(w, p) for w, p, _ in loader.loaded} == {(1.0, "fp32"), (1.0, "int8"),
                                                      (0.5, "int8"), (0.25, "int8")}  # fmt: skip
    assert all(threads == 1 for *_, threads in loader.loaded)
    table = (tmp_path / "state" / "calibration.json").read_text()
    assert "valence_r" in table  # the manifest's accuracy travels with the timings
    start = time.perf_counter()
    build_scorer(settings, loader=FakeLoader())  # a restart: cached, no measuring
    assert time.perf_counter() - start < 0.5


def test_a_pinned_width_or_the_heuristic_is_not_adaptive(tmp_path: Path) -> None:
    write_manifest(tmp_path / "models")
    heuristic = Settings(state_dir=tmp_path, model_dir=tmp_path / "models", scorer="heuristic")
    assert isinstance(build_scorer(heuristic, loader=FakeLoader()), HeuristicScorer)


def test_a_broken_model_falls_back_or_fails_as_asked(tmp_path: Path) -> None:
    write_manifest(tmp_path / "models")

    def broken(*args: object) -> FakeSlice:
        raise OSError("truncated file")

    auto = Settings(state_dir=tmp_path, model_dir=tmp_path / "models")
    assert isinstance(build_scorer(auto, loader=broken), HeuristicScorer)
    with pytest.raises(ScorerUnavailable):
        build_scorer(Settings(state_dir=tmp_path, model_dir=tmp_path / "models",
                              scorer="nested"), loader=broken)  # fmt: skip


def test_engine_runs_adaptive_and_records_the_slice(
    tmp_path: Path, media, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moodgate.engine import Engine, MediaResponse

    write_manifest(tmp_path / "models")
    monkeypatch.setattr(runtime_build, "load_nested_slice", FakeLoader())
    settings = Settings(state_dir=tmp_path / "state", model_dir=tmp_path / "models", workers=2)
    engine = Engine(settings)
    assert engine.adaptive is not None and not engine.scorer_fallback
    engine.start()
    try:
        response = MediaResponse(Client("10.0.0.5", None), "x.org", "/a.jpg", "image/jpeg",
                                 media["calm.jpg"])  # fmt: skip
        verdict = asyncio.run(engine.judge(response))
        worked = []
        work = engine._work
        engine._work = lambda *args: worked.append(1) or work(*args)  # type: ignore[method-assign]
        again = asyncio.run(engine.judge(response))  # known bytes that pass: no worker
    finally:
        engine.stop()
    assert verdict.outcome == "scored" and verdict.model_width is not None
    assert again.outcome == "cached" and again.emotion == verdict.emotion and not worked
    with sqlite3.connect(settings.database) as db:
        rows = db.execute("SELECT scorer, model_width, precision, outcome, uid FROM decisions "
                          "ORDER BY id").fetchall()  # fmt: skip
    assert [row[:4] for row in rows] == [("nested", verdict.model_width, verdict.precision,
                                          outcome) for outcome in ("scored", "cached")]
    assert all(row[4] for row in rows)


def test_shedding_is_off_unless_asked() -> None:
    scorer, _ = adaptive([0])
    scorer.selector.level = len(scorer.selector.ladder) - 1
    assert not scorer.shed(10_000)
    scorer.shed_overload = True
    assert scorer.shed(10_000) and not scorer.shed(1)
    assert scorer.state()["shed"] == 1


def test_shedding_when_the_event_loop_falls_behind() -> None:
    """Late timers with every worker busy mean scoring has taken the cores from the loop."""
    scorer, _ = adaptive([0])
    scorer.shed_overload = True
    budget, workers = scorer.selector.budget_ms, scorer.selector.workers
    late = budget * LOOP_LAG_SHARE + 1
    assert scorer.shed(workers, loop_lag_ms=late)
    assert not scorer.shed(workers - 1, loop_lag_ms=late)  # a blip, workers not all busy
    assert not scorer.shed(workers, loop_lag_ms=late - 2)
    assert scorer.state()["loop_lag_ms"] == round(late - 2, 1) and scorer.state()["shed"] == 1


def test_items_shed_still_count_as_load_so_shedding_never_looks_calm() -> None:
    """100 items/s arrive and the narrowest slice scores 1 in 20: the wider slice could not
    carry the 100, so the selector must not climb because only 5 a second reach a worker."""
    scorer, _ = adaptive([0])
    scorer.shed_overload = True
    selector = scorer.selector
    narrowest = len(selector.ladder) - 1
    selector.level = narrowest
    clock = selector.clock
    for k in range(1000):  # 10 s
        clock.now += 0.01
        if k % 20 == 0:
            selector.update(in_flight=1)  # the few that start find the workers free
        else:
            assert scorer.shed(40)
    assert selector.level == narrowest
    assert selector.rate() == pytest.approx(100, rel=0.02)
    for _ in range(100):  # the burst is over: 5 items/s, none shed
        clock.now += 0.2
        selector.update(in_flight=1)
    assert selector.level < narrowest


def test_loop_lag_sees_a_stalled_loop_and_forgets_it() -> None:
    lag = LoopLag(interval_s=0.01)
    lag.observe(0.2)
    assert lag.lag_ms == 200
    lag.observe(0.0)
    assert lag.lag_ms == pytest.approx(160)  # falls by `decay` a tick, not at once

    async def stall() -> float:
        watcher = LoopLag(interval_s=0.01)
        watcher.start()
        await asyncio.sleep(0.05)
        time.sleep(0.12)  # a worker-starved loop: nothing runs for 120 ms
        await asyncio.sleep(0.015)
        seen = watcher.lag_ms
        watcher.stop()
        return seen

    assert asyncio.run(stall()) >= 60
    LoopLag().start()  # no running loop: nothing to watch, and no error


def shedding_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: object):
    """An engine over fake slices with `shed_overload` on."""
    from moodgate.engine import Engine

    write_manifest(tmp_path / "models")
    monkeypatch.setattr(runtime_build, "load_nested_slice", FakeLoader())
    engine = Engine(Settings(state_dir=tmp_path / "state", model_dir=tmp_path / "models",
                             shed_overload=True, **settings))  # fmt: skip
    assert engine.adaptive is not None
    return engine


def test_engine_sheds_to_on_timeout_when_saturated(
    tmp_path: Path, media, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moodgate.engine import MediaResponse

    engine = shedding_engine(tmp_path, monkeypatch)
    engine.adaptive.selector.level = len(engine.adaptive.selector.ladder) - 1
    engine.in_flight = 10**9  # a queue no slice could clear within the budget
    engine.start()
    try:
        response = MediaResponse(Client("10.0.0.5", None), "x.org", "/a.jpg", "image/jpeg",
                                 media["calm.jpg"])  # fmt: skip
        verdict = asyncio.run(engine.judge(response))
    finally:
        engine.stop()
    assert verdict.outcome == "timeout" and verdict.error.startswith("shed")


def test_with_shedding_one_core_is_left_to_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert Settings(state_dir=tmp_path).worker_count == 4
    assert Settings(state_dir=tmp_path, shed_overload=True).worker_count == 3
    assert Settings(state_dir=tmp_path, shed_overload=True, workers=4).worker_count == 4
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert Settings(state_dir=tmp_path, shed_overload=True).worker_count == 1


def test_engine_feeds_back_how_long_admitted_items_really_waited(
    tmp_path: Path, media, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moodgate.engine import MediaResponse

    engine = shedding_engine(tmp_path, monkeypatch, cache_entries=0)
    selector = engine.adaptive.selector
    engine.start()
    try:
        for name in ("calm.jpg", "vivid.jpg"):
            response = MediaResponse(Client("10.0.0.5", None), "x.org", "/" + name,
                                     "image/jpeg", media[name])  # fmt: skip
            assert asyncio.run(engine.judge(response)).outcome == "scored"
    finally:
        engine.stop()
    assert selector.wait_error != 1.0


def test_status_report_carries_the_selector_state(
    tmp_path: Path, media, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status.json (what `moodgate status` reads) says which slice runs and how loaded it is."""
    from types import SimpleNamespace

    from moodgate.addon import settings_from_options
    from moodgate.engine import Engine
    from moodgate.service import ServiceHooks

    write_manifest(tmp_path / "models")
    monkeypatch.setattr(runtime_build, "load_nested_slice", FakeLoader())
    options = SimpleNamespace(**{name: default for name, (_, default, _) in OPTIONS.items()})
    options.moodgate_state_dir = str(tmp_path / "state")
    options.moodgate_model_dir = str(tmp_path / "models")
    options.moodgate_shed_overload = "on"
    engine = Engine(settings_from_options(options))
    assert engine.adaptive is not None and engine.adaptive.shed_overload
    engine.adaptive.selector.level = len(engine.adaptive.selector.ladder) - 1
    assert engine.adaptive.shed(10**9)
    master = SimpleNamespace(addons=SimpleNamespace(get=lambda name: None))
    hooks = ServiceHooks(SimpleNamespace(engine=engine), master, "regular", tmp_path / "state")
    selector = hooks.snapshot().extra["selector"]
    assert selector["current"] == engine.adaptive.selector.current.label
    assert selector["shed"] == 1 and selector["ladder"]
    options.moodgate_shed_overload = "perhaps"
    with pytest.raises(ConfigError, match="shed_overload"):
        settings_from_options(options)
