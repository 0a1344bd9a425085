"""One `Function` per op: forward, backward (vector-Jacobian product) and jvp side by side.

Conventions. `forward(ctx, *arrays, **params)` gets ndarrays and returns an ndarray.
`backward(ctx, g)` gets the gradient of the loss with respect to the output (shape of the
output) and returns one gradient per array input (None where `ctx.needs_input_grad` says
it is not needed). A gradient may keep the broadcast shape: the engine sums it back to
the input's shape. Backward rules never modify `g` in place. `jvp(ctx, *tangents)` is the
forward-mode rule: input tangents (None means zero) -> output tangent.

Besides the primitive ops there are fused ones where the fused form is the natural unit
and is both faster and more accurate: `Dense` (x @ W + b), `SigmoidBinaryCrossEntropy`
(the lecture's delta_out = a - y), `SoftmaxCrossEntropy`, `L2Penalty`.
"""

from __future__ import annotations

import numpy as np

from .tensor import Function, _shape_str

_SMALL = 256  # losses up to this size: one ufunc (logaddexp) beats vectorised passes

# ----------------------------------------------------------------------------- helpers


def _add(*terms):
    """Sum of the terms that are not None (None if all are)."""
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    return out


def _axes(axis, ndim, op):
    """Normalise `axis` (None, int or tuple; negative allowed) to a sorted tuple."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"{op}: axis {a} is out of range for an input with {ndim} "
                             f"dimension(s)")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def _keep(g, axes, keepdims):
    """Give a reduced gradient back its reduced axes (size 1) so it broadcasts."""
    return g if keepdims else np.expand_dims(g, axes)


def _broadcast_error(op, a, b):
    return ValueError(f"{op}: shapes {_shape_str(a.shape)} and {_shape_str(b.shape)} "
                      f"cannot be broadcast together")


def _binary(op, fn, a, b):
    try:
        return fn(a, b)
    except ValueError:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise _broadcast_error(op, a, b) from None
        raise


# ----------------------------------------------------------------------------- arithmetic


class Add(Function):
    """a + b (broadcasting). d/da = g, d/db = g."""

    name = "add"

    @staticmethod
    def forward(ctx, a, b):
        return _binary("add", np.add, a, b)

    @staticmethod
    def backward(ctx, g):
        return g, g

    @staticmethod
    def jvp(ctx, ta, tb):
        return _add(ta, tb)


class Sub(Function):
    """a - b. d/da = g, d/db = -g."""

    name = "sub"

    @staticmethod
    def forward(ctx, a, b):
        return _binary("sub", np.subtract, a, b)

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        return _add(ta, None if tb is None else -tb)


class Mul(Function):
    """a * b. d/da = g b, d/db = g a."""

    name = "mul"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _binary("mul", np.multiply, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        return (g * b if na else None), (g * a if nb else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved
        return _add(None if ta is None else ta * b, None if tb is None else a * tb)


class Div(Function):
    """a / b. d/da = g / b, d/db = -g a / b^2."""

    name = "div"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _binary("div", np.true_divide, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        ga = g / b if na else None
        gb = -g * a / (b * b) if nb else None
        return ga, gb

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved
        return _add(None if ta is None else ta / b, None if tb is None else -a * tb / (b * b))


class Neg(Function):
    """-a."""

    name = "neg"

    @staticmethod
    def forward(ctx, a):
        return np.negative(a)

    @staticmethod
    def backward(ctx, g):
        return -g

    @staticmethod
    def jvp(ctx, ta):
        return -ta


class Pow(Function):
    """a ** p for a number p. d/da = g p a^(p-1)."""

    name = "pow"

    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        p = np.asarray(exponent, dtype=a.dtype) if a.dtype.kind == "f" else exponent
        if exponent == 2:
            return a * a
        return np.power(a, p)

    @staticmethod
    def _dout(ctx):
        (a,) = ctx.saved
        p = ctx.exponent
        if p == 2:
            return 2 * a
        if p == 1:
            return np.ones_like(a)
        if p == 0:  # d(a^0)/da = 0 everywhere, also at a = 0 (not 0 * a^-1 = nan)
            return np.zeros_like(a)
        return p * np.power(a, np.asarray(p - 1, dtype=a.dtype))

    @staticmethod
    def backward(ctx, g):
        return g * Pow._dout(ctx)

    @staticmethod
    def jvp(ctx, ta):
        return ta * Pow._dout(ctx)


class Cast(Function):
    """a.astype(dtype); the gradient is cast back."""

    name = "cast"

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.src = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.src)

    @staticmethod
    def jvp(ctx, ta):
        return ta


# ----------------------------------------------------------------------------- linear algebra


class MatMul(Function):
    """a @ b with NumPy's matmul rules (1-D operands, batched stacks).

    2-D: (n, k) @ (k, m) -> (n, m); d/da = g b^T, d/db = a^T g.
    """

    name = "matmul"

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: scalar operands are not allowed (shapes "
                             f"{_shape_str(a.shape)} and {_shape_str(b.shape)}); use *")
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim >= 2 else b.shape[0]
        if ka != kb:
            raise ValueError(f"matmul: shapes {_shape_str(a.shape)} and {_shape_str(b.shape)} "
                             f"do not align ({ka} != {kb})")
        ctx.save_for_backward(a, b)
        try:
            return np.matmul(a, b)
        except ValueError:
            raise ValueError(f"matmul: shapes {_shape_str(a.shape)} and {_shape_str(b.shape)} "
                             f"have batch dimensions that cannot be broadcast") from None

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if a.ndim == 1 and b.ndim == 1:          # dot product: g is a scalar
            ga = g * b if na else None
            gb = g * a if nb else None
        elif a.ndim == 1:                        # (k,) @ (..., k, m) -> (..., m)
            if na:
                ga = np.matmul(b, g[..., None])[..., 0]
            if nb:
                gb = a[:, None] * g[..., None, :]
        elif b.ndim == 1:                        # (..., n, k) @ (k,) -> (..., n)
            if na:
                ga = g[..., None] * b
            if nb:
                gb = np.matmul(np.swapaxes(a, -1, -2), g[..., None])[..., 0]
        else:
            if na:
                ga = np.matmul(g, np.swapaxes(b, -1, -2))
            if nb:
                gb = np.matmul(np.swapaxes(a, -1, -2), g)
        return ga, gb

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved
        return _add(None if ta is None else np.matmul(ta, b),
                    None if tb is None else np.matmul(a, tb))


class Dense(Function):
    """The fused affine layer: x @ W + b (b optional).

    x: (n, in), W: (in, out), b: (out,) -> (n, out). Leading dims of x are batch dims.
    d/dx = g W^T,  d/dW = x^T g,  d/db = sum of g over the rows.

    Under jit the backward writes into arrays kept between calls (`_kernels.dense_backward`).
    """

    name = "dense"

    @staticmethod
    def forward(ctx, x, w, *b):
        xs, ws = x.shape, w.shape
        if len(ws) != 2 or not xs or xs[-1] != ws[0]:
            raise ValueError(f"dense: input of shape {_shape_str(x.shape)} does not match "
                             f"weight of shape {_shape_str(w.shape)} (expected the input's "
                             f"last dimension to be {w.shape[0] if w.ndim == 2 else '?'})")
        if b and b[0].shape != ws[1:]:
            raise ValueError(f"dense: bias of shape {_shape_str(b[0].shape)} does not match "
                             f"weight of shape {_shape_str(w.shape)}")
        ctx.save_for_backward(x, w)
        # (ndarray.dot: np.dot's product without its dispatch wrapper, ~0.3 us a call)
        out = x.dot(w) if len(xs) == 2 else np.matmul(x, w)
        if b:
            out += b[0]
        return out

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved
        need = ctx.needs_input_grad
        gx = g.dot(w.T) if need[0] else None
        if x.ndim != 2:
            x = x.reshape(-1, x.shape[-1])
            g = g.reshape(-1, g.shape[-1])
        gw = x.T.dot(g) if need[1] else None
        if len(need) == 2:
            return gx, gw
        gb = np.add.reduce(g, axis=0) if need[2] else None
        return gx, gw, gb

    @staticmethod
    def jvp(ctx, tx, tw, *tb):
        x, w = ctx.saved
        return _add(None if tx is None else np.matmul(tx, w),
                    None if tw is None else np.matmul(x, tw),
                    tb[0] if tb else None)


class Transpose(Function):
    """np.transpose(a, axes); axes None reverses them."""

    name = "transpose"

    @staticmethod
    def forward(ctx, a, axes=None):
        if axes is not None:
            axes = tuple(int(ax) for ax in axes)
            if sorted(ax % max(a.ndim, 1) for ax in axes) != list(range(a.ndim)) \
                    or len(axes) != a.ndim:
                raise ValueError(f"transpose: axes {axes} are not a permutation of the "
                                 f"{a.ndim} axes of shape {_shape_str(a.shape)}")
            axes = tuple(ax % a.ndim for ax in axes)
        ctx.axes = axes
        return np.transpose(a, axes)

    @staticmethod
    def _inverse(ctx, g):
        if ctx.axes is None:
            return np.transpose(g)
        return np.transpose(g, np.argsort(ctx.axes))

    @staticmethod
    def backward(ctx, g):
        return Transpose._inverse(ctx, g)

    @staticmethod
    def jvp(ctx, ta):
        return np.transpose(ta, ctx.axes)


class Reshape(Function):
    """a.reshape(shape) (one -1 allowed)."""

    name = "reshape"

    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        try:
            out = a.reshape(shape)
        except (ValueError, TypeError):
            raise ValueError(f"reshape: cannot reshape an input of shape {_shape_str(a.shape)} "
                             f"({a.size} elements) to {tuple(shape)}") from None
        ctx.out_shape = out.shape
        return out

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)

    @staticmethod
    def jvp(ctx, ta):
        return ta.reshape(ctx.out_shape)


def _unwrap_index(index):
    from .tensor import Tensor

    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
               for i in items)


class GetItem(Function):
    """a[index] with slices, integers and integer/boolean arrays.

    Backward scatters g into zeros of a's shape; repeated indices accumulate.
    """

    name = "getitem"

    @staticmethod
    def forward(ctx, a, index):
        index = _unwrap_index(index)
        ctx.index = index
        ctx.in_shape = a.shape
        ctx.dtype = a.dtype
        try:
            return a[index]
        except IndexError as e:
            raise IndexError(f"getitem: index {index!r} is invalid for shape "
                             f"{_shape_str(a.shape)}: {e}") from None

    @staticmethod
    def _scatter(ctx, g):
        out = np.zeros(ctx.in_shape, dtype=g.dtype)
        if _is_basic(ctx.index):
            out[ctx.index] = g
        else:
            np.add.at(out, ctx.index, g)
        return out

    @staticmethod
    def backward(ctx, g):
        return GetItem._scatter(ctx, g)

    @staticmethod
    def jvp(ctx, ta):
        return ta[ctx.index]


class Concatenate(Function):
    """np.concatenate(arrays, axis); backward splits g along the axis."""

    name = "concatenate"

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        shapes = [a.shape for a in arrays]
        try:
            out = np.concatenate(arrays, axis=axis)
        except (ValueError, IndexError):
            raise ValueError("concatenate: shapes " + ", ".join(_shape_str(s) for s in shapes)
                             + f" do not fit together along axis {axis}") from None
        ax = axis % out.ndim
        ctx.axis = ax
        ctx.shapes = shapes
        ctx.splits = np.cumsum([s[ax] for s in shapes])[:-1]
        return out

    @staticmethod
    def backward(ctx, g):
        return tuple(np.split(g, ctx.splits, axis=ctx.axis))

    @staticmethod
    def jvp(ctx, *ts):
        return np.concatenate([np.zeros(shape) if t is None else t
                               for t, shape in zip(ts, ctx.shapes)], axis=ctx.axis)


# ----------------------------------------------------------------------------- reductions


class Sum(Function):
    """a.sum(axis, keepdims). Backward broadcasts g back over the summed axes."""

    name = "sum"

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _axes(axis, a.ndim, "sum")
        ctx.keepdims = keepdims
        ctx.in_shape = a.shape
        return np.sum(a, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return np.broadcast_to(_keep(g, ctx.axes, ctx.keepdims), ctx.in_shape)

    @staticmethod
    def jvp(ctx, ta):
        return np.sum(ta, axis=ctx.axes, keepdims=ctx.keepdims)


class Mean(Function):
    """a.mean(axis, keepdims). d/da = g / (number of averaged elements)."""

    name = "mean"

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _axes(axis, a.ndim, "mean")
        ctx.keepdims = keepdims
        ctx.in_shape = a.shape
        ctx.count = int(np.prod([a.shape[i] for i in ctx.axes])) if ctx.axes else 1
        if ctx.count == 0:
            raise ValueError(f"mean: no elements to average over axis {axis} of shape "
                             f"{_shape_str(a.shape)}")
        return np.mean(a, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return np.broadcast_to(_keep(g, ctx.axes, ctx.keepdims) / ctx.count, ctx.in_shape)

    @staticmethod
    def jvp(ctx, ta):
        return np.mean(ta, axis=ctx.axes, keepdims=ctx.keepdims)


class Max(Function):
    """a.max(axis, keepdims). The gradient is split evenly among tied maxima."""

    name = "max"

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        axes = _axes(axis, a.ndim, "max")
        if a.size == 0:
            raise ValueError(f"max: the input of shape {_shape_str(a.shape)} is empty")
        m = np.max(a, axis=axes, keepdims=True)
        mask = a == m
        ctx.weights = mask / np.sum(mask, axis=axes, keepdims=True, dtype=a.dtype)
        ctx.axes = axes
        ctx.keepdims = keepdims
        return m if keepdims else np.squeeze(m, axis=axes)

    @staticmethod
    def backward(ctx, g):
        return _keep(g, ctx.axes, ctx.keepdims) * ctx.weights

    @staticmethod
    def jvp(ctx, ta):
        return np.sum(ta * ctx.weights, axis=ctx.axes, keepdims=ctx.keepdims)


# ----------------------------------------------------------------------------- elementwise


class Exp(Function):
    """exp(a). d/da = g exp(a)."""

    name = "exp"

    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved[0]

    @staticmethod
    def jvp(ctx, ta):
        return ta * ctx.saved[0]


class Log(Function):
    """log(a). d/da = g / a."""

    name = "log"

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved[0]

    @staticmethod
    def jvp(ctx, ta):
        return ta / ctx.saved[0]


class Sqrt(Function):
    """sqrt(a). d/da = g / (2 sqrt(a))."""

    name = "sqrt"

    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g / (2 * ctx.saved[0])

    @staticmethod
    def jvp(ctx, ta):
        return ta / (2 * ctx.saved[0])


class Abs(Function):
    """|a|. d/da = g sign(a) (0 at a = 0)."""

    name = "abs"

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, g):
        return g * np.sign(ctx.saved[0])

    @staticmethod
    def jvp(ctx, ta):
        return ta * np.sign(ctx.saved[0])


def sigmoid_array(z):
    """The logistic function 1 / (1 + exp(-z)), computed exactly as the lecture does:
    `1. / (1. + np.exp(-np.clip(z, -250, 250)))` for float64 (the same ufuncs, so the same
    bits); the clip bound is 88 for float32 (11 for float16), so exp cannot overflow."""
    if z.dtype.kind != "f":
        z = z.astype(np.float32)
    bound = 250.0 if z.dtype == np.float64 else (11.0 if z.dtype == np.float16 else 88.0)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -bound, bound)))


class Sigmoid(Function):
    """a = 1 / (1 + exp(-z)). d/dz = g * (a (1 - a)).

    Under jit the same formulas run in place (`_kernels.sigmoid_forward` / `_backward`)."""

    name = "sigmoid"

    @staticmethod
    def forward(ctx, z):
        out = sigmoid_array(z)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        a = ctx.saved[0]
        return g * (a * (1.0 - a))

    @staticmethod
    def jvp(ctx, tz):
        a = ctx.saved[0]
        return tz * (a * (1.0 - a))


class Tanh(Function):
    """a = tanh(z). d/dz = g (1 - a^2)."""

    name = "tanh"

    @staticmethod
    def forward(ctx, z):
        out = np.tanh(z)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        a = ctx.saved[0]
        return g * (1.0 - a * a)

    @staticmethod
    def jvp(ctx, tz):
        a = ctx.saved[0]
        return tz * (1.0 - a * a)


class ReLU(Function):
    """max(z, 0). d/dz = g where z > 0, else 0."""

    name = "relu"

    @staticmethod
    def forward(ctx, z):
        out = np.maximum(z, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * (ctx.saved[0] > 0)

    @staticmethod
    def jvp(ctx, tz):
        return tz * (ctx.saved[0] > 0)


def _log_softmax(z, axis):
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


class Softmax(Function):
    """s = exp(z) / sum(exp(z)) along `axis`. d/dz = s (g - sum(g s))."""

    name = "softmax"

    @staticmethod
    def forward(ctx, z, axis=-1):
        _axes(axis, z.ndim, "softmax")
        e = np.exp(z - np.max(z, axis=axis, keepdims=True))
        out = e / np.sum(e, axis=axis, keepdims=True)
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, g):
        s = ctx.saved[0]
        return s * (g - np.sum(g * s, axis=ctx.axis, keepdims=True))

    @staticmethod
    def jvp(ctx, tz):
        return Softmax.backward(ctx, tz)  # the softmax Jacobian is symmetric


class LogSoftmax(Function):
    """z - logsumexp(z) along `axis`. d/dz = g - softmax(z) sum(g)."""

    name = "log_softmax"

    @staticmethod
    def forward(ctx, z, axis=-1):
        _axes(axis, z.ndim, "log_softmax")
        out = _log_softmax(z, axis)
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, g):
        s = np.exp(ctx.saved[0])
        return g - s * np.sum(g, axis=ctx.axis, keepdims=True)

    @staticmethod
    def jvp(ctx, tz):
        s = np.exp(ctx.saved[0])
        return tz - np.sum(s * tz, axis=ctx.axis, keepdims=True)


# ----------------------------------------------------------------------------- fused losses


def _reduce(loss, reduction, op):
    if reduction == "sum":
        return np.add.reduce(loss, axis=None), 1.0
    if reduction == "mean":
        n = loss.size
        if n == 0:
            raise ValueError(f"{op}: mean of an empty batch")
        return np.sum(loss) / n, 1.0 / n
    if reduction == "none":
        return loss, None
    raise ValueError(f"{op}: reduction must be 'sum', 'mean' or 'none', got {reduction!r}")


def _scale(g, factor):
    """The upstream gradient times the reduction's factor: a Python float for a reduced
    (scalar) loss, else the array g (reduction 'none')."""
    return g if factor is None else float(g) * factor


def _times(d, s):
    """d * s for a fresh array d, in place when s is a Python float (1.0 is skipped)."""
    if s.__class__ is float:
        if s != 1.0:
            d *= s
        return d
    return d * s


class SigmoidBinaryCrossEntropy(Function):
    """The logistic cost on the logits z of a sigmoid output a = sigmoid(z).

    loss = -(y log a + (1 - y) log(1 - a)) = max(z, 0) - z y + log(1 + exp(-|z|)),
    summed or averaged. d/dz = g (a - y): the lecture's delta_out. The sigmoid output `a`
    is an input too (so drawings show a -> cost) but gets no gradient: all of it flows to z.
    """

    name = "sigmoid_binary_cross_entropy"
    no_grad_inputs = (1,)  # the sigmoid output a: drawn as an input, receives no gradient

    @staticmethod
    def forward(ctx, z, a, y, reduction="sum"):
        if z.size <= _SMALL or a.dtype != z.dtype or a.shape != z.shape:
            loss = np.logaddexp(0.0, z)  # softplus(z) = max(z, 0) + log1p(exp(-|z|)), one ufunc
        else:  # the same from a = sigmoid(z): log1p(exp(-|z|)) = -log(sigmoid(|z|)), and
            #    sigmoid(|z|) = max(a, 1 - a); vectorised passes (no scalar-loop log1p)
            loss = np.maximum(z, 0.0) - np.log(np.maximum(1.0 - a, a))
        loss -= z * y  # - z y
        out, factor = _reduce(loss, reduction, "binary_cross_entropy")
        ctx.save_for_backward(z, a, y)
        ctx.factor = factor
        return out

    @staticmethod
    def backward(ctx, g):
        z, a, y = ctx.saved
        need_z, _, need_y = ctx.needs_input_grad
        s = _scale(g, ctx.factor)
        gz = _times(a - y, s) if need_z else None  # the lecture's delta_out = a - y
        gy = _times(-z, s) if need_y else None
        return gz, None, gy

    @staticmethod
    def jvp(ctx, tz, ta, ty):
        z, a, y = ctx.saved
        t = _add(None if tz is None else tz * (a - y), None if ty is None else -z * ty)
        if t is None:
            return None
        return t if ctx.factor is None else np.sum(t) * ctx.factor


class BinaryCrossEntropy(Function):
    """-(y log a + (1 - y) log(1 - a)) on probabilities a, each log clamped at -100.

    d/da = g (a - y) / max(a (1 - a), 1e-12). Prefer the fused form on logits.
    """

    name = "binary_cross_entropy"

    @staticmethod
    def forward(ctx, a, y, reduction="sum"):
        with np.errstate(divide="ignore", invalid="ignore"):
            log_a = np.maximum(np.log(a), -100.0)
            log_1ma = np.maximum(np.log1p(-a), -100.0)
        loss = -(y * log_a + (1.0 - y) * log_1ma)
        out, factor = _reduce(loss, reduction, "binary_cross_entropy")
        ctx.save_for_backward(a, y, log_a, log_1ma)
        ctx.factor = factor
        return out

    @staticmethod
    def _da(ctx):
        a, y, _, _ = ctx.saved
        return (a - y) / np.maximum(a * (1.0 - a), 1e-12)

    @staticmethod
    def backward(ctx, g):
        a, y, log_a, log_1ma = ctx.saved
        need_a, need_y = ctx.needs_input_grad
        g = _scale(g, ctx.factor)
        ga = g * BinaryCrossEntropy._da(ctx) if need_a else None
        gy = g * (log_1ma - log_a) if need_y else None
        return ga, gy

    @staticmethod
    def jvp(ctx, ta, ty):
        a, y, log_a, log_1ma = ctx.saved
        t = _add(None if ta is None else ta * BinaryCrossEntropy._da(ctx),
                 None if ty is None else ty * (log_1ma - log_a))
        if t is None:
            return None
        return t if ctx.factor is None else np.sum(t) * ctx.factor


class SoftmaxCrossEntropy(Function):
    """-log softmax(z)[label] per row of logits z (n, C), integer labels (n,).

    d/dz = g (softmax(z) - onehot(label)). Stable for any finite logits.
    """

    name = "softmax_cross_entropy"

    @staticmethod
    def forward(ctx, z, labels, reduction="mean"):
        labels = np.asarray(labels)
        if z.ndim != 2:
            raise ValueError(f"cross_entropy: logits must have shape (n, classes), got "
                             f"{_shape_str(z.shape)}")
        if labels.shape != (z.shape[0],):
            raise ValueError(f"cross_entropy: labels of shape {_shape_str(labels.shape)} do "
                             f"not match logits of shape {_shape_str(z.shape)} (expected "
                             f"({z.shape[0]},) integer class labels)")
        if labels.dtype.kind not in "iu":
            if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
                labels = labels.astype(np.int64)
            else:
                raise ValueError(f"cross_entropy: labels must be integers, got dtype "
                                 f"{labels.dtype}")
        n_classes = z.shape[1]
        bad = (labels < 0) | (labels >= n_classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"cross_entropy: label {int(labels[i])} at row {i} is outside "
                             f"[0, {n_classes}) for logits with {n_classes} classes")
        logp = _log_softmax(z, axis=1)
        rows = np.arange(z.shape[0])
        loss = -logp[rows, labels]
        out, factor = _reduce(loss, reduction, "cross_entropy")
        ctx.save_for_backward(logp, labels)
        ctx.factor = factor
        return out

    @staticmethod
    def _dz(ctx):
        logp, labels = ctx.saved
        d = np.exp(logp)
        d[np.arange(len(labels)), labels] -= 1.0
        return d

    @staticmethod
    def backward(ctx, g):
        d = SoftmaxCrossEntropy._dz(ctx)
        if ctx.factor is None:
            return g[:, None] * d
        return _times(d, float(g) * ctx.factor)

    @staticmethod
    def jvp(ctx, tz):
        t = np.sum(tz * SoftmaxCrossEntropy._dz(ctx), axis=1)
        return t if ctx.factor is None else np.sum(t) * ctx.factor


class L2Penalty(Function):
    """lam/2 * sum over the inputs of sum(W^2). d/dW = g lam W.

    Under jit the backward writes into arrays kept between calls
    (`_kernels.l2_penalty_backward`)."""

    name = "l2_penalty"

    @staticmethod
    def forward(ctx, *weights, lam):
        ctx.save_for_backward(*weights)
        ctx.lam = lam
        total = 0.0
        for w in weights:
            flat = w.ravel()
            total += float(np.dot(flat, flat))
        return np.array(0.5 * lam * total, dtype=weights[0].dtype if weights else np.float32)

    @staticmethod
    def backward(ctx, g):
        scale = float(g) * ctx.lam
        return tuple(scale * w if need else None
                     for w, need in zip(ctx.saved, ctx.needs_input_grad))

    @staticmethod
    def jvp(ctx, *ts):
        return _add(*[None if t is None else np.sum(t * w) * ctx.lam
                      for w, t in zip(ctx.saved, ts)])


# The ops of the further layers live in files of their own (one idea a file); they are
# Functions like the ones above, listed here so `ops` names every op.
from .conv_ops import AvgPool2d, Conv2d, MaxPool2d  # noqa: E402, F401
from .dropout_ops import Dropout  # noqa: E402, F401
from .norm_ops import BatchNorm1d, LayerNorm  # noqa: E402, F401
