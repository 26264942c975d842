"""Which profile a client belongs to: by proxy-auth user, MAC, exact IP, then CIDR range.

MAC addresses are not visible to a proxy, so they are looked up in the kernel's neighbour
table (``/proc/net/arp`` or ``ip neigh`` output) by client IP, cached for a few seconds because
a proxy asks per request and leases rarely change.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAC = re.compile(r"^[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}$", re.IGNORECASE)
_NULL_MAC = "00:00:00:00:00:00"
DEFAULT_NEIGHBOURS = Path("/proc/net/arp")


def normalise_mac(text: str) -> str | None:
    candidate = text.strip()
    if not _MAC.match(candidate):
        return None
    return candidate.lower().replace("-", ":")


def normalise_address(text: str) -> IPAddress | None:
    """Client addresses as a proxy reports them: brackets, zone ids, IPv4-mapped IPv6."""
    candidate = text.strip().strip("[]").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class DeviceSpec:
    """One entry of a ``devices`` list, already validated."""

    kind: str  # "ip" | "cidr" | "mac"
    value: str  # normalised text
    network: IPNetwork | None = None


def parse_device(text: str) -> DeviceSpec:
    """Raises ValueError with the message a parent sees."""
    mac = normalise_mac(text)
    if mac is not None:
        return DeviceSpec("mac", mac)
    stripped = text.strip()
    if "/" in stripped:
        try:
            network = ipaddress.ip_network(stripped, strict=False)
        except ValueError:
            pass
        else:
            return DeviceSpec("cidr", str(network), network)
    else:
        address = normalise_address(stripped)
        if address is not None:
            return DeviceSpec("ip", str(address))
    raise ValueError(f"'{stripped}' is not an IP address, CIDR or MAC")


def parse_neighbour_lines(text: str) -> dict[str, str]:
    """IP→MAC from either ``/proc/net/arp`` or ``ip neigh`` output (format detected per line)."""
    table: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        address = normalise_address(fields[0])
        if address is None:  # the /proc/net/arp header, or junk
            continue
        mac: str | None = None
        if "lladdr" in fields:  # ip neigh: "IP dev IF lladdr MAC STATE"
            index = fields.index("lladdr") + 1
            mac = normalise_mac(fields[index]) if index < len(fields) else None
            if fields[-1] in ("FAILED", "INCOMPLETE"):
                mac = None
        elif len(fields) >= 4:  # /proc/net/arp: "IP HWtype Flags MAC Mask Device"
            complete = fields[2] != "0x0"
            mac = normalise_mac(fields[3]) if complete else None
        if mac is not None and mac != _NULL_MAC:
            table[str(address)] = mac
    return table


def _read_system_table() -> str:
    """/proc/net/arp has IPv4 only; ``ip neigh`` adds IPv6 neighbours when available."""
    text = DEFAULT_NEIGHBOURS.read_text() if DEFAULT_NEIGHBOURS.exists() else ""
    ip = shutil.which("ip")
    if ip:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text += (
                "\n"
                + subprocess.run(
                    [ip, "neigh", "show"], capture_output=True, text=True, timeout=1.0, check=False
                ).stdout
            )
    return text


class NeighbourTable:
    """IP→MAC with a short cache; ``path`` is a neighbour table file (tests use a fake one)."""

    def __init__(
        self,
        path: Path | None = None,
        ttl: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._table: dict[str, str] = {}
        self._read_at: float | None = None

    def _read(self) -> str:
        if self._path is None:
            return _read_system_table()
        try:
            return self._path.read_text()
        except OSError:
            return ""

    def mac_for(self, address: IPAddress) -> str | None:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._ttl:
                self._table = parse_neighbour_lines(self._read())
                self._read_at = now
            return self._table.get(str(address))


@dataclass
class DeviceDirectory:
    """Maps a client to a profile name. Built once per policy, read-only afterwards."""

    neighbours: NeighbourTable
    users: dict[str, str] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)
    networks: list[tuple[IPNetwork, str]] = field(default_factory=list)

    def add(self, spec: DeviceSpec, owner: str) -> str | None:
        """Register; returns the profile that already claims the same entry, if any."""
        if spec.kind == "cidr":
            assert spec.network is not None
            for network, other in self.networks:
                if network == spec.network:
                    return other
            self.networks.append((spec.network, owner))
            # Narrower ranges first, so a /32 inside a /24 wins.
            self.networks.sort(key=lambda item: -item[0].prefixlen)
            return None
        book = self.macs if spec.kind == "mac" else self.ips
        existing = book.setdefault(spec.value, owner)
        return existing if existing != owner else None

    def add_user(self, user: str, owner: str) -> str | None:
        other = self.users.setdefault(user, owner)
        return other if other != owner else None

    def claims(self, owner: str) -> tuple[list[str], list[str]]:
        """(devices, users) registered for `owner`: MACs, IPs, then ranges; then users."""
        devices = [mac for mac, who in self.macs.items() if who == owner]
        devices += [ip for ip, who in self.ips.items() if who == owner]
        devices += [str(net) for net, who in self.networks if who == owner]
        return devices, [user for user, who in self.users.items() if who == owner]

    def owner(self, address_text: str, user: str | None) -> str | None:
        # A proxy-auth name is an explicit identity, so it beats anything about the device.
        if user and user in self.users:
            return self.users[user]
        address = normalise_address(address_text)
        if address is None:
            return None
        if self.macs:
            mac = self.neighbours.mac_for(address)
            if mac is not None and mac in self.macs:
                return self.macs[mac]
        if str(address) in self.ips:
            return self.ips[str(address)]
        for network, owner in self.networks:
            if address.version == network.version and address in network:
                return owner
        return None
