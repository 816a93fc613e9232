"""`flatscape align`: a student with its hidden units permuted to match its teacher's."""

from __future__ import annotations

import click

from cli._common import force_option, json_option, threads_option
from cli.outputs import OutputPlan, write_json


@click.command()
@click.argument("student", type=click.Path(dir_okay=False))
@click.option(
    "--to",
    "teacher",
    type=click.Path(dir_okay=False),
    required=True,
    help="The teacher's checkpoint: STUDENT's units are matched to its units.",
)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The .safetensors.")
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the order in which permutation groups are visited.",
)
@click.option(
    "--model",
    "model_spec",
    metavar="SPEC",
    help="Your code (file.py:callable) again, for checkpoints made from it.",
)
@json_option("the summary", stdout=True)
@force_option
@threads_option
def align(student, teacher, out, seed, model_spec, json_path, force, threads):
    """Permute STUDENT's hidden units to best match its teacher's; function unchanged.

    Weight matching (Ainsworth et al. 2022, Git Re-Basin): coordinate descent over the
    permutation groups, each step a linear assignment, until none lowers the distance
    between the two models' parameters. Groups are derived from the model's torch.fx
    graph (chains of Linear/Conv/BatchNorm/LayerNorm, residual adds tying groups) or
    declared by the registry model (cnn1d, gpt); a module that cannot be permuted is
    refused, by name. OUT keeps STUDENT's header and adds aligned_to (the teacher's
    SHA-256) and alignment (the parameter distance before and after).

    \b
    Example:
      flatscape align runs/sd/gen1.safetensors --to runs/teacher.safetensors \\
          --out runs/sd/gen1.aligned.safetensors
    """
    from cli._common import apply_threads
    from cli.study.alignment import align_checkpoint, alignment_line

    apply_threads(threads)
    plan = OutputPlan(force)
    out = plan.file("--out", out)
    json_path = plan.file("--json", json_path)
    plan.read("STUDENT", student)
    plan.read("--to", teacher)
    if model_spec and ".py:" in model_spec:
        plan.read("--model", model_spec.rsplit(":", 1)[0])
    plan.check()
    summary = align_checkpoint(student, teacher, out, seed=seed, named_model=model_spec)
    click.echo(alignment_line(summary), err=str(json_path) == "-")
    write_json(json_path, summary)
