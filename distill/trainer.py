"""Training a teacher and self-distilled students, deterministically on CPU.

Read top to bottom: a `Recipe` (optimiser and schedule), `evaluate`, the epoch loop
`fit`, then `train_teacher` and `train_student`, which build the model, call `fit` and
return it with the metadata its checkpoint records.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import TensorDataset

from distill.bundle import DatasetBundle
from distill.checkpoint import (
    file_sha256,
    is_flatscape_checkpoint,
    load_checkpoint,
    package_versions,
)
from distill.data import dataset_from_description
from distill.errors import DistillInputError
from distill.losses import (
    KDConfig,
    causal_lm_loss,
    cross_entropy,
    kd_loss,
    sequence_kd_loss,
    token_ce_loss,
)
from distill.model_call import example_count, logits_of, select_output, take, to_device
from distill.model_spec import build_from_spec, require_named
from distill.models import input_kwargs, resolve_model_kwargs
from distill.user_code import is_code_spec
from distill.user_data import check_model_fits, require_class_labels

TOKEN_LOSSES = {"causal_lm": causal_lm_loss, "token_ce": token_ce_loss}
"""The token losses ``train --loss`` takes besides cross-entropy (labels ``(N, L)``)."""
TRAINING_LOSSES = ("cross_entropy", *TOKEN_LOSSES)

EpochLog = Callable[[dict[str, Any]], None]
EpochHook = Callable[[int, torch.nn.Module, dict[str, Any]], None]
"""Called with the epoch (0 before training), the model and that epoch's log record."""


class StepTracker(Protocol):
    """What :func:`fit` calls around its optimizer steps (e.g. tracking sharpness).

    ``begin`` sees the run's data, training loss name and device before the first step;
    ``after_step`` sees the model after every optimizer step with ``{"step", "epoch",
    "lr", "momentum", "loss", "epoch_end", "last"}`` (``loss``: that mini-batch's training
    loss; ``last``: the final step of the run). A record it returns is written to the log.
    It must give the model back as it found it (weights, modes, gradients).
    """

    def begin(self, bundle: DatasetBundle, loss: str, device: torch.device) -> None:
        """Prepare for a run on ``bundle``'s data."""

    def after_step(self, model: torch.nn.Module, info: dict[str, Any]) -> dict[str, Any] | None:
        """Look at the model after a step; return a log record or None."""


@dataclass(frozen=True)
class Recipe:
    """SGD with momentum and weight decay, and a learning-rate schedule.

    Attributes:
        schedule: ``cosine`` (to zero over `epochs`), ``multistep`` (times `gamma` at
            each of `milestones`) or ``constant``.
        warmup_epochs: linear warm-up from lr/10, which keeps KD at high T stable.
    """

    epochs: int = 60
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "cosine"
    milestones: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs {self.epochs}: must be >= 1"),
            (self.lr > 0, f"--lr {self.lr}: must be > 0"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: must be >= 1"),
            (0 <= self.momentum < 1, f"--momentum {self.momentum}: must lie in [0, 1)"),
            (self.weight_decay >= 0, f"--weight-decay {self.weight_decay}: must be >= 0"),
            (
                self.schedule in ("cosine", "multistep", "constant"),
                f"--schedule {self.schedule}: choose cosine, multistep or constant",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise DistillInputError(message)

    def lr_at(self, epoch: int) -> float:
        """Learning rate for a (0-based) epoch."""
        if epoch < self.warmup_epochs:
            return self.lr * (0.1 + 0.9 * epoch / self.warmup_epochs)
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * epoch / self.epochs))
        if self.schedule == "multistep":
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        return self.lr


