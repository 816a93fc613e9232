"""Running curvature and surfaces on the processes of a ``torchrun`` job (docs/distributed.md)."""
