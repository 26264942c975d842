"""Video with PyAV: sample frames cheaply for scoring, measure motion, re-encode a calmed copy
or a same-timing placeholder, for progressive files and for single HLS / DASH segments.

Sampling is keyframes first. Packets are demuxed (cheap), split into GOPs at keyframes, and
only the start of each GOP is decoded: the keyframe plus a short burst of the frames that
follow it (they reference nothing before the keyframe, so the rest of the GOP can be skipped).
The burst gives consecutive frames for the motion cues; frames deeper in a long GOP are
decoded only when the sampling rate asks for them.

Motion cues (see docs/video.md for the reasoning and the checks):
- intensity: mean absolute luma difference between consecutive frames, cuts excluded
  (Hanjalic & Xu 2005 model arousal from motion activity, shot-cut rate and sound energy);
- cut rate: consecutive frames whose luma histograms barely overlap, per second;
- flash rate: WCAG 2.x "general flash" — opposing changes of ≥ 10 % relative luminance where
  the darker state is below 0.8 — counted per cell of a 3×3 grid (a cell ≈ the guideline's
  341×256 px of a 1024×768 screen), per second. Three or more a second is the guideline limit.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.error
import av.filter
import numpy as np
from PIL import Image

from moodgate.media import segments
from moodgate.media.errors import MediaError
from moodgate.media.sniff import MediaKind

FrameMap = Callable[[Image.Image], Image.Image]

_DEMUXER = {MediaKind.MP4: "mp4", MediaKind.WEBM: "matroska", MediaKind.MPEGTS: "mpegts"}
_ENCODER = {"h264": "libx264", "vp9": "libvpx-vp9", "vp8": "libvpx", "hevc": "libx265",
            "mpeg4": "mpeg4", "av1": "libaom-av1"}  # fmt: skip
PLACEHOLDER_RGB = (214, 222, 230)  # the image placeholder's soft blue-grey


class Deadline:
    """A cooperative time budget: long loops check it so a timed-out job stops using the CPU."""

    def __init__(self, seconds: float | None = None) -> None:
        self.at = None if seconds is None else time.monotonic() + seconds

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise TimeoutError("video budget spent")


@dataclass(frozen=True)
class VideoLimits:
    max_pixels: int = 4096 * 2304  # per frame; beyond 4K is not decoded on a router
    max_seconds: float = 4 * 3600.0
    max_packets: int = 400_000


@dataclass(frozen=True)
class Sampling:
    fps: float = 0.5  # at most this many scored frames per second of video …
    max_frames: int = 32  # … and never more than this per clip
    burst: int = 8  # consecutive frames decoded after each keyframe, for the motion cues
    size: int = 224  # scored frames are reduced until their shorter side is about this


@dataclass(frozen=True)
class VideoInfo:
    kind: MediaKind
    codec: str
    width: int
    height: int
    duration: float  # seconds, from the first to the end of the last video frame
    fps: float
    frames: int  # video packets
    keyframes: int
    has_audio: bool
    start: float  # presentation time of the first frame, seconds


@dataclass(frozen=True)
class Motion:
    intensity: float  # mean |ΔY| / 255 between consecutive frames, cuts excluded
    cut_rate: float  # cuts per second
    flash_rate: float  # WCAG general flashes per second (worst grid cell)
    seconds: float  # time covered by consecutive decoded frames

    @property
    def arousal_term(self) -> float:
        """0…1: how far motion pushes a clip's arousal toward +1 (docs/video.md)."""
        term = (
            0.45 * math.tanh(self.intensity / 0.06)
            + 0.25 * min(1.0, self.cut_rate / 1.0)
            + 0.70 * min(1.0, self.flash_rate / 3.0)
        )
        return float(min(1.0, term))


STILL = Motion(0.0, 0.0, 0.0, 0.0)


@dataclass
class SampledClip:
    info: VideoInfo
    frames: list[np.ndarray]  # RGB uint8, reduced for scoring
    times: list[float]  # seconds from the clip start
    motion: Motion
    decoded: int  # frames decoded in all, for the benchmark


@dataclass
class _Demuxed:
    info: VideoInfo
    packets: list[av.Packet]
    time_base: Fraction
    start_pts: int


def _open(data: bytes, kind: MediaKind) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(data), format=_DEMUXER.get(kind), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise MediaError("corrupt", f"cannot open {kind.value}: {exc}") from exc


def check_complete(data: bytes, kind: MediaKind) -> None:
    """Refuse a visibly truncated body: a half segment must not be judged as if whole."""
    if kind is MediaKind.MPEGTS and len(data) % 188:
        raise MediaError("truncated", f"{len(data)} bytes is not a whole number of TS packets")
    if kind is MediaKind.MP4:
        covered = sum(box.size for box in segments.boxes(data))
        if covered != len(data):
            raise MediaError("truncated", f"boxes cover {covered} of {len(data)} bytes")


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise MediaError("no-video", "the container has no video stream")
    return container.streams.video[0]


