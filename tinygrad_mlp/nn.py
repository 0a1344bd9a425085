"""Layers and losses built from the engine's ops: their gradients come from autodiff.

Rows are samples, as in the lecture: a Dense layer maps X (n, in) to X @ W + b (n, out)
with W of shape (in, out).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import OrderedDict

import numpy as np

from . import ops
from . import tensor as _tensor
from .tensor import Tensor, _shape_str

__all__ = [
    "Module",
    "Dense",
    "Sigmoid",
    "ReLU",
    "Tanh",
    "Sequential",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "MSE",
    "l2_penalty",
    "dense_weights",
]


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor._const(x)


# ----------------------------------------------------------------------------- Module


class Module:
    """Base class: a callable with parameters (Tensors with requires_grad) and submodules.

    Parameters and submodules are found among the attributes (and lists/tuples of modules)
    in the order they were assigned, so `parameters()` has a stable order.
    """

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def __call__(self, *args, **kwargs):
        stack = _tensor._module_stack
        stack.append(self)
        try:
            return self.forward(*args, **kwargs)
        finally:
            stack.pop()

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

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # -- state ----------------------------------------------------------------------------
    def state_dict(self):
        """Name -> copy of each parameter's array (an OrderedDict)."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state, *, source="state_dict"):
        """Copy arrays into the parameters. Checks every name, shape and dtype kind first:
        on any mismatch raises ValueError and leaves the model untouched."""
        params = OrderedDict(self.named_parameters())
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
            p.grad = None

    def save(self, path):
        """Write the parameters to a NumPy .npz file, atomically (temp file + rename)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        buf = io.BytesIO()
        np.savez(buf, **self.state_dict())
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load(self, path):
        """Load parameters saved by `save`; a file that does not fit leaves the model as it was."""
        path = os.fspath(path)
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


# ----------------------------------------------------------------------------- layers


def _init_std(init_std, in_features, out_features):
    if isinstance(init_std, str):
        if init_std == "he":
            return float(np.sqrt(2.0 / in_features))
        if init_std in ("xavier", "glorot"):
            return float(np.sqrt(2.0 / (in_features + out_features)))
        raise ValueError(f"Dense: init_std must be a number, 'he' or 'xavier', got {init_std!r}")
    return float(init_std)


class Dense(Module):
    """Affine layer: forward(x) = x @ weight + bias.

    x: (n, in_features) -> (n, out_features). weight: (in_features, out_features), drawn by
    rng.normal(0.0, init_std, (in_features, out_features)) from `rng` (a
    np.random.RandomState; else RandomState(seed)); bias: zeros (out_features,).
    init_std may also be 'he' (sqrt(2/in)) or 'xavier' (sqrt(2/(in+out))).
    """

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

    def forward(self, x):
        return ops.Sigmoid.apply(x)


class ReLU(Module):
    """Elementwise max(x, 0)."""

    def forward(self, x):
        return ops.ReLU.apply(x)


class Tanh(Module):
    """Elementwise tanh(x)."""

    def forward(self, x):
        return ops.Tanh.apply(x)


class Sequential(Module):
    """Modules applied in order: Sequential(Dense(784, 100), Sigmoid(), ...). Indexable."""

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

    def __init__(self, reduction="sum"):
        self.reduction = _check_reduction(reduction, "BinaryCrossEntropy")

    def forward(self, a, y):
        a = _as_tensor(a)
        y = self._targets(a, y)
        if a.op == "sigmoid":
            z = a.parents[0]
            return ops.SigmoidBinaryCrossEntropy.apply(z, a, y, reduction=self.reduction)
        return ops.BinaryCrossEntropy.apply(a, y, reduction=self.reduction)

    @staticmethod
    def _targets(a, y):
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
