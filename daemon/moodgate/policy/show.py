"""What a policy does, child by child: the rules in force once presets are expanded."""

from __future__ import annotations

from typing import Any

from moodgate.policy.conditions import describe_target
from moodgate.policy.model import DEFAULT, PARENTS, Action, Policy, Profile, Rule


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


def _rule(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": rule.name,
        "when": str(rule.condition),
        "action": rule.action.value,
        "from": rule.origin or "policy",
    }
    if rule.action is Action.CALM and rule.target is not None:
        out["target"] = describe_target(rule.target)
        out["if_unreached"] = "block" if rule.if_unreached is Action.BLOCK else "keep"
    return out


def _profile(profile: Profile) -> dict[str, Any]:
    inspect = profile.inspect
    return {
        "rules": [_rule(r) for r in profile.rules],
        "always_pass": [h.host for h in profile.hosts if h.action is Action.PASS],
        "always_block": [h.host for h in profile.hosts if h.action is Action.BLOCK],
        "inspect": {
            "images": inspect.images,
            "video": inspect.video,
            "min_width": inspect.min_width,
            "min_height": inspect.min_height,
            "min_bytes": inspect.min_bytes,
            "max_video_bytes": inspect.max_video_bytes,
        },
        "on_error": profile.on_error.value,
        "on_timeout": profile.on_timeout.value,
        "on_too_large": profile.too_large_action.value,
        "on_too_large_set": profile.on_too_large is not None,
    }


def summarise(policy: Policy, child: str | None = None) -> list[dict[str, Any]]:
    """One entry per profile (children in file order, then default and parents); raises
    KeyError for a child the policy does not know."""
    names = policy.profile_names()
    if child is not None:
        if child not in names:
            raise KeyError(child)
        names = [child]
    out = []
    for name in names:
        devices, users = policy.claims(name)
        entry: dict[str, Any] = {"child": name, "devices": devices, "users": users}
        base = policy.profile_in(name)
        if base.pass_all:
            entry["pass_all"] = True
        else:
            entry.update(_profile(base))
            entry["windows"] = [
                {"name": w.name, "when": ", ".join(str(s) for s in w.spans),
                 **_profile(policy.profile_in(name, w.name))}
                for w in policy.windows(name)
            ]  # fmt: skip
        out.append(entry)
    return out


def _rule_lines(rules: list[dict[str, Any]], indent: str) -> list[str]:
    if not rules:
        return [f"{indent}no rules: everything passes"]
    width = max(len(r["name"]) for r in rules)
    lines = [f"{indent}rules, first match decides:"]
    for k, r in enumerate(rules, 1):
        then = r["action"]
        if "target" in r:
            fallback = "block" if r["if_unreached"] == "block" else "keep the calmest"
            then = f"calm until {r['target']}, else {fallback}"
        lines.append(f"{indent}  {k}. {r['name']:<{width}}  {r['when']} → {then}  ({r['from']})")
    lines.append(f"{indent}  otherwise pass")
    return lines


def _settings_lines(entry: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for key, label in (("always_pass", "always pass"), ("always_block", "always block")):
        if entry[key]:
            lines.append(f"{indent}{label}: {', '.join(entry[key])}")
    inspect = entry["inspect"]
    seen = [kind for kind in ("images", "video") if inspect[kind]]
    if seen:
        what = f"{' and '.join(seen)}; images under {inspect['min_width']}×"
        what += f"{inspect['min_height']} px or {_size(inspect['min_bytes'])} pass unscored"
        if inspect["video"]:
            what += f"; video up to {_size(inspect['max_video_bytes'])}"
        lines.append(f"{indent}inspects {what}")
    else:
        lines.append(f"{indent}inspects nothing: every picture and video passes unscored")
    too_large = entry["on_too_large"] + ("" if entry["on_too_large_set"] else " (as on_error)")
    lines.append(
        f"{indent}when scoring fails: {entry['on_error']}; too slow: {entry['on_timeout']}; "
        f"video too large to check: {too_large}"
    )
    return lines


def render(summary: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for entry in summary:
        who = [*entry["devices"], *(f"user {u}" for u in entry["users"])]
        if entry["child"] == DEFAULT:
            head = "default (every device nobody claims)"
        elif entry["child"] == PARENTS:
            head = "parents"
        else:
            head = entry["child"]
        if who:
            head += f": {', '.join(who)}"
        lines.append(head)
        if entry.get("pass_all"):
            lines.append("  everything passes, unscored")
            lines.append("")
            continue
        lines += _rule_lines(entry["rules"], "  ")
        lines += _settings_lines(entry, "  ")
        for window in entry["windows"]:
            lines.append(f"  in window '{window['name']}' ({window['when']}):")
            lines += _rule_lines(window["rules"], "    ")
            extra = [h for h in window["always_pass"] if h not in entry["always_pass"]]
            extra_block = [h for h in window["always_block"] if h not in entry["always_block"]]
            if extra:
                lines.append(f"    also always pass: {', '.join(extra)}")
            if extra_block:
                lines.append(f"    also always block: {', '.join(extra_block)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
