"""The graph node (`Tensor`), the op protocol (`Function`) and reverse-mode `backward`.

A Tensor wraps a NumPy array. Every differentiable op is a `Function` subclass (see
`ops.py`) with a `forward(ctx, *arrays)` that computes the output array and a
`backward(ctx, grad)` that maps the gradient of the output to one gradient per input.
`Function.apply` runs `forward` and, when grad mode is on and an input requires grad,
links the output to its inputs through a `Context`. `Tensor.backward` walks that graph
in reverse topological order (iteratively, so deep graphs do not hit the recursion limit)
and accumulates gradients into the leaves.

Dtype rule: NumPy arrays keep their dtype; Python scalars and lists become float32 unless
`dtype` is given. A Python or NumPy scalar combined with a floating Tensor takes the
Tensor's dtype (a float32 graph stays float32). Two arrays or Tensors of different float
dtypes follow NumPy's promotion (float32 with float64 gives float64); the gradient that
reaches a leaf is always cast back to that leaf's dtype.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import numbers
import threading

import numpy as np

__all__ = [
    "Tensor",
    "Function",
    "Context",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "detect_anomaly",
    "unbroadcast",
]

DEFAULT_DTYPE = np.float32

# ----------------------------------------------------------------------------- modes
class _ThreadState(threading.local):
    """The engine's modes, one set per thread (as PyTorch's grad mode): a thread under
    `no_grad()` never changes what another thread builds or records."""

    def __init__(self):
        self.grad_enabled = True  # off inside `no_grad()`
        self.anomaly = False      # on inside `detect_anomaly()`
        self.module_stack = []    # modules whose __call__ is running (ops note the innermost)
        self.forward_depth = 0    # > 0 while `jvp` runs: ops also propagate tangents
        self.recording = None     # a jit recording in progress: every apply is noted in it


_state = _ThreadState()
_sequence = itertools.count()  # creation order of ops: backward runs them in reverse


def is_grad_enabled():
    """True unless inside `no_grad()` (in this thread)."""
    return _state.grad_enabled


def set_grad_enabled(mode):
    """Turn graph building on or off in this thread; returns the previous mode."""
    previous, _state.grad_enabled = _state.grad_enabled, bool(mode)
    return previous


def is_anomaly_enabled():
    """True inside `detect_anomaly()` (in this thread)."""
    return _state.anomaly


def current_module():
    """The innermost module whose `__call__` is running in this thread, or None."""
    stack = _state.module_stack
    return stack[-1] if stack else None


@contextlib.contextmanager
def calling_module(module):
    """`with calling_module(m):` marks `m` as the running module (nn.Module.__call__); ops
    applied inside note it in `ctx.module`, and a jit recording notes the module."""
    _state.module_stack.append(module)
    recording = _state.recording
    if recording is not None:
        recording.modules.append(module)
    try:
        yield
    finally:
        _state.module_stack.pop()


def forward_mode_depth():
    """How many `jvp` calls are running in this thread (0: no tangents are pushed)."""
    return _state.forward_depth


@contextlib.contextmanager
def forward_mode():
    """Push tangents through every op applied inside (used by `jvp`)."""
    _state.forward_depth += 1
    try:
        yield
    finally:
        _state.forward_depth -= 1


def _note_read(t):
    """Python reads the value of `t` (item(), bool(), ...): a jit recording notes it, since
    code may branch on the value."""
    recording = _state.recording
    if recording is not None:
        recording.reads.append(t)


def current_recording():
    """The jit recording in progress in this thread, or None."""
    return _state.recording


@contextlib.contextmanager
def recording_into(recording):
    """Note every op applied in this thread inside the block in `recording` (jit.py):
    `recording.ops.append((Function, inputs, params, ctx, output))`, and each module
    called in `recording.modules`."""
    outer, _state.recording = _state.recording, recording
    try:
        yield recording
    finally:
        _state.recording = outer


class _GradMode(contextlib.ContextDecorator):
    """Context manager and decorator that sets grad mode, restoring it on exit."""

    def __init__(self, enabled):
        self.enabled = enabled
        self._saved = threading.local()  # one object may be entered by several threads

    def __enter__(self):
        stack = self._saved.__dict__.setdefault("stack", [])
        stack.append(set_grad_enabled(self.enabled))
        return self

    def __exit__(self, *exc):
        set_grad_enabled(self._saved.stack.pop())
        return False


def no_grad(fn=None):
    """Build no graph: `with no_grad(): ...` or as a decorator `@no_grad` / `@no_grad()`."""
    if callable(fn):
        return _GradMode(False)(fn)
    return _GradMode(False)


def enable_grad(fn=None):
    """Turn graph building back on inside a `no_grad` block (context manager or decorator)."""
    if callable(fn):
        return _GradMode(True)(fn)
    return _GradMode(True)


@contextlib.contextmanager
def detect_anomaly():
    """Check every op's output and every gradient for NaN/inf and name the op that made it.

    Slower; for debugging. Raises FloatingPointError at the first non-finite value. Like
    every mode, it holds for the calling thread only.
    """
    saved, _state.anomaly = _state.anomaly, True
    try:
        yield
    finally:
        _state.anomaly = saved


# ----------------------------------------------------------------------------- helpers
def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting (the shared reduction step)."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise ValueError(f"cannot reduce a gradient of shape {grad.shape} to shape {shape}")
    if extra:
        grad = np.asarray(grad.sum(axis=tuple(range(extra))))  # 0-d stays an ndarray
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    if grad.shape != shape:
        raise ValueError(f"cannot reduce a gradient of shape {grad.shape} to shape {shape}")
    return grad


def _as_array(value, like=None, dtype=None):
    """Turn an operand into an ndarray. Scalars take the dtype of the floating Tensor `like`."""
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (numbers.Number, np.generic)):
        if dtype is None:
            if like is not None and like.dtype.kind == "f":
                dtype = like.dtype
            elif isinstance(value, (bool, np.bool_)):
                dtype = np.bool_
            elif (isinstance(value, numbers.Integral) and like is not None
                  and like.dtype.kind in "iu"):
                dtype = like.dtype
            elif isinstance(value, np.generic):
                dtype = value.dtype
            else:
                dtype = DEFAULT_DTYPE
        arr = np.asarray(value, dtype=dtype)
    else:
        if dtype is None and not hasattr(value, "__array__"):
            dtype = like.dtype if like is not None and like.dtype.kind == "f" else DEFAULT_DTYPE
        arr = np.asarray(value, dtype=dtype)
    _check_numeric(arr)
    return arr


def _check_numeric(arr):
    kind = arr.dtype.kind
    if kind not in "fiub":
        what = {"c": "complex", "O": "object", "U": "string", "S": "bytes", "M": "datetime",
                "m": "timedelta", "V": "structured"}.get(kind, kind)
        raise TypeError(f"Tensor: {what} arrays (dtype {arr.dtype}) are not supported; "
                        "use a real floating or integer array")


def _shape_str(shape):
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


# ----------------------------------------------------------------------------- Function
class Context:
    """What one op application remembers for its backward.

    `parents`: the input Tensors; `saved`: arrays stored by `save_for_backward`;
    `needs_input_grad`: one bool per input; `seq`: creation order (outputs come after
    their inputs); `forward_kwargs`: the keyword parameters `apply` passed to forward (so
    `gradcheck.check_ops` can rerun an op). Ops may also set plain attributes.
    """

    __slots__ = ("function", "parents", "saved", "needs_input_grad", "freed", "module",
                 "seq", "forward_kwargs", "__dict__")

    def __init__(self, function, parents, needs_input_grad):
        self.function = function
        self.parents = parents
        # None when the output is not in the graph (no backward will run): all False
        self.needs_input_grad = needs_input_grad or (False,) * len(parents)
        self.saved = ()
        self.freed = False
        self.module = current_module()
        self.seq = next(_sequence)
        self.forward_kwargs = {}

    def save_for_backward(self, *arrays):
        """Keep arrays needed by backward; read them back as `ctx.saved`."""
        self.saved = arrays

    def free(self):
        """Drop saved arrays (after backward); a later backward through here raises."""
        self.saved = None
        self.__dict__.clear()
        self.freed = True


class Function:
    """Base class of every op: subclass it, write `forward` and `backward`, call `apply`.

    forward(ctx, *arrays, **params) -> ndarray
    backward(ctx, grad) -> one ndarray (or None) per array input, as a tuple when several.
    jvp(ctx, *tangents) -> tangent of the output (optional; forward mode, see `jvp`).

    Gradients may have the broadcast shape of the output: the engine sums them back to
    each input's shape (`unbroadcast`), so binary ops need not.
    """

    name = None  # op name shown in errors and drawings; defaults to the lowercased class name
    no_grad_inputs = ()  # positions of inputs that never receive a gradient (for drawings)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()

    @staticmethod
    def forward(ctx, *arrays, **params):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on Tensors (or arrays / numbers, made constant Tensors) -> Tensor.

        The output joins the graph (a Context linking it to its inputs) when grad mode is
        on and some input requires grad.
        """
        inputs = _to_tensors(inputs)
        needs = tuple([x.requires_grad for x in inputs])
        state = _state
        track = state.grad_enabled and any(needs)
        ctx = Context(cls, inputs, needs if track else None)
        ctx.forward_kwargs = params
        data = cls.forward(ctx, *[x.data for x in inputs], **params)
        if not isinstance(data, np.ndarray):
            data = np.asarray(data)
        if state.anomaly:
            _check_finite(data, f"{cls.name}: forward produced", inputs)
        out = _new_tensor(data)
        if track:
            out.requires_grad = True
            out._ctx = ctx
        if state.forward_depth:
            _push_tangent(cls, ctx, inputs, out)
        if state.recording is not None:  # a jit recording notes every op (jit.py)
            state.recording.ops.append((cls, inputs, params, ctx, out))
        return out


