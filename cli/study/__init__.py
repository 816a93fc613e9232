"""The self-distillation study: experiments over teachers and students, for CLI and Python.

The only package that imports both ``distill`` (training, checkpoints) and ``landscape``
(measuring any module): the commands ``reproduce`` and ``compare`` and the planes of
``surface`` are each one call into it, and a notebook user calls the same functions::

    from cli.study import Experiment, run_experiment, compare_checkpoints
    report = run_experiment(Experiment.from_preset("quick", seeds=1), "runs/demo")

The public names, by group (``cli.study.__all__``; each is imported on first use, so
``import cli.study`` itself is cheap):

Experiments (``flatscape reproduce``)
    Experiment, PRESETS, ModelSpec, plan, variant, run_experiment, train_model,
    measure_model, measure_ensemble, add_matched_curvature, contour, seed_planes,
    read_stamp
Each student of a reproduction as a pair with its seed's teacher
    pair_teachers, add_pair_measures, measure_pair
Sweep (``reproduce --preset sweep``)
    SweepGrid, check_grid_document, run_sweep, calibrate, estimate, Rates, Cell,
    measure_checkpoint, matched_curvature, summarise, best_recipe, noise_floor,
    write_sweep_report
Claims and reports
    CLAIMS, claims_table, verdict, claim_cell, rise_then_fall, write_report,
    generation_table, measures_of, save_lines, pair_section
Does flatness explain the gain? (Kendall tau across pairs)
    Pair, change, gain, pairs_from_records, sweep_pairs, GainSettings, flatness_vs_gain,
    flatness_vs_gain_lines, flatness_vs_gain_figure, RATIO_MEASURES, PAIR_MEASURES
Planes of a family
    plane_report, plane_lines, load_checkpoint_plane, load_trajectory_plane, mark_lines,
    plane_axes, check_plane_grid, check_family
Comparison (``flatscape compare``)
    compare_checkpoints, load_models, reference_index, comparison_plane,
    add_plane_and_plots, write_plots, comparison_columns, comparison_tables,
    comparison_summary, per_layer_text, checkpoint_names
Teacher and student as a pair (``compare --connectivity``)
    ConnectivityRequest, pair_measures, add_connectivity, path_record, agreement_record,
    curve_record, connectivity_lines
A student aligned to its teacher (``flatscape align``, ``surface --plane --align``)
    align_checkpoint, align_model, alignment_line
A checkpoint's curvature (``flatscape hessian``)
    checkpoint_curvature, CurvatureSettings
A checkpoint's sharpness (``flatscape sharpness``)
    checkpoint_sharpness, sharpness_lines, DEFAULT_RHO
A checkpoint's loss surface (``flatscape surface``)
    checkpoint_surface
Sharpness while training (``train``/``distill --track-sharpness``)
    TrackingSettings, TrainingSharpness, training_sharpness
Measurement cache (one for the runner and the sweep)
    Measurement, measured, cache_file, canonical_json
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # Experiments
    "Experiment": "cli.study.experiment",
    "PRESETS": "cli.study.experiment",
    "ModelSpec": "cli.study.experiment",
    "plan": "cli.study.experiment",
    "variant": "cli.study.experiment",
    "run_experiment": "cli.study.experiment",
    "train_model": "cli.study.experiment",
    "measure_model": "cli.study.experiment",
    "measure_ensemble": "cli.study.experiment",
    "add_matched_curvature": "cli.study.experiment",
    "contour": "cli.study.experiment",
    "seed_planes": "cli.study.experiment",
    "read_stamp": "cli.study.experiment",
    # Each student of a reproduction as a pair with its seed's teacher
    "pair_teachers": "cli.study.student_pairs",
    "add_pair_measures": "cli.study.student_pairs",
    "measure_pair": "cli.study.student_pairs",
    # Sweep
    "SweepGrid": "cli.study.sweep",
    "check_grid_document": "cli.study.sweep",
    "run_sweep": "cli.study.sweep",
    "calibrate": "cli.study.sweep",
    "estimate": "cli.study.sweep",
    "Rates": "cli.study.sweep",
    "Cell": "cli.study.sweep",
    "measure_checkpoint": "cli.study.sweep",
    "matched_curvature": "cli.study.sweep",
    "summarise": "cli.study.sweep",
    "best_recipe": "cli.study.sweep",
    "noise_floor": "cli.study.sweep",
    "write_sweep_report": "cli.study.sweep",
    # Claims and reports
    "CLAIMS": "cli.study.claims",
    "claims_table": "cli.study.claims",
    "verdict": "cli.study.claims",
    "claim_cell": "cli.study.claims",
    "rise_then_fall": "cli.study.claims",
    "write_report": "cli.study.report",
    "generation_table": "cli.study.report",
    "measures_of": "cli.study.report",
    "save_lines": "cli.study.report",
    "pair_section": "cli.study.report",
    # Does flatness explain the gain?
    "Pair": "cli.study.flatness_gain",
    "change": "cli.study.flatness_gain",
    "gain": "cli.study.flatness_gain",
    "pairs_from_records": "cli.study.flatness_gain",
    "sweep_pairs": "cli.study.flatness_gain",
    "GainSettings": "cli.study.flatness_gain",
    "flatness_vs_gain": "cli.study.flatness_gain",
    "flatness_vs_gain_lines": "cli.study.flatness_gain",
    "flatness_vs_gain_figure": "cli.study.flatness_gain",
    "RATIO_MEASURES": "cli.study.flatness_gain",
    "PAIR_MEASURES": "cli.study.flatness_gain",
    # Planes of a family
    "plane_report": "cli.study.planes",
    "plane_lines": "cli.study.planes",
    "load_checkpoint_plane": "cli.study.planes",
    "load_trajectory_plane": "cli.study.planes",
    "mark_lines": "cli.study.planes",
    "plane_axes": "cli.study.planes",
    "check_plane_grid": "cli.study.planes",
    "check_family": "cli.study.planes",
    # Comparison
    "compare_checkpoints": "cli.study.comparison",
    "load_models": "cli.study.comparison",
    "reference_index": "cli.study.comparison",
    "comparison_plane": "cli.study.comparison",
    "write_plots": "cli.study.comparison",
    "add_plane_and_plots": "cli.study.comparison",
    "comparison_columns": "cli.study.comparison",
    "comparison_tables": "cli.study.comparison",
    "comparison_summary": "cli.study.comparison",
    "per_layer_text": "cli.study.comparison",
    "checkpoint_names": "cli.study.comparison",
    # Teacher and student as a pair
    "ConnectivityRequest": "cli.study.connectivity",
    "pair_measures": "cli.study.connectivity",
    "add_connectivity": "cli.study.connectivity",
    "path_record": "cli.study.connectivity",
    "agreement_record": "cli.study.connectivity",
    "curve_record": "cli.study.connectivity",
    "connectivity_lines": "cli.study.connectivity",
    # A student aligned to its teacher
    "align_checkpoint": "cli.study.alignment",
    "align_model": "cli.study.alignment",
    "alignment_line": "cli.study.alignment",
    # A checkpoint's curvature
    "checkpoint_curvature": "cli.study.curvature",
    "CurvatureSettings": "cli.study.curvature",
    # A checkpoint's sharpness
    "checkpoint_sharpness": "cli.study.sharpness",
    "sharpness_lines": "cli.study.sharpness",
    "DEFAULT_RHO": "cli.study.sharpness",
    # A checkpoint's loss surface
    "checkpoint_surface": "cli.study.surface",
    # Sharpness while training
    "TrackingSettings": "cli.study.tracking",
    "TrainingSharpness": "cli.study.tracking",
    "training_sharpness": "cli.study.tracking",
    # Measurement cache
    "Measurement": "cli.study.cache",
    "measured": "cli.study.cache",
    "cache_file": "cli.study.cache",
    "canonical_json": "cli.study.cache",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cli.study' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
