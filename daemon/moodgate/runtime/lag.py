"""How far mitmproxy's event loop runs behind its own timers.

On a small box the scoring workers and the event loop share the cores. When the workers take
them all, the loop itself falls behind: every request waits, also those that are never
scored. Slices and the worker queue cannot see that; a timer that comes due late can.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopLag:
    """A timer every `interval_s`; `lag_ms` is how late it fired, rising at once and falling
    by `decay` per tick, so a short stall is remembered for a few ticks, not forever."""

    def __init__(
        self,
        interval_s: float = 0.02,
        decay: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.decay = decay
        self.clock = clock
        self.lag_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    def observe(self, late_s: float) -> None:
        self.lag_ms = max(late_s * 1000.0, self.lag_ms * self.decay)

    def start(self) -> None:
        """From the event loop it watches; elsewhere (an engine built outside the proxy, as
        in tests and CLI tools) there is no loop to fall behind, and lag stays 0."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is None:
            self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            asked = self.clock()
            await asyncio.sleep(self.interval_s)
            self.observe(max(0.0, self.clock() - asked - self.interval_s))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
