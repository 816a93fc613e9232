"""Planes for `flatscape surface`: through three checkpoints, or along training trajectories."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape.errors import LandscapeInputError

if TYPE_CHECKING:  # annotations only; torch loads inside the command
    import torch

    from distill.sources import Sources
    from landscape.surface.plane import Plane

AUTO_POINTS = 31
"""Points per axis of an automatic plane grid (31 x 31 = 961 forward passes)."""
FAMILY = (("arch", "architecture"), ("arch_kwargs", "model arguments"), ("dataset", "dataset"))


def is_auto(text: str | None) -> bool:
    """Whether an axis option asks for the range around the marked models."""
    return text is not None and (text == "auto" or text.startswith("auto:"))


def auto_axis_points(text: str, option: str) -> int:
    """N of ``auto:N`` (``auto`` alone: :data:`AUTO_POINTS`)."""
    from landscape.surface.grid import parse_count

    count = text[len("auto:") :] if text.startswith("auto:") else str(AUTO_POINTS)
    hint = f"{option} {text!r}: give auto or auto:N with N >= 2"
    points = parse_count(count, option, hint)
    if points < 2:
        raise LandscapeInputError(hint)
    return points


def check_plane_grid(x_text: str, y_text: str, force: bool) -> int:
    """The points of a plane's grid (``auto[:N]`` or MIN:MAX:N per axis), nothing allocated."""
    from landscape.surface.grid import check_grid_size, parse_axis_spec

    counts = [
        auto_axis_points(text, option) if is_auto(text) else parse_axis_spec(text, option).count
        for text, option in ((x_text, "--x"), (y_text, "--y"))
    ]
    return check_grid_size(counts[0], counts[1], force)


def plane_axes(plane: Plane, x_text: str, y_text: str) -> tuple[Any, Any]:
    """The grid of a plane: ``auto[:N]`` spans every marked model and path, else MIN:MAX:N."""
    import numpy as np

    from landscape.surface.grid import parse_axis
    from landscape.surface.plane import auto_axis

    shown = [plane.coordinates] + [p["coordinates"] for p in plane.paths.values()]
    points = np.concatenate(shown)
    axes = []
    for column, (text, option) in enumerate(((x_text, "--x"), (y_text, "--y"))):
        if is_auto(text):
            axes.append(auto_axis(points[:, column], auto_axis_points(text, option)))
        else:
            axes.append(parse_axis(text, option, force=True))  # checked by check_plane_grid
    return axes[0], axes[1]


def check_family(meta: dict, other: dict, path: str | Path, first: str | Path) -> None:
    """Refuse a model of another architecture, model arguments or dataset than ``first``."""
    for key, what in FAMILY:
        if meta.get(key) != other.get(key):
            mine, theirs = _short(meta.get(key)), _short(other.get(key))
            raise LandscapeInputError(
                f"{path} has another {what} than {first} ({theirs} vs {mine}); a plane needs "
                "models of one architecture trained on one dataset"
            )


