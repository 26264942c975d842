"""``moodgate review …`` (password, standalone page, rating export) and ``moodgate learn``."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from moodgate.config import ConfigError, Settings, load_settings
from moodgate.emotion.base import Emotion
from moodgate.policy import Policy, PolicyError, default_policy, explain_decision, load_policy
from moodgate.review.adjust import AdjustmentFiles, LearntProfiles
from moodgate.review.auth import MIN_PASSWORD_LENGTH, PasswordFile
from moodgate.review.data import ReviewData
from moodgate.review.service import learner_for
from moodgate.review.thumbs import ThumbnailStore, thumbs_dir


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _policy(settings: Settings) -> Policy:
    try:
        if settings.policy is None:
            return default_policy(settings.neighbours)
        return load_policy(settings.policy, neighbours=settings.neighbours)
    except PolicyError as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        raise click.ClickException(f"the policy is invalid:\n{problems}") from None


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))(func)
    func = click.option("--policy", type=click.Path(dir_okay=False, path_type=Path),
                        help="Policy file (default: the configured one).")(func)  # fmt: skip
    return click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
                        help="Settings file.")(func)  # fmt: skip


@click.group("review")
def review_group() -> None:
    """The parents' review page: password, standalone server, rating export."""


@review_group.command("set-password")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from stdin.")
def set_password(state_dir: Path | None, config: Path | None, from_stdin: bool) -> None:
    """Set the review page's password (stored scrypt-hashed, 0600, in the state dir)."""
    settings = _settings(config, state_dir=state_dir)
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New review password", hide_input=True,
                                confirmation_prompt=True)  # fmt: skip
    try:
        PasswordFile(settings.state_dir).set(password)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"review password set (at least {MIN_PASSWORD_LENGTH} characters; "
               "existing sessions are logged out)", err=True)  # fmt: skip


@review_group.command("serve")
@common_options
@click.option("--listen", metavar="HOST:PORT", help="Address [the review_listen setting].")
def serve_review(
    config: Path | None, policy: Path | None, state_dir: Path | None, listen: str | None
) -> None:
    """Serve the review page alone, against a state dir (no proxy)."""
    from moodgate.review.app import ReviewServer, make_app, review_context

    settings = _settings(config, state_dir=state_dir, policy=policy)
    address = listen or settings.review_listen
    if not address:
        raise click.ClickException("no address: give --listen HOST:PORT")
    base = _policy(settings)
    learnt = LearntProfiles(settings.state_dir)
    context = review_context(settings.state_dir, settings.database,
                             lambda: learnt.policy(base), lambda: base)  # fmt: skip

    async def run() -> None:
        try:
            server = ReviewServer(make_app(context), address)
            server.start()
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"review page on http://{server.host}:{server.port}/", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()

    asyncio.run(run())


@review_group.command("export-ratings")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path))
def export_ratings(out: Path, state_dir: Path | None, config: Path | None) -> None:
    """Write parents' valence–arousal ratings as a training manifest (ratings.csv + images/),
    the CSV format `moodgate train` and the dataset loader accept."""
    settings = _settings(config, state_dir=state_dir)
    store = ThumbnailStore(thumbs_dir(settings.state_dir))
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    with (out / "ratings.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "valence", "arousal", "scale_min", "scale_max", "category"])
        for rating in ReviewData(settings.database).ratings():
            uid = rating.get("decision_uid") or ""
            source = store.path(str(uid), "before")
            if source is None or not source.exists():
                skipped += 1  # passed items keep no picture, so their ratings cannot train
                continue
            shutil.copyfile(source, images / f"{uid}.jpg")
            valence, arousal = rating["rating_valence"], rating["rating_arousal"]
            writer.writerow([f"images/{uid}.jpg", f"{valence:.4f}", f"{arousal:.4f}", -1, 1,
                             rating["child"]])  # fmt: skip
            written += 1
    click.echo(f"{written} rated images written to {out} ({skipped} without a stored picture)",
               err=True)  # fmt: skip


@click.command("learn")
@common_options
@click.option("--child", "children", multiple=True, help="Refit this child (repeatable); "
              "default: every child with labels.")  # fmt: skip
@click.option("--reset", is_flag=True, help="Drop learnt adjustments (of --child, else all).")
@click.option("--dry-run", is_flag=True, help="Report only; store nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def learn_command(
    config: Path | None,
    policy: Path | None,
    state_dir: Path | None,
    children: tuple[str, ...],
    reset: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Refit rule thresholds from parents' labels, or reset them to the policy file."""
    settings = _settings(config, state_dir=state_dir, policy=policy)
    if reset:
        files = AdjustmentFiles(settings.state_dir)
        removed = [n for c in children for n in files.reset(c)] if children else files.reset()
        click.echo(f"reset: {', '.join(removed) or 'nothing was learnt'}; the policy file's "
                   "rules apply as written", err=True)  # fmt: skip
        return
    base = _policy(settings)
    fitter = learner_for(settings, lambda: base)
    names = list(children) or fitter.children()
    known = set(base.profile_names())
    for name in names:
        if name not in known:
            raise click.ClickException(f"no child named '{name}' in the policy")
    if not names:
        click.echo("no labels yet: label items on the review page first", err=True)
        return
    reports = [fitter.refit(name, save=not dry_run) for name in names]
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        for report in reports:
            click.echo(report.text())


@review_group.command("explain")
@common_options
@click.option("--child", required=True, help="Child name, or 'default'.")
@click.option("--valence", type=click.FloatRange(-1, 1), required=True)
@click.option("--arousal", type=click.FloatRange(-1, 1), required=True)
@click.option("--explicit", type=click.FloatRange(0, 1), default=None)
@click.option("--host", default=None, help="The host the item came from.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def explain_learnt(
    config: Path | None,
    policy: Path | None,
    state_dir: Path | None,
    child: str,
    valence: float,
    arousal: float,
    explicit: float | None,
    host: str | None,
    as_json: bool,
) -> None:
    """Like `moodgate policy explain`, with this state dir's learnt adjustments applied."""
    settings = _settings(config, state_dir=state_dir, policy=policy)
    adjusted = LearntProfiles(settings.state_dir).policy(_policy(settings))
    at = datetime.now(adjusted.timezone)
    try:
        result = explain_decision(adjusted, child, at, Emotion(valence, arousal, explicit), host)
    except KeyError:
        raise click.BadParameter(f"no child named '{child}' in this policy",
                                 param_hint="--child") from None  # fmt: skip
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else result.text)
