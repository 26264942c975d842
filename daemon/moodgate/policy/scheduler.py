"""Time-driven jobs: log schedule-window switches, and run nightly maintenance.

The window in force is always computed from the clock at decision time (Policy.profile_for),
so these jobs only *announce* switches; a missed or late job can never leave a child on the
wrong rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from moodgate.policy.model import Policy
from moodgate.policy.schedule import DAY_NAMES

log = logging.getLogger(__name__)

_WINDOW_PREFIX = "window:"
_NIGHTLY_PREFIX = "nightly:"


def _cron_days(days: frozenset[int]) -> str:
    return ",".join(DAY_NAMES[d] for d in sorted(days))


class PolicyScheduler:
    """Wraps an apscheduler BackgroundScheduler; one per proxy process."""

    def __init__(
        self,
        timezone: tzinfo | None = None,
        on_switch: Callable[[str, str, str], None] | None = None,
    ) -> None:
        # on_switch(child, window, edge) with edge "start" or "end", for a UI or metrics.
        self._on_switch = on_switch
        options: dict[str, Any] = {"job_defaults": {"coalesce": True, "misfire_grace_time": 3600}}
        if timezone is not None:
            options["timezone"] = timezone
        self._scheduler = BackgroundScheduler(**options)

    @property
    def scheduler(self) -> BackgroundScheduler:
        return self._scheduler

    def start(self) -> None:
        if not self._scheduler.running:
            self._scheduler.start()

    def shutdown(self, wait: bool = False) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    def add_nightly(
        self, name: str, func: Callable[[], Any], hour: int = 3, minute: int = 0
    ) -> None:
        """Run ``func`` every night at hour:minute local time (retention purge, refits)."""
        self._scheduler.add_job(
            func,
            CronTrigger(hour=hour, minute=minute, timezone=self._scheduler.timezone),
            id=_NIGHTLY_PREFIX + name,
            name=name,
            replace_existing=True,
            max_instances=1,
        )

    def remove_nightly(self, name: str) -> None:
        self._scheduler.remove_job(_NIGHTLY_PREFIX + name)

    def job_ids(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs()]

    def set_policy(self, policy: Policy) -> None:
        """Replace the window-boundary jobs with those of ``policy`` (call on every reload)."""
        for job in self._scheduler.get_jobs():
            if job.id.startswith(_WINDOW_PREFIX):
                job.remove()
        for child in policy.profile_names():
            for window in policy.windows(child):
                for index, span in enumerate(window.spans):
                    edges = (("start", span.days, span.start), ("end", span.end_days(), span.end))
                    for edge, days, minutes in edges:
                        minutes %= 24 * 60
                        trigger = CronTrigger(
                            day_of_week=_cron_days(days),
                            hour=minutes // 60,
                            minute=minutes % 60,
                            timezone=policy.timezone,
                        )
                        self._scheduler.add_job(
                            self._announce,
                            trigger,
                            args=(child, window.name, edge),
                            id=f"{_WINDOW_PREFIX}{child}:{window.name}:{index}:{edge}",
                            replace_existing=True,
                        )

    def _announce(self, child: str, window: str, edge: str) -> None:
        verb = "starts" if edge == "start" else "ends"
        log.info("schedule: %s's window '%s' %s", child, window, verb)
        if self._on_switch is not None:
            self._on_switch(child, window, edge)
