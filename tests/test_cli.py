"""The `moodgate` commands that the proxy issue owns: score, log, serve's argument checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from moodgate.cli import main, parse_since
from moodgate.config import ConfigError, load_settings
from moodgate.record.store import DecisionStore
from test_record_store import row


@pytest.fixture
def images(tmp_path, media):
    paths = {}
    for name in ("calm.jpg", "vivid.jpg", "truncated.jpg"):
        paths[name] = tmp_path / name
        paths[name].write_bytes(media[name])
    return paths


def test_score_json_lines(images) -> None:
    result = CliRunner().invoke(
        main, ["score", "--json", "--scorer", "heuristic",
               str(images["calm.jpg"]), str(images["vivid.jpg"])],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["file"] for line in lines] == [str(images["calm.jpg"]), str(images["vivid.jpg"])]
    for line in lines:
        assert {"file", "valence", "arousal", "scorer", "width", "precision"} <= line.keys()
        assert -1 <= line["valence"] <= 1 and -1 <= line["arousal"] <= 1
    assert lines[0]["arousal"] < lines[1]["arousal"]
    assert all(0.0 <= line["explicit"] <= 1.0 for line in lines)  # the shipped classifier
    unrated = CliRunner().invoke(
        main, ["score", "--json", "--scorer", "heuristic", "--no-explicit", str(images["calm.jpg"])]
    )
    assert json.loads(unrated.output)["explicit"] is None
    text = CliRunner().invoke(main, ["score", "--scorer", "heuristic", str(images["calm.jpg"])])
    assert "\texplicit=" in text.output


def test_score_reports_bad_files_and_exits_non_zero(images, tmp_path) -> None:
    result = CliRunner().invoke(
        main, ["score", "--scorer", "heuristic", str(images["truncated.jpg"]),
               str(tmp_path / "missing.jpg"), str(images["calm.jpg"])],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "truncated.jpg: corrupt:" in result.output
    assert "missing.jpg" in result.output
    assert "calm.jpg\tvalence=" in result.output


def test_score_unknown_width_is_one_clear_error(images, tmp_path) -> None:
    result = CliRunner().invoke(
        main, ["score", "--width", "0.5", "--model-dir", str(tmp_path), str(images["calm.jpg"])]
    )
    assert result.exit_code != 0
    assert result.output.startswith("Error: cannot load the model")


def test_log_shows_recent_decisions(tmp_path) -> None:
    store = DecisionStore(tmp_path / "decisions.sqlite", batch_interval=0.0)
    store.start()
    store.record(row(child="mia", action="calm", valence=0.2, arousal=0.6, rule="mia/intense"))
    store.record(row(child="leo", action="block", rule="leo/scary"))
    assert store.flush()
    store.close()
    runner = CliRunner()
    text = runner.invoke(main, ["log", "--state-dir", str(tmp_path)])
    assert text.exit_code == 0 and "mia/intense" in text.output and "leo/scary" in text.output
    only = runner.invoke(main, ["log", "--state-dir", str(tmp_path), "--child", "mia", "--json"])
    rows = [json.loads(line) for line in only.output.splitlines()]
    assert [r["rule"] for r in rows] == ["mia/intense"]
    bad = runner.invoke(main, ["log", "--state-dir", str(tmp_path), "--since", "yesterday"])
    assert bad.exit_code != 0 and "expected a duration" in bad.output


def test_parse_since() -> None:
    assert parse_since("90m").total_seconds() == 5400
    assert parse_since("2d").days == 2


def test_config_file_and_overrides(tmp_path) -> None:
    config = tmp_path / "moodgate.yaml"
    config.write_text("listen_port: 9090\ndeadline_ms: 500\ndebug_headers: yes\n")
    settings = load_settings(config, deadline_ms=250)
    assert settings.listen_port == 9090 and settings.deadline_ms == 250 and settings.debug_headers
    config.write_text("debug_headers: maybe\n")
    with pytest.raises(ConfigError, match="debug_headers"):
        load_settings(config)  # a typo in a yes/no setting is an error, not a silent "no"
    config.write_text("listen_prot: 9090\n")
    with pytest.raises(ConfigError, match="unknown setting 'listen_prot'"):
        load_settings(config)


def test_serve_rejects_bad_arguments(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--listen", "nonsense"])
    assert result.exit_code != 0 and "expected HOST:PORT" in result.output
    result = runner.invoke(main, ["serve", "--policy", str(tmp_path / "nope.yaml")])
    assert result.exit_code != 0 and "cannot read the file" in result.output


def test_console_entry_point_help() -> None:
    result = subprocess.run([sys.executable, "-m", "moodgate.cli", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("serve", "score", "log", "policy", "calm", "styles"):
        assert command in result.stdout


def test_policy_explain_a_recorded_decision(tmp_path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nchildren:\n  mia:\n    users: [mia]\n    preset: under-8\n"
        "default:\n  preset: teen\n"
    )
    store = DecisionStore(tmp_path / "decisions.sqlite", batch_interval=0.0)
    store.start()
    store.record(row(child="mia", action="block", valence=-0.6, arousal=0.5, rule="mia/scary",
                     host="news.example"))
    store.record(row(child="mia", outcome="error", error="corrupt: truncated", rule="mia/on_error"))
    assert store.flush()
    store.close()
    runner = CliRunner()
    scored = runner.invoke(main, ["policy", "explain", "--policy", str(policy), "--decision", "1",
                                  "--state-dir", str(tmp_path)])
    assert scored.exit_code == 0, scored.output
    assert "scary" in scored.output and "mia" in scored.output
    unscored = runner.invoke(main, ["policy", "explain", "--policy", str(policy),
                                    "--decision", "2", "--state-dir", str(tmp_path)])
    assert unscored.exit_code == 0
    assert "was not scored: error (corrupt: truncated)" in unscored.output
    missing = runner.invoke(main, ["policy", "explain", "--decision", "99",
                                   "--state-dir", str(tmp_path)])
    assert missing.exit_code != 0 and "no decision 99 is recorded" in missing.output
    incomplete = runner.invoke(main, ["policy", "explain", "--child", "mia"])
    assert incomplete.exit_code != 0 and "missing --valence, --arousal" in incomplete.output


def test_score_defaults_to_the_widest_shipped_slice(images) -> None:
    from moodgate.emotion.nested import load_manifest
    from moodgate.emotion.registry import default_model_dir

    try:
        slices = load_manifest(default_model_dir())["slices"]
    except Exception:
        pytest.skip("no shipped model in models/")
    widest = max(s["width"] for s in slices)
    result = CliRunner().invoke(main, ["score", "--json", str(images["calm.jpg"])])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["width"] == widest


def test_policy_explain_shows_learnt_adjustments(tmp_path) -> None:
    from moodgate.review.adjust import AdjustmentFiles, ChildAdjustment

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nchildren:\n  mia:\n    users: [mia]\n    preset: none\n    rules:\n"
        "      - name: intense\n        when: \"arousal > 0.5\"\n        action: block\n"
    )
    args = ["policy", "explain", "--policy", str(policy), "--child", "mia",
            "--valence", "0.2", "--arousal", "0.4", "--state-dir", str(tmp_path), "--json"]
    runner = CliRunner()
    before = json.loads(runner.invoke(main, args).output)
    AdjustmentFiles(tmp_path).save(ChildAdjustment("mia", {"intense": (-0.2,)}, labels=12))
    after_result = runner.invoke(main, args)
    assert after_result.exit_code == 0, after_result.output
    after = json.loads(after_result.output)
    assert before["action"] == "pass" and after["action"] == "block"
    text = runner.invoke(main, args[:-1]).output
    assert "learnt from 12 parent labels" in text


def test_eval_reports_every_slice_and_the_baseline() -> None:
    from conftest import SHARED_DATA
    from moodgate.emotion.registry import default_model_dir

    oasis = SHARED_DATA / "oasis"
    if not oasis.exists() or not (default_model_dir() / "manifest.json").exists():
        pytest.skip("needs ../shared/data/oasis and the shipped model")
    result = CliRunner().invoke(main, ["eval", "--data", str(oasis), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    manifest = json.loads((default_model_dir() / "manifest.json").read_text())
    assert len(rows) == len(manifest["slices"]) + 1
    assert rows[-1]["scorer"] == "heuristic"
    for result_row in rows:
        assert -1 <= result_row["valence_r"] <= 1 and result_row["ms_per_image"] > 0
