"""Finite-difference checking of gradients.

For f = fn(*inputs).sum() and each input x that requires grad, the central difference
(f(x + eps e_i) - f(x - eps e_i)) / (2 eps) approximates df/dx_i; it must agree with the
autodiff gradient to |analytic - numeric| <= atol + rtol |numeric| for every element i.
"""

from __future__ import annotations

import numpy as np

from .tensor import Context, Tensor, no_grad

__all__ = ["gradcheck", "numerical_gradient", "GradcheckError", "check_ops", "OpCheck"]


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


# ----------------------------------------------------------------------------- per op
class OpCheck:
    """One op of a graph checked on its own by `check_ops`.

    op: the op's name; index: its position among the graph's ops in creation order (the
    order they ran forward; backward runs them in reverse); ok; max_error: the largest
    |backward - finite differences| over the elements checked; detail: where it was
    worst (input, element, both values), or why the op was skipped.
    """

    __slots__ = ("op", "index", "ok", "max_error", "detail")

    def __init__(self, op, index, ok, max_error, detail=""):
        self.op, self.index, self.ok, self.max_error, self.detail = \
            op, index, ok, max_error, detail

    def __repr__(self):
        return (f"OpCheck(op={self.op!r}, index={self.index}, ok={self.ok}, "
                f"max_error={self.max_error:.3g}" + (f", detail={self.detail!r}" if self.detail
                                                      else "") + ")")


def graph_ops(output):
    """The op outputs (Tensors made by an op) of the graph behind `output`, in creation
    order: `graph_ops(t)[i]._ctx` is op i. Iterative, so deep graphs are fine."""
    if not isinstance(output, Tensor):
        raise TypeError(f"expected a Tensor, got {type(output).__name__}")
    found, seen, stack = [], set(), [output]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t._ctx is not None:
            found.append(t)
            stack.extend(t._ctx.parents)
    found.sort(key=lambda t: t._ctx.seq)
    return found


def _op_name(fn):
    return getattr(fn, "name", None) or fn.__name__.lower()


_ALL_ELEMENTS = 200  # inputs up to this size: every element is checked
_SAMPLE = 100  # larger inputs: this many random elements, plus _DIRECTIONS random directions
_DIRECTIONS = 3


def _run_forward(fn, template, arrays, kwargs, rngs):
    """fn.forward on a fresh Context (as `template`) -> (ctx, output array)."""
    for rng, state in rngs:  # an op that draws random numbers draws the same ones each time
        rng.set_state(state)
    ctx = Context(fn, template.parents, template.needs_input_grad)
    ctx.module = template.module
    ctx.forward_kwargs = kwargs
    out = np.asarray(fn.forward(ctx, *arrays, **kwargs))
    return ctx, out


def _float64_copies(ctx):
    return [p.data.astype(np.float64) if p.data.dtype.kind == "f" else p.data.copy()
            for p in ctx.parents]


def _random_states(kwargs):
    return [(v, v.get_state()) for v in kwargs.values() if isinstance(v, np.random.RandomState)]


def _ties(ctx, i, skip):
    """Inputs of `ctx` that take no gradient but are computed from input i by one op (a
    fused loss's a = sigmoid(z) beside z): [(k, that op's Context, positions of input i
    among its inputs, float64 copies of its inputs)]. Perturbing input i recomputes them."""
    found = []
    for k in skip:
        if k >= len(ctx.parents):
            continue
        pctx = ctx.parents[k]._ctx
        if pctx is None or pctx.freed:
            continue
        pos = [j for j, q in enumerate(pctx.parents) if q is ctx.parents[i]]
        if pos:
            found.append((k, pctx, pos, _float64_copies(pctx)))
    return found


