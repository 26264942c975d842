"""Start-up checks that keep the filter from becoming an open proxy or leaking its secrets.

Two concerns, one class each: where the proxy may listen (ListenPolicy) and who may read the
CA private key and the decision database (SecretFiles). Both raise SecurityError with one
line that says what is wrong and how to fix it; `moodgate serve` prints it and exits.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# mitmproxy's CA: the first file holds the private key; the others are public certificates.
CA_KEY_FILES = ("mitmproxy-ca.pem", "mitmproxy-ca.p12")
SECRET_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


class SecurityError(RuntimeError):
    """A start-up check failed; the message is one line, fit for the journal."""


# Explicit, not ipaddress's is_private: that also counts documentation and benchmark ranges,
# and 100.64/10 (carrier-grade NAT) is shared with the ISP's other customers.
LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def is_local(address: IPAddress) -> bool:
    """Loopback, RFC 1918 / ULA private, or link-local: reachable only from the home network."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_local(address.ipv4_mapped)
    if address.is_loopback or address.is_link_local:
        return True
    return any(address.version == n.version and address in n for n in LOCAL_NETWORKS)


def host_addresses(proc: Path = Path("/proc/net")) -> list[IPAddress]:
    """Every address configured on this box's interfaces, from /proc (no netlink needed,
    so RestrictAddressFamilies= can leave AF_NETLINK out)."""
    found: set[IPAddress] = set()
    try:
        lines = (proc / "fib_trie").read_text(encoding="ascii").splitlines()
    except OSError:
        lines = []
    # A local address appears as "|-- a.b.c.d" followed by "/32 host LOCAL".
    for previous, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line and "|--" in previous:
            found.add(ipaddress.IPv4Address(previous.split("|--")[1].strip()))
    try:
        for line in (proc / "if_inet6").read_text(encoding="ascii").splitlines():
            raw = line.split()[0]
            found.add(ipaddress.IPv6Address(":".join(raw[i : i + 4] for i in range(0, 32, 4))))
    except (OSError, IndexError, ValueError):
        pass
    return sorted(found, key=lambda a: (a.version, int(a)))


def resolve(host: str) -> list[IPAddress]:
    """The addresses a listen host stands for ("" and "*" mean all interfaces)."""
    if host in ("", "*"):
        return [ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv6Address("::")]
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise SecurityError(f"cannot resolve the listen address {host!r}: {exc}") from exc
    return sorted({ipaddress.ip_address(info[4][0]) for info in infos}, key=str)


class ListenPolicy:
    """Refuses a public listen address unless allow_public is set with real proxy auth."""

    def __init__(
        self,
        allow_public: bool = False,
        proxyauth: str | None = None,
        interfaces: Callable[[], Iterable[IPAddress]] = host_addresses,
    ) -> None:
        self.allow_public = allow_public
        self.proxyauth = proxyauth or ""
        self.interfaces = interfaces

    def public_addresses(self, host: str) -> list[IPAddress]:
        """The public addresses that listening on `host` would expose."""
        exposed: list[IPAddress] = []
        for address in resolve(host):
            if address.is_unspecified:
                # 0.0.0.0 / :: is as public as the most public address of the box.
                exposed += [
                    a for a in self.interfaces()
                    if a.version == address.version and not is_local(a)
                ]  # fmt: skip
            elif not is_local(address):
                exposed.append(address)
        return exposed

    def check(self, host: str) -> None:
        public = self.public_addresses(host)
        if not public:
            return
        shown = ", ".join(str(a) for a in public[:3])
        if not self.allow_public:
            raise SecurityError(
                f"refusing to listen on {host or '*'}: it exposes the public address {shown}; "
                "listen on a LAN address, or set allow_public: true with proxy authentication"
            )
        if self.proxyauth in ("", "any"):
            raise SecurityError(
                f"allow_public is set but proxy authentication is off ({shown} is public): "
                "set proxyauth to @/etc/moodgate/htpasswd (or user:password)"
            )


class SecretFiles:
    """The CA private key and the database: created owner-only and checked so at start."""

    def __init__(self, state_dir: Path, database: Path) -> None:
        self.state_dir = state_dir
        self.confdir = state_dir / "mitmproxy"
        self.database = database

    def prepare(self) -> None:
        """Create the directories owner-only; files created later inherit the umask."""
        for directory in (self.state_dir, self.confdir):
            if not directory.exists():
                directory.mkdir(parents=True, mode=PRIVATE_DIR_MODE)
        if self.confdir.stat().st_uid == os.geteuid():
            self.confdir.chmod(PRIVATE_DIR_MODE)

    def secrets(self) -> list[Path]:
        paths = [self.confdir / name for name in CA_KEY_FILES]
        paths += [self.database, self.database.with_name(self.database.name + "-wal")]
        return [p for p in paths if p.exists()]

    def check(self) -> None:
        """Raise SecurityError if a secret is readable by anyone but the service user."""
        for path in [self.confdir, *self.secrets()]:
            if not path.exists():
                continue
            info = path.stat()
            if info.st_uid != os.geteuid():
                raise SecurityError(
                    f"{path} belongs to uid {info.st_uid}, not to the service user "
                    f"(uid {os.geteuid()}): chown it, or run moodgate as its owner"
                )
            allowed = PRIVATE_DIR_MODE if stat.S_ISDIR(info.st_mode) else SECRET_MODE
            mode = stat.S_IMODE(info.st_mode)
            if mode & ~allowed & 0o777:
                raise SecurityError(
                    f"{path} is readable by others (mode {mode:04o}); "
                    f"run: chmod {allowed:o} {path}"
                )
