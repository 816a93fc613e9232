"""What differentiating a model twice needs: an attention kernel with a double backward.

``torch.nn.functional.scaled_dot_product_attention`` picks a fused kernel (flash, memory
efficient) whose backward has no derivative of its own, so a Hessian-vector product
through it fails (``derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward
is not implemented``). Every graph that is differentiated twice (Hessian products, the GGN's
output Jacobians, kept gradient graphs) is therefore built with the math kernel, which is
plain differentiable operations; forward-only work (surfaces, evaluation, sharpness values)
keeps the fast kernels. An op of the model's own that has no double backward becomes one
line naming it and the workaround.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape.errors import LandscapeInputError

ATTENTION = "math kernel in second derivatives, fast kernels elsewhere"
"""What reports say about ``scaled_dot_product_attention``."""

_MISSING = re.compile(r"derivative for (\S+) is not implemented|(once_differentiable)")


@contextmanager
def twice_differentiable() -> Iterator[None]:
    """Build graphs with the math attention kernel; an op without double backward is one line.

    Raises:
        LandscapeInputError: an op of the model (a fused attention it calls directly, a
            custom autograd function marked ``once_differentiable``) has no second
            derivative.
    """
    with sdpa_kernel(SDPBackend.MATH):
        try:
            yield
        except RuntimeError as err:
            found = _MISSING.search(str(err))
            if found is None:
                raise
            op = found.group(1) or "a custom autograd function marked once_differentiable"
            raise LandscapeInputError(
                f"the model's {op} has no second derivative, which curvature products need; "
                "call torch.nn.functional.scaled_dot_product_attention or plain operations "
                "instead (Hugging Face: attn_implementation='eager'; timm: TIMM_FUSED_ATTN=0)"
            ) from err
