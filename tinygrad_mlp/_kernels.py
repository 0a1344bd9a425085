"""Fast kernels that jit's compiled code calls in place of some ops' forward and backward.

Each computes exactly what the op in ops.py computes, with the same ufuncs in the same
order (so the same bits), but writes into arrays it has just made (`out=`) instead of
making a temporary per ufunc. The ops' own code stays the readable formula; this module
is only for speed, and only `jit` uses it (`FAST`: Function -> (forward, backward), with
the ops' signatures). tests/test_kernels.py checks every kernel against its op, bit for bit.

`INTO` holds backward kernels that write their gradients into arrays the compiled program
keeps from one call to the next (`buffers`: one slot per input, this thread's), instead of
allocating them anew at every step: a weight gradient of 784 x 100 floats is a fresh
mapping of memory, page faults and all, each time. A slot's array is reused only when its
reference count proves that nothing but the slot holds it any more (the `.grad` it became
was set to None by `zero_grad()`, or it was a temporary summed into another gradient);
otherwise (a user kept it, gradients accumulate without zero_grad) a new one is made.
"""

from __future__ import annotations

import sys

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


def reusable(buffers, i, shape, dtype):
    """Slot i's array if it has this shape and dtype and no one else holds it, else a new
    one (kept in the slot). C-contiguous, as `ndarray.dot(..., out=)` requires."""
    a = buffers[i]
    # references: the slot, `a`, and getrefcount's argument; any other is someone's
    if a is None or sys.getrefcount(a) != 3 or a.shape != shape or a.dtype != dtype:
        a = buffers[i] = np.empty(shape, dtype)
    return a


def dense_backward(ctx, g, buffers):
    """ops.Dense.backward: g W^T and x^T g by the same BLAS products (`dot`), written into
    the program's buffers (`out=`); the bias gradient as the op makes it."""
    x, w = ctx.saved
    dtype = x.dtype
    if (x.ndim != 2 or g.ndim != 2 or w.dtype != dtype or g.dtype != dtype
            or dtype.kind != "f" or dtype.itemsize < 4):
        return ops.Dense.backward(ctx, g)
    need = ctx.needs_input_grad
    gx = g.dot(w.T, out=reusable(buffers, 0, x.shape, dtype)) if need[0] else None
    gw = x.T.dot(g, out=reusable(buffers, 1, w.shape, dtype)) if need[1] else None
    if len(need) == 2:
        return gx, gw
    return gx, gw, (np.add.reduce(g, axis=0) if need[2] else None)


def l2_penalty_backward(ctx, g, buffers):
    """ops.L2Penalty.backward: (g lam) W per weight, written into the program's buffers."""
    scale = float(g) * ctx.lam
    return tuple(None if not need else
                 np.multiply(w, scale, out=reusable(buffers, i, w.shape, w.dtype))
                 if w.dtype.kind == "f" else scale * w
                 for i, (w, need) in enumerate(zip(ctx.saved, ctx.needs_input_grad)))


FAST = {ops.Sigmoid: (sigmoid_forward, sigmoid_backward)}
INTO = {ops.Dense: dense_backward, ops.L2Penalty: l2_penalty_backward}
