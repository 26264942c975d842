"""`explicit` in the image and video pipelines: rated only for profiles whose rules test it,
cached with the score, and deciding like valence and arousal do."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import video_factory as vf
from moodgate.config import Settings
from moodgate.emotion.explicit import load_explicit
from moodgate.emotion.heuristic import HeuristicScorer
from moodgate.emotion.registry import default_model_dir
from moodgate.pipeline import ImagePipeline
from moodgate.policy import Action, Client, parse_policy
from moodgate.runtime import AdaptiveScorer, SliceSelector, SliceTiming, build_ladder
from moodgate.runtime.build import load_slices
from moodgate.runtime.calibration import Calibrator, format_table
from moodgate.video_pipeline import VideoPipeline, VideoRequest
from runtime_fakes import FakeLoader, FakeSlice, write_manifest

POLICY = """\
version: 1
children:
  young:
    users: [young]
    preset: none
    rules:
      - name: explicit
        when: "explicit > 0.5"
        action: block
  older:
    users: [older]
    preset: none
    rules:
      - name: lively
        when: "arousal > 0.9"
        action: block
  preset:
    users: [preset]
    preset: 8-12
  preset-off:
    users: [preset-off]
    preset: 8-12
    rules:
      - name: explicit
        enabled: false
default:
  preset: none
"""


class FixedExplicit:
    """Rates every frame the same, and counts how often it was asked."""

    name = "fixed"
    input_size = 32

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = 0
        self.sizes: list[tuple[int, ...]] = []

    def size_for(self, slice_width: float, slice_input: int) -> int:
        return self.input_size

    def rate(self, frames: Sequence[np.ndarray], size: int | None = None) -> list[float]:
        self.calls += 1
        self.sizes += [f.shape for f in frames]
        return [self.value] * len(frames)


def profile(user: str):
    return parse_policy(POLICY).profile_for(Client("10.0.0.5", user), datetime.now().astimezone())


def test_profiles_know_whether_they_test_explicit() -> None:
    assert profile("young").tests_explicit
    assert not profile("older").tests_explicit
    assert profile("preset").tests_explicit  # every age preset has an explicit rule
    assert not profile("preset-off").tests_explicit  # switched off by the parent


def test_explicit_decides_and_is_rated_only_when_a_rule_reads_it(media) -> None:
    explicit = FixedExplicit(0.8)
    pipeline = ImagePipeline(HeuristicScorer(), explicit=explicit)  # type: ignore[arg-type]
    verdict = pipeline.judge(media["calm.jpg"], profile("young"), "example.org")
    assert verdict.action is Action.BLOCK and verdict.rule == "young/explicit"
    assert verdict.emotion is not None and verdict.emotion.explicit == pytest.approx(0.8)
    assert verdict.body is not None  # a same-size placeholder
    # Frames reach the classifier at least at its input size.
    assert all(min(shape[:2]) >= FixedExplicit.input_size for shape in explicit.sizes)

    calls = explicit.calls
    other = pipeline.judge(media["vivid.jpg"], profile("older"), "example.org")
    assert other.emotion is not None and other.emotion.explicit is None
    assert explicit.calls == calls  # nobody asked, so no time spent


def test_a_cached_score_without_explicit_is_rated_when_a_profile_needs_it(media) -> None:
    explicit = FixedExplicit(0.1)
    pipeline = ImagePipeline(HeuristicScorer(), explicit=explicit)  # type: ignore[arg-type]
    first = pipeline.judge(media["calm.jpg"], profile("older"), "example.org")
    assert first.outcome == "scored" and first.emotion.explicit is None
    # The event-loop fast path must not answer from an entry that lacks what the rule reads.
    assert pipeline.judge_if_cached(media["calm.jpg"], profile("young"), "example.org") is None
    second = pipeline.judge(media["calm.jpg"], profile("young"), "example.org")
    assert second.outcome == "scored" and second.emotion.explicit == pytest.approx(0.1)
    assert second.action is Action.PASS
    # Now the entry carries it: both profiles are answered from the cache.
    third = pipeline.judge_if_cached(media["calm.jpg"], profile("young"), "example.org")
    assert third is not None and third.outcome == "cached"
    assert pipeline.judge(media["calm.jpg"], profile("older"), "example.org").outcome == "cached"
    assert explicit.calls == 1


def test_without_a_classifier_explicit_rules_never_match(media) -> None:
    pipeline = ImagePipeline(HeuristicScorer())
    verdict = pipeline.judge(media["vivid.jpg"], profile("young"), "example.org")
    assert verdict.action is Action.PASS and verdict.emotion.explicit is None


def test_the_real_classifier_rates_every_format(media) -> None:
    explicit = load_explicit(default_model_dir())
    pipeline = ImagePipeline(HeuristicScorer(), explicit=explicit)
    for name in ("calm.jpg", "vivid.webp", "vivid.avif", "alpha.png", "anim.gif"):
        verdict = pipeline.judge(media[name], profile("young"), "example.org")
        assert verdict.outcome == "scored", name
        assert 0.0 <= verdict.emotion.explicit <= 1.0, name


def test_video_frames_are_rated_and_the_most_explicit_one_counts() -> None:
    explicit = FixedExplicit(0.7)
    pipeline = VideoPipeline(HeuristicScorer(), explicit=explicit)  # type: ignore[arg-type]
    request = VideoRequest(vf.mp4("calm"), "10.0.0.5/young", "example.org", "/clip.mp4")
    verdict = pipeline.judge(request, profile("young"))
    assert verdict.action is Action.BLOCK and verdict.emotion.explicit == pytest.approx(0.7)
    assert pipeline.sampling.size >= FixedExplicit.input_size
    calls = explicit.calls
    assert pipeline.judge(request, profile("older")).emotion.explicit is None
    assert explicit.calls == calls


def test_explicit_steps_down_with_the_emotion_slice() -> None:
    explicit = load_explicit(default_model_dir())
    assert explicit.input_sizes == [128, 160, 192, 224]
    assert explicit.size_for(1.0, 224) == 224  # beside the full model (or the heuristic)
    assert explicit.size_for(0.5, 144) == 160
    assert explicit.size_for(0.25, 96) == 128
    assert explicit.size_for(0.125, 96) == 128
    frames = [np.full((300, 200, 3), 90, np.uint8)]
    assert explicit.rate(frames, 128) != explicit.rate(frames, 224)  # really run smaller


class SleepyExplicit(FixedExplicit):
    """Takes real time, as the adaptive scorer's model clock is real."""

    spec: ClassVar[dict[str, str]] = {"sha256": "e" * 64}

    def size_for(self, slice_width: float, slice_input: int) -> int:
        return 224 if slice_width >= 1.0 else 128

    def rate(self, frames: Sequence[np.ndarray], size: int | None = None) -> list[float]:
        time.sleep(0.03)
        return super().rate(frames, size)


