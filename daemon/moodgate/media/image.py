"""Safe image decoding for scoring, full decoding for calming, and format-preserving encoding.

Scoring never needs full resolution: JPEGs are decoded in draft mode (DCT scaling), other
formats are reduced right after decoding. Every entry point checks the declared pixel count
first, so a decompression bomb is refused before a single pixel is allocated.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin

from moodgate.media.errors import MediaError
from moodgate.media.sniff import MediaKind, sniff

# Pillow's own bomb check is a warning up to 2× its limit; we enforce our own limits instead.
Image.MAX_IMAGE_PIXELS = None

_PIL_FORMAT = {
    MediaKind.JPEG: "JPEG",
    MediaKind.PNG: "PNG",
    MediaKind.GIF: "GIF",
    MediaKind.WEBP: "WEBP",
    MediaKind.AVIF: "AVIF",
}


@dataclass(frozen=True)
class ImageLimits:
    """Bounds that keep one hostile image from exhausting a router's memory."""

    max_pixels: int = 50_000_000  # per frame (≈ 8K×6K)
    max_frames: int = 500
    max_total_pixels: int = 400_000_000  # all frames of an animation together
    # Calming decodes every frame whole and works on full-size copies: measured 15 bytes a
    # pixel at its peak for RGB, 20 for RGBA (docs/reliability.md). 16 MP then stays near
    # 320 MB, what fits beside the proxy (≈ 200 MB) under the unit's MemoryMax=512M.
    max_calm_pixels: int = 16_000_000


@dataclass(frozen=True)
class ImageInfo:
    kind: MediaKind
    width: int
    height: int
    frames: int
    has_alpha: bool


@dataclass
class DecodedImage:
    """Every frame at full size, plus what is needed to re-encode it the way it came."""

    info: ImageInfo
    frames: list[Image.Image]  # RGB or RGBA, full canvas each
    durations: list[int] = field(default_factory=list)  # ms per frame (animations)
    loop: int | None = None
    exif: bytes | None = None
    icc_profile: bytes | None = None
    jpeg_quality: int | None = None
    jpeg_subsampling: int | None = None
    webp_lossless: bool = False


