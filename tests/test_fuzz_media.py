"""Hypothesis fuzzing of the media decoders and the pipelines with mutated real media.

Every mutated body must end in a clean result: the decoders return or raise MediaError, the
pipelines return a verdict (never raise), an "error" verdict carries the policy's on_error
action, every item finishes within a time limit, and decompression bombs are refused from
their headers without allocating their pixels.

Budget: MOODGATE_FUZZ_SECONDS (default 60, split over the formats); `make fuzz` runs 600.
Per-item limit: MOODGATE_FUZZ_ITEM_SECONDS (default 30 s of wall time).
Failing inputs are saved under test-artifacts/fuzz/ for replay.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import media_factory as mf
from moodgate.emotion.heuristic import HeuristicScorer
from moodgate.media import MediaError
from moodgate.media.image import ImageLimits, decode_full, frames_for_scoring, probe
from moodgate.pipeline import ImagePipeline
from moodgate.policy import Action, Client, Profile, parse_policy

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "fuzz"
BUDGET = float(os.environ.get("MOODGATE_FUZZ_SECONDS", "60"))
# Wall time, generous: CI shares two cores with model training, and a hang is forever.
ITEM_LIMIT = float(os.environ.get("MOODGATE_FUZZ_ITEM_SECONDS", "30"))
HAS_VIDEO = importlib.util.find_spec("moodgate.media.video") is not None

# Everything lively is calmed (decode → calm → re-encode is fuzzed too); "strict" blocks
# what cannot be read, "lenient" passes it.
POLICY = """\
version: 1
children:
  strict:
    users: [strict]
    preset: none
    inspect: {min_width: 0, min_height: 0, min_bytes: 0, video: true}
    on_error: block
    on_timeout: block
    rules:
      - {name: lively, when: "arousal > -0.5", action: calm, target: "arousal <= -0.9",
         if_unreached: block}
  lenient:
    users: [lenient]
    preset: none
    inspect: {min_width: 0, min_height: 0, min_bytes: 0, video: true}
    on_error: pass
    rules:
      - {name: lively, when: "arousal > -0.5", action: calm, target: "arousal <= -0.2"}
default:
  preset: none
