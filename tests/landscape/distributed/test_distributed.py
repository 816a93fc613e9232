"""Two gloo processes on 127.0.0.1 against one process: curvature, surfaces, failures.

One ``torch.multiprocessing`` spawn (two ranks) runs every scenario of :func:`_scenarios`
and saves what each rank saw; the tests compare that with the single-process results
computed here, and the two ranks with each other.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from distill.losses import IGNORE_INDEX, causal_lm_loss
from landscape.curvature.measure import CurvatureRequest, measure_curvature
from landscape.distributed import process as distributed
from landscape.distributed.operator import DataParallelOperator, data_parallel_operator
from landscape.distributed.surface import (
    FAILURE_VARIABLE,
    DistributedRunError,
    compute_surface_distributed,
    store_on_main,
)
from landscape.errors import LandscapeInputError
from landscape.operators.ggn import GGNOperator
from landscape.operators.hessian import HessianOperator
from landscape.surface.evaluate import SurfaceEvaluator, compute_surface, grid_points
from landscape.surface.store import SurfaceSpec, SurfaceStore

WORLD = 2
SIZES = (13, 11, 9, 7)  # rank 0 holds the first two batches (24 examples), rank 1 the rest
REQUEST = CurvatureRequest(
    top_k=3, tol=1e-10, trace=True, trace_matvecs=20, density=True, density_steps=6, seed=3
)
POWER = CurvatureRequest(top_k=2, engine="power", tol=1e-8, seed=1)
GGN_REQUEST = CurvatureRequest(
    top_k=2, tol=1e-10, trace=True, trace_method="hutchinson", trace_matvecs=8
)
GRID = (np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 4))
FAIL_AFTER = 3  # rank 1 fails after this many points, one point per rank and round


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _problem(dtype=torch.float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)
    batches = [(torch.randn(n, 5, dtype=dtype), torch.randint(0, 3, (n,))) for n in SIZES]
    return model, nn.functional.cross_entropy, batches


def _token_problem():
    """A per-position model on sequences padded unequally: ranks hold 9 and 21 counted tokens."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(7, 4), nn.Tanh(), nn.Linear(4, 7)).double()
    batches = []
    for padded in (3, 2, 1, 0):  # 3 sequences of 5 tokens: 3, 6, 9, 12 next tokens counted
        tokens = torch.randint(0, 7, (3, 5))
        labels = tokens.clone()
        labels[:, 5 - padded :] = IGNORE_INDEX
        batches.append((tokens, labels))
    return model, causal_lm_loss, batches


def _directions(model):
    generator = torch.Generator().manual_seed(5)
    return [
        {
            n: torch.randn(p.shape, generator=generator, dtype=p.dtype)
            for n, p in model.named_parameters()
        }
        for _ in range(2)
    ]


def _curvature(result):
    return {
        "eigenvalues": result.eigen.eigenvalues,
        "trace": result.trace.estimate if result.trace else None,
        "density": (result.density.nodes, result.density.weights) if result.density else None,
        "loss": result.loss,
        "examples": result.examples,
        "matvecs": result.matvecs,
    }


def _surface(pending, **options):
    """Values of every pending point, written by rank 0 through compute_surface_distributed."""
    model, loss_fn, batches = _problem()
    evaluator = SurfaceEvaluator(model, loss_fn, _directions(model), vectorize="never")
    written = {}

    def write(indices, values):
        for k, i in enumerate(indices):
            written[int(i)] = (values["train"].loss[k], values["train"].acc[k])

    try:
        compute_surface_distributed(
            evaluator, {"train": batches}, grid_points(*GRID), pending, write, **options
        )
    except DistributedRunError as err:
        return {"written": written, "error": str(err), "orderly": err.orderly}
    return {"written": written, "error": None}


def _spec():
    model, _, _ = _problem()
    return SurfaceSpec(*GRID, _directions(model), "train", {"seed": 5})


def _store_scenario(folder: Path) -> dict:
    """What the CLI does: rank 0 opens the file, every rank computes, rank 0 writes."""
    model, loss_fn, batches = _problem()
    opened = []

    def opener():
        opened.append(distributed.rank())
        return SurfaceStore.open_for_writing(folder / "two.h5", _spec())

    with store_on_main(opener) as store:
        evaluator = SurfaceEvaluator(model, loss_fn, store.directions(), vectorize="never")
        coords = grid_points(store.x, store.y)
        compute_surface_distributed(
            evaluator, {"train": batches}, coords, store.pending(), store.write
        )

    def refused():
        raise LandscapeInputError("refused")

    try:
        with store_on_main(refused):
            pass
    except (LandscapeInputError, DistributedRunError) as err:
        failure = (type(err).__name__, getattr(err, "exit_code", None))
    return {"opened": opened, "failure": failure}