def _demux(data: bytes, kind: MediaKind, limits: VideoLimits, deadline: Deadline) -> _Demuxed:
    container = _open(data, kind)
    stream = _video_stream(container)
    codec = stream.codec_context
    if codec is None:  # a stream whose codec FFmpeg could not even identify
        raise MediaError("corrupt", "the video stream has no decodable codec")
    width, height = codec.width, codec.height
    if width * height > limits.max_pixels:
        raise MediaError("too-large", f"{width}×{height} px exceeds {limits.max_pixels:,} px")
    packets: list[av.Packet] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            packets.append(packet)
            if len(packets) > limits.max_packets:
                raise MediaError("too-large", f"more than {limits.max_packets} video frames")
            if len(packets) % 256 == 0:
                deadline.check()
    except av.error.FFmpegError as exc:
        raise MediaError("corrupt", f"cannot demux {kind.value}: {exc}") from exc
    if not packets:
        raise MediaError("corrupt", "no video frames")
    time_base = stream.time_base or Fraction(1, 90000)
    rate = stream.guessed_rate or stream.average_rate or Fraction(25)
    pts = sorted(p.pts for p in packets)
    step = (pts[-1] - pts[0]) / max(1, len(pts) - 1) if len(pts) > 1 else 1 / (rate * time_base)
    duration = float((pts[-1] - pts[0] + step) * time_base)
    if duration > limits.max_seconds:
        raise MediaError("too-large", f"{duration:.0f} s of video exceeds the limit")
    info = VideoInfo(
        kind=kind, codec=stream.codec_context.name, width=width, height=height,
        duration=duration, fps=float(rate), frames=len(packets),
        keyframes=sum(1 for p in packets if p.is_keyframe),
        has_audio=bool(container.streams.audio), start=float(pts[0] * time_base),
    )  # fmt: skip
    return _Demuxed(info, packets, time_base, pts[0])


def probe(data: bytes, kind: MediaKind, limits: VideoLimits | None = None) -> VideoInfo:
    return _demux(data, kind, limits or VideoLimits(), Deadline()).info


def _gops(packets: Sequence[av.Packet]) -> list[list[av.Packet]]:
    """Decode-order packets split at keyframes; packets before the first keyframe are dropped
    (they reference frames this body does not contain)."""
    groups: list[list[av.Packet]] = []
    for packet in packets:
        if packet.is_keyframe:
            groups.append([packet])
        elif groups:
            groups[-1].append(packet)
    return groups


