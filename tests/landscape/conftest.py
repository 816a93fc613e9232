"""Fixtures that expand ``cases.CASES`` into float64 problems with dense references."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from landscape.operators.hessian import HessianOperator
from tests.landscape.cases import CASES, LOW_RANK_CASES, dense_hessian, make_float64


@dataclass
class Problem:
    model: nn.Module
    loss_fn: object
    batches: list
    dense: Tensor

    def operator(self, **options) -> HessianOperator:
        return HessianOperator(self.model, self.loss_fn, self.batches, **options)


def _problem(case) -> Problem:
    model, loss_fn, batches = make_float64(case)
    return Problem(model, loss_fn, batches, dense_hessian(model, loss_fn, batches))


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def problem(request) -> Problem:
    return _problem(request.param)


@pytest.fixture(params=LOW_RANK_CASES, ids=[c.id for c in LOW_RANK_CASES])
def low_rank_problem(request) -> Problem:
    return _problem(request.param)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
