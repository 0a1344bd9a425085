"""Layers and losses built from the engine's ops: their gradients come from autodiff.

Rows are samples, as in the lecture: a Dense layer maps X (n, in) to X @ W + b (n, out)
with W of shape (in, out).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from . import ops
from . import tensor as _tensor
from ._files import atomic_write
from .tensor import Tensor, _new_tensor, _shape_str

__all__ = [
    "Module",
    "Dense",
    "Sigmoid",
    "ReLU",
    "Tanh",
    "Sequential",
    "Dropout",
    "Flatten",
    "BatchNorm1d",
    "LayerNorm",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "MSE",
    "l2_penalty",
    "dense_weights",
    "summary",
]


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor._const(x)


# ----------------------------------------------------------------------------- Module


class Module:
    """Base class: a callable with parameters (Tensors with requires_grad) and submodules.

    Parameters and submodules are found among the attributes (and lists/tuples of modules)
    in the order they were assigned, so `parameters()` has a stable order.
    """

    # No longer read: `jit` (which `fit` steps through) finds out whether a step can be
    # replayed by comparing two recordings. Kept so code that sets it keeps working.
    static_graph = False

    # Training mode (Dropout drops, BatchNorm uses the batch's statistics) or eval mode.
    # A class attribute, so every module starts in training mode without calling
    # Module.__init__; `train()` / `eval()` set it on the instance of every submodule.
    training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def __call__(self, *args, **kwargs):
        with _tensor.calling_module(self):  # ops note the innermost running module
            return self.forward(*args, **kwargs)

    # -- traversal ------------------------------------------------------------------------
    def _children(self):
        for key, value in vars(self).items():
            if isinstance(value, Module):
                yield key, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield (str(i) if key == "layers" else f"{key}.{i}"), item

    def named_modules(self, prefix=""):
        """(name, module) for this module and every submodule, depth first."""
        yield prefix, self
        for key, child in self._children():
            yield from child.named_modules(f"{prefix}.{key}" if prefix else key)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix=""):
        """(name, Tensor) for every parameter, e.g. ('0.weight', W), in a stable order."""
        seen = set()
        for mod_name, mod in self.named_modules(prefix):
            for key, value in vars(mod).items():
                if isinstance(value, Tensor) and value.requires_grad and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{mod_name}.{key}" if mod_name else key), value

    def parameters(self):
        """The parameters as a list, in the order of `named_parameters`."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self):
        """Total number of scalar parameters (weights and biases)."""
        return int(sum(p.size for p in self.parameters()))

    def summary(self, input_shape, **kwargs):
        """The table of `nn.summary(self, input_shape, **kwargs)`: printed and returned."""
        return summary(self, input_shape, **kwargs)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # -- modes ----------------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (mode=True) or eval mode on this module and every submodule."""
        mode = bool(mode)
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Eval mode: the same as `train(False)`. Returns the module."""
        return self.train(False)

    # -- buffers --------------------------------------------------------------------------
    def register_buffer(self, name, array):
        """Hold `array` as a buffer: a Tensor attribute `name` that is state (in
        `state_dict`, saved and loaded) but not a parameter (requires_grad False, no
        gradient, not in `parameters()`), like BatchNorm1d's running statistics."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"register_buffer: name must be an identifier, got {name!r}")
        t = array if isinstance(array, Tensor) else Tensor(np.array(array))
        if t.requires_grad:
            raise ValueError(f"register_buffer: {name} requires grad; a buffer is not a "
                             f"parameter")
        t.name = name
        names = self.__dict__.setdefault("_buffer_names", [])
        if name not in names:
            names.append(name)
        setattr(self, name, t)
        return t

    def named_buffers(self, prefix=""):
        """(name, Tensor) for every registered buffer, e.g. ('1.running_mean', t)."""
        seen = set()
        for mod_name, mod in self.named_modules(prefix):
            for key in mod.__dict__.get("_buffer_names", ()):
                value = getattr(mod, key, None)
                if isinstance(value, Tensor) and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{mod_name}.{key}" if mod_name else key), value

    def buffers(self):
        """The buffers as a list, in the order of `named_buffers`."""
        return [b for _, b in self.named_buffers()]

    # -- state ----------------------------------------------------------------------------
    def _named_state(self):
        return OrderedDict(list(self.named_parameters()) + list(self.named_buffers()))

    def state_dict(self):
        """Name -> copy of each parameter's array, then of each buffer's (an OrderedDict)."""
        return OrderedDict((name, t.data.copy()) for name, t in self._named_state().items())

    def load_state_dict(self, state, *, source="state_dict"):
        """Set the parameters and buffers from arrays (each Tensor gets a new `.data`).
        Checks every name, shape and dtype kind first: on any mismatch raises ValueError
        and leaves the model untouched."""
        params = self._named_state()
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if unexpected:
            problems.append(f"unexpected {unexpected}")
        new = {}
        for name, p in params.items():
            if name not in state:
                continue
            arr = np.asarray(state[name])
            if arr.shape != p.shape:
                problems.append(f"{name}: shape {_shape_str(arr.shape)} in {source}, "
                                f"{_shape_str(p.shape)} in the model")
            elif arr.dtype.kind not in "fiu":
                problems.append(f"{name}: non-numeric dtype {arr.dtype}")
            else:
                new[name] = arr.astype(p.dtype, copy=True)
        if problems:
            raise ValueError(f"load_state_dict: {source} does not fit "
                             f"{type(self).__name__}: " + "; ".join(problems))
        for name, p in params.items():
            p.data = new[name]
            if p.requires_grad:
                p.grad = None

    def save(self, path):
        """Write the parameters and buffers to a NumPy .npz file, atomically (temp + rename)."""
        buf = io.BytesIO()
        np.savez(buf, **self.state_dict())
        atomic_write(path, lambda f: f.write(buf.getvalue()))

    def load(self, path):
        """Load what `save` wrote; a file that does not fit leaves the model as it was."""
        path = os.fspath(path)
        if os.path.isfile(path) and not zipfile.is_zipfile(path):
            raise ValueError(f"load: {path} is not a readable .npz checkpoint (no zip header; "
                             f"write checkpoints with Module.save)")
        try:
            with np.load(path, allow_pickle=False) as f:
                state = {k: f[k] for k in f.files}
        except FileNotFoundError:
            raise
        except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError
            raise ValueError(f"load: {path} is not a readable .npz checkpoint ({e})") from None
        self.load_state_dict(state, source=path)
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        children = list(self._children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for key, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({key}): {body}")
        lines.append(")")
        return "\n".join(lines)


@contextmanager
def _in_mode(model, training):
    """Run a block with every module of `model` in training (True) or eval (False) mode,
    then give each module back the mode it had."""
    modules = model.modules() if isinstance(model, Module) else []
    saved = [(m, m.training) for m in modules if hasattr(m, "training")]
    if hasattr(model, "train"):
        model.train(training)
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


# ----------------------------------------------------------------------------- layers


def _init_std(init_std, in_features, out_features, owner="Dense"):
    """The standard deviation of the initial weights: a number, or 'he' (sqrt(2 / fan_in))
    or 'xavier' (sqrt(2 / (fan_in + fan_out)))."""
    if isinstance(init_std, str):
        if init_std == "he":
            return float(np.sqrt(2.0 / in_features))
        if init_std in ("xavier", "glorot"):
            return float(np.sqrt(2.0 / (in_features + out_features)))
        raise ValueError(f"{owner}: init_std must be a number, 'he' or 'xavier', "
                         f"got {init_std!r}")
    if isinstance(init_std, bool) or not isinstance(init_std, (int, float, np.integer,
                                                               np.floating)) \
            or not np.isfinite(init_std) or init_std < 0:
        raise ValueError(f"{owner}: init_std must be a number >= 0, 'he' or 'xavier', "
                         f"got {init_std!r}")
    return float(init_std)


class Dense(Module):
    """Affine layer: forward(x) = x @ weight + bias.

    x: (n, in_features) -> (n, out_features). weight: (in_features, out_features), drawn by
    rng.normal(0.0, init_std, (in_features, out_features)) from `rng` (a
    np.random.RandomState; else RandomState(seed)); bias: zeros (out_features,).
    init_std may also be 'he' (sqrt(2/in)) or 'xavier' (sqrt(2/(in+out))).
    """

    static_graph = True

    def __init__(self, in_features, out_features, *, init_std=0.1, rng=None, seed=None,
                 dtype=np.float32, bias=True):
        for label, n in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(n, (int, np.integer)) or n <= 0:
                raise ValueError(f"Dense: {label} must be a positive integer, got {n!r}")
        if rng is None:
            rng = np.random.RandomState(seed)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        std = _init_std(init_std, in_features, out_features)
        w = rng.normal(0.0, std, (self.in_features, self.out_features))
        self.weight = Tensor(w.astype(dtype, copy=False), requires_grad=True, name="weight")
        self.bias = (Tensor(np.zeros(self.out_features, dtype=dtype), requires_grad=True,
                            name="bias") if bias else None)

    def forward(self, x):
        if self.bias is None:
            return ops.Dense.apply(x, self.weight)
        return ops.Dense.apply(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}" + ("" if self.bias is not None
                                                              else ", bias=False")