@dataclass
class _Decoded:
    """What is kept of a decoded frame: never the frame itself (a GOP of 4K frames would not
    fit a router's memory), only its luma grid and, if it was sampled, a scoring thumbnail."""

    t: float
    key: bool
    luma: np.ndarray  # small float32 grid
    rgb: np.ndarray | None = None


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane subsampled to about 48 px on the short side: enough for motion, no sws."""
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height]
    y = rows[:, : frame.width]
    step = max(1, min(frame.width, frame.height) // 48)
    return y[::step, ::step].astype(np.float32)


def _scoring_rgb(frame: av.VideoFrame, size: int) -> np.ndarray:
    short = min(frame.width, frame.height)
    scale = min(1.0, size / short) if short > size else 1.0
    width = max(2, round(frame.width * scale))
    height = max(2, round(frame.height * scale))
    return frame.to_ndarray(width=width, height=height, format="rgb24")


def sample(
    data: bytes,
    kind: MediaKind,
    sampling: Sampling | None = None,
    limits: VideoLimits | None = None,
    init: bytes | None = None,
    deadline: Deadline | None = None,
) -> SampledClip:
    """Frames for scoring and the motion cues of one clip (a file, or init + one segment)."""
    sampling = sampling or Sampling()
    limits = limits or VideoLimits()
    deadline = deadline or Deadline()
    body = init + data if init else data
    check_complete(data, kind)
    demuxed = _demux(body, kind, limits, deadline)
    info = demuxed.info
    interval = max(1.0 / max(sampling.fps, 1e-6), info.duration / max(1, sampling.max_frames))
    container = _open(body, kind)
    stream = _video_stream(container)
    context = stream.codec_context
    context.thread_type = "AUTO"
    # Scoring works on thumbnails; deblocking is invisible there and costs a fifth of decoding.
    context.options = {"skip_loop_filter": "all"}
    decoded: list[list[_Decoded]] = []
    picks: list[_Decoded] = []
    groups = _gops(demuxed.packets)
    if not groups:
        raise MediaError("corrupt", "no keyframe in the video")
    count = min(sampling.max_frames, max(1, math.ceil(info.duration / interval - 1e-9)))
    instants = [i * interval for i in range(count)]
    ends = [g[0].pts for g in groups[1:]] + [None]
    tb = demuxed.time_base
    origin = demuxed.start_pts
    frame_time = 1.0 / info.fps if info.fps > 0 else 0.04
    try:
        for group, end in zip(groups, ends, strict=True):
            deadline.check()
            begin = float((group[0].pts - origin) * tb)
            stop = float((end - origin) * tb) if end is not None else math.inf
            inside = [t for t in instants if begin - 1e-9 <= t < stop - 1e-9]
            if not inside and not (begin < 1e-9 or (decoded and _covers(decoded[-1], begin))):
                continue  # keyframes denser than the sampling rate: this GOP is not needed
            gop = _GopDecoder(context, origin, tb, sampling.size, frame_time)
            run = gop.decode(group, sampling.burst, inside)
            if run:
                decoded.append(run)
                picks += [d for d in run if d.rgb is not None]
    except av.error.FFmpegError as exc:
        raise MediaError("corrupt", f"cannot decode {info.codec}: {exc}") from exc
    if not decoded:
        raise MediaError("corrupt", "no decodable video frame")
    frames = [d.rgb for d in picks if d.rgb is not None]
    motion = measure_motion(decoded, frame_time, info)
    return SampledClip(info, frames, [d.t for d in picks], motion, sum(len(r) for r in decoded))


def _covers(run: list[_Decoded], t: float) -> bool:
    return bool(run) and run[-1].t >= t


class _GopDecoder:
    """Decodes one GOP from its keyframe, keeping luma grids for motion and thumbnails of the
    sampled frames. Keyframes first: the GOP's first sampling instant takes the keyframe, so a
    GOP with one instant needs no more than the motion burst; later instants take the first
    frame that reaches them (decoders hand frames out in presentation order)."""

    def __init__(
        self, context: av.VideoCodecContext, origin: int, tb: Fraction, size: int,
        frame_time: float,
    ) -> None:  # fmt: skip
        self.context = context
        self.origin = origin
        self.tb = tb
        self.size = size
        self.half = 0.5 * frame_time

    def decode(self, group: list[av.Packet], burst: int, instants: list[float]) -> list[_Decoded]:
        run: list[_Decoded] = []
        pending = list(instants[1:])  # the first one is the keyframe's
        for packet in group:
            for frame in self.context.decode(packet):
                run.append(self._keep(frame, pending, first=not run and bool(instants)))
            if len(run) >= burst and not pending:
                break
        for frame in self.context.decode(None):
            run.append(self._keep(frame, pending, first=not run and bool(instants)))
        self.context.flush_buffers()  # the next GOP starts afresh at its keyframe
        run.sort(key=lambda d: d.t)
        return run

    def _keep(self, frame: av.VideoFrame, pending: list[float], first: bool) -> _Decoded:
        pts = frame.pts if frame.pts is not None else self.origin
        item = _Decoded(float((pts - self.origin) * self.tb), bool(frame.key_frame), _luma(frame))
        if first or (pending and item.t >= pending[0] - self.half):
            item.rgb = _scoring_rgb(frame, self.size)
            while pending and pending[0] <= item.t + self.half:
                pending.pop(0)
        return item


def _relative_luminance(y: np.ndarray) -> np.ndarray:
    """Video-range luma → approximate linear relative luminance (sRGB-like transfer)."""
    v = np.clip((y - 16.0) / 219.0, 0.0, 1.0)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _cells(luma: np.ndarray, grid: int = 3) -> np.ndarray:
    lum = _relative_luminance(luma)
    h, w = lum.shape
    return np.array([
        lum[i * h // grid : (i + 1) * h // grid, j * w // grid : (j + 1) * w // grid].mean()
        for i in range(grid) for j in range(grid)
    ])  # fmt: skip


def _histogram(luma: np.ndarray) -> np.ndarray:
    hist = np.histogram(luma, bins=16, range=(0.0, 256.0))[0].astype(np.float64)
    return hist / max(1.0, hist.sum())


CUT_DISTANCE = 0.5  # half the L1 distance of 16-bin luma histograms: half the pixels moved bins
FLASH_STEP = 0.1  # WCAG: a change of at least 10 % of the maximum relative luminance …
FLASH_DARK = 0.8  # … where the darker state is below 0.80


def measure_motion(
    runs: Sequence[Sequence[_Decoded]], frame_time: float, info: VideoInfo
) -> Motion:
    """Motion cues over runs of consecutive decoded frames (pairs further apart are skipped)."""
    diffs: list[float] = []
    cuts = 0
    seconds = 0.0
    flashes_per_cell = np.zeros(9)
    for run in runs:
        trend = np.zeros(9)  # accumulated change since the last counted transition, per cell
        last_sign = np.zeros(9)
        transitions = np.zeros(9)
        reference = _cells(run[0].luma) if run else np.zeros(9)
        for before, after in itertools.pairwise(run):
            gap = after.t - before.t
            if gap <= 0 or gap > 1.5 * frame_time + 1e-6:
                trend[:] = 0.0
                reference = _cells(after.luma)
                continue
            seconds += gap
            change = float(np.abs(after.luma - before.luma).mean() / 255.0)
            if 0.5 * np.abs(_histogram(after.luma) - _histogram(before.luma)).sum() > CUT_DISTANCE:
                cuts += 1
            else:
                diffs.append(change)
            cells = _cells(after.luma)
            trend = cells - reference
            darker = np.minimum(cells, reference)
            big = (np.abs(trend) >= FLASH_STEP) & (darker < FLASH_DARK)
            sign = np.sign(trend)
            flip = big & (sign != last_sign)
            transitions += flip
            last_sign = np.where(flip, sign, last_sign)
            reference = np.where(big, cells, reference)
        flashes_per_cell += transitions // 2
    # Encoders put keyframes at scene cuts; ones that break the regular cadence are cuts too.
    irregular = _irregular_keyframes([r[0].t for r in runs if r and r[0].key])
    cut_rate = (cuts / seconds if seconds > 0 else 0.0) + irregular / max(info.duration, 1e-3)
    return Motion(
        intensity=float(np.mean(diffs)) if diffs else 0.0,
        cut_rate=float(cut_rate),
        flash_rate=float(flashes_per_cell.max() / seconds) if seconds > 0 else 0.0,
        seconds=float(seconds),
    )


def _irregular_keyframes(times: Sequence[float]) -> int:
    if len(times) < 3:
        return 0
    gaps = np.diff(np.asarray(times))
    regular = float(np.median(gaps))
    return int(np.sum(gaps < 0.6 * regular))


# ---------------------------------------------------------------------------- re-encoding


@dataclass
class EncodeOptions:
    preset: str = "veryfast"  # libx264; libvpx uses realtime speed 8
    crf: int = 23
    threads: int = 0  # 0: the encoder decides


@dataclass
class _Target:
    """One output video stream's encoder, set up to match the input stream."""

    stream: av.video.stream.VideoStream | None
    context: av.VideoCodecContext
    pix_fmt: str


