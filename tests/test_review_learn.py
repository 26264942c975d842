"""Per-child preference learning on synthetic labels whose true thresholds are known."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moodgate.cli import main
from moodgate.config import Settings
from moodgate.emotion.base import Emotion
from moodgate.policy import Action, Policy, Profile, parse_policy
from moodgate.record.store import DecisionRow, DecisionStore, add_label, read_labels
from moodgate.review.adjust import (
    AdjustmentFiles,
    ChildAdjustment,
    LearntProfiles,
    adjust_profile,
)
from moodgate.review.learn import FitSettings, LabelledItem, cross_validate, fit_shifts
from moodgate.review.service import learner_for

POLICY = """\
version: 1
children:
  mia:
    users: [mia]
    preset: none
    rules:
      - name: scary
        when: "valence < -0.5 and arousal > 0.3"
        action: block
      - name: lively
        when: "arousal > 0.5"
        action: calm
        target: "arousal <= 0"
default:
  preset: none
"""


@pytest.fixture()
def policy() -> Policy:
    return parse_policy(POLICY)


@pytest.fixture()
def profile(policy: Policy) -> Profile:
    return policy.profile_named("mia", datetime.now(UTC))


def truth(emotion: Emotion, scary_v: float, scary_a: float, lively_a: float) -> Action:
    """The family's real preference, in the same rule shapes as the policy."""
    if emotion.valence < scary_v and emotion.arousal > scary_a:
        return Action.BLOCK
    if emotion.arousal > lively_a:
        return Action.CALM
    return Action.PASS


def synthetic(profile: Profile, n: int, seed: int, **true: float) -> list[LabelledItem]:
    rng = np.random.default_rng(seed)
    items = []
    for valence, arousal in rng.uniform(-1, 1, size=(n, 2)):
        emotion = Emotion(float(valence), float(arousal))
        items.append(LabelledItem(emotion, truth(emotion, **true), profile))
    return items


def test_recovers_a_known_arousal_threshold(profile: Profile) -> None:
    # The parents want calming from arousal 0.2, not the policy's 0.5.
    items = synthetic(profile, 200, seed=1, scary_v=-0.5, scary_a=0.3, lively_a=0.2)
    shifts = fit_shifts(items)
    assert 0.5 + shifts["lively"][0] == pytest.approx(0.2, abs=0.04)
    # Fewer items fall in the scary corner, so its edges are known less tightly.
    assert shifts["scary"] == pytest.approx((0.0, 0.0), abs=0.06)


def test_recovers_a_two_sided_region(profile: Profile) -> None:
    # "Scary" really starts at valence < -0.3 and arousal > 0.1.
    items = synthetic(profile, 300, seed=2, scary_v=-0.3, scary_a=0.1, lively_a=0.5)
    shifts = fit_shifts(items)
    assert -0.5 + shifts["scary"][0] == pytest.approx(-0.3, abs=0.06)
    assert 0.3 + shifts["scary"][1] == pytest.approx(0.1, abs=0.06)
    assert shifts["lively"][0] == pytest.approx(0.0, abs=0.04)


def test_three_contradictory_labels_keep_the_policy_rule(profile: Profile) -> None:
    # Three labels on near-identical items that disagree with each other.
    items = [
        LabelledItem(Emotion(0.2, 0.45), Action.CALM, profile),
        LabelledItem(Emotion(0.2, 0.46), Action.PASS, profile),
        LabelledItem(Emotion(0.2, 0.44), Action.BLOCK, profile),
    ]
    shifts = fit_shifts(items)
    assert max(abs(s) for values in shifts.values() for s in values) < 0.03


def test_three_labels_against_the_policy_do_not_swing_the_rule(profile: Profile) -> None:
    # Three labels that contradict the policy far from its line: the rule stays as written.
    against = [Emotion(0.2, 0.05), Emotion(-0.1, 0.1), Emotion(0.4, 0.9)]
    items = [
        LabelledItem(against[0], Action.CALM, profile),
        LabelledItem(against[1], Action.CALM, profile),
        LabelledItem(against[2], Action.PASS, profile),
    ]
    shifts = fit_shifts(items)
    adjusted = adjust_profile(profile, ChildAdjustment("mia", shifts))
    assert abs(shifts["lively"][0]) < 0.1
    for emotion in against:
        assert adjusted.decide(emotion).action is profile.decide(emotion).action


