"""Curvature benchmark: flatscape against PyHessian, curvlinops and hessian-eigenthings.

Prints, per model: the cost of one Hessian-vector product (HVP) per engine in units of
one gradient (forward + backward); time and HVPs to the top-1 and top-5 eigenvalues at
tol 1e-3, same model, same examples, one thread, interleaved seed by seed so machine load
hits all alike (medians over seeds), with their errors against a tight reference:

- flatscape's Lanczos as ``flatscape hessian`` runs it (batches of 256 on a CPU with every
  gradient graph kept), and in one batch, as the peers get the data;
- PyHessian 0.1 ``eigenvalues(top_n=k, tol=1e-3)``;
- curvlinops ``HessianLinearOperator(...).to_scipy()`` through ``scipy.sparse.linalg.eigsh``
  (ARPACK, ``which="LA"``, ``tol=1e-3``);
- hessian-eigenthings 1.0 ``lanczos`` at the fewest steps that reach error 1e-3 in seed 0
  (found against the reference before timing: an oracle no user has);

and the error of Hutch++ against Hutchinson at equal HVPs. curvlinops and
hessian-eigenthings are the ``bench`` extra (``pip install -c constraints.txt -e
'.[bench]'``); ``--peers`` without them skips them.

Models: the cnn1d MNIST-1D teacher (trained here, 30 epochs, seed 0); the registry GPT
on the tokens dataset (its default recipe, seed 0; top-1 only, 256 sequences, the peers
through the wrapper they need: next-token logits flattened, labels shifted); resnet20
(option-A shortcuts) trained here for 15 epochs on CIFAR-shaped images, scikit-learn's
8x8 digits upsampled to 3x32x32 (no CIFAR download exists on this machine); and, on
request, resnet20 at random initialisation on N(0, 1) CIFAR-shaped inputs with random
labels, its BatchNorm running statistics estimated on those inputs.

    python bench/curvature.py                      # what `make bench` runs
    python bench/curvature.py --models cnn1d --repeats 5
    python bench/curvature.py --models resnet20-init --resnet-samples 256
    python bench/curvature.py --models cnn1d --peers          # flatscape and PyHessian only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.bundle import DatasetBundle  # noqa: E402
from distill.data import load_dataset  # noqa: E402
from distill.losses import causal_lm_loss  # noqa: E402
from distill.models import build_model  # noqa: E402
from distill.trainer import Recipe, fit, train_teacher  # noqa: E402
from landscape.curvature.eigen import lanczos  # noqa: E402
from landscape.curvature.measure import CurvatureRequest, measure_curvature  # noqa: E402
from landscape.curvature.pyhessian import pyhessian_session  # noqa: E402
from landscape.curvature.trace import hutchinson_trace, hutchpp_trace  # noqa: E402
from landscape.operators.batching import PRODUCT_BATCH, product_batches  # noqa: E402
from landscape.operators.hessian import HessianOperator  # noqa: E402


def clock(fn: Callable[[], object]) -> tuple[object, float, float]:
    """Result, wall seconds and CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


@dataclass
class Problem:
    """One benchmark case: what flatscape measures, and the same Hessian as the peers take it.

    The peers call ``criterion(model(x), y)`` with a class-index cross-entropy, so a
    language model reaches them through :class:`NextTokenLogits` with flattened next-token
    labels: the same mean token loss, hence the same Hessian, as flatscape's ``causal_lm``.
    """

    name: str
    note: str
    model: torch.nn.Module
    batches: list
    loss: Callable = F.cross_entropy
    peer_model: torch.nn.Module | None = None
    peer_batches: list | None = None

    def __post_init__(self) -> None:
        self.peer_model = self.peer_model or self.model
        self.peer_batches = self.peer_batches or self.batches


