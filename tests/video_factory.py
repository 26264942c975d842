"""Real encoded video for tests, made with PyAV: no binary fixtures in the repo.

Two kinds of content at tiny sizes (tests must stay fast on two cores):
- calm: a slowly drifting, pale blue-green gradient (low saturation, low contrast, no cuts);
- flashing: saturated red/yellow/black stripes whose colours swap every other frame
  (≈ 6 flashes per second at 25 fps), the content photosensitivity guidelines warn about.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

Content = Callable[[int, int, int, int], np.ndarray]  # (index, fps, width, height) → RGB


def calm_frame(index: int, fps: int, width: int, height: int) -> np.ndarray:
    t = index / fps
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    drift = 0.05 * np.sin(2 * np.pi * (x + 0.1 * t))
    base = np.array([170.0, 200.0, 205.0]) + 25.0 * (y + drift)
    return np.clip(base * np.ones((height, width, 1)), 0, 255).astype(np.uint8)


def flashing_frame(index: int, fps: int, width: int, height: int) -> np.ndarray:
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    phase = (index // 2) % 3  # colours rotate every 2 frames: many luminance flips per second
    stripes = ((x + y) // 6 + phase) % 3
    palette = np.array([[255, 0, 0], [255, 240, 0], [0, 0, 0]], dtype=np.uint8)
    rgb = palette[stripes]
    if (index // 2) % 2:
        rgb = 255 - rgb  # a full inversion: a general flash in the WCAG sense
    return rgb


def static_vivid_frame(index: int, fps: int, width: int, height: int) -> np.ndarray:
    """The flashing clip's first frame held still: same colours, no motion."""
    return flashing_frame(0, fps, width, height)


def cutting_frame(index: int, fps: int, width: int, height: int) -> np.ndarray:
    """Calm-coloured shots cut every 6 frames, no flashing luminance swings within a shot."""
    shot = index // 6
    rng = np.random.default_rng(shot)
    tint = np.array([160.0, 190.0, 195.0]) + rng.uniform(-40, 40, size=3)
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    return np.clip(tint + 30.0 * y * np.ones((height, width, 1)), 0, 255).astype(np.uint8)


def panning_frame(index: int, fps: int, width: int, height: int) -> np.ndarray:
    """Calm colours, fast camera motion: soft grey-green bars sliding 6 px per frame."""
    x = np.arange(width)[None, :] + 6 * index
    shade = 150.0 + 60.0 * (((x // 12) % 2) * np.ones((height, 1)))
    return np.clip(np.stack([shade * 0.9, shade, shade * 0.95], axis=-1), 0, 255).astype(
        np.uint8)


CONTENT: dict[str, Content] = {
    "panning": panning_frame,
    "calm": calm_frame,
    "flashing": flashing_frame,
    "static": static_vivid_frame,
    "cutting": cutting_frame,
}


def _frames(
    content: str, seconds: float, fps: int, width: int, height: int
) -> Iterator[np.ndarray]:
    make = CONTENT[content]
    for index in range(round(seconds * fps)):
        yield make(index, fps, width, height)


def _add_audio(container: av.container.OutputContainer) -> av.audio.stream.AudioStream:
    stream = container.add_stream("aac", rate=48000)
    stream.layout = "mono"
    return stream


def _audio_frames(seconds: float, rate: int = 48000) -> Iterator[av.AudioFrame]:
    samples = 1024
    for start in range(0, int(seconds * rate), samples):
        t = (np.arange(samples) + start) / rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        yield frame


def encode(
    content: str = "calm",
    container_format: str = "mp4",
    codec: str = "libx264",
    seconds: float = 2.0,
    fps: int = 25,
    width: int = 160,
    height: int = 90,
    audio: bool = False,
    gop: int = 25,
    start: float = 0.0,
) -> bytes:
    """One clip as bytes; `start` offsets every timestamp (a later HLS segment, say)."""
    out = io.BytesIO()
    with av.open(out, "w", format=container_format) as container:
        _write(container, content, codec, seconds, fps, width, height, audio, gop, start)
    return out.getvalue()


def _write(
    container: av.container.OutputContainer,
    content: str,
    codec: str,
    seconds: float,
    fps: int,
    width: int,
    height: int,
    audio: bool,
    gop: int,
    start: float,
) -> None:
    video = container.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.codec_context.gop_size = gop
    video.codec_context.time_base = Fraction(1, fps)
    if codec == "libx264":
        video.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency"}
    elif codec.startswith("libvpx"):
        video.codec_context.options = {"deadline": "realtime", "cpu-used": "8",
                                       "lag-in-frames": "0"}
    sound = _add_audio(container) if audio else None
    offset = round(start * fps)
    for index, rgb in enumerate(_frames(content, seconds, fps, width, height)):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = index + offset
        frame.time_base = Fraction(1, fps)
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    if sound is not None:
        shift = round(start * 48000)
        for frame in _audio_frames(seconds):
            frame.pts += shift
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)


def mp4(content: str = "calm", **kw: object) -> bytes:
    return encode(content, "mp4", "libx264", **kw)  # type: ignore[arg-type]


def fragmented_mp4(
    content: str = "calm", seconds: float = 4.0, fps: int = 25,
    movflags: str = "frag_keyframe+empty_moov+default_base_moof",
) -> bytes:
    """One fMP4 file, a `moof`+`mdat` per second: what DASH on-demand reads in byte ranges.
    movflags="faststart" gives a plain (unfragmented) MP4 with its moov first instead."""
    with tempfile.TemporaryDirectory() as folder:  # faststart re-reads the file by its name
        path = Path(folder) / "out.mp4"
        with av.open(str(path), "w", format="mp4", options={"movflags": movflags}) as container:
            _write(container, content, "libx264", seconds, fps, 160, 90, False, fps, 0.0)
        return path.read_bytes()


def mpegts(content: str = "calm", **kw: object) -> bytes:
    return encode(content, "mpegts", "libx264", **kw)  # type: ignore[arg-type]


def webm(content: str = "calm", **kw: object) -> bytes:
    return encode(content, "webm", "libvpx-vp9", **kw)  # type: ignore[arg-type]


def audio_only_mp4(seconds: float = 1.0) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = _add_audio(container)
        for frame in _audio_frames(seconds):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def _stream_files(
    directory: Path,
    muxer: str,
    entry: str,
    options: dict[str, str],
    content: str,
    seconds: float,
    fps: int,
    width: int,
    height: int,
    audio: bool,
) -> dict[str, bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    with av.open(str(directory / entry), "w", format=muxer, options=options) as container:
        _write(container, content, "libx264", seconds, fps, width, height, audio, fps, 0.0)
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def hls(
    directory: Path,
    content: str = "calm",
    seconds: float = 4.0,
    fps: int = 25,
    width: int = 160,
    height: int = 90,
    segment_type: str = "mpegts",
    audio: bool = True,
) -> dict[str, bytes]:
    """An HLS VOD stream made by FFmpeg's own HLS muxer: index.m3u8 plus 1-second segments."""
    options = {
        "hls_time": "1",
        "hls_playlist_type": "vod",
        "hls_segment_type": segment_type,
        "hls_segment_filename": str(directory / ("seg%03d.ts" if segment_type == "mpegts"
                                                 else "seg%03d.m4s")),
    }
    if segment_type == "fmp4":
        options["hls_fmp4_init_filename"] = "init.mp4"
    return _stream_files(directory, "hls", "index.m3u8", options, content, seconds, fps, width,
                         height, audio)


def dash(
    directory: Path,
    content: str = "calm",
    seconds: float = 4.0,
    fps: int = 25,
    width: int = 160,
    height: int = 90,
) -> dict[str, bytes]:
    """A DASH VOD stream made by FFmpeg's DASH muxer: manifest.mpd, init and 1-s segments."""
    options = {
        "seg_duration": "1",
        "use_template": "1",
        "use_timeline": "1",
        "init_seg_name": "init-$RepresentationID$.m4s",
        "media_seg_name": "chunk-$RepresentationID$-$Number%05d$.m4s",
    }
    return _stream_files(directory, "dash", "manifest.mpd", options, content, seconds, fps,
                         width, height, audio=False)
