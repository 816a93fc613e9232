"""Entry point of the `flatscape` command and the error policy shared by every command."""

from __future__ import annotations

import sys

import click

from distill.errors import DistillInputError
from landscape.errors import LandscapeInputError

USER_ERRORS = (DistillInputError, LandscapeInputError)


class FlatscapeGroup(click.Group):
    """A click group that turns user errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except FileNotFoundError as err:
            click.echo(f"error: file not found: {err.filename or err}", err=True)
            ctx.exit(2)


@click.group(cls=FlatscapeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flatscape")
def cli() -> None:
    """flatscape: train self-distilled students and measure how flat their minima are.

    \b
    Example:
      flatscape train --out runs/teacher.safetensors
      flatscape distill --teacher runs/teacher.safetensors --out-dir runs/sd
      flatscape hessian runs/teacher.safetensors --top-k 3 --trace
    """


def _register_commands() -> None:
    """Attach every command module's commands to the group (one module per group)."""
    import importlib
    import pkgutil

    import cli as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name == "main":
            continue
        module = importlib.import_module(f"cli.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="flatscape")


if __name__ == "__main__":
    sys.exit(main())