class Sigmoid(Module):
    """Elementwise 1 / (1 + exp(-x))."""

    static_graph = True

    def forward(self, x):
        return ops.Sigmoid.apply(x)


class ReLU(Module):
    """Elementwise max(x, 0)."""

    static_graph = True

    def forward(self, x):
        return ops.ReLU.apply(x)


class Tanh(Module):
    """Elementwise tanh(x)."""

    static_graph = True

    def forward(self, x):
        return ops.Tanh.apply(x)


class Sequential(Module):
    """Modules applied in order: Sequential(Dense(784, 100), Sigmoid(), ...). Indexable."""

    static_graph = True

    def __init__(self, *modules):
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {i} is a {type(m).__name__}, not a Module")
        self.layers = list(modules)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)


# ----------------------------------------------------------------------------- more layers


class Dropout(Module):
    """In training mode zero each element with probability p and scale the rest by
    1 / (1 - p) (so the expected value is unchanged); the identity in eval mode.

    The mask is drawn by the op `ops.Dropout` from `self.rng` (a np.random.RandomState,
    else RandomState(seed)): a seeded Dropout drops the same elements run after run.
    """

    static_graph = True  # the mask comes from the generator inside the op, not the data

    def __init__(self, p=0.5, *, rng=None, seed=None):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: p must be a number in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.RandomState(seed)

    def forward(self, x):
        x = _as_tensor(x)
        if not self.training:
            return x
        return ops.Dropout.apply(x, p=self.p, rng=self.rng)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...): keep the batch dimension, join the rest."""

    static_graph = True

    def forward(self, x):
        x = _as_tensor(x)
        if x.ndim < 2:
            raise ValueError(f"Flatten(): expected input (N, ...) with at least 2 dimensions, "
                             f"got {_shape_str(x.shape)}")
        # -1 for the batch, so the recorded op does not depend on the batch size
        return ops.Reshape.apply(x, shape=(-1, int(np.prod(x.shape[1:]))))


def _pair(owner, label, value, minimum):
    """An int or a pair of ints (each >= minimum) as a pair."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
            for v in pair):
        raise ValueError(f"{owner}: {label} must be an int >= {minimum} or a pair of them, "
                         f"got {value!r}")
    return int(pair[0]), int(pair[1])


