"""Teacher and student as a pair, for ``flatscape compare --connectivity [--curve]``.

Per student, against the reference (the teacher), on the train examples the rest of the
comparison measures (``--samples``) and the full test split: the loss and accuracy
barriers on the straight path (:func:`landscape.pairs.linear_path`, BatchNorm statistics
recomputed at each point), with ``--curve`` the maximum train loss on a trained quadratic
Bezier curve (:func:`landscape.pairs.bezier_curve`), top-1 agreement and KL(teacher ||
student) (:func:`landscape.pairs.function_agreement`) and per-layer linear CKA
(:func:`landscape.pairs.layer_cka`). Keys of each student's record:

``barrier``, ``barrier_test``              loss barrier (train, test)
``barrier_accuracy``, ``barrier_accuracy_test``  accuracy barrier, percentage points
``line_max_loss``                          the largest train loss on the straight path
``curve_max_loss``, ``curve_file``         with ``--curve``: the curve's largest train loss
``agreement``, ``agreement_test``          top-1 agreement, a fraction
``kl``, ``kl_test``                        KL(teacher || student), nats, mean over examples
``cka``, ``cka_mean``                      linear CKA per layer, and its mean over layers
``linear_path``, ``curve``                 the values along t (for the figures)
``aligned_barrier``, ... ``aligned_linear_path``  with ``--align``: the same path keys for
                                           the student aligned to the teacher by weight
                                           matching (:func:`cli.study.align_model`)
``alignment``                              with ``--align``: its distances and groups
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAIR_COLUMNS = ("barrier", "barrier_accuracy", "agreement", "kl", "cka_mean")
ALIGNED_COLUMNS = ("aligned_barrier", "aligned_barrier_accuracy")
CURVE_COLUMNS = ("line_max_loss", "curve_max_loss")
PATH_KEYS = ("barrier", "barrier_test", "barrier_accuracy", "barrier_accuracy_test",
             "line_max_loss")  # fmt: skip
"""The numbers :func:`path_record` gives of a path (each under its prefix)."""


@dataclass(frozen=True)
class ConnectivityRequest:
    """What ``--connectivity`` measures per pair.

    Args:
        curve: Also train and evaluate the Bezier curve.
        curve_steps: Its SGD steps.
        curve_lr: Its learning rate.
        seed: Seeds the t of each step, and the order of alignment's permutation groups.
        folder: Where the curve files ``curve-<name>.h5`` go; a temporary folder if None.
        align: Also the straight path to the student aligned to the teacher (weight
            matching); the curve, agreement and CKA stay those of the student as it is.
    """

    curve: bool = False
    curve_steps: int = 200
    curve_lr: float = 0.05
    seed: int = 0
    folder: Path | None = None
    align: bool = False


def _number(value: float) -> float | None:
    """A JSON number: None where the value is not finite (no labels, no accuracy)."""
    return float(value) if math.isfinite(value) else None


def path_record(path, prefix: str = "") -> dict[str, Any]:
    """The barrier keys of a :class:`landscape.pairs.PathValues`, each under ``prefix``."""
    values = (path.loss_barrier("train"), path.loss_barrier("test"),
              path.accuracy_barrier("train"), path.accuracy_barrier("test"),
              path.max_loss("train"))  # fmt: skip
    found = {prefix + key: _number(value) for key, value in zip(PATH_KEYS, values, strict=True)}
    found[prefix + "linear_path"] = _values(path)
    return found


def _values(path) -> dict[str, list[float | None]]:
    """A path's t and values per split, as JSON lists."""
    found = {"t": path.t.tolist()}
    for split in path.loss:
        found[f"{split}_loss"] = [_number(v) for v in path.loss[split]]
        found[f"{split}_acc"] = [_number(v) for v in path.acc[split]]
    return found


