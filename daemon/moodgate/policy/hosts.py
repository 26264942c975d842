"""Host lists (always pass / always block) with suffix matching."""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def normalise_host(text: str) -> str:
    """What a request's host looks like for matching: lower case, no port, no trailing dot."""
    host = text.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def parse_host_entry(text: str) -> str:
    """Validate a host written by a parent; raises ValueError in plain words."""
    raw = text.strip()
    host = raw.lower()
    if "://" in host:
        bare = host.split("://", 1)[1].split("/", 1)[0]
        raise ValueError(f"'{raw}' is a web address; write just the host name, e.g. '{bare}'")
    if "/" in host:
        raise ValueError(
            f"'{raw}' has a path; write just the host name, e.g. '{host.split('/', 1)[0]}'"
        )
    if host.startswith("*."):  # a suffix match already covers every subdomain
        host = host[2:]
    host = host.rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    labels = ascii_host.split(".")
    if not ascii_host or len(ascii_host) > 253 or not all(_LABEL.match(lb) for lb in labels):
        raise ValueError(f"'{raw}' is not a host name like 'school.example'")
    return ascii_host


def host_matches(host: str, entry: str) -> bool:
    """``school.example`` matches itself and ``www.school.example``, not ``myschool.example``."""
    return host == entry or host.endswith("." + entry)
