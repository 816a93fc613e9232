"""`flatscape surface`: 1D/2D loss surfaces of a checkpoint, stored in a resumable HDF5 file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli import choices
from cli._common import (
    apply_threads,
    device_option,
    force_option,
    json_option,
    loss_option,
    max_memory_option,
    memory_budget,
    progress_bar,
    quiet_option,
    resolve_device,
    seed_option,
    source_options,
    sources_from,
    threads_option,
)
from cli.outputs import OutputPlan, os_error_text, write_json
from cli.study import planes
from landscape.errors import LandscapeInputError

if TYPE_CHECKING:  # annotations only; the module loads inside the command
    pass


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--x",
    "x_range",
    help="x grid MIN:MAX:N, both ends included  [default: -1:1:51; a plane: auto:31, "
    "the range of the models and paths on it plus a quarter either side]. Note 51 x 51 = "
    "2,601 points, each a forward pass over the data.",
)
@click.option(
    "--y",
    "y_range",
    help="y grid MIN:MAX:N for a 2D surface  [default: a 1D curve; a plane: auto:31].",
)
@click.option(
    "--direction",
    default="random",
    show_default=True,
    help="random (Gaussian, normalized), interp:OTHER.safetensors (x = straight line to "
    "OTHER, x=1 is OTHER; y random), eigen (top Hessian eigenvectors of the train loss), "
    "or pca (top principal directions of --trajectory snapshots around CHECKPOINT).",
)
@click.option(
    "--plane",
    nargs=3,
    type=click.Path(dir_okay=False),
    metavar="A B C",
    help="The plane through three checkpoints instead of CHECKPOINT: origin A, x along "
    "B - A, y along C - A made orthogonal (Gram-Schmidt); axes in weight-space distance.",
)
@click.option(
    "--align",
    is_flag=True,
    help="With --plane: align B and C to A by weight matching (permuting their hidden "
    "units, function unchanged; see flatscape align) before the plane is built.",
)
@click.option(
    "--trajectory",
    "trajectories",
    multiple=True,
    type=click.Path(file_okay=False),
    help="With --direction pca: a folder of snapshots (`flatscape train --snapshots N` "
    "writes OUT.snapshots/); give it once per run (e.g. teacher and student).",
)
@click.option(
    "--normalization",
    type=click.Choice(["auto", "filter", "layer", "none"]),
    default="auto",
    show_default=True,
    help="Random directions: auto = filter (Li et al. 2018). A plane: auto = none (raw "
    "weights, the models on it); filter projects them. interp/eigen/pca take none.",
)
@click.option(
    "--ignore",
    type=click.Choice(["auto", "biasbn", "none"]),
    default="auto",
    show_default=True,
    help="Random directions: auto = biasbn (biases and BatchNorm parameters get zero).",
)
@click.option("--split", type=click.Choice(choices.SPLITS), default="train", show_default=True)
@click.option(
    "--samples", type=click.IntRange(min=1), help="First N examples of each split (default all)."
)
@click.option(
    "--batch-size",
    default="auto",
    show_default=True,
    help="Examples per forward pass, or auto: the fastest of 64..4096, timed on the data. "
    "The values do not depend on it (up to float rounding); the speed does.",
)
@seed_option("the directions")
@click.option(
    "--vectorize",
    type=click.Choice(choices.VECTORIZE),
    default="auto",
    show_default=True,
    help="Evaluate several grid points at once with torch.func.vmap: auto times it "
    "against a loop on MLPs and never uses it on convolutions.",
)
@max_memory_option(
    "a forward pass and a block of grid points",
    "Batch sizes that do not fit are not tried (a given one exits 2 naming one that fits) "
    "and blocks shrink to fit; the JSON summary records the budget and the peak.",
)
@loss_option
@source_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="HDF5 file.")
@click.option("--resume", is_flag=True, help="Continue OUT where a killed run stopped.")
@json_option("a summary")
@force_option
@quiet_option
@device_option
@threads_option
def surface(checkpoint, x_range, y_range, direction, plane, align, trajectories, normalization,
            ignore, split, samples, batch_size, seed, vectorize, max_memory, loss_spec, out,
            resume, json_path, force, quiet, device, threads, **options):  # fmt: skip
    """Loss and accuracy of CHECKPOINT on a grid around its weights, into an HDF5 file.

    The value at (a, b) is the mean loss (--loss, default cross-entropy; and accuracy,
    in percent, for class labels) of the
    weights theta + a*dx + b*dy, model in eval mode, over the first --samples examples of
    the split. Points are saved as they finish: --resume continues a killed run; --force
    starts anew (and allows grids above 1,000,000 points).

    \b
    Examples:
      flatscape surface runs/teacher.safetensors --x -1:1:51 --y -1:1:51 --out surf.h5
      flatscape surface runs/teacher.safetensors --direction interp:runs/sd/gen1.safetensors \\
          --x -0.5:1.5:81 --split both --out interp.h5
      flatscape surface --plane runs/teacher.safetensors runs/sd/gen1.safetensors \\
          runs/sd/gen2.safetensors --align --out plane.h5
      flatscape surface runs/sd/gen1.safetensors --direction pca \\
          --trajectory runs/teacher.snapshots --trajectory runs/sd/gen1.snapshots --out pca.h5
      flatscape plot surf.h5 --kind contour --out surf.pdf
    """
    from cli.study.surface import checkpoint_surface
    from landscape.distributed import process as distributed
    from landscape.distributed.surface import DistributedRunError, surface_processes

    apply_threads(threads)
    max_memory = memory_budget(max_memory)  # a bad size fails before the checkpoint loads
    checkpoint, kind, target = _what_to_draw(checkpoint, plane, direction, trajectories)
    sources = _plan(OutputPlan(force, resume), out, json_path, checkpoint, plane, target,
                    trajectories, sources_from(options))  # fmt: skip
    normalization, ignore = _direction_options(kind, normalization, ignore)
    x_range, y_range = _checked_grid(kind, x_range, y_range, force)
    torch_device = distributed.init_from_env(resolve_device(device))  # torchrun: join the job
    quiet = quiet or not distributed.is_main()
    if kind == "eigen" and not quiet and not (resume and Path(out).exists()):
        click.echo("computing the top Hessian eigenvectors (Lanczos) ...", err=True)
    with progress_bar(None, "surface", quiet, unit="pt") as bar:
        try:
            result, made_plane = checkpoint_surface(
                checkpoint, out, kind, x_range=x_range, y_range=y_range, plane_paths=plane or (),
                target=target, trajectories=trajectories, loss_spec=loss_spec, sources=sources,
                device=torch_device, split=split, samples=samples, normalization=normalization,
                ignore=ignore, seed=seed, batch_size=_batch_size_option(batch_size), align=align,
                vectorize=vectorize, max_memory=max_memory, resume=resume, force=force,
                progress=bar.update, processes=surface_processes(),
            )  # fmt: skip
        except (KeyboardInterrupt, DistributedRunError, OSError) as err:
            _stop(err, Path(out))
    if not distributed.is_main():
        return
    if not quiet:
        click.echo(
            f"{out}: {result.points} points ({result.computed} computed in {result.seconds:.1f} s, "
            f"batch size {result.batch_size}, vectorize={result.vectorize}); "
            + _origin_text(result.origin)
        )
        for line in planes.mark_lines(out) if made_plane is not None else ():
            click.echo(line)
    write_json(Path(json_path) if json_path else None, result.to_dict())


def _plan(plan: OutputPlan, out, json_path, checkpoint, plane, target, trajectories, sources):
    """The surface's outputs and inputs, checked before anything is loaded; ``sources``."""
    plan.file("--out", out, resumable=True)
    plan.file("--json", json_path)
    plan.read_checkpoints("CHECKPOINT" if not plane else "--plane", checkpoint, *(plane or ()))
    plan.read_checkpoints("--direction", target)
    plan.read("--trajectory", *trajectories)
    plan.read_sources(sources)
    plan.check()
    return sources


