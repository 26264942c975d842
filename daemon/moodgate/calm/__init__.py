"""Calming: move an image's emotion toward a calm, pleasant target, checked by the scorer.

Rooms: may import media and emotion, never policy, record or the addon.
"""

from moodgate.calm.blend import Blend, StyleSelector
from moodgate.calm.colour import ColourStats
from moodgate.calm.loop import Calmer, CalmOutcome
from moodgate.calm.quality import ssim_luminance
from moodgate.calm.styles import NEUTRAL_CALM, Style, StyleBank
from moodgate.calm.transfer import CalmSettings, CalmTransform

__all__ = [
    "NEUTRAL_CALM",
    "Blend",
    "CalmOutcome",
    "CalmSettings",
    "CalmTransform",
    "Calmer",
    "ColourStats",
    "Style",
    "StyleBank",
    "StyleSelector",
    "ssim_luminance",
]
