"""Policies that parents edit: who each device belongs to, and which emotion regions are
passed, calmed or blocked for them, by time of day.

May import ``moodgate.emotion``; never media, record or the addon.
"""

from moodgate.policy.errors import PolicyError, PolicyProblem
from moodgate.policy.explain import Explanation, explain, explain_decision
from moodgate.policy.loader import default_policy, load_policy, parse_policy
from moodgate.policy.model import Action, Client, Decision, Inspect, Policy, Profile, Rule
from moodgate.policy.scheduler import PolicyScheduler
from moodgate.policy.watcher import PolicyWatcher

__all__ = [
    "Action",
    "Client",
    "Decision",
    "Explanation",
    "Inspect",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "PolicyScheduler",
    "PolicyWatcher",
    "Profile",
    "Rule",
    "default_policy",
    "explain",
    "explain_decision",
    "load_policy",
    "parse_policy",
]
