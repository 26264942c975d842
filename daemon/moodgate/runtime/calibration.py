"""How fast is each model slice on this machine? Measured once, cached with the machine's identity.

A restart on the same hardware with the same model reads the cached table (instant); a different
CPU, core count, CPU quota, thread count or model file makes the identity differ, and the daemon
measures again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from moodgate.emotion.base import Scorer

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
# Bump when the way latencies are measured changes: old tables then stop matching.
CALIBRATION_VERSION = 1

SliceKey = tuple[float, str]  # (width, precision)


def slice_label(key: SliceKey) -> str:
    return f"w{key[0]:g}/{key[1]}"


@dataclass(frozen=True)
class MachineIdentity:
    """Everything that changes a slice's latency; a table measured elsewhere is not reused."""

    cpu_model: str
    cores: int  # cores this process may run on (affinity), not the machine's total
    cpu_quota: float | None  # a cgroup CPU limit in cores; None: unlimited
    manifest_sha256: str
    threads: int  # intra-op threads per inference session, as the daemon runs them
    version: int = CALIBRATION_VERSION
    # sha256 of the explicit classifier timed with every slice; "none": slices timed alone.
    explicit_sha256: str = "none"

    @classmethod
    def detect(
        cls, manifest: Path | None, threads: int, explicit_sha256: str = "none"
    ) -> MachineIdentity:
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest else "none"
        return cls(
            cpu_model=cpu_model(),
            cores=len(os.sched_getaffinity(0)),
            cpu_quota=CgroupQuota().cores(),
            manifest_sha256=digest,
            threads=threads,
            explicit_sha256=explicit_sha256,
        )


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


class CgroupQuota:
    """The tightest CPU quota (in cores) on this process's cgroup or its ancestors, v2 or v1."""

    def __init__(self, root: Path = Path("/sys/fs/cgroup"),
                 self_cgroup: Path = Path("/proc/self/cgroup")) -> None:  # fmt: skip
        self.root = root
        self.self_cgroup = self_cgroup

    def cores(self) -> float | None:
        try:
            lines = self.self_cgroup.read_text().splitlines()
        except OSError:
            return None
        limits: list[float] = []
        for line in lines:
            hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
            if hierarchy == "0" and controllers == "":
                limits += self._walk(self.root, path, self._v2)
                limits += self._walk(self.root / "unified", path, self._v2)
            elif "cpu" in controllers.split(","):
                limits += self._walk(self.root / controllers, path, self._v1)
                limits += self._walk(self.root / "cpu", path, self._v1)
        return min(limits) if limits else None

    @staticmethod
    def _walk(base: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
        found: list[float] = []
        parts = [p for p in path.strip("/").split("/") if p]
        for depth in range(len(parts) + 1):
            limit = read(base.joinpath(*parts[:depth]))
            if limit is not None:
                found.append(limit)
        return found

    @staticmethod
    def _v2(directory: Path) -> float | None:
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            return None
        return None if quota == "max" else int(quota) / int(period)

    @staticmethod
    def _v1(directory: Path) -> float | None:
        try:
            quota = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            return None
        return None if quota <= 0 or period <= 0 else quota / period


@dataclass(frozen=True)
class SliceTiming:
    """One slice's measured scoring latency (one frame, one caller) and what the manifest says."""

    width: float
    precision: str
    input_size: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    runs: int
    mflops: float | None = None
    accuracy: dict[str, float] | None = None  # the manifest's validation metrics

    @property
    def key(self) -> SliceKey:
        return (self.width, self.precision)

    @property
    def label(self) -> str:
        return slice_label(self.key)


@dataclass
class CalibrationTable:
    identity: MachineIdentity
    slices: list[SliceTiming]
    measured_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )
    seconds: float = 0.0  # how long measuring took

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": asdict(self.identity),
            "measured_at": self.measured_at,
            "seconds": self.seconds,
            "slices": [asdict(s) for s in self.slices],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CalibrationTable:
        return cls(
            identity=MachineIdentity(**data["identity"]),
            slices=[SliceTiming(**s) for s in data["slices"]],
            measured_at=str(data.get("measured_at", "")),
            seconds=float(data.get("seconds", 0.0)),
        )


