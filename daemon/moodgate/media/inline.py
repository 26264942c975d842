"""Images inlined in text as base64 `data:` URIs: pages, scripts, JSON, stylesheets, SVG.

Image search results, lazy-loading placeholders and SVG wrappers carry whole pictures this
way, never as a request of their own. Escaped forms in JavaScript and JSON strings (`\\/`,
`\\x3d`, `\\u003d`) are read, and written back the same way.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

# The payload: base64 characters, '/' possibly escaped as '\/', '=' padding possibly escaped.
_DATA_URI = re.compile(
    rb"data:image/(?:png|jpe?g|gif|webp|avif);base64,"
    rb"((?:[A-Za-z0-9+/]+|\\/)+(?:=|\\x3[dD]|\\u003[dD]){0,2})"
)
_PADDING = (b"\\u003d", b"\\u003D", b"\\x3d", b"\\x3D")
_PADDING_FORM = re.compile(rb"=|\\x3[dD]|\\u003[dD]")


@dataclass(frozen=True)
class InlineImage:
    start: int  # the base64 payload's span in the text
    end: int
    data: bytes  # the decoded image file
    escaped_slash: bool
    padding: tuple[bytes, ...]  # how each '=' was written (b"=", b"\\x3d"…); () if left out

    def payload_for(self, data: bytes) -> bytes:
        """`data` in base64, escaped the way the original payload was: each '=' as the
        original wrote its '=' in that place (the last form repeats), none if it left them out."""
        encoded = base64.b64encode(data)
        if self.escaped_slash:
            encoded = encoded.replace(b"/", b"\\/")
        body = encoded.rstrip(b"=")
        count = len(encoded) - len(body)
        if not self.padding:
            return body
        forms = [self.padding[min(i, len(self.padding) - 1)] for i in range(count)]
        return body + b"".join(forms)


def find_inline_images(text: bytes, min_bytes: int = 0, limit: int = 1000) -> list[InlineImage]:
    """The inlined images of at least `min_bytes` decoded, in order, at most `limit`."""
    found: list[InlineImage] = []
    for match in _DATA_URI.finditer(text):
        payload = match.group(1)
        if len(payload) * 3 // 4 < min_bytes:
            continue
        tail = re.search(rb"(?:=|\\x3[dD]|\\u003[dD])*$", payload)
        padding = tuple(_PADDING_FORM.findall(tail.group(0))) if tail else ()
        plain = payload.replace(b"\\/", b"/")
        for escaped in _PADDING:
            plain = plain.replace(escaped, b"=")
        try:
            data = base64.b64decode(plain + b"=" * (-len(plain) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        canonical = base64.b64encode(data)
        if plain not in (canonical, canonical.rstrip(b"=")):
            continue  # stray bits or padding: run into neighbouring text, not a payload
        if len(data) < min_bytes:
            continue
        found.append(InlineImage(match.start(1), match.end(1), data, b"\\/" in payload, padding))
        if len(found) >= limit:
            break
    return found


def replace_inline_images(text: bytes, replacements: dict[InlineImage, bytes]) -> bytes:
    """`text` with each given image's payload swapped for the new image's."""
    parts: list[bytes] = []
    position = 0
    for image in sorted(replacements, key=lambda i: i.start):
        new = replacements[image]
        # The same picture keeps its payload exactly, however oddly it was escaped (a mix of
        # '/' and '\\/' is valid JavaScript; a new picture is escaped one way throughout).
        payload = text[image.start : image.end] if new == image.data else image.payload_for(new)
        parts += [text[position : image.start], payload]
        position = image.end
    parts.append(text[position:])
    return b"".join(parts)
