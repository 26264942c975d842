"""A real `moodgate serve` as systemd would run it: a notify socket of our own, a watchdog,
`moodgate status`, `moodgate reload`, the journal lines, and a clean stop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moodgate.config import Settings
from moodgate.engine import Engine
from realnet import Origin, Proxy, Route

GOOD = "version: 1\ndefault:\n  preset: 8-12\n"
STRICT = "version: 1\ndefault:\n  preset: none\n  rules:\n    - {name: all, when: 'arousal > -1', action: block}\n"  # noqa: E501
BROKEN = "version: 1\ndefault:\n  preset: no-such-preset\n"


class NotifySocket:
    """What systemd's end of $NOTIFY_SOCKET sees."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.messages: list[str] = []

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if text in message:
                    self.messages.remove(message)
                    return message
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        raise AssertionError(f"no {text!r} notification; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "moodgate.cli", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_serve_under_a_service_manager(tmp_path: Path, media: dict[str, bytes]) -> None:
    state = tmp_path / "state"
    policy = tmp_path / "policy.yaml"
    policy.write_text(GOOD)
    notify = NotifySocket(tmp_path / "notify")
    routes = {"/calm.jpg": Route(media["calm.jpg"], "image/jpeg")}
    proxy = Proxy(
        state, policy,
        extra=["--set", f"moodgate_model_dir={tmp_path / 'no-model-here'}"],
        env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"},
    )  # fmt: skip
    try:
        with Origin(routes) as origin, proxy:
            ready = notify.wait_for("READY=1")
            # READY means listening: the port answers at once.
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
            assert "STATUS=filtering on 127.0.0.1" in ready and "MAINPID=" in ready
            notify.wait_for("WATCHDOG=1", timeout=5)
            notify.wait_for("WATCHDOG=1", timeout=5)

            got = proxy.fetch(origin.url("/calm.jpg?token=SECRET-TOKEN&user=mia"))
            assert got.status == 200 and got.body == media["calm.jpg"]

            # status: the model was missing, so "auto" fell back and says so.
            deadline = time.monotonic() + 15
            while True:
                result = cli("status", "--json", "--state-dir", str(state))
                report = json.loads(result.stdout)
                if report.get("decisions_last_hour") == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert report["running"] is True, report
            assert report["listen"] == [f"127.0.0.1:{proxy.port}"]
            assert report["scorer"] == "heuristic" and report["scorer_fallback"] is True
            assert report["policy"] == str(policy) and report["policy_ok"] is True
            assert report["decisions_last_hour"] == 1 and report["db_error"] is None
            assert result.returncode == 1  # degraded: running on the fallback scorer
            human = cli("status", "--state-dir", str(state)).stdout
            assert "FALLBACK" in human and f"127.0.0.1:{proxy.port}" in human

            # reload: a valid change is applied at once, an invalid one is refused.
            policy.write_text(STRICT)
            assert cli("reload", "--state-dir", str(state)).returncode == 0
            notify.wait_for("RELOADING=1", timeout=10)
            assert "applied" in notify.wait_for("STATUS=policy reload", timeout=10)
            policy.write_text(BROKEN)
            assert cli("reload", "--state-dir", str(state)).returncode == 0
            assert "kept-last-good" in notify.wait_for("STATUS=policy reload", timeout=10)
            report = json.loads(cli("status", "--json", "--state-dir", str(state)).stdout)
            assert report["policy_ok"] is False and "no-such-preset" in report["policy_error"]
        log = proxy.log()
        notify.wait_for("STOPPING=1", timeout=10)
    finally:
        notify.close()
    assert proxy.process is not None and proxy.process.returncode == 0
    # The journal: one key=value line per decision, no query string, no secrets.
    decision = next(line for line in log.splitlines() if "decision child=" in line)
    assert "action=pass" in decision and "host=127.0.0.1" in decision and "ms=" in decision
    assert "SECRET-TOKEN" not in log
    assert "model unavailable" in log  # the clear error for the missing model
    # Stopped: no pid file, no status file; `moodgate status` says so with exit code 3.
    assert not (state / "moodgate.pid").exists() and not (state / "status.json").exists()
    assert cli("status", "--state-dir", str(state)).returncode == 3


def test_reload_without_a_daemon_fails_clearly(tmp_path: Path) -> None:
    result = cli("reload", "--state-dir", str(tmp_path))
    assert result.returncode == 1 and "moodgate" in result.stderr


@pytest.mark.parametrize("model", ["missing", "corrupt"])
def test_model_missing_or_corrupt_falls_back_and_is_flagged(tmp_path: Path, model: str) -> None:
    model_dir = tmp_path / "models"
    if model == "corrupt":
        model_dir.mkdir()
        (model_dir / "manifest.json").write_text("{ not json")
        (model_dir / "emotion_w100_fp32.onnx").write_bytes(b"\x00garbage" * 100)
    engine = Engine(Settings(state_dir=tmp_path / "state", model_dir=model_dir))
    try:
        assert engine.scorer.name == "heuristic" and engine.scorer_fallback is True
    finally:
        engine.stop()
    explicit = Engine(Settings(state_dir=tmp_path / "state2", scorer="heuristic"))
    try:
        assert explicit.scorer_fallback is False  # asked for, not fallen back to
    finally:
        explicit.stop()
