"""Sniffing, safe decoding, format-preserving encoding and placeholders on real encoded media."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import media_factory as mf
from moodgate.media import MediaError, MediaKind, claimed_kind, sniff
from moodgate.media.image import (
    ImageLimits,
    decode_full,
    encode_like,
    estimate_jpeg_quality,
    frames_for_scoring,
    placeholder,
    probe,
    sample_indices,
)


def test_sniff_by_magic_bytes(media) -> None:
    assert sniff(media["vivid.jpg"]) is MediaKind.JPEG
    assert sniff(media["alpha.png"]) is MediaKind.PNG
    assert sniff(media["anim.gif"]) is MediaKind.GIF
    assert sniff(media["vivid.webp"]) is MediaKind.WEBP
    assert sniff(b"<!doctype html>") is None
    assert sniff(b"") is None
    assert sniff(b"G" + b"x" * 300) is None  # one sync byte is not MPEG-TS
    assert sniff(b"\x00\x00\x00\x18ftypmp42") is MediaKind.MP4
    assert sniff(media["vivid.avif"]) is MediaKind.AVIF
    assert sniff(media["anim.avif"]) is MediaKind.AVIF  # ftyp avis: animated, still an image
    # AVIF declared only among the compatible brands, after a generic major brand.
    assert sniff(b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1miafavif") is MediaKind.AVIF
    # HEIC from a phone: ISO BMFF like MP4, but not video and not decodable here.
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") is None
    assert sniff(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41") is MediaKind.MP4
    packet = b"\x47" + b"\x00" * 187
    assert sniff(packet * 2) is MediaKind.MPEGTS


def test_claimed_kind() -> None:
    assert claimed_kind("image/jpeg; charset=binary") is MediaKind.JPEG
    assert claimed_kind("IMAGE/PNG") is MediaKind.PNG
    assert claimed_kind("image/svg+xml") is None
    assert claimed_kind("image/avif") is MediaKind.AVIF
    assert claimed_kind("image/heic") is None
    assert claimed_kind(None) is None


def test_jpeg_scored_from_draft_decode_at_reduced_size() -> None:
    big = mf.jpeg(mf.vivid_chaos(2400, 1600))
    info, frames = frames_for_scoring(big, size=224)
    assert (info.width, info.height) == (2400, 1600)
    assert len(frames) == 1
    height, width, channels = frames[0].shape
    assert channels == 3 and 224 <= min(height, width) <= 448


SMOOTH = {
    "jpeg": lambda: mf.jpeg(mf.calm_landscape(1200, 800)),
    "png": lambda: mf.png(mf.calm_landscape(1200, 800)),
    "webp": lambda: mf.webp(mf.calm_landscape(1200, 800)),
    "avif": lambda: mf.avif(mf.calm_landscape(1200, 800)),
    "animated avif": lambda: mf.animated_avif(),
    "alpha png": lambda: mf.alpha_png(),
    "animated gif": lambda: mf.animated_gif(),
}


@pytest.mark.parametrize("make", SMOOTH.values(), ids=SMOOTH.keys())
def test_square_frames_are_the_models_input_resampled_once(make) -> None:
    """What the nested scorer gets: size×size RGB, close to resizing the full frame once."""
    data = make()
    info = probe(data)
    _, frames = frames_for_scoring(data, size=96, max_frames=2, info=info, square=True)
    _, full = frames_for_scoring(data, size=4096, max_frames=2)  # no reduction at all
    assert len(frames) == len(full) == min(info.frames, 2)
    for frame, reference in zip(frames, full, strict=True):
        assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
        expected = np.asarray(Image.fromarray(reference).resize((96, 96), Image.BILINEAR))
        assert np.abs(frame.astype(float) - expected).mean() < 2.0


def test_animated_frames_are_sampled(media) -> None:
    info, frames = frames_for_scoring(media["anim.gif"], max_frames=3)
    assert info.frames == 6 and len(frames) == 3
    assert sample_indices(6, 3) == [0, 2, 5]
    assert sample_indices(2, 4) == [0, 1]


@pytest.mark.parametrize(
    "name", ["vivid.jpg", "alpha.png", "anim.gif", "vivid.webp", "vivid.avif", "anim.avif"]
)
def test_round_trip_keeps_format_size_frames(media, name) -> None:
    decoded = decode_full(media[name])
    again = Image.open(io.BytesIO(encode_like(decoded)))
    original = Image.open(io.BytesIO(media[name]))
    assert again.format == original.format and again.size == original.size
    assert getattr(again, "n_frames", 1) == getattr(original, "n_frames", 1)


def test_jpeg_quality_estimate_tracks_the_encoder() -> None:
    for quality in (50, 75, 90):
        image = Image.open(io.BytesIO(mf.jpeg(mf.calm_landscape(), quality=quality)))
        estimate = estimate_jpeg_quality(image)
        assert estimate is not None and abs(estimate - quality) <= 2


def test_exif_orientation_survives_reencode() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW on display
    out = io.BytesIO()
    mf.vivid_chaos(300, 200).save(out, "JPEG", exif=exif.tobytes())
    decoded = decode_full(out.getvalue())
    again = Image.open(io.BytesIO(encode_like(decoded)))
    assert again.getexif().get(0x0112) == 6 and again.size == (300, 200)


def test_decompression_bomb_refused_from_header(media) -> None:
    with pytest.raises(MediaError) as caught:
        probe(media["bomb.png"])
    assert caught.value.reason == "too-large"
    with pytest.raises(MediaError):
        frames_for_scoring(media["vivid.jpg"], limits=ImageLimits(max_pixels=1000))


@pytest.mark.parametrize("name", ["truncated.jpg", "badcrc.png"])
def test_corrupt_images_raise_media_error(media, name) -> None:
    with pytest.raises(MediaError) as caught:
        frames_for_scoring(media[name])
    assert caught.value.reason == "corrupt"


@pytest.mark.parametrize("payload", [b"", b"<html></html>", b"\xff\xd8\xff" + b"\x00" * 10])
def test_garbage_raises_media_error(payload) -> None:
    with pytest.raises(MediaError):
        frames_for_scoring(payload)


@pytest.mark.parametrize("name", ["vivid.jpg", "alpha.png", "anim.gif", "vivid.webp", "vivid.avif"])
def test_placeholder_same_format_and_size(media, name) -> None:
    info = probe(media[name])
    made = Image.open(io.BytesIO(placeholder(info)))
    assert made.format == Image.open(io.BytesIO(media[name])).format
    assert made.size == (info.width, info.height)
    assert np.asarray(made.convert("RGB"), dtype=np.float32).std(axis=(0, 1)).max() < 3


def test_avif_keeps_alpha_timing_and_metadata() -> None:
    """AVIF calmed in place: transparency, per-frame durations, EXIF and ICC come back."""
    rgba = Image.open(io.BytesIO(mf.alpha_png())).convert("RGBA")
    exif = Image.Exif()
    exif[0x010E] = "moodgate fixture"  # ImageDescription
    out = io.BytesIO()
    rgba.save(out, "AVIF", quality=90, speed=9, exif=exif.tobytes())
    decoded = decode_full(out.getvalue())
    assert decoded.info.kind is MediaKind.AVIF and decoded.info.has_alpha
    again = Image.open(io.BytesIO(encode_like(decoded)))
    assert again.format == "AVIF" and again.mode == "RGBA"
    alpha_before = np.asarray(rgba.getchannel("A"), dtype=np.int16)
    alpha_after = np.asarray(again.getchannel("A"), dtype=np.int16)
    assert np.abs(alpha_before - alpha_after).max() <= 8  # lossy, but the cut-out stays
    assert again.getexif().get(0x010E) == "moodgate fixture"

    animated = decode_full(mf.animated_avif(frames=3))
    assert animated.info.frames == 3 and animated.durations == [80, 120, 160]
    replayed = decode_full(encode_like(animated))
    assert replayed.info.frames == 3 and replayed.durations == [80, 120, 160]


def test_truncated_avif_raises_media_error(media) -> None:
    data = media["vivid.avif"]
    with pytest.raises(MediaError) as caught:
        frames_for_scoring(data[: len(data) // 2])
    assert caught.value.reason == "corrupt"


def test_formats_without_a_decoder() -> None:
    from moodgate.media.sniff import accept_decodable, undecodable_image

    assert undecodable_image(b"\xff\x0a\xfa", None) == "jpeg-xl"
    assert undecodable_image(b"\x00\x00\x00\x0cJXL \r\n\x87\n", None) == "jpeg-xl"
    assert undecodable_image(b"\x00\x00\x00\x0cjP  \r\n\x87\n", None) == "jpeg-2000"
    assert undecodable_image(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", None) == "heic"
    assert undecodable_image(b"", "image/heif; q=1") == "heif"
    assert undecodable_image(b"\xff\xd8\xff", "image/jpeg") is None
    assert undecodable_image(b"<svg", "image/svg+xml") is None  # vector: not a raster format
    assert accept_decodable("text/html,*/*;q=0.8") == "text/html,*/*;q=0.8"
    assert accept_decodable("image/jxl, image/webp;q=0.9") == "image/webp;q=0.9,image/jxl;q=0"


def test_running_out_of_memory_is_told_apart_from_a_corrupt_file(
    media, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under an address-space cap (make fuzz) an allocation that fails must not pass for a
    corrupt file, or the fuzzer could never see a decoder allocating wildly."""

    def no_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(Image.Image, "convert", no_memory)
    for decode in (lambda: decode_full(media["alpha.png"]),
                   lambda: frames_for_scoring(media["alpha.png"], 224)):  # fmt: skip
        with pytest.raises(MediaError) as caught:
            decode()
        assert caught.value.reason == "out-of-memory"


def test_a_canvas_past_the_formats_limit_is_too_large_to_write_back() -> None:
    """Found by the fuzzer: a GIF frame placed at x = 65535 grows a 48×32 canvas to 65583 px
    wide (2 MP, inside every pixel limit); calming it then failed in Pillow's GIF writer
    with an OverflowError. Writing it back is now a MediaError, so on_error decides."""
    from test_fuzz_media import _encode, _gif_frames

    frames = [Image.new("P", (48, 32), i) for i in range(3)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    head, parts = _gif_frames(_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    moved = bytearray(parts[1])
    at = moved.index(b"\x2c")
    moved[at + 1 : at + 3] = (65535).to_bytes(2, "little")
    data = head + parts[0] + bytes(moved) + parts[2] + b"\x3b"
    decoded = decode_full(data)
    assert decoded.frames[-1].width > 65535
    with pytest.raises(MediaError) as caught:
        encode_like(decoded)
    assert caught.value.reason == "too-large"
