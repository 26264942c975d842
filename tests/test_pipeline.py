"""The pipeline on its own: bytes and a profile in, a verdict out."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import numpy as np
from PIL import Image

import media_factory as mf
from moodgate.emotion import Emotion
from moodgate.emotion.heuristic import HeuristicScorer
from moodgate.pipeline import ImagePipeline, ScoreCache
from moodgate.policy import Action, Client, parse_policy

POLICY = """\
version: 1
children:
  kid:
    users: [kid]
    preset: none
    always_pass: [school.example]
    always_block: [bad.example]
    rules:
      - name: impossible
        when: "arousal > 0.2"
        action: calm
        target: "arousal <= -0.99"
        if_unreached: block
default:
  preset: none
  rules:
    - name: lively
      when: "arousal > 0.2"
      action: calm
      target: "arousal <= -0.2"
"""


class CountingScorer(HeuristicScorer):
    def __init__(self) -> None:
        self.calls = 0

    def score_frames(self, frames: Sequence[np.ndarray]) -> list[Emotion]:
        self.calls += 1
        return super().score_frames(frames)


def profile(user: str | None):
    return parse_policy(POLICY).profile_for(Client("10.0.0.5", user), datetime.now().astimezone())


def test_identical_bytes_are_scored_once(media) -> None:
    scorer = CountingScorer()
    pipeline = ImagePipeline(scorer)
    first = pipeline.judge(media["calm.jpg"], profile(None), "example.org")
    second = pipeline.judge(media["calm.jpg"], profile(None), "example.org")
    assert (first.outcome, second.outcome) == ("scored", "cached")
    assert scorer.calls == 1 and first.emotion == second.emotion


def test_a_cached_pass_is_judged_without_a_worker_and_anything_else_is_not(media) -> None:
    """`judge_if_cached` (what the event loop tries first) answers only known images that
    pass; unknown bytes, calming, host lists and bodies too small to inspect go to `judge`."""
    scorer = CountingScorer()
    pipeline = ImagePipeline(scorer)
    calm, vivid = media["calm.jpg"], media["vivid.jpg"]
    assert pipeline.judge_if_cached(calm, profile(None), "example.org") is None  # never seen
    first = pipeline.judge(calm, profile(None), "example.org")
    assert first.action is Action.PASS
    again = pipeline.judge_if_cached(calm, profile(None), "example.org")
    assert again is not None and scorer.calls == 1
    assert (again.action, again.outcome, again.body) == (Action.PASS, "cached", None)
    assert (again.emotion, again.rule, again.info) == (first.emotion, first.rule, first.info)
    lively = pipeline.judge(vivid, profile(None), "example.org")
    assert lively.action is Action.CALM  # cached now, but calming is a worker's job
    assert pipeline.judge_if_cached(vivid, profile(None), "example.org") is None
    assert pipeline.judge_if_cached(calm, profile("kid"), "www.school.example") is None
    base = profile(None)
    small = replace(base, inspect=replace(base.inspect, min_bytes=len(calm) + 1))
    assert pipeline.judge_if_cached(calm, small, "example.org") is None
    assert ImagePipeline(scorer, cache=ScoreCache(0)).judge_if_cached(
        calm, profile(None), "example.org") is None  # fmt: skip


def test_host_lists_decide_without_scoring(media) -> None:
    scorer = CountingScorer()
    pipeline = ImagePipeline(scorer)
    passed = pipeline.judge(media["vivid.jpg"], profile("kid"), "www.school.example")
    blocked = pipeline.judge(media["vivid.jpg"], profile("kid"), "img.bad.example")
    assert (passed.action, passed.outcome, passed.body) == (Action.PASS, "host-list", None)
    assert blocked.action is Action.BLOCK and blocked.rule == "kid/always_block"
    assert Image.open(io.BytesIO(blocked.body)).size == (640, 427)
    assert scorer.calls == 0


def test_unreachable_calm_target_blocks_when_policy_says_so(media) -> None:
    verdict = ImagePipeline(HeuristicScorer()).judge(media["vivid.jpg"], profile("kid"), "x.org")
    assert verdict.action is Action.BLOCK and verdict.rule == "kid/impossible/unreached"
    assert verdict.calm_reached is False and verdict.after is not None


def test_calm_records_before_and_after(media) -> None:
    verdict = ImagePipeline(HeuristicScorer()).judge(media["vivid.jpg"], profile(None), "x.org")
    assert verdict.action is Action.CALM and verdict.calm_reached
    assert verdict.after.arousal <= -0.2 < verdict.emotion.arousal
    assert 0 < verdict.calm_alpha <= 1


def test_too_many_pixels_to_calm_follow_if_unreached(media) -> None:
    """Calming decodes every frame whole; past max_calm_pixels it cannot, so the rule's
    if_unreached decides, without decoding: block with a placeholder, or keep the original."""
    from moodgate.media.image import ImageLimits, probe

    limits = ImageLimits(max_calm_pixels=640 * 427 - 1)
    assert probe(media["vivid.jpg"]).width * probe(media["vivid.jpg"]).height == 640 * 427
    pipeline = ImagePipeline(HeuristicScorer(), limits=limits)
    blocked = pipeline.judge(media["vivid.jpg"], profile("kid"), "x.org")
    assert blocked.action is Action.BLOCK and blocked.rule == "kid/impossible/too-large-to-calm"
    assert Image.open(io.BytesIO(blocked.body)).size == (640, 427)
    assert blocked.calm_reached is False and blocked.calm_alpha == 0.0
    kept = pipeline.judge(media["vivid.jpg"], profile(None), "x.org")
    assert kept.action is Action.PASS and kept.body is None
    assert kept.rule == "default/lively/too-large-to-calm" and kept.calm_reached is False
    # One pixel more room and the same picture is calmed as usual.
    roomy = ImagePipeline(HeuristicScorer(), limits=replace(limits, max_calm_pixels=640 * 427))
    assert roomy.judge(media["vivid.jpg"], profile(None), "x.org").action is Action.CALM


def test_images_false_skips_scoring_but_not_the_host_lists(media) -> None:
    base = profile("kid")
    blind = replace(base, inspect=replace(base.inspect, images=False))
    scorer = CountingScorer()
    pipeline = ImagePipeline(scorer)
    for judge in (pipeline.judge, pipeline.judge_if_cached):
        verdict = judge(media["vivid.jpg"], blind, "example.org")
        assert verdict is not None
        assert (verdict.action, verdict.outcome) == (Action.PASS, "skipped")
        assert verdict.rule == "kid/images-not-inspected" and verdict.emotion is None
    blocked = pipeline.judge(media["vivid.jpg"], blind, "img.bad.example")
    assert blocked.action is Action.BLOCK and blocked.rule == "kid/always_block"
    assert scorer.calls == 0


def test_small_images_are_skipped_without_decoding() -> None:
    tiny = mf.png(mf.vivid_chaos(40, 300))
    verdict = ImagePipeline(HeuristicScorer()).judge(tiny, profile(None), "x.org")
    assert verdict.outcome == "skipped" and verdict.action is Action.PASS


def test_heuristic_scorer_handles_degenerate_shapes() -> None:
    scorer = HeuristicScorer()
    for shape in [(1, 1, 3), (1, 500, 3), (500, 1, 3), (2, 2, 3)]:
        (emotion,) = scorer.score_frames([np.full(shape, 128, dtype=np.uint8)])
        assert -1 <= emotion.valence <= 1 and -1 <= emotion.arousal <= 1