"""
OUTCOMES = {"scored", "cached", "skipped", "error", "host-list"}


def profiles() -> list[Profile]:
    policy = parse_policy(POLICY)
    now = datetime.now().astimezone()
    return [policy.profile_for(Client("10.0.0.5", user), now) for user in ("strict", "lenient")]


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def image_seeds() -> dict[str, list[bytes]]:
    """Small real files of every format and the features their decoders branch on."""
    calm, vivid = mf.calm_landscape(96, 64), mf.vivid_chaos(96, 64)
    rotated = vivid.convert("RGB")
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate, the exif_transpose branch
    frames = [mf.vivid_chaos(48, 32, seed=i) for i in range(3)]
    return {
        "jpeg": [
            mf.jpeg(calm, quality=70),
            _encode(vivid, "JPEG", quality=90, progressive=True),
            _encode(rotated, "JPEG", exif=exif.tobytes()),
            _encode(vivid.convert("L"), "JPEG"),
        ],
        "png": [
            mf.png(vivid),
            mf.alpha_png(64, 48),
            _encode(vivid.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
            _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),  # APNG
        ],
        "gif": [
            mf.animated_gif(48, 32, frames=3),
            mf.tracking_pixel(),
            _encode(vivid.convert("P"), "GIF", transparency=0),
        ],
        "webp": [
            mf.webp(vivid),
            _encode(vivid, "WEBP", lossless=True),
            _encode(Image.open(io.BytesIO(mf.alpha_png(64, 48))), "WEBP"),
            _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80),
        ],
        "avif": [
            mf.avif(vivid),
            _encode(Image.open(io.BytesIO(mf.alpha_png(64, 48))), "AVIF", speed=9),
            mf.animated_avif(48, 32, frames=3),
        ],
    }


def video_seeds() -> dict[str, list[bytes]]:
    import video_factory as vf

    small = {"seconds": 0.4, "fps": 10, "width": 64, "height": 48, "gop": 2}
    return {
        "mp4": [vf.mp4("flashing", **small), vf.mp4("calm", audio=True, **small)],
        "mpegts": [vf.mpegts("calm", **small)],
    }


INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 65500, 30000]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with 1–8 mutations, positions biased to the header where parsers branch."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        size = len(data)
        pos = draw(st.one_of(st.integers(0, min(size - 1, 96)), st.integers(0, size - 1)))
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "dup", "int"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        elif op == "truncate":
            del data[max(pos, 1) :]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 256))]
        elif op == "dup":
            length = draw(st.integers(1, 512))
            data[pos:pos] = data[pos : pos + length]
        else:  # a header field set to an extreme: size, length, count
            width = draw(st.sampled_from([2, 4]))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * width)) - 1)
            order = draw(st.sampled_from([">", "<"]))
            data[pos : pos + width] = struct.pack(order + ("H" if width == 2 else "I"), value)
    return bytes(data)


@dataclass
class Harness:
    """Runs each body with a time limit and keeps the counts for docs/reliability.md."""

    name: str
    share: float = BUDGET
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    tried: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def spent(self) -> bool:
        return time.monotonic() - self.started > self.share

    def run(self, data: bytes, check: Callable[[bytes], str]) -> None:
        if self.spent:
            return  # the time share is used up; hypothesis winds down with no-ops
        self.tried += 1
        future = self.executor.submit(check, data)
        try:
            outcome = future.result(timeout=ITEM_LIMIT)
        except FutureTimeout:
            self._save(data, "hang")
            self.executor = ThreadPoolExecutor(1)  # the old worker is stuck; keep going
            raise AssertionError(f"{self.name}: an item took over {ITEM_LIMIT} s") from None
        except BaseException:
            self._save(data, "crash")
            raise
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def _save(self, data: bytes, why: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(data).hexdigest()[:16]
        (ARTIFACTS / f"{self.name}-{why}-{digest}.bin").write_bytes(data)

    def report(self) -> dict[str, object]:
        seconds = time.monotonic() - self.started
        result = {"target": self.name, "tried": self.tried, "seconds": round(seconds, 1),
                  "outcomes": dict(sorted(self.outcomes.items()))}  # fmt: skip
        print(json.dumps(result))
        if os.environ.get("MOODGATE_FUZZ_REPORT"):
            with open(os.environ["MOODGATE_FUZZ_REPORT"], "a", encoding="utf-8") as out:
                out.write(json.dumps(result) + "\n")
        return result


CHUNK = 100  # examples per hypothesis run


def check_image(
    pipeline: ImagePipeline, strict: Profile, lenient: Profile
) -> Callable[[bytes], str]:
    limits = pipeline.limits

    def check(data: bytes) -> str:
        for decoder in (lambda: probe(data, limits),
                        lambda: frames_for_scoring(data, 224, limits),
                        lambda: decode_full(data, limits)):  # fmt: skip
            try:
                decoder()
            except MediaError as exc:
                # Within the limits, decoding must fit memory (`make fuzz` caps it).
                assert exc.reason != "out-of-memory", exc
        outcome = ""
        for profile in (strict, lenient):
            verdict = pipeline.judge(data, profile, "fuzz.example", None)
            assert verdict.outcome in OUTCOMES, verdict
            assert not (verdict.error or "").startswith("out-of-memory"), verdict
            if verdict.outcome == "error":
                assert verdict.action is profile.on_error, (verdict, profile.on_error)
                assert verdict.error
            if verdict.action is Action.BLOCK and verdict.body is not None:
                probe(verdict.body)  # a placeholder the browser can decode
            if verdict.action is Action.CALM:
                assert verdict.body is not None
                probe(verdict.body)
            outcome += f"{profile.child}:{verdict.outcome}/{verdict.action.value} "
        return outcome.strip()

    return check


SEEDS = image_seeds()
SHARE = BUDGET * (0.75 if HAS_VIDEO else 1.0) / len(SEEDS)


@pytest.fixture(scope="module")
def image_pipeline() -> ImagePipeline:
    # Production limits, but a small cache: mutated bodies never repeat anyway.
    from moodgate.pipeline import ScoreCache

    return ImagePipeline(HeuristicScorer(), limits=ImageLimits(), cache=ScoreCache(64))


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_fuzz_image_decoders_and_pipeline(fmt: str, image_pipeline: ImagePipeline) -> None:
    strict, lenient = profiles()
    check = check_image(image_pipeline, strict, lenient)
    for seed in SEEDS[fmt]:
        check(seed)  # the unmutated seeds themselves must pass
    harness = Harness(f"image-{fmt}", SHARE)

    @settings(max_examples=CHUNK, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(mutated(SEEDS[fmt]))
    def fuzz(data: bytes) -> None:
        harness.run(data, check)

    while not harness.spent:  # fresh random runs of CHUNK examples until the share is used
        fuzz()
    report = harness.report()
    assert report["tried"] >= 30


@pytest.mark.skipif(not HAS_VIDEO, reason="moodgate.media.video is not there yet")
@pytest.mark.parametrize("fmt", ["mp4", "mpegts"])
def test_fuzz_video_pipeline(fmt: str) -> None:
    from moodgate.video_pipeline import VideoPipeline, VideoRequest

    seeds = video_seeds()[fmt]
    pipeline = VideoPipeline(HeuristicScorer())
    strict, lenient = profiles()

    def check(data: bytes) -> str:
        outcome = ""
        for profile in (strict, lenient):
            request = VideoRequest(data, f"10.0.0.5/{profile.child}", "fuzz.example",
                                   "/v/clip." + fmt)  # fmt: skip
            verdict = pipeline.judge(request, profile, budget=ITEM_LIMIT / 2)
            assert verdict.outcome in OUTCOMES | {"timeout"}, verdict
            if verdict.outcome == "error":
                assert verdict.action is profile.on_error, (verdict, profile.on_error)
            outcome += f"{profile.child}:{verdict.outcome}/{verdict.action.value} "
        return outcome.strip()

    for seed in seeds:
        check(seed)
    harness = Harness(f"video-{fmt}", BUDGET * 0.25 / 2)

    @settings(max_examples=CHUNK, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(mutated(seeds))
    def fuzz(data: bytes) -> None:
        harness.run(data, check)

    while not harness.spent:
        fuzz()
    assert harness.report()["tried"] >= 30


# -- decompression bombs: refused from the header, memory stays flat ---------------------------
def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bombs() -> Iterator[tuple[str, bytes]]:
    yield "png-30000x30000", mf.decompression_bomb()
    header = struct.pack(">IIBBBBB", 65535, 65535, 8, 6, 0, 0, 0)  # RGBA 8-bit
    yield "png-rgba-65535", (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                             + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                             + _png_chunk(b"IEND", b""))  # fmt: skip
    jpeg = bytearray(mf.jpeg(mf.calm_landscape(32, 32)))
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    yield "jpeg-65500x65500", bytes(jpeg)
    gif = bytearray(mf.tracking_pixel())
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen
    yield "gif-screen-65535", bytes(gif)
    many = [Image.new("RGB", (8, 8), (i % 256, 40 * (i // 256), 0)) for i in range(600)]
    yield "gif-600-frames", _encode(many[0], "GIF", save_all=True, append_images=many[1:])
    webp = bytearray(_encode(Image.new("RGB", (16, 16)), "WEBP", lossless=True))
    # VP8L header: 14-bit width-1 and height-1 at byte 21; set both to 16384.
    bits = (16383) | (16383 << 14)
    webp[21:25] = struct.pack("<I", (struct.unpack("<I", webp[21:25])[0] & ~0x0FFFFFFF) | bits)
    yield "webp-16384x16384", bytes(webp)
    avif = bytearray(mf.avif(Image.new("RGB", (16, 16))))
    ispe = avif.find(b"ispe")  # image spatial extents: version/flags, then width, height
    # Under libavif's own limit (16384² px), so it is moodgate's check that refuses it.
    avif[ispe + 8 : ispe + 16] = struct.pack(">II", 15000, 15000)
    yield "avif-15000x15000", bytes(avif)


BOMB_CHILD = """
import json, resource, sys
sys.path.insert(0, {tests!r})
from test_fuzz_media import bombs
from moodgate.media import MediaError
from moodgate.media.image import ImageLimits, decode_full, frames_for_scoring, probe
limits = ImageLimits(max_pixels={max_pixels})
results = {{}}
for name, data in bombs():
    outcome = "accepted"
    for decoder in (probe, frames_for_scoring, decode_full):
        try:
            decoder(data, limits=limits)
        except MediaError as exc:
            outcome = exc.reason
    results[name] = outcome
