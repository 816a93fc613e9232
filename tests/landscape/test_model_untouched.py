"""Every public call that takes a model measures in its documented mode and leaves it untouched.

The model is a small CNN with BatchNorm (non-trivial running statistics) and Dropout, in
train mode as every new module is, with one frozen parameter and two pre-existing
gradients. Each call must give the numbers of the same call on an eval-mode copy, and
leave the model bit for bit as it was: ``state_dict``, every module's ``training`` flag,
``requires_grad`` and ``.grad`` (None stays None). A call stopped midway by an exception
must leave it so too.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import landscape
import landscape._types as landscape_types
from landscape.operators.memory import resident_bytes
from landscape.surface.store import SurfaceStore

LOSS = nn.functional.cross_entropy
CLASSES = 5
TIMING_KEYS = {"seconds", "memory", "peak", "hvp_seconds", "timings", "out", "settings", "hvp"}
"""Keys whose values depend on timing, not on the model: ``hvp`` too, which ``hvp="auto"``
picks by timing both engines (their numbers agree to rounding, and are compared)."""


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(4 * 4 * 4, CLASSES),
    )
    with torch.no_grad():
        for norm in (model[1], model[4]):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.num_batches_tracked.fill_(7)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)
    model[0].bias.requires_grad_(False)
    model[3].weight.grad = torch.randn_like(model[3].weight)
    model[8].bias.grad = torch.randn_like(model[8].bias)
    return model.train()


@dataclass
class Setup:
    """The model (train mode) and its data: 64 examples, labels mostly its own predictions."""

    model: nn.Module
    batches: list[tuple[Tensor, Tensor]]
    target: float  # a mean cross-entropy temperature scaling can reach
    other: dict[str, Tensor]  # a second model's state_dict (interpolation, planes)
    third: dict[str, Tensor]
    tmp: Path


@pytest.fixture(scope="module")
def data() -> tuple[list[tuple[Tensor, Tensor]], float]:
    model = _model().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 8, 8, generator=generator)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    y[::4] = (y[::4] + 1) % CLASSES
    raw = float(LOSS(logits, y))
    return [(x[:32], y[:32]), (x[32:], y[32:])], (raw + math.log(CLASSES)) / 2


def _moved(model: nn.Module, scale: float, seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: t + scale * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
        for name, t in model.state_dict().items()
    }


@pytest.fixture
def setup(data, tmp_path) -> Setup:
    batches, target = data
    model = _model()
    return Setup(model, batches, target, _moved(model, 0.05, 2), _moved(model, 0.05, 3), tmp_path)


# -- the public calls, each returning its numbers -------------------------------------------


def _curvature(**options: Any) -> Callable[[nn.Module, Setup], Any]:
    def call(model: nn.Module, s: Setup) -> Any:
        return landscape.model_curvature(model, LOSS, s.batches, top_k=1, **options)

    return call


def _operator_product(build: type, **options: Any) -> Callable[[nn.Module, Setup], Any]:
    def call(model: nn.Module, s: Setup) -> Any:
        operator = build(model, LOSS, s.batches, **options)
        v = torch.linspace(-1, 1, operator.dim, dtype=operator.dtype)
        return {"loss": operator.loss, "Av": operator.matvec(v), "gradient": operator.gradient()}

    return call


def _surface(**options: Any) -> Callable[[nn.Module, Setup], Any]:
    def call(model: nn.Module, s: Setup) -> Any:
        out = s.tmp / f"surface-{id(model)}.h5"
        result = landscape.loss_surface(model, LOSS, s.batches, out, force=True, **options)
        with SurfaceStore.read(out) as store:
            return {"origin": result.origin, "arrays": dict(store.arrays),
                    "directions": store.directions()}  # fmt: skip

    return call


def _plane_surface(model: nn.Module, s: Setup) -> Any:
    plane = landscape.checkpoint_plane(model, s.other, s.third)
    return _surface(x_range="-0.5:1.5:3", y_range="-0.5:1.5:3", plane=plane, batch_size=32)(
        model, s
    )


def _eigen_map(model: nn.Module, s: Setup) -> Any:
    out = s.tmp / f"map-{id(model)}.h5"
    landscape.eigen_map(
        model, LOSS, s.batches, out, x_range="-1:1:2", y_range=None, tol=1e-2, force=True
    )
    with SurfaceStore.read(out) as store:
        return dict(store.arrays)


def _per_layer(model: nn.Module, s: Setup) -> Any:
    operator = landscape.HessianOperator(model, LOSS, s.batches)
    sizes = [p.numel() for p in operator.params]
    request = landscape.CurvatureRequest(top_k=1, trace=True, trace_matvecs=3)
    return landscape.per_layer_curvature(operator, model, operator.names, sizes, request)


def _perturbed(measure: str) -> Callable[[nn.Module, Setup], Any]:
    def call(model: nn.Module, s: Setup) -> Any:
        objective = landscape.PerturbedLoss(model, LOSS, s.batches)
        if measure == "average":
            return landscape.average_sharpness(objective, 0.05, samples=2)
        return landscape.worst_sharpness(objective, 0.05, steps=2, restarts=1)

    return call


def _evaluator(model: nn.Module, s: Setup) -> Any:
    direction = landscape.random_direction(model, torch.Generator().manual_seed(0))
    evaluator = landscape.SurfaceEvaluator(model, LOSS, [direction])
    return evaluator.evaluate(s.batches, np.array([[-1.0], [0.0], [1.0]]))


def _other(s: Setup) -> nn.Module:
    """A second model (train mode, as the first) at ``s.other``."""
    other = _model()
    other.load_state_dict(s.other)
    return other


def _splits(s: Setup) -> dict[str, list[tuple[Tensor, Tensor]]]:
    return {"train": s.batches, "test": s.batches[:1]}


def _bezier_curve(model: nn.Module, s: Setup) -> Any:
    out = s.tmp / f"curve-{id(model)}.h5"
    settings = landscape.CurveSettings(steps=2, points=3)
    curve = landscape.bezier_curve(model, _other(s), LOSS, _splits(s), out, settings, force=True)
    return {"values": curve.values, "control": curve.control}


CALLS: dict[str, Callable[[nn.Module, Setup], Any]] = {
    "model_curvature": _curvature(trace=True, trace_matvecs=3),
    "model_curvature-bn_train": _curvature(bn_mode="train"),
    "model_curvature-ggn": _curvature(operator="ggn"),
    "model_curvature-fisher": _curvature(operator="fisher"),
    "model_curvature-batch_size": _curvature(batch_size=16),
    "model_curvature-float64": _curvature(dtype=torch.float64),
    "model_curvature-forward_over_reverse": _curvature(hvp="forward_over_reverse"),
    "model_curvature-hvp_auto": _curvature(hvp="auto"),
    "model_curvature-per_layer": _curvature(per_layer=True),
    "model_curvature-pyhessian": _curvature(engine="pyhessian"),
    "data_parallel_curvature": lambda m, s: landscape.data_parallel_curvature(
        m, LOSS, s.batches, top_k=1
    ),
    "resampled_curvature": lambda m, s: landscape.resampled_curvature(
        m, LOSS, s.batches, landscape.CurvatureRequest(top_k=1), resamples=2, resample_size=32
    ),
    "policy_operator-measure_curvature": lambda m, s: landscape.measure_curvature(
        landscape.curvature.policy_operator("hessian", m, LOSS, s.batches),
        landscape.CurvatureRequest(),
    ),
    "make_operator-measure_curvature": lambda m, s: landscape.measure_curvature(
        landscape.make_operator("hessian", m, LOSS, s.batches), landscape.CurvatureRequest()
    ),
    "HessianOperator": _operator_product(landscape.HessianOperator),
    "HessianOperator-bn_train": _operator_product(landscape.HessianOperator, bn_mode="train"),
    "HessianOperator-kept_graphs": _operator_product(landscape.HessianOperator, keep_graphs=True),
    "GGNOperator": _operator_product(landscape.GGNOperator),
    "FisherOperator": _operator_product(landscape.FisherOperator, kind="empirical"),
    "per_layer_curvature": _per_layer,
    "ggn_split": lambda m, s: landscape.ggn_split(m, LOSS, s.batches, trace_matvecs=3),
    "fit_temperature": lambda m, s: landscape.fit_temperature(m, s.batches, s.target),
    "temperature_matched_curvature": lambda m, s: landscape.temperature_matched_curvature(
        m, s.batches, s.target, trace_matvecs=3
    ),
    "loss_surface-batch_size_auto": _surface(x_range="-1:1:3"),
    "loss_surface-vmap": _surface(x_range="-1:1:3", vectorize="always", batch_size=32),
    "loss_surface-tight_memory": lambda m, s: _surface(
        x_range="-1:1:3", max_memory=resident_bytes(torch.device("cpu")) + 2**24
    )(m, s),
    "loss_surface-eigen_2d": _surface(
        x_range="-1:1:2", y_range="-1:1:2", directions="eigen", batch_size=32
    ),
    "loss_surface-plane": _plane_surface,
    "random_direction": lambda m, s: landscape.random_direction(
        m, torch.Generator().manual_seed(0)
    ),
    "interpolation_direction": lambda m, s: landscape.interpolation_direction(m, s.other),
    "hessian_directions": lambda m, s: landscape.hessian_directions(m, LOSS, s.batches, 1),
    "checkpoint_plane": lambda m, s: landscape.checkpoint_plane(m, s.other, s.third),
    "trajectory_plane": lambda m, s: landscape.trajectory_plane(
        m, {"a": [s.other, s.third, _moved(m, 0.05, 4)]}
    ),
    "eigen_map": _eigen_map,
    "SurfaceEvaluator": _evaluator,
    "sharpness_report": lambda m, s: landscape.sharpness_report(
        m, LOSS, s.batches, 0.05, samples=2, steps=2, restarts=1
    ),
    "sharpness_report-bn_train": lambda m, s: landscape.sharpness_report(
        m, LOSS, s.batches, 0.05, ["average"], ["plain"], samples=2, bn_mode="train"
    ),
    "PerturbedLoss-average_sharpness": _perturbed("average"),
    "PerturbedLoss-worst_sharpness": _perturbed("worst"),
    "linear_path": lambda m, s: landscape.linear_path(m, _other(s), LOSS, _splits(s), 3),
    "linear_path-interpolate": lambda m, s: landscape.linear_path(
        m, _other(s), LOSS, _splits(s), 3, batchnorm="interpolate"
    ),
    "path_values": lambda m, s: landscape.path_values(
        m, LOSS, _splits(s), [landscape.interpolation_direction(m, s.other)], np.ones((1, 1))
    ),
    "bezier_curve": _bezier_curve,
    "function_agreement": lambda m, s: landscape.function_agreement(m, _other(s), s.batches),
    "layer_cka": lambda m, s: landscape.layer_cka(m, _other(s), s.batches),
    "SharpnessTracker": lambda m, s: landscape.SharpnessTracker(
        s.batches, LOSS, every=1, trace=True, trace_matvecs=3
    ).step(m, step=1, lr=0.1, momentum=0.9),
    "SharpnessTracker-bn_train": lambda m, s: landscape.SharpnessTracker(
        s.batches, LOSS, bn_mode="train"
    ).step(m, force=True),
    "profile_model": lambda m, s: landscape.profile_model(
        m,
        LOSS,
        s.batches,
        landscape.ProfileSettings(top_k=1, trace_matvecs=3, line_points=3, confounds=True),
        test_batches=s.batches[:1],
    ),  # fmt: skip
    "align_to": lambda m, s: landscape.align_to(m, s.other).to_dict(),
    "permutation_spec": lambda m, s: landscape.permutation_spec(m).to_groups(),
}


# -- comparing numbers and models --------------------------------------------------------------


def _numbers(value: Any) -> Any:
    """The numbers of a result, as nested dicts/lists of float64 arrays (timings dropped)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list | tuple):
        return [_numbers(v) for v in value]
    if isinstance(value, Tensor):
        return value.detach().double().cpu().numpy()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value.astype(np.float64)
    if isinstance(value, bool | int | float | np.floating | np.integer):
        return np.float64(value)
    return value


