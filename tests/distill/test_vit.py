"""The registry's tiny ViT: shapes, its parameter count, bidirectional attention, a
Hessian that differentiates twice (Lanczos against a dense float64 Hessian), and the
command line on the 8x8 digits."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cli.main import cli
from distill.errors import DistillInputError
from distill.models import build_model, count_parameters, input_kwargs
from tests.references import dense_hessian


def test_shapes_and_its_parameter_count():
    torch.manual_seed(0)
    model = build_model("vit", num_classes=10, in_channels=1, image_size=8, patch=2, width=16,
                        layers=2, heads=4)  # fmt: skip
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    block = (2 * 16) + (16 * 48 + 48) + (16 * 16 + 16) + (2 * 16) + (16 * 64 + 64) + (64 * 16 + 16)
    embed = 1 * 2 * 2 * 16 + 16
    expected = embed + 16 * 16 + 2 * block + 2 * 16 + (16 * 10 + 10)
    assert count_parameters(model) == expected
    assert input_kwargs("vit", (1, 8, 8)) == {"in_channels": 1, "image_size": 8, "patch": 2}
    assert input_kwargs("vit", (3, 32, 32)) == {"in_channels": 3, "image_size": 32, "patch": 8}


def test_every_patch_sees_every_other():
    """No causal mask: changing the last patch moves the logits (the mean over patches)
    and every patch's block output."""
    torch.manual_seed(0)
    model = build_model("vit", in_channels=1, image_size=8, patch=4, width=8, heads=2).eval()
    images = torch.randn(2, 1, 8, 8)
    changed = images.clone()
    changed[..., 4:, 4:] += 1.0
    first = {}
    model.blocks[0].register_forward_hook(lambda m, i, o: first.setdefault(len(first), o))
    with torch.no_grad():
        model(images), model(changed)
    assert not torch.allclose(first[0][:, 0], first[1][:, 0])  # patch 0 saw patch 3 change


def test_bad_sizes_are_one_line():
    with pytest.raises(DistillInputError, match="must divide image_size"):
        build_model("vit", image_size=10, patch=4)
    with pytest.raises(DistillInputError, match="multiple of heads"):
        build_model("vit", width=30, heads=4)
    with pytest.raises(DistillInputError, match="S a multiple of 4"):
        input_kwargs("vit", (40,))


def test_its_hessian_is_the_dense_one_in_float64():
    """Top-2 eigenvalues by flatscape's Lanczos against eigvalsh of the dense Hessian
    (reverse-over-reverse, as for the GPT: LayerNorm defeats torch.func.hessian)."""
    from landscape import model_curvature

    torch.manual_seed(0)
    model = build_model("vit", num_classes=3, in_channels=1, image_size=4, patch=2, width=4,
                        layers=1, heads=2).double().eval()  # fmt: skip
    images = torch.randn(12, 1, 4, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (12,))
    result = model_curvature(model, F.cross_entropy, [(images, labels)], top_k=2, tol=1e-10,
                             dtype=torch.float64, max_memory=None)  # fmt: skip
    dense = dense_hessian(model, F.cross_entropy, images, labels)
    top = torch.linalg.eigvalsh(dense).flip(0)[:2]
    torch.testing.assert_close(torch.tensor(result.eigenvalues, dtype=torch.float64), top,
                               rtol=1e-8, atol=1e-10)  # fmt: skip


def test_train_and_hessian_on_digits_by_flags(tmp_path):
    teacher = tmp_path / "vit.safetensors"
    run = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--model", "vit", "--epochs",
                                   "2", "--out", str(teacher), "--threads", "1"])  # fmt: skip
    assert run.exit_code == 0, run.output
    report = tmp_path / "h.json"
    run = CliRunner().invoke(cli, ["hessian", str(teacher), "--top-k", "1", "--samples", "128",
                                   "--json", str(report), "--quiet"])  # fmt: skip
    assert run.exit_code == 0, run.output
    found = json.loads(report.read_text())
    assert found["eigenvalues"][0] > 0 and found["converged"] in (True, [True])
