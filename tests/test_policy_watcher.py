"""Hot reload with real files: valid edits apply within 2 s, invalid ones are rejected whole."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from moodgate.policy import Client, Policy, PolicyError, PolicyWatcher

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TEEN = "timezone: UTC\nchildren:\n  zoe: {devices: [10.0.0.5], preset: teen}\n"
UNDER_8 = "timezone: UTC\nchildren:\n  zoe: {devices: [10.0.0.5], preset: under-8}\n"
BROKEN = "timezone: UTC\nchildren:\n  zoe: {devices: [10.0.0.500], preset: under-8}\n"


def rule_names(policy: Policy) -> list[str]:
    return [r.name for r in policy.profile_for(Client("10.0.0.5"), NOON).rules]


def write(path: Path, text: str) -> None:
    """Write like an editor that saves in place, and make sure the mtime moves."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s")


def test_valid_change_applies_within_two_seconds(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(TEEN)
    applied = threading.Event()
    watcher = PolicyWatcher(path, on_change=lambda _: applied.set(), interval=0.2)
    assert rule_names(watcher.current) == ["explicit", "scary", "intense"]
    assert watcher.last_error is None and watcher.last_loaded_at is not None
    applied.clear()
    watcher.start()
    try:
        write(path, UNDER_8)
        took = wait_for(lambda: "sad" in rule_names(watcher.current), 2.0)
        assert took < 2.0
        assert applied.is_set()
        assert watcher.current.source == path
    finally:
        watcher.stop()


def test_invalid_change_keeps_last_good_and_exposes_the_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(TEEN)
    errors: list[PolicyError] = []
    watcher = PolicyWatcher(path, on_error=errors.append, interval=0.1)
    good = watcher.current
    watcher.start()
    try:
        write(path, BROKEN)
        wait_for(lambda: watcher.last_error is not None, 2.0)
        assert watcher.current is good
        problem = watcher.last_error.problems[0]  # type: ignore[union-attr]
        assert (problem.line, problem.column, problem.path) == (3, 19, "children.zoe.devices[0]")
        assert problem.message == "'10.0.0.500' is not an IP address, CIDR or MAC"
        time.sleep(0.4)
        assert len(errors) == 1  # reported once, not on every poll
        write(path, UNDER_8)  # fixing the file clears the error
        wait_for(lambda: watcher.last_error is None, 2.0)
        assert "sad" in rule_names(watcher.current)
    finally:
        watcher.stop()


def test_change_is_applied_only_once_stable(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(TEEN)
    watcher = PolicyWatcher(path)
    write(path, UNDER_8)
    watcher.poll()
    assert "sad" not in rule_names(watcher.current)  # seen once: maybe still being written
    watcher.poll()
    assert "sad" in rule_names(watcher.current)


def test_reload_is_immediate_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(TEEN)
    watcher = PolicyWatcher(path)
    write(path, BROKEN)
    assert watcher.reload() is False
    assert rule_names(watcher.current) == ["explicit", "scary", "intense"]
    write(path, UNDER_8)
    assert watcher.reload() is True
    assert watcher.last_error is None


def test_missing_or_invalid_at_start_falls_back_to_embedded_default(tmp_path: Path) -> None:
    watcher = PolicyWatcher(tmp_path / "absent.yaml")
    assert watcher.current.profile_for(Client("10.0.0.5"), NOON).child == "default"
    assert watcher.last_error is not None
    assert "missing or unreadable" in watcher.last_error.problems[0].message
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert PolicyWatcher(path).last_error is not None


def test_no_path_means_embedded_default() -> None:
    watcher = PolicyWatcher(None)
    watcher.start()
    watcher.stop()
    assert watcher.current.source is None
    assert watcher.reload() is False
    assert watcher.last_error is None and watcher.last_loaded_at is None
