"""`moodgate …`: the commands a parent or an installer types.

Every command prints one clear line on stderr and exits non-zero on error; `--json` gives
machine-readable output where a command prints data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from moodgate import __version__
from moodgate.calm.commands import calm_command, styles_group
from moodgate.config import ConfigError, Settings, load_settings
from moodgate.emotion import Scorer, score
from moodgate.emotion.commands import explicit_group
from moodgate.emotion.explicit import ExplicitScorer, WithExplicit, load_explicit
from moodgate.emotion.registry import SCORERS, ScorerUnavailable, create_scorer, default_model_dir
from moodgate.media import MediaError
from moodgate.media.image import frames_for_scoring
from moodgate.policy import Policy, PolicyError, load_policy
from moodgate.policy.commands import policy_group
from moodgate.record.store import decision_by_id, recent_decisions
from moodgate.review.commands import learn_command, review_group
from moodgate.runtime.commands import calibrate_command
from moodgate.service_commands import install_service, reload_command, status_command

MODES = ("regular", "transparent", "wireguard")


def fail(message: str) -> None:
    raise click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="moodgate")
@click.pass_context
def main(ctx: click.Context) -> None:
    """moodgate: a parental content filter that passes, calms or blocks images by their mood."""
    ctx.obj = {"decision_lookup": _lookup_decision, "learnt_view": _learnt_view}


def _learnt_view(policy: Policy, state_dir: Path | None) -> Policy:
    from moodgate.review.adjust import LearntProfiles

    settings = load_settings(None, state_dir=state_dir)
    return LearntProfiles(settings.state_dir).policy(policy)  # type: ignore[return-value]


def _lookup_decision(state_dir: Path | None, decision_id: int) -> dict[str, Any] | None:
    return decision_by_id(load_settings(None, state_dir=state_dir).database, decision_id)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers calm


def parse_listen(value: str | None) -> tuple[str | None, int | None]:
    if not value:
        return None, None
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        fail(f"--listen {value!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    return host.strip("[]") or None, int(port)


@main.command()
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="Settings file.")
@click.option("--listen", metavar="HOST:PORT", help="Address to listen on [127.0.0.1:8080].")
@click.option("--mode", type=click.Choice(MODES), help="How devices reach the proxy.")
@click.option("--policy", type=click.Path(dir_okay=False, path_type=Path), help="Policy file.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scorer", help="auto, nested, heuristic, or a custom module:Class.")
@click.option("--debug-headers", is_flag=True, default=None, help="Add X-Moodgate headers.")
@click.option("--set", "mitm_options", multiple=True, metavar="NAME=VALUE",
              help="A mitmproxy option, as with mitmdump --set (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
def serve(
    config: Path | None,
    listen: str | None,
    mode: str | None,
    policy: Path | None,
    state_dir: Path | None,
    scorer: str | None,
    debug_headers: bool | None,
    mitm_options: tuple[str, ...],
    quiet: bool,
) -> None:
    """Run the filtering proxy (mitmproxy with the moodgate addon)."""
    host, port = parse_listen(listen)
    settings = _settings(
        config, listen_host=host, listen_port=port, mode=mode, policy=policy,
        state_dir=state_dir, scorer=scorer, debug_headers=debug_headers,
    )  # fmt: skip
    if settings.policy is not None:
        # Refuse to start on a broken policy: silently filtering by the default would be worse.
        try:
            load_policy(settings.policy, neighbours=settings.neighbours)
        except PolicyError as exc:
            fail("the policy is invalid:\n" + "\n".join(str(p) for p in exc.problems))
        except OSError as exc:
            fail(f"cannot read the policy file: {exc}")
    _startup_checks(settings, mitm_options)
    # mitmproxy's terminal log prints every record; it only needs the level.
    logging.getLogger().setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    asyncio.run(_serve(config, settings, mitm_options))


def _proxyauth(settings: Settings, mitm_options: tuple[str, ...]) -> str | None:
    """The proxyauth in force: a `--set proxyauth=` wins over the config file's."""
    for option in reversed(mitm_options):
        name, _, value = option.partition("=")
        if name.strip() == "proxyauth":
            return value
    return settings.proxyauth