@contextmanager
def saved_points_on_failure(out: str | Path) -> Iterator[None]:
    """On Ctrl-C or a failed write, say how many points ``out`` holds and how to resume."""
    try:
        yield
    except (KeyboardInterrupt, OSError) as err:
        _stop(err, Path(out))


def _stop(err: BaseException, out: Path) -> None:
    """Say how many points are saved (rank 0), then end every process with an error code."""
    from landscape.distributed import process as distributed
    from landscape.surface.store import SurfaceStore

    interrupted = isinstance(err, KeyboardInterrupt)
    if isinstance(err, OSError) and not out.is_file():
        raise err  # nothing was saved: the file system's one line
    if distributed.is_main():
        saved = "no"
        with suppress(Exception), SurfaceStore.read(out) as store:
            saved = f"{int(store.done.sum())} of {store.done.size}"
        what = "interrupted" if interrupted else f"error: {_error_text(err)}"
        click.echo(f"{what}: {saved} points are saved in {out}; continue with --resume", err=True)
    if isinstance(err, OSError):
        raise click.exceptions.Exit(2) from None
    if not interrupted and err.orderly:  # the others wait, so torchrun does not stop rank 0
        with suppress(Exception):
            distributed.barrier()
    raise click.exceptions.Exit(130 if interrupted else err.exit_code) from None