# Defaults per dataset: the architecture and recipe a user gets without flags.
# mnist1d: the calibration recipe (95.8 +- 0.8 % at 60 epochs). Students train at a
# quarter of the teacher's lr with a short warm-up: at T=4 the initial T^2 * KL against a
# confident teacher is ~24, and lr 0.1 collapsed to chance in the calibration runs.
DEFAULT_ARCH = {
    "mnist1d": "cnn1d",
    "digits": "lenet",
    "synthetic": "mlp",
    "tokens": "gpt",
    "cifar10": "resnet20",
    "cifar100": "resnet20",
}
DEFAULT_LOSS = {"tokens": "causal_lm"}
"""The training loss of a dataset whose labels are not one class per example."""
_CIFAR = Recipe(240, 0.05, batch_size=64, schedule="multistep", milestones=(150, 180, 210))
TEACHER_RECIPES = {
    "mnist1d": Recipe(epochs=60, lr=0.1),
    "digits": Recipe(epochs=40, lr=0.05, batch_size=64),
    "synthetic": Recipe(epochs=20, lr=0.05, batch_size=64),
    "tokens": Recipe(epochs=10, lr=0.1, batch_size=64, warmup_epochs=1),
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
}
USER_DATA_RECIPE = Recipe(epochs=20, lr=0.05, batch_size=64)
"""The default recipe on the user's own data (``--data``/``--data-file``)."""