def agreement_record(teacher, student, data: Mapping[str, Sequence]) -> dict[str, Any]:
    """Agreement and KL on train and test, CKA per layer on the train examples."""
    from landscape.pairs import function_agreement, layer_cka

    train = function_agreement(teacher, student, data["train"])
    test = function_agreement(teacher, student, data["test"])
    cka = layer_cka(teacher, student, data["train"])
    finite = [v for v in cka.values() if math.isfinite(v)]
    return {
        "agreement": train.agreement,
        "agreement_test": test.agreement,
        "kl": train.kl,
        "kl_test": test.kl,
        "cka": {name: _number(v) for name, v in cka.items()},
        "cka_mean": sum(finite) / len(finite) if finite else None,
    }


def curve_record(teacher, student, loss_fn, data, request: ConnectivityRequest,
                 out: Path) -> dict[str, Any]:  # fmt: skip
    """The trained Bezier curve's largest train loss, its file and its values."""
    from landscape.pairs import CurveSettings, bezier_curve

    settings = CurveSettings(steps=request.curve_steps, lr=request.curve_lr, seed=request.seed)
    curve = bezier_curve(teacher, student, loss_fn, data, out, settings, force=True)
    return {
        "curve_max_loss": curve.values.max_loss("train"),
        "curve_file": str(out) if request.folder is not None else None,
        "curve": _values(curve.values),
    }


def pair_measures(teacher, student, loss_fn, data: Mapping[str, Sequence],
                  request: ConnectivityRequest, curve_out: Path | None = None,
                  metas: tuple[dict, dict] | None = None) -> dict:  # fmt: skip
    """Every ``--connectivity`` key of one student (module docstring).

    ``data`` holds ``train`` and ``test`` batches; ``curve_out`` is the curve's file
    (needed with ``request.curve``); ``metas`` the teacher's and the student's checkpoint
    headers (needed with ``request.align``: a registry model's declared groups).
    """
    from landscape.pairs import linear_path

    record = path_record(linear_path(teacher, student, loss_fn, data))
    if request.align:
        aligned, alignment = _aligned(teacher, student, metas or ({}, {}), request.seed)
        record.update(path_record(linear_path(teacher, aligned, loss_fn, data), "aligned_"))
        record["alignment"] = alignment
    record.update(agreement_record(teacher, student, data))
    if request.curve:
        record.update(curve_record(teacher, student, loss_fn, data, request, curve_out))
    return record


def _aligned(teacher, student, metas: tuple[dict, dict], seed: int):
    """A copy of ``student`` aligned to ``teacher``, and the alignment's summary."""
    import copy

    from cli.study.alignment import align_model

    alignment = align_model(student, metas[1], teacher, metas[0], seed=seed)
    aligned = copy.deepcopy(student)
    aligned.load_state_dict(alignment.state_dict)
    summary = alignment.to_dict()
    return aligned, summary


def add_connectivity(records: list[dict[str, Any]], models: Sequence, reference: int,
                     data: Sequence[Mapping[str, Sequence]], loss_fn,
                     request: ConnectivityRequest, metas: Sequence[dict] | None = None,
                     ) -> None:  # fmt: skip
    """:func:`pair_measures` of every model against ``models[reference]``, into its record.

    ``data[i]`` holds model ``i``'s train and test batches (the reference's are used);
    ``metas[i]`` its checkpoint header (for ``request.align``).
    """
    with ExitStack() as stack:
        folder = request.folder
        if request.curve and folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for i, model in enumerate(models):
            if i == reference:
                continue
            out = folder / f"curve-{records[i]['name']}.h5" if request.curve else None
            pair_metas = (metas[reference], metas[i]) if metas else None
            records[i].update(pair_measures(models[reference], model, loss_fn, data[reference],
                                            request, out, pair_metas))  # fmt: skip


def connectivity_lines(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The straight path (and curve) of every student, for :func:`cli.study.save_lines`."""
    lines = []
    for model in report["models"]:
        for key, kind in (("linear_path", "line"), ("curve", "Bezier curve")):
            if model.get(key):
                values = model[key]
                lines.append({"label": f"{report['reference']} → {model['name']} ({kind})",
                              "x": values["t"], "loss": _gaps(values["train_loss"]),
                              "acc": _gaps(values["train_acc"])})  # fmt: skip
    return lines


def _gaps(values: list[float | None]) -> list[float]:
    """JSON nulls back to NaN (gaps in a figure)."""
    return [math.nan if v is None else v for v in values]
