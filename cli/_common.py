"""Options and helpers every command shares: sources, progress bars, devices, memory."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from distill.errors import DistillInputError

if TYPE_CHECKING:  # torch and tqdm load inside the commands that need them
    import torch
    from tqdm import tqdm


def quiet_option(func):
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(func)


def force_option(func):
    return click.option("--force", is_flag=True, help="Overwrite existing output files.")(func)


def device_option(func):
    return click.option(
        "--device",
        type=click.Choice(["cpu", "cuda", "auto"]),
        default="cpu",
        show_default=True,
        help="Where to compute; auto picks cuda when torch sees a GPU.",
    )(func)


def threads_option(func):
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="torch CPU threads (default: torch's choice). One thread is steadiest "
        "on a loaded machine and changes summation order, hence the last digits.",
    )(func)


def train_samples_option(func):
    """``--samples N``: the first N train examples, the data every measurement is taken on."""
    return click.option(
        "--samples",
        type=click.IntRange(min=1),
        default=1024,
        show_default=True,
        help="First N train examples (dataset order, no augmentation).",
    )(func)


def seed_option(what: str):
    """``--seed`` (default 0), with what it seeds in the help."""
    return click.option("--seed", type=int, default=0, show_default=True, help=f"Seed of {what}.")


def json_option(what: str, stdout: bool = False):
    """``--json FILE``, with what is written there in the help (``-``: stdout if allowed)."""
    where = " here ('-': stdout)" if stdout else " here"
    return click.option(
        "--json", "json_path", type=click.Path(dir_okay=False), help=f"Write {what}{where}."
    )


def max_memory_option(what: str, effect: str):
    return click.option(
        "--max-memory",
        default="auto",
        show_default=True,
        help=f"Memory {what} may hold, e.g. 3GB or 500MB, for the whole process; auto = "
        "half the memory available at the start (RAM, or the GPU's), none = no limit. " + effect,
    )


def memory_budget(text: str) -> int | str | None:
    """``--max-memory``: ``"auto"``, None for ``none``, or bytes."""
    from landscape.operators.memory import parse_size

    lowered = text.strip().lower()
    if lowered in ("auto", "none"):
        return None if lowered == "none" else "auto"
    return parse_size(text)


def model_options(func):
    """``--model SPEC`` and ``--model-kwargs JSON``: a registry model or the user's code."""
    func = click.option(
        "--model-kwargs",
        metavar="JSON",
        help="Keyword arguments of --model as a JSON object, e.g. '{\"width\": 64}'.",
    )(func)
    return click.option(
        "--model",
        "model_spec",
        metavar="SPEC",
        help="A registry model (resnet20, cnn1d, ...), your code: package.module:callable "
        "or path/to/file.py:callable returning an nn.Module, or hf:DIR, a Hugging Face "
        "save_pretrained folder (offline; pip install 'flatscape[hf]'). Needed for other "
        "trainers' checkpoints, and to name again the code or folder a checkpoint was made "
        "from (it is never imported otherwise).",
    )(func)


def user_data_options(func):
    """``--data SPEC``, ``--data-kwargs JSON``, ``--data-file FILE.npz``: the user's data."""
    func = click.option(
        "--data-file",
        type=click.Path(dir_okay=False),
        help="Your data as .npz: x_train, y_train, x_test, y_test (optional classes).",
    )(func)
    func = click.option(
        "--data-kwargs", metavar="JSON", help="Keyword arguments of --data as a JSON object."
    )(func)
    return click.option(
        "--data",
        "data_spec",
        metavar="SPEC",
        help="Your data code: package.module:callable or file.py:callable returning "
        "(train, test) datasets or {'train': ..., 'test': ...}.",
    )(func)


def data_options(func):
    """``--dataset`` (a built-in one) and :func:`user_data_options`."""
    func = user_data_options(func)
    return click.option("--dataset", help="A built-in dataset (for checkpoints that record none).")(
        func
    )


def layout_options(func):
    """``--state-key`` and ``--strip-prefix`` for other trainers' checkpoints."""
    func = click.option(
        "--strip-prefix",
        help="Keep only the weights under this prefix and remove it (e.g. model, student).",
    )(func)
    return click.option(
        "--state-key", help="The key of another trainer's checkpoint that holds the weights."
    )(func)