def calibration_frame(size: int, seed: int = 7) -> np.ndarray:
    """A photo-like RGB frame a little larger than the slice's input, as draft decoding gives."""
    side = max(8, round(size * 1.25))
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = np.stack([120 + 90 * x, 100 + 80 * y, 160 - 60 * x * y], axis=-1)
    noise = rng.normal(0.0, 18.0, size=(side, side, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


class Calibrator:
    """Times every slice on this machine, round-robin, so background load hits all alike."""

    def __init__(
        self,
        min_runs: int = 12,
        max_runs: int = 200,
        seconds: float = 6.0,
        warmup: int = 2,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.min_runs = min_runs
        self.max_runs = max_runs
        self.seconds = seconds
        self.warmup = warmup
        self.clock = clock

    def measure(
        self,
        scorers: Mapping[SliceKey, Scorer],
        manifest_slices: Mapping[SliceKey, Mapping[str, Any]] | None = None,
    ) -> list[SliceTiming]:
        manifest_slices = manifest_slices or {}
        frames = {key: [calibration_frame(s.input_size)] for key, s in scorers.items()}
        for key, scorer in scorers.items():
            for _ in range(self.warmup):
                scorer.score_frames(frames[key])
        samples: dict[SliceKey, list[float]] = {key: [] for key in scorers}
        started = self.clock()
        for run in range(self.max_runs):
            if run >= self.min_runs and self.clock() - started >= self.seconds:
                break
            for key, scorer in scorers.items():
                t0 = self.clock()
                scorer.score_frames(frames[key])
                samples[key].append((self.clock() - t0) * 1000.0)
        timings = []
        for key, scorer in scorers.items():
            ms = np.asarray(samples[key])
            entry = manifest_slices.get(key, {})
            timings.append(
                SliceTiming(
                    width=key[0],
                    precision=key[1],
                    input_size=scorer.input_size,
                    p50_ms=round(float(np.percentile(ms, 50)), 3),
                    p95_ms=round(float(np.percentile(ms, 95)), 3),
                    mean_ms=round(float(ms.mean()), 3),
                    runs=len(ms),
                    mflops=entry.get("mflops"),
                    accuracy=accuracy_of(entry),
                )
            )
        return sorted(timings, key=lambda t: (-t.width, t.precision))


def accuracy_of(entry: Mapping[str, Any]) -> dict[str, float] | None:
    """The manifest's validation metrics for a slice (numbers only), if it has any."""
    for name in ("val", "accuracy", "metrics"):
        value = entry.get(name)
        if isinstance(value, Mapping):
            return {k: float(v) for k, v in value.items() if isinstance(v, int | float)}
    return None


class CalibrationCache:
    """<state dir>/calibration.json: the last table, reused only for the same identity."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CALIBRATION_FILE

    def read(self) -> CalibrationTable | None:
        try:
            return CalibrationTable.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def load(self, identity: MachineIdentity) -> CalibrationTable | None:
        table = self.read()
        if table is None or table.identity != identity:
            return None
        return table

    def save(self, table: CalibrationTable) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(table.to_json(), indent=1) + "\n", encoding="utf-8")
        temporary.replace(self.path)


def calibrate(
    cache: CalibrationCache,
    identity: MachineIdentity,
    scorers: Mapping[SliceKey, Scorer],
    manifest_slices: Mapping[SliceKey, Mapping[str, Any]] | None = None,
    calibrator: Calibrator | None = None,
    force: bool = False,
) -> tuple[CalibrationTable, bool]:
    """The table for this identity: cached when it matches, else measured and saved.

    Returns (table, measured_now).
    """
    if not force:
        cached = cache.load(identity)
        if cached is not None and {s.key for s in cached.slices} == set(scorers):
            return cached, False
    calibrator = calibrator or Calibrator()
    started = time.perf_counter()
    log.info("calibrating %d model slices on %s", len(scorers), identity.cpu_model)
    timings = calibrator.measure(scorers, manifest_slices)
    table = CalibrationTable(identity, timings, seconds=round(time.perf_counter() - started, 2))
    try:
        cache.save(table)
    except OSError as exc:  # a read-only state dir costs a re-measure next start, nothing more
        log.warning("cannot cache the calibration in %s: %s", cache.path, exc)
    return table, True


def format_table(table: CalibrationTable, chosen: SliceKey | None,
                 current: SliceKey | None = None) -> list[str]:  # fmt: skip
    identity = table.identity
    quota = "none" if identity.cpu_quota is None else f"{identity.cpu_quota:g} cores"
    paired = ""
    if identity.explicit_sha256 != "none":
        paired = "; times include the explicit classifier paired with each slice"
    lines = [
        f"calibrated {table.measured_at} in {table.seconds:g} s on {identity.cpu_model}, "
        f"{identity.cores} cores, quota {quota}, {identity.threads} thread(s) per session"
        f"{paired}",
        f"{'slice':<12} {'input':>5} {'MFLOPs':>7} {'p50 ms':>8} {'p95 ms':>8}  accuracy",
    ]
    for s in table.slices:
        mark = ""
        if s.key == chosen:
            mark += "  <- chosen"
        if current is not None and s.key == current and current != chosen:
            mark += "  <- in use now"
        accuracy = _accuracy_text(s.accuracy)
        mflops = "-" if s.mflops is None else f"{s.mflops:g}"
        lines.append(f"{s.label:<12} {s.input_size:>5} {mflops:>7} {s.p50_ms:>8.2f} "
                     f"{s.p95_ms:>8.2f}  {accuracy}{mark}")  # fmt: skip
    return lines


def _accuracy_text(accuracy: Mapping[str, float] | None) -> str:
    if not accuracy:
        return "-"
    wanted = [k for k in ("valence_r", "arousal_r") if k in accuracy] or sorted(accuracy)[:2]
    return " ".join(f"{k}={accuracy[k]:.3f}" for k in wanted)


def manifest_entries(manifest: Mapping[str, Any]) -> dict[SliceKey, Mapping[str, Any]]:
    return {(float(s["width"]), str(s["precision"])): s for s in manifest.get("slices", [])}


def ordered_keys(keys: Sequence[SliceKey]) -> list[SliceKey]:
    return sorted(keys, key=lambda k: (-k[0], k[1] != "fp32"))