def _show(pair):
    return str(pair[0]) if pair[0] == pair[1] else f"({pair[0]}, {pair[1]})"


def _check_image(layer, x, channels, kernel, padding):
    """x must be (N, C, H, W) with C = channels (any C when None), at least the kernel."""
    c = "C" if channels is None else str(channels)
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{layer}: expected input (N, {c}, H, W), got {_shape_str(x.shape)}")
    if x.shape[2] + 2 * padding[0] < kernel[0] or x.shape[3] + 2 * padding[1] < kernel[1]:
        raise ValueError(f"{layer}: input {_shape_str(x.shape)} (padding {_show(padding)}) is "
                         f"smaller than the kernel {kernel[0]}x{kernel[1]}")


class Conv2d(Module):
    """2-D convolution (cross-correlation, as in PyTorch): x (N, C_in, H, W) ->
    (N, C_out, OH, OW), OH = (H + 2 padding - kernel) // stride + 1 (the same for W).

    `.weight` (out_channels, in_channels, kh, kw) and `.bias` (out_channels,) have PyTorch's
    layout, so a torch Conv2d's weights load unchanged. Weights are drawn by
    rng.normal(0.0, std, weight shape), std from `init_std`: a number, 'he'
    (sqrt(2 / fan_in)) or 'xavier' (sqrt(2 / (fan_in + fan_out))), fan_in = in_channels kh
    kw, fan_out = out_channels kh kw; biases are zero. kernel_size, stride, padding: an int
    or a pair. One op, `ops.Conv2d` (im2col and a matrix product).
    """

    static_graph = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *,
                 bias=True, init_std="he", rng=None, seed=None, dtype=np.float32):
        self.in_channels = _positive_int("Conv2d", "in_channels", in_channels)
        self.out_channels = _positive_int("Conv2d", "out_channels", out_channels)
        self.kernel_size = _pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride = _pair("Conv2d", "stride", stride, 1)
        self.padding = _pair("Conv2d", "padding", padding, 0)
        kh, kw = self.kernel_size
        std = _init_std(init_std, self.in_channels * kh * kw, self.out_channels * kh * kw,
                        "Conv2d")
        if rng is None:
            rng = np.random.RandomState(seed)
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.weight = Tensor(rng.normal(0.0, std, shape).astype(dtype, copy=False),
                             requires_grad=True, name="weight")
        self.bias = (Tensor(np.zeros(self.out_channels, dtype=dtype), requires_grad=True,
                            name="bias") if bias else None)

    def forward(self, x):
        x = _as_tensor(x)
        _check_image(f"Conv2d({self.extra_repr()})", x, self.in_channels, self.kernel_size,
                     self.padding)
        params = dict(stride=self.stride, padding=self.padding)
        if self.bias is None:
            return ops.Conv2d.apply(x, self.weight, **params)
        return ops.Conv2d.apply(x, self.weight, self.bias, **params)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, {_show(self.kernel_size)}"
        if self.stride != (1, 1):
            text += f", stride={_show(self.stride)}"
        if self.padding != (0, 0):
            text += f", padding={_show(self.padding)}"
        return text + ("" if self.bias is not None else ", bias=False")


