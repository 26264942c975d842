"""Every benchmark runs once on tiny sizes (`--quick`), so none can rot. Not timed tests: the
numbers are ignored, only that each runs to the end and prints its table and ratios.

The four run at the same time (most of each is waiting on sockets and process start-up), and
an empty model dir makes them use the heuristic scorer, so they do not depend on the model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OASIS = REPO.parent / "shared" / "data" / "oasis" / "OASIS.csv"

pytestmark = pytest.mark.skipif(not OASIS.exists(), reason="the OASIS photographs are not here")

CASES = {
    "proxy_overhead.py": ["moodgate/mitmdump throughput", "proxy CPU ms/img"],
    "floor.py": ["median ms", "moodgate pass path adds"],
    "slices.py": ["ms/img 1 thr", "img/s"],
    "overload.py": ["capacity of the widest slice", "p95<=budget", "mitmdump p95"],
}
PLOTS = ("slices.py", "overload.py")


def test_every_benchmark_runs_quick(tmp_path: Path) -> None:
    models = tmp_path / "no-model"
    models.mkdir()
    running = {}
    for script in CASES:
        out = tmp_path / f"{script}.json"
        args = [sys.executable, str(REPO / "bench" / script), "--quick",
                "--model-dir", str(models), "--json", str(out), "--limit-s", "50"]  # fmt: skip
        if script in PLOTS:
            args += ["--plot", str(tmp_path / f"{script}.png")]
        if script == "overload.py":
            args += ["--control", "--shed"]
        running[script] = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
        )
    outputs = {}
    try:
        for script, process in running.items():
            outputs[script] = process.communicate(timeout=55)[0]
            assert process.returncode == 0, f"{script}:\n{outputs[script]}"
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
    for script, expected in CASES.items():
        for text in expected:
            assert text in outputs[script], f"{script}:\n{outputs[script]}"
        assert json.loads((tmp_path / f"{script}.json").read_text())
        if script in PLOTS:
            assert (tmp_path / f"{script}.png").stat().st_size > 1000
