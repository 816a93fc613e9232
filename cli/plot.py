"""`flatscape plot`: figures of surface files (curves, contours, heatmaps, 3D)."""

from __future__ import annotations

import click

from cli import choices
from cli._common import force_option
from cli.outputs import OutputPlan
from landscape.errors import LandscapeInputError


def _levels(text: str) -> int | list[float]:
    """``N`` levels, or the levels themselves as ``a,b,c``."""
    try:
        if "," in text:
            return [float(v) for v in text.split(",") if v.strip()]
        return int(text)
    except ValueError:
        raise LandscapeInputError(
            f"--levels {text!r}: give a count (e.g. 15) or values (e.g. 0.1,0.5,1,2)"
        ) from None


def _refuse_surface_options(kind, key, levels) -> None:
    """A training log draws lambda_1 against steps: the surface options do not apply."""
    given = [flag for flag, value in (("--kind", kind), ("--key", key != "train_loss"),
             ("--levels", levels)) if value]  # fmt: skip
    if given:
        raise LandscapeInputError(
            f"{given[0]} applies to surface files; a training log (.jsonl) draws lambda_1 "
            "against steps: drop it"
        )


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--kind",
    type=click.Choice(choices.KINDS),
    help="Default: line for 1D files, contour for 2D ones.",
)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help=".pdf, .png or .svg")
@click.option(
    "--key",
    default="train_loss",
    show_default=True,
    help="Quantity of a 2D plot: train_loss, train_acc, test_loss, test_acc; of an "
    "eigenvalue map lambda_max, lambda_min, lambda_ratio (|min/max|). Line plots show "
    "loss and accuracy of every split.",
)
@click.option("--vmin", type=float, help="Lower end of the colour/level range (line: loss axis).")
@click.option("--vmax", type=float, help="Upper end; larger values are clipped.")
@click.option("--levels", help="Contour levels: N or a,b,c.  [default: 15]")
@click.option("--log", is_flag=True, help="Logarithmic loss (or sharpness) scale.")
@click.option("--label", "labels", multiple=True, help="One per file (default: file names).")
@force_option
def plot(files, kind, out, key, vmin, vmax, levels, log, labels, force):
    """Draw surface FILES made by `flatscape surface` (or training logs) into one figure.

    line overlays 1D curves of several files (loss and accuracy, train solid, test
    dashed); contour, filled, heatmap and surface3d draw one panel per 2D file on a
    shared colour scale. Diverged (NaN/inf) and unfinished points are gaps. JSON-lines
    logs of `train`/`distill --track-sharpness` (RUN.log.jsonl) draw lambda_1 against
    optimizer steps with the stability threshold (2 + 2 momentum) / lr dashed, every
    log (teacher and students) in one figure.

    \b
    Examples:
      flatscape plot t.h5 s.h5 --kind line --label teacher --label student --out line.pdf
      flatscape plot surf.h5 --kind contour --vmax 5 --levels 20 --out contour.pdf
      flatscape plot runs/teacher.log.jsonl runs/sd/gen1.log.jsonl --log --out sharpness.pdf
    """
    from landscape.surface.plot import plot_surfaces
    from landscape.tracking.plot import plot_sharpness

    plan = OutputPlan(force)
    out = plan.file("--out", out)
    plan.read("FILES", *files)
    plan.check()
    if any(str(f).endswith(".jsonl") for f in files):
        _refuse_surface_options(kind, key, levels)
        path = plot_sharpness(files, out, list(labels) or None, log, vmin, vmax)
        click.echo(f"wrote {path}")
        return
    path = plot_surfaces(
        files,
        out,
        kind,
        key,
        list(labels) or None,
        vmin,
        vmax,
        None if levels is None else _levels(levels),
        log,
    )
    click.echo(f"wrote {path}")