class _Pool2d(Module):
    static_graph = True
    _op = None

    def __init__(self, kernel_size, stride=None):
        owner = type(self).__name__
        self.kernel_size = _pair(owner, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _pair(owner, "stride", stride, 1)

    def forward(self, x):
        x = _as_tensor(x)
        _check_image(f"{type(self).__name__}({self.extra_repr()})", x, None, self.kernel_size,
                     (0, 0))
        return self._op.apply(x, kernel=self.kernel_size, stride=self.stride)

    def extra_repr(self):
        text = _show(self.kernel_size)
        return text if self.stride == self.kernel_size else text + f", stride={_show(self.stride)}"


class MaxPool2d(_Pool2d):
    """The maximum of each kernel_size window, windows `stride` apart (default: kernel_size,
    side by side): x (N, C, H, W) -> (N, C, OH, OW), OH = (H - kh) // sh + 1. The gradient
    of tied maxima goes to the first of them, as in PyTorch. One op, `ops.MaxPool2d`."""

    _op = ops.MaxPool2d


class AvgPool2d(_Pool2d):
    """The mean of each kernel_size window, windows `stride` apart (default: kernel_size):
    x (N, C, H, W) -> (N, C, OH, OW). One op, `ops.AvgPool2d`."""

    _op = ops.AvgPool2d


def _positive_int(owner, label, n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"{owner}: {label} must be a positive integer, got {n!r}")
    return int(n)


def _positive_number(owner, label, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}: {label} must be a positive number, got {value!r}")
    return float(value)


class BatchNorm1d(Module):
    """Batch normalization of x (N, num_features) per feature, with PyTorch's semantics.

    Training mode: normalize with the batch's mean and biased variance, and update the
    buffers running_mean (zeros) and running_var (ones) with `momentum`, the variance
    unbiased (and count the steps in num_batches_tracked). Eval mode: normalize with the
    running statistics. Then scale by `.weight` (gamma, ones) and shift by `.bias` (beta,
    zeros), both parameters. One fused op,
    `ops.BatchNorm1d`, which also updates the running statistics in place.
    """

    static_graph = True

    def __init__(self, num_features, eps=1e-5, momentum=0.1, *, dtype=np.float32):
        self.num_features = _positive_int("BatchNorm1d", "num_features", num_features)
        self.eps = _positive_number("BatchNorm1d", "eps", eps)
        if isinstance(momentum, bool) or not isinstance(
                momentum, (int, float, np.integer, np.floating)) or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm1d: momentum must be a number in [0, 1], "
                             f"got {momentum!r}")
        self.momentum = float(momentum)
        c = self.num_features
        self.weight = Tensor(np.ones(c, dtype=dtype), requires_grad=True, name="weight")
        self.bias = Tensor(np.zeros(c, dtype=dtype), requires_grad=True, name="bias")
        self.register_buffer("running_mean", np.zeros(c, dtype=dtype))
        self.register_buffer("running_var", np.ones(c, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))  # as torch

    def forward(self, x):
        x = _as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d({self.num_features}): expected input "
                             f"(N, {self.num_features}), got {_shape_str(x.shape)}")
        return ops.BatchNorm1d.apply(x, self.weight, self.bias, self.running_mean,
                                     self.running_var, self.num_batches_tracked,
                                     training=self.training, momentum=self.momentum,
                                     eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class LayerNorm(Module):
    """Layer normalization: each sample standardized over its last dimensions
    (`normalized_shape`, an int or a tuple), then scaled by `.weight` (ones) and shifted
    by `.bias` (zeros), both of that shape. One fused op, `ops.LayerNorm`."""

    static_graph = True

    def __init__(self, normalized_shape, eps=1e-5, *, dtype=np.float32):
        shape = ((normalized_shape,) if isinstance(normalized_shape, (int, np.integer))
                 else tuple(normalized_shape))
        if not shape:
            raise ValueError("LayerNorm: normalized_shape is empty")
        self.normalized_shape = tuple(_positive_int("LayerNorm", "normalized_shape", n)
                                      for n in shape)
        self.eps = _positive_number("LayerNorm", "eps", eps)
        self.weight = Tensor(np.ones(self.normalized_shape, dtype=dtype), requires_grad=True,
                             name="weight")
        self.bias = Tensor(np.zeros(self.normalized_shape, dtype=dtype), requires_grad=True,
                           name="bias")

    def forward(self, x):
        x = _as_tensor(x)
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != self.normalized_shape:
            dims = ", ".join(str(n) for n in self.normalized_shape)
            raise ValueError(f"LayerNorm({self.extra_repr()}): expected input (..., {dims}), "
                             f"got {_shape_str(x.shape)}")
        return ops.LayerNorm.apply(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return _shape_str(self.normalized_shape)


# ----------------------------------------------------------------------------- losses


def _check_reduction(reduction, owner):
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"{owner}: reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    return reduction


def _named_target(arr):
    t = Tensor._const(arr)
    t.name = "target"
    return t


def _target_array(target):
    return target.data if isinstance(target, Tensor) else np.asarray(target)


class BinaryCrossEntropy(Module):
    """The lecture's logistic cost on probabilities a: -sum(y log a + (1 - y) log(1 - a)).

    forward(a, y): a (n, t) probabilities; y 0/1 (or one-hot) of a's shape, or integer
    labels (n,) that are one-hot encoded. When `a` was made by a sigmoid, the cost is
    computed from the sigmoid's input z (stable, and its gradient is exactly a - y);
    otherwise each log is clamped at -100, so a = 0 or 1 is safe.
    """

    static_graph = True

    def __init__(self, reduction="sum"):
        self.reduction = _check_reduction(reduction, "BinaryCrossEntropy")

    def forward(self, a, y):
        a = _as_tensor(a)
        y = self._targets(a, y)
        ctx = a._ctx
        if ctx is not None and ctx.function is ops.Sigmoid:
            z = ctx.parents[0]
            return ops.SigmoidBinaryCrossEntropy.apply(z, a, y, reduction=self.reduction)
        return ops.BinaryCrossEntropy.apply(a, y, reduction=self.reduction)

    @staticmethod
    def _targets(a, y):
        if y.__class__ is np.ndarray and y.shape == a.data.shape and y.dtype is a.data.dtype:
            t = _new_tensor(y)  # the common case: 0/1 targets of the prediction's shape
            t.name = "target"
            return t
        if isinstance(y, Tensor) and (y.requires_grad or (y.shape == a.shape
                                                          and y.dtype == a.dtype)):
            return y
        arr = _target_array(y)
        if arr.shape == a.shape:
            if arr.dtype != a.dtype:
                arr = arr.astype(a.dtype)
            return _named_target(arr)
        if arr.ndim == 1 and a.ndim == 2 and arr.shape[0] == a.shape[0]:
            n_classes = a.shape[1]
            if arr.dtype.kind not in "iu":
                if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
                    arr = arr.astype(np.int64)
                else:
                    raise ValueError(f"BinaryCrossEntropy: labels of shape "
                                     f"{_shape_str(arr.shape)} must be integers, got dtype "
                                     f"{arr.dtype}")
            bad = (arr < 0) | (arr >= n_classes)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"BinaryCrossEntropy: label {int(arr[i])} at row {i} is "
                                 f"outside [0, {n_classes}) for predictions of shape "
                                 f"{_shape_str(a.shape)}")
            onehot = np.zeros(a.shape, dtype=a.dtype)
            onehot[np.arange(arr.shape[0]), arr] = 1.0
            return _named_target(onehot)
        raise ValueError(f"BinaryCrossEntropy: targets of shape {_shape_str(arr.shape)} do not "
                         f"match predictions of shape {_shape_str(a.shape)} (give 0/1 targets "
                         f"of the same shape, or integer labels of shape ({a.shape[0]},))")


class CrossEntropy(Module):
    """Softmax cross-entropy on logits: -log softmax(z)[label], averaged by default.

    forward(z, labels): z (n, classes) logits, labels (n,) integers in [0, classes)
    (one-hot rows are accepted and turned into labels). Stable for any finite logits.
    """

    static_graph = True

    def __init__(self, reduction="mean"):
        self.reduction = _check_reduction(reduction, "CrossEntropy")

    def forward(self, z, labels):
        z = _as_tensor(z)
        labels = _target_array(labels)
        if labels.ndim == 2 and labels.shape == z.shape:
            labels = labels.argmax(axis=1)
        return ops.SoftmaxCrossEntropy.apply(z, labels=labels, reduction=self.reduction)


class MSE(Module):
    """Mean (or summed) squared error: mean((pred - target)^2)."""

    static_graph = True

    def __init__(self, reduction="mean"):
        self.reduction = _check_reduction(reduction, "MSE")

    def forward(self, pred, target):
        pred = _as_tensor(pred)
        if not isinstance(target, Tensor):
            target = np.asarray(target, dtype=pred.dtype)
        tshape = target.shape
        if tshape != pred.shape:
            raise ValueError(f"MSE: target of shape {_shape_str(tshape)} does not match "
                             f"prediction of shape {_shape_str(pred.shape)}")
        diff = pred - target
        sq = diff * diff
        if self.reduction == "sum":
            return sq.sum()
        if self.reduction == "mean":
            return sq.mean()
        return sq


def dense_weights(module):
    """The weight Tensors of every Dense layer in `module`, in order (no biases)."""
    if isinstance(module, Sequential):  # the common case, without the generic walk
        out = []
        for layer in module.layers:
            if isinstance(layer, Dense):
                out.append(layer.weight)
            elif not isinstance(layer, (Sigmoid, ReLU, Tanh)):
                out.extend(dense_weights(layer))
        return out
    return [m.weight for m in module.modules() if isinstance(m, Dense)]


def l2_penalty(module, lam):
    """lam/2 * (sum of squared weights of every Dense layer in `module`), biases excluded.

    `module` may also be a list of weight Tensors. Its gradient with respect to each
    weight W is lam * W: the lecture's update term.
    """
    if isinstance(module, Module):
        weights = dense_weights(module)
    else:
        weights = list(module)
    lam = float(lam)
    if lam < 0 or not np.isfinite(lam):
        raise ValueError(f"l2_penalty: lam must be a finite number >= 0, got {lam}")
    if not weights:
        return Tensor(0.0)
    return ops.L2Penalty.apply(*weights, lam=lam)


# ----------------------------------------------------------------------------- summary


def _check_input_shape(input_shape):
    if isinstance(input_shape, (int, np.integer)) or input_shape is None:
        raise ValueError(f"summary: input_shape must be a tuple whose first entry is the "
                         f"batch size (an int or None), e.g. (None, 784); got {input_shape!r}")
    shape = tuple(input_shape)
    if not shape:
        raise ValueError("summary: input_shape is empty; give (batch, features), "
                         "e.g. (None, 784)")
    for i, n in enumerate(shape):
        if i == 0 and n is None:
            continue
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
            raise ValueError(f"summary: input_shape {shape!r} has entry {n!r} at position {i}; "
                             f"sizes must be positive integers (only the batch size, first, "
                             f"may be None)")
    return shape


def _own_tensors(module):
    return [v for v in vars(module).values() if isinstance(v, Tensor)]


def _shape_of(out, batch, symbolic):
    """Text for a module's output: '(None, 10)' for a Tensor, several for a tuple."""
    if isinstance(out, Tensor):
        shape = out.shape
        if symbolic and len(shape) >= 1 and shape[0] == batch:
            return "(None" + "".join(f", {n}" for n in shape[1:]) + ")"
        return _shape_str(shape)
    if isinstance(out, (tuple, list)):
        return ", ".join(_shape_of(o, batch, symbolic) for o in out)
    return type(out).__name__


def summary(model, input_shape, *, dtype=None, file=None, quiet=False):
    """Print and return a table of `model`'s layers, output shapes and parameter counts.

    input_shape: the input's shape with the batch size first, e.g. (None, 784) or (32, 784);
    a None batch runs the forward pass with one row and is shown as None. One forward pass
    on zeros of that shape (dtype: the parameters', else float32) runs under no_grad to
    record each module's output shape. A row per module that holds tensors itself or has
    no submodules (name as in `named_modules`, type, output shape, number of elements of its
    own tensors); the totals below sum the rows: trainable = tensors with requires_grad.
    quiet: return the text without printing it; file: where to print (default stdout).
    """
    shape = _check_input_shape(input_shape)
    symbolic = shape[0] is None
    batch = 1 if symbolic else int(shape[0])
    params = model.parameters()
    if dtype is None:
        dtype = params[0].dtype if params else np.float32
    x = Tensor(np.zeros((batch,) + shape[1:], dtype=dtype), dtype=dtype)

    named = list(model.named_modules())
    outputs = {}

    def recording(mod, forward):
        def wrapped(*args, **kwargs):
            out = forward(*args, **kwargs)
            outputs.setdefault(id(mod), out)
            return out
        return wrapped

    patched = []
    try:
        for _, mod in named:
            if "forward" not in vars(mod):  # an instance-level forward is left alone
                mod.forward = recording(mod, mod.forward)
                patched.append(mod)
        with _tensor.no_grad():
            model(x)
    finally:
        for mod in patched:
            del mod.forward

    rows, trainable, frozen, nbytes, seen = [], 0, 0, 0, set()
    for name, mod in named:
        tensors = [t for t in _own_tensors(mod) if id(t) not in seen]
        seen.update(id(t) for t in tensors)
        has_children = next(iter(mod._children()), None) is not None
        if has_children and not tensors:
            continue
        count = sum(t.size for t in tensors)
        trainable += sum(t.size for t in tensors if t.requires_grad)
        frozen += sum(t.size for t in tensors if not t.requires_grad)
        nbytes += sum(t.data.nbytes for t in tensors)
        extra = mod.extra_repr()
        kind = f"{type(mod).__name__}({extra})" if extra else type(mod).__name__
        out = _shape_of(outputs[id(mod)], batch, symbolic) if id(mod) in outputs \
            else "(not called)"
        rows.append((name or "(model)", kind, out, f"{count:,}"))

    header = ("Layer", "Type", "Output shape", "Param #")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]

    def line(cells):
        return "  ".join([c.ljust(w) for c, w in zip(cells[:3], widths[:3])]
                         + [cells[3].rjust(widths[3])]).rstrip()

    width = sum(widths) + 6
    input_text = "(None" + "".join(f", {n}" for n in shape[1:]) + ")" if symbolic \
        else _shape_str(shape)
    size = (f"{nbytes} B" if nbytes < 1024 else f"{nbytes / 1024:.2f} KB"
            if nbytes < 1024 ** 2 else f"{nbytes / 1024 ** 2:.2f} MB")
    lines = [f"Model: {type(model).__name__}, input {input_text}", "=" * width, line(header),
             "-" * width]
    lines += [line(r) for r in rows]
    lines += ["=" * width,
              f"Total params: {trainable + frozen:,}",
              f"Trainable params: {trainable:,}",
              f"Non-trainable params: {frozen:,}",
              f"Params size: {size}",
              "=" * width]
    text = "\n".join(lines)
    if not quiet:
        print(text, file=file)
    return text
