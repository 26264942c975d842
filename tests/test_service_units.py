"""The service plumbing in isolation: sd_notify datagrams, the watchdog interval, the pid file,
key=value log lines, the listen-address and secret-file checks, the status report and
`moodgate install-service --root/--dry-run`."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import socket
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from moodgate.cli import main
from moodgate.install import ServiceInstaller, render_unit
from moodgate.security import ListenPolicy, SecretFiles, SecurityError, host_addresses, is_local
from moodgate.service import Notifier, PidFile, Watchdog, kv_line
from moodgate.status import STATUS_FILE, StatusReport, format_report, write_atomic

REPO = Path(__file__).resolve().parents[1]


def _listener(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock


def test_notifier_sends_datagrams(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _listener(path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.ready("listening on 127.0.0.1:8080\nand more")
        message = sock.recv(4096).decode()
        assert message.splitlines()[0] == "READY=1"
        assert "STATUS=listening on 127.0.0.1:8080 and more" in message  # one line
        assert f"MAINPID={os.getpid()}" in message
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.stopping()
        assert sock.recv(4096).startswith(b"STOPPING=1\n")


def test_notifier_abstract_socket() -> None:
    name = f"moodgate-test-{os.getpid()}"
    with _listener("\0" + name) as sock:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(4096) == b"STATUS=hello"


def test_notifier_is_a_no_op_outside_systemd(tmp_path: Path) -> None:
    assert not Notifier({}).enabled
    assert not Notifier({}).ready("x")
    # A manager that went away must not take the proxy down with it.
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).watchdog()


def test_watchdog_interval_is_half_of_watchdog_sec() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None
    mine = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == 2.0
    assert Notifier({**mine, "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_watchdog_skips_pings_when_unhealthy(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    healthy = [True]

    async def run() -> int:
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
        dog = Watchdog(notifier, healthy=lambda: healthy[0])
        dog.start()
        await asyncio.sleep(0.32)
        healthy[0] = False
        pings = dog.pings
        await asyncio.sleep(0.3)
        assert dog.pings == pings
        dog.stop()
        return pings

    with _listener(path):
        assert asyncio.run(run()) >= 3


def test_pid_file(tmp_path: Path) -> None:
    pid_file = PidFile(tmp_path)
    assert pid_file.read() is None
    pid_file.write()
    assert pid_file.read() == os.getpid()
    pid_file.remove()
    assert not pid_file.path.exists()


def test_kv_line_is_one_parseable_line() -> None:
    line = kv_line("decision", child="mia", action="calm", rule="mia/intense", host="a.example",
                   ms=12.345, note='two words "quoted"\nnewline', skipped=None)
    assert "\n" not in line
    assert line.startswith("decision child=mia action=calm rule=mia/intense host=a.example ms=12.3")
    assert 'note="two words \\"quoted\\" newline"' in line
    assert "skipped" not in line


# -- where the proxy may listen ---------------------------------------------------------------
PUBLIC_BOX = [ipaddress.ip_address(a) for a in ("127.0.0.1", "192.168.1.2", "203.0.113.9",
                                                "::1", "fe80::1", "2001:db8::9")]
LAN_BOX = [ipaddress.ip_address(a) for a in ("127.0.0.1", "10.0.0.2", "::1", "fd00::2")]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "192.168.1.2", "10.1.2.3",
                                  "172.16.0.1", "169.254.1.1", "fe80::1", "fd12:3456::1"])
def test_local_addresses_are_allowed(host: str) -> None:
    ListenPolicy(interfaces=lambda: PUBLIC_BOX).check(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "203.0.113.9", "2001:4860::8888"])
def test_public_address_is_refused_with_one_line(host: str) -> None:
    with pytest.raises(SecurityError) as error:
        ListenPolicy(interfaces=lambda: LAN_BOX).check(host)
    assert "\n" not in str(error.value) and "allow_public" in str(error.value)


def test_wildcard_depends_on_the_box() -> None:
    ListenPolicy(interfaces=lambda: LAN_BOX).check("0.0.0.0")
    ListenPolicy(interfaces=lambda: LAN_BOX).check("::")
    with pytest.raises(SecurityError, match=r"203\.0\.113\.9"):
        ListenPolicy(interfaces=lambda: PUBLIC_BOX).check("0.0.0.0")
    with pytest.raises(SecurityError, match="2001:db8::9"):
        ListenPolicy(interfaces=lambda: PUBLIC_BOX).check("::")


def test_allow_public_needs_real_proxy_auth() -> None:
    for auth in (None, "", "any"):
        with pytest.raises(SecurityError, match="proxy authentication"):
            ListenPolicy(True, auth, interfaces=lambda: PUBLIC_BOX).check("0.0.0.0")
    ListenPolicy(True, "@/etc/moodgate/htpasswd", interfaces=lambda: PUBLIC_BOX).check("0.0.0.0")


def test_host_addresses_reads_proc(tmp_path: Path) -> None:
    (tmp_path / "fib_trie").write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 192.168.1.2\n        /32 host LOCAL\n"
        "     |-- 192.168.1.255\n        /32 link BROADCAST\n"
    )
    (tmp_path / "if_inet6").write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "20010db8000000000000000000000009 02 40 00 00     eth0\n"
    )
    found = host_addresses(tmp_path)
    assert ipaddress.ip_address("192.168.1.2") in found
    assert ipaddress.ip_address("192.168.1.255") not in found
    assert ipaddress.ip_address("2001:db8::9") in found
    assert host_addresses(Path("/proc/net"))  # this box has at least loopback
    assert is_local(ipaddress.ip_address("::ffff:192.168.1.2"))


# -- secrets -----------------------------------------------------------------------------------
def test_secret_files_created_private_and_checked(tmp_path: Path) -> None:
    state = tmp_path / "state"
    secrets = SecretFiles(state, state / "decisions.sqlite")
    secrets.prepare()
    assert stat.S_IMODE(secrets.confdir.stat().st_mode) == 0o700
    key = secrets.confdir / "mitmproxy-ca.pem"
    key.write_text("KEY")
    key.chmod(0o600)
    secrets.check()
    key.chmod(0o644)
    with pytest.raises(SecurityError, match=r"chmod 600 .*mitmproxy-ca.pem"):
        secrets.check()
    key.chmod(0o600)
    (state / "decisions.sqlite").write_bytes(b"")
    (state / "decisions.sqlite").chmod(0o640)
    with pytest.raises(SecurityError, match=r"decisions\.sqlite is readable by others"):
        secrets.check()


def test_serve_refuses_public_address_and_readable_key(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--listen", "8.8.8.8:8080",
                                  "--state-dir", str(tmp_path / "a")])
    assert result.exit_code == 1
    assert "refusing to listen on 8.8.8.8" in result.output
    assert len(result.output.strip().splitlines()) == 1
    state = tmp_path / "b"
    (state / "mitmproxy").mkdir(parents=True)
    (state / "mitmproxy" / "mitmproxy-ca.pem").write_text("KEY")
    (state / "mitmproxy" / "mitmproxy-ca.pem").chmod(0o644)
    result = runner.invoke(main, ["serve", "--listen", "127.0.0.1:1", "--state-dir", str(state)])
    assert result.exit_code == 1 and "is readable by others" in result.output


# -- status --------------------------------------------------------------------------------------
def test_status_report_reads_snapshot_and_flags_staleness(tmp_path: Path) -> None:
    report = StatusReport(tmp_path, tmp_path / "decisions.sqlite").collect()
    assert report["running"] is False and report["decisions_last_hour"] == 0
    assert "not running" in format_report(report)[0]
    snapshot = {
        "pid": os.getpid(), "started_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00", "listen": ["127.0.0.1:8080"],
        "mode": "regular", "scorer": "heuristic", "model_width": None, "precision": None,
        "scorer_requested": "auto", "scorer_fallback": True, "scorer_error": "no model",
        "policy": "/etc/moodgate/policy.yaml", "policy_ok": True, "policy_error": None,
        "policy_loaded_at": None, "in_flight": 0, "db_backlog": 3, "db_dropped": 0,
        "db_error": "OperationalError: database is locked", "decisions": 3, "version": 1,
        "extra": {"video_copies": {"files": 2, "held_mb": 7.5, "max_mb": 128.0},
                  "pinned_apps": {"hosts": 2, "devices": 1, "refusing_devices": ["10.0.0.9"]}},
    }  # fmt: skip
    write_atomic(tmp_path / STATUS_FILE, snapshot)
    report = StatusReport(tmp_path, tmp_path / "decisions.sqlite").collect()
    assert report["running"] is False  # a years-old snapshot: the daemon is gone
    assert report["healthy"] is False
    text = "\n".join(format_report(report))
    assert "NOT RUNNING" in text and "FALLBACK" in text and "database is locked" in text
    assert "video copies: 2 files, 7.5 of 128 MiB held" in text
    assert "pinned apps: 2 hosts passed through uninspected on 1 devices; refusing moodgate's" \
        " certificate everywhere (CA removed, or Android apps that ignore user CAs): 10.0.0.9" \
        in text


# -- install-service -----------------------------------------------------------------------------
def test_render_unit_points_at_this_moodgate() -> None:
    unit = render_unit((REPO / "systemd" / "moodgate.service").read_text(), Path("/opt/m/bin/x"))
    assert "ExecStart=/opt/m/bin/x serve --config /etc/moodgate/moodgate.yaml" in unit
    assert sum(line.startswith("ExecStart=") for line in unit.splitlines()) == 1


def test_install_service_dry_run_changes_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["install-service", "--root", str(tmp_path), "--dry-run",
                                       "--executable", "/opt/moodgate/.venv/bin/moodgate"])
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output and "/etc/systemd/system/moodgate.service" in result.output
    assert "systemctl enable --now moodgate" in result.output
    assert list(tmp_path.iterdir()) == []


def test_install_service_into_a_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\n")
    exe = "/opt/moodgate/.venv/bin/moodgate"
    # useradd --root needs root; elsewhere the rest of the installation is still checked.
    users = os.geteuid() == 0 and shutil.which("useradd") is not None
    installer = ServiceInstaller(tmp_path, executable=Path(exe), listen="192.168.1.2:8080",
                                 create_user=users)
    lines = installer.install()
    unit = (tmp_path / "etc/systemd/system/moodgate.service").read_text()
    assert f"ExecStart={exe} serve" in unit and "Type=notify" in unit
    config = (tmp_path / "etc/moodgate/moodgate.yaml").read_text()
    assert "listen_host: 192.168.1.2" in config and "policy: /etc/moodgate/policy.yaml" in config
    assert "version: 1" in (tmp_path / "etc/moodgate/policy.yaml").read_text()
    assert (tmp_path / "etc/moodgate/examples/single-child.yaml").exists()
    if users:
        assert "moodgate:" in (tmp_path / "etc/passwd").read_text(), lines
    # A second run keeps the parent's edits and the user.
    (tmp_path / "etc/moodgate/policy.yaml").write_text("# mine\nversion: 1\n")
    again = ServiceInstaller(tmp_path, executable=Path(exe), create_user=users).install()
    assert (tmp_path / "etc/moodgate/policy.yaml").read_text() == "# mine\nversion: 1\n"
    assert not users or any(line.startswith("keep   user moodgate") for line in again)


def test_install_service_refuses_a_moodgate_under_home(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["install-service", "--root", str(tmp_path), "--dry-run",
                                       "--executable", "/home/me/moodgate/.venv/bin/moodgate"])
    assert result.exit_code == 1 and "ProtectHome" in result.output


def test_status_json_of_a_stopped_daemon(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--json", "--state-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert json.loads(result.output)["running"] is False


def test_allow_public_in_config_still_needs_proxy_auth(tmp_path: Path) -> None:
    config = tmp_path / "moodgate.yaml"
    config.write_text("listen_host: 8.8.8.8\nallow_public: true\n")
    runner = CliRunner()
    args = ["serve", "--config", str(config), "--state-dir", str(tmp_path / "s")]
    result = runner.invoke(main, [*args, "--set", "proxyauth=any"])
    assert result.exit_code == 1 and "proxy authentication is off" in result.output
    # "any" in the config file is no authentication either.
    config.write_text("listen_host: 8.8.8.8\nallow_public: true\nproxyauth: any\n")
    result = runner.invoke(main, [*args])
    assert result.exit_code == 1 and "proxy authentication is off" in result.output


def test_reload_refuses_a_stale_pid_file(tmp_path: Path) -> None:
    (tmp_path / "moodgate.pid").write_text("1\n")  # pid 1 is not moodgate
    result = CliRunner().invoke(main, ["reload", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and "not a running moodgate" in result.output
