"""Entry point of the `flatscape` command and the error policy shared by every command."""

from __future__ import annotations

import os
import re
import sys

import click

from distill.errors import DistillInputError
from landscape.distributed.process import env_rank, launched_by_torchrun
from landscape.distributed.surface import DistributedRunError
from landscape.errors import LandscapeInputError

USER_ERRORS = (DistillInputError, LandscapeInputError)
DISTRIBUTED_COMMANDS = ("hessian", "surface")
"""Commands that split their work across the processes of a torchrun job."""


def echo_error(message: str) -> None:
    """``error: message`` on stderr.

    Under torchrun every process has the same error and only rank 0 prints it.
    """
    if env_rank() == 0:
        click.echo(f"error: {message}", err=True)


def flag_names(message: str, command: click.Command | None) -> str:
    """The library's message with its parameter names turned into the command's flags.

    Library errors start with the name of the input they refuse (``top_k 0: ...``,
    ``x_range '1:0:5': ...``) and say ``pass resume``; where the command has an option
    with that destination, its flag is shown instead (``--top-k``, ``--x``, ``--resume``).
    """
    if command is None:
        return message
    flags = {
        p.name: max(p.opts, key=len)
        for p in command.params
        if isinstance(p, click.Option) and p.name and p.opts
    }
    pattern = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
    if not pattern:
        return message
    message = re.sub(rf"^({pattern})\b(?!-)", lambda m: flags[m.group(1)], message)
    return re.sub(
        rf"\b(pass|and) ({pattern})\b(?!-)", lambda m: f"{m.group(1)} {flags[m.group(2)]}", message
    )


class FlatscapeGroup(click.Group):
    """A click group whose errors are one line on stderr: exit 2 for bad input.

    Usage errors (unknown option, out-of-range value) and the packages' input errors
    print ``error: <what and how to fix it>`` without the usage banner or a traceback.
    Under torchrun every process gets the same arguments and data, so only rank 0 prints.
    """

    def invoke(self, ctx: click.Context):
        """Run the command; user errors become one line and exit code 2."""
        try:
            return super().invoke(ctx)
        except USER_ERRORS as err:
            echo_error(flag_names(str(err), self.get_command(ctx, ctx.invoked_subcommand or "")))
            ctx.exit(2)
        except DistributedRunError as err:  # rank 0 reports it; the other ranks end quietly
            echo_error(str(err))
            ctx.exit(err.exit_code)
        except FileNotFoundError as err:
            echo_error(f"file not found: {err.filename or err}")
            ctx.exit(2)
        except (PermissionError, IsADirectoryError) as err:
            echo_error(f"{err.strerror}: {err.filename}")
            ctx.exit(2)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """Find the command; refuse single-process commands under a torchrun job."""
        name, command, rest = super().resolve_command(ctx, args)
        several = launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1
        if several and name not in DISTRIBUTED_COMMANDS:
            raise LandscapeInputError(
                f"flatscape {name} runs in one process (every torchrun process would repeat "
                f"it); start it without torchrun. Under torchrun: {', '.join(DISTRIBUTED_COMMANDS)}"
            )
        return name, command, rest

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run as a console script: click errors as one line, Ctrl-C as exit code 130."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as err:
            echo_error(err.format_message())
            sys.exit(err.exit_code)
        except click.Abort:
            echo_error("interrupted")
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
