"""Finite-difference checking of gradients.

For f = fn(*inputs).sum() and each input x that requires grad, the central difference
(f(x + eps e_i) - f(x - eps e_i)) / (2 eps) approximates df/dx_i; it must agree with the
autodiff gradient to |analytic - numeric| <= atol + rtol |numeric| for every element i.
"""

from __future__ import annotations

import numpy as np

from .tensor import Tensor, no_grad

__all__ = ["gradcheck", "numerical_gradient", "GradcheckError"]


class GradcheckError(AssertionError):
    """An autodiff gradient disagrees with its finite-difference estimate."""


def _checked_inputs(inputs):
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i}{_label(x)} is {x.dtype}; finite differences need "
                f"float64 (float32 is too imprecise): build it with dtype=np.float64")
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad, nothing to check")
    return checked


def _label(x):
    return f" ({x.name!r})" if getattr(x, "name", None) else ""


def numerical_gradient(fn, *inputs, eps=1e-6):
    """Central-difference gradients of fn(*inputs).sum(), one array per grad-requiring input."""
    grads = []
    for i in _checked_inputs(inputs):
        x = inputs[i]
        grads.append(_numeric(fn, inputs, x, eps))
    return grads


def _numeric(fn, inputs, x, eps):
    grad = np.zeros(x.data.shape, dtype=x.data.dtype)
    data = x.data  # perturbed in place, element by element (any memory layout)
    with no_grad():
        for k in np.ndindex(data.shape):
            orig = data[k]
            data[k] = orig + eps
            plus = float(np.sum(fn(*inputs).data))
            data[k] = orig - eps
            minus = float(np.sum(fn(*inputs).data))
            data[k] = orig
            grad[k] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check autodiff gradients of fn(*inputs).sum() against central differences.

    Returns True, or raises GradcheckError naming the input, the element and both values.
    Inputs that require grad must be float64; their `.grad` is left as it was.
    """
    checked = _checked_inputs(inputs)
    saved = {i: inputs[i].grad for i in checked}
    try:
        for i in checked:
            inputs[i].grad = None
        out = fn(*inputs)
        if not isinstance(out, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
        if not out.requires_grad:
            raise GradcheckError("gradcheck: the output does not depend on any input that "
                                 "requires grad")
        out.sum().backward()
        analytic = {i: (inputs[i].grad if inputs[i].grad is not None
                        else np.zeros_like(inputs[i].data)) for i in checked}
    finally:
        for i in checked:
            inputs[i].grad = saved[i]
    for i in checked:
        x = inputs[i]
        numeric = _numeric(fn, inputs, x, eps)
        a = analytic[i]
        bad = np.abs(a - numeric) > atol + rtol * np.abs(numeric)
        if bad.any() or not np.all(np.isfinite(a)):
            idx = np.unravel_index(int(np.argmax(bad | ~np.isfinite(a))), x.shape)
            idx = tuple(int(j) for j in idx)
            raise GradcheckError(
                f"gradcheck: input {i}{_label(x)} of shape {x.shape}, element {idx}: "
                f"autodiff gives {float(a[idx])!r}, "
                f"finite differences give {float(numeric[idx])!r} "
                f"({int(bad.sum())} of {bad.size} elements disagree beyond atol={atol}, "
                f"rtol={rtol})")
    return True
