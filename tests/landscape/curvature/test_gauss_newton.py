"""The split H = GGN + residual against dense float64 matrices, with shared probes."""

from __future__ import annotations

import pytest
import torch

from landscape.curvature.gauss_newton import ggn_split
from landscape.curvature.trace import rademacher
from tests.landscape.cases import CASES, dense_hessian, make_float64
from tests.landscape.operators.test_ggn import dense_ggn


@pytest.mark.parametrize("case", CASES[:2], ids=[c.id for c in CASES[:2]])
def test_split_matches_dense_matrices(case):
    model, loss_fn, batches = make_float64(case)
    H = dense_hessian(model, loss_fn, batches)
    G = dense_ggn(model, loss_fn, batches)
    report = ggn_split(
        model, loss_fn, batches, top_k=2, trace_matvecs=7, seed=4, tol=1e-10
    ).to_dict()
    for name, dense in (("hessian", H), ("ggn", G), ("residual", H - G)):
        values = torch.linalg.eigvalsh(dense)
        torch.testing.assert_close(
            torch.tensor(report[name]["eigenvalues"], dtype=torch.float64), values.flip(0)[:2]
        )
        if name == "residual":
            smallest = torch.tensor(report[name]["smallest"]["eigenvalues"], dtype=torch.float64)
            torch.testing.assert_close(smallest, values[:2])
        probes = rademacher(H.shape[0], 7, torch.Generator().manual_seed(4), H.dtype, H.device)
        forms = (probes * (dense @ probes)).sum(dim=0)
        assert report[name]["trace"]["estimate"] == pytest.approx(float(forms.mean()), rel=1e-10)
    traces = {name: report[name]["trace"]["estimate"] for name in ("hessian", "ggn", "residual")}
    assert traces["hessian"] == pytest.approx(traces["ggn"] + traces["residual"], rel=1e-12)
    assert report["loss"] > 0 and report["examples"] == sum(len(y) for _, y in batches)


def test_no_trace_when_no_probes():
    model, loss_fn, batches = make_float64(CASES[0])
    report = ggn_split(model, loss_fn, batches, trace_matvecs=0).to_dict()
    assert report["hessian"]["trace"] is None and report["residual"]["trace"] is None