def _assert_same_numbers(got: Any, want: Any, where: str = "result") -> None:
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            _assert_same_numbers(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _assert_same_numbers(a, b, f"{where}[{i}]")
    elif isinstance(want, np.ndarray | np.float64):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=where)
    else:
        assert got == want, where


def _state(model: nn.Module) -> dict[str, Any]:
    """Everything a call must give back: tensors, modes, requires_grad and gradients."""
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
        "objects": {k: id(v) for k, v in model.state_dict(keep_vars=True).items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grad": {
            k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()
        },
    }


def _assert_untouched(model: nn.Module, before: dict[str, Any]) -> None:
    after = _state(model)
    for name, tensor in before["tensors"].items():
        now = after["tensors"][name]
        assert now.dtype == tensor.dtype and now.device == tensor.device, name
        assert torch.equal(now, tensor), f"{name} changed"
    assert after["objects"] == before["objects"], "a parameter or buffer was replaced"
    assert after["training"] == before["training"], "a module's train/eval mode changed"
    assert after["requires_grad"] == before["requires_grad"]
    for name, grad in before["grad"].items():
        now = after["grad"][name]
        if grad is None:
            assert now is None, f"{name}.grad was None and is set"
        else:
            assert now is not None and torch.equal(now, grad), f"{name}.grad changed"