def _open(data: bytes) -> Image.Image:
    kind = sniff(data[:64])
    if kind is None or not kind.is_image:
        raise MediaError("not-an-image", "body is not a JPEG, PNG, GIF, WebP or AVIF image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[kind]])
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise MediaError("corrupt", f"cannot read {kind.value} header: {exc}") from exc
    return image


def _frame_count(image: Image.Image, limits: ImageLimits) -> int:
    try:
        frames = int(getattr(image, "n_frames", 1))
    except Exception as exc:
        raise MediaError("corrupt", f"cannot count frames: {exc}") from exc
    if frames > limits.max_frames:
        raise MediaError("too-large", f"{frames} frames exceed the limit of {limits.max_frames}")
    return frames


def _check_pixels(width: int, height: int, frames: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise MediaError("corrupt", f"invalid size {width}×{height}")
    if width * height > limits.max_pixels:
        raise MediaError(
            "too-large",
            f"{width}×{height} px exceeds the limit of {limits.max_pixels:,} px"
            " (decompression bomb?)",
        )
    if width * height * frames > limits.max_total_pixels:
        raise MediaError("too-large", f"{frames} frames of {width}×{height} px exceed the limit")


def _seek(image: Image.Image, index: int, limits: ImageLimits, decoded: int = 0) -> int:
    """Seek to a frame, refusing it before decoding if it is bigger than allowed; returns
    `decoded` (pixels of the frames decoded so far) plus this frame's.

    A GIF frame may declare a size far beyond the logical screen; Pillow grows the canvas
    to fit and keeps it for every later frame, so each frame is checked, not only the
    header, and so is the sum: 500 frames on a canvas one frame grew to 49 MP would be 25 GP.
    """
    if index:
        image.seek(index)
    _check_pixels(image.width, image.height, 1, limits)
    decoded += image.width * image.height
    if decoded > limits.max_total_pixels:
        raise MediaError(
            "too-large",
            f"frames up to {index + 1} add up to {decoded:,} px, over the limit of "
            f"{limits.max_total_pixels:,} px (a GIF frame grew the canvas to "
            f"{image.width}×{image.height}?)",
        )
    return decoded


@contextlib.contextmanager
def _decoding(kind: MediaKind) -> Iterator[None]:
    """Whatever Pillow raises while decoding becomes a MediaError."""
    try:
        yield
    except MediaError:
        raise
    except MemoryError as exc:  # under an address-space cap (make fuzz): a finding, not junk
        raise MediaError("out-of-memory", f"decoding {kind.value} ran out of memory") from exc
    except Exception as exc:
        raise MediaError("corrupt", f"cannot decode {kind.value}: {exc}") from exc


def _info(image: Image.Image, kind: MediaKind, frames: int) -> ImageInfo:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    return ImageInfo(kind, image.width, image.height, frames, has_alpha)


def probe(data: bytes, limits: ImageLimits | None = None) -> ImageInfo:
    """Read only the header: kind, size, frame count. Raises MediaError for bad or huge input."""
    limits = limits or ImageLimits()
    image = _open(data)
    kind = MediaKind(image.format.lower()) if image.format else sniff(data[:64])
    assert kind is not None
    # Counting GIF frames walks the file; guard the first frame's size before that.
    _check_pixels(image.width, image.height, 1, limits)
    frames = _frame_count(image, limits)
    _check_pixels(image.width, image.height, frames, limits)
    return _info(image, kind, frames)


def _flatten(frame: Image.Image) -> Image.Image:
    """RGB for scoring: transparent areas shown over white, as a browser page usually does."""
    if frame.mode in ("RGBA", "LA", "PA", "P") and (
        frame.mode != "P" or "transparency" in frame.info
    ):
        rgba = frame.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return frame if frame.mode == "RGB" else frame.convert("RGB")


# Frames up to this size are flattened and resized as they are; larger ones are cut down
# first, since each full-size copy of a 49 MP RGBA frame is 190 MB and the unit has 512.
_SHRINK_ABOVE_PIXELS = 8_000_000


def _shrink(frame: Image.Image, size: int) -> Image.Image:
    """A very large decoded frame, subsampled to about four times `size` on its shorter
    side before anything copies it at full size (Pillow's own reduce and resize make a
    premultiplied full-size copy of RGBA first: a 49 MP PNG cost 750 MB to score). Every
    k-th pixel at 4× oversampling, then the usual filtered resize, is plenty for scoring."""
    step = min(frame.size) // (4 * size)
    if frame.width * frame.height <= _SHRINK_ABOVE_PIXELS or step < 2:
        return frame
    return frame.resize((frame.width // step, frame.height // step), Image.Resampling.NEAREST)


def sample_indices(frames: int, count: int) -> list[int]:
    """Evenly spaced frame indices, always including the first."""
    if frames <= count:
        return list(range(frames))
    if count <= 1:
        return [0]
    return sorted({round(i * (frames - 1) / (count - 1)) for i in range(count)})


def frames_for_scoring(
    data: bytes,
    size: int = 224,
    limits: ImageLimits | None = None,
    max_frames: int = 4,
    info: ImageInfo | None = None,
    square: bool = False,
) -> tuple[ImageInfo, list[np.ndarray]]:
    """Decode at reduced size: RGB uint8 frames whose shorter side is about `size` or more.

    JPEGs use draft mode, so the decoder itself skips most of the work. `square` resizes each
    frame straight to size×size, the model's input, so it is resampled once, not twice.
    `info` from an earlier `probe` of the same bytes saves parsing the header again.
    """
    limits = limits or ImageLimits()
    info = info or probe(data, limits)
    image = _open(data)
    arrays: list[np.ndarray] = []
    decoded = 0
    with _decoding(info.kind):
        if info.kind is MediaKind.JPEG:
            image.draft("RGB", (size, size))
        for index in sample_indices(info.frames, max_frames):
            decoded = _seek(image, index, limits, decoded)
            # No copy of the frame: each one becomes its array before the next seek.
            frame = image
            frame.load()
            if info.kind is MediaKind.JPEG:
                frame = ImageOps.exif_transpose(frame)
            frame = _flatten(_shrink(frame, size))
            if square:
                if frame.size != (size, size):
                    frame = frame.resize((size, size), Image.Resampling.BILINEAR)
            elif min(frame.size) > 2 * size:
                scale = size / min(frame.size)
                frame = frame.resize(
                    (max(1, round(frame.width * scale)), max(1, round(frame.height * scale))),
                    Image.Resampling.BILINEAR,
                    reducing_gap=2.0,
                )
            arrays.append(np.asarray(frame, dtype=np.uint8))
    return info, arrays


def estimate_jpeg_quality(image: Image.Image) -> int | None:
    """The IJG quality whose scaled Annex K table matches this file's luminance table."""
    tables = getattr(image, "quantization", None)
    if not tables or 0 not in tables:
        return None
    luma = np.asarray(tables[0], dtype=np.float64)
    if luma.size != 64:
        return None
    scale = float(np.mean(luma / _IJG_LUMA)) * 100.0
    quality = 5000.0 / scale if scale > 100.0 else (200.0 - scale) / 2.0
    return int(np.clip(round(quality), 1, 95))


# Annex K luminance table in natural (row-major) order, as Pillow reports quantization tables.
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61,
     12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77,
     24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101,
     72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


def decode_full(data: bytes, limits: ImageLimits | None = None) -> DecodedImage:
    """Every frame at full size (RGB, or RGBA where the image has transparency)."""
    limits = limits or ImageLimits()
    info = probe(data, limits)
    image = _open(data)
    decoded = DecodedImage(info=info, frames=[])
    with _decoding(info.kind):
        decoded.exif = image.info.get("exif")
        decoded.icc_profile = image.info.get("icc_profile")
        decoded.loop = image.info.get("loop")
        if info.kind is MediaKind.JPEG:
            decoded.jpeg_quality = estimate_jpeg_quality(image)
            subsampling = JpegImagePlugin.get_sampling(image)
            decoded.jpeg_subsampling = subsampling if subsampling >= 0 else None
        if info.kind is MediaKind.WEBP:
            decoded.webp_lossless = b"VP8L" in data[12:16]
        mode = "RGBA" if info.has_alpha else "RGB"
        pixels = 0
        for index in range(info.frames):
            pixels = _seek(image, index, limits, pixels)
            image.load()
            decoded.frames.append(image.convert(mode))
            decoded.durations.append(int(image.info.get("duration", 100) or 100))
    return decoded


def encode_like(decoded: DecodedImage, frames: Sequence[Image.Image] | None = None) -> bytes:
    """Encode frames in the original's format, size, timing and metadata."""
    frames = list(frames if frames is not None else decoded.frames)
    kind = decoded.info.kind
    # A GIF frame placed at x = 65535 grows the canvas past what a GIF header can say.
    widest = max(frames, key=lambda frame: max(frame.size))
    if max(widest.size) > _MAX_SIDE[kind]:
        width, height = widest.size
        raise MediaError(
            "too-large", f"{width}×{height} px cannot be written as {kind.value.upper()}"
        )
    out = io.BytesIO()
    extra: dict[str, object] = {}
    if decoded.exif:
        extra["exif"] = decoded.exif
    if decoded.icc_profile:
        extra["icc_profile"] = decoded.icc_profile
    first, rest = frames[0], frames[1:]
    if kind is MediaKind.JPEG:
        if decoded.jpeg_subsampling is not None:
            extra["subsampling"] = decoded.jpeg_subsampling
        first.convert("RGB").save(
            out, "JPEG", quality=decoded.jpeg_quality or 85, optimize=True, **extra
        )
    elif kind is MediaKind.PNG:
        first.save(out, "PNG", optimize=False, **extra)
    elif kind is MediaKind.WEBP:
        options: dict[str, object] = {"lossless": decoded.webp_lossless, "quality": 85, "method": 4}
        if rest:
            options.update(save_all=True, append_images=rest, duration=decoded.durations,
                           loop=decoded.loop or 0)
        first.save(out, "WEBP", **options, **extra)
    elif kind is MediaKind.AVIF:
        # AVIF keeps no trace of its encoder's quality; 70 is near the web's usual. Speed 9
        # encodes 3-5x faster than the default 6 at about the same size: calming waits on it.
        options = {"quality": 70, "speed": 9}
        if rest:
            options.update(save_all=True, append_images=rest, duration=decoded.durations,
                           loop=decoded.loop or 0)
        first.save(out, "AVIF", **options, **extra)
    elif kind is MediaKind.GIF:
        options = {
            "save_all": bool(rest),
            "append_images": rest,
            "duration": decoded.durations if rest else decoded.durations[0],
            "disposal": 2 if decoded.info.has_alpha else 1,
        }
        if decoded.loop is not None:
            options["loop"] = decoded.loop
        first.save(out, "GIF", **options)
    else:  # pragma: no cover - guarded by probe()
        raise MediaError("unsupported", f"cannot encode {kind.value}")
    return out.getvalue()


_PLACEHOLDER_RGB = (214, 222, 230)  # a soft blue-grey: neutral, low arousal
_PLACEHOLDER_LIMIT = 16_000_000
_MAX_SIDE = {MediaKind.JPEG: 65_500, MediaKind.PNG: 65_535, MediaKind.GIF: 65_535,
             MediaKind.WEBP: 16_383, MediaKind.AVIF: 16_384}  # fmt: skip


def placeholder(info: ImageInfo) -> bytes:
    """A calm flat image of the same format and pixel size, so page layout does not break."""
    width, height = info.width, info.height
    # A bomb's declared size is not worth honouring, and no format encodes every size:
    # keep the aspect ratio only.
    scale = min(
        1.0,
        (_PLACEHOLDER_LIMIT / (width * height)) ** 0.5,
        _MAX_SIDE[info.kind] / max(width, height),
    )
    if scale < 1.0:
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    mode = "RGBA" if info.has_alpha and info.kind is not MediaKind.JPEG else "RGB"
    colour = (*_PLACEHOLDER_RGB, 255) if mode == "RGBA" else _PLACEHOLDER_RGB
    frame = Image.new(mode, (width, height), colour)
    decoded = DecodedImage(
        info=ImageInfo(info.kind, width, height, 1, info.has_alpha),
        frames=[frame],
        durations=[100],
        jpeg_quality=75,
    )
    return encode_like(decoded)
