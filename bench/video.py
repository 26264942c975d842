"""Video throughput: score-only and calm (re-encode), as seconds of video per wall second.

    nice .venv/bin/python bench/video.py                    # every scorer / slice available
    nice .venv/bin/python bench/video.py --scorer heuristic --seconds 10 --json out.json

Clips are made at bench time from OASIS photographs (upscaled, with a fixed grain so H.264
spends realistic bits): a slow Ken Burns pan across one photo, a hard cut to the next every 3 s,
30 fps, encoded with libx264 veryfast CRF 23 and a 2-s GOP, as a streaming service would. Each
clip is measured twice:
- progressive: one MP4 of `--seconds` seconds, judged whole;
- segments: the same video cut into 2-s MPEG-TS segments (HLS), each judged on its own,
  as the proxy sees a stream.
Score-only = sample (keyframes + bursts) → score → clip emotion. Calm = that plus the calm
plan on sampled frames and the full re-encode with the per-frame colour mapping.
Reported per wall second (what this machine gave, under whatever load it had) and per CPU
second of the process, all threads (what the work costs, independent of other load).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_bench_explicit

from moodgate.calm import Calmer, StyleBank
from moodgate.emotion.base import Scorer, VATarget, aggregate
from moodgate.emotion.explicit import ExplicitScorer, WithExplicit
from moodgate.emotion.registry import create_scorer, default_model_dir
from moodgate.media import MediaKind, video
from moodgate.media.video import Sampling
from moodgate.video_pipeline import VideoCalmer, clip_emotion, frame_target

REPO = Path(__file__).resolve().parents[1]
OASIS = REPO.parent / "shared" / "data" / "oasis" / "images"
SIZES = {"480p": (854, 480), "720p": (1280, 720)}
TARGET = VATarget(arousal_at_most=-0.2)
FPS = 30


def photos(count: int = 6) -> list[Image.Image]:
    names = sorted(p for p in OASIS.glob("*.jpg"))[:: max(1, len(list(OASIS.glob("*.jpg"))) // 40)]
    picked = [Image.open(p).convert("RGB") for p in names[:count]] if names else []
    if not picked:  # no OASIS here: noise-textured gradients still compress like photos
        rng = np.random.default_rng(0)
        for _ in range(count):
            base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(base).resize((400, 300), Image.Resampling.BICUBIC)
            grain = rng.normal(0, 6, (300, 400, 3))
            picked.append(
                Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))
            )
    return picked


def frames(size: tuple[int, int], seconds: float) -> list[Image.Image]:
    """The OASIS originals are 256 px: upscaled, they would be smoother than any camera
    picture, so a fixed grain is added before panning (texture that moves with the scene and
    costs bits like real detail, landing at common streaming bitrates)."""
    width, height = size
    rng = np.random.default_rng(1)
    shots = []
    for shot in photos():
        big = shot.resize((round(width * 1.3), round(height * 1.3)), Image.Resampling.BICUBIC)
        grain = rng.normal(0.0, 5.0, (big.height, big.width, 1))
        shots.append(Image.fromarray(np.clip(np.asarray(big) + grain, 0, 255).astype(np.uint8)))
    out = []
    for index in range(round(seconds * FPS)):
        big = shots[(index // (3 * FPS)) % len(shots)]
        t = (index % (3 * FPS)) / (3 * FPS)
        x, y = round(t * (big.width - width)), round(t * (big.height - height) / 2)
        out.append(big.crop((x, y, x + width, y + height)))
    return out


def encode(pictures: list[Image.Image], fmt: str, start: int = 0) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = pictures[0].size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 2 * FPS
        stream.codec_context.options = {"preset": "veryfast", "crf": "23"}
        for index, picture in enumerate(pictures):
            frame = av.VideoFrame.from_image(picture)
            frame.pts = start + index
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


@dataclass
class Result:
    scorer: str
    sample_fps: float
    width: float
    size: str
    layout: str  # progressive | segments
    seconds: float
    megabits_per_s: float
    score_x_realtime: float  # video seconds per wall second
    calm_x_realtime: float
    score_x_cpu: float  # video seconds per CPU second (all threads): load-independent
    calm_x_cpu: float
    decoded_share: float  # frames decoded for scoring ÷ frames in the video
    scored_frames: int


def judge_score(
    body: bytes, kind: MediaKind, scorer: Scorer, sampling: Sampling
) -> tuple[video.SampledClip, float]:
    clip = video.sample(body, kind, sampling)
    emotion = clip_emotion(scorer.score_frames(clip.frames), clip.motion)
    return clip, emotion.arousal


def judge_calm(
    body: bytes,
    kind: MediaKind,
    judge: Scorer,
    scorer: Scorer,
    calmer: VideoCalmer,
    sampling: Sampling,
) -> None:
    """`judge` scores the clip (with explicit where paired); the calm plan uses `scorer`
    alone, as the pipeline does."""
    clip, _ = judge_score(body, kind, judge, sampling)
    before = aggregate(scorer.score_frames(clip.frames))
    plan = calmer.plan(
        clip.frames, frame_target(TARGET, clip.motion), before, clip.info.width, strength=None
    )
    video.recode(body, kind, plan.mapping)


def run(
    scorer: Scorer,
    size_name: str,
    seconds: float,
    repeat: int,
    fps: float,
    explicit: ExplicitScorer | None = None,
) -> list[Result]:
    judge: Scorer = WithExplicit(scorer, explicit) if explicit is not None else scorer
    pictures = frames(SIZES[size_name], seconds)
    progressive = encode(pictures, "mp4")
    step = 2 * FPS
    segments = [
        encode(pictures[i : i + step], "mpegts", start=i) for i in range(0, len(pictures), step)
    ]
    sampling = Sampling(fps=fps, size=max(judge.input_size, 64))
    calmer = VideoCalmer(Calmer(scorer, StyleBank.default()))
    results = []
    for layout, bodies, kind in (
        ("progressive", [progressive], MediaKind.MP4),
        ("segments", segments, MediaKind.MPEGTS),
    ):
        score_times, calm_times, decoded, scored = [], [], 0, 0
        score_cpu, calm_cpu = [], []
        for _ in range(repeat):
            start, cpu = time.perf_counter(), time.process_time()
            for body in bodies:
                clip, _ = judge_score(body, kind, judge, sampling)
                decoded += clip.decoded
                scored += len(clip.frames)
            score_times.append(time.perf_counter() - start)
            score_cpu.append(time.process_time() - cpu)
            start, cpu = time.perf_counter(), time.process_time()
            for body in bodies:
                judge_calm(body, kind, judge, scorer, calmer, sampling)
            calm_times.append(time.perf_counter() - start)
            calm_cpu.append(time.process_time() - cpu)
        size = sum(len(b) for b in bodies)
        results.append(Result(
            judge.name, sampling.fps, scorer.width, size_name, layout, seconds,
            round(size * 8 / seconds / 1e6, 2),
            round(seconds / min(score_times), 1), round(seconds / min(calm_times), 2),
            round(seconds / min(score_cpu), 1), round(seconds / min(calm_cpu), 2),
            round(decoded / repeat / len(pictures), 3), scored // repeat,
        ))  # fmt: skip
    return results


def scorers(kind: str) -> list[Scorer]:
    if kind == "heuristic":
        return [create_scorer("heuristic")]
    manifest = default_model_dir() / "manifest.json"
    found: list[Scorer] = [] if kind == "nested" else [create_scorer("heuristic")]
    if manifest.exists():
        widths = sorted(
            {
                float(s["width"])
                for s in json.loads(manifest.read_text()).get("slices", [])
                if "width" in s
            }
        )
        for width in widths or [None]:
            try:
                found.append(create_scorer("nested", width=width, precision=None, threads=1))
            except Exception as exc:  # a broken slice is reported, not fatal
                print(f"slice {width}: {exc}", file=sys.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scorer", choices=("all", "heuristic", "nested"), default="all")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--sizes", default="480p,720p")
    parser.add_argument(
        "--fps",
        type=float,
        default=Sampling().fps,
        help="scored frames per second of video (the video_sample_fps setting)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-explicit", action="store_true",
                        help="score without the explicit classifier (policies that never test it)")
    args = parser.parse_args()
    explicit = load_bench_explicit(None, wanted=not args.no_explicit)
    rows: list[Result] = []
    print(
        f"cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.2f}, sample fps: {args.fps}",
        file=sys.stderr,
    )
    header = (
        f"{'scorer':10} {'width':>5} {'size':5} {'layout':12} {'Mbit/s':>6} "
        f"{'score ×rt':>9} {'calm ×rt':>8} {'score/cpu':>9} {'calm/cpu':>8} "
        f"{'decoded':>7} {'frames':>6}"
    )
    print(header)
    for scorer in scorers(args.scorer):
        for size in args.sizes.split(","):
            for r in run(scorer, size, args.seconds, args.repeat, args.fps, explicit):
                rows.append(r)
                print(
                    f"{r.scorer:10} {r.width:5.2f} {r.size:5} {r.layout:12} "
                    f"{r.megabits_per_s:6.2f} {r.score_x_realtime:9.1f} "
                    f"{r.calm_x_realtime:8.2f} {r.score_x_cpu:9.1f} {r.calm_x_cpu:8.2f} "
                    f"{r.decoded_share:7.3f} {r.scored_frames:6}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
