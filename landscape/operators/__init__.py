"""Curvature matrices of a model's mean loss, as linear operators: Hessian, GGN, batching."""

from landscape.operators.base import CurvatureOperator, DenseOperator, DifferenceOperator
from landscape.operators.batching import curvature_batches, gather_examples, split_batches
from landscape.operators.ggn import GGNOperator, residual_operator
from landscape.operators.hessian import HessianOperator
from landscape.operators.kinds import OPERATORS, make_operator
from landscape.operators.mean_loss import MeanLossOperator, ParameterFilter, select_parameters

__all__ = [
    "OPERATORS",
    "CurvatureOperator",
    "DenseOperator",
    "DifferenceOperator",
    "GGNOperator",
    "HessianOperator",
    "MeanLossOperator",
    "ParameterFilter",
    "curvature_batches",
    "gather_examples",
    "make_operator",
    "residual_operator",
    "select_parameters",
    "split_batches",
]
