"""policies/schema.json: valid for editors, accepts every example, rejects what we reject."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from moodgate.policy import PolicyError, parse_policy

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "policies" / "schema.json"
EXAMPLES = sorted((ROOT / "policies").glob("*.yaml"))
EMBEDDED = ROOT / "daemon" / "moodgate" / "data" / "default-policy.yaml"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def load(text: str) -> Any:
    return YAML(typ="safe").load(dedent(text))


def test_there_are_three_examples_each_referencing_the_schema() -> None:
    assert len(EXAMPLES) >= 3
    for path in EXAMPLES:
        assert path.read_text().startswith("# yaml-language-server: $schema=./schema.json\n")


@pytest.mark.parametrize("path", [*EXAMPLES, EMBEDDED], ids=lambda p: p.name)
def test_schema_accepts_examples(validator: jsonschema.Draft7Validator, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(load(path.read_text()))]
    assert errors == []


BAD = {
    "bad-ip": """\
        children:
          mia: {devices: [192.168.1.300]}
        """,
    "unknown-key": """\
        children:
          mia: {devices: [10.0.0.1], prest: teen}
        """,
    "bad-preset": """\
        default: {preset: toddler}
        """,
    "bad-condition": """\
        default:
          rules: [{name: x, when: "excitement > 0.3", action: block}]
        """,
    "or-condition": """\
        default:
          rules: [{name: x, when: "valence < 0 or arousal > 0", action: block}]
        """,
    "bad-target": """\
        default:
          rules: [{name: x, when: "arousal > 0", action: calm, target: "arousal >= 0.5"}]
        """,
    "target-on-block": """\
        default:
          rules: [{name: x, when: "arousal > 0", action: block, target: "arousal <= 0"}]
        """,
    "rule-without-name": """\
        default:
          rules: [{when: "arousal > 0", action: block}]
        """,
    "bad-day": """\
        default:
          schedule: {bedtime: {when: "mon-fry 20:00-07:00"}}
        """,
    "bad-time": """\
        default:
          schedule: {bedtime: {when: "mon-fri 20:00-25:00"}}
        """,
    "window-without-when": """\
        default:
          schedule: {bedtime: {preset: under-8}}
        """,
    "url-host": """\
        default: {always_pass: ["https://school.example/"]}
        """,
    "on-error-calm": """\
        default: {on_error: calm}
        """,
    "bad-size": """\
        default: {inspect: {min_bytes: lots}}
        """,
    "child-without-devices": """\
        children:
          mia: {preset: teen}
        """,
    "reserved-child-name": """\
        children:
          default: {devices: [10.0.0.1]}
        """,
    "devices-on-default": """\
        default: {devices: [10.0.0.1]}
        """,
    "version-2": """\
        version: 2
        """,
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_schema_and_parser_both_reject(validator: jsonschema.Draft7Validator, name: str) -> None:
    text = BAD[name]
    assert list(validator.iter_errors(load(text))), f"schema accepted {name}"
    with pytest.raises(PolicyError):
        parse_policy(dedent(text))


def test_schema_knows_the_same_keys_as_the_parser() -> None:
    from moodgate.policy import loader

    schema = json.loads(SCHEMA_PATH.read_text())
    definitions = schema["definitions"]

    def keys(definition: str) -> set[str]:
        return set(definitions[definition]["properties"])

    assert set(schema["properties"]) == set(loader._TOP_KEYS)
    assert keys("child") == set(loader._CHILD_KEYS)
    assert keys("defaultProfile") == set(loader._PROFILE_KEYS)
    assert keys("parents") == set(loader._PARENT_KEYS)
    assert keys("window") == set(loader._WINDOW_KEYS)
    assert keys("rule") == set(loader._RULE_KEYS)
    assert keys("inspect") == set(loader._INSPECT_KEYS)
    assert set(definitions["preset"]["enum"]) == set(loader.PRESET_NAMES)
