"""`flatscape export`: a surface file as ParaView .vtp, CSV rows or .npz arrays."""

from __future__ import annotations

import click

from cli._common import force_option
from cli.outputs import OutputPlan


@click.command()
@click.argument("surface", type=click.Path(dir_okay=False))
@click.option("--vtp", type=click.Path(dir_okay=False), help="ParaView PolyData file (.vtp).")
@click.option("--csv", type=click.Path(dir_okay=False), help="One row per grid point.")
@click.option("--npz", type=click.Path(dir_okay=False), help="numpy arrays, as in the .h5.")
@click.option(
    "--key",
    metavar="KEY",
    help="The value that lifts the VTP's points, e.g. test_loss.  [default: train_loss]",
)
@click.option("--log", is_flag=True, help="VTP height ln(value + 0.1), as loss-landscape's.")
@click.option("--zmax", type=float, help="Clip VTP heights above this value.")
@click.option("--partial", is_flag=True, help="Export an unfinished surface; pending points NaN.")
@force_option
def export(surface, vtp, csv, npz, key, log, zmax, partial, force):
    """Write a surface file as ParaView .vtp, CSV rows or .npz arrays.

    The .vtp holds the grid points lifted to the --key value (loss-landscape's
    h52vtp.py format) and one quadrilateral per grid cell (a line segment per
    interval of a 1D curve); points whose value is not finite, and their cells,
    are left out. CSV and .npz hold every value the file has, NaN where a point
    diverged or is pending, and the done mask.

    \b
    Examples:
      flatscape export surf.h5 --vtp surf.vtp --zmax 5 --log
      flatscape export surf.h5 --csv surf.csv --npz surf.npz
    """
    from landscape.surface.export import export_surface

    plan = OutputPlan(force)
    for flag, out in (("--vtp", vtp), ("--csv", csv), ("--npz", npz)):
        plan.file(flag, out)
    plan.read("SURFACE", surface)
    plan.check()
    written = export_surface(
        surface, vtp=vtp, csv=csv, npz=npz, key=key, log=log, zmax=zmax, partial=partial
    )
    for exported in written:
        counts = [_count(exported.points, "point")]
        if exported.cells is not None:
            counts.append(_count(exported.cells, "cell"))
        click.echo(f"wrote {exported.path} ({', '.join(counts)})")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
