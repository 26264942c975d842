"""Runtime slice selection: calibrate every model slice on this machine, pick the widest that
fits the latency budget, and step down and back up as load comes and goes."""

from moodgate.runtime.adaptive import AdaptiveScorer
from moodgate.runtime.build import build_scorer, load_slices
from moodgate.runtime.calibration import (
    CalibrationCache,
    CalibrationTable,
    Calibrator,
    MachineIdentity,
    SliceTiming,
)
from moodgate.runtime.selector import Rung, SliceSelector, build_ladder, initial_rung
from moodgate.runtime.status import runtime_status, runtime_status_lines

__all__ = [
    "AdaptiveScorer",
    "CalibrationCache",
    "CalibrationTable",
    "Calibrator",
    "MachineIdentity",
    "Rung",
    "SliceSelector",
    "SliceTiming",
    "build_ladder",
    "build_scorer",
    "initial_rung",
    "load_slices",
    "runtime_status",
    "runtime_status_lines",
]
