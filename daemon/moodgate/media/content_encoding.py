"""A response body content-decoded (gzip, deflate, br, zstd) with a cap on what it unpacks to.

A compression bomb is a few hundred KB on the wire and gigabytes once decoded; mitmproxy's own
`get_content()` decodes all of it in memory, so one page could take the filter past its
memory limit. Here every decoder stops at `limit` bytes of output.
"""

from __future__ import annotations

import io
import zlib

import brotli
import zstandard

# Brotli (the version mitmproxy pins) has no output limit, so it is fed in small pieces: the
# most one piece can unpack to is bounded by the format (measured: ≤ 40 MB per 64 bytes of
# zeros), and 32-byte pieces cost ≈ 3× a whole-buffer decode.
_BROTLI_PIECE = 32


class BodyTooLarge(ValueError):
    """The body unpacks to more than the limit."""


def decoded_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`raw` decoded as its Content-Encoding says (a list is undone last first), at most
    `limit` bytes. Raises BodyTooLarge past that, ValueError where it does not decode."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    body = raw
    for coding in reversed(codings):
        body = _decode(body, coding, limit)
    if len(body) > limit:
        raise BodyTooLarge(f"body of {len(body)} bytes, over {limit}")
    return body


def _decode(data: bytes, coding: str, limit: int) -> bytes:
    try:
        if coding in ("identity", "none"):
            return data
        if coding in ("gzip", "x-gzip"):
            return _zlib(data, zlib.MAX_WBITS | 16, limit)
        if coding == "deflate":
            try:
                return _zlib(data, zlib.MAX_WBITS, limit)
            except zlib.error:  # raw deflate without the zlib header, as some servers send
                return _zlib(data, -zlib.MAX_WBITS, limit)
        if coding == "br":
            return _brotli(data, limit)
        if coding == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
            out = reader.read(limit + 1)
            if len(out) > limit:
                raise BodyTooLarge(f"zstd body unpacks to over {limit} bytes")
            return out
    except BodyTooLarge:
        raise
    except (zlib.error, brotli.error, zstandard.ZstdError) as exc:
        raise ValueError(f"{coding}: {exc}") from exc
    raise ValueError(f"unknown content-encoding {coding!r}")


def _zlib(data: bytes, wbits: int, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while data:  # gzip may hold several members one after another
        inflater = zlib.decompressobj(wbits)
        part = inflater.decompress(data, limit + 1 - size)
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(f"body unpacks to over {limit} bytes")
        parts += [part, inflater.flush()]
        data = inflater.unused_data if inflater.eof else b""
    return b"".join(parts)


def _brotli(data: bytes, limit: int) -> bytes:
    decompressor, parts, size = brotli.Decompressor(), [], 0
    for start in range(0, len(data), _BROTLI_PIECE):
        part = decompressor.process(data[start : start + _BROTLI_PIECE])
        size += len(part)
        if size > limit:
            raise BodyTooLarge(f"br body unpacks to over {limit} bytes")
        parts.append(part)
    return b"".join(parts)
