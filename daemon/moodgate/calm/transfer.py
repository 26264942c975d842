"""The calming transform: colour transfer toward a blended style plus arousal-reducing edits.

Everything that depends on colour alone is folded into one 3D lookup table (sRGB → sRGB,
trilinear, applied by Pillow in C), so full-resolution work is one LUT pass and one cheap
blur-and-mix. The parameters are computed once from statistics of a thumbnail.

Per pixel, at strength α (0 = identity, 1 = full):
- Chroma (a*, b*): the Monge–Kantorovich map toward the style's chroma Gaussian (Pitié &
  Kokaram 2007), mixed in by α. It carries the style's cast: the calm, pleasant OASIS images
  are cooler and less chromatic than the arousing ones (docs/calming.md has the numbers),
  in line with Valdez & Mehrabian (1994), who find blue-green hues the most pleasant and least
  arousing, and Wilms & Oberfeld (2018, Psychological Research 82:896–914), who find red the
  most arousing hue.
- Saturation: chroma is then scaled down by (1 − α·desaturate). Saturation is the colour
  property with the largest effect on arousal in both Valdez & Mehrabian (1994; arousal ≈
  −0.31·brightness + 0.60·saturation) and Wilms & Oberfeld (2018). A cap keeps any pixel from
  gaining more than a small amount of chroma, so a grey image is never painted.
- Lightness (L*): contrast is compressed around the mean toward the style's spread, never
  expanded (luminance contrast raises arousal: Berlyne 1971's collative variables; RMS
  contrast is an arousal cue in Machajdik & Hanbury 2010), and the mean is lifted a little,
  never lowered (brightness lowers arousal and raises pleasure: Valdez & Mehrabian 1994).
- Detail: high spatial frequencies are attenuated by mixing in a Gaussian blur. Excess
  energy at mid-to-high spatial frequencies makes images uncomfortable (Fernandez & Wilkins
  2008, Perception 37:1098–1113), and edge density / visual complexity raises arousal
  (Berlyne 1971; Machajdik & Hanbury 2010).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from moodgate.calm.colour import ColourStats, lab_to_srgb, srgb_to_lab
from moodgate.calm.gaussian import transport_map


@dataclass(frozen=True)
class CalmSettings:
    """Strength of each component at α = 1. Tuned on OASIS training images (docs/calming.md)."""

    transfer: float = 1.0  # share of the chroma transport map
    desaturate: float = 0.6  # chroma scale is 1 − α·desaturate
    chroma_allowance: float = 3.0  # Lab units of chroma a pixel may gain (the style's cast)
    contrast_min: float = 0.2  # L* contrast compression at α = 1, at least …
    contrast_max: float = 0.4  # … and at most (the style's spread decides in between)
    lift_toward_style: float = 0.5  # share of a brighter style's mean L* taken over
    lift: float = 4.0  # L* units added at α = 1 regardless of style
    soften: float = 0.5  # share of the blurred image mixed in at α = 1
    soften_radius: float = 1.0  # Gaussian σ in pixels of a 256-px thumbnail
    lut_size: int = 33
    chroma_regulariser: float = 4.0  # Lab units² added to the image's chroma covariance


class CalmTransform:
    """Parameters fitted to one image and one blended style; produces frames at any α."""

    def __init__(
        self, image: ColourStats, style: ColourStats, settings: CalmSettings | None = None
    ) -> None:
        self.settings = s = settings or CalmSettings()
        self._mean = image.mean
        self._style_mean = style.mean
        # A near-grey image has a degenerate chroma covariance; the regulariser keeps the
        # transport map from amplifying its noise into colour.
        source_ab = image.cov[1:, 1:] + s.chroma_regulariser * np.eye(2)
        target_ab = style.cov[1:, 1:] + s.chroma_regulariser * np.eye(2)
        self._ab_map = transport_map(source_ab, target_ab)
        source_l = float(np.sqrt(max(image.cov[0, 0], 1e-6)))
        target_l = float(np.sqrt(max(style.cov[0, 0], 1e-6)))
        self._compress = float(np.clip(1.0 - target_l / source_l, s.contrast_min, s.contrast_max))
        self._lift = s.lift_toward_style * max(0.0, float(style.mean[0] - image.mean[0])) + s.lift

    def map_lab(self, lab: np.ndarray, alpha: float) -> np.ndarray:
        s = self.settings
        out = np.empty_like(lab)
        gain = 1.0 - alpha * self._compress
        out[..., 0] = self._mean[0] + alpha * self._lift + gain * (lab[..., 0] - self._mean[0])
        ab = lab[..., 1:]
        moved = self._style_mean[1:] + (ab - self._mean[1:]) @ self._ab_map.T
        ab_out = (ab + alpha * s.transfer * (moved - ab)) * (1.0 - alpha * s.desaturate)
        chroma_in = np.hypot(ab[..., 0], ab[..., 1])
        chroma_out = np.hypot(ab_out[..., 0], ab_out[..., 1])
        cap = chroma_in + alpha * s.chroma_allowance
        shrink = np.where(chroma_out > cap, cap / np.maximum(chroma_out, 1e-9), 1.0)
        out[..., 1:] = ab_out * shrink[..., None]
        out[..., 0] = np.clip(out[..., 0], 0.0, 100.0)
        return out

    def lut(self, alpha: float) -> ImageFilter.Color3DLUT:
        n = self.settings.lut_size
        axis = np.linspace(0.0, 1.0, n)
        # Pillow wants red varying fastest, then green, then blue.
        b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
        grid = np.stack([r, g, b], axis=-1).reshape(-1, 3)
        table = lab_to_srgb(self.map_lab(srgb_to_lab(grid), alpha))
        return ImageFilter.Color3DLUT(n, table.astype(np.float32).ravel())

    def apply(self, frame: Image.Image, alpha: float, scale: float = 1.0) -> Image.Image:
        """The calmed frame at strength α; `scale` is frame size ÷ thumbnail size."""
        return self.apply_with(frame, alpha, self.lut(alpha), scale)

    def apply_with(
        self, frame: Image.Image, alpha: float, lut: ImageFilter.Color3DLUT, scale: float = 1.0
    ) -> Image.Image:
        if alpha <= 0.0:
            return frame.copy()
        soft = soften(frame, alpha * self.settings.soften, self.settings.soften_radius * scale)
        return soft.filter(lut)


def soften(frame: Image.Image, amount: float, radius: float) -> Image.Image:
    """Mix `amount` of a Gaussian blur of σ = radius px into RGB; alpha is left untouched.

    Large radii are blurred on a box-reduced copy and scaled back up: the result is a low-pass
    image either way, and it costs a fraction of a full-resolution blur.
    """
    if amount <= 0.0 or radius <= 0.0:
        return frame
    rgb = frame.convert("RGB") if frame.mode == "RGBA" else frame
    factor = max(1, int(radius // 1.5))
    small = rgb.reduce(factor) if factor > 1 else rgb
    blurred = small.filter(ImageFilter.GaussianBlur(radius / factor))
    if factor > 1:
        blurred = blurred.resize(rgb.size, Image.Resampling.BILINEAR)
    mixed = Image.blend(rgb, blurred, amount)
    if frame.mode == "RGBA":
        mixed.putalpha(frame.getchannel("A"))
    return mixed