class NextTokenLogits(torch.nn.Module):
    """The wrapper PyHessian and curvlinops need: logits of positions 0..L-2, flattened."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.model(ids)[:, :-1]
        return logits.reshape(-1, logits.shape[-1])


def cnn1d_teacher(samples: int):
    bundle = load_dataset("mnist1d")
    model, meta = train_teacher(bundle, recipe=Recipe(epochs=30, lr=0.1), seed=0)
    x, y = bundle.train_eval.tensors
    note = (f"cnn1d MNIST-1D teacher, 30 epochs seed 0, test acc "
            f"{meta['metrics']['test_accuracy']:.3f}")  # fmt: skip
    return Problem("cnn1d", note, model.eval(), [(x[:samples], y[:samples])])


def gpt_teacher(samples: int):
    """The registry GPT trained on the tokens dataset by its default recipe (seed 0)."""
    bundle = load_dataset("tokens")
    model, meta = train_teacher(bundle, seed=0, loss="causal_lm")
    ids = bundle.train_eval.tensors[0][:samples]
    if len(ids) < samples:
        raise SystemExit(f"--gpt-samples {samples}: the tokens train split has {len(ids)}")
    parameters = sum(p.numel() for p in model.parameters())
    note = (f"gpt ({parameters:,} parameters) on the tokens dataset, default recipe seed 0, "
            f"test token accuracy {meta['metrics']['test_accuracy']:.3f}; causal_lm loss over "
            f"{samples} x {ids.shape[1] - 1} predicted tokens")  # fmt: skip
    model.eval()
    return Problem(
        "gpt", note, model, [(ids, ids)], loss=causal_lm_loss,
        peer_model=NextTokenLogits(model), peer_batches=[(ids, ids[:, 1:].reshape(-1))],
    )  # fmt: skip


def digits_as_cifar(split):
    """scikit-learn's 8x8 digits, bilinearly upsampled to 32x32 and copied to 3 channels."""
    x, y = split.tensors
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False)
    return TensorDataset(x.repeat(1, 3, 1, 1).contiguous(), y)


def resnet20_trained(samples: int):
    digits = load_dataset("digits")
    bundle = DatasetBundle(
        train=digits_as_cifar(digits.train),
        test=digits_as_cifar(digits.test),
        num_classes=10,
        input_shape=(3, 32, 32),
        description={"name": "digits upsampled to 3x32x32"},
    )
    x, y = bundle.train.tensors
    if samples > len(y):
        raise SystemExit(f"--resnet-samples {samples}: the digits train split has {len(y)}")
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10)
    metrics = fit(model, bundle, Recipe(epochs=15, lr=0.1, warmup_epochs=1), seed=0)
    note = (f"resnet20 (option A) trained 15 epochs (seed 0) on digits upsampled to "
            f"3x32x32, test acc {metrics['test_accuracy']:.3f}, train loss "
            f"{metrics['train_loss']:.4f}")  # fmt: skip
    return Problem("resnet20", note, model.eval(), [(x[:samples], y[:samples])])


def resnet20_random(samples: int):
    torch.manual_seed(0)
    model = build_model("resnet20")
    x = torch.randn(samples, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (samples,), generator=torch.Generator().manual_seed(2))
    for module in model.modules():  # running statistics = the statistics of these inputs
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(x)
    note = "resnet20 (option A), random init, N(0,1) CIFAR-shaped inputs, random labels"
    return Problem("resnet20-init", note, model.eval(), [(x, y)])


def hvp_costs(problem: Problem, repeats: int) -> dict[str, float]:
    """Median seconds of a gradient and of one HVP per engine, interleaved."""
    model, batches, loss = problem.model, problem.batches, problem.loss
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = batches[0]
    reuse = HessianOperator(model, loss, batches)
    kept = HessianOperator(model, loss, product_batches(x, y), keep_graphs=True)
    fresh = HessianOperator(model, loss, [(x, y)], hvp="forward_over_reverse")
    fresh.hvp = "double_backward"  # no cached graph: gradient graph rebuilt per product
    forward = HessianOperator(model, loss, batches, hvp="forward_over_reverse")
    v = torch.randn(reuse.dim, 1)
    block = torch.randn(reuse.dim, 4)
    peer = (problem.peer_model, F.cross_entropy, problem.peer_batches)
    with pyhessian_session(*peer) as (engine, _):
        module = sys.modules["pyhessian.hessian"]
        vector = [torch.randn_like(p) for p in engine.params]
        tasks = {
            "gradient (fwd+bwd)": lambda: torch.autograd.grad(loss(model(x), y), params),
            "double backward, graph reused": lambda: reuse.matmat(v),
            f"double backward, {PRODUCT_BATCH}-example graphs kept": lambda: kept.matmat(v),
            "double backward, graph rebuilt": lambda: fresh.matmat(v),
            "forward-over-reverse": lambda: forward.matmat(v),
            "double backward, 4 vectors batched (per vector)": lambda: reuse.matmat(block),
            "pyhessian hessian_vector_product": lambda: module.hessian_vector_product(
                engine.gradsH, engine.params, vector
            ),
        }
        times = {name: [] for name in tasks}
        for _ in range(repeats):
            for name, task in tasks.items():
                times[name].append(clock(task)[2])
    medians = {name: statistics.median(t) for name, t in times.items()}
    medians["double backward, 4 vectors batched (per vector)"] /= 4
    return medians


