"""Apps that pin their own certificate refuse moodgate's, and then simply stop working.

Once a device has shown that it trusts moodgate's CA (a completed handshake), a host whose
handshake it then refuses is taken for such an app: its next connections from that device pass
through untouched (uninspected, and said so in the log and `moodgate status`) instead of
failing. A device that refuses many hosts in a short time has most likely lost the CA; it
learns nothing more, so removing the CA is not a way around the filter.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moodgate.status import write_atomic

log = logging.getLogger("moodgate")

PINNED_APPS_FILE = "pinned-apps.json"  # in the state directory


@dataclass
class _Device:
    trusted_at: float | None = None
    hosts: OrderedDict[str, float] = field(default_factory=OrderedDict)  # host -> learnt at
    refusals: deque[float] = field(default_factory=deque)  # recent refused handshakes
    refuses_everything: bool = False


class PinnedHosts:
    """Learnt hosts per device; with a `path`, what was learnt survives a restart (written
    on each change, which is rare: once per pinning app and device)."""

    def __init__(
        self,
        max_hosts: int = 64,
        max_refusals_per_hour: int = 12,
        devices: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        path: Path | None = None,
    ) -> None:
        self.max_hosts = max_hosts
        self.max_refusals_per_hour = max_refusals_per_hour
        self.max_devices = devices
        self.clock = clock
        self.path = path
        self._devices: OrderedDict[str, _Device] = OrderedDict()
        self._load()

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
        if entry.refuses_everything:
            return "refuses-everything"
        if len(entry.refusals) > self.max_refusals_per_hour:
            entry.refuses_everything = True
            self._save()  # once, as it flips: a CA-less device refuses every connection
            return "refuses-everything"
        if len(entry.hosts) >= self.max_hosts:
            return "full"
        entry.hosts[host] = now
        self._save()
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

    def _save(self) -> None:
        if self.path is None:
            return
        learnt = {k: {"hosts": list(d.hosts), "refuses_everything": d.refuses_everything}
                  for k, d in self._devices.items() if d.hosts or d.refuses_everything}  # fmt: skip
        try:
            write_atomic(self.path, {"version": 1, "devices": learnt})
        except OSError as exc:  # a full disk: what was learnt still holds until a restart
            log.warning("pinned apps not saved to %s: %s", self.path, exc)

    def _load(self) -> None:
        """Trust is not carried over: a device shows again that it has the CA before it
        learns anything new. A missing or unreadable file is an empty start."""
        if self.path is None or not self.path.exists():
            return
        try:
            devices = json.loads(self.path.read_text(encoding="utf-8"))["devices"]
            for name, saved in devices.items():
                entry = self._device(str(name))
                entry.hosts.update((str(h), self.clock()) for h in saved["hosts"][: self.max_hosts])
                entry.refuses_everything = bool(saved.get("refuses_everything"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("pinned apps in %s not read, starting empty: %s", self.path, exc)
            self._devices.clear()

    def _device(self, device: str) -> _Device:
        entry = self._devices.pop(device, None) or _Device()
        self._devices[device] = entry
        while len(self._devices) > self.max_devices:
            self._devices.popitem(last=False)
        return entry
