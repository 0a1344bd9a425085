"""Optimizers: update parameters in place from their `.grad`.

SGD:  v <- momentum v + g;  p <- p - lr v   (plain p <- p - lr g when momentum = 0)
Adam: m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
      p <- p - lr m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)
Both follow PyTorch's formulas. `lr` is an attribute and may be changed between steps
(learning-rate schedules).

Subnormal state is flushed to zero every FLUSH_EVERY steps. A parameter whose gradient stays
exactly 0 (the weights of a dead ReLU unit) has its momentum decay by b1 each step until it
is stuck at a subnormal number (in float32, 0.9 x 5.6e-45 rounds back to 5.6e-45),
and some arithmetic on subnormals is slower: here, Adam's division over a 784 x 256 weight
with one entry in seven stuck (the dead units of the fast MNIST recipe) took 1.5 times as
long. The flushed values are below 1.2e-38 (float32): the weight updates they would make
are below 1e-30, too small to change any weight above 1e-23 in magnitude.
"""

from __future__ import annotations

import math

import numpy as np

from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "one_cycle"]

FLUSH_EVERY = 64  # steps between flushes of subnormal optimizer state to zero


def _flush_subnormals(state, scratch):
    """Set the entries of `state` whose magnitude is below the dtype's smallest normal
    number to zero, in place (`scratch`: an array like it, overwritten)."""
    tiny = np.finfo(state.dtype).tiny
    np.abs(state, out=scratch)
    np.putmask(state, scratch < tiny, 0)


class Optimizer:
    """Holds the parameters; `step()` updates them, `zero_grad()` clears their gradients."""

    def __init__(self, params, lr):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got no parameters to optimize "
                             f"(pass model.parameters())")
        seen, unique = set(), []
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a "
                                f"{type(p).__name__}, not a Tensor")
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: parameter {i} of shape {p.shape} "
                                 f"does not require grad")
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        self.params = unique
        self.lr = _check_positive(type(self).__name__, "lr", lr)
        self.steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        raise NotImplementedError


def _check_positive(owner, label, value, allow_zero=False):
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}: {label} must be a finite number {bound}, got {value}")
    return value


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (heavy-ball) momentum."""

    def __init__(self, params, lr, momentum=0.0):
        super().__init__(params, lr)
        self.momentum = _check_positive("SGD", "momentum", momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"SGD: momentum must be < 1, got {self.momentum}")
        self._velocity = [None] * len(self.params)
        self._buffers = [None] * len(self.params)

    def step(self):
        lr, mu = self.lr, self.momentum
        scale = None  # lr as a 0-d array of the parameter's dtype: a cheaper ufunc operand
        buffers = self._buffers  # per parameter: (its data array, a scratch array like it)
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if mu:
                v = self._velocity[i]
                if v is None:
                    v = self._velocity[i] = g.astype(p.dtype, copy=True)
                else:
                    v *= mu
                    v += g
                g = v
            data = p.data
            buf = buffers[i]
            if buf is None or buf[0] is not data:
                buf = buffers[i] = (data, np.empty_like(data))
            scratch = buf[1]
            if mu and self.steps % FLUSH_EVERY == FLUSH_EVERY - 1 and v.shape == scratch.shape:
                _flush_subnormals(v, scratch)
            if g.dtype is scratch.dtype and g.shape == scratch.shape:
                if scale is None or scale.dtype is not scratch.dtype:
                    scale = np.array(lr, dtype=scratch.dtype)
                data -= np.multiply(g, scale, scratch)  # in place, no new array
            else:
                data -= lr * g
        self.steps += 1


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, PyTorch's formulas.

    The state is kept scaled, M = m / (1 - b1) and U = v / (1 - b2), so that each update is
    M <- b1 M + g and U <- b2 U + g^2, and the step, rewritten with c = sqrt((1 - b2) /
    (1 - b2^t)), is p -= lr (1 - b1) / ((1 - b1^t) c) * M / (sqrt(U) + eps / c): the same
    numbers in 10 passes over each parameter instead of 13.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr)
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        self.betas = (b1, b2)
        self.eps = _check_positive("Adam", "eps", eps)
        self._m = [np.zeros_like(p.data) for p in self.params]
        self._v = [np.zeros_like(p.data) for p in self.params]
        self._tmp = [np.empty_like(p.data) for p in self.params]
        self._t = [0] * len(self.params)

    def step(self):
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            self._t[i] += 1
            t = self._t[i]
            M, U, tmp = self._m[i], self._v[i], self._tmp[i]
            dtype = tmp.dtype
            M *= np.array(b1, dtype)
            M += g
            np.multiply(g, g, out=tmp)
            U *= np.array(b2, dtype)
            U += tmp
            c = math.sqrt((1.0 - b2) / (1.0 - b2 ** t))
            np.sqrt(U, out=tmp)
            tmp += np.array(self.eps / c, dtype)
            np.divide(M, tmp, out=tmp)
            tmp *= np.array(self.lr * (1.0 - b1) / ((1.0 - b1 ** t) * c), dtype)
            p.data -= tmp
            if t % FLUSH_EVERY == 0:
                _flush_subnormals(M, tmp)
                _flush_subnormals(U, tmp)
        self.steps += 1


def one_cycle(step, total_steps, max_lr, *, pct_start=0.25, div_factor=25.0,
              final_div_factor=1e4):
    """The one-cycle learning rate at `step` (0-based) of `total_steps`.

    Rises from max_lr/div_factor to max_lr over the first pct_start of the steps (cosine),
    then falls to max_lr/(div_factor*final_div_factor) (cosine), as PyTorch's OneCycleLR
    (anneal_strategy='cos') given the same pct_start (PyTorch's default is 0.3).
    """
    if total_steps <= 0:
        raise ValueError(f"one_cycle: total_steps must be > 0, got {total_steps}")
    initial = max_lr / div_factor
    final = initial / final_div_factor
    warm = max(1.0, pct_start * total_steps - 1)  # a float, as in PyTorch
    step = min(max(step, 0), total_steps - 1)
    if step <= warm:
        frac, lo, hi = step / warm, initial, max_lr
    else:
        frac = (step - warm) / max(1, total_steps - 1 - warm)
        lo, hi = max_lr, final
    return hi + (lo - hi) * (1 + math.cos(math.pi * frac)) / 2