def _to_tensors(inputs):
    """The inputs as Tensors: a Tensor stays itself, an array keeps its dtype, a number
    takes the dtype of the first Tensor among the inputs (see `_as_array`)."""
    if all(isinstance(x, Tensor) for x in inputs):
        return inputs
    like = next((x for x in inputs if isinstance(x, Tensor)), None)
    return tuple(x if isinstance(x, Tensor) else Tensor._const(x, like) for x in inputs)


def _push_tangent(cls, ctx, inputs, out):
    tangents = [x._tangent for x in inputs]
    if all(t is None for t in tangents):
        return
    rule = getattr(cls, "jvp", None)
    if rule is None:
        raise NotImplementedError(f"{cls.name}: no forward-mode (jvp) rule")
    t = rule(ctx, *tangents)
    if t is not None:
        t = np.broadcast_to(np.asarray(t, dtype=out.data.dtype), out.data.shape)
    out._tangent = t


def _new_tensor(data):
    """A Tensor around `data` without checks (for ops' outputs)."""
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    out.requires_grad = False
    out.name = None
    out._ctx = None
    out._retain = False
    out._tangent = None
    return out


def _check_finite(arr, what, parents=()):
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))
        first = tuple(int(i) for i in bad[0]) if arr.ndim else ()
        shapes = ", ".join(_shape_str(p.shape) for p in parents)
        raise FloatingPointError(
            f"{what} {len(bad)} non-finite value(s) (first at index {first}: "
            f"{arr[first].item()!r}); input shapes {shapes}")