def student_recipe(teacher: Recipe) -> Recipe:
    """The default student recipe: the teacher's, at lr/4 with a 2-epoch warm-up."""
    return replace(teacher, lr=teacher.lr / 4, warmup_epochs=min(2, teacher.epochs - 1))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: TensorDataset,
    batch_size: int = 1000,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy of a model on a dataset, in eval mode.

    The loss is cross-entropy, or ``loss_fn`` (a batch's mean loss); a loss carrying
    ``count(targets)`` (a token loss) is averaged over the tokens it counts, each batch
    weighted by its count, and ``n`` is that count; its accuracy is over the same tokens
    (the loss's ``correct(logits, labels)``, NaN without it).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs, targets = dataset.tensors
    count, hits = getattr(loss_fn, "count", None), getattr(loss_fn, "correct", None)
    loss_sum, correct, n = 0.0, 0, 0
    for start in range(0, len(targets), batch_size):
        x = to_device(take(inputs, slice(start, start + batch_size)), device)
        y = targets[start : start + batch_size].to(device)
        logits = logits_of(model, x)
        weight = len(y) if count is None else count(y)
        if loss_fn is None:
            loss_sum += float(cross_entropy(logits, y).double().sum())
        else:
            loss_sum += float(loss_fn(logits, y)) * weight
        n += weight
        if count is None:
            correct += int((logits.argmax(dim=-1) == y).sum())
        elif hits is not None:
            correct += hits(logits, y)
    model.train(was_training)
    accuracy = correct / n if count is None or hits is not None else float("nan")
    return {"loss": loss_sum / n, "accuracy": accuracy, "n": n}


@torch.no_grad()
def predict_logits(model: torch.nn.Module, inputs: Any, batch_size: int = 1000) -> torch.Tensor:
    """Logits of a model in eval mode for a tensor of inputs, batch by batch."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [
        logits_of(model, to_device(take(inputs, slice(i, i + batch_size)), device))
        for i in range(0, example_count(inputs), batch_size)
    ]
    return torch.cat(chunks)


def _training_loss(
    logits: torch.Tensor,
    soft: torch.Tensor | None,
    y: torch.Tensor,
    kd: KDConfig | None,
    loss: str,
) -> torch.Tensor:
    """A batch's mean training loss: on labels, or distilled from ``soft`` logits."""
    if loss == "cross_entropy":
        per_example = cross_entropy(logits, y) if soft is None else kd_loss(logits, soft, y, kd)
        return per_example.mean()
    if soft is None:
        return TOKEN_LOSSES[loss](logits, y)
    return sequence_kd_loss(logits, soft, y, kd, shift=loss == "causal_lm")


def require_training_labels(bundle: DatasetBundle, loss: str, what: str) -> None:
    """Refuse a loss the data's labels do not fit: class labels, or token labels ``(N, L)``."""
    if loss not in TRAINING_LOSSES:
        raise DistillInputError(f"--loss {loss!r}: {what} takes {', '.join(TRAINING_LOSSES)}")
    if loss == "cross_entropy":
        require_class_labels(bundle, what)
        return
    labels = bundle.train.tensors[1]
    if labels.is_floating_point() or labels.ndim != 2:
        raise DistillInputError(
            f"{what} --loss {loss} needs token labels (N, L), and this data's labels are "
            f"{labels.dtype} of shape {tuple(labels.shape)} ({bundle.description['name']})"
        )


def fit(
    model: torch.nn.Module,
    bundle: DatasetBundle,
    recipe: Recipe,
    seed: int,
    teacher: torch.nn.Module | None = None,
    kd: KDConfig | None = None,
    log: EpochLog | None = None,
    after_epoch: EpochHook | None = None,
    loss: str = "cross_entropy",
    tracker: StepTracker | None = None,
) -> dict[str, float]:
    """Train in place with SGD; with a teacher, on the KD loss against its soft outputs.

    ``loss`` is cross-entropy on class labels, or a token loss of :data:`TOKEN_LOSSES` on
    token labels ``(N, L)``: then every mean (a batch's, an epoch's, an evaluation's) is
    over counted tokens, and distillation is :func:`~distill.losses.sequence_kd_loss`.

    The teacher is frozen in eval mode. Without augmentation its logits are computed
    once for the whole training set; with augmentation, on every augmented batch.
    ``after_epoch`` sees the model before the first epoch (epoch 0) and after each one
    (e.g. :class:`Snapshots`); ``tracker`` (:class:`StepTracker`) sees it after every
    optimizer step, and what it returns goes to ``log``. Returns final metrics on the
    (unaugmented) train split and the test split.
    """
    check_model_fits(model, bundle, "training")
    token_loss = TOKEN_LOSSES.get(loss)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = (to_device(t, device) for t in bundle.train.tensors)
    cached = None
    if teacher is not None:
        teacher.eval().requires_grad_(False)
        if bundle.augment is None:
            cached = predict_logits(teacher, inputs)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )  # fmt: skip
    if after_epoch is not None:
        after_epoch(0, model, {"epoch": 0})
    if tracker is not None:
        tracker.begin(bundle, loss, device)
    step = 0
    for epoch in range(recipe.epochs):
        lr = recipe.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(targets), generator=generator).to(device)
        loss_sum, counted = 0.0, 0
        for first in range(0, len(order), recipe.batch_size):
            index = order[first : first + recipe.batch_size]
            x, y = take(inputs, index), targets[index]
            if bundle.augment is not None:
                x = bundle.augment(x.cpu(), generator).to(device)
            logits = logits_of(model, x)
            soft = _soft_targets(teacher, cached, index, x)
            batch_loss = _training_loss(logits, soft, y, kd, loss)
            _require_finite(batch_loss, epoch)
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            weight = len(index) if token_loss is None else token_loss.count(y)
            loss_sum += float(batch_loss.detach()) * weight
            counted += weight
            step += 1
            if tracker is not None:
                epoch_end = first + recipe.batch_size >= len(order)
                _track(tracker, model, log, {
                    "step": step, "epoch": epoch + 1, "lr": lr, "momentum": recipe.momentum,
                    "loss": float(batch_loss.detach()), "epoch_end": epoch_end,
                    "last": epoch_end and epoch + 1 == recipe.epochs,
                })  # fmt: skip
        test = evaluate(model, bundle.test, loss_fn=token_loss)
        record = {
            "epoch": epoch + 1, "lr": lr, "loss": loss_sum / counted,
            "test_loss": test["loss"], "test_accuracy": test["accuracy"],
            "seconds": round(time.perf_counter() - start, 4),
        }  # fmt: skip
        if log is not None:
            log(record)
        if after_epoch is not None:
            after_epoch(epoch + 1, model, {k: v for k, v in record.items() if k != "seconds"})
    train = evaluate(model, bundle.train_eval, loss_fn=token_loss)
    test = evaluate(model, bundle.test, loss_fn=token_loss)
    return {
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
    }


