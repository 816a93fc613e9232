"""Start-up: `flatscape --help` and `flatscape CMD --help` load neither torch nor matplotlib."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from cli import choices
from cli.main import COMMANDS, cli

HEAVY = ("torch", "matplotlib", "numpy", "h5py", "scipy")


def imported_modules(*args: str) -> set[str]:
    """Top-level names of every module a ``flatscape`` invocation imports (-X importtime)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cli.main", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Usage:" in run.stdout
    lines = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert len(lines) > 20  # importtime did report
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines}


@pytest.mark.parametrize("command", ["", *sorted(COMMANDS)])
def test_help_imports_no_heavy_package(command):
    modules = imported_modules(*([command] if command else []), "--help")
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert "click" in modules


def test_the_command_table_lists_each_commands_own_short_help():
    ctx = click.Context(cli)
    for name, (_, _, short) in COMMANDS.items():
        assert cli.get_command(ctx, name).get_short_help_str(limit=1000) == short
    assert cli.get_command(ctx, "nope") is None


def test_option_choices_equal_the_libraries_constants():
    from cli.study import PRESETS
    from distill.data import DATASETS
    from distill.losses import ALPHA_MEANING
    from distill.models import ARCHITECTURES
    from distill.trainer import TRAINING_LOSSES
    from landscape.sharpness import GEOMETRIES
    from landscape.surface.evaluate import VECTORIZE
    from landscape.surface.plot import KINDS
    from landscape.surface.store import SPLITS

    assert choices.KINDS == KINDS and choices.GEOMETRIES == GEOMETRIES
    assert tuple(sorted([*PRESETS, "sweep"])) == choices.PRESETS and choices.VECTORIZE == VECTORIZE
    assert tuple(SPLITS) == choices.SPLITS and choices.DATASETS == DATASETS
    assert tuple(sorted(ARCHITECTURES)) == choices.ARCHITECTURES
    assert choices.ALPHA_MEANING == ALPHA_MEANING
    assert choices.TRAINING_LOSSES == TRAINING_LOSSES