def flatscape_top(problem: Problem, k: int, seed: int, block_size: int = 1, split: bool = True):
    """As `flatscape hessian` runs by default: batches of 256 on a CPU, graphs kept."""
    batches = problem.batches
    if split:
        batches = product_batches(*batches[0])
    request = CurvatureRequest(top_k=k, tol=1e-3, seed=seed, block_size=block_size)
    operator = HessianOperator(problem.model, problem.loss, batches, keep_graphs=True)
    result = measure_curvature(operator, request)
    return result.eigen.eigenvalues.tolist(), result.eigen.matvecs


def curvlinops_top(model, batches, k: int, seed: int):
    """curvlinops' HessianLinearOperator through scipy's eigsh (ARPACK), tol 1e-3."""
    import numpy as np
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import LinearOperator, eigsh

    params = [p for p in model.parameters() if p.requires_grad]
    H = HessianLinearOperator(
        model, torch.nn.CrossEntropyLoss(), params, batches, check_deterministic=False
    ).to_scipy()
    count = [0]

    def matvec(v):
        count[0] += 1
        return H @ v

    operator = LinearOperator(H.shape, matvec=matvec, dtype=H.dtype)
    v0 = np.random.default_rng(seed).standard_normal(H.shape[0]).astype(H.dtype)
    values = eigsh(operator, k=k, which="LA", tol=1e-3, v0=v0, return_eigenvectors=False)
    return sorted(values.tolist(), reverse=True), count[0]


def eigenthings_top(model, batches, k: int, seed: int, steps: int):
    """hessian-eigenthings 1.0's Lanczos at a fixed number of steps (it has no stop rule
    that tests its residuals during the run: ``max_iter`` steps are always taken)."""
    import hessian_eigenthings as he

    operator = he.HessianOperator(model, batches, he.supervised_loss(F.cross_entropy))
    count = [0]
    matvec = operator.matvec

    def counted(v):
        count[0] += 1
        return matvec(v)

    operator.matvec = counted
    result = he.lanczos(operator, k=k, max_iter=steps, which="LA", seed=seed)
    return sorted(result.eigenvalues.tolist(), reverse=True), count[0]


def eigenthings_steps(model, batches, k: int, reference: list[float]) -> int:
    """The fewest Lanczos steps at which hessian-eigenthings reaches error <= 1e-3 in
    seed 0 (an oracle: it needs the truth, which a user does not have).

    Its ``lanczos`` runs ``max_iter`` steps from a seeded start with no restart, so the
    tridiagonal of an m-step run is the leading m x m block of a longer run's: one run of
    ``lanczos_tridiagonal`` (doubled until some prefix reaches 1e-3) tells every m.
    """
    import hessian_eigenthings as he
    from hessian_eigenthings.algorithms.lanczos import lanczos_tridiagonal

    operator = he.HessianOperator(model, batches, he.supervised_loss(F.cross_entropy))
    generator = torch.Generator(device="cpu").manual_seed(0)
    v0 = torch.randn(operator.size, dtype=operator.dtype, generator=generator)
    steps = 2 * k + 2
    while True:
        td = lanczos_tridiagonal(operator, v0.to(operator.device), steps, reorthogonalize=True)
        alphas, betas = td.alphas.double().cpu(), td.betas.double().cpu()
        for m in range(k, len(alphas) + 1):
            T = (
                torch.diag(alphas[:m])
                + torch.diag(betas[: m - 1], 1)
                + torch.diag(betas[: m - 1], -1)
            )
            values = torch.linalg.eigvalsh(T).flip(0)[:k].tolist()
            if max(abs(v - r) / abs(r) for v, r in zip(values, reference, strict=False)) <= 1e-3:
                return m
        if steps >= 200 or len(alphas) < steps:
            return steps
        steps *= 2


def pyhessian_top(model, batches, k: int, seed: int, tol: float = 1e-3):
    with pyhessian_session(model, F.cross_entropy, batches, seed=seed) as (engine, counter):
        values, _ = engine.eigenvalues(top_n=k, tol=tol, maxIter=100)
        return values, counter.count


MATCH_TOLS = (1e-4, 1e-5, 1e-6)


