"""Decompression bombs through a real proxy: the peak RSS (VmHWM) of `moodgate serve` must
stay far below the unit's MemoryMax=512M whatever a page serves, or one image restarts the
filter (the GIF frame bomb and the blocked-bomb thumbnail were both found here)."""

from __future__ import annotations

import struct
import time
from io import BytesIO
from pathlib import Path

from PIL import Image

import media_factory as mf
from realnet import Origin, Proxy, Route

MEMORY_MAX_MB = 512
HEADROOM_MB = 150  # a bomb may cost this much above the idle proxy, no more

STRICT = "version: 1\ndefault:\n  preset: 8-12\n  on_error: block\n"
LENIENT = "version: 1\ndefault:\n  preset: 8-12\n  on_error: pass\n"


def gif_frame_bomb(side: int = 40000) -> bytes:
    frames = [Image.new("RGB", (64, 64), (i * 80, 0, 0)) for i in range(2)]
    out = BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    data = bytearray(out.getvalue())
    descriptor = data.rindex(b"\x2c\x00\x00\x00\x00\x40\x00\x40\x00")
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", side, side)
    return bytes(data) + b"\0" * 4096  # over min_bytes, so it is inspected


def vm(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(field)


def peak_after(tmp_path: Path, policy: str, body: bytes, content_type: str) -> tuple[float, float]:
    """(idle RSS, peak RSS) in MB of a proxy that served `body` once."""
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(policy)
    routes = {"/warm.jpg": Route(mf.jpeg(mf.vivid_chaos(200, 150)), "image/jpeg"),
              "/bomb": Route(body, content_type)}  # fmt: skip
    with Origin(routes) as origin, Proxy(tmp_path / "state", policy_path,
                                         extra=["--scorer", "heuristic"]) as proxy:  # fmt: skip
        assert proxy.process is not None
        pid = proxy.process.pid
        assert proxy.fetch(origin.url("/warm.jpg")).status == 200  # warm the code paths
        time.sleep(1.0)
        idle = vm(pid, "VmHWM")
        got = proxy.fetch(origin.url("/bomb"), timeout=60)
        assert got.status in (200, 403)
        time.sleep(3.0)  # background work (thumbnails) happens after the response
        assert proxy.process.poll() is None, "the proxy died"
        return idle, vm(pid, "VmHWM")


def test_png_bomb_passed_costs_nothing(tmp_path: Path) -> None:
    idle, peak = peak_after(tmp_path, LENIENT, mf.decompression_bomb(), "image/png")
    print(f"png bomb, on_error pass: idle {idle:.0f} MB, peak {peak:.0f} MB")
    assert peak - idle < HEADROOM_MB and peak < MEMORY_MAX_MB


def test_png_bomb_blocked_stays_within_memory_max(tmp_path: Path) -> None:
    idle, peak = peak_after(tmp_path, STRICT, mf.decompression_bomb(), "image/png")
    print(f"png bomb, on_error block: idle {idle:.0f} MB, peak {peak:.0f} MB")
    assert peak - idle < HEADROOM_MB and peak < MEMORY_MAX_MB


def test_gif_frame_bomb_stays_within_memory_max(tmp_path: Path) -> None:
    idle, peak = peak_after(tmp_path, LENIENT, gif_frame_bomb(), "image/gif")
    print(f"gif frame bomb: idle {idle:.0f} MB, peak {peak:.0f} MB")
    assert peak - idle < HEADROOM_MB and peak < MEMORY_MAX_MB
