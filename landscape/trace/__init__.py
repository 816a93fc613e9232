"""Stochastic trace estimators: Hutchinson and Hutch++."""

from landscape.trace.hutchinson import hutchinson_trace
from landscape.trace.meyer2020hutch import hutchpp_trace
from landscape.trace.result import TraceResult, rademacher

__all__ = ["TraceResult", "hutchinson_trace", "hutchpp_trace", "rademacher"]
