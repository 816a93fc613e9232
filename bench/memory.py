"""Graph memory under a budget: peak RSS and eigenvalues with and without ``max_memory``.

Each configuration runs in its own process (so ``ru_maxrss`` is its own peak): resnet20
(option A) at random initialisation, in eval mode, on N(0, 1) CIFAR-shaped inputs with
random labels, ``landscape.model_curvature(top_k=1)`` as ``flatscape hessian`` runs it
(batches of 256 on a CPU, graphs kept within the budget). Prints the budget, the bytes
the kept graphs held, the examples kept, the peak RSS, the top eigenvalue and the time.

    python bench/memory.py                           # 2048 examples: no limit, then 3GB
    python bench/memory.py --examples 6000 --budgets auto
    python bench/memory.py --operator ggn --examples 1024 --budgets none 2GB
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
from distill.models import build_model
from landscape.curvature.model import model_curvature
from landscape.operators.memory import parse_size
torch.set_num_threads(1)
torch.manual_seed(0)
examples, budget, operator = {examples}, {budget!r}, {operator!r}
model = build_model("resnet20").eval()
x, y = torch.randn(examples, 3, 32, 32), torch.randint(0, 10, (examples,))
max_memory = None if budget == "none" else budget if budget == "auto" else parse_size(budget)
start = time.perf_counter()
result = model_curvature(model, torch.nn.functional.cross_entropy, [(x, y)], top_k=1,
                         max_memory=max_memory, operator=operator)
print(json.dumps({{"eigenvalues": result.eigenvalues, "memory": result.memory,
                  "matvecs": result.matvecs, "seconds": time.perf_counter() - start}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--budgets", nargs="+", default=["none", "3GB"])
    parser.add_argument("--operator", choices=["hessian", "ggn"], default="hessian")
    args = parser.parse_args()
    print(f"resnet20 random init, {args.examples} CIFAR-shaped examples, {args.operator} "
          "top-1, one thread")  # fmt: skip
    print(f"{'max_memory':>10} {'budget':>10} {'graphs':>10} {'kept':>6} {'peak RSS':>10} "
          f"{'top-1':>12} {'products':>8} {'seconds':>8}")  # fmt: skip
    runs = []
    for budget in args.budgets:
        code = CHILD.format(root=str(ROOT), examples=args.examples, budget=budget,
                            operator=args.operator)  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            print(f"{budget:>10} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        run = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(run)
        memory = run["memory"]
        gib = {k: (v or 0) / 2**30 for k, v in memory.items()}
        limit = "none" if memory["budget"] is None else f"{gib['budget']:.2f} GiB"
        kept = memory["kept_examples"]
        print(f"{budget:>10} {limit:>10} {gib['graph_bytes']:7.2f} GiB {kept:>6} "
              f"{gib['peak']:6.2f} GiB {run['eigenvalues'][0]:12.6g} {run['matvecs']:>8} "
              f"{run['seconds']:8.0f}")  # fmt: skip
    if len(runs) > 1:
        first = runs[0]["eigenvalues"][0]
        worst = max(abs(r["eigenvalues"][0] - first) / abs(first) for r in runs[1:])
        print(f"largest relative difference of top-1 from the first run: {worst:.1e}")


if __name__ == "__main__":
    main()