def _startup_checks(settings: Settings, mitm_options: tuple[str, ...]) -> None:
    """Refuse to become an open proxy or to leave the CA key readable; one line each."""
    from moodgate.security import ListenPolicy, SecretFiles, SecurityError

    try:
        ListenPolicy(settings.allow_public, _proxyauth(settings, mitm_options)).check(
            settings.listen_host
        )
        # Everything the daemon creates from here on (CA key, database) is owner-only.
        os.umask(0o077)
        secrets = SecretFiles(settings.state_dir, settings.database)
        secrets.prepare()
        secrets.check()
    except SecurityError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot prepare the state directory {settings.state_dir}: {exc}")


async def _serve(config: Path | None, settings: Settings, mitm_options: tuple[str, ...]) -> None:
    from mitmproxy import exceptions, options
    from mitmproxy.master import Master

    from moodgate.addon import build_addons
    from moodgate.mitm_addons import filter_addons
    from moodgate.service import ServiceHooks

    confdir = settings.state_dir / "mitmproxy"
    confdir.mkdir(parents=True, exist_ok=True)
    opts = options.Options(
        listen_host=settings.listen_host,
        listen_port=settings.listen_port,
        mode=[settings.mode],
        confdir=str(confdir),
    )
    master = Master(opts, with_termlog=True)
    master.addons.add(*filter_addons())
    moodgate_options = {
        "moodgate_config": str(config) if config else "",
        "moodgate_policy": str(settings.policy or ""),
        "moodgate_state_dir": str(settings.state_dir),
        "moodgate_scorer": settings.scorer,
        "moodgate_debug_headers": str(settings.debug_headers).lower(),
    }
    if settings.proxyauth:
        moodgate_options["proxyauth"] = settings.proxyauth
    try:
        # Deferred, so the addon is configured once, with these values, when it registers.
        opts.set(*(f"{k}={v}" for k, v in moodgate_options.items()), *mitm_options, defer=True)
    except exceptions.OptionsError as exc:
        fail(f"--set: {exc}")
    addon, every_addon = build_addons()
    master.addons.add(*every_addon)
    if opts.deferred:
        fail(f"--set: unknown option(s): {', '.join(sorted(opts.deferred))} (moodgate serve "
             "runs only the mitmproxy addons a filter needs; see moodgate/mitm_addons.py)")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, master.shutdown)
    loop.add_signal_handler(signal.SIGTERM, master.shutdown)
    hooks = ServiceHooks(addon, master, settings.mode, settings.state_dir)
    master.addons.add(hooks)
    loop.add_signal_handler(signal.SIGHUP, hooks.reload)
    await master.run()
    if not hooks.was_ready:
        # A non-zero exit, so systemd's Restart=on-failure and the shell both see it.
        fail("moodgate stopped before it was ready; the reason is logged above")


@main.command("score")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--width", type=float, help="Model slice width (fraction of full MFLOPs).")
@click.option("--precision", type=click.Choice(["fp32", "int8"]),
              help="Model precision [default: the widest slice, fp32 where both exist].")
@click.option("--scorer", "scorer_kind", type=click.Choice(SCORERS), default="auto")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--explicit/--no-explicit", "rate_explicit", default=True, show_default=True,
              help="Also rate how explicit each image is (0…1), where the classifier ships.")
def score_command(
    files: tuple[Path, ...],
    as_json: bool,
    width: float | None,
    precision: str | None,
    scorer_kind: str,
    model_dir: Path | None,
    rate_explicit: bool,
) -> None:
    """Score images: valence and arousal in −1…+1 (and explicit in 0…1), one line per file."""
    if width is not None and scorer_kind == "auto":
        scorer_kind = "nested"
    try:
        scorer = create_scorer(scorer_kind, model_dir, width, precision)
    except (ScorerUnavailable, ValueError) as exc:
        fail(str(exc))
        return
    explicit: ExplicitScorer | None = None
    if rate_explicit:
        try:
            explicit = load_explicit(model_dir or default_model_dir())
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            click.echo(f"moodgate: explicit not rated: {exc}", err=True)
    # As the proxy does: explicit at the size paired with the slice (full size beside w1).
    judge: Scorer = WithExplicit(scorer, explicit) if explicit is not None else scorer
    failures = 0
    for path in files:
        try:
            _, frames = frames_for_scoring(path.read_bytes(), size=judge.input_size)
            emotion = score(judge, frames)
        except (OSError, MediaError) as exc:
            click.echo(f"moodgate: {path}: {exc}", err=True)
            failures += 1
            continue
        result = {
            "file": str(path),
            "valence": round(emotion.valence, 4),
            "arousal": round(emotion.arousal, 4),
            "explicit": None if emotion.explicit is None else round(emotion.explicit, 4),
            "scorer": scorer.name,
            "width": scorer.width,
            "precision": scorer.precision,
        }
        if as_json:
            click.echo(json.dumps(result))
        else:
            rated = "" if emotion.explicit is None else f"\texplicit={emotion.explicit:.3f}"
            click.echo(
                f"{path}\tvalence={result['valence']:+.3f}\tarousal={result['arousal']:+.3f}"
                f"{rated}\t{scorer.name} width={scorer.width} {scorer.precision}"
            )
    if failures:
        sys.exit(1)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str) -> timedelta:
    match = _DURATION.match(value)
    if not match:
        fail(f"--since {value!r}: expected a duration like 30m, 1h, 2d or 1w")
        raise AssertionError
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


