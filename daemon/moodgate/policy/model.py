"""The values the proxy works with: a validated, immutable Policy and the Profile in force."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import StrEnum
from pathlib import Path

from moodgate.emotion.base import Emotion, VATarget
from moodgate.policy.conditions import Condition
from moodgate.policy.devices import DeviceDirectory
from moodgate.policy.hosts import host_matches, normalise_host
from moodgate.policy.schedule import Window


class Action(StrEnum):
    PASS = "pass"
    CALM = "calm"
    BLOCK = "block"


@dataclass(frozen=True)
class Client:
    """Who is asking: the client IP as the proxy sees it and the proxy-auth user, if any."""

    address: str
    user: str | None = None

    @property
    def viewer(self) -> str:
        """"address/user": one viewer, for what is remembered per viewer (streams, copies)."""
        return f"{self.address}/{self.user or ''}"


@dataclass(frozen=True)
class Decision:
    action: Action
    rule: str  # e.g. "mia/bedtime/scary"
    target: VATarget | None = None  # for CALM: where to calm to
    # For CALM: CALM keeps the best calmed attempt; BLOCK blocks when the target is not reached.
    if_unreached: Action = Action.CALM


@dataclass(frozen=True)
class Inspect:
    images: bool = True
    video: bool = True
    min_width: int = 48
    min_height: int = 48
    min_bytes: int = 2048
    max_video_bytes: int = 64 * 1024 * 1024

    def too_small(self, width: int, height: int) -> bool:
        """Icons, spacers and tracking pixels: passed without scoring."""
        return width < self.min_width or height < self.min_height


@dataclass(frozen=True)
class Rule:
    """A region of the circumplex and what to do with items that land in it."""

    name: str
    condition: Condition
    action: Action
    target: VATarget | None = None
    if_unreached: Action = Action.CALM
    origin: str = ""  # "preset 8-12" or "policy", for explain


@dataclass(frozen=True)
class HostEntry:
    host: str
    action: Action  # PASS for always_pass, BLOCK for always_block
    scope: str  # "mia" or "mia/bedtime": where the entry was written

    @property
    def rule(self) -> str:
        return f"{self.scope}/{'always_pass' if self.action is Action.PASS else 'always_block'}"


@dataclass(frozen=True)
class Profile:
    """The rules in force for one child at one moment."""

    child: str
    window: str | None
    inspect: Inspect
    on_error: Action
    on_timeout: Action
    rules: tuple[Rule, ...] = ()
    hosts: tuple[HostEntry, ...] = ()
    pass_all: bool = False  # the parents' profile
    window_text: str | None = None  # "mon-fri 20:00-07:00", for explain
    # Video too large to buffer, or of unknown length: it cannot be judged. None = on_error.
    on_too_large: Action | None = None

    @property
    def too_large_action(self) -> Action:
        """What happens to video that cannot be judged because it is too large (or of unknown
        length): a parent who blocks what cannot be scored blocks this too, unless told."""
        return self.on_too_large or self.on_error

    @property
    def scope(self) -> str:
        return f"{self.child}/{self.window}" if self.window else self.child

    def host_entry(self, host: str) -> HostEntry | None:
        """The longest (most specific) matching entry; on a tie, blocking wins."""
        name = normalise_host(host)
        best: HostEntry | None = None
        for entry in self.hosts:
            if not host_matches(name, entry.host):
                continue
            if (
                best is None
                or len(entry.host) > len(best.host)
                or (len(entry.host) == len(best.host) and entry.action is Action.BLOCK)
            ):
                best = entry
        return best

    def for_host(self, host: str) -> Decision | None:
        if self.pass_all:
            return Decision(Action.PASS, f"{self.child}/pass-all")
        entry = self.host_entry(host)
        return Decision(entry.action, entry.rule) if entry else None

    @property
    def tests_explicit(self) -> bool:
        """Whether a rule reads `explicit`: only then is the explicit classifier worth its
        time (it costs more than a narrow emotion slice)."""
        return not self.pass_all and any(
            c.variable == "explicit" for rule in self.rules for c in rule.condition.comparisons
        )

    def matching_rule(self, emotion: Emotion) -> Rule | None:
        return next((r for r in self.rules if r.condition.holds(emotion)), None)

    def decide(self, emotion: Emotion) -> Decision:
        if self.pass_all:
            return Decision(Action.PASS, f"{self.child}/pass-all")
        rule = self.matching_rule(emotion)
        if rule is None:
            return Decision(Action.PASS, f"{self.scope}/no-rule-matched")
        return Decision(rule.action, f"{self.scope}/{rule.name}", rule.target, rule.if_unreached)


DEFAULT = "default"
PARENTS = "parents"


class Policy:
    """A validated policy; immutable once built, so the proxy can swap it atomically."""

    def __init__(
        self,
        *,
        source: Path | None,
        timezone: tzinfo,
        timezone_name: str,
        profiles: dict[tuple[str, str | None], Profile],
        windows: dict[str, tuple[Window, ...]],
        directory: DeviceDirectory,
        children: list[str],
    ) -> None:
        self.source = source
        self.timezone = timezone
        self.timezone_name = timezone_name
        self._profiles = dict(profiles)
        # The longest video body any profile has moodgate buffer and judge (LargeBodies).
        self.largest_video_bytes = max(
            (p.inspect.max_video_bytes for p in self._profiles.values() if p.inspect.video),
            default=0,
        )
        self._windows = dict(windows)
        self._directory = directory
        self._children = list(children)

    def children(self) -> list[str]:
        """The named children (not ``default`` or ``parents``), in file order."""
        return list(self._children)

    def profile_names(self) -> list[str]:
        return [*self._children, DEFAULT, PARENTS]

    def windows(self, child: str) -> tuple[Window, ...]:
        return self._windows.get(child, ())

    def local_time(self, at: datetime) -> datetime:
        """``at`` in the policy's zone; a naive ``at`` is taken to be local wall time already."""
        if at.tzinfo is None:
            return at.replace(tzinfo=self.timezone)
        return at.astimezone(self.timezone)

    def active_window(self, child: str, at: datetime) -> Window | None:
        local = self.local_time(at)
        # The first listed window wins when windows overlap, so parents control precedence.
        return next((w for w in self.windows(child) if w.active(local)), None)

    def profile_in(self, child: str, window: str | None = None) -> Profile:
        """The profile of `child` inside schedule window `window` (None: outside them all)."""
        return self._profiles[(child, window)]

    def claims(self, child: str) -> tuple[list[str], list[str]]:
        """(devices, proxy-auth users) that pick `child`, as written in the policy."""
        return self._directory.claims(child)

    def profile_named(self, child: str, at: datetime) -> Profile:
        if (child, None) not in self._profiles:
            raise KeyError(f"no child named '{child}' in this policy")
        window = self.active_window(child, at)
        return self._profiles[(child, window.name if window else None)]

    def owner(self, client: Client) -> str:
        return self._directory.owner(client.address, client.user) or DEFAULT

    def profile_for(self, client: Client, at: datetime) -> Profile:
        return self.profile_named(self.owner(client), at)