def pyhessian_matched_tol(model, batches, k: int, reference: list[float], seeds: int):
    """The largest PyHessian tol (1e-4, 1e-5, 1e-6) whose eigenvalues are within 1e-3 of
    the reference in every seed timed (an oracle, as for hessian-eigenthings: its tol is
    a relative change between iterations, not an error bound); None if none reaches it."""
    for tol in MATCH_TOLS:
        errors = []
        for seed in range(seeds):
            values, _ = pyhessian_top(model, batches, k, seed, tol)
            errors.append(max(abs(v - r) / abs(r) for v, r in zip(values, reference, strict=True)))
        if max(errors) <= 1e-3:
            return tol
    return None


def eigen_rows(problem: Problem, reference: list[float], repeats: int, ks: list[int], peers):
    """Interleaved repeats of every solver for each k; medians."""
    model, batches = problem.peer_model, problem.peer_batches  # the peers' view
    solvers = {}
    for k in ks:
        solvers[("flatscape lanczos", k)] = lambda s, k=k: flatscape_top(problem, k, s)
        solvers[("flatscape lanczos, one batch", k)] = lambda s, k=k: flatscape_top(
            problem, k, s, split=False
        )
        if k > 1 and "blocks" in peers:
            solvers[("flatscape lanczos, blocks of 2", k)] = lambda s, k=k: flatscape_top(
                problem, k, s, 2
            )
        solvers[(f"pyhessian eigenvalues(top_n={k})", k)] = lambda s, k=k: pyhessian_top(
            model, batches, k, s
        )
        matched = "pyhessian-matched" in peers and pyhessian_matched_tol(
            model, batches, k, reference[:k], repeats
        )
        if matched:
            solvers[(f"pyhessian, tol {matched:.0e} (error <= 1e-3)", k)] = (
                lambda s, k=k, tol=matched: pyhessian_top(model, batches, k, s, tol)
            )
        if "curvlinops" in peers:
            solvers[("curvlinops + scipy eigsh", k)] = lambda s, k=k: curvlinops_top(
                model, batches, k, s
            )
        if "eigenthings" in peers:
            steps = eigenthings_steps(model, batches, k, reference[:k])
            solvers[(f"hessian-eigenthings, {steps} steps", k)] = lambda s, k=k, steps=steps: (
                eigenthings_top(model, batches, k, s, steps)
            )
    runs = {key: [] for key in solvers}
    for seed in range(repeats):
        for key, solve in solvers.items():
            (values, hvps), wall, cpu = clock(lambda solve=solve, seed=seed: solve(seed))
            k = key[1]
            error = max(abs(v - r) / abs(r) for v, r in zip(values, reference[:k], strict=True))
            runs[key].append((wall, cpu, hvps, error, values))
    rows = []
    for (name, k), values in runs.items():
        rows.append({
            "solver": name, "k": k,
            "wall": statistics.median(v[0] for v in values),
            "cpu": statistics.median(v[1] for v in values),
            "hvps": statistics.median(v[2] for v in values),
            "hvps_range": (min(v[2] for v in values), max(v[2] for v in values)),
            "error": max(v[3] for v in values),
            "values": values[0][4],
        })  # fmt: skip
    return rows


def trace_rows(problem: Problem, budgets: list[int], repeats: int) -> list[dict]:
    """Spread over seeds (the RMS error of an unbiased estimator) at equal HVPs."""
    operator = HessianOperator(problem.model, problem.loss, problem.batches)
    rows = []
    for budget in budgets:
        for name, estimator in (("hutchinson", hutchinson_trace), ("hutchpp", hutchpp_trace)):
            results = [estimator(operator, budget, seed=s) for s in range(repeats)]
            estimates = [r.estimate for r in results]
            rows.append({
                "method": name, "hvps": budget, "mean": statistics.mean(estimates),
                "spread": statistics.stdev(estimates),
                "stderr": statistics.median(r.stderr for r in results),
            })  # fmt: skip
    return rows


