"""Token models as Hugging Face shapes them: integer ids, dict batches, ModelOutput, SDPA.

References are dense float64 Hessians from ``torch.func.hessian`` of the same weights
with attention written out (:class:`TinyAttention` ``explicit=True``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import DataLoader

from landscape import loss_surface, model_curvature, sharpness_report
from landscape._types import call_model, model_outputs, select_output
from landscape.errors import LandscapeInputError
from landscape.operators.ggn import GGNOperator
from landscape.operators.hessian import HessianOperator
from tests.landscape.token_models import (
    BatchEncoding,
    ModelOutput,
    TinyAttention,
    TokenDataset,
    token_data,
)


def _models(seed: int = 0, **options) -> tuple[TinyAttention, TinyAttention]:
    """The SDPA model and its explicit-attention twin, same float64 weights."""
    torch.manual_seed(seed)
    model = TinyAttention(**options).double()
    twin = TinyAttention(explicit=True, **options).double()
    twin.load_state_dict(model.state_dict())
    return model, twin


def _dense_hessian(model: TinyAttention, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy's Hessian over all parameters, written without flatscape."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, theta.split([s.numel() for s in shapes]), strict=True))
        tensors = {n: parts[n].view(s) for n, s in zip(names, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, tensors, (), inputs)["logits"], labels)

    return torch.func.hessian(loss)(flat)


def test_dataloader_of_dicts_lambda1_matches_dense_float64():
    """Integer ids and masks from a DataLoader of dicts, no wrapper: lambda_1 to 1e-6."""
    model, twin = _models()
    inputs, labels = token_data(48)
    loader = DataLoader(TokenDataset(inputs, labels), batch_size=16)
    result = model_curvature(model, F.cross_entropy, loader, top_k=1, tol=1e-10,
                             dtype=torch.float64)  # fmt: skip
    dense = torch.linalg.eigvalsh(_dense_hessian(twin, inputs, labels))[-1]
    assert result.examples == 48
    assert abs(result.eigenvalues[0] - float(dense)) <= 1e-6 * abs(float(dense))


def test_user_dict_batches_split_and_measure_as_dicts():
    """A BatchEncoding (UserDict) batch gives the numbers of the plain dict batch."""
    model, _ = _models(1)
    inputs, labels = token_data(32)
    plain = [(inputs, labels)]
    encoded = [(BatchEncoding(inputs), labels)]
    a = model_curvature(model, F.cross_entropy, plain, top_k=1, tol=1e-10, batch_size=12)
    b = model_curvature(model, F.cross_entropy, encoded, top_k=1, tol=1e-10, batch_size=12)
    assert a.eigenvalues == b.eigenvalues


@pytest.mark.parametrize("hvp", ["double_backward", "forward_over_reverse"])
@pytest.mark.parametrize("keep_graphs", [True, False])
def test_sdpa_hessian_products_match_dense_float64(hvp, keep_graphs):
    """Through the fused-by-default attention, every product equals the dense Hessian."""
    model, twin = _models(2)
    inputs, labels = token_data(32, seed=2)
    batches = [((inputs["input_ids"][:20], inputs["attention_mask"][:20]), labels[:20])]
    batches = [({"input_ids": b[0][0], "attention_mask": b[0][1]}, b[1]) for b in batches]
    batches.append(({k: v[20:] for k, v in inputs.items()}, labels[20:]))
    H = HessianOperator(model, F.cross_entropy, batches, hvp=hvp, keep_graphs=keep_graphs)
    dense = _dense_hessian(twin, inputs, labels)
    assert torch.allclose(H.to_dense(), dense, rtol=0, atol=1e-10 * dense.abs().max())


def test_sdpa_ggn_matches_the_explicit_attention_ggn():
    model, twin = _models(3)
    batches = [token_data(32, seed=3)]
    ggn = GGNOperator(model, F.cross_entropy, batches).to_dense()
    reference = GGNOperator(twin, F.cross_entropy, batches).to_dense()
    assert torch.allclose(ggn, reference, rtol=0, atol=1e-12)


def test_the_fused_kernel_alone_has_no_double_backward():
    """Why the products choose the math kernel: the default kernel fails twice-differentiated."""
    model, _ = _models(4)
    inputs, labels = token_data(8)
    loss = F.cross_entropy(model(**inputs).logits, labels)
    gradient = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for .*flash_attention"):
        torch.autograd.grad(sum(g.sum() for g in gradient), list(model.parameters()))


class HardWired(torch.nn.Module):
    """Calls the fused CPU attention op directly: no kernel choice can help."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x)[:, None]
        out, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, q, q)
        return out[:, 0].mean(1)


def test_a_hard_wired_fused_op_is_one_line_naming_it():
    x, y = torch.randn(8, 3, 4, dtype=torch.float64), torch.randint(0, 4, (8,))
    with pytest.raises(LandscapeInputError, match="_scaled_dot_product_flash_attention_for_cpu"):
        HessianOperator(HardWired(), F.cross_entropy, [(x, y)]).to_dense()


def test_dict_output_model_through_surface_sharpness_and_curvature(tmp_path):
    """A ModelOutput with a loss first and logits second: the rule picks the logits."""
    model, _ = _models(5, loss_too=True)
    inputs, labels = token_data(32, seed=5)
    data = [(inputs, labels)]
    with torch.no_grad():
        expected = float(F.cross_entropy(model(**inputs).logits, labels))
    for vectorize in ("never", "always"):
        surface = loss_surface(model, F.cross_entropy, data, tmp_path / f"{vectorize}.h5",
                               x_range="-1:1:3", vectorize=vectorize)  # fmt: skip
        assert surface.origin["train_loss"] == pytest.approx(expected, rel=1e-6)
    sharp = sharpness_report(model, F.cross_entropy, data, rho=0.01, samples=2, steps=2,
                             restarts=1)  # fmt: skip
    assert sharp["loss"] == pytest.approx(expected, rel=1e-6)
    curvature = model_curvature(model, F.cross_entropy, data, top_k=1)
    assert curvature.loss == pytest.approx(expected, rel=1e-6)


@dataclasses.dataclass
class Output:
    hidden: torch.Tensor
    scores: torch.Tensor


def test_the_output_rule():
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    assert model_outputs(a) is a
    assert model_outputs(ModelOutput(loss=b, logits=a)) is a
    assert model_outputs({"scores": a, "other": b}) is a
    assert model_outputs((a, b)) is a
    assert model_outputs(Output(hidden=a, scores=b)) is a
    assert model_outputs(Output(hidden=a, scores=b), "scores") is b
    with pytest.raises(LandscapeInputError, match="'nothing'.*--output-key"):
        model_outputs({"logits": a}, "nothing")


def test_select_output_is_a_hook_that_keeps_parameter_names():
    model, _ = _models(6, loss_too=True)
    names = [n for n, _ in model.named_parameters()]
    inputs, labels = token_data(8)
    handle = select_output(model, "loss")
    assert call_model(model, inputs).ndim == 0
    assert [n for n, _ in model.named_parameters()] == names
    handle.remove()
    assert isinstance(call_model(model, inputs), ModelOutput)


def test_a_dict_the_model_takes_whole_stays_one_argument():
    class Whole(torch.nn.Module):
        def forward(self, batch):
            return batch["x"] * 2

    assert call_model(Whole(), {"x": torch.ones(1)}).item() == 2.0
