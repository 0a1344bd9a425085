"""Normalization ops: BatchNorm1d and LayerNorm, each fused, forward and backward together.

Both standardize x over some axes and then scale and shift it:

    mu = mean(x),  var = mean((x - mu)^2)          (over the normalized axes; biased)
    xhat = (x - mu) / sqrt(var + eps)
    y = gamma * xhat + beta

Batch norm normalizes each feature over the batch (axis 0 of x (N, C)); layer norm each
sample over its last dimensions. The backward of the standardization is the same closed
form in both, with M the number of elements each mean runs over and s = 1/sqrt(var + eps):

    dxhat = g * gamma
    dx    = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    dgamma = sum of g * xhat,   dbeta = sum of g    (over the axes gamma is broadcast along)

(mean(dxhat) comes from the path through mu, the xhat * mean(dxhat * xhat) term from the
path through var: both mu and var depend on every x; see docs/convolution.md.)
"""

from __future__ import annotations

import numpy as np

from .tensor import Function, _shape_str

__all__ = ["BatchNorm1d", "LayerNorm"]


def _standardize_jvp(tx, xhat, inv_std, axes):
    """The tangent of xhat = (x - mu) s for a tangent tx of x (the same closed form)."""
    return inv_std * (tx - tx.mean(axis=axes, keepdims=True)
                      - xhat * (tx * xhat).mean(axis=axes, keepdims=True))


def _affine_jvp(t_xhat, xhat, gamma, t_gamma, t_beta):
    """The tangent of y = gamma xhat + beta."""
    t = None if t_xhat is None else t_xhat * gamma
    if t_gamma is not None:
        t = t_gamma * xhat if t is None else t + t_gamma * xhat
    if t_beta is not None:
        t = np.broadcast_to(t_beta, xhat.shape) if t is None else t + t_beta
    return t


def _standardize_backward(g, gamma, xhat, inv_std, axes):
    """dx of y = gamma * xhat + beta, xhat standardized over `axes` (the closed form)."""
    dxhat = g * gamma
    return inv_std * (dxhat - dxhat.mean(axis=axes, keepdims=True)
                      - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))


class BatchNorm1d(Function):
    """Batch normalization of x (N, C) per feature, with running statistics.

    Inputs: x (N, C), gamma (C,), beta (C,), running_mean (C,), running_var (C,),
    num_batches_tracked (a 0-d integer count, as PyTorch keeps). params: training,
    momentum, eps.

    training: mu, var = the batch's mean and biased variance over axis 0; the running
    statistics are updated in place, as PyTorch does, with the unbiased variance:
        running_mean = (1 - momentum) running_mean + momentum mu
        running_var  = (1 - momentum) running_var  + momentum var * N / (N - 1)
    eval: mu, var = running_mean, running_var (constants: dx = g gamma s).
    y = gamma (x - mu) / sqrt(var + eps) + beta.   Backward: see the module docstring.
    """

    name = "batch_norm"
    no_grad_inputs = (3, 4, 5)

    @staticmethod
    def forward(ctx, x, gamma, beta, running_mean, running_var, num_batches_tracked,
                training, momentum, eps):
        if training:
            n = x.shape[0]
            if n < 2:
                raise ValueError(f"batch_norm: expected more than 1 value per feature in "
                                 f"training mode, got input {_shape_str(x.shape)}")
            mu = x.mean(axis=0)
            centered = x - mu
            var = (centered * centered).mean(axis=0)
            running_mean *= 1.0 - momentum  # in place: the buffers' own arrays
            running_mean += momentum * mu
            running_var *= 1.0 - momentum
            running_var += (momentum * n / (n - 1)) * var
            num_batches_tracked += 1
        else:
            centered = x - running_mean
            var = running_var
        inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
        xhat = centered * inv_std
        ctx.save_for_backward(xhat, gamma, inv_std)
        ctx.training = training
        return xhat * gamma + beta

    @staticmethod
    def backward(ctx, g):
        xhat, gamma, inv_std = ctx.saved
        need = ctx.needs_input_grad
        gx = None
        if need[0]:
            gx = (_standardize_backward(g, gamma, xhat, inv_std, 0) if ctx.training
                  else g * (gamma * inv_std))
        gg = (g * xhat).sum(axis=0) if need[1] else None
        gb = g.sum(axis=0) if need[2] else None
        return gx, gg, gb, None, None, None

    @staticmethod
    def jvp(ctx, tx, t_gamma, t_beta, *_running):
        xhat, gamma, inv_std = ctx.saved
        t_xhat = None
        if tx is not None:
            t_xhat = _standardize_jvp(tx, xhat, inv_std, 0) if ctx.training else tx * inv_std
        return _affine_jvp(t_xhat, xhat, gamma, t_gamma, t_beta)


class LayerNorm(Function):
    """Layer normalization: each sample standardized over its last k dimensions.

    Inputs: x (..., *normalized_shape), gamma and beta of normalized_shape. params: eps.
    y = gamma (x - mu) / sqrt(var + eps) + beta, mu and var (biased) over the last k axes.
    Backward: the module docstring's closed form over those axes; dgamma, dbeta summed over
    the leading (batch) axes.
    """

    name = "layer_norm"

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        axes = tuple(range(x.ndim - gamma.ndim, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        centered = x - mu
        var = (centered * centered).mean(axis=axes, keepdims=True)
        inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
        xhat = centered * inv_std
        ctx.save_for_backward(xhat, gamma, inv_std)
        ctx.axes = axes
        return xhat * gamma + beta

    @staticmethod
    def backward(ctx, g):
        xhat, gamma, inv_std = ctx.saved
        need = ctx.needs_input_grad
        batch_axes = tuple(range(xhat.ndim - gamma.ndim))
        gx = _standardize_backward(g, gamma, xhat, inv_std, ctx.axes) if need[0] else None
        gg = (g * xhat).sum(axis=batch_axes) if need[1] else None
        gb = g.sum(axis=batch_axes) if need[2] else None
        return gx, gg, gb

    @staticmethod
    def jvp(ctx, tx, t_gamma, t_beta):
        xhat, gamma, inv_std = ctx.saved
        t_xhat = None if tx is None else _standardize_jvp(tx, xhat, inv_std, ctx.axes)
        return _affine_jvp(t_xhat, xhat, gamma, t_gamma, t_beta)
