"""Entry point of the `flatscape` command and the error policy shared by every command."""

from __future__ import annotations

import sys

import click

from distill.errors import DistillInputError
from landscape.distributed import env_rank
from landscape.distributed_surface import DistributedRunError
from landscape.errors import LandscapeInputError

USER_ERRORS = (DistillInputError, LandscapeInputError)


class FlatscapeGroup(click.Group):
    """A click group whose errors are one line on stderr: exit 2 for bad input.

    Usage errors (unknown option, out-of-range value) and the packages' input errors
    print ``error: <what and how to fix it>`` without the usage banner or a traceback.
    Under torchrun every process gets the same arguments and data, so only rank 0 prints.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as err:
            if env_rank() == 0:
                click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except DistributedRunError as err:  # rank 0 reports it; the other ranks end quietly
            if env_rank() == 0:
                click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except FileNotFoundError as err:
            click.echo(f"error: file not found: {err.filename or err}", err=True)
            ctx.exit(2)
        except (PermissionError, IsADirectoryError) as err:
            click.echo(f"error: {err.strerror}: {err.filename}", err=True)
            ctx.exit(2)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as err:
            click.echo(f"error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


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
