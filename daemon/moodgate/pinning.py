"""Apps that pin their own certificate refuse moodgate's, and then simply stop working.

Once a device has shown that it trusts moodgate's CA (a completed handshake), a host whose
handshake it then refuses is taken for such an app: its next connections from that device pass
through untouched (uninspected, and said so in the log and `moodgate status`) instead of
failing. A device that refuses many hosts in a short time has most likely lost the CA; it
learns nothing more, so removing the CA is not a way around the filter.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Device:
    trusted_at: float | None = None
    hosts: OrderedDict[str, float] = field(default_factory=OrderedDict)  # host -> learnt at
    refusals: deque[float] = field(default_factory=deque)  # recent refused handshakes
    refuses_everything: bool = False


class PinnedHosts:
    def __init__(
        self,
        max_hosts: int = 64,
        max_refusals_per_hour: int = 12,
        devices: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_hosts = max_hosts
        self.max_refusals_per_hour = max_refusals_per_hour
        self.max_devices = devices
        self.clock = clock
        self._devices: OrderedDict[str, _Device] = OrderedDict()

    def trusted(self, device: str) -> None:
        """`device` completed a handshake with moodgate's certificate: its CA is installed."""
        self._device(device).trusted_at = self.clock()

    def refused(self, device: str, host: str) -> str:
        """`device` refused moodgate's certificate for `host`. What was made of it: "learnt",
        "known", "untrusted" (never trusted the CA), "full" or "refuses-everything"."""
        entry = self._device(device)
        if host in entry.hosts:
            return "known"
        if entry.trusted_at is None:
            return "untrusted"
        now = self.clock()
        entry.refusals.append(now)
        while entry.refusals and entry.refusals[0] < now - 3600:
            entry.refusals.popleft()
        if len(entry.refusals) > self.max_refusals_per_hour:
            entry.refuses_everything = True
        if entry.refuses_everything:
            return "refuses-everything"
        if len(entry.hosts) >= self.max_hosts:
            return "full"
        entry.hosts[host] = now
        return "learnt"

    def passes(self, device: str, host: str) -> bool:
        entry = self._devices.get(device)
        return entry is not None and not entry.refuses_everything and host in entry.hosts

    def state(self) -> dict[str, object]:
        """For the status report: counts for the summary line, and every learnt host by
        device for `moodgate status --json`, so parents can see what goes uninspected."""
        learnt = {k: list(d.hosts) for k, d in self._devices.items() if d.hosts}
        return {
            "hosts": sum(len(hosts) for hosts in learnt.values()),
            "devices": len(learnt),
            "refusing_devices": sorted(k for k, d in self._devices.items()
                                       if d.refuses_everything),
            "by_device": learnt,
        }  # fmt: skip

    def _device(self, device: str) -> _Device:
        entry = self._devices.pop(device, None) or _Device()
        self._devices[device] = entry
        while len(self._devices) > self.max_devices:
            self._devices.popitem(last=False)
        return entry