def _short(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        digest = value.get("sha256")
        return str(value["name"]) + (f" {digest[:12]}" if digest else "")
    return str(value)


def load_checkpoint_plane(
    model: torch.nn.Module,
    meta: dict,
    paths: tuple[str, str, str],
    normalization: str,
    device: torch.device,
    sources: Sources,
    align: bool = False,
) -> tuple[Plane, dict[str, Any]]:
    """The plane through the three checkpoints (the first already open as ``model``).

    Opens the other two, refuses another family, aligns them to the first by weight
    matching if asked (:func:`cli.study.alignment.align_model`), and calls
    :func:`landscape.surface.plane.checkpoint_plane`; returns the plane and the settings a
    surface records about it (with ``align``: ``alignment``; the plane's attributes then
    hold the parameter distances to A before and after).
    """
    from cli.study.alignment import align_model
    from distill.checkpoint import file_sha256
    from distill.sources import open_checkpoint
    from landscape.surface import plane as planes

    states, aligned = [], {}
    for letter, path in zip("bc", paths[1:], strict=True):
        other, other_meta, _ = open_checkpoint(path, device=device, sources=sources)
        check_family(meta, other_meta, path, paths[0])
        if not align:
            states.append(other.state_dict())
            continue
        result = align_model(other, other_meta, model, meta, names=(path, paths[0]))
        states.append(result.state_dict)
        aligned[f"plane_{letter}_distance_before"] = result.distance_before
        aligned[f"plane_{letter}_distance_after"] = result.distance_after
    labels = _labels(paths)
    plane = planes.checkpoint_plane(model, *states, labels=labels, normalization=normalization)
    settings = {
        "direction": "plane",
        "normalization": normalization,
        "x_direction": f"{labels[1]} - {labels[0]}",
        "y_direction": f"{labels[2]} - {labels[0]}, orthogonalised",
        "plane_b_sha256": file_sha256(paths[1]),
        "plane_c_sha256": file_sha256(paths[2]),
        **({"alignment": "weight_matching"} if align else {}),
    }
    plane.attrs.update(aligned)  # recorded, not compared on --resume (float sums)
    return plane, settings


def load_trajectory_plane(
    model: torch.nn.Module,
    meta: dict,
    checkpoint: str,
    directories: tuple[str, ...],
    named_model: str | None = None,
) -> tuple[Plane, dict[str, str]]:
    """The PCA plane of the snapshots in ``directories`` around ``model``.

    Loads the snapshots, refuses another family, and calls
    :func:`landscape.surface.plane.trajectory_plane`.

    ``named_model`` is the ``--model`` the user named: snapshots of a model made from
    user code are rebuilt from it (never from the code they record).
    """
    from distill.checkpoint import file_sha256, load_checkpoint
    from landscape.surface import plane as planes

    if not directories:
        raise LandscapeInputError(
            "--direction pca: give --trajectory DIR (snapshots from `flatscape train "
            "--snapshots N`), once per run"
        )
    trajectories: dict[str, list[dict]] = {}
    epochs: dict[str, list[float]] = {}
    digest = hashlib.sha256()
    for directory in directories:
        files = sorted(Path(directory).glob("epoch_*.safetensors"))
        if not Path(directory).is_dir() or not files:
            raise LandscapeInputError(
                f"--trajectory {directory}: no snapshots (epoch_*.safetensors) there; "
                "train with --snapshots N"
            )
        label = Path(directory).name.removesuffix(".snapshots")
        if label in trajectories:
            label = str(directory)
        loaded = []
        for path in files:
            snapshot, snapshot_meta = load_checkpoint(path, named_model=named_model)
            check_family(meta, snapshot_meta, path, checkpoint)
            loaded.append((snapshot_meta.get("epoch", len(loaded)), snapshot.state_dict()))
            digest.update(file_sha256(path).encode())
        loaded.sort(key=lambda pair: pair[0])
        trajectories[label] = [state for _, state in loaded]
        epochs[label] = [float(epoch) for epoch, _ in loaded]
    plane = planes.trajectory_plane(model, trajectories, epochs)
    settings = {
        "direction": "pca",
        "normalization": "none",
        "x_direction": "principal direction 1",
        "y_direction": "principal direction 2",
        "trajectory_sha256": digest.hexdigest(),
    }
    return plane, settings


def _labels(paths: tuple[str, ...]) -> list[str]:
    """File stems (teacher, gen1, gen2), made unique with their folders where they repeat."""
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(Path(p).with_suffix("")) for p in paths]


def mark_lines(path: str | Path) -> list[str]:
    """One line per model marked in a surface file: where it sits and its values there."""
    from landscape.surface.store import SurfaceStore

    with SurfaceStore.read(path) as store:
        marks = store.extra("marks")
        attrs = dict(store.attrs)
    if not marks:
        return []
    lines = []
    if "plane_b_distance_before" in attrs:
        moved = ", ".join(
            f"{marks['labels'][n]} {attrs[f'plane_{b}_distance_before']:.4g} -> "
            f"{attrs[f'plane_{b}_distance_after']:.4g}" for n, b in ((1, "b"), (2, "c"))
        )  # fmt: skip
        lines.append(f"  aligned to {marks['labels'][0]} (weight matching): distance {moved}")
    for n, label in enumerate(marks["labels"]):
        x, y = marks["coordinates"][n]
        values = "".join(
            f", {key.replace('_', ' ')} {marks[key][n]:.6g}"
            for key in ("train_loss", "test_loss") if key in marks
        )  # fmt: skip
        off = marks["off_plane"][n]
        where = f", {off:.3g} off the plane" if off > 1e-9 else ""
        lines.append(f"  {label} at ({x:.4g}, {y:.4g}){values}{where}")
    return lines