@torch.no_grad()
def _soft_targets(
    teacher: torch.nn.Module | None, cached: torch.Tensor | None, index: torch.Tensor, x: Any
) -> torch.Tensor | None:
    """The teacher's logits of a batch (None without a teacher): cached, or computed."""
    if teacher is None:
        return None
    return cached[index] if cached is not None else logits_of(teacher, x)


def _require_finite(batch_loss: torch.Tensor, epoch: int) -> None:
    """Stop a diverged run in one line."""
    if not torch.isfinite(batch_loss):
        value = float(batch_loss.detach())
        raise DistillInputError(
            f"training diverged at epoch {epoch + 1} (loss {value}); lower --lr"
        )


def _track(
    tracker: StepTracker, model: torch.nn.Module, log: EpochLog | None, info: dict[str, Any]
) -> None:
    """Show the tracker the model after a step; log what it returns."""
    record = tracker.after_step(model, info)
    if record is not None and log is not None:
        log(record)


def model_kwargs(
    arch: str, bundle: DatasetBundle, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Full, JSON-ready kwargs that fit an architecture to a dataset's inputs and classes."""
    fitted = {**input_kwargs(arch, bundle.input_shape), "num_classes": bundle.num_classes}
    return resolve_model_kwargs(arch, **{**fitted, **(overrides or {})})


def _metadata(
    arch: str,
    kwargs: dict[str, Any],
    bundle: DatasetBundle,
    recipe: Recipe,
    seed: int,
    metrics: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "arch": arch,
        "arch_kwargs": kwargs,
        "dataset": bundle.description,
        "seed": seed,
        "recipe": asdict(recipe),
        "metrics": metrics,
        "threads": torch.get_num_threads(),
        "versions": package_versions(),
        **extra,
    }


def _select(model: torch.nn.Module, output_key: str | None) -> torch.nn.Module:
    """``model``, returning its output ``output_key`` when one is named."""
    if output_key:
        select_output(model, output_key)
    return model


def _loss_fact(loss: str) -> dict[str, str]:
    """``{"loss": name}`` for a token loss; cross-entropy checkpoints stay as they were."""
    return {} if loss == "cross_entropy" else {"loss": loss}


def _source(source: dict[str, Any] | None) -> dict[str, Any]:
    """``model_source`` for user-code models; registry checkpoints stay as they were."""
    return {"model_source": source} if source else {}


def train_teacher(
    bundle: DatasetBundle,
    arch: str | None = None,
    recipe: Recipe | None = None,
    seed: int = 0,
    arch_overrides: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    log: EpochLog | None = None,
    snapshots: Snapshots | None = None,
    loss: str = "cross_entropy",
    tracker: StepTracker | None = None,
    output_key: str | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a teacher on hard labels; returns the model and its checkpoint metadata.

    ``loss`` is cross-entropy on class labels or a token loss on token labels (see
    :func:`fit`); a token loss is recorded (``"loss"``) and its students train with it.

    ``snapshots`` writes weight snapshots along the way (for trajectory planes);
    ``tracker`` sees the model after every optimizer step (:class:`StepTracker`).

    ``arch`` is a registry name (fitted to the data's input shape and classes), a code
    spec (``file.py:callable``, called with ``arch_overrides`` as they are) or ``hf:DIR``
    (a Hugging Face folder, trained from its weights); the default
    is the dataset's. User data (``npz``/``code``) has no default model, and its default
    recipe is :data:`USER_DATA_RECIPE`. ``output_key`` names the entry of the model's output
    that holds its logits (``--output-key``; recorded, and used by its students and by every
    later load).
    """
    require_training_labels(bundle, loss, "train")
    name = bundle.description["name"]
    if arch is None and name not in DEFAULT_ARCH:
        raise DistillInputError("your own data has no default model: name one with --model")
    arch = arch or DEFAULT_ARCH[name]
    recipe = recipe or TEACHER_RECIPES.get(name, USER_DATA_RECIPE)
    kwargs = dict(arch_overrides or {}) if is_code_spec(arch) else model_kwargs(
        arch, bundle, arch_overrides)  # fmt: skip
    torch.manual_seed(seed)
    model, source = build_from_spec(arch, kwargs)
    model = _select(model.to(device), output_key)
    facts = {"role": "teacher", "generation": 0, "parent_sha256": None, "kd": None,
             **_loss_fact(loss), **({"output_key": output_key} if output_key else {})}  # fmt: skip
    hook = snapshots.hook(_metadata(arch, kwargs, bundle, recipe, seed, {}, **_source(source),
                                    **facts), recipe.epochs) if snapshots else None  # fmt: skip
    metrics = fit(model, bundle, recipe, seed, log=log, after_epoch=hook, loss=loss,
                  tracker=tracker)  # fmt: skip
    meta = _metadata(arch, kwargs, bundle, recipe, seed, metrics, **_source(source), **facts)
    return model.eval(), meta


class LogitEnsemble(torch.nn.Module):
    """Teachers whose logits are averaged: the soft targets of ensemble distillation."""

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The mean of the members' logits (inputs as one argument, or as keywords)."""
        inputs = kwargs if kwargs else args[0]
        return torch.stack([logits_of(member, inputs) for member in self.members]).mean(dim=0)


def require_flatscape_teacher(path: str | Path) -> None:
    """Refuse another trainer's file as a teacher: it records no data or recipe to follow.

    Raises:
        DistillInputError: ``path`` is not a flatscape checkpoint (the message gives the
            ``flatscape import`` that makes one).
    """
    if Path(path).is_file() and not is_flatscape_checkpoint(path):
        raise DistillInputError(
            f"{path}: another trainer's checkpoint; distill needs a flatscape one, which "
            f"records the data and recipe: flatscape import {path} --model SPEC "
            "--data-file DATA.npz --out teacher.safetensors"
        )


def _load_teachers(
    paths: Sequence[str | Path], device: str | torch.device, named_model: str | None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """One teacher, or several of one architecture and dataset as a `LogitEnsemble`."""
    for path in paths:
        require_flatscape_teacher(path)
    loaded = [load_checkpoint(path, device=device, named_model=named_model) for path in paths]
    first = loaded[0][1]
    for path, (_, meta) in zip(paths[1:], loaded[1:], strict=True):
        if (meta["arch"], meta["arch_kwargs"], meta["dataset"]) != (
            first["arch"], first["arch_kwargs"], first["dataset"],
        ):  # fmt: skip
            raise DistillInputError(
                f"{path}: an ensemble teacher needs one architecture and dataset; "
                f"{paths[0]} differs"
            )
    if len(loaded) == 1:
        return loaded[0]
    return LogitEnsemble([model for model, _ in loaded]).eval(), first


def train_student(
    teacher_path: str | Path | Sequence[str | Path],
    kd: KDConfig,
    recipe: Recipe | None = None,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    log: EpochLog | None = None,
    named_model: str | None = None,
    data_spec: str | None = None,
    data_kwargs: dict[str, Any] | None = None,
    snapshots: Snapshots | None = None,
    tracker: StepTracker | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train one self-distilled generation from a checkpoint (born-again networks).

    The student is a freshly initialised copy of the teacher's architecture (for
    ``hf:DIR``, the folder's model with its weights, as its teacher started), trained on
    the teacher's dataset against its soft outputs. Its seed defaults to the teacher's
    seed plus one, so every generation starts from a different init. Several teacher
    paths distil from their ensemble (averaged logits); the student then records every
    parent's hash and continues the first parent's generation count. A teacher made
    from user code needs that code named again (``named_model``), and data from user
    code likewise (``data_spec``).
    """
    paths = [teacher_path] if isinstance(teacher_path, (str, Path)) else list(teacher_path)
    teacher, parent = _load_teachers(paths, device, named_model)
    bundle = dataset_from_description(
        parent["dataset"], data_spec, data_kwargs, origin=f"{paths[0]} header"
    )
    loss = parent.get("loss", "cross_entropy")
    require_training_labels(bundle, loss, "distill")
    seed = (parent.get("seed") or 0) + 1 if seed is None else seed
    recipe = recipe or recipe_for_student(parent)
    torch.manual_seed(seed)
    spec = require_named(parent, named_model, str(paths[0]))  # the code the user named
    model, source = build_from_spec(spec, parent["arch_kwargs"])
    model = _select(model.to(device), parent.get("output_key"))
    hashes = [file_sha256(path) for path in paths]
    facts = {
        **_source(source), "role": "student", "generation": parent.get("generation", 0) + 1,
        "parent_sha256": hashes[0] if len(hashes) == 1 else hashes,
        "kd": kd.to_metadata(), "teacher_metrics": parent.get("metrics"), **_loss_fact(loss),
        **({"output_key": parent["output_key"]} if parent.get("output_key") else {}),
    }  # fmt: skip
    hook = snapshots.hook(_metadata(spec, parent["arch_kwargs"], bundle, recipe, seed, {},
                                    **facts), recipe.epochs) if snapshots else None  # fmt: skip
    metrics = fit(model, bundle, recipe, seed, teacher=teacher, kd=kd, log=log, after_epoch=hook,
                  loss=loss, tracker=tracker)  # fmt: skip
    meta = _metadata(spec, parent["arch_kwargs"], bundle, recipe, seed, metrics, **facts)
    return model.eval(), meta


def recipe_for_student(parent: dict[str, Any]) -> Recipe:
    """Default recipe of a student of `parent` (checkpoint metadata).

    A teacher's student gets `student_recipe` of the teacher's recipe; a student's
    student inherits its parent's recipe unchanged; an imported checkpoint (no recipe)
    gets `student_recipe` of its dataset's default.
    """
    if not parent.get("recipe"):  # imported from another trainer: the dataset's default
        name = parent["dataset"]["name"]
        return student_recipe(TEACHER_RECIPES.get(name, USER_DATA_RECIPE))
    stored = Recipe(**{**parent["recipe"], "milestones": tuple(parent["recipe"]["milestones"])})
    return stored if parent.get("role") == "student" else student_recipe(stored)


@dataclass(frozen=True)
class Snapshots:
    """``count`` evenly spaced weight snapshots of a training run, written into ``directory``.

    The epochs are ``round(k * E / (count - 1))`` for ``k = 0 .. count - 1``: the
    initialisation, the end and evenly between (at most one per epoch). Each is
    ``directory/epoch_NNNN.safetensors``, a checkpoint with the run's metadata plus
    ``role = "snapshot"``, ``snapshot_of`` (teacher or student), ``epoch`` and that
    epoch's metrics.
    """

    directory: Path
    count: int

    def __post_init__(self) -> None:
        if self.count < 2:
            raise DistillInputError(f"--snapshots {self.count}: give 2 or more (start and end)")

    def epochs(self, total: int) -> list[int]:
        """The epochs snapshotted in a run of ``total`` epochs."""
        steps = min(self.count, total + 1)
        return sorted({round(k * total / (steps - 1)) for k in range(steps)})

    def path(self, epoch: int) -> Path:
        """The snapshot file of ``epoch``."""
        return Path(self.directory) / f"epoch_{epoch:04d}.safetensors"

    def hook(self, metadata: dict[str, Any], total: int) -> EpochHook:
        """The ``after_epoch`` hook of :func:`fit` that writes the snapshots."""
        from distill.checkpoint import save_checkpoint

        wanted = set(self.epochs(total))

        def save(epoch: int, model: torch.nn.Module, record: dict[str, Any]) -> None:
            if epoch in wanted:
                save_checkpoint(self.path(epoch), model, {
                    **metadata, "snapshot_of": metadata["role"], "role": "snapshot",
                    "epoch": epoch, "metrics": record,
                })  # fmt: skip

        return save


def json_lines_log(path: Path) -> EpochLog:
    """An epoch logger writing one JSON document per line to `path`.

    The file is replaced at the first epoch, not before: a run refused before training
    starts leaves no empty log behind.
    """
    started = False

    def write(record: dict[str, Any]) -> None:
        nonlocal started
        if not started:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
            started = True
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    return write
