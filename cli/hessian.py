"""`flatscape hessian`: top Hessian eigenvalues, trace and spectral density of a checkpoint."""

from __future__ import annotations

import click
import torch
import torch.nn.functional as F

from cli._common import (
    apply_threads,
    check_output,
    device_option,
    force_option,
    progress_bar,
    quiet_option,
    resolve_device,
    threads_option,
    write_json,
)
from cli._loading import load_for_analysis
from landscape import distributed
from landscape.batching import product_batches
from landscape.curvature import CurvatureRequest, measure_curvature
from landscape.data_parallel import data_parallel
from landscape.errors import LandscapeInputError
from landscape.ggn import GGNOperator
from landscape.ggn_curvature import measure_ggn_curvature
from landscape.hessian import HessianOperator
from landscape.report import curvature_report, format_summary


@click.command("hessian")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--top-k", type=int, default=1, show_default=True, help="Number of top eigenvalues (0: none)."
)
@click.option(
    "--which",
    type=click.Choice(["largest", "smallest"]),
    default="largest",
    show_default=True,
    help="Largest or smallest algebraic eigenvalues (lanczos).",
)
@click.option("--trace", "trace", is_flag=True, help="Estimate the Hessian trace.")
@click.option(
    "--trace-method",
    type=click.Choice(["hutchpp", "hutchinson"]),
    default="hutchpp",
    show_default=True,
    help="Trace estimator (the pyhessian engine uses its own).",
)
@click.option(
    "--probes",
    type=int,
    default=99,
    show_default=True,
    help="Hessian-vector products the trace estimate spends.",
)
@click.option("--density", is_flag=True, help="Spectral density by stochastic Lanczos quadrature.")
@click.option(
    "--density-steps", type=int, default=100, show_default=True, help="Lanczos steps per SLQ probe."
)
@click.option("--density-probes", type=int, default=1, show_default=True, help="SLQ probes.")
@click.option(
    "--samples",
    type=int,
    default=1024,
    show_default=True,
    help="First N examples of the train split (dataset order, no augmentation).",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Examples per batch, each gradient graph rebuilt for every product (bounds "
    "memory) [default: on a CPU batches of 256, on a GPU one batch, every gradient graph "
    "built once and reused by every product].",
)
@click.option(
    "--engine",
    type=click.Choice(["lanczos", "power", "pyhessian"]),
    default="lanczos",
    show_default=True,
    help="Eigen solver: Lanczos, PyHessian's power iteration, or the pyhessian "
    "package itself (also for trace and density).",
)
@click.option(
    "--hvp",
    type=click.Choice(["auto", "double-backward", "forward-over-reverse"]),
    default=None,
    help="Hessian-vector product engine [default: double-backward on cpu, auto on cuda].",
)
@click.option(
    "--tol", type=float, default=1e-3, show_default=True, help="Relative eigenvalue tolerance."
)
@click.option(
    "--block-size",
    type=int,
    default=1,
    show_default=True,
    help="Vectors per batched Hessian-vector product.",
)
@click.option(
    "--bn-mode",
    type=click.Choice(["eval", "train"]),
    default="eval",
    show_default=True,
    help="BatchNorm running statistics (eval) or batch statistics.",
)
@click.option(
    "--operator",
    type=click.Choice(["hessian", "ggn"]),
    default="hessian",
    show_default=True,
    help="Curvature matrix: the Hessian, or its generalized Gauss-Newton part "
    "(J^T H_out J; softmax covariance for cross-entropy), which is PSD.",
)
@click.option("--float64", "float64", is_flag=True, help="Compute in float64 (about 2x slower).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random vectors.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the JSON report here ('-': stdout).",
)
@force_option
@quiet_option
@device_option
@threads_option
def hessian_command(
    checkpoint, top_k, which, trace, trace_method, probes, density, density_steps,
    density_probes, samples, batch_size, engine, hvp, tol, block_size, bn_mode, operator,
    float64, seed, json_path, force, quiet, device, threads,
):  # fmt: skip
    """Top Hessian eigenvalues, trace and spectral density of a checkpoint's train loss.

    The Hessian is that of the mean cross-entropy over the first --samples examples of
    the checkpoint's train split, in dataset order, without augmentation, with the model
    in eval mode. With --operator ggn the same solvers measure the generalized
    Gauss-Newton matrix instead (docs/sharpness.md).

    \b
    Example:
      flatscape hessian runs/teacher.safetensors --top-k 3 --trace --json runs/teacher.hessian.json
      flatscape hessian runs/teacher.safetensors --operator ggn --top-k 3
    """
    if samples < 1:
        raise LandscapeInputError(f"--samples {samples}: must be >= 1")
    if batch_size is not None and batch_size < 1:
        raise LandscapeInputError(f"--batch-size {batch_size}: must be >= 1")
    json_out = check_output(json_path, force)
    apply_threads(threads)
    torch_device = distributed.init_from_env(resolve_device(device))  # torchrun: join the job
    world = distributed.world_size()
    quiet = quiet or not distributed.is_main()
    request = CurvatureRequest(
        top_k=top_k, which=which, method=engine, tol=tol, trace=trace,
        trace_method=trace_method, probes=probes, density=density,
        density_steps=density_steps, density_probes=density_probes, seed=seed,
        block_size=block_size,
    )  # fmt: skip
    request.check()
    if operator == "ggn" and engine == "pyhessian":
        raise LandscapeInputError("--operator ggn: the pyhessian engine measures the Hessian only")
    if engine == "pyhessian" and world > 1:
        raise LandscapeInputError(
            "--engine pyhessian runs in one process; use lanczos or power under torchrun"
        )
    if operator == "ggn" and hvp is not None:
        raise LandscapeInputError(
            "--hvp chooses Hessian-vector products; drop it with --operator ggn"
        )
    hvp = hvp or ("double-backward" if torch_device.type == "cpu" else "auto")
    loaded = load_for_analysis(
        checkpoint, split="train", samples=samples, batch_size=batch_size or samples,
        device=torch_device,
    )  # fmt: skip
    batches, per_batch = loaded.batches, batch_size or samples
    if world > 1:  # each process holds a contiguous share of the data (docs/distributed.md)
        if batch_size is None:
            batches = [distributed.shard_examples(*loaded.batches[0])]
            per_batch = -(-loaded.samples // world)
        else:
            batches = distributed.shard_batches(loaded.batches)
    keep_graphs = None
    if batch_size is None and operator == "hessian" and engine != "pyhessian":
        # every gradient graph kept, in batches the device runs fastest (docs/curvature.md)
        batches = product_batches(*batches[0])
        per_batch, keep_graphs = len(batches[0][1]), True
    parallel = {}
    if world > 1:
        parallel["operator_factory"] = data_parallel(
            GGNOperator if operator == "ggn" else HessianOperator
        )
    dtype = torch.float64 if float64 else None
    with progress_bar(None, f"{operator} products", quiet, unit="mv") as bar:
        if operator == "ggn":
            result = measure_ggn_curvature(
                loaded.model, F.cross_entropy, batches, request, dtype=dtype,
                bn_mode=bn_mode, progress=bar.update, **parallel,
            )  # fmt: skip
        else:
            result = measure_curvature(
                loaded.model, F.cross_entropy, batches, request,
                hvp=hvp.replace("-", "_"), dtype=dtype, bn_mode=bn_mode, progress=bar.update,
                keep_graphs=keep_graphs, **parallel,
            )  # fmt: skip
    data = {
        "dataset": loaded.dataset_name,
        "split": loaded.split,
        "order": "first examples, dataset order, no augmentation",
        "batch_size": per_batch,
        "graphs_kept": bool(keep_graphs or len(batches) == 1)
        and result.hvp != "forward_over_reverse",
    }
    report = curvature_report(
        result, request, checkpoint=str(checkpoint), checkpoint_sha256=loaded.sha256,
        data=data, bn_mode=bn_mode,
    )  # fmt: skip
    report["operator"] = operator
    if world > 1:
        report["processes"] = world
    if not distributed.is_main():
        return
    write_json(json_out, report)
    click.echo(format_summary(report), err=str(json_path) == "-")


COMMANDS = [hessian_command]
