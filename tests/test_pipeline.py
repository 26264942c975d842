"""The pipeline on its own: bytes and a profile in, a verdict out."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from PIL import Image

import media_factory as mf
from moodgate.emotion import Emotion
from moodgate.emotion.heuristic import HeuristicScorer
from moodgate.pipeline import ImagePipeline
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


def test_small_images_are_skipped_without_decoding() -> None:
    tiny = mf.png(mf.vivid_chaos(40, 300))
    verdict = ImagePipeline(HeuristicScorer()).judge(tiny, profile(None), "x.org")
    assert verdict.outcome == "skipped" and verdict.action is Action.PASS


def test_heuristic_scorer_handles_degenerate_shapes() -> None:
    scorer = HeuristicScorer()
    for shape in [(1, 1, 3), (1, 500, 3), (500, 1, 3), (2, 2, 3)]:
        (emotion,) = scorer.score_frames([np.full(shape, 128, dtype=np.uint8)])
        assert -1 <= emotion.valence <= 1 and -1 <= emotion.arousal <= 1
