"""`cli.study.student_pairs`: a reproduction's student against its seed's teacher."""

import shutil
from pathlib import Path

import pytest
import torch.nn.functional as F

import cli.study.alignment
from cli.study.experiment import Experiment, plan
from cli.study.student_pairs import measure_pair, pair_teachers
from distill.sources import first_examples, open_checkpoint
from landscape.pairs import linear_path
from landscape.pairs.permutation import UnpermutableModelError


def test_every_main_student_is_paired_with_its_seeds_teacher(tmp_path):
    experiment = Experiment.from_preset("full", datasets=["synthetic"], seeds=2, generations=2)
    pairs = pair_teachers(plan(experiment, tmp_path))
    folder = tmp_path / "synthetic"
    assert pairs == {
        folder / f"seed{s}" / f"gen{g}.safetensors": folder / f"seed{s}" / "teacher.safetensors"
        for s in (0, 1)
        for g in (1, 2)
    }  # the ensemble's and the stopped teachers' students are not main-group students


def test_a_refused_alignment_keeps_the_raw_barrier_and_says_why(
    tmp_path, mnist1d_teacher, mnist1d_student, monkeypatch
):
    teacher, student = (Path(shutil.copy(p, tmp_path)) for p in (mnist1d_teacher, mnist1d_student))

    def refuse(*args, **kwargs):
        raise UnpermutableModelError("module 'features.0': its units cannot be permuted")

    monkeypatch.setattr(cli.study.alignment, "align_model", refuse)
    record = measure_pair(student, teacher, samples=128)
    assert record["aligned_barrier"] is None and record["aligned_barrier_test"] is None
    assert record["alignment"] == {"refused": "module 'features.0': its units cannot be permuted"}
    model_t, _, bundle = open_checkpoint(teacher)
    model_s = open_checkpoint(student)[0]
    data = {"train": first_examples(bundle.train_eval, 128, 128),
            "test": first_examples(bundle.test, None, 1024)}  # fmt: skip
    path = linear_path(model_t, model_s, F.cross_entropy, data)
    assert record["barrier"] == pytest.approx(path.loss_barrier("train"), rel=1e-9, abs=1e-12)
    assert "linear_path" not in record
