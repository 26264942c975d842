"""One readable paragraph on why an item would be passed, calmed or blocked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from moodgate.emotion.base import Emotion
from moodgate.policy.conditions import describe_target
from moodgate.policy.model import Action, Decision, Policy, Profile

_VERB = {Action.PASS: "passes", Action.CALM: "is calmed", Action.BLOCK: "is blocked"}


@dataclass(frozen=True)
class Explanation:
    child: str
    local_time: datetime
    timezone: str
    window: str | None
    window_text: str | None
    host: str | None
    emotion: Emotion
    decision: Decision
    text: str

    def as_dict(self) -> dict[str, Any]:
        target = self.decision.target
        return {
            "child": self.child,
            "at": self.local_time.isoformat(timespec="minutes"),
            "timezone": self.timezone,
            "window": self.window,
            "window_when": self.window_text,
            "host": self.host,
            "valence": self.emotion.valence,
            "arousal": self.emotion.arousal,
            "explicit": self.emotion.explicit,
            "action": self.decision.action.value,
            "rule": self.decision.rule,
            "target": describe_target(target) if target else None,
            "if_unreached": "block" if self.decision.if_unreached is Action.BLOCK else "keep",
            "explanation": self.text,
        }


def _score(emotion: Emotion) -> str:
    text = f"valence {emotion.valence:+.2f}, arousal {emotion.arousal:+.2f}"
    if emotion.explicit is not None:
        text += f", explicit {emotion.explicit:.2f}"
    return text


def _rule_sentence(profile: Profile, emotion: Emotion, decision: Decision) -> str:
    rule = profile.matching_rule(emotion)
    score = f"An item scoring {_score(emotion)}"
    if rule is None:
        return f"{score} matches none of the {len(profile.rules)} rules in force, so it passes."
    origin = f", from {rule.origin}" if rule.origin else ""
    sentence = (
        f"{score} matches rule '{rule.name}' ({rule.condition}{origin}), "
        f"so it {_VERB[decision.action]}"
    )
    if decision.action is Action.CALM and decision.target is not None:
        fallback = (
            "it is blocked"
            if decision.if_unreached is Action.BLOCK
            else "the calmest attempt is kept"
        )
        sentence += (
            f" until {describe_target(decision.target)}; if calming cannot get there, {fallback}"
        )
    return sentence + "."


def explain_decision(
    policy: Policy, child: str, at: datetime, emotion: Emotion, host: str | None = None
) -> Explanation:
    """Raises KeyError for a child the policy does not know."""
    profile = policy.profile_named(child, at)
    local = policy.local_time(at)
    when = local.strftime("%a %Y-%m-%d %H:%M")
    parts = [f"At {when} ({policy.timezone_name}), {child}"]
    if profile.pass_all:
        parts.append(" is the parents' profile: everything passes unscored.")
    elif profile.window:
        parts.append(f" is in the '{profile.window}' window ({profile.window_text}).")
    else:
        parts.append(" is in no schedule window, so the everyday rules apply.")
    decision = profile.for_host(host) if host else None
    if profile.pass_all:
        decision = Decision(Action.PASS, f"{child}/pass-all")
    elif decision is not None:
        entry = profile.host_entry(host or "")
        listed = "always-pass" if decision.action is Action.PASS else "always-block"
        where = f"'{entry.host}' on the {listed} list" if entry else f"the {listed} list"
        parts.append(
            f" Host {host} matches {where}, so it {_VERB[decision.action]} without being scored."
        )
    else:
        if host:
            parts.append(f" Host {host} is on neither host list.")
        decision = profile.decide(emotion)
        parts.append(" " + _rule_sentence(profile, emotion, decision))
    parts.append(f" Decision: {decision.action.value} by {decision.rule}.")
    return Explanation(
        child,
        local,
        policy.timezone_name,
        profile.window,
        profile.window_text,
        host,
        emotion,
        decision,
        "".join(parts),
    )


def explain(
    policy: Policy, child: str, at: datetime, emotion: Emotion, host: str | None = None
) -> str:
    return explain_decision(policy, child, at, emotion, host).text
