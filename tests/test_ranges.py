"""Byte ranges cut from a judged copy, and the bounded store of judged copies."""

from __future__ import annotations

import pytest

from moodgate.judged_copies import JudgedCopies, JudgedCopy
from moodgate.media.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    content_range_total,
    moved_content_range,
    parse_range,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-", ByteRange(0, 999)),
        ("bytes=0-1", ByteRange(0, 1)),
        ("bytes = 10 - 19", ByteRange(10, 19)),
        ("bytes=990-5000", ByteRange(990, 999)),  # clipped to the end
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),
        ("bytes=0-1,5-9", None),  # several ranges: the whole body instead
        ("items=0-1", None),
        ("bytes=5-2", None),  # invalid: ignored
        ("bytes=abc", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header: str, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_range_cuts_and_describes_itself() -> None:
    body = bytes(range(10))
    part = parse_range("bytes=2-4", len(body))
    assert part is not None and part.of(body) == b"\x02\x03\x04"
    assert part.content_range(len(body)) == "bytes 2-4/10"
    assert content_range_total("bytes 0-1/12345") == 12345
    assert content_range_total("bytes 0-1/*") is None and content_range_total(None) is None
    # A fragment rewritten to another length keeps its start and the file's total.
    assert moved_content_range("bytes 800-1500/9000", 10) == "bytes 800-809/9000"
    assert moved_content_range(None, 5) == "bytes 0-4/*"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def copy(size: int) -> JudgedCopy:
    return JudgedCopy(b"x" * size, "video/mp4", rewritten=True)


def test_copies_are_per_viewer_bounded_and_expire() -> None:
    clock = Clock()
    copies = JudgedCopies(max_bytes=100, ttl_s=60, clock=clock)
    assert copies.put("a", "u1", copy(40)) and copies.put("b", "u1", copy(40))
    assert copies.get("a", "u1") is not None and copies.get("c", "u1") is None
    assert copies.put("a", "u2", copy(40))  # evicts the least recently used: b/u1
    assert copies.get("b", "u1") is None and copies.held_bytes == 80
    assert not copies.put("a", "u3", copy(101))  # never held: bigger than the whole store
    assert copies.size_of("u2") == 40 and copies.fits(100) and not copies.fits(101)
    clock.now = 61
    assert copies.get("a", "u1") is None and copies.held_bytes == 40
    assert not JudgedCopies(0).enabled and not JudgedCopies(0).fits(1)


def test_sizes_are_remembered_within_a_bound() -> None:
    copies = JudgedCopies(max_bytes=10, max_sizes=2)
    copies.note_size("u1", 5)
    copies.note_size("u2", 6)
    copies.note_size("u3", 7)
    assert (copies.size_of("u1"), copies.size_of("u2"), copies.size_of("u3")) == (None, 6, 7)


def test_a_copy_judged_under_other_rules_is_not_served() -> None:
    copies = JudgedCopies(max_bytes=100)
    copies.put("a", "u", JudgedCopy(b"x" * 10, "video/mp4", True, judged_under=("mia", "day")))
    assert copies.get("a", "u", ("mia", "day")) is not None
    assert copies.get("a", "u", ("mia", "bedtime")) is None  # a new window began
    assert copies.get("a", "u", ("mia", "day")) is None and copies.held_bytes == 0  # dropped
