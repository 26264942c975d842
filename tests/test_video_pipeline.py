"""video_pipeline directly: clip emotion from frames plus motion, per-stream hysteresis, the
init-segment cache, and whole judgements of progressive files and segment sequences."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

import video_factory as vf
from moodgate.calm import Calmer, StyleBank
from moodgate.emotion import Emotion, VATarget
from moodgate.emotion.heuristic import HeuristicScorer
from moodgate.media import MediaKind, video
from moodgate.policy import Action, Client, Decision, parse_policy
from moodgate.video_pipeline import (
    InitCache,
    StreamMemory,
    VideoPipeline,
    VideoRequest,
    clip_emotion,
    frame_target,
)
from test_proxy_e2e import POLICY as TWO_CHILDREN

# The end-to-end tests' two children, the strict one with a blocked host as well.
POLICY = TWO_CHILDREN.replace(
    "    on_error: block\n", "    on_error: block\n    always_block: [blocked.example]\n"
)


@pytest.fixture(scope="module")
def policy():
    return parse_policy(POLICY)


def profile(policy, user: str):
    return policy.profile_for(Client("10.0.0.2", user), datetime.now().astimezone())


@pytest.fixture()
def pipeline() -> VideoPipeline:
    scorer = HeuristicScorer()
    return VideoPipeline(scorer, Calmer(scorer, StyleBank.default()))


def request(body: bytes, path: str, client: str = "10.0.0.2/kid", host: str = "cdn.example"):
    return VideoRequest(body, client, host, path)


# ---------------------------------------------------------------- clip emotion


def test_clip_emotion_keeps_still_clips_and_raises_moving_ones() -> None:
    frames = [Emotion(0.4, -0.6), Emotion(0.2, -0.2), Emotion(0.3, -0.5)]
    still = clip_emotion(frames, video.STILL)
    assert still.valence == pytest.approx(0.3)
    assert still.arousal == pytest.approx(-0.26, abs=0.01)  # the 90th percentile
    flashing = clip_emotion(frames, video.Motion(0.02, 10.0, 6.0, 1.0))
    assert flashing.arousal == pytest.approx(1.0) and flashing.valence == still.valence
    moving = clip_emotion(frames, video.Motion(0.06, 0.0, 0.0, 1.0))
    assert still.arousal < moving.arousal < 1.0


def test_frame_target_leaves_room_for_motion() -> None:
    motion = video.Motion(0.06, 0.0, 0.0, 1.0)  # arousal term ≈ 0.34
    target = frame_target(VATarget(arousal_at_most=0.0), motion)
    assert target.arousal_at_most is not None and target.arousal_at_most < -0.3
    # Frames that just reach the frame target give a clip that just reaches the real one.
    clip = clip_emotion([Emotion(0.0, target.arousal_at_most)], motion)
    assert clip.arousal == pytest.approx(0.0, abs=1e-6)
    assert frame_target(VATarget(valence_at_least=0.1), motion) == VATarget(None, 0.1)


# ---------------------------------------------------------------- hysteresis


def test_stream_memory_escalates_at_once_and_relaxes_after_the_hold() -> None:
    memory = StreamMemory(hold=2)
    stream = ("c", "h", "/live")
    calm = Decision(Action.CALM, "kid/lively", VATarget(arousal_at_most=-0.2))
    passing = Decision(Action.PASS, "kid/no-rule-matched")
    block = Decision(Action.BLOCK, "kid/scary")
    applied = [memory.decide(stream, d) for d in (passing, calm, passing, passing, passing)]
    assert [d.action for d, _ in applied] == [Action.PASS, Action.CALM, Action.CALM, Action.CALM,
                                              Action.PASS]
    assert [held for _, held in applied] == [False, False, True, True, False]
    assert applied[2][0].rule == "kid/lively/held" and applied[2][0].target == calm.target
    # A harsher decision is never delayed; other streams are not affected.
    assert memory.decide(stream, block)[0].action is Action.BLOCK
    assert memory.decide(("c", "h", "/other"), passing)[0].action is Action.PASS
    assert memory.decide(stream, calm)[0].action is Action.BLOCK  # held block


def test_stream_memory_forgets_idle_streams() -> None:
    memory = StreamMemory(hold=3, ttl=0.0)
    stream = ("c", "h", "/live")
    memory.decide(stream, Decision(Action.BLOCK, "kid/scary"))
    assert memory.decide(stream, Decision(Action.PASS, "kid/none"))[0].action is Action.PASS


# ---------------------------------------------------------------- init cache


def test_init_cache_matches_renditions_by_name_and_client() -> None:
    cache = InitCache()
    cache.put("a", "cdn", "/v/init-0.m4s", b"zero")
    cache.put("a", "cdn", "/v/init-1.m4s", b"one")
    cache.put("a", "cdn", "/w/video_720p_init.mp4", b"720")
    cache.put("a", "cdn", "/w/video_1080p_init.mp4", b"1080")
    assert cache.find("a", "cdn", "/v/chunk-0-00005.m4s") == b"zero"
    assert cache.find("a", "cdn", "/v/chunk-1-00005.m4s") == b"one"
    assert cache.find("a", "cdn", "/w/video_720p_00012.m4s") == b"720"
    assert cache.find("a", "cdn", "/w/video_1080p_00012.m4s") == b"1080"
    assert cache.find("b", "cdn", "/v/chunk-0-00005.m4s") is None  # another viewer
    assert cache.find("a", "other", "/v/chunk-0-00005.m4s") is None


# ---------------------------------------------------------------- whole judgements


def test_progressive_files(pipeline, policy) -> None:
    calmkid, strictkid = profile(policy, "calmkid"), profile(policy, "strictkid")
    calm = pipeline.judge(request(vf.mp4("calm"), "/calm.mp4"), calmkid)
    assert calm.action is Action.PASS and calm.body is None and calm.outcome == "scored"
    assert calm.video is not None and calm.video.width == 160
    flashing = vf.mp4("flashing", audio=True)
    calmed = pipeline.judge(request(flashing, "/f.mp4"), calmkid)
    assert calmed.action is Action.CALM and calmed.body and calmed.calm_alpha
    assert video.timeline(calmed.body, MediaKind.MP4).pts == video.timeline(
        flashing, MediaKind.MP4).pts
    blocked = pipeline.judge(request(flashing, "/f.mp4"), strictkid)
    assert blocked.action is Action.BLOCK and blocked.body
    assert video.probe(blocked.body, MediaKind.MP4).width == 160
    forced = pipeline.judge(request(vf.mp4("calm"), "/c.mp4", host="blocked.example"),
                            strictkid)
    assert forced.action is Action.BLOCK and forced.outcome == "host-list" and forced.body


def test_calming_takes_the_flashes_out_and_measures_that_it_did(pipeline, policy) -> None:
    """A flashing clip (WCAG general flashes) is calmed with FFmpeg's photosensitivity
    filter too; its after-score comes from the output's own measured motion."""
    calmkid = profile(policy, "calmkid")
    flashing = vf.mp4("flashing", audio=True)
    before = video.sample(flashing, MediaKind.MP4, pipeline.sampling, pipeline.settings.limits)
    assert before.motion.flash_rate >= 3.0  # over WCAG's three flashes a second
    calmed = pipeline.judge(request(flashing, "/f.mp4"), calmkid)
    after = video.sample(calmed.body, MediaKind.MP4, pipeline.sampling, pipeline.settings.limits)
    assert after.motion.flash_rate < 1.0
    assert calmed.after.arousal < calmed.emotion.arousal - 0.5 and calmed.calm_reached
    assert video.timeline(calmed.body, MediaKind.MP4).pts == video.timeline(
        flashing, MediaKind.MP4).pts  # same frames at the same times, only calmer


