"""Health, as the running daemon sees it and as `moodgate status` shows it.

The daemon writes `<state dir>/status.json` every few seconds (write to a temporary file,
then rename, so a reader never sees half a file); `moodgate status` reads it and adds what
only the database knows (decisions in the last hour). A status file older than a few write
intervals means the daemon is gone or wedged, and the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
WRITE_INTERVAL = 5.0
STALE_AFTER = 3 * WRITE_INTERVAL + 5.0


@dataclass
class Health:
    """One snapshot of the running daemon; the JSON schema of status.json."""

    pid: int
    started_at: str
    updated_at: str
    listen: list[str]
    mode: str
    scorer: str
    model_width: float | None
    precision: str | None
    scorer_requested: str
    scorer_fallback: bool
    scorer_error: str | None
    policy: str
    policy_ok: bool
    policy_error: str | None
    policy_loaded_at: str | None
    in_flight: int
    db_backlog: int
    db_dropped: int
    db_error: str | None
    decisions: int  # decided since start
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)


class StatusWriter:
    """Writes a Health snapshot to the state dir every `interval` seconds from the loop."""

    def __init__(
        self, state_dir: Path, snapshot: Callable[[], Health], interval: float = WRITE_INTERVAL
    ) -> None:
        self.path = state_dir / STATUS_FILE
        self.snapshot = snapshot
        self.interval = interval
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def write(self) -> bool:
        try:
            write_atomic(self.path, asdict(self.snapshot()))
        except OSError as exc:  # a full disk must not stop the proxy; the next try may work
            self.last_error = str(exc)
            return False
        self.last_error = None
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        # No daemon, no status: `moodgate status` then reports "not running".
        with contextlib.suppress(OSError):
            self.path.unlink()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StatusReport:
    """What `moodgate status` prints: the daemon's last snapshot plus the database's counts."""

    def __init__(self, state_dir: Path, database: Path) -> None:
        self.state_dir = state_dir
        self.database = database

    def read_health(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.state_dir / STATUS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def decisions_since(self, since: timedelta) -> int | None:
        if not self.database.exists():
            return 0
        cutoff = (datetime.now(UTC) - since).isoformat(timespec="milliseconds")
        try:
            # Read-only, so a status query never creates or locks anything.
            uri = f"file:{self.database}?mode=ro"
            with sqlite3.connect(uri, uri=True, timeout=1.0) as db:
                row = db.execute("SELECT count(*) FROM decisions WHERE time >= ?", [cutoff])
                return int(row.fetchone()[0])
        except sqlite3.Error:
            return None

    def collect(self) -> dict[str, Any]:
        health = self.read_health()
        report: dict[str, Any] = {"state_dir": str(self.state_dir), "running": False}
        if health is not None:
            updated = datetime.fromisoformat(health["updated_at"])
            age = (datetime.now(UTC) - updated).total_seconds()
            alive = _pid_alive(int(health.get("pid", 0)))
            report["running"] = alive and age <= STALE_AFTER
            report["status_age_s"] = round(age, 1)
            report.update(health)
        report["decisions_last_hour"] = self.decisions_since(timedelta(hours=1))
        report["healthy"] = bool(
            report["running"]
            and report.get("policy_ok", False)
            and not report.get("db_error")
            and not report.get("scorer_fallback")
            and not ((report.get("extra") or {}).get("explicit") or {}).get("error")
        )
        return report


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by the service user
    return True


def format_report(report: dict[str, Any]) -> list[str]:
    """Human lines for `moodgate status`."""
    if not report.get("pid"):
        return [
            f"moodgate: not running (no status in {report['state_dir']})",
            f"decisions in the last hour: {_count(report['decisions_last_hour'])}",
        ]
    state = "running"
    if not report["running"]:
        state = f"NOT RUNNING (last seen {report['status_age_s']} s ago)"
    scorer = f"{report['scorer']}"
    if report.get("model_width") is not None:
        scorer += f" width={report['model_width']} {report.get('precision')}"
    if report.get("scorer_fallback"):
        scorer += f"  FALLBACK from {report['scorer_requested']}: {report.get('scorer_error')}"
    policy = report["policy"] + ("  ok" if report["policy_ok"] else "  REJECTED")
    if report.get("policy_loaded_at"):
        policy += f" (loaded {report['policy_loaded_at']})"
    if report.get("policy_error"):
        policy += f": {report['policy_error']}"
    database = f"{report['db_backlog']} rows queued, {report['db_dropped']} dropped"
    if report.get("db_error"):
        database += f"  ERROR: {report['db_error']}"
    lines = [
        f"moodgate: {state}, pid {report['pid']}, since {report['started_at']}",
        f"listening: {', '.join(report['listen']) or '-'} ({report['mode']})",
        f"scorer: {scorer}",
        f"policy: {policy}",
        f"queue: {report['in_flight']} in flight; database: {database}",
        f"decisions: {report['decisions']} since start, "
        f"{_count(report['decisions_last_hour'])} in the last hour",
        f"health: {'ok' if report['healthy'] else 'DEGRADED'}",
    ]
    explicit = (report.get("extra") or {}).get("explicit")
    if explicit is not None:
        if explicit.get("model"):
            text = f"{explicit['model']} ({explicit['input_size']} px), for rules that test it"
        elif explicit.get("error"):
            text = f"UNAVAILABLE, rules testing explicit never match: {explicit['error']}"
        else:
            text = "off (setting explicit: no), rules testing explicit never match"
        lines.insert(3, f"explicit: {text}")
    copies = (report.get("extra") or {}).get("video_copies")
    if copies:  # judged video files kept for players' ranged requests
        lines.insert(-2, f"video copies: {copies['files']} files, "
                         f"{copies['held_mb']:g} of {copies['max_mb']:g} MiB held")  # fmt: skip
    pinned = (report.get("extra") or {}).get("pinned_apps")
    if pinned and (pinned.get("hosts") or pinned.get("refusing_devices")):
        line = (f"pinned apps: {pinned['hosts']} hosts passed through uninspected "
                f"on {pinned['devices']} devices")  # fmt: skip
        if pinned.get("refusing_devices"):
            refusing = ", ".join(pinned["refusing_devices"])
            line += ("; refusing moodgate's certificate everywhere (CA removed, or Android "
                     f"apps that ignore user CAs): {refusing}")  # fmt: skip
        lines.insert(-2, line)
    return lines


def _count(value: int | None) -> str:
    return "unknown (database unreadable)" if value is None else str(value)
