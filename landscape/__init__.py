"""Loss-landscape analysis for any `torch.nn.Module`.

Hessian-vector products, top eigenvalues (Lanczos, power iteration), trace (Hutchinson,
Hutch++), spectral density, filter-normalized directions, loss surfaces in HDF5 and
their plots. Works on any model, any loss and any iterable of ``(inputs, targets)``
batches; imports neither ``distill`` nor ``cli``.
"""
