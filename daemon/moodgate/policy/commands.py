"""``moodgate policy check`` and ``moodgate policy explain``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from moodgate.emotion.base import Emotion
from moodgate.policy.errors import PolicyError
from moodgate.policy.explain import explain_decision
from moodgate.policy.loader import default_policy, load_policy
from moodgate.policy.model import Policy


@click.group("policy")
def policy_group() -> None:
    """Check and explain parents' policy files."""


@policy_group.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check(files: tuple[Path, ...], as_json: bool) -> None:
    """Validate policy FILES; exit 0 when all are valid, else 1."""
    results = []
    for file in files:
        try:
            policy = load_policy(file)
        except PolicyError as error:
            results.append(
                {"file": str(file), "ok": False, "problems": [p.as_dict() for p in error.problems]}
            )
            if not as_json:
                for problem in error.problems:
                    click.echo(str(problem))
            continue
        windows = sum(len(policy.windows(name)) for name in policy.profile_names())
        results.append(
            {
                "file": str(file),
                "ok": True,
                "problems": [],
                "children": policy.children(),
                "windows": windows,
            }
        )
        if not as_json:
            click.echo(
                f"{file}: ok ({len(policy.children())} children, {windows} schedule windows)"
            )
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


def _parse_at(policy: Policy, text: str | None) -> datetime:
    if text is None:
        return datetime.now(policy.timezone)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"'{text}' is not a time like '2026-11-23 21:15'", param_hint="--at"
        ) from None
    # A time without a zone is wall-clock time where the policy's schedules are written.
    return policy.local_time(at)


@policy_group.command("explain")
@click.option("--child", required=True, help="Child name, or 'default' / 'parents'.")
@click.option("--at", "at_text", help="Local time 'YYYY-MM-DD HH:MM' (default: now).")
@click.option("--valence", type=click.FloatRange(-1, 1), required=True)
@click.option("--arousal", type=click.FloatRange(-1, 1), required=True)
@click.option("--explicit", type=click.FloatRange(0, 1), default=None)
@click.option("--host", default=None, help="The host the item came from.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy file (default: the embedded default policy).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def explain_command(
    child: str,
    at_text: str | None,
    valence: float,
    arousal: float,
    explicit: float | None,
    host: str | None,
    policy_file: Path | None,
    as_json: bool,
) -> None:
    """Say which window and rule apply to an item and what happens to it."""
    try:
        policy = load_policy(policy_file) if policy_file else default_policy()
    except PolicyError as error:
        for problem in error.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
    at = _parse_at(policy, at_text)
    try:
        result = explain_decision(policy, child, at, Emotion(valence, arousal, explicit), host)
    except KeyError:
        known = ", ".join(policy.profile_names())
        raise click.BadParameter(
            f"no child named '{child}' in this policy; known: {known}", param_hint="--child"
        ) from None
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(result.text)