def loss_option(func, own: bool = False):
    """``--loss``: every number is of this loss; ``own``: ``model`` too (distill.model_loss)."""
    model = ", model (the loss the model computes from labels=, e.g. HF's .loss)" if own else ""
    return click.option(
        "--loss",
        "loss_spec",
        metavar="NAME|SPEC",
        help="cross_entropy, mse (class labels as one-hot), causal_lm or token_ce (token "
        f"labels (N, L), -100 not counted; the mean over tokens){model} or file.py:callable "
        "(outputs, targets) -> the batch's mean loss.  [default: the token loss the "
        "checkpoint was trained with, else cross_entropy]",
    )(func)


def own_loss_option(func):
    """``--loss`` where ``model`` (the model's own loss) is measured too."""
    return loss_option(func, own=True)


def output_key_option(func):
    """``--output-key NAME``: which entry of a dict/ModelOutput/dataclass output is the logits."""
    return click.option(
        "--output-key",
        metavar="NAME",
        help="The entry of the model's output (a dict, ModelOutput or dataclass) that holds "
        "its logits. Default: 'logits' if the output has one, else its first entry. A "
        "checkpoint trained with it records it.",
    )(func)


def source_options(func):
    """Every option that names a checkpoint's model, its output, data and file layout."""
    return model_options(output_key_option(data_options(layout_options(func))))


def sources_from(options: dict[str, Any]):
    """The :class:`distill.sources.Sources` of the options :func:`source_options` adds.

    Pops them from ``options`` (a command's keyword arguments).
    """
    from distill.sources import Sources
    from distill.user_code import parse_json_kwargs

    model_kwargs = options.pop("model_kwargs", None)
    data_kwargs = options.pop("data_kwargs", None)
    return Sources(
        model=options.pop("model_spec", None),
        model_kwargs=None if model_kwargs is None else parse_json_kwargs(model_kwargs,
                                                                         "--model-kwargs"),
        dataset=options.pop("dataset", None),
        data=options.pop("data_spec", None),
        data_kwargs=None if data_kwargs is None else parse_json_kwargs(data_kwargs,
                                                                       "--data-kwargs"),
        data_file=options.pop("data_file", None),
        state_key=options.pop("state_key", None),
        strip_prefix=options.pop("strip_prefix", None),
        output_key=options.pop("output_key", None),
    )  # fmt: skip


BLOCK_HELP = "the rest are held fixed, so the Hessian is the block of the selected rows and columns"


def parameter_options(func=None, *, held: str = BLOCK_HELP):
    """``--params GLOB`` and ``--exclude GLOB`` (repeatable): a block of the parameters.

    ``held`` says in the help what happens to the other parameters.
    """
    if func is None:
        return lambda f: parameter_options(f, held=held)
    func = click.option(
        "--exclude",
        multiple=True,
        metavar="GLOB",
        help="Leave out the parameters whose names match GLOB (repeatable).",
    )(func)
    return click.option(
        "--params",
        multiple=True,
        metavar="GLOB",
        help="Only the parameters whose names match GLOB (fnmatch, repeatable: e.g. "
        f"'features.0.*', '*.weight'); {held}. Default: every trainable parameter.",
    )(func)


def parameter_filter(include: tuple[str, ...], exclude: tuple[str, ...]):
    """The :class:`landscape.ParameterFilter` of ``--params``/``--exclude``, or None."""
    if not include and not exclude:
        return None
    from landscape.operators.mean_loss import ParameterFilter

    return ParameterFilter(tuple(include) or ("*",), tuple(exclude))


def resolve_device(name: str) -> torch.device:
    """Turn ``--device`` into a torch device, refusing cuda where torch has none."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DistillInputError("--device cuda: this torch build sees no CUDA device; use cpu")
    return torch.device(name)


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU threads when ``--threads`` was given."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@contextmanager
def progress_bar(total: int | None, desc: str, quiet: bool, unit: str = "it") -> Iterator[tqdm]:
    """A tqdm bar on stderr, silent when ``--quiet`` or when stderr is not a terminal."""
    from tqdm import tqdm

    disable = quiet or not sys.stderr.isatty()
    with tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False) as bar:
        yield bar
