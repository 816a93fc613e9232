"""The docstring examples of the GGN, sharpness and temperature modules are tests too."""

import doctest
import importlib

import pytest

MODULES = ["landscape.ggn", "landscape.sharpness.geometry", "landscape.temperature"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
