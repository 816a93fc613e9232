"""measure_curvature and the report: one path from solvers to JSON and terminal."""

from __future__ import annotations

import json

import pytest
import torch

from landscape.curvature.measure import CurvatureRequest, measure_curvature
from landscape.curvature.report import curvature_report, format_summary
from landscape.curvature.trace import rademacher
from landscape.errors import LandscapeInputError


def test_eigenvalues_trace_density_against_dense(problem):
    dim = problem.dense.shape[0]
    # Blocks of 2: the least-squares case has eigenvalues of multiplicity 2.
    request = CurvatureRequest(top_k=2, tol=1e-10, trace=True, trace_matvecs=3 * dim, density=True,
                               density_steps=4, block_size=2)  # fmt: skip
    result = measure_curvature(problem.operator(), request)
    exact = torch.linalg.eigvalsh(problem.dense)
    torch.testing.assert_close(result.eigen.eigenvalues, exact.flip(0)[:2], rtol=1e-6, atol=1e-10)
    # Hutch++ with a sketch as large as the dimension is exact.
    assert result.trace.estimate == pytest.approx(float(exact.sum()), rel=1e-8, abs=1e-10)
    # SLQ with 4 nodes integrates polynomials up to degree 7 exactly: v^T H^p v, v = z/|z|.
    z = rademacher(dim, 1, torch.Generator().manual_seed(0), torch.float64, torch.device("cpu"))
    v = z[:, 0] / z.norm()
    for power in (1, 2, 3):
        exact_moment = v @ torch.linalg.matrix_power(problem.dense, power) @ v
        assert float(result.density.moment(power)[0]) == pytest.approx(
            float(exact_moment), rel=1e-7, abs=1e-10
        )
    assert result.matvecs == (result.eigen.matvecs + result.trace.matvecs + result.density.matvecs)
    assert result.dtype == torch.float64 and result.hvp == "double_backward"


def test_report_has_the_design_fields_and_is_json(problem):
    request = CurvatureRequest(top_k=1, trace=True, trace_matvecs=6, trace_method="hutchinson")
    result = measure_curvature(problem.operator(), request)
    data = {"dataset": "x", "split": "train"}
    report = curvature_report(
        result, request, checkpoint="m.safetensors", checkpoint_sha256="ab", data=data
    )
    for key in ("checkpoint", "checkpoint_sha256", "data", "engine", "eigenvalues",
                "residuals", "trace", "density", "seconds"):  # fmt: skip
        assert key in report
    assert set(report["trace"]) == {"estimate", "stderr", "method", "matvecs"}
    assert report["density"] is None and report["data"]["samples"] == result.examples
    assert json.loads(json.dumps(report)) == report
    summary = format_summary(report)
    assert f"{report['eigenvalues'][0]:.6g}" in summary and "hutchinson" in summary


def test_pyhessian_method_runs_the_package(problem):
    request = CurvatureRequest(top_k=1, engine="pyhessian", tol=1e-4, trace=True, trace_matvecs=4)
    result = measure_curvature(problem.operator(), request)
    exact = torch.linalg.eigvalsh(problem.dense)
    top = exact[exact.abs().argmax()]
    assert float(result.eigen.eigenvalues[0]) == pytest.approx(float(top), rel=5e-3)
    assert result.trace.method == "pyhessian" and result.hvp == "pyhessian"


def test_progress_sees_every_product(problem):
    seen = []
    request = CurvatureRequest(top_k=1, trace=True, trace_matvecs=3)
    result = measure_curvature(problem.operator(), request, progress=seen.append)
    assert sum(seen) == result.matvecs


@pytest.mark.parametrize(
    "request_kwargs, message",
    [
        ({"top_k": 10**6}, "exceeds the number of parameters"),
        ({"top_k": -1}, "must be >= 0"),
        ({"engine": "power", "which": "smallest"}, "need the lanczos engine"),
        ({"tol": 0}, "tol 0"),
        ({"trace_method": "magic"}, "trace_method"),
    ],
)
def test_bad_requests(problem, request_kwargs, message):
    with pytest.raises(LandscapeInputError, match=message):
        measure_curvature(problem.operator(), CurvatureRequest(**request_kwargs))
