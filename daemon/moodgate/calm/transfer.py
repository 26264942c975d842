"""The calming transform: colour transfer toward a blended style plus arousal-reducing edits.

Everything that depends on colour alone is folded into one 3D lookup table (sRGB → sRGB,
trilinear, applied by Pillow in C), so full-resolution work is one LUT pass and one cheap
blur-and-mix. The parameters are computed once from statistics of a thumbnail.

Per pixel, at strength α (0 = identity, 1 = full):
- Chroma (a*, b*): the Monge–Kantorovich map toward the style's chroma Gaussian (Pitié &
  Kokaram 2007), mixed in by α. It carries the style's cast, so the cast is what the data
  says rather than a fixed warm or cool tint: the calm, pleasant OASIS training images that
  make the default bank average L* 53, a* −5.0, b* +20.3 against L* 45, a* +3.7, b* +3.6 for
  the most arousing third, i.e. away from red toward yellow-green (foliage, daylight). That
  agrees with Wilms & Oberfeld (2018, Psychological Research 82:896–914), who find red the
  most arousing hue, and Valdez & Mehrabian (1994), who find green and blue-green hues the
  most pleasant. A hue-turn limit keeps the cast from repainting memory colours.
- Saturation: chroma is then scaled down by (1 − α·desaturate). Saturation is the colour
  property with the largest effect on arousal in both Valdez & Mehrabian (1994; arousal ≈
  −0.31·brightness + 0.60·saturation) and Wilms & Oberfeld (2018). A cap keeps any pixel from
  gaining more than a small amount of chroma, so a grey image is never painted.
- Lightness (L*): the midtones are lifted by a power curve, never lowered (brightness lowers
  arousal and raises pleasure: Valdez & Mehrabian 1994), then contrast is compressed around
  the mean toward the style's spread, never expanded (luminance contrast raises arousal:
  Berlyne 1971's collative variables; RMS contrast is an arousal cue in Machajdik & Hanbury
  2010).
- Detail: high spatial frequencies are attenuated by mixing in a Gaussian blur. Excess
  energy at mid-to-high spatial frequencies makes images uncomfortable (Fernandez & Wilkins
  2008, Perception 37:1098–1113), and edge density / visual complexity raises arousal
  (Berlyne 1971; Machajdik & Hanbury 2010).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

from moodgate.calm.colour import ColourStats, lab_to_srgb, srgb_to_lab
from moodgate.calm.gaussian import transport_map
from moodgate.emotion.base import VATarget


@dataclass(frozen=True)
class CalmSettings:
    """Strength of each component at α = 1. Tuned on OASIS training images (docs/calming.md)."""

    transfer: float = 1.0  # share of the chroma transport map
    desaturate: float = 0.6  # chroma scale is 1 − α·desaturate
    chroma_allowance: float = 3.0  # Lab units of chroma a pixel may gain (the style's cast)
    contrast_min: float = 0.2  # L* contrast compression at α = 1, at least …
    contrast_max: float = 0.4  # … and at most (the style's spread decides in between)
    lift_toward_style: float = 1.0  # share of a brighter style's mean L* taken over
    lift: float = 12.0  # midtone L* gain at α = 1, tapering to 0 for images of mean L* 90
    max_lift: float = 24.0  # the cap on that gain, style included (< 25: see map_lab)
    soften: float = 0.5  # share of the blurred image mixed in at α = 1
    soften_radius: float = 1.0  # Gaussian σ in pixels of a 256-px thumbnail
    lut_size: int = 25  # vs 33: mean ΔE 0.1, p99 1.5 on OASIS, 15 % less CPU
    chroma_regulariser: float = 4.0  # Lab units² added to the image's chroma covariance
    max_hue_shift: float = 20.0  # degrees any pixel's hue may turn at α = 1
    # When the target also asks for pleasantness: brightness is the one lever that lowers
    # arousal and raises pleasure, while saturation raises both (Valdez & Mehrabian 1994),
    # so lean on the first and go easier on the second.
    pleasant_lift: float = 24.0
    pleasant_desaturate: float = 0.4

    def for_target(self, target: VATarget) -> CalmSettings:
        if target.valence_at_least is None:
            return self
        return replace(self, lift=self.pleasant_lift, desaturate=self.pleasant_desaturate)


@functools.cache
def lut_grid_lab(size: int) -> np.ndarray:
    """The LUT's sample points in Lab; the same for every image, so computed once per size."""
    axis = np.linspace(0.0, 1.0, size)
    # Pillow wants red varying fastest, then green, then blue.
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    lab = srgb_to_lab(np.stack([r, g, b], axis=-1).reshape(-1, 3))
    lab.flags.writeable = False  # shared between calls: nobody may edit it in place
    return lab


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
        # Brightening is the one edit that lowers arousal and raises pleasure at once (Valdez &
        # Mehrabian 1994), hence its weight; it tapers off for bright images so highlights
        # are not clipped.
        taper = float(np.clip((90.0 - image.mean[0]) / 50.0, 0.0, 1.0))
        toward_style = s.lift_toward_style * max(0.0, float(style.mean[0] - image.mean[0]))
        self._lift = min(toward_style + s.lift * taper, s.max_lift)

    def map_lab(self, lab: np.ndarray, alpha: float) -> np.ndarray:
        s = self.settings
        out = np.empty_like(lab)
        # Brighten with a midtone bump L + A·4x(1 − x), x = L/100: black stays black and white
        # white (no fog, no clipping), and unlike a power curve its slope at black is finite,
        # so the noise in a night sky is not amplified. A < 25 keeps it monotonic.
        amplitude = alpha * self._lift

        def bump(lightness: np.ndarray | float) -> np.ndarray | float:
            x = np.clip(lightness, 0.0, 100.0) / 100.0
            return 100.0 * x + amplitude * 4.0 * x * (1.0 - x)

        centre = bump(self._mean[0])
        gain = 1.0 - alpha * self._compress
        out[..., 0] = centre + gain * (bump(lab[..., 0]) - centre)
        ab = lab[..., 1:]
        moved = self._style_mean[1:] + (ab - self._mean[1:]) @ self._ab_map.T
        ab_out = ab + alpha * s.transfer * (moved - ab)
        chroma_in = np.hypot(ab[..., 0], ab[..., 1])
        chroma_out = np.hypot(ab_out[..., 0], ab_out[..., 1]) * (1.0 - alpha * s.desaturate)
        chroma_out = np.minimum(chroma_out, chroma_in + alpha * s.chroma_allowance)
        # Memory colours (sky, skin, a sunset) must keep their hue or the result looks wrong,
        # not calm: the style may turn a hue only a little. Greys have no hue to keep.
        hue_in = np.arctan2(ab[..., 1], ab[..., 0])
        turn = np.angle(np.exp(1j * (np.arctan2(ab_out[..., 1], ab_out[..., 0]) - hue_in)))
        limit = np.deg2rad(alpha * s.max_hue_shift)
        limit = limit + np.pi * np.clip(1.0 - chroma_in / 10.0, 0.0, 1.0)
        turn = np.clip(turn, -limit, limit)
        hue_out = hue_in + turn
        out[..., 1] = chroma_out * np.cos(hue_out)
        out[..., 2] = chroma_out * np.sin(hue_out)
        out[..., 0] = np.clip(out[..., 0], 0.0, 100.0)
        return out

    def lut(self, alpha: float) -> ImageFilter.Color3DLUT:
        n = self.settings.lut_size
        table = lab_to_srgb(self.map_lab(lut_grid_lab(n), alpha))
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
    has_alpha = frame.mode == "RGBA"
    # With transparency, blur premultiplied ("RGBa") so the invisible colour under transparent
    # pixels cannot bleed into visible edges as a fringe.
    source = frame.convert("RGBa") if has_alpha else frame
    factor = max(1, int(radius))  # blur at σ ≈ 1 px of a reduced copy
    small = source.reduce(factor) if factor > 1 else source
    blurred = small.filter(ImageFilter.GaussianBlur(radius / factor))
    if factor > 1:
        blurred = blurred.resize(source.size, Image.Resampling.BILINEAR)
    if has_alpha:
        blurred = blurred.convert("RGBA").convert("RGB")
    rgb = frame.convert("RGB") if has_alpha else frame
    mixed = Image.blend(rgb, blurred, amount)
    if has_alpha:
        mixed.putalpha(frame.getchannel("A"))
    return mixed