def _encoder_name(codec: str) -> str:
    name = _ENCODER.get(codec)
    if name is None or name not in av.codecs_available:
        raise MediaError("unsupported", f"no encoder for {codec} video")
    return name


def _bitrate(data_bytes: int, seconds: float) -> int:
    return int(data_bytes * 8 / max(seconds, 0.1))


def _configure(
    context: av.VideoCodecContext,
    source: av.video.stream.VideoStream,
    bitrate: int,
    options: EncodeOptions,
    annexb: bool,
) -> str:
    src = source.codec_context
    context.width, context.height = src.width, src.height
    pix_fmt = "yuv420p"
    context.pix_fmt = pix_fmt
    context.time_base = source.time_base
    rate = source.guessed_rate or source.average_rate
    if rate:
        context.framerate = rate
    if source.sample_aspect_ratio:
        context.sample_aspect_ratio = source.sample_aspect_ratio
    # Not color_range: frames are always converted to limited-range yuv420p before encoding.
    for attribute in ("colorspace", "color_primaries", "color_trc"):
        with contextlib.suppress(AttributeError, ValueError, TypeError):
            setattr(context, attribute, getattr(src, attribute))
    context.thread_type = "AUTO"
    context.thread_count = options.threads
    # Players switch renditions by bandwidth: the calmed copy must not outgrow the original.
    cap = str(max(64_000, int(bitrate * 1.2)))
    if context.name == "libx264":
        # No B-frames: packets leave the encoder in presentation order, so timestamps map
        # one to one. Keyframes only where the original had them (segment boundaries stay
        # aligned across renditions). repeat-headers puts SPS/PPS in every keyframe, so a
        # rewritten fMP4 segment carries its own parameter sets.
        context.max_b_frames = 0
        params = "bframes=0:scenecut=0:keyint=infinite" + (":repeat-headers=1" if annexb else "")
        context.options = {
            "preset": options.preset, "crf": str(options.crf), "forced-idr": "1",
            "maxrate": cap, "bufsize": str(2 * int(cap)), "x264-params": params,
        }  # fmt: skip
    elif context.name.startswith("libvpx"):
        context.bit_rate = int(cap)
        context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                           "row-mt": "1", "crf": "32"}
    else:
        context.bit_rate = int(cap)
    return pix_fmt