def _check_one(t, index, eps, atol, rtol):
    from .tensor import _as_input_grad

    ctx = t._ctx
    fn = ctx.function
    name = _op_name(fn)
    if ctx.freed:
        raise RuntimeError(f"check_ops: op {index} ({name}) was freed by a backward: call "
                           f"check_ops before backward (or use backward(retain_graph=True))")
    kwargs = dict(getattr(ctx, "forward_kwargs", None) or {})
    rngs = _random_states(kwargs)
    skip = set(getattr(fn, "no_grad_inputs", ()) or ())
    arrays = _float64_copies(ctx)
    checked = [i for i, p in enumerate(ctx.parents)
               if p.requires_grad and p.data.dtype.kind == "f" and i not in skip]
    try:
        if not checked:
            return OpCheck(name, index, True, 0.0, "skipped: no input that takes a gradient")
        ctx64, out = _run_forward(fn, ctx, arrays, kwargs, rngs)
        if out.dtype != np.float64:
            return OpCheck(name, index, True, 0.0,
                           f"skipped: the output is {out.dtype} even from float64 inputs")
        seed = np.random.RandomState(index)
        weights = seed.normal(size=out.shape)  # check d(sum(weights * out))/d(input)
        grads = fn.backward(ctx64, weights.copy())
        if grads.__class__ is not tuple:
            grads = (grads,)
        if len(grads) != len(arrays):
            return OpCheck(name, index, False, float("inf"),
                           f"backward returned {len(grads)} gradient(s) for {len(arrays)} "
                           f"input(s)")
        worst, worst_bad, detail = 0.0, None, ""
        for i in checked:
            x = arrays[i]
            g = grads[i]
            if g is None:
                g = np.zeros(x.shape)
            try:
                g = np.asarray(_as_input_grad(np.asarray(g, dtype=np.float64), x, fn),
                               dtype=np.float64)
            except (ValueError, RuntimeError) as e:
                return OpCheck(name, index, False, float("inf"),
                               f"input {i}: backward gave a gradient of shape "
                               f"{np.shape(grads[i])} for an input of shape {x.shape} ({e})")
            ties = _ties(ctx, i, skip)

            def value_at(x_new, i=i, ties=ties):
                """sum(weights * forward) with input i (and what is computed from it)."""
                moved = list(arrays)
                moved[i] = x_new
                for k, pctx, pos, inputs in ties:
                    inputs = list(inputs)
                    for j in pos:
                        inputs[j] = x_new
                    pk = dict(getattr(pctx, "forward_kwargs", None) or {})
                    moved[k] = _run_forward(pctx.function, pctx, inputs, pk,
                                            _random_states(pk))[1]
                return float(np.sum(weights * _run_forward(fn, ctx, moved, kwargs, rngs)[1]))

            # probes: (what, direction); the derivative along it is <g, direction>
            if x.size <= _ALL_ELEMENTS:
                probes = [(k, None) for k in np.ndindex(x.shape)]
            else:
                flat = sorted(seed.choice(x.size, _SAMPLE, replace=False))
                probes = [(np.unravel_index(int(k), x.shape), None) for k in flat]
                probes += [(None, seed.normal(size=x.shape)) for _ in range(_DIRECTIONS)]
            for k, direction in probes:
                if direction is None:
                    direction = np.zeros(x.shape)
                    direction[k] = 1.0
                numeric = (value_at(x + eps * direction) - value_at(x - eps * direction)) \
                    / (2 * eps)
                analytic = float(np.vdot(g, direction))
                err = abs(analytic - numeric) if np.isfinite(analytic) else float("inf")
                # the detail names the worst failing element (a direction only if no
                # element fails: an element is what a student can look at)
                rank = (k is not None, err)
                if not err <= atol + rtol * abs(numeric) and (worst_bad is None
                                                               or rank > worst_bad):
                    worst_bad = rank
                    where = (f"element {tuple(int(j) for j in k)}" if k is not None
                             else "along a random direction")
                    detail = (f"input {i} of shape {x.shape}, {where}: backward gives "
                              f"{analytic:.6g}, finite differences {numeric:.6g}")
                worst = max(worst, err)
        return OpCheck(name, index, worst_bad is None, worst, detail)
    finally:
        for rng, state in rngs:
            rng.set_state(state)


def check_ops(output, *, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check every op of the graph that made `output` on its own, in float64.

    For each op (in creation order), its forward is rerun on float64 copies of the
    values it was called with, and its backward, given a fixed random output gradient G,
    is compared with central differences of sum(G * forward) for every input that takes
    a gradient: every element of an input of up to 200 elements; beyond, 100 random
    elements and 3 random directions. Integer inputs, inputs that do not require grad
    and an op's `no_grad_inputs` are not checked (a no-gradient input computed from a
    checked one by a single op, like a fused loss's a = sigmoid(z), is recomputed with it).
    Returns a list of OpCheck, one per op. The graph is not changed: call it before
    `output.backward()`, which still works afterwards.
    """
    return [_check_one(t, i, eps, atol, rtol) for i, t in enumerate(graph_ops(output))]