LOG_COLUMNS = ("id", "time", "child", "action", "valence", "arousal", "rule", "host", "path")


@main.command("log")
@click.option("--child", help="Only this child's decisions.")
@click.option("--since", default="1d", show_default=True, help="How far back: 30m, 1h, 2d, 1w.")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
def log_command(
    child: str | None,
    since: str,
    limit: int,
    as_json: bool,
    config: Path | None,
    state_dir: Path | None,
) -> None:
    """Recent decisions, newest first."""
    settings = _settings(config, state_dir=state_dir)
    rows = recent_decisions(settings.database, child=child, since=parse_since(since), limit=limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no decisions recorded in that period", err=True)
        return
    for row in rows:
        valence = "" if row["valence"] is None else f"{row['valence']:+.2f}"
        arousal = "" if row["arousal"] is None else f"{row['arousal']:+.2f}"
        extra = f"  ({row['outcome']}: {row['error']})" if row["error"] else ""
        click.echo(
            f"{row['id']:>6}  {row['time'][:19]}  {row['child']:<10} {row['action']:<5}"
            f" v={valence:>5} a={arousal:>5}  {row['rule']:<28} {row['host']}{row['path']}{extra}"
        )


@main.command("train")
@click.option("--data", "data", multiple=True, required=True, metavar="DIR_OR_MANIFEST",
              help="An OASIS-style directory or a CSV manifest (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("models"),
              show_default=True, help="Where the ONNX slices and manifest.json go.")
@click.option("--epochs", default=10, show_default=True,
              help="Ordered-dropout training epochs (10 reproduces the shipped artifacts; "
                   "0 skips training: the pretrained backbone, cut and read out).")
@click.option("--seed", default=20260, show_default=True, help="Split and training seed.")
def train_command(data: tuple[str, ...], out: Path, epochs: int, seed: int) -> None:
    """Train the nested model and export every slice (needs the `train` extra: torch)."""
    try:
        from moodgate.training.train import train
    except ImportError as exc:
        fail(f"training needs the train extra (pip install 'moodgate[train]'): {exc}")
        return
    manifest = train(list(data), out, epochs=epochs, seed=seed, progress=True)
    click.echo(f"wrote {len(manifest['slices'])} slices and manifest.json to {out}")


@main.command("eval")
@click.option("--data", "data", multiple=True, required=True, metavar="DIR_OR_MANIFEST",
              help="An OASIS-style directory or a CSV manifest (repeatable).")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per slice.")
def eval_command(data: tuple[str, ...], model_dir: Path | None, as_json: bool) -> None:
    """Accuracy and speed of every shipped slice (and the hand-crafted baseline) on the
    validation split of DATA."""
    from moodgate.emotion.evaluate import evaluate, format_table

    try:
        rows = evaluate(list(data), model_dir or default_model_dir())
    except (OSError, ValueError, KeyError) as exc:
        fail(f"cannot evaluate: {exc}")
        return
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        click.echo(format_table(rows))


main.add_command(policy_group)
main.add_command(install_service)
main.add_command(reload_command)
main.add_command(status_command)
main.add_command(calm_command)
main.add_command(styles_group)
main.add_command(review_group)
main.add_command(learn_command)
main.add_command(calibrate_command)
main.add_command(explicit_group)


if __name__ == "__main__":
    main()
