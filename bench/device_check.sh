#!/usr/bin/env bash
# The CUDA paths on a GPU machine, in a few minutes: train a step, hessian, surface
# (against the same command on the CPU), and a 1-process NCCL group under torchrun.
# Prints each check and its result; exits 1 on the first failure.
#
#   bash bench/device_check.sh            # from the repository root; PYTHON=python3 by default
#   DEVICE=cpu bash bench/device_check.sh # a dry run of the same steps on a CPU (gloo)
#
# Needs torch with CUDA, numpy, scipy, h5py, click, safetensors, mnist1d, scikit-learn,
# tqdm (matplotlib is not used). Run it whenever a GPU machine is lent; never required.
set -euo pipefail
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export FLATSCAPE_CACHE=${FLATSCAPE_CACHE:-$(mktemp -d)}
work=$(mktemp -d)
fs() { "$PYTHON" -m cli.main "$@"; }
step() { printf '\n== %s\n' "$*"; }
start=$(date +%s)
DEVICE=${DEVICE:-cuda}

step "torch sees $DEVICE"
"$PYTHON" - "$DEVICE" <<'PY'
import sys, torch
if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
    print(torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))
else:
    print(torch.__version__, "dry run on the CPU")
PY

step "train: 2 epochs of the MNIST-1D teacher on $DEVICE"
fs train --dataset mnist1d --epochs 2 --seed 0 --device "$DEVICE" --quiet \
    --out "$work/teacher.safetensors" --json "$work/train.json"
"$PYTHON" -c "import json; m = json.load(open('$work/train.json')); print({k: v for k, v in m.items() if 'acc' in k or 'loss' in k})"

step "hessian on $DEVICE and on cpu: top-3 and Hutch++ trace, same checkpoint"
for run in "dev $DEVICE" "ref cpu"; do
    set -- $run
    fs hessian "$work/teacher.safetensors" --top-k 3 --trace --samples 1024 \
        --device "$2" --quiet --json "$work/hessian.$1.json"
done
"$PYTHON" - "$work" "$DEVICE" <<'PY'
import json, sys
dev, cpu = (json.load(open(f"{sys.argv[1]}/hessian.{d}.json")) for d in ("dev", "ref"))
a, b = dev["eigenvalues"], cpu["eigenvalues"]
print(sys.argv[2], a, dev["hvp"], dev["matvecs"], "products\ncpu ", b, cpu["matvecs"], "products")
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
print(f"largest relative difference {worst:.2e} (both within tol 1e-3 of the truth: <= 2e-3)")
assert worst <= 2e-3, worst
PY

step "surface on $DEVICE and on cpu: 11 x 11, 1024 examples"
for run in "dev $DEVICE" "ref cpu"; do
    set -- $run
    fs surface "$work/teacher.safetensors" --x -1:1:11 --y -1:1:11 --samples 1024 \
        --device "$2" --quiet --out "$work/surface.$1.h5"
done
"$PYTHON" - "$work" "$DEVICE" <<'PY'
import sys, h5py, numpy as np
cuda, cpu = (h5py.File(f"{sys.argv[1]}/surface.{d}.h5", "r") for d in ("dev", "ref"))
key = "train_loss"
a, b = np.asarray(cuda[key]), np.asarray(cpu[key])
print(f"{key}: min {b.min():.4f} max {b.max():.4f}; largest |device - cpu| {np.abs(a - b).max():.2e}")
assert np.isfinite(a).all() and np.abs(a - b).max() <= 1e-3 * np.abs(b).max()
PY

step "torchrun, 1 process (NCCL on cuda, gloo on cpu): hessian --top-k 1"
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 1 -m cli.main hessian \
    "$work/teacher.safetensors" --top-k 1 --samples 1024 --device "$DEVICE" --quiet \
    --json "$work/hessian.nccl.json"
"$PYTHON" - "$work" "$DEVICE" <<'PY'
import json, sys
group = json.load(open(f"{sys.argv[1]}/hessian.nccl.json"))
alone = json.load(open(f"{sys.argv[1]}/hessian.dev.json"))
a, b = group["eigenvalues"][0], alone["eigenvalues"][0]
print(f"top-1 under torchrun {a:.6g}, without {b:.6g}")
assert abs(a - b) <= 2e-3 * abs(b), (a, b)
PY

printf '\nall device checks passed in %s s\n' "$(( $(date +%s) - start ))"
