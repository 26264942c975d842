"""Video end to end: a real `moodgate serve`, a real origin serving real HLS, DASH and
progressive files, and FFmpeg as the player (its `-http_proxy` option, proxy auth picking the
child). Playback must survive pass, calm and block; broken media must not take the proxy down.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

import video_factory as vf
from moodgate.emotion.heuristic import HeuristicScorer
from realnet import Origin, Proxy, RangeOrigin, Route
from test_proxy_e2e import POLICY as TWO_CHILDREN
from test_proxy_e2e import fetch_as, rows

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg/ffprobe")

POLICY = TWO_CHILDREN.replace("default:\n", """\
  bigkid:
    users: [bigkid]
    preset: none
    inspect:
      max_video_bytes: 10000
    rules:
      - name: lively
        when: "arousal > 0.2"
        action: block
  bigstrict:
    users: [bigstrict]
    preset: none
    inspect:
      max_video_bytes: 10000
    on_error: block
default:
""")

TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".m4s": "video/iso.segment",
         ".mp4": "video/mp4", ".mpd": "application/dash+xml", ".webm": "video/webm"}
FPS = 25
SECONDS = 4.0
# Children are picked by proxy-auth user; no review page (its port is shared between runs).
EXTRA = ["--scorer", "heuristic", "--set", "proxyauth=any", "--set", "moodgate_review_listen=off"]


def _type(name: str) -> str:
    return TYPES[Path(name).suffix]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every file the origin serves, by URL path."""
    root = tmp_path_factory.mktemp("video-media")
    files: dict[str, bytes] = {}
    for stream, make in {
        "calm": lambda d: vf.hls(d, "calm", SECONDS),
        "flash": lambda d: vf.hls(d, "flashing", SECONDS),
        "flash4": lambda d: vf.hls(d, "flashing", SECONDS, segment_type="fmp4"),
        "dash": lambda d: vf.dash(d, "flashing", SECONDS),
    }.items():
        for name, body in make(root / stream).items():
            files[f"/{stream}/{name}"] = body
    files["/calm.mp4"] = vf.mp4("calm", audio=True)
    files["/flash.mp4"] = vf.mp4("flashing", audio=True)
    files["/flash.webm"] = vf.webm("flashing")
    files["/audio.mp4"] = vf.audio_only_mp4()
    # A stream with a truncated, a corrupted and a missing segment between two good ones.
    good = vf.hls(root / "broken-src", "flashing", SECONDS)
    files["/broken/index.m3u8"] = good["index.m3u8"]
    files["/broken/seg000.ts"] = good["seg000.ts"][: len(good["seg000.ts"]) // 2 + 17]
    corrupt = bytearray(good["seg001.ts"])
    corrupt[400:-400] = np.random.default_rng(7).integers(0, 256, len(corrupt) - 800,
                                                          dtype=np.uint8).tobytes()
    files["/broken/seg001.ts"] = bytes(corrupt)
    files["/broken/seg003.ts"] = good["seg003.ts"]  # seg002.ts is missing: a 404
    return files


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, library: dict[str, bytes]
) -> Iterator[tuple[Proxy, Origin]]:
    state = tmp_path_factory.mktemp("video-proxy")
    policy = state / "policy.yaml"
    policy.write_text(POLICY)
    routes = {path: Route(body, _type(path)) for path, body in library.items()}
    with (
        Origin(routes) as origin,
        Proxy(state, policy, extra=EXTRA) as proxy,
    ):
        yield proxy, origin
        print(proxy.log()[-5000:])