results["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(results))
"""


BASELINE_CHILD = """
import resource, sys
sys.path.insert(0, {tests!r})
import test_fuzz_media
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def test_bombs_are_refused_without_allocating(tmp_path: Path) -> None:
    """In a fresh process, so the peak RSS is this test's alone. 16 MP is the bound here:
    every bomb declares far more, and none may come near allocating it."""
    script = BOMB_CHILD.format(tests=str(Path(__file__).parent), max_pixels=16_000_000)
    baseline = subprocess.run(
        [sys.executable, "-c", BASELINE_CHILD.format(tests=str(Path(__file__).parent))],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    peak = outcomes.pop("maxrss_mb") - float(baseline.stdout)
    print("bombs:", outcomes, f"peak RSS above baseline: {peak:.1f} MB")
    for name, outcome in outcomes.items():
        assert outcome == "too-large", (name, outcome)
    assert peak < 64, f"refusing the bombs took {peak:.0f} MB"


def gif_frame_bomb(side: int = 40000) -> bytes:
    """An 8×8 GIF whose second frame declares side×side pixels: ~60 bytes on the wire."""
    frames = [Image.new("RGB", (8, 8), (i * 80, 0, 0)) for i in range(2)]
    data = bytearray(_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    descriptor = data.rindex(b"\x2c\x00\x00\x00\x00\x08\x00\x08\x00")
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", side, side)
    return bytes(data)


def _gif_frames(data: bytes) -> tuple[bytes, list[bytes]]:
    """(header with screen and global palette, each frame with the extensions before it)."""
    pos = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    head, frames, start = data[:pos], [], pos
    while data[pos] != 0x3B:
        image = data[pos] == 0x2C
        if image:  # descriptor, optional local palette, LZW code size, then sub-blocks
            flags = data[pos + 9]
            pos += 10 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:  # extension: introducer and label, then sub-blocks
            pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
        if image:
            frames.append(data[start:pos])
            start = pos
    return head, frames


def gif_canvas_growth_bomb(frames: int = 40, side: int = 4000) -> bytes:
    """An 8×8 GIF of `frames` frames whose second frame is side×side: every frame is under
    the per-frame limit, but Pillow keeps the grown canvas for all later frames."""
    small = [Image.new("P", (8, 8), i % 4) for i in range(frames)]
    for image in small:
        image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    head, parts = _gif_frames(_encode(small[0], "GIF", save_all=True, append_images=small[1:],
                                      optimize=False))  # fmt: skip
    big = Image.new("P", (side, side), 1)
    big.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    _, (grown,) = _gif_frames(_encode(big, "GIF", optimize=False))
    return head + parts[0] + grown + b"".join(parts[2:]) + b"\x3b"


CANVAS_BOMB_CHILD = """
import json, resource, sys
sys.path.insert(0, {tests!r})
from test_fuzz_media import gif_canvas_growth_bomb
from moodgate.media import MediaError
from moodgate.media.image import ImageLimits, decode_full, frames_for_scoring, probe
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
# The production limits scaled down 4x, so the refusal costs little: 100 MP for an animation.
limits = ImageLimits(max_pixels=16_000_000, max_total_pixels=100_000_000)
data = gif_canvas_growth_bomb()
outcomes = {{"frames": probe(data, limits).frames}}
for name, decode in (("scoring", lambda: frames_for_scoring(data, 224, limits, max_frames=40)),
                     ("full", lambda: decode_full(data, limits))):
    try:
        decode()
        outcomes[name] = "accepted"
    except MediaError as exc:
        outcomes[name] = exc.reason
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({{**outcomes, "maxrss_mb": peak / 1024}}))
"""


def test_gif_canvas_grown_by_one_frame_counts_for_every_later_frame() -> None:
    """Found by `make fuzz` (a run OOM-killed at 24 GB): frames that are each within the
    per-frame limit, on a canvas the second frame grew to 16 MP, add up past what an
    animation may have. decode_full kept them all (40 × 16 MP: 2.6 GB, a MemoryError under
    the 2 GB cap here); now the running sum refuses them once the limit is passed."""
    script = CANVAS_BOMB_CHILD.format(tests=str(Path(__file__).parent))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert found["frames"] == 40
    assert (found["scoring"], found["full"]) == ("too-large", "too-large"), found
    assert found["maxrss_mb"] < 700, found


FRAME_BOMB_CHILD = """
import json, resource, sys
sys.path.insert(0, {tests!r})
from test_fuzz_media import gif_frame_bomb
from moodgate.media import MediaError
from moodgate.media.image import frames_for_scoring
# A router-sized address-space cap, so the bug shows as a failure, not a swapping box.
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
try:
    frames_for_scoring(gif_frame_bomb())
    outcome = "accepted"
except MediaError as exc:
    outcome = exc.reason
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest).
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({{"outcome": outcome, "maxrss_mb": peak / 1024}}))
"""


def test_gif_frame_larger_than_the_screen_is_refused() -> None:
    script = FRAME_BOMB_CHILD.format(tests=str(Path(__file__).parent))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert found["outcome"] == "too-large", found
    assert found["maxrss_mb"] < 200, found


LARGE_PNG_CHILD = """
import io, json, sys
import numpy as np
from PIL import Image
from moodgate.media.image import frames_for_scoring
# 7000x7000 RGBA, just under the 50 MP limit: a 200 KB file that any page may serve.
pixels = np.zeros((7000, 7000, 4), np.uint8)
pixels[..., 3] = 255
pixels[::50, :, 0] = 255
out = io.BytesIO()
Image.fromarray(pixels, "RGBA").save(out, "PNG", compress_level=1)
data = out.getvalue()
del pixels, out
def peak():
    return next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:")) / 1024
# VmHWM only rises, so measure from a fresh high-water mark.
open("/proc/self/clear_refs", "w").write("5")
before = peak()
info, frames = frames_for_scoring(data, 224, square=True)
print(json.dumps({{"mb": peak() - before, "shape": list(frames[0].shape)}}))
"""


def test_scoring_a_large_png_costs_about_one_decoded_copy() -> None:
    """A 49 MP RGBA PNG is allowed (the limit is 50 MP). Scoring it flattened and resized
    full-size copies: 750 MB peak, past the unit's MemoryMax=512M on its own. It is now
    subsampled before any copy: about the 190 MB the decoder itself needs."""
    result = subprocess.run([sys.executable, "-c", LARGE_PNG_CHILD.format()],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert found["shape"] == [224, 224, 3]
    assert found["mb"] < 300, found
