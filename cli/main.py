"""Entry point of the `flatscape` command and the error policy shared by every command."""

from __future__ import annotations

import importlib
import os
import re
import sys

import click

from cli.outputs import os_error_text
from distill.errors import DistillInputError
from landscape.distributed.environment import DistributedRunError, env_rank, launched_by_torchrun
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
        rf"\b(pass|and|or) ({pattern})\b(?!-)",
        lambda m: f"{m.group(1)} {flags[m.group(2)]}",
        message,
    )


COMMANDS = {
    "align": ("cli.align", "align",
              "Permute STUDENT's hidden units to best match its teacher's; function unchanged."),
    "compare": ("cli.compare", "compare",
                "Compare checkpoints: accuracy, train loss, top eigenvalues, trace, basin width."),
    "distill": ("cli.train", "distill",
                "Self-distil: train generations 1..G, each from the previous one's soft outputs."),
    "evaluate": ("cli.evaluate", "evaluate",
                 "Mean cross-entropy and accuracy of CHECKPOINT on its dataset (no augmentation)."),
    "eigenmap": ("cli.eigenmap", "eigenmap",
                 "lambda_max and lambda_min of the train-loss Hessian at every point of a grid."),
    "export": ("cli.export", "export",
               "Write a surface file as ParaView .vtp, CSV rows or .npz arrays."),
    "hessian": ("cli.hessian", "hessian_command", "Top Hessian eigenvalues, trace and spectral "
                "density of a checkpoint's train loss."),
    "import": ("cli.import_checkpoint", "import_command",
               "Turn another trainer's checkpoint into a flatscape one, with full provenance."),
    "plot": ("cli.plot", "plot",
             "Draw surface FILES made by `flatscape surface` (or training logs) into one figure."),
    "reproduce": ("cli.reproduce", "reproduce",
                  "Train teachers and students over seeds, measure every model, write a report."),
    "sharpness": ("cli.sharpness", "sharpness",
                  "Average- and worst-case sharpness of CHECKPOINT, beside its train loss."),
    "surface": ("cli.surface", "surface",
                "Loss and accuracy of CHECKPOINT on a grid around its weights, into an HDF5 file."),
    "train": ("cli.train", "train",
              "Train a teacher on hard labels and save it as a .safetensors checkpoint."),
}  # fmt: skip
"""Each command: the module that defines it, its name there, and its one-line help (the
first line of its docstring; a test keeps the two equal). A module is imported only when
its command runs or shows its own ``--help``."""


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
        except OSError as err:  # a full or read-only disk, a quota, a permission, a folder
            echo_error(os_error_text(err))
            ctx.exit(2)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, by name."""
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """Import the command's module (torch and the rest load here, not at start-up)."""
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from the table, importing no command."""
        width = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, _shorten(COMMANDS[name][2], width)) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
@click.option(
    "--no-cache",
    is_flag=True,
    help="Generate datasets anew instead of reading the verified cache in $FLATSCAPE_CACHE "
    "(default ~/.cache/flatscape).",
)
def cli(no_cache: bool) -> None:
    """flatscape: train self-distilled students and measure how flat their minima are.

    \b
    Example:
      flatscape train --out runs/teacher.safetensors
      flatscape distill --teacher runs/teacher.safetensors --out-dir runs/sd
      flatscape hessian runs/teacher.safetensors --top-k 3 --trace
    """
    if no_cache:
        os.environ["FLATSCAPE_CACHE"] = "off"  # read by distill.cache, for this run


def _shorten(text: str, limit: int) -> str:
    """``text`` cut at a word to fit ``limit`` characters, as click shortens help."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 3, 1)].rsplit(" ", 1)[0] + "..."


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="flatscape")


if __name__ == "__main__":
    sys.exit(main())