def report(problem: Problem, repeats, trace_budgets, ks, hvp_repeats, peers) -> None:
    model, batches = problem.model, problem.batches
    samples = sum(len(y) for _, y in batches)
    dim = sum(p.numel() for p in model.parameters())
    print(f"\n## {problem.name}: {problem.note}; {dim:,} parameters, "
          f"{samples} samples in one batch")  # fmt: skip
    if hvp_repeats > 0:
        costs = hvp_costs(problem, hvp_repeats)
        unit = costs["gradient (fwd+bwd)"]
        print("\nHVP cost (median CPU seconds; units of one gradient)")
        for engine, seconds in costs.items():
            print(f"  {engine:<50} {seconds:8.4f} s  {seconds / unit:5.2f}")
    if not ks:
        return
    operator = HessianOperator(model, problem.loss, batches)
    tight = lanczos(operator, k=max(ks) + 1, tol=1e-5, max_matvecs=200, seed=123)
    reference = tight.eigenvalues.tolist()
    ratio = reference[1] / reference[0]
    values = ", ".join(f"{v:.5g}" for v in reference[: max(ks)])
    print(f"\nreference (Lanczos, tol 1e-5, {tight.matvecs} HVPs, converged "
          f"{tight.converged}): {values}; "
          f"lambda2/lambda1 = {ratio:.3f}")  # fmt: skip
    rows = eigen_rows(problem, reference, repeats, ks, peers)
    print(f"\nTop eigenvalues at tol 1e-3, medians over {repeats} seeds "
          "(relative CPU = solver / flatscape lanczos, same k)")  # fmt: skip
    header = f"  {'solver':<36} {'k':>2} {'wall s':>8} {'cpu s':>8} {'HVPs':>10} {'max rel err':>12} {'relative CPU':>15}"  # noqa: E501
    print(header)
    baseline = {row["k"]: row for row in rows if row["solver"] == "flatscape lanczos"}
    for row in rows:
        lo, hi = row["hvps_range"]
        relative = row["cpu"] / baseline[row["k"]]["cpu"]
        print(f"  {row['solver']:<36} {row['k']:>2} {row['wall']:8.2f} {row['cpu']:8.2f} "
              f"{row['hvps']:>4g} ({lo}-{hi}) {row['error']:12.2e} {relative:14.2f}x")  # fmt: skip
    print("  eigenvalues found with seed 0:")
    for row in rows:
        values = ", ".join(f"{v:.5g}" for v in row["values"])
        print(f"    {row['solver']:<36} k={row['k']}: {values}")
    if trace_budgets:
        print(f"\nTrace at equal HVPs: spread of the estimate over {repeats + 2} seeds (both "
              "unbiased, so this is the RMS error) and the median reported stderr")  # fmt: skip
        for row in trace_rows(problem, trace_budgets, repeats + 2):
            print(f"  {row['method']:<10} {row['hvps']:>4} HVPs  mean {row['mean']:10.4f}  "
                  f"spread {row['spread']:8.4f}  stderr {row['stderr']:8.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn1d", "resnet20", "gpt"],
                        choices=["cnn1d", "resnet20", "resnet20-init", "gpt"],
                        help="resnet20 = trained on CIFAR-shaped digits; resnet20-init = "
                        "random initialisation; gpt = the registry GPT on the tokens "
                        "dataset, causal_lm loss")  # fmt: skip
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--resnet-samples", type=int, default=1024,
                        help="resnet20 samples (random-init resnet20 at 1024 makes "
                        "PyHessian's top-5 take ~50 min on one CPU thread: use 256)")  # fmt: skip
    parser.add_argument("--gpt-samples", type=int, default=256, help="gpt sequences")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", nargs="*",
                        default=["curvlinops", "eigenthings", "pyhessian-matched"],
                        choices=["curvlinops", "eigenthings", "pyhessian-matched", "blocks"],
                        help="solvers besides flatscape and PyHessian at tol 1e-3 (blocks: "
                        "flatscape's Lanczos with blocks of 2; pyhessian-matched: PyHessian "
                        "at the largest tol that reaches error 1e-3 in every seed)")  # fmt: skip
    parser.add_argument("--resnet-repeats", type=int, default=1)
    parser.add_argument("--resnet-hvp-repeats", type=int, default=2,
                        help="repeats of the HVP-cost table (0 skips it)")  # fmt: skip
    parser.add_argument("--ks", type=int, nargs="*", default=[1, 5],
                        help="top-k values (none: only the HVP-cost table)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; times are CPU seconds of this process "
          "(wall seconds too: the machine may be shared)")  # fmt: skip
    if "cnn1d" in args.models:
        report(cnn1d_teacher(args.samples), args.repeats, [30, 90], args.ks,
               5 * args.repeats, args.peers)  # fmt: skip
    if "gpt" in args.models:
        report(gpt_teacher(args.gpt_samples), args.repeats, [30, 90], [1],
               5 * args.repeats, args.peers)  # fmt: skip
    resnets = {"resnet20": resnet20_trained, "resnet20-init": resnet20_random}
    for name, make in resnets.items():
        if name in args.models:
            report(make(args.resnet_samples), args.resnet_repeats, [], args.ks,
                   args.resnet_hvp_repeats, args.peers)  # fmt: skip


if __name__ == "__main__":
    main()
