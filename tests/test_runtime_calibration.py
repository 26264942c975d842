"""Calibration: measured per slice, cached with the machine's identity, redone when it changes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from moodgate.runtime import CalibrationCache, Calibrator, MachineIdentity
from moodgate.runtime.calibration import CgroupQuota, calibrate, cpu_model, format_table
from runtime_fakes import FakeSlice, FakeTimer

IDENTITY = MachineIdentity("Test CPU 9000", 2, None, "a" * 64, 1)


def slices(timer: FakeTimer) -> dict[tuple[float, str], FakeSlice]:
    table = {(1.0, "fp32"): 40.0, (0.5, "int8"): 12.0, (0.25, "int8"): 5.0}
    return {key: FakeSlice(*key, ms=ms, clock=timer) for key, ms in table.items()}


def quick(timer: FakeTimer) -> Calibrator:
    return Calibrator(min_runs=10, max_runs=20, seconds=0.5, warmup=1, clock=timer)


def test_latencies_are_measured_per_slice(tmp_path: Path) -> None:
    timer = FakeTimer()
    table, measured = calibrate(CalibrationCache(tmp_path), IDENTITY, slices(timer),
                                calibrator=quick(timer))  # fmt: skip
    assert measured
    by_key = {s.key: s for s in table.slices}
    assert by_key[(1.0, "fp32")].p50_ms == pytest.approx(40.0)
    assert by_key[(0.25, "int8")].p95_ms == pytest.approx(5.0)
    assert all(s.runs >= 10 for s in table.slices)


def test_same_identity_reuses_the_cached_table(tmp_path: Path) -> None:
    timer = FakeTimer()
    cache = CalibrationCache(tmp_path)
    calibrate(cache, IDENTITY, slices(timer), calibrator=quick(timer))
    again = slices(timer)
    _table, measured = calibrate(cache, IDENTITY, again, calibrator=quick(timer))
    assert not measured and all(s.calls == 0 for s in again.values())
    assert (tmp_path / "calibration.json").exists()


@pytest.mark.parametrize(
    "change",
    [
        {"cpu_model": "Other CPU"},
        {"cores": 1},
        {"cpu_quota": 0.5},
        {"manifest_sha256": "b" * 64},
        {"threads": 2},
        {"version": 0},
    ],
)
def test_an_identity_change_recalibrates(tmp_path: Path, change: dict[str, object]) -> None:
    timer = FakeTimer()
    cache = CalibrationCache(tmp_path)
    calibrate(cache, IDENTITY, slices(timer), calibrator=quick(timer))
    moved = dataclasses.replace(IDENTITY, **change)  # type: ignore[arg-type]
    again = slices(timer)
    _table, measured = calibrate(cache, moved, again, calibrator=quick(timer))
    assert measured and all(s.calls > 0 for s in again.values())
    assert CalibrationCache(tmp_path).read().identity == moved


def test_a_changed_set_of_slices_recalibrates(tmp_path: Path) -> None:
    timer = FakeTimer()
    cache = CalibrationCache(tmp_path)
    calibrate(cache, IDENTITY, slices(timer), calibrator=quick(timer))
    fewer = dict(list(slices(timer).items())[:2])
    _, measured = calibrate(cache, IDENTITY, fewer, calibrator=quick(timer))
    assert measured


def test_a_corrupt_cache_is_measured_again(tmp_path: Path) -> None:
    (tmp_path / "calibration.json").write_text("{not json")
    timer = FakeTimer()
    _, measured = calibrate(CalibrationCache(tmp_path), IDENTITY, slices(timer),
                            calibrator=quick(timer))  # fmt: skip
    assert measured


def test_force_measures_even_when_cached(tmp_path: Path) -> None:
    timer = FakeTimer()
    cache = CalibrationCache(tmp_path)
    calibrate(cache, IDENTITY, slices(timer), calibrator=quick(timer))
    _, measured = calibrate(cache, IDENTITY, slices(timer), calibrator=quick(timer), force=True)
    assert measured


def test_the_table_prints_with_the_choice(tmp_path: Path) -> None:
    timer = FakeTimer()
    table, _ = calibrate(CalibrationCache(tmp_path), IDENTITY, slices(timer),
                         calibrator=quick(timer))  # fmt: skip
    lines = format_table(table, (0.5, "int8"), (0.25, "int8"))
    assert "Test CPU 9000" in lines[0]
    assert any("w0.5/int8" in line and "<- chosen" in line for line in lines)
    assert any("w0.25/int8" in line and "<- in use now" in line for line in lines)


def test_identity_of_this_machine(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    identity = MachineIdentity.detect(manifest, 1)
    assert identity.cores >= 1 and identity.cpu_model
    manifest.write_text('{"slices": []}')
    assert MachineIdentity.detect(manifest, 1).manifest_sha256 != identity.manifest_sha256


def test_cpu_model_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: ARM Cortex-A53 @ 1.2GHz\n")
    assert cpu_model(info) == "ARM Cortex-A53 @ 1.2GHz"


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cg" / "weak").mkdir(parents=True)
    (tmp_path / "cg" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "cg" / "weak" / "cpu.max").write_text("50000 100000\n")
    (tmp_path / "self").write_text("0::/weak\n")
    assert CgroupQuota(tmp_path / "cg", tmp_path / "self").cores() == 0.5


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path) -> None:
    weak = tmp_path / "cg" / "cpu" / "weak"
    weak.mkdir(parents=True)
    (weak / "cpu.cfs_quota_us").write_text("25000\n")
    (weak / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "self").write_text("3:cpuset:/\n1:cpu:/weak\n0::/\n")
    assert CgroupQuota(tmp_path / "cg", tmp_path / "self").cores() == 0.25
    (weak / "cpu.cfs_quota_us").write_text("-1\n")
    assert CgroupQuota(tmp_path / "cg", tmp_path / "self").cores() is None


def test_status_lines_show_the_choice_and_the_slice_in_use(tmp_path: Path) -> None:
    from moodgate.runtime import runtime_status, runtime_status_lines

    assert "not calibrated" in runtime_status_lines(tmp_path, 150.0)[0]
    timer = FakeTimer()
    calibrate(CalibrationCache(tmp_path), IDENTITY, slices(timer), calibrator=quick(timer))
    report = {"running": True, "model_width": 0.25, "precision": "int8"}
    lines = runtime_status_lines(tmp_path, 20.0, report)
    assert "chosen w0.5/int8" in lines[0]  # p95 12 ms fits 20 ms; the full 40 ms does not
    assert any("w0.25/int8" in line and "in use now" in line for line in lines)
    summary = runtime_status(tmp_path, 20.0, report)
    assert summary["chosen"] == [0.5, "int8"] and summary["current"] == [0.25, "int8"]
    assert summary["selector"] is None
    report["extra"] = {"selector": {"current": "w0.25/int8", "rate_per_s": 41.5, "slowdown": 1.4,
                                    "switches": 3, "hold_s": 4.0, "shed": 0,
                                    "loop_lag_ms": 31.5}}  # fmt: skip
    assert runtime_status(tmp_path, 20.0, report)["selector"]["switches"] == 3
    last = runtime_status_lines(tmp_path, 20.0, report)[-1]
    assert "load now: on w0.25/int8, 41.5 items/s, 1.4x the calibrated time, 3 slice switches" \
        in last
    assert last.endswith("0 shed, event loop 31.5 ms late")
