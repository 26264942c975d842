"""Parsing policy files: valid files build the right profiles, invalid ones say why, where."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from textwrap import dedent

import pytest

from moodgate.emotion.base import Emotion, VATarget
from moodgate.policy import (
    Action,
    Client,
    Decision,
    Inspect,
    PolicyError,
    PolicyProblem,
    default_policy,
    load_policy,
    parse_policy,
)

POLICIES = Path(__file__).resolve().parents[1] / "policies"
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(dedent(text), "p.yaml")
    return [str(p) for p in info.value.problems]


MIA = """\
timezone: Europe/Berlin
children:
  mia:
    devices: [192.168.1.23]
    preset: under-8
    rules:
      - name: intense
        when: "arousal > 0.4"
      - name: gloomy
        when: "valence < -0.2 and arousal < -0.3"
        action: calm
        target: "valence >= 0"
        if_unreached: keep
      - name: sad
        enabled: false
    always_pass: [school.example]
    always_block: [video.school.example, bad.example]
    inspect: {min_width: 64, min_bytes: 4 KiB, video: false}
    on_error: block
    schedule:
      bedtime:
        when: mon-fri 20:00-07:00
        rules:
          - name: scary
            when: always
"""


def test_examples_and_embedded_default_load() -> None:
    for path in sorted(POLICIES.glob("*.yaml")):
        assert load_policy(path).source == path
    policy = default_policy()
    profile = policy.profile_for(Client("10.9.8.7"), NOON)
    assert profile.child == "default"
    assert [r.name for r in profile.rules] == ["explicit", "scary", "intense"]  # 8-12 preset


def test_preset_override_and_rule_order() -> None:
    policy = parse_policy(MIA)
    profile = policy.profile_named("mia", NOON)
    # New rules first, then the preset's in place; 'sad' switched off.
    assert [r.name for r in profile.rules] == ["gloomy", "explicit", "scary", "intense"]
    intense = profile.rules[3]
    assert str(intense.condition) == "arousal > 0.4"
    assert intense.action is Action.CALM  # inherited from the preset
    assert intense.target == VATarget(arousal_at_most=0.0)
    assert intense.if_unreached is Action.BLOCK
    assert profile.inspect == Inspect(video=False, min_width=64, min_bytes=4096)
    assert (profile.on_error, profile.on_timeout) == (Action.BLOCK, Action.PASS)


def test_video_too_large_to_judge_follows_on_error_unless_told() -> None:
    """A parent who blocks what cannot be scored blocks what is too large to score, too."""
    policy = parse_policy(MIA)
    mia = policy.profile_named("mia", NOON)
    assert mia.on_too_large is None and mia.too_large_action is Action.BLOCK
    assert policy.profile_named("default", NOON).too_large_action is Action.PASS
    told = parse_policy(MIA.replace("    on_error: block\n", "    on_error: block\n"
                                    "    on_too_large: pass\n"))
    assert told.profile_named("mia", NOON).too_large_action is Action.PASS
    night = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)  # a schedule window keeps it
    assert told.profile_for(Client("192.168.1.23"), night).window == "bedtime"
    assert told.profile_for(Client("192.168.1.23"), night).too_large_action is Action.PASS


def test_decisions_name_their_rule() -> None:
    policy = parse_policy(MIA)
    mia = Client("192.168.1.23")
    day = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # Tue 13:00 Berlin
    night = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)  # Tue 22:00 Berlin
    assert policy.profile_for(mia, day).decide(Emotion(-0.6, 0.4)) == Decision(
        Action.BLOCK, "mia/scary"
    )
    assert policy.profile_for(mia, day).decide(Emotion(-0.3, -0.5)) == Decision(
        Action.CALM, "mia/gloomy", VATarget(valence_at_least=0.0), Action.CALM
    )
    assert policy.profile_for(mia, day).decide(Emotion(0.5, 0.1)) == Decision(
        Action.PASS, "mia/no-rule-matched"
    )
    night_profile = policy.profile_for(mia, night)
    assert night_profile.window == "bedtime"
    assert night_profile.decide(Emotion(0.5, 0.1)) == Decision(Action.BLOCK, "mia/bedtime/scary")
    assert policy.profile_for(Client("10.0.0.1"), day).decide(Emotion(0, 0)).rule == (
        "default/no-rule-matched"
    )


def test_host_lists_suffix_match_and_longest_wins() -> None:
    profile = parse_policy(MIA).profile_named("mia", NOON)
    assert profile.for_host("www.school.example") == Decision(Action.PASS, "mia/always_pass")
    assert profile.for_host("School.Example.:443") == Decision(Action.PASS, "mia/always_pass")
    assert profile.for_host("video.school.example") == Decision(Action.BLOCK, "mia/always_block")
    assert profile.for_host("cdn.video.school.example").action is Action.BLOCK
    assert profile.for_host("myschool.example") is None
    assert profile.for_host("other.example") is None


def test_parents_pass_everything() -> None:
    policy = parse_policy("parents: {devices: [192.168.1.10], users: [mum]}\n")
    for client in (Client("192.168.1.10"), Client("10.1.1.1", user="mum")):
        profile = policy.profile_for(client, NOON)
        assert profile.child == "parents"
        assert profile.for_host("anything.example") == Decision(Action.PASS, "parents/pass-all")
        assert profile.decide(Emotion(-1, 1, 1)) == Decision(Action.PASS, "parents/pass-all")
        assert not profile.inspect.images and not profile.inspect.video


def test_window_rules_start_from_the_childs_and_window_preset_replaces_them() -> None:
    policy = parse_policy(
        dedent("""\
        timezone: UTC
        children:
          leo:
            devices: [10.0.0.2]
            preset: teen
            rules: [{name: mine, when: "valence < -0.9", action: block}]
            always_pass: [school.example]
            schedule:
              homework:
                when: daily 15:00-17:00
                always_block: [games.example]
              bedtime:
                when: daily 20:00-07:00
                preset: under-8
        """)
    )
    homework = policy.profile_named("leo", datetime(2026, 1, 1, 16, tzinfo=UTC))
    assert homework.window == "homework"
    assert homework.rules[0].name == "mine"
    assert homework.for_host("www.games.example") == Decision(
        Action.BLOCK, "leo/homework/always_block"
    )
    assert homework.for_host("school.example") == Decision(Action.PASS, "leo/always_pass")
    bedtime = policy.profile_named("leo", datetime(2026, 1, 1, 23, tzinfo=UTC))
    assert [r.name for r in bedtime.rules] == ["explicit", "scary", "sad", "intense"]


def test_naive_at_is_policy_local_time() -> None:
    policy = parse_policy(MIA)
    assert policy.profile_named("mia", datetime(2026, 11, 24, 20, 30)).window == "bedtime"
    assert policy.profile_named("mia", datetime(2026, 11, 24, 19, 59)).window is None


def test_unknown_child_raises_key_error() -> None:
    with pytest.raises(KeyError):
        parse_policy(MIA).profile_named("nobody", NOON)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """\
            children:
              mia:
                devices:
                  - 192.168.1.23
                  - 192.168.1.300
            """,
            [
                "p.yaml:5:9: children.mia.devices[1]: '192.168.1.300' is not an IP address, "
                "CIDR or MAC"
            ],
        ),
        (
            """\
            children:
              mia:
                devices: [10.0.0.1]
                prest: under-8
            """,
            ["p.yaml:4:5: children.mia.prest: unknown key 'prest'; did you mean 'preset'?"],
        ),
        (
            """\
            children:
              mia:
                devices: [10.0.0.1]
                preset: toddler
            """,
            [
                "p.yaml:4:13: children.mia.preset: 'toddler' is not a preset; use under-8, 8-12, "
                "teen or none"
            ],
        ),
        (
            """\
            default:
              rules:
                - name: odd
                  when: "excitement > 0.3"
                  action: block
            """,
            [
                "p.yaml:4:13: default.rules[0].when: 'excitement' is not something a rule can "
                "test; use valence, arousal or explicit"
            ],
        ),
        (
            """\
            default:
              rules:
                - name: loud
                  when: "arousal > 0.3"
                  action: calm
            """,
            [
                "p.yaml:3:7: default.rules[0]: rule 'loud' calms, so it needs a target, e.g. "
                'target: "arousal <= -0.1"'
            ],
        ),
        (
            """\
            default:
              rules:
                - name: loud
                  when: "arousal > 0.3"
                  action: block
                  target: "arousal <= 0"
            """,
            ["p.yaml:3:7: default.rules[0]: rule 'loud': 'target' only applies to calm rules"],
        ),
        (
            """\
            default:
              rules:
                - when: "arousal > 0.3"
                  action: block
            """,
            [
                "p.yaml:3:7: default.rules[0]: a rule needs a name, e.g. name: scary (decisions "
                "are named after it)"
            ],
        ),
        (
            """\
            default:
              rules:
                - name: new
                  action: block
            """,
            [
                "p.yaml:3:7: default.rules[0]: rule 'new' needs when (it does not change a "
                "preset rule of that name)"
            ],
        ),
        (
            """\
            default:
              on_error: ignore
              on_timeout: calm
              on_too_large: stream
            """,
            [
                "p.yaml:2:13: default.on_error: 'ignore' is not an action here; use pass or block",
                "p.yaml:3:15: default.on_timeout: 'calm' is not an action here; use pass or block",
                "p.yaml:4:17: default.on_too_large: 'stream' is not an action here; use pass or "
                "block",
            ],
        ),
        (
            """\
            default:
              schedule:
                bedtime:
                  when: mon-fry 20:00-07:00
            """,
            [
                "p.yaml:4:13: default.schedule.bedtime.when: 'fry' is not a weekday; use mon, tue, "
                "wed, thu, fri, sat, sun"
            ],
        ),
        (
            """\
            default:
              schedule:
                bedtime:
                  when: [mon-fri 20:00-25:00, sat 20:00-20:00]
            """,
            [
                "p.yaml:4:14: default.schedule.bedtime.when[0]: '25:00' is not a time of day; "
                "hours run 00-23, minutes 00-59",
                "p.yaml:4:35: default.schedule.bedtime.when[1]: 'sat 20:00-20:00' starts and "
                "ends at 20:00, so it is empty",
            ],
        ),
        (
            """\
            default:
              schedule:
                bedtime:
                  preset: under-8
            """,
            [
                "p.yaml:4:7: default.schedule.bedtime: a window needs a 'when', e.g. when: "
                "mon-fri 20:00-07:00"
            ],
        ),
        (
            """\
            default:
              always_pass: [https://school.example/home]
            """,
            [
                "p.yaml:2:17: default.always_pass[0]: 'https://school.example/home' is a web "
                "address; write just the host name, e.g. 'school.example'"
            ],
        ),
        (
            """\
            default:
              inspect: {min_width: -1, min_bytes: lots, images: maybe}
            """,
            [
                "p.yaml:2:24: default.inspect.min_width: should be a whole number of pixels "
                "(0 or more), not the number -1",
                "p.yaml:2:39: default.inspect.min_bytes: should be a size in bytes like 2048, "
                "'2 KiB' or '64 MB', not 'lots'",
                "p.yaml:2:53: default.inspect.images: should be true or false, not 'maybe'",
            ],
        ),
        (
            """\
            timezone: Europe/Berln
            """,
            ["p.yaml:1:11: timezone: 'Europe/Berln' is not a time zone name like 'Europe/Berlin'"],
        ),
        (
            """\
            parents:
              devices: [192.168.1.10]
            children:
              mia:
                devices: [192.168.1.10]
            """,
            [
                "p.yaml:5:15: children.mia.devices[0]: '192.168.1.10' is already a device of "
                "parents; a device can belong to only one profile"
            ],
        ),
        (
            """\
            children:
              mia:
                preset: under-8
            """,
            [
                "p.yaml:3:5: children.mia: lists no devices or users, so nothing would ever use "
                "this profile; add e.g. devices: [192.168.1.23]"
            ],
        ),
        (
            """\
            children:
              default:
                devices: [10.0.0.1]
            """,
            [
                "p.yaml:2:3: children.default: 'default' is reserved; write it as a top-level "
                "'default:' section instead"
            ],
        ),
        (
            """\
            children:
              mia:
                devices: [10.0.0.1]
                rules:
                  - {name: nope, enabled: false}
            """,
            ["p.yaml:5:9: children.mia.rules[0]: there is no rule 'nope' to switch off"],
        ),
        (
            """\
            version: 2
            """,
            [
                "p.yaml:1:10: version: the number 2 is not a version this moodgate understands; "
                "use 1"
            ],
        ),
        (
            """\
            children:
              mia:
                devices: [10.0.0.1]
              mia:
                devices: [10.0.0.2]
            """,
            [
                "p.yaml:4:3: not valid YAML: 'mia' appears twice here; each name may appear "
                "only once"
            ],
        ),
        (
            """\
            children: [mia
            """,
            ["p.yaml:2:1: not valid YAML: expected ',' or ']', but got '<stream end>'"],
        ),
        ("", ["p.yaml:1:1: the file is empty; a policy needs at least 'children' or 'default'"]),
        (
            "- a\n- b\n",
            ["p.yaml:1:1: the policy should be a mapping of keys to values, not a list"],
        ),
    ],
)
def test_invalid_files_are_explained(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_problem_fields_and_several_problems_at_once() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(
            dedent("""\
            children:
              mia:
                devices: [192.168.1.300, not-a-mac]
                on_error: explode
            """),
            "policies/x.yaml",
        )
    first = info.value.problems[0]
    assert first == PolicyProblem(
        "policies/x.yaml",
        3,
        15,
        "children.mia.devices[0]",
        "'192.168.1.300' is not an IP address, CIDR or MAC",
    )
    assert len(info.value.problems) == 3
    assert "policies/x.yaml:3:15:" in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "missing.yaml")
    assert info.value.problems[0].message == "cannot read the file: No such file or directory"
