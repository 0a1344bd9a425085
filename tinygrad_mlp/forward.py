"""Forward-mode differentiation: Jacobian-vector products.

`jvp(fn, primals, tangents)` evaluates `fn` while pushing a tangent through every op with
that op's `jvp` rule (in ops.py, beside its backward). One call gives J v for one
direction v: a full gradient of a scalar loss of P parameters needs P calls, where reverse
mode needs one backward. That is the lecture's case for backpropagation.
"""

from __future__ import annotations

import numpy as np

from . import tensor as _tensor
from .tensor import Tensor

__all__ = ["jvp"]


def jvp(fn, primals, tangents):
    """Return (fn(*primals), J v) where v is `tangents`, one array per primal.

    primals: Tensors, arrays or numbers; tangents: arrays of the primals' shapes
    (None for a primal held constant). The result's tangent is an ndarray of the
    output's shape.
    """
    if isinstance(primals, (Tensor, np.ndarray)) or np.isscalar(primals):
        primals, tangents = (primals,), (tangents,)
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primal(s) but {len(tangents)} tangent(s)")
    inputs = []
    for i, (p, t) in enumerate(zip(primals, tangents)):
        x = Tensor._const(p.data if isinstance(p, Tensor) else p)
        if t is not None:
            t = np.asarray(t, dtype=x.dtype)
            if t.shape != x.shape:
                raise ValueError(f"jvp: tangent {i} has shape {t.shape}, its primal has "
                                 f"shape {x.shape}")
            x._tangent = t
        inputs.append(x)
    with _tensor.forward_mode():
        out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"jvp: fn must return a Tensor, got {type(out).__name__}")
    tangent = out._tangent
    if tangent is None:
        tangent = np.zeros_like(out.data)
    return out, np.array(tangent)
