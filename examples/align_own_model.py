"""Align one network's hidden units to another's (weight matching), on your own module.

Two copies of a small residual CNN with BatchNorm (your own ``nn.Module``: the
permutation groups are derived from its ``torch.fx`` graph, the residual add ties the
stream's channels into one group) are trained from different seeds on Gaussian-blob
images. ``landscape.align_to(student, teacher)`` permutes the student's channels so its
weights best match the teacher's. The script prints the parameter distance before and
after, how far the aligned student's outputs are from the unaligned one's (they compute
the same function), and the mean loss at the midpoint of the straight line between the
two networks, raw and aligned: the permutation symmetry is what separates them.

Run::

    python examples/align_own_model.py --epochs 30 --out-dir runs/align

A quick look::

    python examples/align_own_model.py --epochs 3 --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import landscape


class ResidualCNN(nn.Module):
    """conv-BN-ReLU stem, one residual block, global average pool, linear classifier."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width))
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of 1x8x8 images."""
        x = F.relu(self.stem(x))
        x = F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def blobs(samples: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded 1x8x8 images: a class's pattern plus noise."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn(classes, 1, 8, 8, generator=generator)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    return patterns[labels] + torch.randn(samples, 1, 8, 8, generator=generator), labels


def train(seed: int, data: tuple[torch.Tensor, torch.Tensor], args) -> ResidualCNN:
    """A network trained with SGD from initial weights drawn with ``seed``."""
    torch.manual_seed(seed)
    model = ResidualCNN(args.width, args.classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = data
    for _ in range(args.epochs):
        for start in range(0, len(y), 64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[start : start + 64]), y[start : start + 64]).backward()
            optimizer.step()
    return model.eval()


def midpoint_loss(first: dict, second: dict, args, data) -> float:
    """Mean cross-entropy of the weights halfway between two state dicts (eval mode)."""
    model = ResidualCNN(args.width, args.classes).eval()
    model.load_state_dict({k: (first[k] + second[k]) / 2 if first[k].is_floating_point()
                           else first[k] for k in first})  # fmt: skip
    with torch.no_grad():
        return float(F.cross_entropy(model(data[0]), data[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=None, help="Save the three state dicts.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = blobs(args.samples, args.classes, seed=0)
    teacher, student = train(1, data, args), train(2, data, args)
    spec = landscape.permutation_spec(student)
    result = landscape.align_to(student, teacher, spec)
    aligned = ResidualCNN(args.width, args.classes).eval()
    aligned.load_state_dict(result.state_dict)
    with torch.no_grad():
        change = float((aligned(data[0]) - student(data[0])).abs().max())
    raw_mid = midpoint_loss(teacher.state_dict(), student.state_dict(), args, data)
    aligned_mid = midpoint_loss(teacher.state_dict(), result.state_dict, args, data)

    print(f"groups: {len(spec.sizes)} ({', '.join(f'{g}={n}' for g, n in spec.sizes.items())})")
    print(f"distance before: {result.distance_before:.6f}")
    print(f"distance after: {result.distance_after:.6f}")
    print(f"largest output change: {change:.3e}")
    print(f"midpoint loss raw: {raw_mid:.6f}")
    print(f"midpoint loss aligned: {aligned_mid:.6f}")
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for name, state in (("teacher", teacher.state_dict()), ("student", student.state_dict()),
                            ("aligned", result.state_dict)):  # fmt: skip
            save_file({k: v.contiguous() for k, v in state.items()},
                      str(args.out_dir / f"{name}.safetensors"))  # fmt: skip


if __name__ == "__main__":
    main()
