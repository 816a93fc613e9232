"""`flatscape surface`: 1D/2D loss surfaces of a checkpoint, stored in a resumable HDF5 file."""

from __future__ import annotations

import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import click
import h5py
import numpy as np
import torch
from torch.nn.functional import cross_entropy

from cli._common import (
    apply_threads,
    device_option,
    force_option,
    progress_bar,
    quiet_option,
    resolve_device,
    threads_option,
    write_json,
)
from cli._loading import first_examples, open_checkpoint
from distill.checkpoint import file_sha256, load_checkpoint
from landscape import distributed
from landscape.batching import fastest_batch_size, split_batches
from landscape.directions import (
    Direction,
    hessian_directions,
    interpolation_direction,
    random_direction,
)
from landscape.distributed_surface import (
    DistributedRunError,
    compute_surface_distributed,
    store_on_main,
)
from landscape.errors import LandscapeInputError
from landscape.grid import check_grid_size, parse_axis
from landscape.store import SPLITS, SurfaceSpec, SurfaceStore
from landscape.surface import VECTORIZE, SurfaceEvaluator, compute_surface, grid_points

ALL = 2**62  # one batch holding every example; split_batches cuts it afterwards


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--x",
    "x_axis",
    default="-1:1:51",
    show_default=True,
    help="x grid MIN:MAX:N, both ends included. Note 51 x 51 = 2,601 points, each a "
    "forward pass over the data.",
)
@click.option("--y", "y_axis", help="y grid MIN:MAX:N for a 2D surface (default: a 1D curve).")
@click.option(
    "--direction",
    default="random",
    show_default=True,
    help="random (Gaussian, normalized), interp:OTHER.safetensors (x = straight line to "
    "OTHER, x=1 is OTHER; y random), or eigen (top Hessian eigenvectors of the train loss).",
)
@click.option(
    "--normalization",
    type=click.Choice(["auto", "filter", "layer", "none"]),
    default="auto",
    show_default=True,
    help="Random directions: auto = filter (Li et al. 2018). interp/eigen take none.",
)
@click.option(
    "--ignore",
    type=click.Choice(["auto", "biasbn", "none"]),
    default="auto",
    show_default=True,
    help="Random directions: auto = biasbn (biases and BatchNorm parameters get zero).",
)
@click.option("--split", type=click.Choice(list(SPLITS)), default="train", show_default=True)
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
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the directions.")
@click.option(
    "--vectorize",
    type=click.Choice(VECTORIZE),
    default="auto",
    show_default=True,
    help="Evaluate several grid points at once with torch.func.vmap: auto times it "
    "against a loop on MLPs and never uses it on convolutions.",
)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="HDF5 file.")
@click.option("--resume", is_flag=True, help="Continue OUT where a killed run stopped.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write a summary.")
@force_option
@quiet_option
@device_option
@threads_option
def surface(
    checkpoint,
    x_axis,
    y_axis,
    direction,
    normalization,
    ignore,
    split,
    samples,
    batch_size,
    seed,
    vectorize,
    out,
    resume,
    json_path,
    force,
    quiet,
    device,
    threads,
):
    """Loss and accuracy of CHECKPOINT on a grid around its weights, into an HDF5 file.

    The value at (a, b) is the mean cross-entropy (and accuracy, in percent) of the
    weights theta + a*dx + b*dy, model in eval mode, over the first --samples examples of
    the split. Points are saved as they finish: --resume continues a killed run; --force
    starts anew (and allows grids above 1,000,000 points).

    \b
    Examples:
      flatscape surface runs/teacher.safetensors --x -1:1:51 --y -1:1:51 --out surf.h5
      flatscape surface runs/teacher.safetensors --direction interp:runs/sd/gen1.safetensors \\
          --x -0.5:1.5:81 --split both --out interp.h5
      flatscape plot surf.h5 --kind contour --out surf.pdf
    """
    apply_threads(threads)
    x = parse_axis(x_axis, "--x")
    y = parse_axis(y_axis, "--y") if y_axis is not None else None
    total = check_grid_size(len(x), None if y is None else len(y), force)
    out = Path(out)
    if out.exists() and not (resume or force):
        raise LandscapeInputError(
            f"{out} exists; pass --resume to continue it or --force to start anew"
        )
    if resume and force:
        raise LandscapeInputError("--resume and --force contradict; choose one")
    kind, target = _parse_direction(direction)
    normalization, ignore = _direction_options(kind, normalization, ignore)
    torch_device = distributed.init_from_env(resolve_device(device))  # torchrun: join the job
    quiet = quiet or not distributed.is_main()

    size = _batch_size_option(batch_size)
    model, meta, bundle = open_checkpoint(checkpoint, device=torch_device)
    examples = {
        name: first_examples(
            bundle.train_eval if name == "train" else bundle.test, samples, ALL, torch_device
        )[0]
        for name in ("train", "test")
        if name in SPLITS[split] or (name == "train" and kind == "eigen")
    }
    if size is None and distributed.is_main():
        size, _ = fastest_batch_size(model, examples[SPLITS[split][0]][0])
    size = distributed.broadcast_object(size)  # every rank batches the data as rank 0 does
    data = {name: split_batches(*examples[name], size) for name in SPLITS[split]}
    ndirs = 1 if y is None else 2
    settings: dict[str, Any] = {
        "checkpoint_sha256": file_sha256(checkpoint),
        "direction": kind,
        "normalization": normalization,
        "ignore": ignore,
        "seed": seed,
        "dataset": meta["dataset"]["name"],
        "samples": samples if samples is not None else "all",
        "bn_mode": "eval",
        "loss": "cross_entropy",
    }
    settings.update({f"{s}_examples": sum(len(t) for _, t in b) for s, b in data.items()})
    info: dict[str, Any] = {"checkpoint": str(checkpoint), "batch_size": size, **_versions()}
    stored = _stored_directions(out, kind) if resume and distributed.is_main() else None
    if not distributed.is_main():
        directions = []  # rank 0 owns the file and sends every rank the directions stored in it
    elif stored is not None:
        directions = stored
    elif kind == "random":
        generator = torch.Generator().manual_seed(seed)
        directions = [
            random_direction(model, generator, normalization, ignore) for _ in range(ndirs)
        ]
    elif kind == "interp":
        directions = [_interpolation(model, meta, target, torch_device)]
        settings["interp_sha256"] = file_sha256(target)
        info["interp_checkpoint"] = str(target)
        if ndirs == 2:  # the y axis: a random direction with the defaults, recorded as such
            generator = torch.Generator().manual_seed(seed)
            directions.append(random_direction(model, generator, "filter", "biasbn"))
            settings.update(y_normalization="filter", y_ignore="biasbn")
    else:
        train = split_batches(*examples["train"], size)
        if not quiet:
            click.echo("computing the top Hessian eigenvectors (Lanczos) ...", err=True)
        directions, eigenvalues = hessian_directions(model, cross_entropy, train, ndirs, seed)
        info["eigenvalues"] = eigenvalues.double().cpu().numpy()
    settings.update(_axis_names(kind, ndirs))
    spec = SurfaceSpec(x, y, directions, split, settings, info)

    start = time.perf_counter()
    with store_on_main(
        lambda: SurfaceStore.open_for_writing(out, spec, resume=resume, force=force)
    ) as store:
        already = int(store.done.sum())
        evaluator = SurfaceEvaluator(model, cross_entropy, store.directions(), vectorize)
        coords = grid_points(store.x, store.y)
        with progress_bar(total, "surface", quiet, unit="pt") as bar:
            bar.update(already)
            try:
                compute = (
                    compute_surface_distributed if distributed.is_active() else compute_surface
                )
                compute(evaluator, data, coords, store.pending(), store.write, bar.update)
            except KeyboardInterrupt:
                done = int(store.done.sum())
                if distributed.is_main():
                    click.echo(
                        f"interrupted: {done} of {total} points are saved in {out}; "
                        "continue with --resume",
                        err=True,
                    )
                raise click.exceptions.Exit(130) from None
            except DistributedRunError as err:
                _stop_after_failure(err, store, total, out)
        if not distributed.is_main():
            return
        seconds = time.perf_counter() - start
        summary = _summary(store, out, total - already, seconds, evaluator.vectorize)
    if not quiet:
        click.echo(
            f"{out}: {total} points ({summary['computed']} computed in {seconds:.1f} s, "
            f"batch size {size}, vectorize={summary['vectorize']}); "
            + _origin_text(summary["origin"])
        )
    write_json(Path(json_path) if json_path else None, summary)