def plane_report(
    paths: list[str | Path],
    batches: list,
    out: Path,
    points: int,
    device: torch.device | str = "cpu",
    figure: Path | None = None,
    sources: Sources | None = None,
    loss_fn: Any = None,
    replace: bool = False,
    align: bool = False,
) -> dict[str, Any]:
    """The plane through three checkpoints on ``batches``: where each model sits, its loss.

    The surface goes to ``out`` (resumed when it exists with the same settings, unless
    ``replace``: then it is made anew; the caller has the user's --force), on an
    automatic ``points`` x ``points`` grid; ``figure`` gets its contour with the models
    marked. ``sources`` names the models' code (:class:`distill.sources.Sources`) and
    ``loss_fn`` the batch-mean loss (default cross-entropy). Returns the models' positions
    and values and the grid's lowest loss. With ``align`` the other two are aligned to the
    first by weight matching before the plane is built (as ``surface --plane --align``).
    """
    import numpy as np
    import torch.nn.functional as F

    from distill.checkpoint import file_sha256
    from distill.sources import open_checkpoint
    from landscape.surface.loss_surface import loss_surface
    from landscape.surface.plot import plot_surfaces
    from landscape.surface.store import SurfaceStore

    model, meta, _ = open_checkpoint(paths[0], device=device, sources=sources)
    trio = (str(paths[0]), str(paths[1]), str(paths[2]))
    plane, _ = load_checkpoint_plane(model, meta, trio, "none", device, sources, align)
    labels = plane.labels
    x, y = plane_axes(plane, f"auto:{points}", f"auto:{points}")
    settings = {"checkpoint_sha256": file_sha256(paths[0]), "direction": "plane",
                "plane_b_sha256": file_sha256(paths[1]),
                "plane_c_sha256": file_sha256(paths[2]),
                "loss": getattr(loss_fn, "__name__", type(loss_fn).__name__) if loss_fn
                else "cross_entropy",
                "train_examples": sum(len(b[1]) for b in batches),
                **({"alignment": "weight_matching"} if align else {})}  # fmt: skip
    same = False
    if out.exists() and not replace:
        with SurfaceStore.read(out) as old:
            same = all(old.attrs.get(key) == value for key, value in settings.items())
    loss_surface(model, loss_fn or F.cross_entropy, {"train": batches}, out, x_range=x,
                 y_range=y, plane=plane, resume=same, force=out.exists() and not same,
                 settings=settings)  # fmt: skip
    with SurfaceStore.read(out) as store:
        marks = store.extra("marks")
        loss = store.arrays["train_loss"]
    low = np.unravel_index(np.nanargmin(loss), loss.shape)
    if figure is not None:
        plot_surfaces([out], figure, kind="contour", labels=[" -> ".join(labels)], log=True)
    return {
        "file": str(out),
        **({"aligned": "weight_matching"} if align else {}),
        "models": [
            {
                "name": label,
                "x": float(marks["coordinates"][n, 0]),
                "y": float(marks["coordinates"][n, 1]),
                "train_loss": float(marks["train_loss"][n]),
            }  # fmt: skip
            for n, label in enumerate(labels)
        ],
        "norms": {
            "b": plane.attrs["plane_norm_b"],
            "c": plane.attrs["plane_norm_c"],
            "cosine": plane.attrs["plane_cosine"],
        },  # fmt: skip
        "lowest": {
            "x": float(x[low[1]]),
            "y": float(y[low[0]]),
            "train_loss": float(loss[low]),
        },  # fmt: skip
    }


def plane_lines(report: dict[str, Any]) -> list[str]:
    """A Markdown table of the models on a plane, and the grid's lowest point."""
    rows = ["| model | x | y | train loss |", "|---|---|---|---|"]
    rows += [f"| {m['name']} | {m['x']:.4g} | {m['y']:.4g} | {m['train_loss']:.4g} |"
             for m in report["models"]]  # fmt: skip
    low = report["lowest"]
    rows += [
        "",
        f"Lowest train loss on the grid: {low['train_loss']:.4g} at "
        f"({low['x']:.4g}, {low['y']:.4g}); |B - A| = {report['norms']['b']:.4g}, "
        f"|C - A| = {report['norms']['c']:.4g}, cosine {report['norms']['cosine']:.3f}.",
    ]
    return rows
