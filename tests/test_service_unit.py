"""The shipped unit file: `systemd-analyze verify` is clean, the offline security exposure
stays at or under 3.0, and the proxy really runs under MemoryDenyWriteExecute=."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moodgate.install import render_unit

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "moodgate.service"
MAX_EXPOSURE = 3.0

analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd; ./run test does)",
)


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit as install-service writes it, pointing at this checkout's moodgate."""
    rendered = tmp_path / "moodgate.service"
    executable = Path(sys.executable).with_name("moodgate")
    rendered.write_text(render_unit(UNIT.read_text(), executable))
    return rendered


@analyze
def test_unit_verifies_clean(unit: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    # Only lines about our unit count: a container's own units may have unrelated warnings.
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "moodgate" in line]  # fmt: skip
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


@analyze
def test_security_exposure_is_low(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_unit_has_the_promised_settings() -> None:
    text = UNIT.read_text()
    for setting in (
        "Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecReload=", "User=moodgate",
        "StateDirectory=moodgate", "StateDirectoryMode=0700", "ConfigurationDirectory=moodgate",
        "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service", "MemoryMax=", "MemoryDenyWriteExecute=yes",
        "PrivateDevices=yes", "LockPersonality=yes", "RestrictNamespaces=yes", "UMask=0077",
    ):  # fmt: skip
        assert setting in text, setting


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _mdwe_supported() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c",
         "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"],
        capture_output=True,
    )  # fmt: skip
    return probe.returncode == 0


MDWE_CHILD = f"""
import ctypes, mmap, sys
assert ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("MDWE is not in force")
except OSError:
    pass
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"]),
                           helper.make_node("ReduceMean", ["c"], ["y"])], "g", [x], [y], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
print(session.run(None, {{"x": np.ones((1, 3, 32, 32), np.float32)}})[0].ravel()[0])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_MDWE is Linux-only")
def test_runs_under_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute= is only safe if nothing maps W+X pages: onnxruntime and the
    image pipeline are run under the kernel's own MDWE (what systemd uses on Linux ≥ 6.3)."""
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    pytest.importorskip("onnx")
    result = subprocess.run([sys.executable, "-c", MDWE_CHILD], capture_output=True, text=True,
                            timeout=120, env={**os.environ})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


WRAP_MDWE = f"""
import ctypes, os, sys
assert ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_MDWE is Linux-only")
def test_proxy_serves_and_calms_under_mdwe(tmp_path: Path, media: dict[str, bytes]) -> None:
    """A real `moodgate serve` (mitmproxy, TLS, Pillow, the calmer) under MDWE (inherited
    across exec): HTTPS interception and calming work with no W+X memory."""
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    from realnet import Origin, Proxy, Route

    routes = {"/vivid.jpg": Route(media["vivid.jpg"], "image/jpeg")}
    proxy = Proxy(tmp_path, extra=["--scorer", "heuristic"])
    proxy.args = [sys.executable, "-c", WRAP_MDWE, *proxy.args]
    with Origin(routes) as origin, proxy:
        got = proxy.fetch(origin.url("/vivid.jpg"))
        assert got.status == 200 and got.header("x-moodgate").startswith("calm;"), proxy.log()
