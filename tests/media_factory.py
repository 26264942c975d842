"""Real encoded media for tests, made with Pillow: no binary fixtures in the repo."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def calm_landscape(width: int = 640, height: int = 427) -> Image.Image:
    """A soft, low-saturation landscape: pale sky, hazy hills, smooth gradients."""
    y = np.linspace(0.0, 1.0, height)[:, None]
    x = np.linspace(0.0, 1.0, width)[None, :]
    sky = np.stack([200 + 20 * y, 210 + 15 * y, 220 + 10 * y], axis=-1) * np.ones((1, width, 1))
    horizon = 0.55 + 0.06 * np.sin(2 * np.pi * x * 1.5)
    land = y > horizon
    hills = np.stack([150 + 30 * y, 165 + 25 * y, 150 + 20 * y], axis=-1)
    rgb = np.where(land[..., None], hills * np.ones((1, width, 1)), sky)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def vivid_chaos(width: int = 640, height: int = 427, seed: int = 1) -> Image.Image:
    """Saturated, high-contrast, busy: red/yellow/black stripes and noise blocks."""
    rng = np.random.default_rng(seed)
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    stripes = ((x + y) // 9) % 3
    palette = np.array([[255, 0, 0], [255, 230, 0], [0, 0, 0]], dtype=np.uint8)
    rgb = palette[stripes]
    blocks = rng.integers(0, 2, size=(height // 16 + 1, width // 16 + 1), dtype=np.uint8)
    mask = np.kron(blocks, np.ones((16, 16), dtype=np.uint8))[:height, :width].astype(bool)
    rgb[mask] = np.array([255, 0, 255], dtype=np.uint8)
    return Image.fromarray(rgb)


def jpeg(image: Image.Image, quality: int = 85) -> bytes:
    return _encode(image.convert("RGB"), "JPEG", quality=quality)


def png(image: Image.Image) -> bytes:
    return _encode(image, "PNG")


def webp(image: Image.Image) -> bytes:
    return _encode(image, "WEBP", quality=85)


def avif(image: Image.Image, quality: int = 70) -> bytes:
    return _encode(image, "AVIF", quality=quality, speed=9)


def animated_avif(width: int = 160, height: int = 120, frames: int = 3) -> bytes:
    images = [vivid_chaos(width, height, seed=i) for i in range(frames)]
    return _encode(images[0], "AVIF", save_all=True, append_images=images[1:],
                   duration=[80 + 40 * i for i in range(frames)], loop=0, speed=9)


def alpha_png(width: int = 320, height: int = 240) -> bytes:
    base = vivid_chaos(width, height).convert("RGBA")
    alpha = np.zeros((height, width), dtype=np.uint8)
    alpha[height // 6 : -height // 6, width // 6 : -width // 6] = 255
    base.putalpha(Image.fromarray(alpha))
    return png(base)


def animated_gif(width: int = 200, height: int = 150, frames: int = 6) -> bytes:
    images = [vivid_chaos(width, height, seed=i).convert("P", palette=Image.Palette.ADAPTIVE)
              for i in range(frames)]
    return _encode(images[0], "GIF", save_all=True, append_images=images[1:],
                   duration=[80 + 10 * i for i in range(frames)], loop=0)


def tracking_pixel() -> bytes:
    return _encode(Image.new("RGB", (1, 1), (255, 255, 255)), "GIF")


def truncated_jpeg() -> bytes:
    data = jpeg(vivid_chaos())
    return data[: len(data) // 2]


def png_with_bad_crc() -> bytes:
    noise = np.random.default_rng(3).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    data = bytearray(png(Image.fromarray(noise)))
    # IHDR's CRC sits at bytes 29..32; flip it.
    data[29] ^= 0xFF
    return bytes(data)


def decompression_bomb(side: int = 30000) -> bytes:
    """A tiny PNG that declares side×side pixels (all zeros, deflated to almost nothing)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks
