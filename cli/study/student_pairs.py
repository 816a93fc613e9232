"""Each student of a reproduction against its seed's teacher: the pair measures, cached.

For every student of the main group (gen1, gen2, ...), against the generation-0 teacher
of its variant and seed (the teacher :func:`cli.study.flatness_gain.pairs_from_records`
pairs it with), on the experiment's first ``samples`` train examples and the full test
split: :func:`cli.study.connectivity.pair_measures` with alignment, i.e. the loss and
accuracy barriers on the straight path, raw and after weight matching (``barrier``,
``aligned_barrier`` and their ``_test`` and ``_accuracy`` kin), ``agreement``, ``kl``
and CKA. No Bezier curve (it trains). The values along the paths (``linear_path``,
``aligned_linear_path``) are left out of the record.

Cached by :func:`cli.study.cache.measured` beside the student as ``pair`` with the
teacher's SHA-256 in the settings: a rerun reads them; a retrained teacher or student is
measured again. Where the student's units cannot be permuted, it keeps its raw barrier,
its ``aligned_*`` keys are null and ``alignment`` is ``{"refused": <the reason>}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.nn.functional as F

from cli.study.cache import measured
from cli.study.connectivity import PATH_KEYS, ConnectivityRequest, pair_measures
from distill.checkpoint import file_sha256, load_checkpoint
from distill.data import dataset_from_description
from distill.sources import first_examples
from landscape.errors import LandscapeInputError
from landscape.pairs.path import PATH_POINTS

PATH_LISTS = ("linear_path", "aligned_linear_path")
"""The values along each path: for figures, too bulky for a run's records."""
TEST_BATCH = 1024
"""Batch size of the test split (as the profiles are measured)."""


def pair_teachers(specs: Sequence[Any]) -> dict[Path, Path]:
    """Each main-group student's checkpoint to its variant's and seed's teacher's.

    ``specs``: the experiment's :class:`cli.study.experiment.ModelSpec` list (its plan).
    """
    main = [s for s in specs if s.group == "main"]
    teachers = {(s.dataset, s.regime, s.seed): s.path for s in main if s.generation == 0}
    return {s.path: teachers[(s.dataset, s.regime, s.seed)] for s in main if s.generation > 0}


def add_pair_measures(
    specs: Sequence[Any], records: list[dict[str, Any]], samples: int, device="cpu"
) -> None:
    """:func:`measure_pair` of every main-group student of ``specs``, merged into its record."""
    by_path = {Path(r["path"]): r for r in records if r.get("path")}
    for student, teacher in pair_teachers(specs).items():
        by_path[student].update(measure_pair(student, teacher, samples, device))


def measure_pair(student: Path, teacher: Path, samples: int, device="cpu") -> dict[str, Any]:
    """The pair measures of ``student`` against ``teacher`` (module docstring), cached.

    Args:
        student: The student's checkpoint (the cache file goes beside it).
        teacher: Its teacher's checkpoint.
        samples: First train examples measured on (the test split is measured whole).
        device: Where to compute.
    """
    request = ConnectivityRequest(align=True)
    settings = {"teacher_sha256": file_sha256(teacher), "samples": samples,
                "points": PATH_POINTS, "seed": request.seed}  # fmt: skip

    def measure() -> dict[str, Any]:
        (teacher_model, teacher_meta), (model, meta) = (
            load_checkpoint(path, device=device) for path in (teacher, student)
        )
        bundle = dataset_from_description(meta["dataset"])
        data = {"train": first_examples(bundle.train_eval, samples, samples, device),
                "test": first_examples(bundle.test, None, TEST_BATCH, device)}  # fmt: skip
        record = _pair_record(teacher_model, model, data, request, (teacher_meta, meta))
        return {key: value for key, value in record.items() if key not in PATH_LISTS}

    return measured(student, "pair", settings, measure).values


def _pair_record(teacher, student, data, request: ConnectivityRequest, metas) -> dict[str, Any]:
    """The pair measures with alignment; without it, and the reason, where it is refused."""
    try:
        return pair_measures(teacher, student, F.cross_entropy, data, request, metas=metas)
    except LandscapeInputError as err:  # alignment refused; any other fault recurs below
        record = pair_measures(teacher, student, F.cross_entropy, data, ConnectivityRequest())
        refused = {f"aligned_{key}": None for key in PATH_KEYS}
        return {**record, **refused, "alignment": {"refused": str(err)}}
