"""The review page's secrets: the parents' password (scrypt-hashed) and the cookie secret,
both 0600 files under ``state_dir/review/``, and the LAN-only address rule."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from pathlib import Path

# scrypt at n=2**14, r=8 costs ~16 MiB and ~50 ms: slow enough to make guessing expensive,
# fast enough for a router's CPU on every login.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD_LENGTH = 8


def review_dir(state_dir: Path) -> Path:
    return state_dir / "review"


def _write_private(path: Path, text: str) -> None:
    """Create the file 0600 from the start, so the secret is never world-readable."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class PasswordFile:
    """The one review password, stored as an scrypt hash with its salt and parameters."""

    def __init__(self, state_dir: Path) -> None:
        self.path = review_dir(state_dir) / "password.json"

    def is_set(self) -> bool:
        return self.path.exists()

    def set(self, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
        record = {"scheme": "scrypt", **_SCRYPT, "salt": salt.hex(), "hash": digest.hex()}
        _write_private(self.path, json.dumps(record))

    def _record(self) -> dict[str, object] | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def verify(self, password: str) -> bool:
        record = self._record()
        if record is None or record.get("scheme") != "scrypt":
            return False  # no password set: nobody gets in
        digest = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(str(record["salt"])),
            n=int(str(record["n"])),
            r=int(str(record["r"])),
            p=int(str(record["p"])),
            dklen=32,
        )
        return hmac.compare_digest(digest.hex(), str(record["hash"]))

    def fingerprint(self) -> str:
        """Changes with the password, so setting a new one logs every session out."""
        record = self._record()
        return str(record["hash"])[:16] if record else ""


def cookie_secret(state_dir: Path) -> str:
    """The secure-cookie signing key, generated on first use and kept 0600."""
    path = review_dir(state_dir) / "cookie-secret"
    try:
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) >= 32:
            return secret
    except OSError:
        pass
    secret = secrets.token_hex(32)
    _write_private(path, secret)
    return secret


# Explicit, not ipaddress's is_private, which also counts documentation, benchmark and
# carrier-grade NAT ranges (the proxy's start-up checks use the same list).
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def is_lan_address(host: str) -> bool:
    """Loopback, RFC 1918 / ULA private or link-local. Not a wildcard (0.0.0.0 may include a
    public interface) and not a name other than localhost (it could resolve anywhere)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_link_local:
        return True
    return any(address.version == n.version and address in n for n in _LOCAL_NETWORKS)
