"""Identify media by its magic bytes; Content-Type headers lie too often to be trusted alone."""

from __future__ import annotations

from enum import StrEnum


class MediaKind(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    GIF = "gif"
    WEBP = "webp"
    AVIF = "avif"  # still or animated (AV1 in HEIF)
    MP4 = "mp4"  # ISO BMFF: mp4, mov, fMP4 segments
    WEBM = "webm"  # Matroska / WebM
    MPEGTS = "mpegts"

    @property
    def is_image(self) -> bool:
        return self in _IMAGES

    @property
    def is_video(self) -> bool:
        return not self.is_image

    @property
    def mime(self) -> str:
        return _MIME[self]


_IMAGES = {MediaKind.JPEG, MediaKind.PNG, MediaKind.GIF, MediaKind.WEBP, MediaKind.AVIF}
_MIME = {
    MediaKind.JPEG: "image/jpeg",
    MediaKind.PNG: "image/png",
    MediaKind.GIF: "image/gif",
    MediaKind.WEBP: "image/webp",
    MediaKind.AVIF: "image/avif",
    MediaKind.MP4: "video/mp4",
    MediaKind.WEBM: "video/webm",
    MediaKind.MPEGTS: "video/mp2t",
}

_ISO_BMFF_BOXES = (b"ftyp", b"styp", b"moof", b"moov", b"sidx", b"free", b"mdat", b"wide")
_AVIF_BRANDS = {b"avif", b"avis"}
# HEIF stills other than AVIF (HEIC from phones): ISO BMFF too, but no decoder here reads them.
_OTHER_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


SNIFF_BYTES = 512


def sniff(head: bytes) -> MediaKind | None:
    """The media kind of a body from its first bytes (SNIFF_BYTES of them), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return MediaKind.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaKind.PNG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return MediaKind.GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return MediaKind.WEBP
    if head[4:8] == b"ftyp":
        brands = _ftyp_brands(head)
        if brands & _AVIF_BRANDS:
            return MediaKind.AVIF
        if brands and brands <= _OTHER_HEIF_BRANDS | {b"iso8", b"miaf", b"MiHE", b"MiHB"}:
            return None
    if head[4:8] in _ISO_BMFF_BOXES:
        return MediaKind.MP4
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return MediaKind.WEBM
    # Two sync bytes one 188-byte packet apart; one alone is just a capital G.
    if head[:1] == b"\x47" and head[188:189] == b"\x47":
        return MediaKind.MPEGTS
    return None


def _ftyp_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of a leading ftyp box (as far as `head` reaches)."""
    size = int.from_bytes(head[:4], "big")
    end = min(len(head), size if size >= 16 else 16)
    brands = {head[8:12]}
    brands.update(head[i : i + 4] for i in range(16, end - 3, 4))
    return brands


_CLAIMED = {
    "image/jpeg": MediaKind.JPEG,
    "image/jpg": MediaKind.JPEG,
    "image/pjpeg": MediaKind.JPEG,
    "image/png": MediaKind.PNG,
    "image/gif": MediaKind.GIF,
    "image/webp": MediaKind.WEBP,
    "image/avif": MediaKind.AVIF,
    "video/mp4": MediaKind.MP4,
    "video/quicktime": MediaKind.MP4,
    "video/iso.segment": MediaKind.MP4,
    "video/webm": MediaKind.WEBM,
    "video/mp2t": MediaKind.MPEGTS,
}


def media_type(value: str | None) -> str:
    """`type/subtype` of a Content-Type or Accept entry, lower-cased, parameters dropped."""
    return (value or "").split(";", 1)[0].strip().lower()


def claimed_kind(content_type: str | None) -> MediaKind | None:
    """The media kind a Content-Type header claims, for the kinds moodgate can inspect.

    SVG, HEIC and icons are not claimed: they are passed uninspected (see README).
    """
    if not content_type:
        return None
    return _CLAIMED.get(media_type(content_type))


# Raster formats a browser may be sent that no decoder here reads. Safari 17+ offers the first
# two in its Accept header, and image CDNs negotiate on it.
UNDECODABLE_IMAGE_TYPES = {
    "image/jxl": "jpeg-xl",
    "image/heic": "heic", "image/heic-sequence": "heic",
    "image/heif": "heif", "image/heif-sequence": "heif",
    "image/jp2": "jpeg-2000", "image/jpx": "jpeg-2000", "image/jpm": "jpeg-2000",
}  # fmt: skip


def undecodable_image(head: bytes, content_type: str | None) -> str | None:
    """The format of an image that moodgate cannot decode, by magic bytes or Content-Type."""
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "jpeg-xl"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n"):
        return "jpeg-2000"
    if head[4:8] == b"ftyp" and _ftyp_brands(head) & {b"heic", b"heix", b"heim", b"heis"}:
        return "heic"
    return UNDECODABLE_IMAGE_TYPES.get(media_type(content_type))


def accept_decodable(accept: str) -> str:
    """An Accept header that turns down the image formats no decoder here reads, so that a
    server negotiating on it sends one moodgate can judge instead."""
    kept, refused = [], []
    for entry in accept.split(","):
        (refused if media_type(entry) in UNDECODABLE_IMAGE_TYPES else kept).append(entry.strip())
    if not refused:
        return accept
    return ",".join([*kept, *(f"{e.split(';', 1)[0].strip()};q=0" for e in refused)])
