"""YAML text → validated Policy, collecting every problem with its line and column.

The validation is hand-written rather than done by jsonschema so that each message is in
plain words and points at the exact value; ``policies/schema.json`` mirrors it for editors.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from moodgate.emotion.base import VATarget
from moodgate.policy.conditions import Condition, parse_condition, parse_target
from moodgate.policy.devices import DeviceDirectory, NeighbourTable, parse_device
from moodgate.policy.errors import PolicyError, PolicyProblem
from moodgate.policy.hosts import parse_host_entry
from moodgate.policy.model import (
    DEFAULT,
    PARENTS,
    Action,
    HostEntry,
    Inspect,
    Policy,
    Profile,
    Rule,
)
from moodgate.policy.presets import DEFAULT_PRESET, PRESET_NAMES, preset_rules
from moodgate.policy.schedule import TimeSpan, Window, parse_span

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_RESERVED = {DEFAULT, PARENTS}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "ki": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "gi": 1024**3,
}

_TOP_KEYS = ("version", "timezone", "default", "parents", "children")
_PROFILE_KEYS = (
    "preset",
    "rules",
    "schedule",
    "always_pass",
    "always_block",
    "inspect",
    "on_error",
    "on_timeout",
    "on_too_large",
)
_CHILD_KEYS = ("devices", "users", *_PROFILE_KEYS)
_PARENT_KEYS = ("devices", "users")
_WINDOW_KEYS = ("when", "preset", "rules", "always_pass", "always_block")
_RULE_KEYS = ("name", "when", "action", "target", "if_unreached", "enabled")
_INSPECT_KEYS = ("images", "video", "min_width", "min_height", "min_bytes", "max_video_bytes")
_IF_UNREACHED = {"keep": Action.CALM, "block": Action.BLOCK}
EMBEDDED_SOURCE = "<embedded default-policy.yaml>"


@dataclass(frozen=True)
class _Loc:
    """Where a value sits in the file: a dotted path for people, line/column for editors."""

    path: str
    line: int
    column: int

    def key(self, parent: Any, key: str) -> _Loc:
        return self._at(self._child(key), lambda: parent.lc.value(key))

    def key_name(self, parent: Any, key: str) -> _Loc:
        """The position of the key itself, for "unknown key" messages."""
        return self._at(self._child(key), lambda: parent.lc.key(key))

    def item(self, parent: Any, index: int) -> _Loc:
        return self._at(f"{self.path}[{index}]", lambda: parent.lc.item(index))

    def _child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _at(self, path: str, position: Callable[[], tuple[int, int]]) -> _Loc:
        """ruamel's 0-based (line, column) when the node has it, else this location's."""
        line, column = self.line, self.column
        with contextlib.suppress(KeyError, TypeError, AttributeError, IndexError):
            line, column = (n + 1 for n in position())
        return _Loc(path, line, column)


@dataclass
class _RulePatch:
    """A rule as written: every field optional so it can change a preset rule by name."""

    name: str
    loc: _Loc
    when: Condition | None = None
    action: Action | None = None
    target: VATarget | None = None
    target_given: bool = False
    if_unreached: Action | None = None
    enabled: bool = True


@dataclass
class _RuleSet:
    preset: str | None = None
    patches: list[_RulePatch] = field(default_factory=list)


@dataclass
class _WindowSpec:
    name: str
    spans: tuple[TimeSpan, ...]
    rules: _RuleSet
    hosts: list[tuple[str, Action]]
    loc: _Loc


class _Reader:
    """Walks the YAML tree once, recording problems instead of stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[PolicyProblem] = []

    def error(self, loc: _Loc, message: str) -> None:
        self.problems.append(PolicyProblem(self.source, loc.line, loc.column, loc.path, message))

    # --- shapes -------------------------------------------------------------------------

    def mapping(self, value: Any, loc: _Loc, allowed: Iterable[str], what: str) -> dict | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(loc, f"{what} should be a mapping of keys to values, not {_kind(value)}")
            return None
        allowed = tuple(allowed)
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
                self.error(loc.key_name(value, key), f"unknown key '{key}'; {hint}")
        return value

    def items(self, value: Any, loc: _Loc, what: str) -> Iterator[tuple[Any, _Loc]]:
        if value is None:
            return
        if isinstance(value, str):  # a lone entry is a common slip; accept it
            yield value, loc
            return
        if not isinstance(value, list):
            self.error(loc, f"{what} should be a list, not {_kind(value)}")
            return
        for index, item in enumerate(value):
            yield item, loc.item(value, index)

    def text(self, value: Any, loc: _Loc, example: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.error(loc, f"should be text like {example}, not {_kind(value)}")
            return None
        return str(value)

    def boolean(self, value: Any, loc: _Loc) -> bool | None:
        if not isinstance(value, bool):
            self.error(loc, f"should be true or false, not {_show(value)}")
            return None
        return value

    def count(self, value: Any, loc: _Loc) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.error(loc, f"should be a whole number of pixels (0 or more), not {_show(value)}")
            return None
        return int(value)

    def size(self, value: Any, loc: _Loc) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return int(value)
        match = _SIZE.match(value) if isinstance(value, str) else None
        unit = match[2].lower() if match and match[2] else ""
        if not match or unit not in _UNITS:
            self.error(
                loc, f"should be a size in bytes like 2048, '2 KiB' or '64 MB', not {_show(value)}"
            )
            return None
        return int(float(match[1]) * _UNITS[unit])

    def action(self, value: Any, loc: _Loc, allowed: tuple[Action, ...]) -> Action | None:
        names = [a.value for a in allowed]
        if isinstance(value, str) and value.strip().lower() in names:
            return Action(value.strip().lower())
        self.error(loc, f"{_show(value)} is not an action here; use {_or(names)}")
        return None

    def name(self, value: Any, loc: _Loc, what: str) -> str | None:
        if not isinstance(value, str) or not _NAME.match(value):
            self.error(
                loc,
                f"{_show(value)} is not a usable {what} name; use letters, digits, "
                "'-' and '_', starting with a letter or digit",
            )
            return None
        return value

    # --- pieces -------------------------------------------------------------------------

    def rule(self, value: Any, loc: _Loc) -> _RulePatch | None:
        raw = self.mapping(value, loc, _RULE_KEYS, "a rule")
        if raw is None:
            return None
        if "name" not in raw:
            self.error(loc, "a rule needs a name, e.g. name: scary (decisions are named after it)")
            return None
        name = self.name(raw["name"], loc.key(raw, "name"), "rule")
        if name is None:
            return None
        patch = _RulePatch(name, loc)
        if "when" in raw:
            when_loc = loc.key(raw, "when")
            text = self.text(raw["when"], when_loc, '"valence < -0.5 and arousal > 0.3"')
            if text is not None:
                try:
                    patch.when = parse_condition(text)
                except ValueError as exc:
                    self.error(when_loc, str(exc))
        if "action" in raw:
            patch.action = self.action(raw["action"], loc.key(raw, "action"), tuple(Action))
        if "target" in raw:
            patch.target_given = True
            target_loc = loc.key(raw, "target")
            text = self.text(raw["target"], target_loc, '"arousal <= -0.1"')
            if text is not None:
                try:
                    patch.target = parse_target(text)
                except ValueError as exc:
                    self.error(target_loc, str(exc))
        if "if_unreached" in raw:
            value = raw["if_unreached"]
            if isinstance(value, str) and value.strip().lower() in _IF_UNREACHED:
                patch.if_unreached = _IF_UNREACHED[value.strip().lower()]
            else:
                self.error(
                    loc.key(raw, "if_unreached"),
                    f"{_show(value)} is not allowed here; use keep or block",
                )
        if "enabled" in raw:
            patch.enabled = self.boolean(raw["enabled"], loc.key(raw, "enabled")) is not False
        return patch

    def rule_set(self, raw: dict, loc: _Loc, fallback_preset: str | None) -> _RuleSet:
        rules = _RuleSet(preset=fallback_preset)
        if "preset" in raw:
            value = raw["preset"]
            preset = str(value).strip().lower() if isinstance(value, str | int) else None
            if preset in PRESET_NAMES:
                rules.preset = preset
            else:
                self.error(
                    loc.key(raw, "preset"),
                    f"{_show(value)} is not a preset; use {_or(PRESET_NAMES)}",
                )
        seen: set[str] = set()
        for item, item_loc in self.items(raw.get("rules"), loc.key(raw, "rules"), "rules"):
            patch = self.rule(item, item_loc)
            if patch is None:
                continue
            if patch.name in seen:
                self.error(item_loc, f"there is already a rule named '{patch.name}' in this list")
                continue
            seen.add(patch.name)
            rules.patches.append(patch)
        return rules

    def hosts(self, raw: dict, loc: _Loc) -> list[tuple[str, Action]]:
        hosts: list[tuple[str, Action]] = []
        for key, action in (("always_pass", Action.PASS), ("always_block", Action.BLOCK)):
            for item, item_loc in self.items(raw.get(key), loc.key(raw, key), key):
                text = self.text(item, item_loc, "'school.example'")
                if text is None:
                    continue
                try:
                    hosts.append((parse_host_entry(text), action))
                except ValueError as exc:
                    self.error(item_loc, str(exc))
        return hosts

    def inspect(self, value: Any, loc: _Loc) -> Inspect:
        raw = self.mapping(value, loc, _INSPECT_KEYS, "inspect")
        if not raw:
            return Inspect()
        fields: dict[str, Any] = {}
        for key in ("images", "video"):
            if key in raw:
                fields[key] = self.boolean(raw[key], loc.key(raw, key))
        for key in ("min_width", "min_height"):
            if key in raw:
                fields[key] = self.count(raw[key], loc.key(raw, key))
        for key in ("min_bytes", "max_video_bytes"):
            if key in raw:
                fields[key] = self.size(raw[key], loc.key(raw, key))
        return Inspect(**{k: v for k, v in fields.items() if v is not None})

    def window(self, name: str, value: Any, loc: _Loc) -> _WindowSpec | None:
        raw = self.mapping(value, loc, _WINDOW_KEYS, f"window '{name}'")
        if raw is None:
            return None
        if "when" not in raw:
            self.error(loc, "a window needs a 'when', e.g. when: mon-fri 20:00-07:00")
            return None
        spans = []
        for item, item_loc in self.items(raw["when"], loc.key(raw, "when"), "when"):
            text = self.text(item, item_loc, "'mon-fri 20:00-07:00'")
            if text is None:
                continue
            try:
                spans.append(parse_span(text))
            except ValueError as exc:
                self.error(item_loc, str(exc))
        if not spans:
            return None
        return _WindowSpec(
            name, tuple(spans), self.rule_set(raw, loc, None), self.hosts(raw, loc), loc
        )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"'{value}'"


def _show(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else _kind(value)


def _or(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


class _Builder:
    """Turns the read pieces into Profiles: presets, rule overrides, windows."""

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader

    def rules(self, base: tuple[Rule, ...], rule_set: _RuleSet) -> tuple[Rule, ...]:
        current: list[Rule | None] = list(
            base if rule_set.preset is None else preset_rules(rule_set.preset)
        )
        added: list[Rule] = []
        for patch in rule_set.patches:
            index = next((i for i, r in enumerate(current) if r and r.name == patch.name), None)
            old = current[index] if index is not None else None
            if not patch.enabled:
                if old is None:
                    self.reader.error(patch.loc, f"there is no rule '{patch.name}' to switch off")
                elif index is not None:
                    current[index] = None
                continue
            rule = self.merge(patch, old)
            if rule is None:
                continue
            if index is not None:
                current[index] = rule
            else:
                added.append(rule)
        # The parent's own new rules are checked before the preset's.
        return (*added, *(r for r in current if r is not None))

    def merge(self, patch: _RulePatch, old: Rule | None) -> Rule | None:
        if old is None:
            missing = [k for k, v in (("when", patch.when), ("action", patch.action)) if v is None]
            if missing:
                if not self._has_parse_error(patch.loc):
                    self.reader.error(
                        patch.loc,
                        f"rule '{patch.name}' needs "
                        f"{' and '.join(missing)} (it does not change a preset "
                        "rule of that name)",
                    )
                return None
        action = patch.action or (old.action if old else None)
        when = patch.when or (old.condition if old else None)
        if action is None or when is None:
            return None
        target = patch.target if patch.target_given else (old.target if old else None)
        if_unreached = patch.if_unreached or (old.if_unreached if old else Action.CALM)
        if action is not Action.CALM:
            if patch.target_given:
                self.reader.error(
                    patch.loc, f"rule '{patch.name}': 'target' only applies to calm rules"
                )
                return None
            if patch.if_unreached is not None:
                self.reader.error(
                    patch.loc, f"rule '{patch.name}': 'if_unreached' only applies to calm rules"
                )
                return None
            target, if_unreached = None, Action.CALM
        elif target is None:
            if not patch.target_given:
                self.reader.error(
                    patch.loc,
                    f"rule '{patch.name}' calms, so it needs a target, "
                    'e.g. target: "arousal <= -0.1"',
                )
            return None
        origin = "policy" if old is None else f"{old.origin}, changed in the policy"
        return Rule(patch.name, when, action, target, if_unreached, origin)

    def _has_parse_error(self, loc: _Loc) -> bool:
        return any(p.path.startswith(loc.path + ".") for p in self.reader.problems)


def _timezone(reader: _Reader, raw: dict, loc: _Loc) -> tuple[tzinfo, str]:
    if "timezone" in raw:
        value = raw["timezone"]
        if isinstance(value, str) and value.strip():
            try:
                return ZoneInfo(value.strip()), value.strip()
            except (ZoneInfoNotFoundError, ValueError):
                pass
        reader.error(
            loc.key(raw, "timezone"), f"{_show(value)} is not a time zone name like 'Europe/Berlin'"
        )
    return _local_timezone()


def _local_timezone() -> tuple[tzinfo, str]:
    """The box's own zone, which is what parents mean by "20:00"."""
    try:
        import tzlocal

        zone = tzlocal.get_localzone()
        return zone, str(zone)
    except Exception:  # no tzlocal, or a box with no zone configured: fall back to the libc view
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        return zone, str(zone)


def _read_yaml(text: str, source: str) -> Any:
    yaml = YAML(typ="rt")
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = exc.problem or exc.context or "not valid YAML"
        duplicate = re.match(r'found duplicate key "(.*?)" with value', message)
        if duplicate:  # ruamel's message dumps both values; parents only need the key
            message = f"'{duplicate[1]}' appears twice here; each name may appear only once"
        problem = PolicyProblem(source, line, column, "", f"not valid YAML: {message}")
        raise PolicyError([problem]) from None
    except YAMLError as exc:
        raise PolicyError([PolicyProblem(source, 0, 0, "", f"not valid YAML: {exc}")]) from exc


def parse_policy(
    text: str, source: str = "<string>", neighbours: Path | None = None, *, path: Path | None = None
) -> Policy:
    """Validate and build a Policy; raises PolicyError listing every problem found."""
    data = _read_yaml(text, source)
    reader = _Reader(source)
    root = _Loc("", 1, 1)
    if data is None:
        raise PolicyError(
            [
                PolicyProblem(
                    source,
                    1,
                    1,
                    "",
                    "the file is empty; a policy needs at least 'children' or 'default'",
                )
            ]
        )
    top = reader.mapping(data, root, _TOP_KEYS, "the policy")
    if top is None:
        raise PolicyError(reader.problems)
    if "version" in top and (isinstance(top["version"], bool) or top["version"] != 1):
        reader.error(
            root.key(top, "version"),
            f"{_show(top['version'])} is not a version this moodgate understands; use 1",
        )
    zone, zone_name = _timezone(reader, top, root)
    builder = _Builder(reader)
    directory = DeviceDirectory(NeighbourTable(neighbours))

    profiles: dict[tuple[str, str | None], Profile] = {}
    windows: dict[str, tuple[Window, ...]] = {}

    parents_raw = reader.mapping(top.get(PARENTS), root.key(top, PARENTS), _PARENT_KEYS, PARENTS)
    if parents_raw is not None:
        _register(reader, directory, PARENTS, parents_raw, root.key(top, PARENTS))
    profiles[(PARENTS, None)] = Profile(
        PARENTS,
        None,
        Inspect(images=False, video=False),
        Action.PASS,
        Action.PASS,
        pass_all=True,
    )

    children: list[str] = []
    children_loc = root.key(top, "children")
    children_raw = top.get("children") or {}
    if not isinstance(children_raw, dict):
        reader.error(
            children_loc,
            "children should map each child's name to their profile, "
            "e.g. mia: {devices: [192.168.1.23], preset: under-8}",
        )
        children_raw = {}
    for name, value in children_raw.items():
        loc = children_loc.key(children_raw, str(name))
        if reader.name(name, children_loc.key_name(children_raw, str(name)), "child") is None:
            continue
        if name.lower() in _RESERVED:
            reader.error(
                children_loc.key_name(children_raw, name),
                f"'{name}' is reserved; write it as a top-level '{name.lower()}:' section instead",
            )
            continue
        raw = reader.mapping(value, loc, _CHILD_KEYS, f"child '{name}'")
        if raw is None:
            continue
        if not raw.get("devices") and not raw.get("users"):
            reader.error(
                loc,
                "lists no devices or users, so nothing would ever use this "
                "profile; add e.g. devices: [192.168.1.23]",
            )
        _register(reader, directory, name, raw, loc)
        children.append(name)
        _profile(reader, builder, name, raw, loc, profiles, windows)

    default_loc = root.key(top, DEFAULT)
    default_raw = reader.mapping(top.get(DEFAULT), default_loc, _PROFILE_KEYS, DEFAULT)
    _profile(reader, builder, DEFAULT, default_raw or {}, default_loc, profiles, windows)

    if reader.problems:
        raise PolicyError(sorted(reader.problems, key=lambda p: (p.line, p.column)))
    return Policy(
        source=path,
        timezone=zone,
        timezone_name=zone_name,
        profiles=profiles,
        windows=windows,
        directory=directory,
        children=children,
    )


def _register(
    reader: _Reader, directory: DeviceDirectory, owner: str, raw: dict, loc: _Loc
) -> None:
    for item, item_loc in reader.items(raw.get("devices"), loc.key(raw, "devices"), "devices"):
        try:
            spec = parse_device(str(item) if item is not None else "")
        except ValueError as exc:
            reader.error(item_loc, str(exc))
            continue
        other = directory.add(spec, owner)
        if other is not None:
            reader.error(
                item_loc,
                f"'{spec.value}' is already a device of {other}; "
                "a device can belong to only one profile",
            )
    for item, item_loc in reader.items(raw.get("users"), loc.key(raw, "users"), "users"):
        if not isinstance(item, str) or not item.strip():
            reader.error(item_loc, f"{_show(item)} is not a proxy user name")
            continue
        other = directory.add_user(item.strip(), owner)
        if other is not None:
            reader.error(item_loc, f"user '{item.strip()}' already belongs to {other}")


def _profile(
    reader: _Reader,
    builder: _Builder,
    name: str,
    raw: dict,
    loc: _Loc,
    profiles: dict[tuple[str, str | None], Profile],
    windows: dict[str, tuple[Window, ...]],
) -> None:
    base_rules = builder.rules((), reader.rule_set(raw, loc, DEFAULT_PRESET))
    hosts = tuple(HostEntry(h, a, name) for h, a in reader.hosts(raw, loc))
    inspect = reader.inspect(raw.get("inspect"), loc.key(raw, "inspect"))
    on_error = on_timeout = Action.PASS
    if "on_error" in raw:
        on_error = (
            reader.action(raw["on_error"], loc.key(raw, "on_error"), (Action.PASS, Action.BLOCK))
            or Action.PASS
        )
    if "on_timeout" in raw:
        on_timeout = (
            reader.action(
                raw["on_timeout"], loc.key(raw, "on_timeout"), (Action.PASS, Action.BLOCK)
            )
            or Action.PASS
        )
    on_too_large = None
    if "on_too_large" in raw:
        on_too_large = reader.action(
            raw["on_too_large"], loc.key(raw, "on_too_large"), (Action.PASS, Action.BLOCK)
        )
    profiles[(name, None)] = Profile(
        name, None, inspect, on_error, on_timeout, base_rules, hosts, on_too_large=on_too_large
    )

    schedule_loc = loc.key(raw, "schedule")
    schedule = raw.get("schedule")
    if schedule is not None and not isinstance(schedule, dict):
        reader.error(
            schedule_loc,
            "schedule should map window names to windows, e.g. "
            "bedtime: {when: mon-fri 20:00-07:00, preset: under-8}",
        )
        schedule = None
    built: list[Window] = []
    for window_name, value in (schedule or {}).items():
        key_loc = schedule_loc.key_name(schedule, str(window_name))
        if reader.name(window_name, key_loc, "window") is None:
            continue
        spec = reader.window(window_name, value, schedule_loc.key(schedule, window_name))
        if spec is None:
            continue
        scope = f"{name}/{window_name}"
        window_hosts = tuple(HostEntry(h, a, scope) for h, a in spec.hosts)
        profiles[(name, window_name)] = Profile(
            name,
            window_name,
            inspect,
            on_error,
            on_timeout,
            builder.rules(base_rules, spec.rules),
            window_hosts + hosts,
            window_text=", ".join(str(s) for s in spec.spans),
            on_too_large=on_too_large,
        )
        built.append(Window(window_name, spec.spans))
    windows[name] = tuple(built)


def load_policy(path: Path, neighbours: Path | None = None) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = PolicyProblem(str(path), 0, 0, "", f"cannot read the file: {reason}")
        raise PolicyError([problem]) from None
    return parse_policy(text, str(path), neighbours, path=path)


def default_policy(neighbours: Path | None = None) -> Policy:
    """The policy shipped inside the package, used when no policy file is configured."""
    text = resources.files("moodgate").joinpath("data/default-policy.yaml").read_text("utf-8")
    return parse_policy(text, EMBEDDED_SOURCE, neighbours)