def ffmpeg_read(
    proxy: Proxy, user: str, url: str, out: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """FFmpeg as the player: through the proxy as `user`, the whole stream read (or copied)."""
    sink = ["-c", "copy", "-y", str(out)] if out else ["-f", "null", "-"]
    command = [
        "ffmpeg", "-nostdin", "-v", "error",
        "-http_proxy", f"http://{user}:secret@127.0.0.1:{proxy.port}",
        "-i", url, *sink,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def probe(path: Path) -> dict[str, object]:
    result = subprocess.run(
        ["ffprobe", "-v", "error",
         "-show_entries", "format=duration:stream=codec_type,width,height",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def video_size(info: dict[str, object]) -> tuple[int, int]:
    streams: list[dict[str, object]] = info["streams"]  # type: ignore[assignment]
    stream = next(s for s in streams if s["codec_type"] == "video")
    return int(stream["width"]), int(stream["height"])


def frame_arousal(data: bytes) -> float:
    """Mean heuristic arousal over every decoded frame."""
    scorer = HeuristicScorer()
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return float(np.mean([e.arousal for e in scorer.score_frames(frames)]))


def segment_rows(proxy: Proxy, child: str, prefix: str, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 15
    while True:
        found = [r for r in rows(proxy, 0) if r["child"] == child
                 and str(r["path"]).startswith(prefix)]  # fmt: skip
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_hls_passes_untouched_for_a_child_without_rules(stack, library, tmp_path) -> None:
    proxy, origin = stack
    out = tmp_path / "passed.ts"
    result = ffmpeg_read(proxy, "anyone", origin.url("/flash/index.m3u8"), out)
    assert result.returncode == 0, result.stderr
    found = segment_rows(proxy, "default", "/flash/", 4)
    assert [r["action"] for r in found] == ["pass"] * 4
    assert {r["kind"] for r in found} == {"mpegts"} and all(r["width"] == 160 for r in found)
    # Passed segments are byte-identical.
    got = fetch_as(proxy, "anyone", origin.url("/flash/seg002.ts"))
    assert got.body == library["/flash/seg002.ts"]


def test_hls_calmed_keeps_duration_size_and_lowers_arousal(stack, library, tmp_path) -> None:
    proxy, origin = stack
    out = tmp_path / "calmed.ts"
    result = ffmpeg_read(proxy, "calmkid", origin.url("/flash/index.m3u8"), out)
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert abs(float(info["format"]["duration"]) - SECONDS) <= 1.5 / FPS  # type: ignore[index]
    assert video_size(info) == (160, 90)
    original = b"".join(library[f"/flash/seg00{i}.ts"] for i in range(4))
    assert frame_arousal(out.read_bytes()) < frame_arousal(original) - 0.3
    found = segment_rows(proxy, "calmkid", "/flash/", 4)
    assert {r["action"] for r in found} == {"calm"}
    assert all(r["calm_alpha"] and r["after_arousal"] is not None for r in found)
    # Calm content in the same session is left alone.
    assert ffmpeg_read(proxy, "calmkid", origin.url("/calm/index.m3u8")).returncode == 0
    assert {r["action"] for r in segment_rows(proxy, "calmkid", "/calm/", 4)} == {"pass"}


def test_hls_blocked_keeps_playing_on_placeholders(stack, library, tmp_path) -> None:
    proxy, origin = stack
    out = tmp_path / "blocked.ts"
    result = ffmpeg_read(proxy, "strictkid", origin.url("/flash/index.m3u8"), out)
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert abs(float(info["format"]["duration"]) - SECONDS) <= 1.5 / FPS  # type: ignore[index]
    assert video_size(info) == (160, 90)
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == round(SECONDS * FPS)
    # Flat placeholders: every channel is one value across the picture.
    assert max(float(f.reshape(-1, 3).astype(np.float32).std(axis=0).max()) for f in frames) < 2
    with av.open(str(out)) as container:  # and silent, with the audio track still there
        assert max(float(abs(f.to_ndarray()).max()) for f in container.decode(audio=0)) == 0.0
    assert {r["action"] for r in segment_rows(proxy, "strictkid", "/flash/", 4)} == {"block"}


@pytest.mark.parametrize("entry", ["/flash4/index.m3u8", "/dash/manifest.mpd"])
def test_fmp4_streams_calmed_with_their_init_segment(stack, library, tmp_path, entry) -> None:
    proxy, origin = stack
    out = tmp_path / "calmed.mp4"
    result = ffmpeg_read(proxy, "calmkid", origin.url(entry), out)
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert abs(float(info["format"]["duration"]) - SECONDS) <= 1.5 / FPS  # type: ignore[index]
    assert video_size(info) == (160, 90)
    prefix = entry.rsplit("/", 1)[0] + "/"
    found = [r for r in segment_rows(proxy, "calmkid", prefix, 5) if r["outcome"] == "scored"]
    assert len(found) == 4 and {r["action"] for r in found} == {"calm"}
    inits = [r for r in segment_rows(proxy, "calmkid", prefix, 5) if r["outcome"] == "skipped"]
    assert inits and inits[0]["action"] == "pass"
    media = [p for p in library if p.startswith(prefix) and p.endswith((".mp4", ".m4s"))]
    original = b"".join(library[p] for p in sorted(media, key=lambda p: ("init" not in p, p)))
    assert frame_arousal(out.read_bytes()) < frame_arousal(original) - 0.3


@pytest.mark.parametrize("name", ["/flash.mp4", "/flash.webm"])
def test_progressive_calm_and_block(stack, library, tmp_path, name) -> None:
    proxy, origin = stack
    calmed = fetch_as(proxy, "calmkid", origin.url(name))
    assert calmed.status == 200 and calmed.body != library[name]
    assert calmed.header("x-moodgate").startswith("calm;")
    (tmp_path / f"calmed{name[-5:]}").write_bytes(calmed.body)
    info = probe(tmp_path / f"calmed{name[-5:]}")
    assert video_size(info) == (160, 90)
    assert abs(float(info["format"]["duration"]) - 2.0) <= 1.5 / FPS  # type: ignore[index]
    assert frame_arousal(calmed.body) < frame_arousal(library[name]) - 0.3
    # FFmpeg reads the same file through the proxy, as a player would.
    assert ffmpeg_read(proxy, "calmkid", origin.url(name)).returncode == 0
    blocked = fetch_as(proxy, "strictkid", origin.url(name))
    assert blocked.status == 200 and blocked.header("x-moodgate").startswith("block;")
    (tmp_path / f"blocked{name[-5:]}").write_bytes(blocked.body)
    assert video_size(probe(tmp_path / f"blocked{name[-5:]}")) == (160, 90)


def test_progressive_calm_video_passes_byte_identical(stack, library) -> None:
    proxy, origin = stack
    got = fetch_as(proxy, "strictkid", origin.url("/calm.mp4"))
    assert got.status == 200 and got.body == library["/calm.mp4"]
    assert got.header("x-moodgate").startswith("pass;")


def test_large_video_is_streamed_and_passed(stack, library) -> None:
    proxy, origin = stack
    got = fetch_as(proxy, "bigkid", origin.url("/flash.mp4"))
    assert got.status == 200 and got.body == library["/flash.mp4"]
    row = segment_rows(proxy, "bigkid", "/flash.mp4", 1)[-1]
    assert row["outcome"] == "streamed" and row["action"] == "pass"
    assert row["rule"] == "bigkid/too-large"


def test_large_video_is_refused_where_the_policy_blocks_what_it_cannot_judge(
    stack, library
) -> None:
    """on_error: block (and no on_too_large) blocks a video too large to judge: both
    connections close at once, before the body is fetched, and the row says why."""
    proxy, origin = stack
    started = time.monotonic()
    with pytest.raises((OSError, http.client.HTTPException)):
        fetch_as(proxy, "bigstrict", origin.url("/flash.mp4"))
    assert time.monotonic() - started < 10
    row = segment_rows(proxy, "bigstrict", "/flash.mp4", 1)[-1]
    assert row["outcome"] == "too-large" and row["action"] == "block"
    assert row["rule"] == "bigstrict/too-large"
    # The proxy goes on serving that child.
    got = fetch_as(proxy, "bigstrict", origin.url("/calm/index.m3u8"))
    assert got.status == 200


def test_broken_segments_get_answers_and_rows(stack, library) -> None:
    proxy, origin = stack
    ffmpeg_read(proxy, "calmkid", origin.url("/broken/index.m3u8"))
    # The player got past the truncated, corrupted and missing segments to the last one.
    assert segment_rows(proxy, "calmkid", "/broken/seg003", 1)[-1]["action"] == "calm"
    # Passed as they came for calmkid (on_error: pass).
    for segment in ("seg000.ts", "seg001.ts"):
        got = fetch_as(proxy, "calmkid", origin.url(f"/broken/{segment}"))
        assert got.status == 200 and got.body == library[f"/broken/{segment}"]
    # strictkid (on_error: block): the truncated one still has readable timestamps, so it
    # becomes a placeholder; the unreadable one can only be refused.
    truncated_answer = fetch_as(proxy, "strictkid", origin.url("/broken/seg000.ts"))
    assert truncated_answer.status == 200 and truncated_answer.header("x-moodgate").startswith(
        "block;")
    assert fetch_as(proxy, "strictkid", origin.url("/broken/seg001.ts")).status == 403
    for user in ("calmkid", "strictkid"):
        assert fetch_as(proxy, user, origin.url("/broken/seg002.ts")).status == 404
    truncated = [r for r in segment_rows(proxy, "strictkid", "/broken/seg000", 1)]
    assert truncated[-1]["outcome"] == "error" and "truncated" in str(truncated[-1]["error"])
    assert truncated[-1]["action"] == "block"
    corrupted = segment_rows(proxy, "calmkid", "/broken/seg001", 1)[-1]
    assert corrupted["outcome"] == "error" and corrupted["action"] == "pass"
    # The proxy is still up and still judging.
    assert fetch_as(proxy, "calmkid", origin.url("/flash/seg000.ts")).status == 200


def test_audio_only_container(stack, library) -> None:
    proxy, origin = stack
    got = fetch_as(proxy, "calmkid", origin.url("/audio.mp4"))
    assert got.status == 200 and got.body == library["/audio.mp4"]
    row = segment_rows(proxy, "calmkid", "/audio.mp4", 1)[-1]
    assert row["outcome"] == "error" and "no-video" in str(row["error"])
    blocked = fetch_as(proxy, "strictkid", origin.url("/audio.mp4"))
    assert blocked.status == 403
    assert segment_rows(proxy, "strictkid", "/audio.mp4", 1)[-1]["action"] == "block"


def test_playlists_pass_untouched(stack, library) -> None:
    proxy, origin = stack
    for path in ("/flash/index.m3u8", "/dash/manifest.mpd"):
        got = fetch_as(proxy, "strictkid", origin.url(path))
        assert got.status == 200 and got.body == library[path]
    assert not [r for r in rows(proxy, 0) if str(r["path"]).endswith((".m3u8", ".mpd"))]


def test_over_budget_applies_on_timeout(tmp_path, library) -> None:
    """A 1 ms video budget: every segment times out and the policy's on_timeout applies."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("    on_error: block\n",
                                     "    on_error: block\n    on_timeout: block\n"))
    routes = {path: Route(body, _type(path)) for path, body in library.items()}
    extra = [*EXTRA, "--set", "moodgate_video_deadline_ms=1"]
    with Origin(routes) as origin, Proxy(tmp_path / "state", policy, extra=extra) as proxy:
        passed = fetch_as(proxy, "calmkid", origin.url("/flash/seg001.ts"))
        assert passed.status == 200 and passed.body == library["/flash/seg001.ts"]
        blocked = fetch_as(proxy, "strictkid", origin.url("/flash/seg001.ts"))
        assert blocked.status == 200 and blocked.header("x-moodgate").startswith("block;")
        assert blocked.body != library["/flash/seg001.ts"]  # a placeholder, not the original
        found = segment_rows(proxy, "strictkid", "/flash/seg001", 1)
        assert found[-1]["outcome"] == "timeout" and found[-1]["rule"] == "strictkid/on_timeout"
        assert segment_rows(proxy, "calmkid", "/flash/seg001", 1)[-1]["outcome"] == "timeout"


def fetch_range(
    proxy: Proxy, user: str, url: str, wanted: str
) -> tuple[int, dict[str, str], bytes]:
    """A player's request: `Range: wanted` (e.g. "bytes=0-1"), through the proxy as `user`."""
    import urllib.error
    import urllib.request

    handler = urllib.request.ProxyHandler({"http": f"http://{user}:pw@127.0.0.1:{proxy.port}"})
    request = urllib.request.Request(url, headers={"Range": wanted, "Accept-Encoding": "identity"})
    try:
        with urllib.request.build_opener(handler).open(request, timeout=30) as response:
            return response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers.items()), error.read()


def _lower(items: object) -> dict[str, str]:
    return {key.lower(): value for key, value in items}  # type: ignore[attr-defined]


def test_a_player_opening_with_range_gets_the_judged_file(stack, library) -> None:
    proxy, _ = stack
    origin = RangeOrigin(library["/flash.mp4"])
    url = origin.url("/movie.mp4")
    try:
        status, headers, judged = fetch_range(proxy, "calmkid", url, "bytes=0-")
        assert origin.seen == [None]  # the proxy asked for the whole file
        assert status == 206 and headers["x-moodgate"].startswith("calm;")
        assert headers["content-range"] == f"bytes 0-{len(judged) - 1}/{len(judged)}"
        assert headers["accept-ranges"] == "bytes" and judged != library["/flash.mp4"]
        # Seeking is answered from the judged copy; the origin is not asked again.
        status, headers, body = fetch_range(proxy, "calmkid", url, "bytes=1000-")
        assert status == 206 and body == judged[1000:]
        assert headers["content-range"] == f"bytes 1000-{len(judged) - 1}/{len(judged)}"
        assert headers["x-moodgate"].startswith("calm;") and headers["cache-control"] == "no-store"
        status, _, body = fetch_range(proxy, "calmkid", url, "bytes=-500")
        assert status == 206 and body == judged[-500:]
        status, headers, _ = fetch_range(proxy, "calmkid", url, f"bytes={len(judged)}-")
        assert status == 416 and headers["content-range"] == f"bytes */{len(judged)}"
        assert origin.seen == [None]
    finally:
        origin.close()


def test_a_file_read_in_ranges_is_judged_whole_once_per_viewer(stack, library) -> None:
    """Safari's way: a 2-byte probe, then the file in pieces. Only the probe passes unjudged
    (its answer tells the size); every later piece is cut from the judged copy."""
    proxy, _ = stack
    original = library["/flash.mp4"]
    origin = RangeOrigin(original)
    url = origin.url("/clip.mp4")
    try:
        status, _, probe_bytes = fetch_range(proxy, "calmkid", url, "bytes=0-1")
        assert status == 206 and probe_bytes == original[:2]
        assert origin.seen == ["bytes=0-1"]
        parts: list[bytes] = []
        total = None
        while total is None or sum(map(len, parts)) < total:
            start = sum(map(len, parts))
            status, headers, body = fetch_range(
                proxy, "calmkid", url, f"bytes={start}-{start + 49_999}")
            assert status == 206 and headers["x-moodgate"].startswith("calm;"), headers
            total = int(headers["content-range"].rsplit("/", 1)[1])
            parts.append(body)
        assert origin.seen == ["bytes=0-1", None]  # the whole file, fetched once
        judged = b"".join(parts)
        assert judged != original and frame_arousal(judged) < frame_arousal(original)
        # Another child on the same file gets their own judgement, not calmkid's copy.
        status, headers, _ = fetch_range(proxy, "strictkid", url, "bytes=0-999")
        assert status == 206 and headers["x-moodgate"].startswith("block;")
        assert origin.seen == ["bytes=0-1", None, None]
        # `moodgate status` shows what the copies hold.
        deadline = time.monotonic() + 20
        while True:
            report = json.loads(subprocess.run(
                [sys.executable, "-m", "moodgate.cli", "status", "--json",
                 "--state-dir", str(proxy.state_dir)],
                capture_output=True, text=True, timeout=60).stdout)  # fmt: skip
            copies = report.get("extra", {}).get("video_copies", {})
            if copies.get("files", 0) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert copies["files"] >= 2 and 0 < copies["held_mb"] <= copies["max_mb"] == 128
    finally:
        origin.close()


def test_a_video_url_without_extension_is_judged_from_the_second_range(stack, library) -> None:
    proxy, _ = stack
    origin = RangeOrigin(library["/flash.mp4"])
    url = origin.url("/play?id=9")
    try:
        status, _, _ = fetch_range(proxy, "calmkid", url, "bytes=0-1")
        assert status == 206 and origin.seen == ["bytes=0-1"]  # unknown yet: passed
        status, headers, body = fetch_range(proxy, "calmkid", url, "bytes=0-49999")
        assert origin.seen == ["bytes=0-1", None]  # now known as a video: fetched whole
        assert status == 206 and headers["x-moodgate"].startswith("calm;")
        status, _, rest = fetch_range(proxy, "calmkid", url, "bytes=50000-")
        assert status == 206 and len(origin.seen) == 2
        assert frame_arousal(body + rest) < frame_arousal(library["/flash.mp4"])
    finally:
        origin.close()


def test_dash_on_demand_ranges_are_judged_fragment_by_fragment(stack) -> None:
    """One fMP4 file read as the manifest's byte ranges: the init, then one moof+mdat per
    range. Each range goes to the origin as asked (the offsets are the manifest's), and each
    fragment is judged with the init, like a stream's segments."""
    from moodgate.media import segments

    proxy, _ = stack
    original = vf.fragmented_mp4("flashing")
    boxes = list(segments.boxes(original))
    first_moof = next(i for i, b in enumerate(boxes) if b.kind == b"moof")
    ranges = [(0, boxes[first_moof].start - 1)]  # ftyp + moov
    for i in range(first_moof, len(boxes) - 1, 2):  # moof + mdat pairs
        ranges.append((boxes[i].start, boxes[i + 1].start + boxes[i + 1].size - 1))
    origin = RangeOrigin(original)
    url = origin.url("/movie-dash.mp4")
    try:
        answers = []
        for start, end in ranges:
            status, headers, body = fetch_range(proxy, "calmkid", url, f"bytes={start}-{end}")
            assert status == 206 and origin.seen[-1] == f"bytes={start}-{end}"
            assert headers["content-range"].startswith(f"bytes {start}-")
            answers.append((headers, body))
        init, fragments = answers[0][1], [body for _, body in answers[1:]]
        assert init == original[: ranges[0][1] + 1]  # the init passes as it is
        assert all(h["x-moodgate"].startswith("calm;") for h, _ in answers[1:])
        assert len(fragments) >= 3 and all(f != original[a : b + 1]
                                           for f, (a, b) in zip(fragments, ranges[1:], strict=True))
        played = init + b"".join(fragments)
        assert frame_arousal(played) < frame_arousal(original)
        assert len(origin.seen) == len(ranges)  # nothing fetched whole
    finally:
        origin.close()


def test_a_plain_mp4_whose_first_range_holds_its_moov_is_not_taken_for_dash(stack) -> None:
    """A faststart MP4's first slice has ftyp + moov like a DASH init, but no mvex: it stays a
    plain file, so its next range is fetched whole and judged."""
    from moodgate.media import segments

    proxy, _ = stack
    original = vf.fragmented_mp4("flashing", movflags="faststart")
    moov = next(b for b in segments.boxes(original) if b.kind == b"moov")
    origin = RangeOrigin(original)
    url = origin.url("/faststart.mp4")
    try:
        first = f"bytes=0-{moov.start + moov.size + 99}"
        status, _, body = fetch_range(proxy, "calmkid", url, first)
        assert status == 206 and body == original[: moov.start + moov.size + 100]
        status, headers, _ = fetch_range(proxy, "calmkid", url, "bytes=5000-9999")
        assert origin.seen == [first, None]  # known size, plain file: fetched whole
        assert status == 206 and headers["x-moodgate"].startswith("calm;")
    finally:
        origin.close()


def test_a_video_too_large_to_judge_is_refused_in_ranges_too(stack, library) -> None:
    """Safari reads every video in ranges. For a file over max_video_bytes, a child whose
    policy blocks what it cannot judge gets the ranges refused, as the whole file would be;
    a child whose policy passes it gets them as they are. DASH on-demand is still judged
    fragment by fragment (test above), however large the file."""
    proxy, _ = stack
    original = library["/flash.mp4"]
    assert len(original) > 10000  # bigkid's and bigstrict's max_video_bytes
    origin = RangeOrigin(original)
    url = origin.url("/long-film.mp4")
    try:
        for wanted in ("bytes=0-1", "bytes=0-4095", "bytes=5000-"):
            status, headers, _ = fetch_range(proxy, "bigstrict", url, wanted)
            assert status == 403 and headers["x-moodgate"].startswith("block;"), wanted
            status, headers, body = fetch_range(proxy, "bigkid", url, wanted)
            start, _, end = wanted.removeprefix("bytes=").partition("-")
            stop = int(end) + 1 if end else len(original)
            assert status == 206 and body == original[int(start) : stop]
        refused = segment_rows(proxy, "bigstrict", "/long-film.mp4", 3)
        assert [(r["action"], r["outcome"]) for r in refused] == [("block", "too-large")] * 3
        assert not [r for r in rows(proxy, 0) if r["child"] == "bigkid"
                    and r["path"] == "/long-film.mp4"]  # fmt: skip
    finally:
        origin.close()


def test_a_policy_edit_retires_the_judged_copies(tmp_path, library) -> None:
    """Seeking after the parents tightened the rules is judged under the new rules, not cut
    from the copy judged under the old ones."""
    calming = TWO_CHILDREN.split("  strictkid:")[0] + "default:\n  preset: none\n"
    blocking = calming.replace(
        'action: calm\n        target: "arousal <= -0.2"\n        if_unreached: keep',
        "action: block")  # fmt: skip
    assert blocking != calming
    policy = tmp_path / "policy.yaml"
    policy.write_text(calming)
    origin = RangeOrigin(library["/flash.mp4"])
    url = origin.url("/film.mp4")
    try:
        with Proxy(tmp_path / "state", policy, extra=EXTRA) as proxy:
            _, headers, _ = fetch_range(proxy, "calmkid", url, "bytes=0-")
            assert headers["x-moodgate"].startswith("calm;") and origin.seen == [None]
            policy.write_text(blocking)
            deadline = time.monotonic() + 10
            while True:  # the watcher applies the edit within a second or two
                _, headers, _ = fetch_range(proxy, "calmkid", url, "bytes=1000-")
                if headers["x-moodgate"].startswith("block;") or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert headers["x-moodgate"].startswith("block;")
            assert origin.seen[-1] is None and len(origin.seen) >= 2  # judged again, whole
    finally:
        origin.close()