class _Stop(Exception):
    pass


def _forward_counter(model: nn.Module, stop_at: int | None = None) -> tuple[list[int], Any]:
    """Count the forward passes of ``model`` (copies included); raise at ``stop_at``."""
    count = [0]

    def hook(module: nn.Module, args: Any) -> None:
        count[0] += 1
        if stop_at is not None and count[0] >= stop_at:
            raise _Stop(f"stopped at forward pass {count[0]}")

    return count, model.register_forward_pre_hook(hook)


@pytest.mark.parametrize("name", list(CALLS))
def test_public_call_measures_in_eval_mode_and_leaves_the_model_untouched(name, setup):
    """(a) the eval-mode copy's numbers; (b) the model as it was; (c) also after a failure."""
    call = CALLS[name]
    reference = copy.deepcopy(setup.model).eval()
    want = _numbers(call(reference, setup))
    before = _state(setup.model)
    count, hook = _forward_counter(setup.model)
    got = _numbers(call(setup.model, setup))
    hook.remove()
    _assert_same_numbers(got, want)
    _assert_untouched(setup.model, before)
    if count[0] < 2:
        return  # no forward pass to stop midway
    _, hook = _forward_counter(setup.model, stop_at=max(2, count[0] // 2))
    with pytest.raises(_Stop):
        call(setup.model, setup)
    hook.remove()
    _assert_untouched(setup.model, before)


NOT_MEASURING = {
    "MeanLossOperator": "abstract; every concrete operator is covered",
    "TemperatureScaled": "a module wrapping the model (covered through the temperature calls)",
    "select_parameters": "reads parameter names and flags only",
    "call_model": "calls the model as the user would (every measurement is covered)",
    "select_output": "adds a forward hook the user asked for, removable",
}
SUBPACKAGES = [
    "operators", "curvature", "sharpness", "surface", "compare", "distributed", "pairs",
    "tracking",
]  # fmt: skip


def _public_calls_taking_a_model() -> dict[str, Callable[..., Any]]:
    """Every public callable of ``landscape`` and its sub-packages with a ``model`` argument."""
    found = {}
    for module in [landscape, *(importlib.import_module(f"landscape.{s}") for s in SUBPACKAGES)]:
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if not callable(value) or inspect.isclass(value) and issubclass(value, Exception):
                continue
            if "model" in inspect.signature(value).parameters:
                found[name] = value
    return found


def test_every_public_call_taking_a_model_is_covered():
    """A new public name that takes a model must be added to CALLS."""
    covered = {word for name in CALLS for word in re.findall(r"\w+", name)}
    assert sorted(set(_public_calls_taking_a_model()) - covered - set(NOT_MEASURING)) == []


def test_every_public_call_taking_a_model_is_entered_in_analysis_mode():
    """One entry wrapper (``landscape._types.in_analysis_mode``), not a patch per call."""
    unwrapped = [
        name
        for name, value in _public_calls_taking_a_model().items()
        if name not in NOT_MEASURING
        and not getattr(value.__init__ if inspect.isclass(value) else value, "in_analysis_mode",
                        False)
    ]  # fmt: skip
    assert unwrapped == []


# -- the guard itself: whatever a call does to the model, it is given back --------------------


def _vandalize(model: nn.Module) -> None:
    """Everything a careless measurement could do to a model."""
    model.train()
    model(torch.randn(8, 1, 8, 8))  # BatchNorm running statistics move
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[3].weight = nn.Parameter(torch.zeros_like(model[3].weight))
    model[4].running_var = torch.ones(4)
    model[0].bias.requires_grad_(True)
    model[1].weight.grad = torch.ones_like(model[1].weight)
    model[3].weight.grad = None
    model[8].bias.grad.zero_()
    model[8].double()


@pytest.mark.parametrize("fails", [False, True], ids=["returns", "raises"])
def test_analysis_mode_gives_the_model_back_whatever_the_block_did(fails):
    model = _model()
    before = _state(model)
    stops = pytest.raises(_Stop) if fails else contextlib.nullcontext()
    with stops, landscape_types.analysis_mode(model, "train"):
        _vandalize(model)
        if fails:
            raise _Stop
    _assert_untouched(model, before)


def test_a_nested_block_only_switches_modes_and_an_untouched_tensor_is_not_written():
    """Kept gradient graphs stay valid: a tensor the block did not change keeps its version."""
    model = _model()
    versions = {k: v._version for k, v in model.state_dict(keep_vars=True).items()}
    with landscape_types.analysis_mode(model):
        with landscape_types.analysis_mode(model, "train"):
            assert model[1].training and not model[0].training
            model[1].running_mean.add_(1.0)  # given back by the outer block only
        assert not model[1].training
        assert not torch.equal(model[1].running_mean, _state(_model())["tensors"]["1.running_mean"])
    after = {k: v._version for k, v in model.state_dict(keep_vars=True).items()}
    changed = {k for k in versions if after[k] != versions[k]}
    assert changed == {"1.running_mean"}
