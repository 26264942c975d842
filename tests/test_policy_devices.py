"""Which profile a client gets: proxy user, MAC (fake neighbour table), exact IP, CIDR."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from textwrap import dedent

import pytest

from moodgate.policy import Client, PolicyError, parse_policy
from moodgate.policy.devices import NeighbourTable, normalise_address, parse_neighbour_lines

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

PROC_NET_ARP = """\
IP address       HW type     Flags       HW address            Mask     Device
192.168.1.77     0x1         0x2         3C:22:FB:12:34:56     *        br-lan
192.168.1.78     0x1         0x0         00:00:00:00:00:00     *        br-lan
192.168.1.79     0x1         0x2         a4:83:e7:00:00:01     *        br-lan
"""

IP_NEIGH = """\
fe80::1c2a:3bff:fe4d:5e6f dev br-lan lladdr 1e:2a:3b:4d:5e:6f REACHABLE
192.168.1.90 dev br-lan lladdr 0a:1b:2c:3d:4e:5f STALE
192.168.1.91 dev br-lan  FAILED
"""

POLICY = """\
timezone: UTC
parents:
  devices: [a4-83-E7-00-00-01]
  users: [mum]
children:
  mia:
    devices:
      - 3c:22:fb:12:34:56
      - 192.168.1.23
      - 1e:2a:3b:4d:5e:6f
    users: [mia]
  leo:
    devices:
      - 192.168.1.32/27
      - 192.168.1.40
      - 0a:1b:2c:3d:4e:5f
      - fd00::/64
  tablet:
    devices: [192.168.1.32/30]
"""


@pytest.fixture
def neighbours(tmp_path: Path) -> Path:
    path = tmp_path / "arp"
    path.write_text(PROC_NET_ARP + IP_NEIGH)
    return path


@pytest.mark.parametrize(
    ("client", "owner"),
    [
        (Client("192.168.1.23"), "mia"),  # exact IP
        (Client("::ffff:192.168.1.23"), "mia"),  # IPv4-mapped IPv6
        (Client("192.168.1.77"), "mia"),  # MAC via /proc/net/arp, case-insensitive
        (Client("fe80::1c2a:3bff:fe4d:5e6f%br-lan"), "mia"),  # MAC via ip neigh, zone id
        (Client("192.168.1.90"), "leo"),  # MAC via ip neigh format
        (Client("192.168.1.79"), "parents"),  # MAC written with dashes
        (Client("192.168.1.45"), "leo"),  # CIDR /27
        (Client("192.168.1.33"), "tablet"),  # the narrower /30 wins over the /27
        (Client("192.168.1.40"), "leo"),  # exact IP inside the /27
        (Client("[fd00::42]"), "leo"),  # IPv6 CIDR
        (Client("192.168.1.78"), "default"),  # incomplete ARP entry: no MAC
        (Client("192.168.1.91"), "default"),  # FAILED neighbour
        (Client("10.0.0.1"), "default"),
        (Client("not an address"), "default"),
        (Client("10.0.0.1", user="mia"), "mia"),  # proxy-auth user
        (Client("192.168.1.33", user="mum"), "parents"),  # the login beats the device
        (Client("192.168.1.33", user="stranger"), "tablet"),
    ],
)
def test_device_matching(neighbours: Path, client: Client, owner: str) -> None:
    policy = parse_policy(POLICY, neighbours=neighbours)
    assert policy.profile_for(client, NOON).child == owner


def test_neighbour_table_is_cached_for_a_few_seconds(tmp_path: Path) -> None:
    path = tmp_path / "arp"
    path.write_text(PROC_NET_ARP)
    now = [100.0]
    table = NeighbourTable(path, ttl=3.0, clock=lambda: now[0])
    address = normalise_address("192.168.1.77")
    assert address is not None
    assert table.mac_for(address) == "3c:22:fb:12:34:56"
    path.write_text(PROC_NET_ARP.replace("3C:22:FB:12:34:56", "3C:22:FB:12:34:57"))
    now[0] += 2.0
    assert table.mac_for(address) == "3c:22:fb:12:34:56"  # still cached
    now[0] += 1.5
    assert table.mac_for(address) == "3c:22:fb:12:34:57"


def test_missing_neighbour_file_means_no_macs(tmp_path: Path) -> None:
    policy = parse_policy(POLICY, neighbours=tmp_path / "absent")
    assert policy.profile_for(Client("192.168.1.77"), NOON).child == "default"


def test_parse_neighbour_lines_both_formats() -> None:
    assert parse_neighbour_lines(PROC_NET_ARP + IP_NEIGH) == {
        "192.168.1.77": "3c:22:fb:12:34:56",
        "192.168.1.79": "a4:83:e7:00:00:01",
        "fe80::1c2a:3bff:fe4d:5e6f": "1e:2a:3b:4d:5e:6f",
        "192.168.1.90": "0a:1b:2c:3d:4e:5f",
    }


def test_same_cidr_or_user_in_two_profiles_is_an_error() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(
            dedent("""\
            children:
              a: {devices: [10.0.0.0/24], users: [kid]}
              b: {devices: [10.0.0.7/24], users: [kid]}
            """),
            "p.yaml",
        )
    assert [str(p) for p in info.value.problems] == [
        "p.yaml:3:17: children.b.devices[0]: '10.0.0.0/24' is already a device of a; "
        "a device can belong to only one profile",
        "p.yaml:3:39: children.b.users[0]: user 'kid' already belongs to a",
    ]
