"""A checkpoint's loss surface: what ``flatscape surface`` computes into its HDF5 file.

Opens the checkpoint and the data (``distill``), builds the directions the user named
(random, interpolation towards another checkpoint, Hessian eigenvectors, the plane through
three checkpoints or of training trajectories) and calls
:func:`landscape.surface.loss_surface.loss_surface`, recording where every input came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape.errors import LandscapeInputError

if TYPE_CHECKING:  # annotations only; torch loads on first use
    import torch

    from landscape.surface.loss_surface import SurfaceResult
    from landscape.surface.plane import Plane

ALL = 2**62  # one batch holding every example; loss_surface cuts it afterwards


def checkpoint_surface(
    checkpoint: str | Path,
    out: str | Path,
    kind: str = "random",
    *,
    x_range: str,
    y_range: str | None = None,
    plane_paths: tuple[str, ...] = (),
    target: Path | None = None,
    trajectories: tuple[str, ...] = (),
    loss_spec: str | None = None,
    sources: Any = None,
    device: torch.device | str = "cpu",
    align: bool = False,
    **options: Any,
) -> tuple[SurfaceResult, Plane | None]:
    """The loss surface of one checkpoint around its weights, into ``out``.

    Args:
        checkpoint: The checkpoint at the origin (the first of ``plane_paths``).
        out: The HDF5 file.
        kind: ``random``, ``interp`` (towards ``target``), ``eigen``, ``plane`` (through
            ``plane_paths``) or ``pca`` (of the snapshots in ``trajectories``).
        x_range: The x grid, MIN:MAX:N (``auto[:N]`` on a plane: around the models).
        y_range: The y grid, or None for a 1D curve.
        plane_paths: The three checkpoints of ``kind="plane"``.
        target: The other checkpoint of ``kind="interp"``.
        trajectories: The snapshot folders of ``kind="pca"``.
        loss_spec: The loss (:func:`distill.sources.analysis_loss`); None: the token loss
            the checkpoint was trained with, else cross-entropy (:func:`recorded_loss`).
        sources: The models' code and data (:class:`distill.sources.Sources`).
        device: This process's device.
        align: ``kind="plane"``: align the second and third checkpoints to the first by
            weight matching before the plane is built.
        **options: :func:`~landscape.surface.loss_surface.loss_surface` keywords
            (``split``, ``samples``, ``normalization``, ``ignore``, ``seed``, ``batch_size``,
            ``vectorize``, ``max_memory``, ``resume``, ``force``, ``progress``,
            ``processes``).

    Returns:
        The surface's result and the plane (None for other directions).
    """
    from distill.checkpoint import file_sha256
    from distill.sources import (
        analysis_loss,
        check_loss,
        first_examples,
        open_checkpoint,
        provenance,
        recorded_loss,
    )
    from landscape.surface.loss_surface import loss_surface
    from landscape.surface.store import SPLITS

    if align and kind != "plane":
        raise LandscapeInputError("--align aligns the models of --plane A B C; give --plane")
    loss_spec = loss_spec or recorded_loss(checkpoint)
    loss_fn, loss_record = analysis_loss(loss_spec)
    model, meta, bundle = open_checkpoint(checkpoint, device=device, sources=sources)
    splits = {"train": bundle.train_eval, "test": bundle.test}
    samples = options.get("samples")
    data = {name: first_examples(splits[name], samples, ALL, device)
            for name in SPLITS[options.get("split", "train")]}  # fmt: skip
    check_loss(loss_fn, model, next(iter(data.values()))[0], loss_spec)
    settings = {"checkpoint_sha256": file_sha256(checkpoint), "dataset": meta["dataset"]["name"],
                "loss": loss_spec,
                "loss_source_sha256": loss_record.get("source_sha256") or ""}  # fmt: skip
    info = {"checkpoint": str(checkpoint), "provenance": json.dumps(provenance(meta))}
    directions, made_plane = kind, None
    if kind in ("plane", "pca"):
        made_plane, x_range, y_range = _plane(kind, model, meta, checkpoint, plane_paths,
                                              trajectories, x_range, y_range, settings,
                                              options.get("normalization"), device,
                                              sources, align)  # fmt: skip
        info.update({f"plane_{k}": str(p) for k, p in zip("abc", plane_paths, strict=False)})
        directions = made_plane.directions
    elif kind == "interp":
        directions = [_interpolation(model, meta, target, device, sources), "random"]
        directions = directions[: 2 if y_range else 1]
        settings.update(direction="interp", x_direction="interpolation",
                        interp_sha256=file_sha256(target))  # fmt: skip
        info["interp_checkpoint"] = str(target)
    elif kind == "eigen":
        options["hessian_data"] = first_examples(bundle.train_eval, samples, ALL, device)
    result = loss_surface(model, loss_fn, data, out, x_range=x_range, y_range=y_range,
                          directions=directions, plane=made_plane, settings=settings, info=info,
                          **options)  # fmt: skip
    return result, made_plane


def _plane(kind, model, meta, checkpoint, paths, trajectories, x_range, y_range, settings,
           normalization, device, sources, align):  # fmt: skip
    """The plane, its grid, and its settings added to ``settings``."""
    from cli.study import planes

    if kind == "plane":
        made, plane_settings = planes.load_checkpoint_plane(model, meta, paths, normalization,
                                                            device, sources, align)  # fmt: skip
    else:
        made, plane_settings = planes.load_trajectory_plane(
            model, meta, checkpoint, trajectories, sources.model
        )
    settings.update(plane_settings)
    return made, *planes.plane_axes(made, x_range, y_range)


def _interpolation(model: torch.nn.Module, meta: dict, target: Path, device, sources):
    """Direction to another checkpoint, which must share the architecture."""
    from distill.sources import open_checkpoint
    from landscape.surface.directions import interpolation_direction

    other, other_meta, _ = open_checkpoint(target, device=device, sources=sources)
    mine = (meta.get("arch"), meta.get("arch_kwargs"))
    theirs = (other_meta.get("arch"), other_meta.get("arch_kwargs"))
    if mine != theirs:
        raise LandscapeInputError(
            f"interp: {target} is a {theirs[0]} {theirs[1]} and the checkpoint a {mine[0]} "
            f"{mine[1]}; interpolate between checkpoints of one architecture"
        )
    return interpolation_direction(model, other.state_dict())