def _scenarios(folder: Path):
    model, loss_fn, batches = _problem()
    local = distributed.shard_batches(batches)
    out = {"local_examples": sum(len(y) for _, y in local)}
    out["hessian"] = _curvature(
        measure_curvature(data_parallel_operator("hessian", model, loss_fn, local), REQUEST)
    )
    out["power"] = _curvature(
        measure_curvature(data_parallel_operator("hessian", model, loss_fn, local), POWER)
    )
    out["ggn"] = _curvature(
        measure_curvature(data_parallel_operator("ggn", model, loss_fn, local), GGN_REQUEST)
    )
    fisher = data_parallel_operator("fisher", model, loss_fn, local, mc_samples=3, seed=4)
    out["fisher_dense"] = fisher.to_dense()
    operator = data_parallel_operator("hessian", model, loss_fn, local)
    out["dense"] = operator.to_dense()
    token_model, token_loss, token_batches = _token_problem()
    tokens = data_parallel_operator(
        "hessian", token_model, token_loss, distributed.shard_batches(token_batches)
    )
    out["tokens"] = (tokens.to_dense(), tokens.loss, tokens.num_counted, tokens.share)
    out["gradient"] = operator.gradient()
    poisoned = [(x.clone(), y) for x, y in local]
    if distributed.rank() == 1:
        poisoned[0][0][0, 0] = float("nan")
    try:
        data_parallel_operator("hessian", model, loss_fn, poisoned)
        out["nan"] = None
    except LandscapeInputError as err:
        out["nan"] = str(err)
    try:
        distributed.shard_batches(batches[:1])
        out["too_few"] = None
    except LandscapeInputError as err:
        out["too_few"] = str(err)
    pending = np.delete(np.arange(20), [0, 7, 8])  # a resumed run: three points are done
    out["surface"] = _surface(pending)
    out["surface_rounds"] = _surface(pending, max_block=1)  # a round of one point per rank
    os.environ[FAILURE_VARIABLE] = f"1:{FAIL_AFTER}:raise"
    try:
        out["failed"] = _surface(pending, max_block=1)
    finally:
        del os.environ[FAILURE_VARIABLE]
    out["store"] = _store_scenario(folder)
    return out


