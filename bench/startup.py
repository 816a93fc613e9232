"""Start-up of the command line as a user pays it: whole processes, default threads.

Times, as medians of interleaved repeats (wall time of whole processes, the machine is
shared), against ``python -c "import torch"`` measured in the same run:

- ``flatscape --help`` and ``flatscape surface --help`` (import neither torch nor
  matplotlib);
- ``flatscape evaluate CKPT`` of an MNIST-1D checkpoint with the dataset cache warm (the
  second and later runs), and with ``--no-cache`` (MNIST-1D generated every time).

It trains a 2-epoch cnn1d teacher first (a few seconds) and uses a fresh cache folder.

Run: ``python bench/startup.py`` (``--repeats 5``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def seconds(command: list[str]) -> float:
    """Wall time of one whole process (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="flatscape-startup-"))
    os.environ["FLATSCAPE_CACHE"] = str(folder / "cache")
    flatscape = str(BIN / "flatscape")
    checkpoint = str(folder / "teacher.safetensors")
    subprocess.run([flatscape, "train", "--epochs", "2", "--out", checkpoint, "-q"], check=True)
    subprocess.run([flatscape, "evaluate", checkpoint], capture_output=True, check=True)
    commands = {
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "flatscape --help": [flatscape, "--help"],
        "flatscape surface --help": [flatscape, "surface", "--help"],
        "flatscape evaluate CKPT (cache warm)": [flatscape, "evaluate", checkpoint],
        "flatscape --no-cache evaluate CKPT": [flatscape, "--no-cache", "evaluate", checkpoint],
    }
    times = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, command in commands.items():
            times[name].append(seconds(command))
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians['python -c "import torch"']
    print("| command | median wall s | ratio to import torch |\n|---|---|---|")
    for name, value in medians.items():
        print(f"| `{name}` | {value:.2f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
