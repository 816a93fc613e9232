"""`flatscape import`: another trainer's checkpoint as a flatscape one."""

from __future__ import annotations

import click

from cli._common import (
    force_option,
    json_option,
    source_options,
    sources_from,
)
from cli.outputs import OutputPlan, write_json


@click.command("import")
@click.argument("foreign", type=click.Path(dir_okay=False))
@source_options
@click.option(
    "--generation",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="0 for a teacher (compare's reference), N for a student of generation N.",
)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The .safetensors.")
@json_option("the metadata")
@force_option
def import_command(foreign, generation, out, json_path, force, **options):
    """Turn another trainer's checkpoint into a flatscape one, with full provenance.

    FOREIGN is a state dict, a container holding one (state_dict, model,
    model_state_dict, net, module, or --state-key), a PyTorch Lightning .ckpt, a
    torchdistill checkpoint or a plain .safetensors; it is read without unpickling code.
    --model names its network and --dataset, --data or --data-file its data. OUT records
    the model spec and kwargs (and the source file's SHA-256 for your code), the data,
    FOREIGN's SHA-256 and layout, and the train/test loss and accuracy, so later commands
    need no more flags; a model from your code is imported again only when --model
    names it.

    \b
    Examples:
      flatscape import last.ckpt --model mynet.py:Net --data-file data.npz --out t.safetensors
      flatscape import resnet20.pth --model resnet20 --dataset cifar10 --out t.safetensors
    """
    from distill.sources import import_checkpoint

    sources = sources_from(options)
    plan = OutputPlan(force)
    out = plan.file("--out", out)
    json_path = plan.file("--json", json_path)
    plan.read("FOREIGN", foreign)
    plan.read_sources(sources)
    plan.check()
    meta = import_checkpoint(foreign, out, sources, generation)
    metrics, source = meta["metrics"], meta["imported_from"]
    click.echo(
        f"{out}: {meta['arch']} from {foreign} ({source['format']}"
        + (f", key {source['key']!r}" if source.get("key") else "")
        + (f", prefix {source['stripped']!r} removed" if source.get("stripped") else "")
        + f"); test accuracy {metrics['test_accuracy']:.4f}, train loss "
        f"{metrics['train_loss']:.4f}"
    )
    write_json(json_path, meta)