def _worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
        timeout=timedelta(seconds=60),
    )  # fmt: skip
    try:
        torch.save(_scenarios(Path(folder)), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def ranks(folder):
    """What each of two gloo ranks computed (spawned once for the module, 120 s at most)."""
    context = mp.start_processes(
        _worker, args=(free_port(), str(folder)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two gloo processes did not finish within 120 s")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single():
    torch.set_num_threads(1)
    model, loss_fn, batches = _problem()
    return {
        "hessian": _curvature(measure_curvature(HessianOperator(model, loss_fn, batches), REQUEST)),
        "power": _curvature(measure_curvature(HessianOperator(model, loss_fn, batches), POWER)),
        "ggn": _curvature(measure_curvature(GGNOperator(model, loss_fn, batches), GGN_REQUEST)),
        "operator": HessianOperator(model, loss_fn, batches),
    }


def test_each_rank_holds_a_contiguous_share_of_the_batches(ranks):
    assert [r["local_examples"] for r in ranks] == [SIZES[0] + SIZES[1], SIZES[2] + SIZES[3]]


def test_distributed_hvps_are_the_single_process_hessian(ranks, single):
    dense = single["operator"].to_dense()
    for r in ranks:
        torch.testing.assert_close(r["dense"], dense, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(
            r["gradient"], single["operator"].gradient(), rtol=1e-12, atol=1e-14
        )


def test_the_shares_of_a_token_loss_are_its_counted_tokens(ranks):
    model, loss_fn, batches = _token_problem()
    single = HessianOperator(model, loss_fn, batches)
    for r in ranks:
        dense, loss, counted, _ = r["tokens"]
        torch.testing.assert_close(dense, single.to_dense(), rtol=1e-12, atol=1e-14)
        assert loss == pytest.approx(single.loss, rel=1e-12) and counted == single.num_counted
    assert [r["tokens"][3] for r in ranks] == [9 / 30, 21 / 30]


def test_the_monte_carlo_fisher_draws_what_one_process_draws(ranks):
    """Each rank's labels continue the draws of the ranks before it: the same matrix."""
    from landscape.operators.fisher import FisherOperator

    model, loss_fn, batches = _problem()
    one = FisherOperator(model, loss_fn, batches, mc_samples=3, seed=4).to_dense()
    other_seed = FisherOperator(model, loss_fn, batches, mc_samples=3, seed=5).to_dense()
    assert not torch.allclose(one, other_seed, rtol=1e-3)  # the draws matter
    for r in ranks:
        torch.testing.assert_close(r["fisher_dense"], one, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["hessian", "power", "ggn"])
def test_eigenvalues_trace_and_density_match_one_process(ranks, single, name):
    one = single[name]
    for r in ranks:
        got = r[name]
        torch.testing.assert_close(got["eigenvalues"], one["eigenvalues"], rtol=1e-5, atol=0)
        assert got["examples"] == sum(SIZES) and got["matvecs"] == one["matvecs"]
        assert got["loss"] == pytest.approx(one["loss"], rel=1e-12)
        if one["trace"] is not None:
            assert got["trace"] == pytest.approx(one["trace"], rel=1e-5)
        if one["density"] is not None:
            for a, b in zip(got["density"], one["density"], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    # every rank took the same steps and holds the same numbers, bit for bit
    assert torch.equal(ranks[0][name]["eigenvalues"], ranks[1][name]["eigenvalues"])
    assert ranks[0][name]["trace"] == ranks[1][name]["trace"]


def test_a_nan_in_one_shard_stops_every_rank_with_the_global_count(ranks):
    for r in ranks:
        assert r["nan"] is not None and "nan" in r["nan"]
        assert f"on the {sum(SIZES)} examples" in r["nan"]


def test_fewer_batches_than_processes_is_refused(ranks):
    assert "1 data batch(es) for 2 processes" in ranks[0]["too_few"]


def _reference(pending):
    model, loss_fn, batches = _problem()
    evaluator = SurfaceEvaluator(model, loss_fn, _directions(model), vectorize="never")
    values = {}

    def write(indices, v):
        values.update(
            {int(i): (v["train"].loss[k], v["train"].acc[k]) for k, i in enumerate(indices)}
        )

    compute_surface(evaluator, {"train": batches}, grid_points(*GRID), pending, write)
    return values


@pytest.mark.parametrize("case", ["surface", "surface_rounds"])
def test_distributed_surface_points_equal_one_process(ranks, case):
    pending = np.delete(np.arange(20), [0, 7, 8])
    reference = _reference(pending)
    written = ranks[0][case]["written"]
    assert sorted(written) == sorted(reference)
    for i, (loss, acc) in reference.items():
        assert written[i][0] == pytest.approx(loss, rel=1e-12) and written[i][1] == acc
    assert ranks[1][case] == {"written": {}, "error": None}  # only rank 0 writes


def test_a_failing_rank_stops_the_run_after_saving_every_finished_point(ranks):
    pending = np.delete(np.arange(20), [0, 7, 8])
    main, other = ranks[0]["failed"], ranks[1]["failed"]
    # rounds of one point per rank: rank 1 fails in round FAIL_AFTER + 1, whose rank-0 point
    # is still written
    assert sorted(main["written"]) == sorted(pending[: 2 * FAIL_AFTER + 1].tolist())
    assert (
        main["error"] == f"process 1 failed: RuntimeError: failure injected by {FAILURE_VARIABLE}"
    )
    assert main["orderly"] and other["orderly"] and other["written"] == {}
    reference = _reference(pending)
    for i, (loss, _) in main["written"].items():
        assert loss == pytest.approx(reference[i][0], rel=1e-12)


def test_one_process_wrapper_is_the_local_operator():
    model, loss_fn, batches = _problem()
    local = HessianOperator(model, loss_fn, batches)
    wrapped = DataParallelOperator(local)
    assert torch.equal(wrapped.to_dense(), local.to_dense())
    assert wrapped.hvp == "double_backward" and wrapped.num_examples == sum(SIZES)


def test_rank_0_alone_opens_the_file_which_equals_the_one_process_file(ranks, folder, tmp_path):
    assert ranks[0]["store"]["opened"] == [0] and ranks[1]["store"]["opened"] == []
    model, loss_fn, batches = _problem()
    with SurfaceStore.open_for_writing(tmp_path / "one.h5", _spec()) as store:
        evaluator = SurfaceEvaluator(model, loss_fn, store.directions(), vectorize="never")
        coords = grid_points(store.x, store.y)
        compute_surface(evaluator, {"train": batches}, coords, store.pending(), store.write)
    one, two = SurfaceStore.read(tmp_path / "one.h5"), SurfaceStore.read(folder / "two.h5")
    assert two.done.all() and not (folder / "two.h5.lock").exists()
    for key in one.arrays:
        np.testing.assert_allclose(two.arrays[key], one.arrays[key], rtol=1e-12, err_msg=key)
    one.close()
    two.close()


def test_when_rank_0_cannot_open_the_file_the_others_stop_quietly_with_code_2(ranks):
    assert ranks[0]["store"]["failure"] == ("LandscapeInputError", None)
    assert ranks[1]["store"]["failure"] == ("DistributedRunError", 2)


@pytest.mark.parametrize(
    "name", ["landscape.distributed.process", "landscape.distributed.operator"]
)
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