def _error_text(err: BaseException) -> str:
    return os_error_text(err) if isinstance(err, OSError) else str(err)


def _batch_size_option(text: str) -> int | str:
    """``auto`` (measure) or a positive number of examples."""
    if text == "auto":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise LandscapeInputError(f"--batch-size {text!r}: give a positive integer or auto")


def _what_to_draw(checkpoint, plane, direction, trajectories) -> tuple[str, str, Path | None]:
    """The checkpoint at the origin, the kind of directions and the interp target."""
    if plane:
        if checkpoint:
            raise LandscapeInputError("give CHECKPOINT or --plane A B C, not both")
        if direction != "random":
            raise LandscapeInputError(f"--plane makes its own axes; drop --direction {direction}")
        for path in plane:
            if not Path(path).is_file():
                raise LandscapeInputError(f"--plane: checkpoint {path} not found")
        return plane[0], "plane", None
    if not checkpoint:
        raise LandscapeInputError("give a CHECKPOINT (or --plane A B C)")
    kind, target = _parse_direction(direction)
    if trajectories and kind != "pca":
        raise LandscapeInputError("--trajectory goes with --direction pca")
    return checkpoint, kind, target


def _checked_grid(kind: str, x_range: str | None, y_range: str | None, force: bool) -> tuple:
    """The grid's axes with their defaults, its size checked before the checkpoint loads."""
    from landscape.surface.grid import parse_grid

    x_range, y_range = _axis_defaults(kind, x_range, y_range)
    if kind in ("plane", "pca"):
        planes.check_plane_grid(x_range, y_range, force)
    else:
        parse_grid(x_range, y_range, force)
    return x_range, y_range


def _axis_defaults(kind: str, x_range: str | None, y_range: str | None) -> tuple[str, str | None]:
    """-1:1:51 and a 1D curve; a plane: auto:31 on both axes (it is always 2D)."""
    if kind in ("plane", "pca"):
        if x_range is not None and y_range is None:
            raise LandscapeInputError(f"--direction {kind}: a plane is 2D; give --y as well")
        return x_range or "auto", y_range or "auto"
    for option, text in (("--x", x_range), ("--y", y_range)):
        if planes.is_auto(text):
            raise LandscapeInputError(
                f"{option} {text}: auto ranges are for planes; give MIN:MAX:N"
            )
    return x_range or "-1:1:51", y_range


def _parse_direction(text: str) -> tuple[str, Path | None]:
    if text in ("random", "eigen", "pca"):
        return text, None
    if text.startswith("interp:") and len(text) > len("interp:"):
        target = Path(text[len("interp:") :])
        if not target.is_file():
            raise LandscapeInputError(f"--direction {text}: no checkpoint {target}")
        return "interp", target
    raise LandscapeInputError(
        f"--direction {text!r}: choose random, interp:OTHER.safetensors, eigen or pca"
    )


def _direction_options(kind: str, normalization: str, ignore: str) -> tuple[str, str]:
    """Resolve ``auto``: filter/biasbn for random axes (interp's y axis too).

    Interp, eigen and pca directions themselves are used as they are; a plane through
    checkpoints is raw (none) or filter-normalized.
    """
    if kind == "plane":
        if ignore not in ("auto", "none"):
            raise LandscapeInputError(f"--ignore {ignore}: a plane keeps every parameter")
        if normalization not in ("auto", "none", "filter"):
            raise LandscapeInputError(
                f"--normalization {normalization}: a plane is raw (none) or filter-normalized"
            )
        return ("none" if normalization == "auto" else normalization), "none"
    if kind != "random":
        for option, value in (("--normalization", normalization), ("--ignore", ignore)):
            if value not in ("auto", "none"):
                raise LandscapeInputError(
                    f"{option} {value}: {kind} directions are used unnormalized; drop {option}"
                )
        return "filter", "biasbn"
    return (
        "filter" if normalization == "auto" else normalization,
        "biasbn" if ignore == "auto" else ignore,
    )


def _origin_text(origin: dict[str, float] | None) -> str:
    if not origin:
        return "the grid does not contain the origin"
    return "at the origin " + ", ".join(f"{k} {v:.6g}" for k, v in origin.items())
