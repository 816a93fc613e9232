"""Loss-landscape analysis for any ``torch.nn.Module``, any loss and any DataLoader.

One call each for what a user does (the same defaults as the command line)::

    import landscape
    result = landscape.model_curvature(model, F.cross_entropy, loader, top_k=5, trace=True)
    result.eigenvalues, result.trace.estimate, result.eigen.residuals
    landscape.loss_surface(model, F.cross_entropy, loader, "surf.h5", x_range="-1:1:51",
                           y_range="-1:1:51")
    landscape.plot_surfaces(["surf.h5"], "surf.pdf", kind="contour")
    landscape.sharpness_report(model, F.cross_entropy, batches, rho=0.05)

The public names, by group (``landscape.__all__``; each is imported on first use, so
``import landscape`` itself is cheap):

Operators
    CurvatureOperator, DenseOperator, DifferenceOperator, MeanLossOperator,
    HessianOperator, GGNOperator, residual_operator, make_operator, DataParallelOperator,
    BlockOperator, FisherOperator, ParameterFilter
Solvers
    lanczos, lanczos_extremes, power_iteration, hutchinson_trace, hutchpp_trace, slq,
    EigenResult, TraceResult, SpectralQuadrature
Measurements
    model_curvature, measure_curvature, data_parallel_curvature, CurvatureRequest,
    CurvatureResult, curvature_report, ggn_split, GGNSplit, fit_temperature,
    TemperatureScaled, temperature_matched_curvature, per_layer_curvature, LayerCurvature,
    plot_per_layer, resampled_curvature
Surfaces
    loss_surface, SurfaceResult, random_direction, interpolation_direction,
    hessian_directions, filter_normalize, SurfaceEvaluator, SurfaceStore, plot_surfaces,
    export_surface, checkpoint_plane, trajectory_plane, Plane, eigen_map
Sharpness
    sharpness_report, average_sharpness, worst_sharpness, PerturbedLoss
Tracking (sharpness while training)
    SharpnessTracker, stability_threshold
Comparison
    profile_model, ProfileSettings, basin_width, with_changes, to_markdown, to_csv
Statistics across pairs
    kendall_tau, tau_with_interval, TauResult, granulated_tau, GranulatedTau,
    paired_test, PairedTest
Pairs (a teacher and its student)
    align_to, Alignment, PermutationSpec, permutation_spec, apply_permutations,
    UnpermutableModelError, linear_path, PathValues, path_values, bezier_curve,
    CurveSettings, CurveResult, function_agreement, Agreement, layer_cka, linear_cka
Models' inputs and outputs
    call_model, model_outputs, select_output
Errors
    LandscapeInputError

``landscape`` imports neither ``distill`` nor ``cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # Operators
    "CurvatureOperator": "landscape.operators.base",
    "DenseOperator": "landscape.operators.base",
    "DifferenceOperator": "landscape.operators.base",
    "MeanLossOperator": "landscape.operators.mean_loss",
    "HessianOperator": "landscape.operators.hessian",
    "GGNOperator": "landscape.operators.ggn",
    "residual_operator": "landscape.operators.ggn",
    "make_operator": "landscape.operators.kinds",
    "DataParallelOperator": "landscape.distributed.operator",
    "BlockOperator": "landscape.operators.base",
    "FisherOperator": "landscape.operators.fisher",
    "ParameterFilter": "landscape.operators.mean_loss",
    # Solvers
    "lanczos": "landscape.curvature.eigen.lanczos",
    "lanczos_extremes": "landscape.curvature.eigen.lanczos",
    "power_iteration": "landscape.curvature.eigen.power",
    "EigenResult": "landscape.curvature.eigen.result",
    "hutchinson_trace": "landscape.curvature.trace.hutchinson",
    "hutchpp_trace": "landscape.curvature.trace.meyer2020hutch",
    "TraceResult": "landscape.curvature.trace.result",
    "slq": "landscape.curvature.density.slq",
    "SpectralQuadrature": "landscape.curvature.density.slq",
    # Measurements
    "model_curvature": "landscape.curvature.model",
    "measure_curvature": "landscape.curvature.measure",
    "CurvatureRequest": "landscape.curvature.measure",
    "CurvatureResult": "landscape.curvature.measure",
    "data_parallel_curvature": "landscape.distributed.operator",
    "curvature_report": "landscape.curvature.report",
    "ggn_split": "landscape.curvature.gauss_newton",
    "GGNSplit": "landscape.curvature.gauss_newton",
    "fit_temperature": "landscape.curvature.temperature",
    "TemperatureScaled": "landscape.curvature.temperature",
    "temperature_matched_curvature": "landscape.curvature.temperature",
    "per_layer_curvature": "landscape.curvature.per_layer",
    "LayerCurvature": "landscape.curvature.per_layer",
    "plot_per_layer": "landscape.curvature.per_layer",
    "resampled_curvature": "landscape.curvature.resampling",
    # Surfaces
    "loss_surface": "landscape.surface.loss_surface",
    "SurfaceResult": "landscape.surface.loss_surface",
    "random_direction": "landscape.surface.directions",
    "interpolation_direction": "landscape.surface.directions",
    "hessian_directions": "landscape.surface.directions",
    "filter_normalize": "landscape.surface.directions",
    "checkpoint_plane": "landscape.surface.plane",
    "trajectory_plane": "landscape.surface.plane",
    "Plane": "landscape.surface.plane",
    "eigen_map": "landscape.surface.eigenmap",
    "SurfaceEvaluator": "landscape.surface.evaluate",
    "SurfaceStore": "landscape.surface.store",
    "plot_surfaces": "landscape.surface.plot",
    "export_surface": "landscape.surface.export",
    # Sharpness
    "sharpness_report": "landscape.sharpness.report",
    "average_sharpness": "landscape.sharpness.average",
    "worst_sharpness": "landscape.sharpness.worst",
    "PerturbedLoss": "landscape.sharpness.objective",
    # Tracking
    "SharpnessTracker": "landscape.tracking.tracker",
    "stability_threshold": "landscape.tracking.stability",
    # Comparison
    "profile_model": "landscape.compare.profile",
    "ProfileSettings": "landscape.compare.profile",
    "basin_width": "landscape.compare.profile",
    "with_changes": "landscape.compare.table",
    "to_markdown": "landscape.compare.table",
    "to_csv": "landscape.compare.table",
    # Statistics across pairs
    "kendall_tau": "landscape.compare.rank_correlation",
    "tau_with_interval": "landscape.compare.rank_correlation",
    "TauResult": "landscape.compare.rank_correlation",
    "granulated_tau": "landscape.compare.rank_correlation",
    "GranulatedTau": "landscape.compare.rank_correlation",
    "paired_test": "landscape.compare.paired_test",
    "PairedTest": "landscape.compare.paired_test",
    # Pairs (a teacher and its student)
    "align_to": "landscape.pairs.align",
    "Alignment": "landscape.pairs.align",
    "PermutationSpec": "landscape.pairs.permutation",
    "permutation_spec": "landscape.pairs.graph_spec",
    "apply_permutations": "landscape.pairs.permutation",
    "UnpermutableModelError": "landscape.pairs.permutation",
    "linear_path": "landscape.pairs.path",
    "PathValues": "landscape.pairs.path",
    "path_values": "landscape.pairs.path",
    "bezier_curve": "landscape.pairs.bezier",
    "CurveSettings": "landscape.pairs.bezier",
    "CurveResult": "landscape.pairs.bezier",
    "function_agreement": "landscape.pairs.agreement",
    "Agreement": "landscape.pairs.agreement",
    "layer_cka": "landscape.pairs.agreement",
    "linear_cka": "landscape.pairs.agreement",
    # Models' inputs and outputs
    "call_model": "landscape._types",
    "model_outputs": "landscape._types",
    "select_output": "landscape._types",
    # Errors
    "LandscapeInputError": "landscape.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
