"""``moodgate policy check``, ``moodgate policy show`` and ``moodgate policy explain``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from moodgate.emotion.base import Emotion
from moodgate.policy.errors import PolicyError
from moodgate.policy.explain import explain_decision
from moodgate.policy.loader import default_policy, load_policy
from moodgate.policy.model import Policy
from moodgate.policy.show import render, summarise


@click.group("policy")
def policy_group() -> None:
    """Check and explain parents' policy files."""


# (state_dir or None for the configured one, decision id) → the recorded row, or None.
DecisionLookup = Callable[[Path | None, int], Mapping[str, Any] | None]
# (policy, state_dir or None for the configured one) → the policy with learnt adjustments.
LearntView = Callable[[Policy, Path | None], Policy]


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


@policy_group.command("show")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--child", help="Only this child (or 'default' / 'parents').")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="State dir whose learnt adjustments apply (default: the configured one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def show(
    ctx: click.Context, file: Path | None, child: str | None, state_dir: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Show what the policy FILE (default: the embedded one) does for each child: the rules
    in force, presets expanded, with parents' learnt adjustments, window by window."""
    policy = _policy_in_force(ctx, file, state_dir)
    try:
        summary = summarise(policy, child)
    except KeyError:
        raise _unknown_child(policy, child) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(render(summary), nl=False)


def _policy_in_force(ctx: click.Context, file: Path | None, state_dir: Path | None) -> Policy:
    """The policy file (default: the embedded one) with parents' learnt adjustments (moodgate
    learn) on top, as the proxy applies them; exits 1 with its problems if it is invalid."""
    try:
        policy = load_policy(file) if file else default_policy()
    except PolicyError as error:
        for problem in error.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
    # The CLI layer hands the view over, so the policy room never reads the state dir itself.
    learnt: LearntView | None = (ctx.obj or {}).get("learnt_view")
    return learnt(policy, state_dir) if learnt is not None else policy


def _unknown_child(policy: Policy, child: str | None) -> click.BadParameter:
    known = ", ".join(policy.profile_names())
    return click.BadParameter(
        f"no child named '{child}' in this policy; known: {known}", param_hint="--child"
    )


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
@click.option("--child", help="Child name, or 'default' / 'parents'.")
@click.option("--at", "at_text", help="Local time 'YYYY-MM-DD HH:MM' (default: now).")
@click.option("--valence", type=click.FloatRange(-1, 1))
@click.option("--arousal", type=click.FloatRange(-1, 1))
@click.option("--explicit", type=click.FloatRange(0, 1), default=None)
@click.option("--host", default=None, help="The host the item came from.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy file (default: the embedded default policy).",
)
@click.option(
    "--decision",
    "decision_id",
    type=int,
    help="Explain a recorded decision instead (its id from `moodgate log`).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="State dir: the decision database (with --decision) and learnt adjustments.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def explain_command(
    ctx: click.Context,
    child: str | None,
    at_text: str | None,
    valence: float | None,
    arousal: float | None,
    explicit: float | None,
    host: str | None,
    policy_file: Path | None,
    decision_id: int | None,
    state_dir: Path | None,
    as_json: bool,
) -> None:
    """Say which window and rule apply to an item and what happens to it.

    Either describe an item (--child, --valence, --arousal, optionally --at and --host) or
    name a recorded decision with --decision ID.
    """
    policy = _policy_in_force(ctx, policy_file, state_dir)
    if decision_id is not None:
        # The CLI layer hands over the lookup: the policy room never opens the database.
        lookup: DecisionLookup | None = (ctx.obj or {}).get("decision_lookup")
        record = lookup(state_dir, decision_id) if lookup else None
        if record is None:
            raise click.ClickException(f"no decision {decision_id} is recorded")
        if record.get("valence") is None or record.get("arousal") is None:
            click.echo(
                f"Decision {decision_id} ({record['child']}, {record['host']}) was not scored: "
                f"{record.get('outcome')} ({record.get('error') or 'no detail'}), so the rule "
                f"{record['rule']} gave '{record['action']}'."
            )
            return
        child, host = record["child"], record["host"]
        valence, arousal, explicit = record["valence"], record["arousal"], record.get("explicit")
        at = datetime.fromisoformat(record["time"])
    else:
        missing = [name for name, value in
                   (("--child", child), ("--valence", valence), ("--arousal", arousal))
                   if value is None]  # fmt: skip
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (or give --decision ID)")
        at = _parse_at(policy, at_text)
    assert child is not None and valence is not None and arousal is not None
    try:
        result = explain_decision(policy, child, at, Emotion(valence, arousal, explicit), host)
    except KeyError:
        raise _unknown_child(policy, child) from None
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(result.text)
