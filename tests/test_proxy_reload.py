"""Hot reload through a real running proxy: a valid edit changes the next decision; an invalid
edit is rejected whole and the old rule stays in force. Also `mitmdump -s addon.py`."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from realnet import REPO, Origin, Proxy, Route, free_port

BLOCKING = """\
version: 1
default:
  preset: none
  rules:
    - name: lively
      when: "arousal > 0.2"
      action: block
"""
PASSING = BLOCKING.replace("action: block", "action: pass")
BROKEN = BLOCKING.replace("arousal > 0.2", "arousal >> 0.2")


def wait_for_action(proxy: Proxy, url: str, action: str, timeout: float = 6.0) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = proxy.fetch(url).header("x-moodgate") or ""
        if seen.startswith(action + ";"):
            return seen
        time.sleep(0.25)
    raise AssertionError(f"expected {action}, still {seen!r}")


def test_policy_edit_takes_effect_and_broken_edit_is_rejected(tmp_path, media) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BLOCKING)
    routes = {"/vivid.jpg": Route(media["vivid.jpg"], "image/jpeg")}
    with Origin(routes) as origin, Proxy(tmp_path / "state", policy,
                                         extra=["--scorer", "heuristic"]) as proxy:
        url = origin.url("/vivid.jpg")
        assert proxy.fetch(url).header("x-moodgate").startswith("block;")
        policy.write_text(PASSING)
        changed_at = time.monotonic()
        wait_for_action(proxy, url, "pass")
        assert time.monotonic() - changed_at < 2.5
        policy.write_text(BROKEN)
        time.sleep(2.0)  # the watcher has seen it twice by now and rejected it
        assert proxy.fetch(url).header("x-moodgate").startswith("pass;")
        assert "policy rejected" in proxy.log()
        assert "policy.yaml:6:13: default.rules[0].when" in proxy.log()
        policy.write_text(BLOCKING)
        wait_for_action(proxy, url, "block")


def test_serve_refuses_a_broken_policy(tmp_path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text(BROKEN)
    result = subprocess.run(
        [sys.executable, "-m", "moodgate.cli", "serve", "--policy", str(policy),
         "--state-dir", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "policy is invalid" in result.stderr
    assert "broken.yaml:6:13: default.rules[0].when" in result.stderr


@pytest.mark.skipif(shutil.which("mitmdump") is None and not (
    Path(sys.executable).parent / "mitmdump").exists(), reason="mitmdump not installed")
def test_plain_mitmdump_with_the_addon_script(tmp_path, media) -> None:
    mitmdump = shutil.which("mitmdump") or str(Path(sys.executable).parent / "mitmdump")
    policy = tmp_path / "policy.yaml"
    policy.write_text(BLOCKING)
    port = free_port()
    confdir = tmp_path / "client" / "mitmproxy"
    process = subprocess.Popen(
        [mitmdump, "-q", "-s", str(REPO / "daemon" / "moodgate" / "addon.py"),
         "--listen-host", "127.0.0.1", "--listen-port", str(port),
         "--set", f"confdir={confdir}",
         "--set", f"moodgate_policy={policy}",
         "--set", f"moodgate_state_dir={tmp_path / 'state'}",
         "--set", "moodgate_scorer=heuristic",
         "--set", "moodgate_debug_headers=true"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        proxy = Proxy(tmp_path / "client")  # only its client side: the CA lives in confdir
        proxy.port = port
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                if proxy.ca_path.exists():
                    break
            except OSError:
                pass
            time.sleep(0.1)
        routes = {"/vivid.jpg": Route(media["vivid.jpg"], "image/jpeg")}
        with Origin(routes) as origin:
            url = origin.url("/vivid.jpg")
            wait_for_action(proxy, url, "block", timeout=30)
        database = tmp_path / "state" / "decisions.sqlite"
        deadline = time.monotonic() + 10
        count = 0
        while time.monotonic() < deadline and not count:
            if database.exists():
                with sqlite3.connect(database) as db:
                    count = db.execute("select count(*) from decisions").fetchone()[0]
            time.sleep(0.1)
        assert count >= 1
    finally:
        process.terminate()
        process.wait(timeout=15)
