"""SSIM on luminance, numpy only: how much of the original's structure a calmed image keeps.

Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4): 11×11 Gaussian window with σ = 1.5, K1 = 0.01,
K2 = 0.03, L = 255, and the authors' reference-code rule of first averaging and subsampling
by f = max(1, round(min(H, W) / 256)) so the score reflects viewing at a normal distance.
Only luminance (Rec. 709 weights) is compared: colour is what calming is meant to change.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2.0
    kernel = np.exp(-(x**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation, as the reference implementation's filter2(…, 'valid')."""
    n = len(kernel)
    rows = sum(kernel[i] * image[i : image.shape[0] - n + 1 + i] for i in range(n))
    return sum(kernel[i] * rows[:, i : rows.shape[1] - n + 1 + i] for i in range(n))


def luminance(frame: Image.Image) -> np.ndarray:
    """Rec. 709 luma in 0…255; transparency shown over white, as a page shows it."""
    if frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info:
        rgba = frame.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        frame = canvas
    rgb = np.asarray(frame.convert("RGB"), dtype=np.float64)
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


def _downsample(y: np.ndarray) -> np.ndarray:
    f = max(1, round(min(y.shape) / 256))
    if f == 1:
        return y
    h, w = (y.shape[0] // f) * f, (y.shape[1] // f) * f
    return y[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def ssim_luminance(a: Image.Image, b: Image.Image) -> float:
    """Mean SSIM of the two images' luminance (same pixel size required)."""
    if a.size != b.size:
        raise ValueError(f"sizes differ: {a.size} vs {b.size}")
    x, y = _downsample(luminance(a)), _downsample(luminance(b))
    if min(x.shape) < 11:
        # Too small for the window: fall back to one global SSIM term.
        mx, my = x.mean(), y.mean()
        vx, vy, cxy = x.var(), y.var(), ((x - mx) * (y - my)).mean()
        return float(
            ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx**2 + my**2 + _C1) * (vx + vy + _C2))
        )
    k = _gaussian_kernel()
    mx, my = _filter(x, k), _filter(y, k)
    sxx = _filter(x * x, k) - mx * mx
    syy = _filter(y * y, k) - my * my
    sxy = _filter(x * y, k) - mx * my
    ssim_map = ((2 * mx * my + _C1) * (2 * sxy + _C2)) / (
        (mx * mx + my * my + _C1) * (sxx + syy + _C2)
    )
    return float(ssim_map.mean())