@dataclass(frozen=True)
class ColourMapping:
    """A per-pixel colour mapping that FFmpeg's filters apply: a share of a Gaussian blur
    mixed in, then a 3D LUT. The same two steps as calm.CalmTransform.apply_with, without a
    round trip through Pillow for every frame (three to four times faster at 480p)."""

    size: int
    table: tuple[float, ...]  # size³ RGB triples in 0…1, red varying fastest (as .cube files)
    blur_sigma: float = 0.0  # pixels of the full-size frame
    blur_amount: float = 0.0  # share of the blurred frame, 0…1
    # FFmpeg's photosensitivity filter after the colour: flashes (WCAG's general flash) are
    # blended out over the frames around them, one frame in, one frame out.
    reduce_flashes: bool = False

    def cube(self) -> str:
        values = np.asarray(self.table, dtype=np.float64).reshape(-1, 3)
        lines = "".join(f"{r:.6f} {g:.6f} {b:.6f}\n" for r, g, b in values)
        return f"LUT_3D_SIZE {self.size}\n{lines}"


Transform = FrameMap | ColourMapping


class _Painter:
    """Turns each decoded frame (or None: a placeholder) into the frame to encode."""

    def __init__(self, transform: Transform, info: VideoInfo, pix_fmt: str, scratch: str) -> None:
        if info.width <= 0 or info.height <= 0:
            # A stream cut before its parameter sets: nothing to paint a picture of that size.
            raise MediaError("corrupt", f"the stream declares no picture size ({info.codec})")
        self.transform = transform
        self.info = info
        self.pix_fmt = pix_fmt
        self.scratch = scratch
        self._graph: av.filter.Graph | None = None
        self._graph_key: tuple[int, int, str] | None = None
        self._blank: av.VideoFrame | None = None

    def paint(self, frame: av.VideoFrame | None) -> av.VideoFrame:
        if frame is None:
            if self._blank is None:
                picture = Image.new("RGB", (self.info.width, self.info.height), PLACEHOLDER_RGB)
                if not isinstance(self.transform, ColourMapping):
                    picture = self.transform(picture)
                self._blank = av.VideoFrame.from_image(picture).reformat(format=self.pix_fmt)
            return self._blank
        if isinstance(self.transform, ColourMapping):
            graph = self._graph_for(frame)
            graph.push(frame)
            return graph.pull()
        painted = self.transform(frame.to_image())
        return av.VideoFrame.from_image(painted).reformat(format=self.pix_fmt)

    def _graph_for(self, frame: av.VideoFrame) -> av.filter.Graph:
        key = (frame.width, frame.height, frame.format.name)
        if self._graph is not None and key == self._graph_key:
            return self._graph
        mapping = self.transform
        assert isinstance(mapping, ColourMapping)
        cube = os.path.join(self.scratch, "calm.cube")
        if not os.path.exists(cube):
            with open(cube, "w", encoding="ascii") as out:
                out.write(mapping.cube())
        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height,
                                  format=frame.format.name, time_base=frame.time_base)
        chain: list[av.filter.context.FilterContext] = []
        if mapping.blur_amount > 0.0 and mapping.blur_sigma > 0.0:
            split = graph.add("split")
            blur = graph.add("gblur", f"sigma={mapping.blur_sigma:.3f}")
            # blend's normal mode with opacity o gives top·o + bottom·(1 − o).
            mix = graph.add("blend", f"all_mode=normal:all_opacity={1 - mapping.blur_amount:.4f}")
            source.link_to(split)
            split.link_to(mix, 0, 0)
            split.link_to(blur, 1, 0)
            blur.link_to(mix, 0, 1)
            chain.append(mix)
        else:
            chain.append(source)
        # rgb24, not gbrp: this FFmpeg's planar lut3d path drops the last columns of a frame.
        steps: list[tuple[str, str | None]] = [
            ("format", "rgb24"), ("lut3d", f"file={cube}:interp=trilinear")]  # fmt: skip
        if mapping.reduce_flashes:
            steps.append(("photosensitivity", None))
        steps += [("format", self.pix_fmt), ("buffersink", None)]
        for name, args in steps:
            node = graph.add(name, args) if args else graph.add(name)
            chain[-1].link_to(node)
            chain.append(node)
        graph.configure()
        self._graph, self._graph_key = graph, key
        return graph


def _encode_frame(
    target: _Target, frame: av.VideoFrame, pts: int, key: bool, tb: Fraction
) -> list[av.Packet]:
    frame.pts = pts
    frame.time_base = tb
    frame.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
    return list(target.context.encode(frame))