def test_labels_close_to_the_line_move_it(profile: Profile) -> None:
    items = [LabelledItem(Emotion(0.2, a), Action.CALM, profile) for a in (0.42, 0.44, 0.47)]
    shifts = fit_shifts(items)
    assert 0.5 + shifts["lively"][0] < 0.42


def test_cross_validation_shows_the_gain(profile: Profile) -> None:
    items = synthetic(profile, 80, seed=3, scary_v=-0.5, scary_a=0.3, lively_a=0.1)
    folds, before, after = cross_validate(items, FitSettings())
    assert folds == 5
    assert before is not None and after is not None
    assert after > before + 0.1


def _decide_rows(state: Path, policy: Policy, count: int, seed: int) -> None:
    """Decisions as the proxy would record them, over the last few days."""
    store = DecisionStore(state / "decisions.sqlite", batch_interval=0.0)
    store.start()
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    profile = policy.profile_named("mia", now)
    for index in range(count):
        emotion = Emotion(*rng.uniform(-1, 1, 2))
        decision = profile.decide(emotion)
        store.record(DecisionRow(
            client="192.168.1.23", child="mia", host="example.org", path=f"/{index}.jpg",
            content_type="image/jpeg", kind="jpeg", bytes=1000, action=decision.action.value,
            rule=decision.rule, valence=emotion.valence, arousal=emotion.arousal,
            time=(now - timedelta(hours=index)).isoformat(timespec="milliseconds"),
            uid=f"{index:032x}",
        ))  # fmt: skip
    assert store.flush()
    store.close()


