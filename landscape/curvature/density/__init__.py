"""Spectral density of a curvature operator by stochastic Lanczos quadrature."""

from landscape.curvature.density.slq import SpectralQuadrature, gaussian_density, slq

__all__ = ["SpectralQuadrature", "gaussian_density", "slq"]
