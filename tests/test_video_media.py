"""media.video and media.segments directly: sampling, motion cues, re-encoding that keeps
timestamps, placeholders with the original timing, and the fMP4 box plumbing."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import av
import pytest
from PIL import Image, ImageOps

import video_factory as vf
from moodgate.media import MediaError, MediaKind, segments, video
from moodgate.media.video import Deadline, Sampling


def grey(frame: Image.Image) -> Image.Image:
    return ImageOps.grayscale(frame).convert("RGB")


def audio_packets(data: bytes) -> list[bytes]:
    with av.open(io.BytesIO(data)) as container:
        if not container.streams.audio:
            return []
        return [bytes(p) for p in container.demux(audio=0) if p.size]


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("streams")
    return {
        "hls-ts": vf.hls(root / "ts", "flashing", 2.0),
        "hls-fmp4": vf.hls(root / "fmp4", "flashing", 2.0, segment_type="fmp4"),
        "dash": vf.dash(root / "dash", "flashing", 2.0),
    }


# ---------------------------------------------------------------- sampling


def test_sampling_takes_keyframes_first_and_respects_the_rate() -> None:
    clip = video.sample(vf.mp4("calm", seconds=4.0, gop=25), MediaKind.MP4, Sampling(fps=1.0))
    assert clip.times == pytest.approx([0.0, 1.0, 2.0, 3.0])  # the four keyframes
    assert clip.info.keyframes == 4 and clip.info.duration == pytest.approx(4.0)
    sparse = video.sample(vf.mp4("calm", seconds=4.0, gop=25), MediaKind.MP4, Sampling(fps=0.5))
    assert len(sparse.frames) <= 2 + 1
    capped = video.sample(vf.mp4("calm", seconds=4.0, gop=10), MediaKind.MP4,
                          Sampling(fps=10.0, max_frames=5))
    assert len(capped.frames) == 5


def test_sparse_sampling_skips_most_of_each_gop() -> None:
    data = vf.mp4("calm", seconds=4.0, gop=50)
    clip = video.sample(data, MediaKind.MP4, Sampling(fps=0.5, burst=8))
    assert clip.times == pytest.approx([0.0, 2.0])
    assert clip.decoded < clip.info.frames / 3  # a burst per GOP, not all 100 frames


def test_gops_without_a_sampling_instant_are_not_decoded() -> None:
    data = vf.mp4("calm", seconds=4.0, gop=25)  # a keyframe every second
    clip = video.sample(data, MediaKind.MP4, Sampling(fps=0.5, burst=8))
    assert clip.times == pytest.approx([0.0, 2.0])
    assert clip.decoded <= 2 * 12  # two bursts (plus the decoder's frame-thread delay)


def test_a_long_gop_is_decoded_as_far_as_the_rate_needs() -> None:
    clip = video.sample(vf.mp4("calm", seconds=4.0, gop=100), MediaKind.MP4, Sampling(fps=1.0))
    assert clip.times == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.05)


def test_scoring_frames_are_reduced() -> None:
    data = vf.mp4("calm", seconds=1.0, width=640, height=360)
    clip = video.sample(data, MediaKind.MP4, Sampling(size=128))
    assert min(clip.frames[0].shape[:2]) == 128 and clip.frames[0].shape[2] == 3


@pytest.mark.parametrize("make,kind", [(vf.mpegts, MediaKind.MPEGTS), (vf.webm, MediaKind.WEBM)])
def test_sampling_other_containers(make, kind) -> None:
    clip = video.sample(make("calm", seconds=2.0), kind, Sampling(fps=1.0))
    assert clip.info.kind is kind and (clip.info.width, clip.info.height) == (160, 90)
    assert len(clip.frames) == 2


# ---------------------------------------------------------------- motion cues


def motion(content: str) -> video.Motion:
    return video.sample(vf.mp4(content, seconds=2.0), MediaKind.MP4).motion


def test_motion_term_separates_still_moving_cutting_and_flashing() -> None:
    calm, still, panning = motion("calm"), motion("static"), motion("panning")
    cutting, flashing = motion("cutting"), motion("flashing")
    # Vivid but motionless content gets no motion arousal: colour is the scorer's business.
    assert calm.arousal_term < 0.05 and still.arousal_term < 0.05
    assert panning.intensity > 0.03 and 0.2 < panning.arousal_term < 0.6
    assert panning.flash_rate == 0.0 and panning.cut_rate == 0.0
    assert cutting.cut_rate > 1.0 and cutting.flash_rate < 3.0
    assert flashing.flash_rate >= 3.0 and flashing.arousal_term > 0.9
    assert calm.arousal_term < min(panning.arousal_term, cutting.arousal_term)
    assert max(panning.arousal_term, cutting.arousal_term) < flashing.arousal_term


def test_motion_ignores_pairs_that_are_not_consecutive() -> None:
    # One keyframe a second and a short burst: only neighbours inside a burst are compared,
    # never the last frame of one burst with the keyframe of the next GOP.
    clip = video.sample(vf.mp4("flashing", seconds=2.0), MediaKind.MP4,
                        Sampling(fps=1.0, burst=2))
    assert clip.decoded < clip.info.frames / 2
    assert clip.motion.seconds == pytest.approx((clip.decoded - 2) / 25.0)


# ---------------------------------------------------------------- re-encoding


@pytest.mark.parametrize(
    "make,kind",
    [(vf.mp4, MediaKind.MP4), (vf.mpegts, MediaKind.MPEGTS), (vf.webm, MediaKind.WEBM)],
)
def test_calm_reencode_keeps_timestamps_size_and_audio(make, kind) -> None:
    audio = kind is not MediaKind.WEBM
    original = make("flashing", start=10.0, audio=True) if kind is MediaKind.MPEGTS else (
        make("flashing", audio=True) if audio else make("flashing"))  # fmt: skip
    out = video.recode(original, kind, grey)
    before, after = video.timeline(original, kind), video.timeline(out, kind)
    assert after.pts == before.pts and after.keyframes == before.keyframes
    assert (after.width, after.height) == (before.width, before.height)
    assert audio_packets(out) == audio_packets(original)  # copied untouched
    assert video.sample(out, kind).info.codec == video.sample(original, kind).info.codec


@pytest.mark.parametrize("name,init,segment", [
    ("hls-fmp4", "init.mp4", "seg001.m4s"), ("dash", "init-0.m4s", "chunk-0-00002.m4s"),
])  # fmt: skip
def test_fmp4_segment_reencode_fits_the_original_init(streams, name, init, segment) -> None:
    files = streams[name]
    original, init_bytes = files[segment], files[init]
    out = video.recode(original, MediaKind.MP4, grey, init=init_bytes)
    assert segments.is_media_segment(out)
    assert segments.base_decode_times(out) == segments.base_decode_times(original)
    assert segments.sequence_number(out) == segments.sequence_number(original)
    before = video.timeline(original, MediaKind.MP4, init_bytes)
    after = video.timeline(out, MediaKind.MP4, init_bytes)
    assert after.pts == before.pts and after.keyframes == before.keyframes
    # Decodes with the untouched init, and is grey now.
    clip = video.sample(out, MediaKind.MP4, init=init_bytes)
    frame = clip.frames[0].astype(int)
    assert abs(frame[..., 0] - frame[..., 1]).max() <= 3


def test_placeholder_segment_has_the_original_duration_and_timestamps(streams) -> None:
    for name, init_name, segment in (("hls-ts", None, "seg001.ts"),
                                     ("hls-fmp4", "init.mp4", "seg001.m4s")):
        files = streams[name]
        kind = MediaKind.MPEGTS if name == "hls-ts" else MediaKind.MP4
        init = files[init_name] if init_name else None
        out = video.placeholder_segment(files[segment], kind, init)
        before, after = video.timeline(files[segment], kind, init), video.timeline(out, kind, init)
        assert after.pts == before.pts and after.keyframes == before.keyframes
        assert (after.width, after.height) == (before.width, before.height)
        assert len(out) < len(files[segment])


def audio_peak_and_timing(data: bytes, init: bytes | None = None) -> tuple[float, list]:
    with av.open(io.BytesIO((init or b"") + data)) as container:
        timing = [(p.pts, p.duration) for p in container.demux(audio=0) if p.size]
    with av.open(io.BytesIO((init or b"") + data)) as container:
        peak = max(float(abs(f.to_ndarray()).max()) for f in container.decode(audio=0))
    return peak, timing


def test_placeholder_segment_silences_aac_with_the_same_timing(streams) -> None:
    cases = [(streams["hls-ts"]["seg001.ts"], MediaKind.MPEGTS, None),
             (streams["hls-fmp4"]["seg001.m4s"], MediaKind.MP4, streams["hls-fmp4"]["init.mp4"]),
             (vf.mp4("flashing", audio=True), MediaKind.MP4, None)]
    for data, kind, init in cases:
        loud, timing = audio_peak_and_timing(data, init)
        quiet, quiet_timing = audio_peak_and_timing(video.placeholder_segment(data, kind, init),
                                                    init)
        assert loud > 0.1 and quiet == 0.0 and quiet_timing == timing


def test_placeholder_clip_is_short_and_same_size() -> None:
    info = video.probe(vf.webm("flashing", width=320, height=180), MediaKind.WEBM)
    clip = video.placeholder_clip(info)
    again = video.probe(clip, MediaKind.WEBM)
    assert (again.width, again.height, again.codec) == (320, 180, "vp9")
    assert again.duration == pytest.approx(2.0, abs=0.25)


# ---------------------------------------------------------------- broken input


def test_placeholder_for_a_stream_cut_before_its_picture_size_is_a_media_error() -> None:
    """Found by the fuzzer: a TS cut after four packets has no parameter sets, so its declared
    size is 0×0; building the placeholder raised IndexError from PyAV. Every cut of a small
    stream now gives a placeholder or a MediaError, which the pipeline turns into on_error."""
    ts = vf.mpegts("calm", seconds=0.4, fps=10, width=64, height=48, gop=2)
    with pytest.raises(MediaError, match="no picture size"):
        video.placeholder_segment(ts[:752], MediaKind.MPEGTS)
    for end in range(188, len(ts), 188):
        with contextlib.suppress(MediaError):
            video.placeholder_segment(ts[:end], MediaKind.MPEGTS)


def test_placeholder_for_a_stream_that_repeats_its_timestamps() -> None:
    """Found by the fuzzer once its exemptions went: a TS whose packets repeat earlier
    timestamps (here: the stream twice over) made the muxer refuse the placeholder with
    EINVAL from PyAV. The placeholder now keeps each timestamp once."""
    ts = vf.mpegts("calm", seconds=0.4, fps=10, width=64, height=48, gop=2)
    for repeated in (ts + ts, ts + ts[len(ts) // 2 // 188 * 188 :]):
        out = video.placeholder_segment(repeated, MediaKind.MPEGTS)
        assert video.timeline(out, MediaKind.MPEGTS).pts == video.timeline(
            ts, MediaKind.MPEGTS
        ).pts


def test_broken_inputs_raise_media_errors() -> None:
    ts = vf.mpegts("calm")
    with pytest.raises(MediaError, match="truncated"):
        video.sample(ts[:-100], MediaKind.MPEGTS)
    mp4 = vf.mp4("calm")
    with pytest.raises(MediaError, match="truncated"):
        video.sample(mp4[: len(mp4) // 2], MediaKind.MP4)
    with pytest.raises(MediaError, match="no-video"):
        video.sample(vf.audio_only_mp4(), MediaKind.MP4)
    with pytest.raises(MediaError):
        video.sample(b"\x1a\x45\xdf\xa3" + b"\x00" * 400, MediaKind.WEBM)


def test_a_spent_budget_stops_the_work() -> None:
    deadline = Deadline(0.0)
    with pytest.raises(TimeoutError):
        video.sample(vf.mp4("calm", seconds=2.0), MediaKind.MP4, deadline=deadline)


# ---------------------------------------------------------------- fMP4 boxes


def test_init_and_media_segments_are_told_apart(streams) -> None:
    for name, init, segment in (("hls-fmp4", "init.mp4", "seg000.m4s"),
                                ("dash", "init-0.m4s", "chunk-0-00001.m4s")):
        files = streams[name]
        assert segments.is_init_segment(files[init]) and not segments.is_media_segment(files[init])
        assert segments.is_media_segment(files[segment])
        assert not segments.is_init_segment(files[segment])
    progressive = vf.mp4("calm")
    assert not segments.is_init_segment(progressive) and not segments.is_media_segment(progressive)
    assert segments.track_ids(streams["hls-fmp4"]["init.mp4"]) == [1, 2]


def test_annexb_becomes_length_prefixed() -> None:
    annexb = b"\x00\x00\x00\x01\x67\xaa\xbb\x00\x00\x01\x68\xcc\x00\x00\x01\x65\x01\x02\x03"
    out = segments.annexb_to_length_prefixed(annexb)
    assert out == (b"\x00\x00\x00\x03\x67\xaa\xbb" b"\x00\x00\x00\x02\x68\xcc"
                   b"\x00\x00\x00\x04\x65\x01\x02\x03")  # fmt: skip


def test_written_fragment_reads_back() -> None:
    run = segments.TrackRun(2, 123_456, [segments.Sample(b"abc", 512, True),
                                         segments.Sample(b"defg", 512, False, -5)])
    out = segments.write_fragment(7, [run], b"")
    assert segments.top_level(out) == [b"moof", b"mdat"]
    assert segments.base_decode_times(out) == {2: 123_456}
    assert segments.sequence_number(out) == 7
    assert out.endswith(b"abcdefg")


def test_factory_streams_are_what_the_tests_claim(tmp_path: Path) -> None:
    files = vf.hls(tmp_path / "h", "calm", 2.0)
    assert sorted(files) == ["index.m3u8", "seg000.ts", "seg001.ts"]
    assert b"#EXT-X-ENDLIST" in files["index.m3u8"]