def _stop_after_failure(err: DistributedRunError, store: Any, total: int, out: Path) -> None:
    """Rank 0 closes the file and says what is saved; then every process ends with an error."""
    if distributed.is_main():
        store.close()
        click.echo(
            f"error: {err}; {int(store.done.sum())} of {total} points are saved in {out}; "
            "continue with --resume",
            err=True,
        )
    if err.orderly:  # the others wait, so torchrun does not stop rank 0 before it is done
        with suppress(Exception):
            distributed.barrier()
    raise click.exceptions.Exit(err.exit_code) from None


def _batch_size_option(text: str) -> int | None:
    """``auto`` (None: measure) or a positive number of examples."""
    if text == "auto":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise LandscapeInputError(f"--batch-size {text!r}: give a positive integer or auto")


def _parse_direction(text: str) -> tuple[str, Path | None]:
    if text in ("random", "eigen"):
        return text, None
    if text.startswith("interp:") and len(text) > len("interp:"):
        target = Path(text[len("interp:") :])
        if not target.is_file():
            raise LandscapeInputError(f"--direction {text}: no checkpoint {target}")
        return "interp", target
    raise LandscapeInputError(
        f"--direction {text!r}: choose random, interp:OTHER.safetensors or eigen"
    )


def _direction_options(kind: str, normalization: str, ignore: str) -> tuple[str, str]:
    """Resolve ``auto``; interp and eigen directions are used as they are."""
    if kind == "random":
        return (
            "filter" if normalization == "auto" else normalization,
            "biasbn" if ignore == "auto" else ignore,
        )
    for option, value in (("--normalization", normalization), ("--ignore", ignore)):
        if value not in ("auto", "none"):
            raise LandscapeInputError(
                f"{option} {value}: {kind} directions are used unnormalized; drop {option}"
            )
    return "none", "none"


