"""A checkpoint's curvature report: what ``flatscape hessian`` prints and writes.

Opens the checkpoint (``distill``), measures it on the one model-level path
(:func:`landscape.distributed.operator.data_parallel_curvature`, one process or a
``torchrun`` job) and builds the report (:func:`landscape.curvature.report.curvature_report`)
with the checkpoint's provenance, the loss and, when asked, the resampled spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distill.errors import DistillInputError

if TYPE_CHECKING:  # annotations only; torch loads on first use
    import torch

    from distill.sources import Sources
    from landscape.curvature.measure import CurvatureRequest


@dataclass(frozen=True)
class CurvatureSettings:
    """How a checkpoint's curvature is measured, besides what (the request).

    Attributes:
        operator: ``hessian``, ``ggn``, ``fisher`` or ``empirical-fisher``.
        samples: First train examples measured (None: all).
        batch_size: Examples per batch with graphs rebuilt per product (None: the policy).
        max_memory: The process's memory budget (``"auto"``, None or bytes).
        hvp: Hessian-vector product engine (None: the device's default).
        bn_mode: ``eval`` or ``train`` BatchNorm.
        mc_samples: Labels drawn per prediction for the Monte-Carlo Fisher.
        float64: Compute in float64.
        params: The parameter block (None: every trainable parameter).
        per_layer: Also the request on each module's block.
        resamples: Also the request on this many subsets of the whole train split.
        resample_size: Examples per subset.
        bootstrap: Draw the subsets with replacement.
    """

    operator: str = "hessian"
    samples: int | None = 1024
    batch_size: int | None = None
    max_memory: int | str | None = "auto"
    hvp: str | None = None
    bn_mode: str = "eval"
    mc_samples: int = 1
    float64: bool = False
    params: Any = None
    per_layer: bool = False
    resamples: int | None = None
    resample_size: int = 512
    bootstrap: bool = False

    def operator_options(self) -> dict[str, Any]:
        """Keywords of the measurement shared by the full run and the resampled one."""
        import torch

        return {
            "operator": self.operator.replace("-", "_"),
            "batch_size": self.batch_size,
            "max_memory": self.max_memory,
            "hvp": self.hvp and self.hvp.replace("-", "_"),
            "params": self.params,
            "dtype": torch.float64 if self.float64 else None,
            "bn_mode": self.bn_mode,
            **({"mc_samples": self.mc_samples} if self.operator == "fisher" else {}),
        }


def checkpoint_curvature(
    checkpoint: str,
    request: CurvatureRequest,
    settings: CurvatureSettings,
    loss_spec: str | None = None,
    sources: Sources | None = None,
    device: torch.device | str = "cpu",
    quiet: bool = True,
) -> dict[str, Any] | None:
    """The curvature report of one checkpoint's train loss, as ``flatscape hessian`` gives it.

    Args:
        checkpoint: The checkpoint file.
        request: What to measure (checked here).
        settings: How (:class:`CurvatureSettings`).
        loss_spec: The loss (:func:`distill.sources.analysis_loss`); None: the token loss
            the checkpoint was trained with, else cross-entropy (:func:`recorded_loss`).
        sources: The models' code and data the user named (:class:`distill.sources.Sources`).
        device: This process's device (under ``torchrun``, after joining the job).
        quiet: No progress bars.

    Returns:
        The report; None in a ``torchrun`` process other than the first. Raises
        :class:`DistillInputError` on a setting that cannot be measured, named.
    """
    from cli._common import progress_bar
    from distill import model_loss
    from distill.sources import (
        analysis_loss,
        check_loss,
        load_for_analysis,
        provenance,
        recorded_loss,
    )
    from landscape.curvature.report import curvature_report
    from landscape.distributed import process as distributed
    from landscape.distributed.operator import data_parallel_curvature

    request.check()
    loss_spec = loss_spec or recorded_loss(checkpoint)
    loss_fn, loss_record = analysis_loss(loss_spec, own=True)
    _check(settings, distributed.world_size(), request, loss_spec)
    quiet = quiet or not distributed.is_main()
    loaded = load_for_analysis(checkpoint, split="train", samples=settings.samples,
                               batch_size=settings.samples, device=device,
                               sources=sources)  # fmt: skip
    train = _resampling_data(checkpoint, settings, request.seed, device, sources)
    if loss_spec == model_loss.NAME:  # the model's own loss: labels into its inputs
        for data in (loaded, train):
            if data is not None:
                data.batches = model_loss.own_loss_batches(data.model, data.batches)
    check_loss(loss_fn, loaded.model, loaded.batches[0], loss_spec)
    with progress_bar(None, f"{settings.operator} products", quiet, unit="mv") as bar:
        result = data_parallel_curvature(loaded.model, loss_fn, loaded.batches, request,
                                         per_layer=settings.per_layer, progress=bar.update,
                                         **settings.operator_options())  # fmt: skip
    data = {"dataset": loaded.dataset_name, "split": loaded.split,
            "order": "first examples, dataset order, no augmentation",
            "batch_size": result.batch_size, "graphs_kept": result.graphs_kept}  # fmt: skip
    report = curvature_report(result, request, checkpoint=str(checkpoint),
                              checkpoint_sha256=loaded.sha256, data=data,
                              bn_mode=settings.bn_mode)  # fmt: skip
    params = None if settings.params is None else settings.params.describe()
    report.update(operator=settings.operator, provenance=provenance(loaded.metadata),
                  loss_function=loss_record, params=params)  # fmt: skip
    if distributed.world_size() > 1:
        report["processes"] = distributed.world_size()
    if settings.operator == "fisher":
        report["mc_samples"] = settings.mc_samples
    if train is not None:
        report["resampling"] = _resampled(loaded.model, loss_fn, train, request, settings, quiet)
    return report if distributed.is_main() else None


def _check(
    settings: CurvatureSettings, processes: int, request: CurvatureRequest, loss_spec: str
) -> None:
    from distill import model_loss

    if loss_spec == model_loss.NAME and settings.operator != "hessian":
        raise model_loss.refuse_own_loss(f"--operator {settings.operator}")
    if loss_spec == model_loss.NAME and request.engine == "pyhessian":
        raise model_loss.refuse_own_loss("--engine pyhessian")
    if settings.mc_samples != 1 and settings.operator != "fisher":
        raise DistillInputError("--mc-samples draws labels for --operator fisher only")
    if settings.resamples and processes > 1:
        raise DistillInputError("--resamples runs in one process; drop it under torchrun")


def _resampling_data(checkpoint, settings: CurvatureSettings, seed: int, device, sources):
    """The whole train split for --resamples, its subsets checked before anything is measured."""
    if not settings.resamples:
        return None
    from distill.sources import load_for_analysis
    from landscape.curvature.resampling import subset_indices

    train = load_for_analysis(checkpoint, split="train", batch_size=4096, device=device,
                              sources=sources)  # fmt: skip
    subset_indices(train.samples, settings.resamples, settings.resample_size,
                   settings.bootstrap, seed)  # fmt: skip
    return train


def _resampled(model, loss_fn, train, request, settings: CurvatureSettings, quiet: bool):
    """The request on the resampled subsets (:func:`resampled_curvature`)."""
    from cli._common import progress_bar
    from landscape.curvature.resampling import resampled_curvature

    with progress_bar(None, "resampling", quiet, unit="mv") as bar:
        return resampled_curvature(model, loss_fn, train.batches, request, settings.resamples,
                                   settings.resample_size, bootstrap=settings.bootstrap,
                                   seed=request.seed, progress=bar.update,
                                   **settings.operator_options())  # fmt: skip
