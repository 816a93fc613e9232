"""The docstring examples of the landscape modules are tests too."""

import doctest
import importlib

import pytest

MODULES = [
    "landscape._types",
    "landscape.operators.base",
    "landscape.operators.batching",
    "landscape.operators.hessian",
    "landscape.operators.ggn",
    "landscape.curvature.measure",
    "landscape.curvature.eigen.lanczos",
    "landscape.curvature.eigen.power",
    "landscape.curvature.trace.hutchinson",
    "landscape.curvature.trace.meyer2020hutch",
    "landscape.curvature.density.slq",
    "landscape.curvature.temperature",
    "landscape.sharpness.geometry",
    "landscape.surface.grid",
    "landscape.surface.loss_surface",
    "landscape.surface.slots",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
