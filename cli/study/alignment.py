"""A student aligned to its teacher: ``flatscape align`` and the aligned planes of ``surface``.

Passes the registry's declared permutation groups (:mod:`distill.permutations`, for the
models fx cannot trace) to :func:`landscape.pairs.align_to`; every other model's groups
are derived from its graph there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape.errors import LandscapeInputError

if TYPE_CHECKING:  # annotations only; torch loads on first use
    import torch

    from landscape.pairs.align import Alignment


def align_model(
    model: torch.nn.Module,
    meta: dict[str, Any],
    teacher: torch.nn.Module,
    teacher_meta: dict[str, Any],
    *,
    seed: int = 0,
    names: tuple[str | Path, str | Path] = ("the student", "the teacher"),
) -> Alignment:
    """``model`` (a student with header ``meta``) aligned to ``teacher`` by weight matching.

    Args:
        model: The student, as loaded.
        meta: Its checkpoint header (``arch``, ``arch_kwargs``).
        teacher: The model to align to.
        teacher_meta: Its header.
        seed: Seeds the order in which permutation groups are visited.
        names: How messages name the two models (their files).

    Raises:
        LandscapeInputError: The two are of another architecture or model arguments.
        UnpermutableModelError: The model's units cannot be permuted (names the module).
    """
    from distill.permutations import declared_permutation_groups
    from landscape.pairs.align import align_to

    for key, what in (("arch", "architecture"), ("arch_kwargs", "model arguments")):
        if meta.get(key) != teacher_meta.get(key):
            raise LandscapeInputError(
                f"{names[0]} has another {what} than {names[1]} ({meta.get(key)} vs "
                f"{teacher_meta.get(key)}); align a student to a teacher of its architecture"
            )
    groups = declared_permutation_groups(str(meta.get("arch")), meta.get("arch_kwargs") or {})
    return align_to(model, teacher, groups, seed=seed)


def align_checkpoint(
    student: str | Path,
    teacher: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    named_model: str | None = None,
) -> dict[str, Any]:
    """Write ``student`` aligned to ``teacher`` into ``out``; returns the summary.

    The checkpoint keeps the student's header (its model, data, lineage, recipe and
    metrics: the function is unchanged) and adds ``aligned_to`` (the teacher's SHA-256)
    and ``alignment`` (the student's SHA-256, the seed, the parameter distance to the
    teacher before and after, the permutation groups and sweeps).

    Args:
        student: The student's flatscape checkpoint.
        teacher: The teacher's.
        out: The aligned checkpoint (``.safetensors``).
        seed: Seeds the order in which permutation groups are visited.
        named_model: The ``--model`` the user named (a checkpoint made from user code is
            rebuilt only from code named again).

    Raises:
        DistillInputError: A missing, damaged or foreign checkpoint.
        LandscapeInputError: Models of two architectures; units that cannot be permuted.
    """
    from distill.checkpoint import (
        file_sha256,
        is_flatscape_checkpoint,
        load_checkpoint,
        save_checkpoint,
    )
    from distill.errors import DistillInputError

    loaded = {}
    for role, path in (("STUDENT", student), ("--to", teacher)):
        if not Path(path).is_file():
            raise DistillInputError(f"{role} {path}: checkpoint not found")
        if not is_flatscape_checkpoint(path):
            raise DistillInputError(
                f"{role} {path}: not a flatscape checkpoint; make one with flatscape import"
            )
        loaded[role] = load_checkpoint(path, named_model=named_model)
    (model, meta), (teacher_model, teacher_meta) = loaded["STUDENT"], loaded["--to"]
    result = align_model(model, meta, teacher_model, teacher_meta, seed=seed,
                         names=(student, teacher))  # fmt: skip
    model.load_state_dict(result.state_dict)
    alignment = {"student_sha256": file_sha256(student), "seed": seed, **result.to_dict()}
    document = {key: value for key, value in meta.items()
                if key not in ("schema", "weights_sha256")}  # fmt: skip
    document.update(aligned_to=file_sha256(teacher), alignment=alignment)
    save_checkpoint(out, model, document)
    return {"checkpoint": str(out), "student": str(student), "teacher": str(teacher),
            "aligned_to": document["aligned_to"], **alignment}  # fmt: skip


def alignment_line(summary: dict[str, Any]) -> str:
    """One line: what was aligned to what, and the weight distance before and after."""
    before, after = summary["distance_before"], summary["distance_after"]
    change = f" ({(after - before) / before:+.1%})" if before > 0 else ""
    return (
        f"{summary['checkpoint']}: {summary['student']} aligned to {summary['teacher']}; "
        f"weight distance {before:.6g} -> {after:.6g}{change}, {summary['groups']} "
        f"permutation groups ({summary['permuted_units']} units), {summary['sweeps']} sweeps"
    )
