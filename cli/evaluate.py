"""`flatscape evaluate`: loss and accuracy of a checkpoint on its dataset's splits."""

from __future__ import annotations

import click

from cli._common import (
    apply_threads,
    device_option,
    force_option,
    json_option,
    resolve_device,
    source_options,
    sources_from,
    threads_option,
)
from cli.outputs import OutputPlan, write_json


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--split", type=click.Choice(["train", "test", "both"]), default="test", show_default=True
)
@source_options
@json_option("the numbers")
@force_option
@device_option
@threads_option
def evaluate(checkpoint, split, json_path, force, device, threads, **options):
    """Mean cross-entropy and accuracy of CHECKPOINT on its dataset (no augmentation).

    CHECKPOINT is a flatscape checkpoint, or another trainer's file (a state dict, a
    Lightning .ckpt, a torchdistill checkpoint, a .safetensors) with --model and data.

    \b
    Examples:
      flatscape evaluate runs/teacher.safetensors --split both --json eval.json
      flatscape evaluate last.ckpt --model mynet.py:Net --data-file data.npz
    """
    from distill.sources import open_checkpoint
    from distill.trainer import TOKEN_LOSSES, require_training_labels
    from distill.trainer import evaluate as evaluate_model
    from distill.user_data import check_model_fits

    apply_threads(threads)
    sources = sources_from(options)
    plan = OutputPlan(force)
    json_path = plan.file("--json", json_path)
    plan.read_checkpoints("CHECKPOINT", checkpoint)
    plan.read_sources(sources)
    plan.check()
    model, meta, bundle = open_checkpoint(
        checkpoint, device=resolve_device(device), sources=sources
    )
    loss = meta.get("loss", "cross_entropy")  # a token model's, recorded by train --loss
    require_training_labels(bundle, loss, "evaluate")
    check_model_fits(model, bundle, "evaluate")
    splits = ["train", "test"] if split == "both" else [split]
    report = {"checkpoint": str(checkpoint)}
    for name in splits:
        data = bundle.train_eval if name == "train" else bundle.test
        report[name] = evaluate_model(model, data, loss_fn=TOKEN_LOSSES.get(loss))
        r = report[name]
        click.echo(f"{name}: loss {r['loss']:.6f}  accuracy {r['accuracy']:.4f}  (n={r['n']})")
    write_json(json_path, report)
