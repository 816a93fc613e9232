"""Stochastic trace estimators: Hutchinson and Hutch++."""

from landscape.curvature.trace.hutchinson import hutchinson_trace
from landscape.curvature.trace.meyer2020hutch import hutchpp_trace
from landscape.curvature.trace.result import TraceResult, rademacher

__all__ = ["TraceResult", "hutchinson_trace", "hutchpp_trace", "rademacher"]
