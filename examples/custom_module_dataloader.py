"""Curvature of any module fed by any DataLoader, checked against the dense Hessian.

The model here is your own ``nn.Module`` whose ``forward`` takes a *dict* of tensors
(``{"x": ...}``, as many real pipelines do), and the data a
``torch.utils.data.DataLoader`` over a ``Dataset`` that yields ``({"x": x_i}, y_i)``;
``landscape.model_curvature`` joins the batches itself. It reports the top four
eigenvalues of the Hessian of the mean cross-entropy (Lanczos, with the residuals
``||H v - lambda v||`` and whether they converged), the Hutch++ trace and the SLQ spectral
density, all in float64, and the number of Hessian-vector products spent.

When the model is small enough (``--dense-limit`` parameters), the script also builds the
full Hessian with ``torch.func.hessian`` and prints the largest relative error of the
Lanczos eigenvalues against ``torch.linalg.eigvalsh`` and the exact trace.

Run::

    python examples/custom_module_dataloader.py --samples 4096 --hidden 32

A quick look (dense check included)::

    python examples/custom_module_dataloader.py --samples 256 --hidden 8 --threads 1
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import landscape


class Blobs(Dataset):
    """Seeded Gaussian blobs, one per class; each item is ``({"x": features}, label)``."""

    def __init__(self, samples: int, features: int, classes: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        centres = torch.randn(classes, features, generator=generator)
        self.y = torch.randint(0, classes, (samples,), generator=generator)
        self.x = centres[self.y] + 1.5 * torch.randn(samples, features, generator=generator)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {"x": self.x[i]}, self.y[i]


class DictMLP(nn.Module):
    """A one-hidden-layer tanh network whose input is a dict with the features under "x"."""

    def __init__(self, features: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(batch["x"])))


def fit(model: nn.Module, loader: DataLoader, epochs: int) -> None:
    """A few epochs of Adam, so the curvature is measured near a minimum."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for inputs, targets in loader:
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def dense_hessian(model: nn.Module, loader: DataLoader) -> torch.Tensor:
    """The full Hessian of the mean cross-entropy, float64, in parameter order.

    Batch by batch (``torch.func.hessian`` of each batch's mean loss, weighted by the
    batch's share of the examples), so that memory stays that of one batch.
    """
    names = [name for name, _ in model.named_parameters()]
    params = [p.detach().double() for _, p in model.named_parameters()]
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])
    total = sum(len(targets) for _, targets in loader)
    hessian = torch.zeros(len(flat), len(flat), dtype=torch.float64)
    for inputs, targets in loader:
        inputs = {key: value.double() for key, value in inputs.items()}

        def loss_of(vector: torch.Tensor, inputs=inputs, targets=targets) -> torch.Tensor:
            chunks = vector.split(sizes)
            values = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
            outputs = torch.func.functional_call(model, values, (inputs,))
            return F.cross_entropy(outputs, targets)

        hessian += len(targets) / total * torch.func.hessian(loss_of)(flat)
    return hessian


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="examples in the dataset")
    parser.add_argument("--features", type=int, default=16, help="input features")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units")
    parser.add_argument("--classes", type=int, default=4, help="classes")
    parser.add_argument("--batch-size", type=int, default=128, help="DataLoader batch size")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument("--tol", type=float, default=1e-10, help="Lanczos relative tolerance")
    parser.add_argument(
        "--dense-limit", type=int, default=2000, help="largest model checked densely"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, init and probes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dataset = Blobs(args.samples, args.features, args.classes, args.seed)
    model = DictMLP(args.features, args.hidden, args.classes)
    fit(model, DataLoader(dataset, batch_size=args.batch_size, shuffle=True), args.epochs)

    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    result = landscape.model_curvature(
        model, F.cross_entropy, loader, top_k=4, trace=True, density=True,
        tol=args.tol, seed=args.seed, dtype=torch.float64,
    )  # fmt: skip
    eigen, trace, density = result.eigen, result.trace, result.density
    print(f"parameters {result.dim}, examples {result.examples}, loss {result.loss:.8f}")
    print("eigenvalues " + " ".join(f"{v:.10g}" for v in result.eigenvalues))
    print("residuals " + " ".join(f"{r:.3e}" for r in eigen.residuals.tolist()))
    print(f"converged {eigen.converged}")
    print(f"trace {trace.estimate:.10g} +- {trace.stderr:.3g} ({trace.method})")
    # SLQ: nodes of weight > 0 lie in the spectrum's range; n * E[sum w theta] ~ trace.
    support = density.nodes[density.weights > 1e-12]
    low, high = float(support.min()), float(support.max())
    density_trace = result.dim * float(density.moment(1).mean())
    print(f"density support [{low:.10g}, {high:.10g}], trace from density {density_trace:.6g}")
    print(
        f"matvecs {result.matvecs} (eigen {eigen.matvecs}, trace {trace.matvecs}, "
        f"density {density.matvecs}) in {result.seconds:.2f} s"
    )

    if result.dim > args.dense_limit:
        print(f"dense check skipped: {result.dim} parameters > --dense-limit {args.dense_limit}")
        return
    exact = torch.linalg.eigvalsh(dense_hessian(model, loader)).flip(0)
    top = exact[: len(result.eigenvalues)].tolist()
    errors = [abs(v - e) / abs(e) for v, e in zip(result.eigenvalues, top, strict=True)]
    exact_trace = float(exact.sum())
    print("dense eigenvalues " + " ".join(f"{v:.10g}" for v in top))
    print(f"dense trace {exact_trace:.10g}, spectrum [{float(exact[-1]):.10g}, {top[0]:.10g}]")
    print(f"max relative eigenvalue error {max(errors):.3e}")
    miss = abs(trace.estimate - exact_trace)
    sigmas = miss / trace.stderr if trace.stderr else math.inf
    print(f"trace error {miss:.4g} ({sigmas:.2f} stderr)")


if __name__ == "__main__":
    main()
