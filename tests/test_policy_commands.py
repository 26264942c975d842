"""``moodgate policy check`` and ``explain`` through click's CliRunner, plus explain()."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from moodgate.emotion.base import Emotion
from moodgate.policy import explain, load_policy
from moodgate.policy.commands import policy_group

POLICIES = Path(__file__).resolve().parents[1] / "policies"
TWO = str(POLICIES / "two-children-bedtime.yaml")
ONE = str(POLICIES / "single-child.yaml")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(policy_group, list(args))
    return result.exit_code, result.output


def test_check_valid_files() -> None:
    code, output = run("check", ONE, TWO)
    assert code == 0
    assert f"{TWO}: ok (2 children, 3 schedule windows)" in output


def test_check_invalid_file_shows_file_line_column(tmp_path: Path) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("children:\n  mia:\n    devices:\n      - 192.168.1.23\n      - 192.168.1.300\n")
    code, output = run("check", ONE, str(bad))
    assert code == 1
    assert (
        f"{bad}:5:9: children.mia.devices[1]: '192.168.1.300' is not an IP address, CIDR or MAC"
    ) in output
    code, output = run("check", "--json", str(bad))
    assert code == 1
    [result] = json.loads(output)
    assert result["ok"] is False
    assert result["problems"][0]["line"] == 5 and result["problems"][0]["column"] == 9


def test_check_missing_file() -> None:
    code, output = run("check", "/nonexistent/policy.yaml")
    assert code == 1
    assert "cannot read the file" in output


def test_explain_bedtime_rule() -> None:
    code, output = run(
        "explain",
        "--policy",
        TWO,
        "--child",
        "leo",
        "--at",
        "2026-11-27 23:30",
        "--valence",
        "-0.6",
        "--arousal",
        "0.1",
    )
    assert code == 0
    assert output.strip() == (
        "At Fri 2026-11-27 23:30 (Europe/Berlin), leo is in the 'bedtime' window "
        "(sun-thu 20:30-07:00, fri,sat 21:30-08:00). An item scoring valence -0.60, "
        "arousal +0.10 matches rule 'scary' (valence < -0.3 and arousal > 0, from preset "
        "under-8), so it is blocked. Decision: block by leo/bedtime/scary."
    )


def test_explain_host_and_json() -> None:
    code, output = run(
        "explain",
        "--policy",
        ONE,
        "--child",
        "mia",
        "--at",
        "2026-11-24 10:00",
        "--valence",
        "-0.9",
        "--arousal",
        "0.9",
        "--host",
        "www.school.example",
        "--json",
    )
    assert code == 0
    data = json.loads(output)
    assert (data["action"], data["rule"], data["window"]) == ("pass", "mia/always_pass", None)
    assert "matches 'school.example' on the always-pass list" in data["explanation"]


def test_explain_calm_and_no_match_with_embedded_default() -> None:
    code, output = run(
        "explain",
        "--child",
        "default",
        "--at",
        "2026-11-24 10:00",
        "--valence",
        "0.5",
        "--arousal",
        "0.7",
    )
    assert code == 0
    assert (
        "so it is calmed until arousal <= 0.2; if calming cannot get there, the calmest "
        "attempt is kept. Decision: calm by default/intense." in output
    )
    code, output = run("explain", "--child", "default", "--valence", "0.5", "--arousal", "0")
    assert (
        "matches none of the 3 rules in force, so it passes. Decision: pass by "
        "default/no-rule-matched." in output
    )


def test_explain_errors() -> None:
    code, output = run(
        "explain", "--policy", ONE, "--child", "nobody", "--valence", "0", "--arousal", "0"
    )
    assert code == 2
    assert "no child named 'nobody' in this policy; known: mia, default, parents" in output
    code, output = run(
        "explain", "--child", "default", "--at", "tomorrow", "--valence", "0", "--arousal", "0"
    )
    assert code == 2
    assert "'tomorrow' is not a time like '2026-11-23 21:15'" in output


def test_explain_function_for_parents() -> None:
    policy = load_policy(Path(TWO))
    text = explain(
        policy,
        "parents",
        datetime(2026, 11, 24, 9, 0, tzinfo=ZoneInfo("UTC")),
        Emotion(-1, 1),
        host="anything.example",
    )
    assert text.endswith(
        "parents is the parents' profile: everything passes unscored. "
        "Decision: pass by parents/pass-all."
    )


def test_show_expands_presets_window_by_window() -> None:
    code, output = run("show", TWO)
    assert code == 0, output
    leo = output.split("\n\n")[0]
    assert leo.startswith("leo: 192.168.1.32/30")
    assert "1. explicit  explicit > 0.5 → block  (preset 8-12)" in leo
    assert "always pass: school.example, library.example" in leo
    assert "in window 'bedtime' (sun-thu 20:30-07:00, fri,sat 21:30-08:00):" in leo
    bedtime = leo.split("in window 'bedtime'")[1].split("in window 'homework'")[0]
    assert "4. intense   arousal > 0.3 → calm until arousal <= 0, else block  (preset under-8)" in (
        bedtime
    )
    assert "also always block: video.example" in leo.split("in window 'homework'")[1]
    assert "video too large to check: pass (as on_error)" in leo
    parents = output.split("\n\n")[-1]
    assert parents.startswith("parents: a4:83:e7:00:00:01") and "user mum" in parents
    assert "everything passes, unscored" in parents


def test_show_json_one_child_and_errors(tmp_path: Path) -> None:
    code, output = run("show", ONE, "--child", "mia", "--json")
    assert code == 0, output
    (mia,) = json.loads(output)
    assert mia["child"] == "mia" and "192.168.1.23" in mia["devices"]
    assert [r["name"] for r in mia["rules"]] == ["gloomy", "explicit", "scary", "sad", "intense"]
    assert mia["rules"][0] == {"name": "gloomy", "when": "valence < -0.2 and arousal < -0.3",
                               "action": "calm", "from": "policy", "target": "valence >= 0",
                               "if_unreached": "keep"}  # fmt: skip
    assert (mia["on_error"], mia["on_too_large"], mia["on_too_large_set"]) == (
        "block", "block", False
    )
    assert mia["inspect"]["min_width"] == 64 and mia["windows"] == []
    code, output = run("show", ONE, "--child", "nobody")
    assert code == 2 and "no child named 'nobody' in this policy; known: mia" in output
    bad = tmp_path / "bad.yaml"
    bad.write_text("default:\n  on_too_large: maybe\n")
    code, output = run("show", str(bad))
    assert code == 1 and "'maybe' is not an action here" in output
    code, output = run("show")  # the embedded default policy
    assert code == 0 and output.startswith("default (every device nobody claims)")
