"""Dropout as an op: the random mask is drawn inside `forward`, so a replay draws anew.

In training mode each element is kept with probability 1 - p and scaled by 1 / (1 - p), so
the expected output equals the input and eval mode can be the identity:

    mask = (u >= p) / (1 - p),  u ~ Uniform[0, 1) elementwise     (drawn from `rng`)
    y    = x * mask
    dL/dx = g * mask                                              (the same mask)

The mask is a function of the generator's state, not of the data, and the generator is a
keyword parameter: replaying the recorded op (`jit`, `fit`'s fast path) calls this same
`forward` with the same `rng` object, which draws the next mask exactly as the ordinary
engine would.
"""

from __future__ import annotations

import numpy as np

from .tensor import Function

__all__ = ["Dropout"]


class Dropout(Function):
    """x * mask with mask = (u >= p) / (1 - p), u drawn by rng.random_sample(x.shape).

    x: any shape (floating) -> the same shape. params: p in [0, 1), rng a
    np.random.RandomState. d/dx = g * mask.
    """

    name = "dropout"

    @staticmethod
    def forward(ctx, x, p, rng):
        keep = rng.random_sample(x.shape) >= p
        mask = keep.astype(x.dtype)
        mask *= np.asarray(1.0 / (1.0 - p), dtype=x.dtype)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved
        return g * mask

    @staticmethod
    def jvp(ctx, tx):
        (mask,) = ctx.saved
        return tx * mask