def recode(
    data: bytes,
    kind: MediaKind,
    transform: Transform,
    init: bytes | None = None,
    limits: VideoLimits | None = None,
    options: EncodeOptions | None = None,
    deadline: Deadline | None = None,
    decode_frames: bool = True,
) -> bytes:
    """`data` re-encoded with `transform` applied to every video frame: same container, codec
    family, size, frame timestamps and keyframe positions; audio packets copied untouched.

    `transform` is a Pillow function per frame, or a ColourMapping that FFmpeg applies.
    With `init`, `data` is one fMP4 media segment and the result is a media segment that
    fits that init segment. With decode_frames=False the source is never decoded: `transform`
    gets a blank frame (placeholders), so even undecodable segments can be replaced.
    """
    limits = limits or VideoLimits()
    options = options or EncodeOptions()
    deadline = deadline or Deadline()
    if decode_frames:  # a placeholder only needs the timestamps that can still be read
        check_complete(data, kind)
    with tempfile.TemporaryDirectory(prefix="moodgate-") as scratch:
        try:
            if init is not None:
                return _recode_fragment(data, init, transform, limits, options, deadline,
                                        decode_frames, scratch)
            return _recode_file(data, kind, transform, limits, options, deadline,
                                decode_frames, scratch)
        except av.error.FFmpegError as exc:  # the encoder or muxer refusing what it was fed
            raise MediaError("corrupt", f"cannot re-encode {kind.value}: {exc}") from exc


def _frames_of(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    demuxed: _Demuxed,
    decode_frames: bool,
    deadline: Deadline,
) -> Iterator[tuple[av.VideoFrame | None, int, bool]]:
    """(frame, pts, was-keyframe) in presentation order; frame is None when not decoding."""
    if not decode_frames:
        last = None
        for packet in sorted(demuxed.packets, key=lambda p: p.pts):
            if last is not None and packet.pts <= last:
                continue  # a corrupt stream repeats timestamps; the muxer refuses them
            last = packet.pts
            yield None, packet.pts, bool(packet.is_keyframe)
        return
    stream.codec_context.thread_type = "AUTO"
    count = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                count += 1
                if count % 16 == 0:
                    deadline.check()
                yield frame, frame.pts, bool(frame.key_frame)
    except av.error.FFmpegError as exc:
        raise MediaError("corrupt", f"cannot decode {demuxed.info.codec}: {exc}") from exc


def _recode_file(
    data: bytes,
    kind: MediaKind,
    transform: Transform,
    limits: VideoLimits,
    options: EncodeOptions,
    deadline: Deadline,
    decode_frames: bool,
    scratch: str,
) -> bytes:
    demuxed = _demux(data, kind, limits, deadline)
    info = demuxed.info
    encoder = _encoder_name(info.codec)
    source = _open(data, kind)
    video_in = _video_stream(source)
    muxer = {MediaKind.MP4: "mp4", MediaKind.WEBM: "webm", MediaKind.MPEGTS: "mpegts"}[kind]
    if kind is MediaKind.WEBM and info.codec not in ("vp8", "vp9", "av1"):
        muxer = "matroska"
    if kind is MediaKind.MP4 and data[8:12] == b"qt  ":
        muxer = "mov"
    path = os.path.join(scratch, f"out.{muxer}")
    container_options = {"movflags": "+faststart"} if muxer in ("mp4", "mov") else {}
    with av.open(path, "w", format=muxer, options=container_options) as out:
        video_out = out.add_stream(encoder, rate=video_in.guessed_rate or None)
        pix_fmt = _configure(video_out.codec_context, video_in,
                             _bitrate(len(data), info.duration), options, annexb=False)
        if muxer == "mpegts":
            video_out.id = video_in.id
        copies = {}
        for audio in source.streams.audio:
            copied = out.add_stream_from_template(audio)
            if muxer == "mpegts":
                copied.id = audio.id
            copies[audio.index] = copied
        target = _Target(video_out, video_out.codec_context, pix_fmt)
        painter = _Painter(transform, info, pix_fmt, scratch)
        for frame, pts, key in _frames_of(source, video_in, demuxed, decode_frames,
                                          deadline):
            for packet in _encode_frame(target, painter.paint(frame), pts, key,
                                        video_in.time_base):
                out.mux(packet)
        for packet in video_out.encode():
            out.mux(packet)
        # A placeholder silences the audio too: a blocked scene must not be heard either.
        _copy_audio(data, kind, copies, out, silent=not decode_frames)
    with open(path, "rb") as result:
        return result.read()


def _copy_audio(
    data: bytes,
    kind: MediaKind,
    copies: dict[int, av.stream.Stream],
    out: av.container.OutputContainer,
    silent: bool = False,
) -> None:
    """Audio packets copied as they are, or (silent) with each payload replaced by a frame of
    encoded silence — same count, timestamps and durations, so the stream stays continuous."""
    if not copies:
        return
    with _open(data, kind) as again:
        wanted = [s for s in again.streams if s.index in copies]
        quiet = {s.index: _Silence.for_stream(s) if silent else None for s in wanted}
        try:
            for packet in again.demux(wanted):
                if packet.dts is None or packet.size == 0:
                    continue
                index = packet.stream.index
                silence = quiet[index]
                if silence is not None:
                    packet = silence.replace(packet)
                packet.stream = copies[index]
                out.mux(packet)
        except av.error.FFmpegError as exc:
            raise MediaError("corrupt", f"cannot copy audio: {exc}") from exc


