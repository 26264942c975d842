"""`moodgate calibrate`: measure every slice on this machine now and show the choice."""

from __future__ import annotations

import json
from pathlib import Path

import click

from moodgate.config import ConfigError, load_settings
from moodgate.emotion.registry import default_model_dir
from moodgate.runtime.build import build_explicit, load_slices
from moodgate.runtime.calibration import Calibrator
from moodgate.runtime.status import runtime_status, runtime_status_lines


@click.command("calibrate")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="Settings file.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--budget-ms", type=float, help="Latency budget to choose for [setting].")
@click.option("--seconds", type=float, default=6.0, show_default=True,
              help="Time to spend measuring (all slices, round-robin).")  # fmt: skip
@click.option("--cached", is_flag=True, help="Reuse a cached table that still matches.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def calibrate_command(
    config: Path | None,
    state_dir: Path | None,
    model_dir: Path | None,
    budget_ms: float | None,
    seconds: float,
    cached: bool,
    as_json: bool,
) -> None:
    """Time every model slice here and cache the table the daemon picks its slice from."""
    try:
        settings = load_settings(
            config, state_dir=state_dir, model_dir=model_dir, latency_budget_ms=budget_ms
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    manifest = (settings.model_dir or default_model_dir()) / "manifest.json"
    if not manifest.exists():
        raise click.ClickException(f"no model to calibrate: {manifest} does not exist")
    try:
        explicit = build_explicit(settings).scorer
        slices = load_slices(settings, calibrator=Calibrator(seconds=seconds), force=not cached,
                             explicit=explicit)  # fmt: skip
    except Exception as exc:
        raise click.ClickException(f"cannot load the model slices: {exc}") from exc
    budget = settings.latency_budget_ms
    if as_json:
        click.echo(json.dumps(runtime_status(settings.state_dir, budget), sort_keys=True))
        return
    for line in runtime_status_lines(settings.state_dir, budget):
        click.echo(line)
    click.echo(f"cached in {settings.state_dir}" +
               ("" if slices.measured_now else " (reused: same machine and model)"))  # fmt: skip
