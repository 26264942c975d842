"""Media: sniffing by magic bytes, safe decoding, format-preserving encoding, placeholders."""

from moodgate.media.errors import MediaError
from moodgate.media.sniff import SNIFF_BYTES, MediaKind, claimed_kind, sniff

__all__ = ["SNIFF_BYTES", "MediaError", "MediaKind", "claimed_kind", "sniff"]
