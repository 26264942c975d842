"""`moodgate explicit …`: build the explicit classifier from its npm package, and measure it."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("explicit")
def explicit_group() -> None:
    """The explicit-content classifier that rules testing `explicit` use."""


@explicit_group.command("import")
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Where the ONNX file and explicit.json go.",
)
def import_command(package: Path, out: Path) -> None:
    """Convert nsfwjs's MobileNetV2 from PACKAGE (`npm pack nsfwjs@4.4.0`: the .tgz or its
    unpacked directory) into OUT (needs the `train` extra: onnx)."""
    try:
        from moodgate.training.nsfwjs import PackageError, convert
    except ImportError as exc:
        raise click.ClickException(f"converting needs the train extra (onnx): {exc}") from exc
    try:
        manifest = convert(package, out)
    except (OSError, PackageError, KeyError) as exc:
        raise click.ClickException(f"{package}: {exc}") from exc
    click.echo(
        f"wrote {out / manifest['file']} ({manifest['bytes'] / 1e6:.2f} MB, "
        f"{manifest['parameters']:,} parameters) and {out / 'explicit.json'}"
    )


@explicit_group.command("eval")
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    metavar="DIR_OR_MANIFEST",
    help="An OASIS-style directory or a CSV manifest (repeatable).",
)
@click.option(
    "--positive",
    multiple=True,
    default=["Nude"],
    show_default=True,
    help="Images whose theme (file name without its number) starts with this are "
    "positives (repeatable).",
)
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def eval_command(
    data: tuple[str, ...], positive: tuple[str, ...], model_dir: Path | None, as_json: bool
) -> None:
    """Hits and false blocks at each preset's threshold, on the images of DATA."""
    from moodgate.emotion.explicit import load_explicit
    from moodgate.emotion.explicit_eval import evaluate_explicit, format_explicit
    from moodgate.emotion.registry import default_model_dir

    try:
        scorer = load_explicit(model_dir or default_model_dir())
        result = evaluate_explicit(list(data), scorer, positive)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise click.ClickException(f"cannot evaluate: {exc}") from exc
    click.echo(json.dumps(result, indent=1) if as_json else format_explicit(result))
