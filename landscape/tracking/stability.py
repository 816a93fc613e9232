r"""The edge of stability: the sharpness above which gradient descent cannot stay stable.

On a quadratic with curvature :math:`\lambda`, gradient descent with step size :math:`\eta`
diverges once :math:`\lambda > 2 / \eta`; heavy-ball momentum :math:`\beta` (PyTorch's SGD:
:math:`v \leftarrow \beta v + g`, :math:`\theta \leftarrow \theta - \eta v`) moves the
threshold to :math:`(2 + 2\beta) / \eta`. Cohen et al. (2021) found full-batch training of
neural networks to raise :math:`\lambda_1` to this line and hover there.
"""

from __future__ import annotations

from landscape.errors import LandscapeInputError


def stability_threshold(lr: float, momentum: float = 0.0) -> float:
    r"""The largest stable sharpness: :math:`(2 + 2\beta) / \eta`, or :math:`2 / \eta`.

    Example:
        >>> stability_threshold(0.1), round(stability_threshold(0.1, momentum=0.9), 9)
        (20.0, 38.0)
    """
    if not lr > 0:
        raise LandscapeInputError(f"lr {lr}: the stability threshold needs a learning rate > 0")
    if not 0 <= momentum < 1:
        raise LandscapeInputError(f"momentum {momentum}: must lie in [0, 1)")
    return (2 + 2 * momentum) / lr
