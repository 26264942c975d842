"""Command line for content creators: `moodgate calm …` and `moodgate styles …`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from PIL import Image

from moodgate.calm.default_bank import DefaultBankBuilder
from moodgate.calm.loop import Calmer
from moodgate.calm.quality import ssim_luminance
from moodgate.calm.styles import StyleBank, default_bank_path, user_bank_path
from moodgate.emotion.base import Emotion, Scorer, VATarget
from moodgate.emotion.registry import SCORERS, ScorerUnavailable, create_scorer
from moodgate.media.errors import MediaError
from moodgate.media.image import decode_full, encode_like

DEFAULT_TARGET_AROUSAL = -0.2
_SSIM_FRAMES = 4

_scorer_option = click.option(
    "--scorer",
    "scorer_kind",
    type=click.Choice(SCORERS),
    default="auto",
    show_default=True,
    help="Which emotion model scores the images.",
)
_bank_option = click.option(
    "--bank",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Style bank JSON file [default: $MOODGATE_STATE_DIR/styles.json or "
    "~/.local/state/moodgate/styles.json].",
)


def _load_scorer(kind: str) -> Scorer:
    try:
        return create_scorer(kind)
    except ScorerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


def _load_bank(path: Path) -> StyleBank:
    try:
        return StyleBank.load_or_empty(path)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read style bank {path}: {exc}") from exc


def _va(emotion: Emotion) -> dict[str, float]:
    return {"valence": round(emotion.valence, 4), "arousal": round(emotion.arousal, 4)}


def _output_path(out_dir: Path, source: Path, taken: set[Path]) -> Path:
    """Same file name in the output folder; a suffix only when two inputs share a name."""
    candidate = out_dir / source.name
    index = 1
    while candidate in taken:
        candidate = out_dir / f"{source.stem}-{index}{source.suffix}"
        index += 1
    taken.add(candidate)
    return candidate


def _mean_ssim(before: list[Image.Image], after: list[Image.Image]) -> float:
    step = max(1, len(before) // _SSIM_FRAMES)
    pairs = list(zip(before, after, strict=True))[::step]
    return sum(ssim_luminance(a, b) for a, b in pairs) / len(pairs)


@click.command("calm")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the calmed images (same names, formats and sizes as the inputs).",
)
@click.option(
    "--style",
    "style_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A folder of style images to blend in (repeatable); scored for this run only.",
)
@click.option(
    "--target-arousal",
    type=click.FloatRange(-1.0, 1.0),
    default=DEFAULT_TARGET_AROUSAL,
    show_default=True,
    help="Calm until predicted arousal is at most this (−1 calm … +1 exciting).",
)
@click.option(
    "--target-valence",
    type=click.FloatRange(-1.0, 1.0),
    default=None,
    help="Also require predicted valence at least this (−1 unpleasant … +1 pleasant).",
)
@click.option(
    "--strength",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Apply exactly this strength α (0…1) instead of searching for the target.",
)
@_scorer_option
@_bank_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout.")
def calm_command(
    inputs: tuple[Path, ...],
    out_dir: Path,
    style_dirs: tuple[Path, ...],
    target_arousal: float,
    target_valence: float | None,
    strength: float | None,
    scorer_kind: str,
    bank: Path | None,
    as_json: bool,
) -> None:
    """Calm images toward a low-arousal (and optionally pleasant) target, checked by the model.

    Uses the shipped style bank, your own bank (`moodgate styles add`) and any --style folders.
    """
    scorer = _load_scorer(scorer_kind)
    styles = StyleBank.default()
    styles.extend(_load_bank(bank or user_bank_path()).styles)
    for directory in style_dirs:
        _, problems = styles.add_dir(directory, scorer)
        for problem in problems:
            click.echo(f"moodgate calm: style {problem}", err=True)
    calmer = Calmer(scorer, styles)
    target = VATarget(arousal_at_most=target_arousal, valence_at_least=target_valence)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    taken: set[Path] = set()
    for source in inputs:
        try:
            started = time.perf_counter()
            decoded = decode_full(source.read_bytes())
            outcome = calmer.calm(decoded.frames, target, strength=strength)
            data = encode_like(decoded, outcome.frames)
            destination = _output_path(out_dir, source, taken)
            destination.write_bytes(data)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
        except (OSError, MediaError) as exc:
            failed += 1
            click.echo(f"moodgate calm: {source}: {exc}", err=True)
            continue
        similarity = _mean_ssim(decoded.frames, outcome.frames)
        if as_json:
            record = {
                "input": str(source),
                "output": str(destination),
                "before": _va(outcome.before),
                "after": _va(outcome.after),
                "alpha": round(outcome.alpha, 4),
                "reached": outcome.reached,
                "ssim": round(similarity, 4),
                "ms": round(elapsed_ms, 1),
            }
            click.echo(json.dumps(record))
        else:
            mark = "reached" if outcome.reached else "NOT reached"
            click.echo(
                f"{source} → {destination}: arousal {outcome.before.arousal:+.2f} → "
                f"{outcome.after.arousal:+.2f}, valence {outcome.before.valence:+.2f} → "
                f"{outcome.after.valence:+.2f}, α={outcome.alpha:.2f}, {mark}, "
                f"SSIM {similarity:.3f}, {elapsed_ms:.0f} ms"
            )
    if failed:
        sys.exit(1)


@click.group("styles")
def styles_group() -> None:
    """Manage the style images that calming blends toward."""


@styles_group.command("add")
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@_bank_option
@_scorer_option
def styles_add(directories: tuple[Path, ...], bank: Path | None, scorer_kind: str) -> None:
    """Score and summarise every image in each DIRECTORY and add them to the bank."""
    path = bank or user_bank_path()
    styles = _load_bank(path)
    scorer = _load_scorer(scorer_kind)
    total = 0
    problem_count = 0
    for directory in directories:
        added, problems = styles.add_dir(directory, scorer)
        total += len(added)
        problem_count += len(problems)
        for problem in problems:
            click.echo(f"moodgate styles add: {problem}", err=True)
    if total:
        styles.save(path)
    click.echo(f"added {total} style(s) to {path} ({len(styles)} in all)")
    if problem_count:
        sys.exit(1)


@styles_group.command("list")
@_bank_option
@click.option("--default", "shipped", is_flag=True, help="List the shipped default bank instead.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per style.")
def styles_list(bank: Path | None, shipped: bool, as_json: bool) -> None:
    """Show the styles in the bank with their predicted valence and arousal."""
    styles = StyleBank.default() if shipped else _load_bank(bank or user_bank_path())
    for style in styles.styles:
        if as_json:
            click.echo(json.dumps(style.to_json(), ensure_ascii=False))
        else:
            click.echo(
                f"{style.name}\tvalence {style.emotion.valence:+.2f}\t"
                f"arousal {style.emotion.arousal:+.2f}\t{style.source}"
            )
    if not styles.styles and not as_json:
        click.echo("no styles (add some with `moodgate styles add DIR`)", err=True)


@styles_group.command("build-default")
@click.option(
    "--oasis",
    "oasis_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="An OASIS directory (OASIS.csv + images/).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the bank [default: models/styles.json of this checkout].",
)
@click.option("--count", type=click.IntRange(1, 500), default=24, show_default=True)
@_scorer_option
def styles_build_default(
    oasis_dir: Path, out_path: Path | None, count: int, scorer_kind: str
) -> None:
    """Regenerate the shipped bank from the calmest, most pleasant OASIS training images."""
    scorer = _load_scorer(scorer_kind)
    try:
        styles, extra = DefaultBankBuilder(count=count).build(oasis_dir, scorer)
    except (OSError, ValueError, MediaError) as exc:
        raise click.ClickException(str(exc)) from exc
    path = out_path or default_bank_path()
    styles.save(path, extra)
    click.echo(f"wrote {len(styles)} styles (scored by {scorer.name}) to {path}")
