"""Fast kernels that jit's compiled code calls in place of some ops' forward and backward.

Each computes exactly what the op in ops.py computes, with the same ufuncs in the same
order (so the same bits), but writes into arrays it has just made (`out=`) instead of
making a temporary per ufunc. The ops' own code stays the readable formula; this module
is only for speed, and only `jit` uses it (`FAST`: Function -> (forward, backward), with
the ops' signatures). tests/test_kernels.py checks every kernel against its op, bit for bit.
"""

from __future__ import annotations

import numpy as np

from . import ops


def _bound(dtype):
    return 250.0 if dtype == np.float64 else (11.0 if dtype == np.float16 else 88.0)


def sigmoid_forward(ctx, z):
    """ops.Sigmoid.forward: 1 / (1 + exp(-clip(z))), one array, four ufuncs in place."""
    if z.dtype.kind != "f":
        return ops.Sigmoid.forward(ctx, z)
    bound = _bound(z.dtype)
    t = np.clip(z, -bound, bound)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.add(t, 1.0, out=t)
    np.divide(1.0, t, out=t)
    ctx.save_for_backward(t)
    return t


def sigmoid_backward(ctx, g):
    """ops.Sigmoid.backward: g * (a * (1 - a)), in one fresh array (g is not changed)."""
    a = ctx.saved[0]
    d = np.subtract(1.0, a)
    np.multiply(a, d, out=d)
    if g.dtype != d.dtype or g.shape != d.shape:
        return g * d
    np.multiply(g, d, out=d)
    return d


FAST = {ops.Sigmoid: (sigmoid_forward, sigmoid_backward)}