class _Silence:
    """A steady-state AAC-LC frame of digital silence with the stream's rate and channels.
    Silence has no transients, so one frame serves for every packet; ADTS-framed streams (TS)
    get the original packet's header with the new length."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    @classmethod
    def for_stream(cls, stream: av.audio.stream.AudioStream) -> _Silence | None:
        context = stream.codec_context
        if context.name != "aac" or (context.profile or "LC") != "LC" or not context.sample_rate:
            return None  # other codecs (and HE-AAC) keep their audio
        try:
            encoder = av.CodecContext.create("aac", "w")
            encoder.sample_rate = context.sample_rate
            encoder.layout = context.layout
            encoder.format = "fltp"
            packets: list[av.Packet] = []
            for index in range(4):
                zeros = np.zeros((context.layout.nb_channels, 1024), dtype=np.float32)
                frame = av.AudioFrame.from_ndarray(zeros, format="fltp",
                                                   layout=context.layout.name)
                frame.sample_rate = context.sample_rate
                frame.pts = index * 1024
                packets += encoder.encode(frame)
            packets += encoder.encode(None)
        except (av.error.FFmpegError, ValueError):
            return None
        return cls(bytes(packets[2])) if len(packets) > 2 else None

    def replace(self, packet: av.Packet) -> av.Packet:
        original = bytes(packet)
        payload = self.payload
        if original[:2] in (b"\xff\xf1", b"\xff\xf9"):  # ADTS without CRC: keep its header
            header = bytearray(original[:7])
            length = 7 + len(payload)
            header[3] = (header[3] & 0xFC) | ((length >> 11) & 0x03)
            header[4] = (length >> 3) & 0xFF
            header[5] = (header[5] & 0x1F) | ((length & 0x07) << 5)
            payload = bytes(header) + payload
        quiet = av.Packet(payload)
        quiet.pts, quiet.dts, quiet.duration = packet.pts, packet.dts, packet.duration
        quiet.time_base = packet.time_base
        return quiet


def _recode_fragment(
    segment: bytes,
    init: bytes,
    transform: Transform,
    limits: VideoLimits,
    options: EncodeOptions,
    deadline: Deadline,
    decode_frames: bool,
    scratch: str,
) -> bytes:
    body = init + segment
    demuxed = _demux(body, MediaKind.MP4, limits, deadline)
    info = demuxed.info
    if info.codec != "h264":
        raise MediaError("unsupported", f"rewriting {info.codec} fMP4 segments is not supported")
    ids = segments.track_ids(init)
    decode_times = segments.base_decode_times(segment)
    length_size = segments.nal_length_size(init)
    source = _open(body, MediaKind.MP4)
    video_in = _video_stream(source)
    tb = video_in.time_base
    video_id = ids[video_in.index] if video_in.index < len(ids) else 1
    # FFmpeg shifts timestamps by the init's edit list; undo that so tfdt/cts match the init.
    first_dts = min((p.dts for p in demuxed.packets if p.dts is not None), default=0)
    shift = decode_times.get(video_id, first_dts) - first_dts
    context = av.CodecContext.create(_encoder_name(info.codec), "w")
    pix_fmt = _configure(context, video_in, _bitrate(len(segment), info.duration), options,
                         annexb=True)
    target = _Target(None, context, pix_fmt)
    painter = _Painter(transform, info, pix_fmt, scratch)
    encoded: list[av.Packet] = []
    for frame, pts, key in _frames_of(source, video_in, demuxed, decode_frames, deadline):
        encoded += _encode_frame(target, painter.paint(frame), pts, key, tb)
    encoded += list(context.encode(None))
    if not encoded:
        raise MediaError("corrupt", "no frames to encode")
    dts_list = [p.dts if p.dts is not None else p.pts for p in encoded]
    last_duration = _frame_duration(demuxed)
    base = decode_times.get(video_id, dts_list[0] + shift)
    # Decode times restart at the original tfdt; composition offsets put every frame back at
    # its original presentation time (signed offsets: trun version 1).
    video_run = segments.TrackRun(video_id, base)
    for index, packet in enumerate(encoded):
        decode_time = base + dts_list[index] - dts_list[0]
        following = dts_list[index + 1] if index + 1 < len(encoded) else None
        duration = following - dts_list[index] if following is not None else last_duration
        video_run.samples.append(segments.Sample(
            segments.annexb_to_length_prefixed(bytes(packet), length_size), duration,
            bool(packet.is_keyframe), packet.pts + shift - decode_time,
        ))  # fmt: skip
    runs = [video_run, *_audio_runs(body, ids, decode_times, silent=not decode_frames)]
    order = {track: i for i, track in enumerate(ids)}
    runs.sort(key=lambda r: order.get(r.track_id, 0))
    return segments.write_fragment(segments.sequence_number(segment), runs,
                                   segments.leading_styp(segment))


def _frame_duration(demuxed: _Demuxed) -> int:
    pts = sorted(p.pts for p in demuxed.packets)
    if len(pts) > 1:
        return max(1, round((pts[-1] - pts[0]) / (len(pts) - 1)))
    return max(1, int(demuxed.packets[0].duration or 1))


def _audio_runs(
    body: bytes, ids: list[int], decode_times: dict[int, int], silent: bool = False
) -> list[segments.TrackRun]:
    runs: list[segments.TrackRun] = []
    with _open(body, MediaKind.MP4) as container:
        for stream in container.streams.audio:
            track = ids[stream.index] if stream.index < len(ids) else stream.index + 1
            packets = [p for p in container.demux(stream) if p.size and p.dts is not None]
            silence = _Silence.for_stream(stream) if silent else None
            if silence is not None:
                packets = [silence.replace(p) for p in packets]
            if not packets:
                continue
            shift = decode_times.get(track, packets[0].dts) - packets[0].dts
            run = segments.TrackRun(track, packets[0].dts + shift)
            for packet in packets:
                run.samples.append(segments.Sample(
                    bytes(packet), int(packet.duration or 1024), True,
                    int((packet.pts or packet.dts) - packet.dts),
                ))  # fmt: skip
            runs.append(run)
    return runs


# --------------------------------------------------------------------------- placeholders


def placeholder_clip(
    info: VideoInfo, seconds: float = 2.0, fps: int = 5, limits: VideoLimits | None = None
) -> bytes:
    """A short calm still clip in the original's container and codec family, for a blocked
    progressive file: the player shows a quiet frame instead of an error."""
    limits = limits or VideoLimits()
    width, height = info.width - info.width % 2, info.height - info.height % 2
    if width * height > limits.max_pixels or width <= 0 or height <= 0:
        width, height = 640, 360
    encoder = _encoder_name(info.codec)
    muxer = {MediaKind.MP4: "mp4", MediaKind.WEBM: "webm", MediaKind.MPEGTS: "mpegts"}[info.kind]
    if muxer == "webm" and encoder not in ("libvpx", "libvpx-vp9", "libaom-av1"):
        muxer = "matroska"
    still = Image.new("RGB", (width, height), PLACEHOLDER_RGB)
    with tempfile.TemporaryDirectory(prefix="moodgate-") as scratch:
        path = os.path.join(scratch, f"placeholder.{muxer}")
        options = {"movflags": "+faststart"} if muxer == "mp4" else {}
        with av.open(path, "w", format=muxer, options=options) as out:
            stream = out.add_stream(encoder, rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if encoder == "libx264":
                stream.codec_context.options = {"preset": "veryfast", "crf": "30"}
            elif encoder.startswith("libvpx"):
                stream.codec_context.options = {"deadline": "realtime", "cpu-used": "8"}
            for index in range(max(1, round(seconds * fps))):
                frame = av.VideoFrame.from_image(still).reformat(format="yuv420p")
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        with open(path, "rb") as result:
            return result.read()


def placeholder_segment(
    data: bytes, kind: MediaKind, init: bytes | None = None, limits: VideoLimits | None = None,
    deadline: Deadline | None = None,
) -> bytes:
    """A calm still segment with the original's frame timestamps, keyframes, size and codec,
    so a player keeps playing the stream through it. Works without decoding the original."""
    return recode(data, kind, lambda frame: frame, init=init, limits=limits,
                  deadline=deadline, decode_frames=False)


@dataclass
class Timeline:
    """Presentation timestamps of a clip's video frames, for tests and checks."""

    pts: list[float] = field(default_factory=list)
    keyframes: list[float] = field(default_factory=list)
    width: int = 0
    height: int = 0


def timeline(data: bytes, kind: MediaKind, init: bytes | None = None) -> Timeline:
    """Every video frame's presentation time in seconds, as a demuxer reports them."""
    demuxed = _demux(init + data if init else data, kind, VideoLimits(), Deadline())
    tb = demuxed.time_base
    ordered = sorted(demuxed.packets, key=lambda p: p.pts)
    return Timeline(
        [float(p.pts * tb) for p in ordered],
        [float(p.pts * tb) for p in ordered if p.is_keyframe],
        demuxed.info.width, demuxed.info.height,
    )  # fmt: skip
