"""`explicit` end to end: a real `moodgate serve` with the shipped classifier, a real origin,
real images, the rows in the real SQLite file and `moodgate status`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from realnet import Origin, Proxy, Route
from test_proxy_e2e import fetch_as, image, last_row_for

POLICY = """\
version: 1
children:
  strict:
    users: [strict]
    preset: none
    rules:
      - name: explicit
        when: "explicit > 0"
        action: block
  lenient:
    users: [lenient]
    preset: none
    rules:
      - name: explicit
        when: "explicit > 0.999"
        action: block
  emotions:
    users: [emotions]
    preset: none
    rules:
      - name: lively
        when: "arousal > 0.99"
        action: block
default:
  preset: 8-12
"""


def status(state: Path) -> tuple[dict, str]:
    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "moodgate.cli", "status", *args,
                               "--state-dir", str(state)],
                              capture_output=True, text=True, timeout=60).stdout  # fmt: skip

    deadline = time.monotonic() + 15
    while True:
        report = json.loads(cli("--json"))
        if report.get("extra", {}).get("explicit") or time.monotonic() > deadline:
            return report, cli()
        time.sleep(0.5)


def test_explicit_is_rated_recorded_and_decides(tmp_path: Path, media: dict[str, bytes]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    routes = {f"/{n}": Route(media[n], "image/jpeg") for n in ("calm.jpg", "vivid.jpg")}
    routes["/vivid.webp"] = Route(media["vivid.webp"], "image/webp")
    with Origin(routes) as origin, Proxy(
        tmp_path / "state", policy, extra=["--scorer", "heuristic", "--set", "proxyauth=any"]
    ) as proxy:
        # Every rated picture is a little explicit (a probability), so "explicit > 0" blocks.
        blocked = fetch_as(proxy, "strict", origin.url("/vivid.jpg"))
        assert blocked.status == 200 and blocked.body != media["vivid.jpg"]
        assert image(blocked.body).size == image(media["vivid.jpg"]).size
        row = last_row_for(proxy, "/vivid.jpg", "strict")
        assert row["action"] == "block" and row["rule"] == "strict/explicit"
        assert 0.0 < row["explicit"] < 0.999
        assert f"explicit={row['explicit']:.3f}" in (blocked.header("X-Moodgate") or "")

        passed = fetch_as(proxy, "lenient", origin.url("/calm.jpg"))
        assert passed.status == 200 and passed.body == media["calm.jpg"]
        assert last_row_for(proxy, "/calm.jpg", "lenient")["explicit"] is not None

        # A child whose rules never read explicit is not rated (no time spent on it); a
        # picture already rated for another child keeps its rating from the score cache.
        fetch_as(proxy, "emotions", origin.url("/vivid.webp"))
        assert last_row_for(proxy, "/vivid.webp", "emotions")["explicit"] is None
        fetch_as(proxy, "emotions", origin.url("/vivid.jpg"))
        assert last_row_for(proxy, "/vivid.jpg", "emotions")["explicit"] is not None

        report, human = status(tmp_path / "state")
        assert report["extra"]["explicit"] == {"model": "nsfwjs-mobilenetv2", "input_size": 224}
        assert report["healthy"] is True
        assert "explicit: nsfwjs-mobilenetv2 (224 px)" in human


def test_explicit_off_never_rates_and_says_so(tmp_path: Path, media: dict[str, bytes]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    routes = {"/vivid.jpg": Route(media["vivid.jpg"], "image/jpeg")}
    with Origin(routes) as origin, Proxy(
        tmp_path / "state", policy,
        extra=["--scorer", "heuristic", "--set", "proxyauth=any", "--set", "moodgate_explicit=off"],
    ) as proxy:  # fmt: skip
        got = fetch_as(proxy, "strict", origin.url("/vivid.jpg"))
        assert got.status == 200 and got.body == media["vivid.jpg"]
        row = last_row_for(proxy, "/vivid.jpg", "strict")
        assert row["explicit"] is None and row["action"] == "pass"
        report, human = status(tmp_path / "state")
        assert report["extra"]["explicit"] == {"model": None, "error": None}
        assert "explicit: off" in human and report["healthy"] is True


def test_a_corrupt_classifier_degrades_health_but_filters_on(
    tmp_path: Path, media: dict[str, bytes]
) -> None:
    from moodgate.emotion.registry import default_model_dir

    models = tmp_path / "models"
    models.mkdir()
    for path in default_model_dir().iterdir():
        if path.suffix in (".json", ".onnx", ".xz"):
            (models / path.name).symlink_to(path)
    spec = json.loads((models / "explicit.json").read_text())
    (models / spec["file"]).unlink()
    (models / spec["file"]).write_bytes(b"not a model")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    routes = {"/vivid.jpg": Route(media["vivid.jpg"], "image/jpeg")}
    with Origin(routes) as origin, Proxy(
        tmp_path / "state", policy,
        extra=["--scorer", "heuristic", "--set", "proxyauth=any",
               "--set", f"moodgate_model_dir={models}"],
    ) as proxy:  # fmt: skip
        got = fetch_as(proxy, "strict", origin.url("/vivid.jpg"))
        assert got.status == 200 and got.body == media["vivid.jpg"]
        report, human = status(tmp_path / "state")
        assert "sha256" in report["extra"]["explicit"]["error"]
        assert report["healthy"] is False
        assert "explicit: UNAVAILABLE" in human and "health: DEGRADED" in human