# ----------------------------------------------------------------------------- Tensor
class Tensor:
    """A node of the computation graph: a NumPy array plus what is needed to differentiate.

    Tensor(data, requires_grad=False, dtype=None, name=None)
    """

    __slots__ = ("data", "grad", "requires_grad", "name", "_ctx", "_retain", "_tangent",
                 "__weakref__")
    __array_ufunc__ = None  # make `ndarray (op) Tensor` call the Tensor's reflected operator

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is not None:
            dtype = np.dtype(dtype)
        if isinstance(data, np.ndarray):
            _check_numeric(data)
            arr = data if dtype is None or data.dtype == dtype else data.astype(dtype)
        else:
            arr = _as_array(data, dtype=dtype)
        if requires_grad and arr.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating tensors can require grad; got dtype "
                            f"{arr.dtype} (convert with dtype=np.float32 or np.float64)")
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._ctx = None
        self._retain = False
        self._tangent = None

    @classmethod
    def _const(cls, value, like=None):
        t = cls.__new__(cls)
        t.data = _as_array(value, like)
        t.grad = None
        t.requires_grad = False
        t.name = None
        t._ctx = None
        t._retain = False
        t._tangent = None
        return t

    # -- attributes ---------------------------------------------------------------------
    shape = property(lambda self: self.data.shape, doc="shape of `data`")
    dtype = property(lambda self: self.data.dtype, doc="dtype of `data`")
    ndim = property(lambda self: self.data.ndim, doc="number of dimensions")
    size = property(lambda self: self.data.size, doc="number of elements")

    @property
    def op(self):
        """Name of the op that made this Tensor; None for a leaf."""
        return self._ctx.function.name if self._ctx is not None else None

    @property
    def parents(self):
        """The input Tensors of the op that made this Tensor (empty for a leaf)."""
        return self._ctx.parents if self._ctx is not None else ()

    @property
    def is_leaf(self):
        return self._ctx is None

    def numpy(self):
        """The underlying ndarray (not a copy)."""
        _note_read(self)
        return self.data

    def item(self):
        """The value of a one-element Tensor as a Python number."""
        _note_read(self)
        if self.data.size != 1:
            raise ValueError(f"item: only one-element tensors convert to a number, "
                             f"got shape {_shape_str(self.shape)}")
        return self.data.item()

    def detach(self):
        """A new leaf sharing this Tensor's data, cut from the graph."""
        return Tensor._const(self.data)

    def retain_grad(self):
        """Keep `.grad` of this non-leaf after backward."""
        self._retain = True
        return self

    def zero_grad(self):
        self.grad = None

    def __array__(self, dtype=None, copy=None):
        _note_read(self)
        if dtype is not None and dtype != self.data.dtype:
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __repr__(self):
        extra = ""
        if self.name:
            extra += f", name={self.name!r}"
        if self._ctx is not None:
            extra += f", op={self.op!r}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        body = np.array2string(self.data, precision=4, threshold=20, edgeitems=2,
                               prefix="Tensor(")
        return f"Tensor({body}, shape={_shape_str(self.shape)}, dtype={self.dtype}{extra})"

    def __bool__(self):
        _note_read(self)
        if self.data.size != 1:
            raise ValueError("the truth value of a Tensor with more than one element is "
                             "ambiguous")
        return bool(self.data)

    __hash__ = object.__hash__

    # -- backward -----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Reverse-mode differentiation from this Tensor.

        Accumulates d(self)/d(leaf) (times `grad`) into `.grad` of every leaf with
        requires_grad. A one-element Tensor is seeded with 1; otherwise `grad` (same
        shape) is required. Saved arrays are freed unless `retain_graph=True`.

        The ops run in reverse creation order (a priority queue on `Context.seq`): an op's
        output is made after its inputs, so all of a node's gradient has arrived when its
        turn comes, without a separate topological sort.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad and has no graph (no leaf it "
                "depends on has requires_grad=True, or it was computed under no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward: grad can be implied only for a one-element output; this one "
                    f"has shape {_shape_str(self.shape)}: pass grad= of that shape")
            grad = _unit_grad(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad,
                              dtype=self.data.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward: grad has shape {_shape_str(grad.shape)}, the "
                                 f"output has shape {_shape_str(self.shape)}")
        if self._ctx is None:  # a leaf: d(self)/d(self) = 1
            _add_leaf_grad(self, grad.copy(), None)  # a copy: the caller's array stays theirs
            return
        grads = {id(self): grad}         # id(node) -> d self / d node, summed so far
        heap = [(-self._ctx.seq, self)]  # seqs are unique: Tensors are never compared
        done = []                        # contexts whose backward ran (freed at the end)
        owned = set()                    # ids of leaves whose .grad this backward made
        try:
            while heap:
                node = heapq.heappop(heap)[1]
                g = grads.pop(id(node))
                ctx = node._ctx
                if node._retain:
                    node.grad = g.copy() if node.grad is None else node.grad + g
                if ctx.freed:
                    raise RuntimeError(
                        f"backward through the graph a second time (at op "
                        f"'{ctx.function.name}'): its saved values were freed by the first "
                        f"backward. Call backward(retain_graph=True) the first time to "
                        f"backward twice.")
                done.append(ctx)
                for p, pg in _op_input_grads(ctx, g):
                    if _state.anomaly:
                        _check_finite(pg, f"{ctx.function.name}: backward produced",
                                      ctx.parents)
                    if p._ctx is None:
                        if id(p) in owned:
                            _add_in_place(p, pg)
                        elif _add_leaf_grad(p, pg, g, ctx.function.__module__ == _FRESH_MODULE):
                            owned.add(id(p))
                    else:
                        _pass_on(grads, heap, p, pg)
        finally:
            if not retain_graph:
                for ctx in done:
                    ctx.free()

    # -- operators (the Functions are in ops.py) ------------------------------------------
    def __add__(self, other):
        return _ops.Add.apply(self, other)

    def __radd__(self, other):
        return _ops.Add.apply(other, self)

    def __sub__(self, other):
        return _ops.Sub.apply(self, other)

    def __rsub__(self, other):
        return _ops.Sub.apply(other, self)

    def __mul__(self, other):
        return _ops.Mul.apply(self, other)

    def __rmul__(self, other):
        return _ops.Mul.apply(other, self)

    def __truediv__(self, other):
        return _ops.Div.apply(self, other)

    def __rtruediv__(self, other):
        return _ops.Div.apply(other, self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("pow: the exponent must be a number, not a Tensor "
                            "(write (t.log() * e).exp() for a tensor exponent)")
        if not isinstance(exponent, (numbers.Number, np.generic)):
            raise TypeError(f"pow: the exponent must be a number, got {type(exponent).__name__}")
        return _ops.Pow.apply(self, exponent=float(exponent))

    def __rpow__(self, base):
        if not isinstance(base, (numbers.Number, np.generic)) or base <= 0:
            raise TypeError(f"pow: a number raised to a Tensor needs a positive base, got {base!r}")
        return (self * float(np.log(base))).exp()

    def __neg__(self):
        return _ops.Neg.apply(self)

    def __pos__(self):
        return self

    def __matmul__(self, other):
        return _ops.MatMul.apply(self, other)

    def __rmatmul__(self, other):
        return _ops.MatMul.apply(other, self)

    def __getitem__(self, index):
        return _ops.GetItem.apply(self, index=index)

    # comparisons give plain boolean arrays (not differentiable)
    def __lt__(self, other):
        _note_read(self)
        return self.data < _unwrap(other)

    def __le__(self, other):
        _note_read(self)
        return self.data <= _unwrap(other)

    def __gt__(self, other):
        _note_read(self)
        return self.data > _unwrap(other)

    def __ge__(self, other):
        _note_read(self)
        return self.data >= _unwrap(other)

    # -- methods ----------------------------------------------------------------------
    @property
    def T(self):
        """Transpose (reverses the axes)."""
        return _ops.Transpose.apply(self, axes=None)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops.Transpose.apply(self, axes=axes or None)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops.Reshape.apply(self, shape=shape)

    def flatten(self):
        return self.reshape(-1)

    def sum(self, axis=None, keepdims=False):
        return _ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _ops.Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def exp(self):
        return _ops.Exp.apply(self)

    def log(self):
        return _ops.Log.apply(self)

    def sqrt(self):
        return _ops.Sqrt.apply(self)

    def abs(self):
        return _ops.Abs.apply(self)

    def sigmoid(self):
        return _ops.Sigmoid.apply(self)

    def tanh(self):
        return _ops.Tanh.apply(self)

    def relu(self):
        return _ops.ReLU.apply(self)

    def softmax(self, axis=-1):
        return _ops.Softmax.apply(self, axis=axis)

    def log_softmax(self, axis=-1):
        return _ops.LogSoftmax.apply(self, axis=axis)

    def argmax(self, axis=None):
        """Indices of the maxima (a plain ndarray; not differentiable)."""
        _note_read(self)
        return self.data.argmax(axis=axis)

    def astype(self, dtype):
        return _ops.Cast.apply(self, dtype=np.dtype(dtype))


def _unwrap(x):
    return x.data if isinstance(x, Tensor) else x


def _unit_grad(out):
    """d out / d out: ones of the output array's shape and dtype (0-d for a scalar)."""
    return np.ones(out.shape, dtype=out.dtype)


def _as_input_grad(pg, like, function):
    """A gradient `pg` from `function`'s backward, made the gradient of an input whose array
    is `like`: an ndarray of like's shape (unbroadcast) and dtype.

    This, `_sum_grad` and `_add_leaf_grad` are how gradients are summed, used by
    `Tensor.backward` and by jit's compiled backward alike: the same numbers, bit for bit."""
    if pg.__class__ is not np.ndarray:
        pg = np.asarray(pg)
    if pg.shape != like.shape:
        pg = _reduce_to(pg, like.shape, function)
    dtype = like.dtype
    if pg.dtype is not dtype and pg.dtype != dtype:
        pg = pg.astype(dtype)
    return pg


def _op_input_grads(ctx, g):
    """One step of backward: the op's backward on `g`, the gradient of its output.
    [(input Tensor, its gradient)] for the inputs that need one, in input order, each
    gradient made the input's shape and dtype (`_as_input_grad`)."""
    in_grads = _grad_tuple(ctx.function.backward(ctx, g), ctx.function, len(ctx.parents))
    return [(p, _as_input_grad(pg, p.data, ctx.function))
            for p, pg in zip(ctx.parents, in_grads) if pg is not None and p.requires_grad]


def _grad_tuple(in_grads, function, n):
    """What `function`'s backward returned, as a tuple of one gradient per input (of n); a
    RuntimeError naming the op when the count is wrong."""
    if not isinstance(in_grads, tuple):
        in_grads = (in_grads,)
    if len(in_grads) != n:
        raise RuntimeError(f"{function.name}: backward returned {len(in_grads)} "
                           f"gradient(s) for {n} input(s)")
    return in_grads


def _pass_on(grads, heap, node, pg):
    """Add `pg` to what `grads` holds for `node` (an op's output); the first gradient to
    reach it schedules its op on the `heap` of backward (reverse creation order)."""
    if id(node) in grads:
        grads[id(node)] = _sum_grad(grads[id(node)], pg)
    else:
        grads[id(node)] = pg
        heapq.heappush(heap, (-node._ctx.seq, node))


def _sum_grad(total, pg):
    """The gradient so far plus one more contribution (None: none so far). One `+` per
    contribution, in the order they arrive: floating point addition is not associative."""
    return pg if total is None else total + pg


def _add_leaf_grad(leaf, pg, g, fresh=False):
    """Sum `pg` into `leaf.grad`. A leaf owns its gradient array: a view, or the upstream
    gradient `g` passed through unchanged, is copied first.

    Returns True when `leaf.grad` is now an array that this backward made and no one else
    holds (a sum, a copy, or `pg` itself when `fresh`: a new array from an op of ops.py),
    so that the next gradients of the same backward may be added into it in place
    (`_add_in_place`), as PyTorch accumulates: the same `+`, the same bits, one array less.
    A `.grad` that was there before the backward is never written into (a user may hold it)."""
    owned = leaf.grad is not None or fresh or pg is g or pg.base is not None
    if pg is g or pg.base is not None:
        pg = pg.copy()
    leaf.grad = _sum_grad(leaf.grad, pg)
    return owned


def _add_in_place(leaf, pg):
    """leaf.grad += pg, for a `.grad` that `_add_leaf_grad` said this backward owns."""
    np.add(leaf.grad, pg, out=leaf.grad)


_FRESH_MODULE = "tinygrad_mlp.ops"  # its ops' backward return new arrays (or views, copied)


def _reduce_to(pg, shape, function):
    """unbroadcast(pg, shape) for an input of `function`'s op; a ValueError naming the op
    when the gradient cannot be reduced to the input's shape."""
    try:
        return unbroadcast(pg, shape)
    except ValueError:
        raise ValueError(f"{function.name}: backward returned a gradient of shape "
                         f"{_shape_str(pg.shape)} for an input of shape "
                         f"{_shape_str(shape)}") from None


def concatenate(tensors, axis=0):
    """Join Tensors (or arrays) along an existing axis; differentiable."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate: need at least one tensor")
    return _ops.Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Join Tensors along a new axis; differentiable."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: need at least one tensor")
    expanded = []
    for t in tensors:
        shape = list(t.shape)
        ax = axis if axis >= 0 else axis + t.ndim + 1
        shape.insert(ax, 1)
        expanded.append(t.reshape(tuple(shape)))
    return concatenate(expanded, axis=axis)


from . import ops as _ops  # noqa: E402  (ops needs Tensor and Function defined above)
