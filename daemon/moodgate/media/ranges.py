"""HTTP byte ranges (RFC 9110 §14) over a body held whole: players ask for video in pieces."""

from __future__ import annotations

from dataclasses import dataclass


class RangeNotSatisfiable(ValueError):
    """The range starts at or past the end of the body (answered 416)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in the header

    def of(self, body: bytes) -> bytes:
        return body[self.start : self.end + 1]

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


def parse_range(header: str, total: int) -> ByteRange | None:
    """The one range a `Range: bytes=…` header asks of a `total`-byte body.

    None for what is better answered with the whole body (200): other units, several ranges,
    malformed values. Raises RangeNotSatisfiable when the range lies wholly past the end.
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.strip().isdigit() or last.strip().isdigit()):
        return None
    first, last = first.strip(), last.strip()
    if not first:  # "-500": the final 500 bytes
        if not last.isdigit() or int(last) == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, total - int(last)), total - 1) if total else None
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = min(int(last), total - 1) if last else total - 1
    if last and int(last) < start:
        return None  # invalid: ignored, the whole body is sent
    if start >= total:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, end)


def _content_range(value: str | None) -> tuple[str, str]:
    """The first byte and the complete length of `Content-Range: bytes a-b/total`, as text
    ("" where missing)."""
    spec = (value or "").strip().partition(" ")[2]  # "a-b/total"
    first = spec.partition("-")[0].strip() if "-" in spec else ""
    total = spec.rpartition("/")[2].strip() if "/" in spec else ""
    return first, total


def content_range_total(value: str | None) -> int | None:
    """The complete length from a `Content-Range: bytes a-b/total` answer, if it gives one."""
    total = _content_range(value)[1]
    return int(total) if total.isdigit() else None


def moved_content_range(value: str | None, length: int) -> str:
    """`bytes a-b/total` for a body rewritten to `length` bytes: `bytes a-(a+length-1)/total`
    (the same start; the total as the origin gave it, `*` when it gave none)."""
    first, total = _content_range(value)
    start = int(first) if first.isdigit() else 0
    return f"bytes {start}-{start + length - 1}/{total or '*'}"