def test_segments_of_a_stream_are_treated_consistently(pipeline, policy, tmp_path) -> None:
    calm = vf.hls(tmp_path / "c", "calm", 3.0)
    flash = vf.hls(tmp_path / "f", "flashing", 3.0)
    # A calm stream with one flashing segment in the middle (same timestamps, same directory).
    sequence = [calm["seg000.ts"], flash["seg001.ts"], calm["seg002.ts"]]
    kid = profile(policy, "calmkid")
    verdicts = [pipeline.judge(request(body, f"/live/seg{i:03d}.ts"), kid)
                for i, body in enumerate(sequence)]
    assert [v.action for v in verdicts] == [Action.PASS, Action.CALM, Action.CALM]
    assert verdicts[2].held and verdicts[2].rule.endswith("/held") and verdicts[2].body
    # The held segment gets the same strength as the one that set the look.
    assert verdicts[2].calm_alpha == verdicts[1].calm_alpha
    # Another child watching the same stream has a memory of its own.
    other = pipeline.judge(request(calm["seg002.ts"], "/live/seg002.ts", client="10.0.0.3/"),
                           kid)
    assert other.action is Action.PASS


def test_fmp4_segments_need_their_init(pipeline, policy, tmp_path) -> None:
    files = vf.hls(tmp_path / "h", "flashing", 2.0, segment_type="fmp4")
    kid = profile(policy, "calmkid")
    early = pipeline.judge(request(files["seg000.m4s"], "/s/seg000.m4s"), kid)
    assert early.outcome == "error" and "no-init" in str(early.error)
    init = pipeline.judge(request(files["init.mp4"], "/s/init.mp4"), kid)
    assert init.action is Action.PASS and init.outcome == "skipped"
    calmed = pipeline.judge(request(files["seg001.m4s"], "/s/seg001.m4s"), kid)
    assert calmed.action is Action.CALM and calmed.body
    assert video.timeline(calmed.body, MediaKind.MP4, files["init.mp4"]).pts == video.timeline(
        files["seg001.m4s"], MediaKind.MP4, files["init.mp4"]).pts


