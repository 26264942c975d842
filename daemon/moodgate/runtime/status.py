"""The calibration table and the slice choice, for `moodgate status` and `moodgate calibrate`.

Read from the cached table in the state dir, so it costs nothing and needs no running daemon;
the slice in use right now comes from the daemon's status report when there is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from moodgate.runtime.calibration import CalibrationCache, CalibrationTable, format_table
from moodgate.runtime.selector import build_ladder, initial_rung


def runtime_status(
    state_dir: Path, budget_ms: float, report: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON-able summary: the table, the idle choice, and the slice in use (if running)."""
    table = CalibrationCache(state_dir).read()
    if table is None or not table.slices:
        return {"calibrated": False, "budget_ms": budget_ms}
    ladder = build_ladder(table.slices)
    chosen = ladder[initial_rung(ladder, budget_ms)]
    current = _current(report)
    return {
        "calibrated": True,
        "budget_ms": budget_ms,
        "chosen": list(chosen.key),
        "current": list(current) if current else None,
        "ladder": [list(rung.key) for rung in ladder],
        "table": table.to_json(),
        "selector": _selector(report),
    }


def runtime_status_lines(
    state_dir: Path, budget_ms: float, report: Mapping[str, Any] | None = None
) -> list[str]:
    summary = runtime_status(state_dir, budget_ms, report)
    if not summary["calibrated"]:
        return ["slices: not calibrated yet (the daemon measures them on its first start, "
                "or run `moodgate calibrate`)"]  # fmt: skip
    table = CalibrationTable.from_json(summary["table"])
    chosen = tuple(summary["chosen"])
    current = tuple(summary["current"]) if summary["current"] else None
    ladder = " > ".join(f"w{w:g}/{p}" for w, p in summary["ladder"])
    lines = [
        f"slices: budget {budget_ms:g} ms p95; chosen w{chosen[0]:g}/{chosen[1]}; "
        f"under load steps down {ladder}",
        *format_table(table, chosen, current),  # type: ignore[arg-type]
    ]
    selector = summary["selector"]
    if selector:
        lines.append(
            f"load now: on {selector.get('current')}, {selector.get('rate_per_s', 0):g} items/s, "
            f"{selector.get('slowdown', 1):g}x the calibrated time, "
            f"{selector.get('switches', 0)} slice switches since start, "
            f"climb hold {selector.get('hold_s', 0):g} s, {selector.get('shed', 0)} shed, "
            f"event loop {selector.get('loop_lag_ms', 0):g} ms late"
        )
    return lines


def _selector(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The running daemon's selector state (status.json `extra.selector`), if it reports one."""
    if not report or not report.get("running"):
        return None
    selector = (report.get("extra") or {}).get("selector")
    return dict(selector) if isinstance(selector, Mapping) else None


def _current(report: Mapping[str, Any] | None) -> tuple[float, str] | None:
    if not report or not report.get("running") or report.get("model_width") is None:
        return None
    if report.get("precision") in (None, "n/a"):
        return None
    return (float(report["model_width"]), str(report["precision"]))