def test_calibration_times_each_slice_with_its_explicit_pairing(tmp_path: Path) -> None:
    write_manifest(tmp_path / "models")
    settings = Settings(state_dir=tmp_path / "state", model_dir=tmp_path / "models")
    calibrator = Calibrator(min_runs=3, max_runs=3, seconds=0.0, warmup=0)
    alone = load_slices(settings, FakeLoader(), calibrator)
    assert alone.table.identity.explicit_sha256 == "none"
    assert all(t.p50_ms < 20 for t in alone.table.slices)
    explicit = SleepyExplicit(0.1)
    paired = load_slices(settings, FakeLoader(), calibrator, explicit=explicit)  # type: ignore[arg-type]
    assert paired.measured_now  # switching explicit on is a different table, measured again
    assert paired.table.identity.explicit_sha256 == "e" * 64
    assert all(t.p50_ms >= 30 for t in paired.table.slices)
    assert "explicit classifier paired" in format_table(paired.table, None)[0]
    again = load_slices(settings, FakeLoader(), calibrator, explicit=explicit)  # type: ignore[arg-type]
    assert not again.measured_now


def test_the_explicit_rating_counts_as_the_slice_model_time(media) -> None:
    timings = [SliceTiming(1.0, "int8", 64, 40.0, 45.0, 40.0, 20)]
    slices = {t.key: FakeSlice(*t.key) for t in timings}
    scorer = AdaptiveScorer(slices, SliceSelector(build_ladder(timings), 150.0, 2), lambda: 0)
    pipeline = ImagePipeline(scorer, explicit=SleepyExplicit(0.1))  # type: ignore[arg-type]
    verdict = pipeline.judge(media["calm.jpg"], profile("young"), "example.org")
    assert verdict.outcome == "scored" and verdict.emotion.explicit == pytest.approx(0.1)
    assert scorer._model_time.ms >= 30  # what the selector reads as the slice's own time