def test_errors_follow_on_error(pipeline, policy) -> None:
    calmkid, strictkid = profile(policy, "calmkid"), profile(policy, "strictkid")
    audio = vf.audio_only_mp4()
    passed = pipeline.judge(request(audio, "/a.mp4"), calmkid)
    assert passed.action is Action.PASS and passed.outcome == "error" and passed.body is None
    blocked = pipeline.judge(request(audio, "/a.mp4"), strictkid)
    assert blocked.action is Action.BLOCK and blocked.body is None  # the addon answers 403
    truncated = vf.mpegts("flashing")[:-1000]
    placeholder = pipeline.judge(request(truncated, "/t/seg.ts"), strictkid)
    assert placeholder.action is Action.BLOCK and placeholder.body  # readable timestamps


def test_budget_is_enforced_inside_the_worker(pipeline, policy) -> None:
    with pytest.raises(TimeoutError):
        pipeline.judge(request(vf.mp4("flashing"), "/f.mp4"), profile(policy, "calmkid"), 0.0)


def test_calm_plan_matches_the_image_calmer(pipeline) -> None:
    """The FFmpeg-applied mapping gives what calm.CalmTransform gives on the same frame."""
    clip = video.sample(vf.mp4("flashing", width=320, height=180), MediaKind.MP4)
    scorer = HeuristicScorer()
    before = clip_emotion(scorer.score_frames(clip.frames), video.STILL)
    plan = pipeline.calmer.plan(clip.frames, VATarget(arousal_at_most=-0.2), before, 320)
    assert 0.0 < plan.alpha <= 1.0 and plan.after.arousal < before.arousal
    assert plan.mapping.blur_amount == pytest.approx(plan.alpha * 0.5)
    source = vf.mp4("flashing", width=320, height=180)
    mapped = video.recode(source, MediaKind.MP4, plan.mapping)
    reference = video.recode(source, MediaKind.MP4, lambda frame: _pillow_calm(pipeline, plan,
                                                                                frame, clip))
    a, b = video.sample(mapped, MediaKind.MP4), video.sample(reference, MediaKind.MP4)
    ours, theirs = a.frames[0].astype(float), b.frames[0].astype(float)
    # Same colour mapping: the mean colour agrees within ~1 %; the per-pixel difference is the two
    # blur implementations disagreeing on 6-px stripes (FFmpeg gblur vs reduce-blur-resize).
    assert np.abs(ours.mean(axis=(0, 1)) - theirs.mean(axis=(0, 1))).max() < 4.0
    assert np.abs(ours - theirs).mean() < 10
    assert max(e.arousal for e in scorer.score_frames(a.frames)) < before.arousal


def _pillow_calm(pipeline, plan, frame, clip):
    from PIL import Image

    from moodgate.calm import CalmTransform
    from moodgate.calm.colour import measure
    from moodgate.calm.styles import thumbnail

    calmer = pipeline.calmer.calmer
    thumbs = [thumbnail(Image.fromarray(f)) for f in clip.frames[:4]]
    stats = measure([np.asarray(t) for t in thumbs])
    blend = calmer.selector.blend(stats, VATarget(arousal_at_most=-0.2), calmer.styles.styles)
    transform = CalmTransform(stats, blend.stats, calmer.settings)
    return transform.apply(frame, plan.alpha, 320 / thumbs[0].width)
