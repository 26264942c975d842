"""The judged copy of each progressive video a viewer plays, so that the player's ranged
requests (seeking; Safari asks for every part of a file by range) are answered from the bytes
that were judged, not passed through from the origin unseen.

Used from mitmproxy's event loop only; bounded in bytes, and each copy lives `ttl_s` seconds.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class JudgedCopy:
    body: bytes
    content_type: str
    rewritten: bool  # calmed or a placeholder: not the origin's bytes
    debug_header: str | None = None
    # What it was judged under (the viewer's profile): a copy judged under other rules (a
    # schedule window that has begun, an edited policy) is not served.
    judged_under: Hashable = None


class JudgedCopies:
    def __init__(
        self,
        max_bytes: int,
        ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        max_sizes: int = 4096,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_sizes = max_sizes
        self._copies: OrderedDict[tuple[str, str], tuple[float, JudgedCopy]] = OrderedDict()
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._fragmented: OrderedDict[str, None] = OrderedDict()
        self.held_bytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, viewer: str, url: str, judged_under: Hashable = None) -> JudgedCopy | None:
        key = (viewer, url)
        found = self._copies.get(key)
        if found is None:
            return None
        if self.clock() - found[0] > self.ttl_s or found[1].judged_under != judged_under:
            self._drop(key)
            return None
        self._copies.move_to_end(key)
        return found[1]

    def put(self, viewer: str, url: str, copy: JudgedCopy) -> bool:
        """Keep `copy` (evicting the least recently used); False when it is too big to keep."""
        if len(copy.body) > self.max_bytes:
            return False
        key = (viewer, url)
        if key in self._copies:
            self._drop(key)
        while self._copies and self.held_bytes + len(copy.body) > self.max_bytes:
            self._drop(next(iter(self._copies)))
        self._copies[key] = (self.clock(), copy)
        self.held_bytes += len(copy.body)
        self.note_size(url, len(copy.body))
        return True

    def state(self) -> dict[str, float]:
        """For the status report: how many copies, and how much of the bound they hold."""
        mib = 1024 * 1024
        return {"files": len(self._copies), "held_mb": round(self.held_bytes / mib, 1),
                "max_mb": round(self.max_bytes / mib, 1)}  # fmt: skip

    def fits(self, size: int) -> bool:
        return self.enabled and size <= self.max_bytes

    def note_size(self, url: str, size: int) -> None:
        """The origin's full length of `url` (from a 206's Content-Range or a 200)."""
        self._sizes[url] = size
        self._sizes.move_to_end(url)
        while len(self._sizes) > self.max_sizes:
            self._sizes.popitem(last=False)

    def size_of(self, url: str) -> int | None:
        return self._sizes.get(url)

    def note_fragmented(self, url: str) -> None:
        """`url` is one fragmented MP4 read in ranges (DASH on-demand): its ranges are judged
        one fragment at a time, at the origin's offsets, never from a whole-file copy."""
        self._fragmented[url] = None
        self._fragmented.move_to_end(url)
        while len(self._fragmented) > self.max_sizes:
            self._fragmented.popitem(last=False)

    def is_fragmented(self, url: str) -> bool:
        return url in self._fragmented

    def _drop(self, key: tuple[str, str]) -> None:
        _, copy = self._copies.pop(key)
        self.held_bytes -= len(copy.body)
