"""Every benchmark runs once on tiny sizes (`--quick`), so none can rot. Not timed tests: the
numbers are ignored, only that each runs to the end and prints its table and ratios.

An empty model dir makes them use the heuristic scorer, so they do not depend on the model.
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
    "overload.py": ["capacity of the widest slice", "p95<=budget"],
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_quick(script: str, tmp_path: Path) -> None:
    models = tmp_path / "no-model"
    models.mkdir()
    out = tmp_path / "out.json"
    args = [sys.executable, str(REPO / "bench" / script), "--quick", "--model-dir", str(models),
            "--json", str(out), "--limit-s", "50"]  # fmt: skip
    if script in ("slices.py", "overload.py"):
        args += ["--plot", str(tmp_path / "plot.png")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=55, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    for expected in CASES[script]:
        assert expected in result.stdout, result.stdout
    assert json.loads(out.read_text())
    if script in ("slices.py", "overload.py"):
        assert (tmp_path / "plot.png").stat().st_size > 1000