def _interpolation(
    model: torch.nn.Module, meta: dict[str, Any], target: Path, device: torch.device
) -> Direction:
    """Direction to another checkpoint, which must share the architecture."""
    other, other_meta = load_checkpoint(target, device=device)
    mine = (meta.get("arch"), meta.get("arch_kwargs"))
    theirs = (other_meta.get("arch"), other_meta.get("arch_kwargs"))
    if mine != theirs:
        raise LandscapeInputError(
            f"interp: {target} is a {theirs[0]} {theirs[1]} and the checkpoint a {mine[0]} "
            f"{mine[1]}; interpolate between checkpoints of one architecture"
        )
    return interpolation_direction(model, other.state_dict())


def _stored_directions(out: Path, kind: str) -> list[Direction] | None:
    """On resume, eigen directions are read back rather than recomputed (Lanczos is costly);
    the settings (checkpoint hash, seed, samples) that determine them are still compared."""
    if kind != "eigen" or not out.exists():
        return None
    with SurfaceStore.read(out) as store:
        return store.directions()


def _axis_names(kind: str, ndirs: int) -> dict[str, str]:
    names = {
        "random": ["random", "random"],
        "interp": ["interpolation", "random"],
        "eigen": ["eigenvector 1", "eigenvector 2"],
    }[kind]
    return {f"{axis}_direction": names[n] for n, axis in enumerate("xy"[:ndirs])}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "flatscape_version": version("flatscape"),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "h5py_version": h5py.__version__,
    }


def _summary(
    store: SurfaceStore, out: Path, computed: int, seconds: float, vectorize: str
) -> dict[str, Any]:
    coords = grid_points(store.x, store.y)
    origin = np.flatnonzero(np.all(coords == 0.0, axis=1))
    values = {}
    if origin.size:
        values = {k: float(a.reshape(-1)[origin[0]]) for k, a in store.arrays.items()}
    return {
        "out": str(out),
        "shape": list(store.shape),
        "points": int(store.done.size),
        "computed": computed,
        "seconds": round(seconds, 3),
        "vectorize": vectorize,
        "origin": values or None,
    }


def _origin_text(origin: dict[str, float] | None) -> str:
    if not origin:
        return "the grid does not contain the origin"
    return "at the origin " + ", ".join(f"{k} {v:.6g}" for k, v in origin.items())


COMMANDS = [surface]
