"""CIELAB conversion and the colour statistics that summarise an image for style transfer.

sRGB (D65) ↔ CIELAB follows the CIE 15:2004 definitions. Statistics are what the transfer
and the style selection need: mean and covariance in Lab (a Gaussian summary, as in
Reinhard et al. 2001 and Pitié & Kokaram 2007), RMS luminance contrast and HSV saturation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WHITE = np.array([0.95047, 1.0, 1.08883])  # D65, Y = 1
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_EPS = 216.0 / 24389.0
_KAPPA = 24389.0 / 27.0
_MAX_PIXELS = 16_384


def _linearise(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _gamma(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def srgb_to_lab(srgb: np.ndarray) -> np.ndarray:
    """sRGB in 0…1 (…×3) → CIELAB (L 0…100, a/b roughly −128…127)."""
    xyz = _linearise(np.asarray(srgb, dtype=np.float64)) @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16.0) / 116.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB → sRGB in 0…1, out-of-gamut values clipped."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f**3 > _EPS, f**3, (116.0 * f - 16.0) / _KAPPA) * _WHITE
    return _gamma(xyz @ _XYZ_TO_RGB.T)


def hsv_saturation(srgb: np.ndarray) -> np.ndarray:
    value = srgb.max(axis=-1)
    chroma = value - srgb.min(axis=-1)
    return np.where(value > 1e-6, chroma / np.maximum(value, 1e-6), 0.0)


@dataclass(frozen=True)
class ColourStats:
    """A Gaussian summary of an image's colours plus the two arousal-relevant scalars."""

    lab_mean: tuple[float, float, float]
    lab_cov: tuple[tuple[float, float, float], ...]  # 3×3, row-major
    contrast: float  # RMS of relative luminance Y (0…1 scale), as Peli (1990) defines it
    saturation_mean: float  # HSV saturation, 0…1
    saturation_std: float

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.lab_mean, dtype=np.float64)

    @property
    def cov(self) -> np.ndarray:
        return np.asarray(self.lab_cov, dtype=np.float64)

    def to_json(self) -> dict[str, object]:
        return {
            "lab_mean": [round(v, 4) for v in self.lab_mean],
            "lab_cov": [[round(v, 4) for v in row] for row in self.lab_cov],
            "contrast": round(self.contrast, 5),
            "saturation_mean": round(self.saturation_mean, 5),
            "saturation_std": round(self.saturation_std, 5),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ColourStats:
        mean = np.asarray(data["lab_mean"], dtype=np.float64)
        cov = np.asarray(data["lab_cov"], dtype=np.float64)
        if mean.shape != (3,) or cov.shape != (3, 3) or not np.all(np.isfinite(cov)):
            raise ValueError("lab_mean must have 3 numbers and lab_cov be 3×3")
        return cls.from_arrays(
            mean,
            cov,
            float(data["contrast"]),  # type: ignore[arg-type]
            float(data["saturation_mean"]),  # type: ignore[arg-type]
            float(data["saturation_std"]),  # type: ignore[arg-type]
        )

    @classmethod
    def from_arrays(
        cls,
        mean: np.ndarray,
        cov: np.ndarray,
        contrast: float,
        saturation_mean: float,
        saturation_std: float,
    ) -> ColourStats:
        cov = 0.5 * (cov + cov.T)  # keep it exactly symmetric after rounding and averaging
        return cls(
            lab_mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            lab_cov=tuple(tuple(float(v) for v in row) for row in cov),
            contrast=float(contrast),
            saturation_mean=float(saturation_mean),
            saturation_std=float(saturation_std),
        )


def measure(frames: Sequence[np.ndarray]) -> ColourStats:
    """Statistics over all pixels of the given frames (uint8 RGB or RGBA, any size).

    Pixels that are mostly transparent are left out: they are not seen, so they must not pull
    the transfer. A frame that is fully transparent counts all its pixels instead.
    """
    pixels = []
    for frame in frames:
        rgb = frame[..., :3].reshape(-1, 3)
        if frame.shape[-1] == 4:
            visible = frame[..., 3].reshape(-1) >= 128
            if visible.any():
                rgb = rgb[visible]
        pixels.append(rgb)
    if not pixels:
        raise ValueError("no frames to measure")
    srgb = np.concatenate(pixels).astype(np.float64) / 255.0
    if len(srgb) > _MAX_PIXELS:  # means and covariances converge long before this
        srgb = srgb[:: len(srgb) // _MAX_PIXELS + 1]
    lab = srgb_to_lab(srgb)
    luma = srgb @ np.array([0.2126, 0.7152, 0.0722])
    saturation = hsv_saturation(srgb)
    cov = np.cov(lab, rowvar=False) if len(lab) > 1 else np.zeros((3, 3))
    return ColourStats.from_arrays(
        lab.mean(axis=0), cov, float(luma.std()), float(saturation.mean()), float(saturation.std())
    )