def test_refit_from_stored_labels_report_apply_explain_and_reset(
    tmp_path: Path, policy: Policy
) -> None:
    _decide_rows(tmp_path, policy, 120, seed=4)
    database = tmp_path / "decisions.sqlite"
    from moodgate.review.data import ReviewData

    data = ReviewData(database)
    for row in data.feed("mia", everything=True, limit=120):
        wanted = truth(Emotion(row["valence"], row["arousal"]), -0.5, 0.3, 0.2)
        data.add_label(row, {"pass": "fine", "calm": "calm", "block": "block"}[wanted.value])
    assert len(read_labels(database, "mia")) == 120

    settings = Settings(state_dir=tmp_path)
    report = learner_for(settings, lambda: policy).refit("mia")
    assert report.labels == 120 and report.folds == 5
    assert report.agreement_after is not None and report.agreement_before is not None
    assert report.agreement_after > report.agreement_before
    assert report.week_changed > 0 and report.week_decisions == 120
    assert "lively" in report.rules and "arousal > 0.5 →" in report.rules["lively"]
    stored = json.loads((tmp_path / "learnt" / "mia.json").read_text())
    assert stored["labels"] == 120

    # Applied on top of the policy where the Engine asks for a profile...
    learnt = LearntProfiles(tmp_path)
    base = policy.profile_named("mia", datetime.now(UTC))
    item = Emotion(0.4, 0.35)
    assert base.decide(item).action is Action.PASS
    assert learnt.apply(base).decide(item).action is Action.CALM
    # ...and visible when explained.
    runner = CliRunner()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    common = ["--state-dir", str(tmp_path), "--policy", str(policy_file)]
    explained = runner.invoke(main, ["review", "explain", *common, "--child", "mia",
                                     "--valence", "0.4", "--arousal", "0.35"])  # fmt: skip
    assert explained.exit_code == 0, explained.output
    assert "learnt from 120 parent labels" in explained.output
    assert "the policy says arousal > 0.5" in explained.output
    assert "is calmed" in explained.output
    shown = runner.invoke(main, ["policy", "show", str(policy_file), "--child", "mia",
                                 "--state-dir", str(tmp_path), "--json"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    lively = next(r for r in json.loads(shown.output)[0]["rules"] if r["name"] == "lively")
    assert "learnt from 120 parent labels" in lively["from"], lively
    assert lively["when"] != "arousal > 0.5"

    # The CLI refit prints the report; --reset restores the policy exactly.
    refit = runner.invoke(main, ["learn", *common, "--child", "mia"])
    assert refit.exit_code == 0, refit.output
    assert "120 labels used" in refit.output and "5-fold" in refit.output
    assert "decisions would change" in refit.output
    reset = runner.invoke(main, ["learn", *common, "--reset"])
    assert reset.exit_code == 0
    assert AdjustmentFiles(tmp_path).load_all() == {}
    learnt.reload()
    assert learnt.apply(base) is base


def test_labels_of_another_child_or_without_scores_are_ignored(
    tmp_path: Path, policy: Policy
) -> None:
    database = tmp_path / "decisions.sqlite"
    _decide_rows(tmp_path, policy, 3, seed=5)
    now = datetime.now(UTC).isoformat()
    add_label(database, {"child": "mia", "decision_id": 1, "decision_time": now,
                         "label": "block", "valence": None, "arousal": None})  # fmt: skip
    add_label(database, {"child": "default", "decision_id": 2, "decision_time": now,
                         "label": "block", "valence": 0.1, "arousal": 0.1})  # fmt: skip
    report = learner_for(Settings(state_dir=tmp_path), lambda: policy).refit("mia")
    assert report.labels == 0 and report.rules == {}
    assert not (tmp_path / "learnt" / "mia.json").exists()


def test_engine_applies_learnt_adjustments_and_schedules_the_refit(tmp_path: Path) -> None:
    from moodgate.engine import Engine
    from moodgate.policy import Client

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    settings = Settings(state_dir=tmp_path, policy=policy_file, scorer="heuristic",
                        review_listen=None, workers=1)  # fmt: skip
    engine = Engine(settings)
    try:
        mia = Client("192.168.1.23", user="mia")
        item = Emotion(0.4, 0.35)
        assert engine.profile(mia).decide(item).action is Action.PASS
        AdjustmentFiles(tmp_path).save(ChildAdjustment("mia", {"lively": (-0.3,)}, 40))
        engine.review.learnt.reload()  # the engine also notices by itself within 2 s
        assert engine.profile(mia).decide(item).action is Action.CALM
        engine.review.start(engine.scheduler)
        assert {"nightly:preference-refit", "nightly:thumbnail-purge"} <= set(
            engine.scheduler.job_ids()
        )
        assert engine.review.server is None  # review_listen empty: no page
        # The nightly job refits only children with labels; none here, so nothing changes.
        assert engine.review.refit() == []
        assert engine.profile(mia).decide(item).action is Action.CALM
    finally:
        engine.review.stop()
        engine.executor.shutdown(wait=False)


def test_parents_marking_false_explicit_blocks_fine_raise_the_threshold() -> None:
    """The explicit classifier blocks skin-toned photos at 0.5; a family that marks those as
    fine (and agrees with blocks above 0.8) moves the rule towards 0.8."""
    policy = parse_policy(
        "version: 1\nchildren:\n  sam:\n    users: [sam]\n    preset: 8-12\ndefault:\n"
        "  preset: none\n"
    )
    profile = policy.profile_named("sam", datetime.now(UTC))
    rng = np.random.default_rng(4)
    items = []
    for explicit in rng.uniform(0, 1, 300):
        # Calm, pleasant pictures: only the explicit rule can touch them.
        emotion = Emotion(0.3, -0.5, float(explicit))
        wanted = Action.BLOCK if explicit > 0.8 else Action.PASS
        items.append(LabelledItem(emotion, wanted, profile))
    shifts = fit_shifts(items)
    assert 0.5 + shifts["explicit"][0] == pytest.approx(0.8, abs=0.05)
