"""Settings: where things live, how much work to do, how long to wait.

Defaults < the YAML config file (`--config`) < values given on the command line / mitmproxy
`--set moodgate_*` options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError


class ConfigError(ValueError):
    """The config file is unreadable or names an unknown or ill-typed setting."""


def default_state_dir() -> Path:
    """$STATE_DIRECTORY under systemd, else $MOODGATE_STATE_DIR, else ~/.local/state/moodgate."""
    for variable in ("MOODGATE_STATE_DIR", "STATE_DIRECTORY"):
        if os.environ.get(variable):
            return Path(os.environ[variable].split(":")[0])
    return Path.home() / ".local" / "state" / "moodgate"


@dataclass(frozen=True)
class Settings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    mode: str = "regular"
    policy: Path | None = None  # None: the embedded default policy
    state_dir: Path = field(default_factory=default_state_dir)
    model_dir: Path | None = None  # None: the shipped models/
    scorer: str = "auto"  # auto | nested | heuristic
    model_width: float | None = None  # None: the widest slice
    precision: str | None = None  # None: fp32 where a width ships both, else int8
    workers: int = 0  # 0: one per CPU core
    deadline_ms: int = 3000
    # Video: a whole segment or file is decoded, scored and maybe re-encoded (docs/video.md).
    video_deadline_ms: int = 10000
    video_sample_fps: float = 0.5  # at most this many scored frames per second of video
    video_max_frames: int = 32  # per file or segment
    video_hold_segments: int = 2  # hysteresis: milder segments before a stream relaxes
    # Judged copies of progressive video files kept for players' ranged requests (MiB; 0: off).
    video_copies_mb: int = 128
    # p95 added latency per image the slice choice aims for (runtime.py); a router's default.
    latency_budget_ms: float = 150.0
    # Under overload past what the narrowest slice can carry, or while the event loop runs
    # late with every worker busy, apply the policy's on_timeout at once instead of queueing
    # (off: items queue until deadline_ms, then on_timeout).
    shed_overload: bool = False
    # Rate how explicit each picture is (models/explicit.json) for rules that test `explicit`;
    # no: those rules never match, and a router saves ≈ 8 ms of CPU per picture.
    explicit: bool = True
    debug_headers: bool = False
    retention_days: float = 30.0
    log_query_strings: bool = False
    cache_entries: int = 4096
    max_image_bytes: int = 32 * 1024 * 1024
    neighbours: Path | None = None  # the kernel neighbour table; None: /proc/net/arp
    # The parents' review page (LAN only); empty or "off" disables it.
    review_listen: str | None = "127.0.0.1:8081"
    review_thumbnails: bool = True  # keep ≤128 px thumbnails of calmed and blocked items
    # Apps that pin their own certificate: pass their hosts through uninspected once refused
    # (per device, only on devices that trust the CA; pinning.py). No: such apps fail.
    pass_pinned_apps: bool = True
    # Listening on a public address needs both (see security.py); proxyauth is mitmproxy's
    # option ("@/etc/moodgate/htpasswd", "user:pass"), and its user name picks the child.
    allow_public: bool = False
    proxyauth: str | None = None

    @property
    def database(self) -> Path:
        return self.state_dir / "decisions.sqlite"

    @property
    def worker_count(self) -> int:
        """`workers`, or one per usable core. With shedding on, one core fewer: then latency
        comes first, and scoring on every core starves mitmproxy's event loop, which every
        request needs, scored or not (docs/performance.md, "A leaner proxy core and
        latency-first shedding")."""
        if self.workers:
            return self.workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
        return max(1, cores - 1) if self.shed_overload else cores

    def merged(self, values: dict[str, Any]) -> Settings:
        """A copy with `values` applied, each coerced to its field's type."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown setting {key!r}")
            changes[name] = _coerce(name, value, getattr(self, name), known[name].type)
        return replace(self, **changes)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any, current: Any, annotation: Any) -> Any:
    text = str(annotation)
    if value is None or value == "":
        if "None" in text:
            return None
        raise ConfigError(f"setting {name!r} needs a value")
    try:
        if "Path" in text:
            return Path(str(value)).expanduser()
        if "bool" in text:
            if isinstance(value, str):
                word = value.strip().lower()
                if word not in _TRUE | _FALSE:
                    raise ValueError(word)
                return word in _TRUE
            return bool(value)
        if "int" in text and "float" not in text:
            return int(value)
        if "float" in text:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: {value!r} is not a valid {text}") from exc


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    settings = Settings()
    if config_file is not None:
        try:
            data = YAML(typ="safe").load(config_file.read_text(encoding="utf-8")) or {}
        except (OSError, YAMLError) as exc:
            raise ConfigError(f"{config_file}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{config_file}: expected a mapping of settings")
        settings = settings.merged(data)
    return settings.merged({k: v for k, v in overrides.items() if v is not None})
