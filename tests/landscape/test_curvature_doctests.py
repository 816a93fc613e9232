"""The docstring examples of the curvature modules are tests too."""

import doctest
import importlib

import pytest

MODULES = [
    "landscape.operator",
    "landscape.hessian",
    "landscape.eigen.lanczos",
    "landscape.eigen.power",
    "landscape.trace.hutchinson",
    "landscape.trace.meyer2020hutch",
    "landscape.density.slq",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
