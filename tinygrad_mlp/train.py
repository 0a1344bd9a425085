"""The training loop: mini-batches as in the lecture, `fit`, `predict`, `accuracy`, `History`.

Batching follows the lecture: each epoch shuffles `np.arange(n)` with `rng.shuffle` and
walks it in full batches only (`range(0, n - batch_size + 1, batch_size)`). Given the same
`np.random.RandomState` that drew the weights, `fit` therefore replays the reference
`NeuralNetMLP` step for step.

`fit` also writes checkpoints that a later call resumes from exactly (the file format is in
_checkpoint.py), stops early when the validation accuracy stops improving, and records
training diagnostics (gradient and weight norms, saturated and dead units).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import _checkpoint, nn
from ._checkpoint import CheckpointError
from ._files import atomic_write
from .jit import jit
from .tensor import Tensor, no_grad

__all__ = ["History", "fit", "predict", "accuracy", "minibatches", "NonFiniteError",
           "CheckpointError"]


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient."""


@dataclass
class History:
    """Per-epoch record of a run: `cost`, `train_acc`, `valid_acc` (fractions in [0, 1])
    and `time` (seconds of training, evaluation excluded), one entry per epoch.

    best_epoch: the (1-based) epoch with the highest validation accuracy (the first of
    ties), None without validation data. diagnostics: filled by fit(diagnostics=True),
    name -> {statistic: one value per epoch} (see `fit`)."""

    cost: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    valid_acc: list = field(default_factory=list)
    time: list = field(default_factory=list)
    best_epoch: int | None = None
    diagnostics: dict = field(default_factory=dict)

    _LISTS = ("cost", "train_acc", "valid_acc", "time")

    def as_dict(self):
        d = {k: list(getattr(self, k)) for k in self._LISTS}
        d["best_epoch"] = self.best_epoch
        d["diagnostics"] = {name: {k: list(v) for k, v in stats.items()}
                            for name, stats in self.diagnostics.items()}
        return d

    @classmethod
    def from_dict(cls, d):
        """The History of `as_dict()` (missing entries empty)."""
        return cls(**{k: list(d.get(k, [])) for k in cls._LISTS},
                   best_epoch=d.get("best_epoch"),
                   diagnostics={name: {k: list(v) for k, v in stats.items()}
                                for name, stats in d.get("diagnostics", {}).items()})

    def save(self, path):
        """Write the history as JSON, atomically."""
        atomic_write(path, lambda f: json.dump(self.as_dict(), f, indent=1), binary=False)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def __len__(self):
        return len(self.cost)


def _epoch_order(n, rng, shuffle):
    """The row order of one epoch: np.arange(n), shuffled in place by `rng` (the lecture's)."""
    indices = np.arange(n)
    if shuffle:
        rng.shuffle(indices)
    return indices


def minibatches(n, batch_size, rng=None, shuffle=True):
    """Index arrays of the full mini-batches of one epoch (the lecture's order)."""
    indices = _epoch_order(n, rng, shuffle)
    for start in range(0, n - batch_size + 1, batch_size):
        yield indices[start:start + batch_size]


# ----------------------------------------------------------------------------- evaluation


_MONOTONIC = (nn.Sigmoid, nn.Tanh)


def _split_head(model):
    """(body, head): head is a final monotonic activation whose argmax equals its input's.

    Taking the argmax before a final sigmoid avoids ties between saturated outputs
    (sigmoid(z) rounds to exactly 1.0 for large z), as the lecture's predict does.
    """
    if isinstance(model, nn.Sequential) and len(model) > 1 and isinstance(model[-1], _MONOTONIC):
        return model[:-1], model[-1]
    return model, None


def _check_X(X, what="X"):
    X = X.data if isinstance(X, Tensor) else np.asarray(X)
    if X.ndim < 1 or X.shape[0] == 0:
        raise ValueError(f"{what} must have at least one row, got shape {X.shape}")
    return X


EVAL_ROWS, EVAL_ROWS_CONV = 10000, 1000


def _eval_batch_size(model, batch_size):
    """batch_size, or for None the default: EVAL_ROWS rows, or EVAL_ROWS_CONV for a model
    with a convolution (im2col makes a batch's windows kh kw times its images: 10,000 MNIST
    images through LeNet-5's first layer would hold 0.8 GB of columns in float32)."""
    if batch_size is None:
        has_conv = any(isinstance(m, nn.Conv2d) for m in getattr(model, "modules", list)())
        return EVAL_ROWS_CONV if has_conv else EVAL_ROWS
    return _check_batch_size(batch_size, None)


def predict(model, X, batch_size=None):
    """Class labels (n,) int64: the argmax of the model's output, computed in batches of
    `batch_size` rows (None: `_eval_batch_size`'s default) under no_grad (no graph, bounded
    memory), in eval mode (the modes are restored)."""
    X = _check_X(X)
    batch_size = _eval_batch_size(model, batch_size)
    body, _ = _split_head(model)
    out = np.empty(X.shape[0], dtype=np.int64)
    with no_grad(), nn._in_mode(model, False):
        for start in range(0, X.shape[0], batch_size):
            z = body(X[start:start + batch_size]).data
            out[start:start + batch_size] = z.argmax(axis=1)
    return out


def accuracy(model, X, y, batch_size=None):
    """Fraction of rows of X whose predicted class equals y (a float in [0, 1])."""
    y = _labels(y)
    X = _check_X(X)
    if len(y) != X.shape[0]:
        raise ValueError(f"accuracy: X has {X.shape[0]} rows but y has {len(y)} labels")
    return float(np.mean(predict(model, X, batch_size) == y))


def _labels(y):
    y = y.data if isinstance(y, Tensor) else np.asarray(y)
    if y.ndim == 2:
        return y.argmax(axis=1)
    return y


def _evaluate(model, loss_fn, X, targets, labels, batch_size):
    """(cost, accuracy) over all of X in batches, one forward pass per batch, in eval mode."""
    body, head = _split_head(model)
    reduction = getattr(loss_fn, "reduction", "mean")
    total, correct = 0.0, 0
    with no_grad(), nn._in_mode(model, False):
        for start in range(0, X.shape[0], batch_size):
            stop = start + batch_size
            z = body(X[start:stop])
            out = head(z) if head is not None else z
            value = float(loss_fn(out, targets[start:stop]).data)
            total += value * (out.shape[0] if reduction == "mean" else 1)
            correct += int(np.sum(z.data.argmax(axis=1) == labels[start:stop]))
    if reduction == "mean":
        total /= X.shape[0]
    return total, correct / X.shape[0]


# ----------------------------------------------------------------------------- fit


def _check_batch_size(batch_size, n):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if n is not None and batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training rows "
                         f"(only full batches are used, so no step would run)")
    return int(batch_size)


def _output_width(model, X):
    with no_grad(), nn._in_mode(model, False):  # eval: no Dropout draw, no running-stat update
        out = model(X[:1])
    return out.shape[-1] if out.ndim > 1 else 1


def _check_labels(y, n_classes, what):
    if y.ndim != 1:
        return
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise ValueError(f"{what}: labels must be integers, got non-integer floats")
    elif y.dtype.kind not in "iu":
        raise ValueError(f"{what}: labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)]
        raise ValueError(f"{what}: label {bad[0]} is outside [0, {n_classes}): the model "
                         f"has {n_classes} outputs ({len(bad)} bad label(s))")


class _Progress:
    """One line per epoch on stderr: tqdm's bar when installed, plain lines otherwise."""

    def __init__(self, epochs, enabled, initial=0):
        self.bar = None
        self.enabled = enabled
        self.epochs = epochs
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=epochs, initial=initial, unit="epoch", file=sys.stderr,
                                dynamic_ncols=True, leave=True)
            except ImportError:
                self.bar = None

    def update(self, epoch, text):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        else:
            width = len(str(self.epochs))
            print(f"Epoch {epoch:0{width}d}/{self.epochs} | {text}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _describe(epoch, batch, idx):
    """Where in training a problem arose: epoch, batch and the data rows of that batch."""
    if not len(idx):
        return f"epoch {epoch}, batch {batch}"
    rows = ", ".join(str(int(i)) for i in idx[:4]) + (", ..." if len(idx) > 4 else "")
    return f"epoch {epoch}, batch {batch} (rows {rows})"


_SMALL = 65536


def _first_non_finite(params, default):
    """The first parameter (in order) whose gradient is not finite; else `default`."""
    for p in params:
        if p.grad is not None and not np.isfinite(p.grad).all():
            return p
    return default


def _raise_non_finite(p, names, epoch, batch, idx, optimizer):
    raise NonFiniteError(f"fit: the gradient of {names.get(id(p), 'a parameter')} {p.shape} "
                         f"became non-finite at {_describe(epoch, batch, idx)}; training "
                         f"stopped before updating (lr={optimizer.lr})")


def _add_l2(w, l2, buffers):
    """w.grad += l2 * w.data after a backward, without a new array per step.

    (The engine gives a leaf a gradient of its own shape and dtype.)"""
    data, g = w.data, w.grad
    if g is None:
        w.grad = l2 * data
        return
    entry = buffers.get(id(w))
    if entry is None or entry[0] is not data:  # (data, l2 as a 0-d array, scratch array)
        entry = buffers[id(w)] = (data, np.array(l2, dtype=data.dtype), np.empty_like(data))
    g += np.multiply(data, entry[1], entry[2])


class _DeferInterrupt:
    """Ctrl-C (SIGINT) waits for the end of the current block: `enter()` ... `leave()`.

    Installed only in the main thread over Python's default handler (elsewhere a signal
    cannot interrupt). A SIGINT between enter() and leave() is noted and raised as
    KeyboardInterrupt by leave(), so a training step runs whole or not at all."""

    def __init__(self):
        self.depth, self.pending, self.torn, self.previous = 0, False, False, None

    def install(self):
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def uninstall(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handler(self, signum, frame):
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def enter(self):
        self.depth += 1

    def leave(self):
        self.depth -= 1
        if self.pending and not self.depth:
            self.pending = False
            raise KeyboardInterrupt

    def interrupted(self):
        """Called on a KeyboardInterrupt: was it raised inside a block (state torn)?"""
        self.torn = self.depth > 0
        self.depth = 0
        return self.torn


_ACTIVATIONS = (nn.Sigmoid, nn.Tanh, nn.ReLU)


class _Diagnostics:
    """fit(diagnostics=True): per parameter the mean over the epoch's steps of the gradient
    norm and of |update| / |weight|, the weight norm at the end of the epoch; per
    activation module the saturated (Sigmoid, Tanh) or dead (ReLU) fraction."""

    def __init__(self, model, params, names):
        self.params = params
        self.names = [names.get(id(p), f"param{i}") for i, p in enumerate(params)]
        self.before = [None] * len(params)
        self.reset()
        self.activations = [(name, m) for name, m in model.named_modules()
                            if isinstance(m, _ACTIVATIONS)] \
            if isinstance(model, nn.Module) else []

    def reset(self):
        """Start an epoch: sums and counts of the per-step norms."""
        k = len(self.params)
        self.sums = {"grad_norm": [0.0] * k, "update_ratio": [0.0] * k,
                     "grad_steps": [0] * k, "ratio_steps": [0] * k}

    def before_step(self):
        for i, p in enumerate(self.params):
            if p.grad is None:
                self.before[i] = None
                continue
            self.sums["grad_norm"][i] += _norm(p.grad)
            self.sums["grad_steps"][i] += 1
            self.before[i] = p.data.copy()

    def after_step(self):
        for i, p in enumerate(self.params):
            old = self.before[i]
            if old is None:
                continue
            weight = _norm(old)
            if weight > 0:  # (a bias still at its zero initialization has no ratio)
                self.sums["update_ratio"][i] += _norm(p.data - old) / weight
                self.sums["ratio_steps"][i] += 1
            self.before[i] = None

    def end_epoch(self, model, X, rows, batch_size, history):
        s = self.sums
        for i, (name, p) in enumerate(zip(self.names, self.params)):
            d = history.diagnostics.setdefault(name, {"grad_norm": [], "weight_norm": [],
                                                      "update_ratio": []})
            d["grad_norm"].append(s["grad_norm"][i] / s["grad_steps"][i]
                                  if s["grad_steps"][i] else math.nan)
            d["weight_norm"].append(_norm(p.data))
            d["update_ratio"].append(s["update_ratio"][i] / s["ratio_steps"][i]
                                     if s["ratio_steps"][i] else math.nan)
        for name, value in self._activation_stats(model, X, rows, batch_size).items():
            key = "dead" if isinstance(dict(self.activations)[name], nn.ReLU) else "saturated"
            history.diagnostics.setdefault(name, {key: []})[key].append(value)

    def _activation_stats(self, model, X, rows, batch_size):
        """One no_grad forward in eval mode over the epoch's rows (X[rows]), watching each
        activation's output: the fraction of outputs within 0.01 of an asymptote
        (Sigmoid: 0 and 1; Tanh: -1 and 1), or of units never positive (ReLU)."""
        if not self.activations:
            return {}
        counts = {name: [0, 0] for name, _ in self.activations}  # saturated, seen
        ever_positive = {}

        def watch(name, mod):
            inner = type(mod).forward

            def forward(x):
                out = inner(mod, x)
                a = out.data
                if isinstance(mod, nn.ReLU):
                    pos = (a > 0).reshape(a.shape[0], -1).any(axis=0)
                    ever_positive[name] = ever_positive.get(name, False) | pos
                else:
                    lo = 0.0 if isinstance(mod, nn.Sigmoid) else -1.0
                    counts[name][0] += int(np.count_nonzero((a <= lo + 0.01) | (a >= 0.99)))
                    counts[name][1] += a.size
                return out

            mod.forward = forward  # an instance attribute over the class's forward

        try:
            for name, mod in self.activations:
                watch(name, mod)
            with no_grad(), nn._in_mode(model, False):
                for start in range(0, len(rows), batch_size):
                    model(X.take(rows[start:start + batch_size], axis=0))
        finally:
            for _, mod in self.activations:
                vars(mod).pop("forward", None)
        stats = {}
        for name, mod in self.activations:
            if isinstance(mod, nn.ReLU):
                pos = ever_positive.get(name)
                stats[name] = math.nan if pos is None else float(1.0 - np.mean(pos))
            else:
                sat, seen = counts[name]
                stats[name] = sat / seen if seen else math.nan
        return stats


def _norm(a):
    """The Euclidean norm of all entries of `a`, as a float (computed in float64)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    return float(np.sqrt(np.dot(a, a)))


def _hyperparameters(optimizer, schedule):
    """The optimizer's hyperparameters (JSON-able); lr left out when a schedule sets it."""
    names = getattr(optimizer, "hyperparameters", ("lr",))
    hyper = {k: getattr(optimizer, k) for k in names if not (k == "lr" and schedule)}
    return json.loads(json.dumps({k: list(v) if isinstance(v, tuple) else v
                                  for k, v in hyper.items()}))


def _resume_problems(meta, arrays, model, optimizer, gens, settings):
    """What keeps a checkpoint from continuing this run (a list of strings)."""
    problems = []
    saved = _checkpoint.prefixed(arrays, "model:")
    mine = model.state_dict()
    missing = [k for k in mine if k not in saved]
    unexpected = [k for k in saved if k not in mine]
    if missing:
        problems.append(f"the model has {missing}, the checkpoint does not")
    if unexpected:
        problems.append(f"the checkpoint has {unexpected}, the model does not")
    for name, a in mine.items():
        b = saved.get(name)
        if b is not None and (b.shape != a.shape or b.dtype != a.dtype):
            problems.append(f"{name} is {b.dtype} {b.shape} in the checkpoint, {a.dtype} "
                            f"{a.shape} in the model")
    if meta["optimizer"]["class"] != type(optimizer).__name__:
        problems.append(f"the checkpoint holds the state of {meta['optimizer']['class']}, "
                        f"the optimizer is {type(optimizer).__name__}")
    else:
        state = _checkpoint.optimizer_state(meta, arrays)
        problems += [f"optimizer: {p}" for p in optimizer._state_problems(state)]
    for key, value in settings.items():
        if meta["settings"].get(key) != value:
            problems.append(f"{key} is {meta['settings'].get(key)!r} in the checkpoint, "
                            f"{value!r} now")
    layout = _checkpoint.generator_layout(gens)
    if meta["generators"]["layout"] != layout:
        problems.append(f"random generators {meta['generators']['layout']} in the "
                        f"checkpoint, {layout} now (name: [kind, the name that shares it])")
    return problems


def _step_function(model, loss_fn, use_jit):
    """The forward of one training step, xb, yb -> (model output, loss): compiled by `jit`
    (the same numbers, bit for bit, with less Python per step), or, if not use_jit, a
    function that builds the graph anew at every step."""
    def forward_step(xb, yb):
        out = model(xb)
        return out, loss_fn(out, yb)

    return jit(forward_step) if use_jit else forward_step


def fit(model, loss_fn, optimizer, X, y, *, epochs, batch_size, shuffle=True, rng=None,
        seed=None, X_valid=None, y_valid=None, l2=0.0, progress=True, schedule=None,
        eval_train=True, eval_batch_size=None, check_finite=True, on_epoch_end=None,
        replay=True, checkpoint=None, resume=None, early_stopping=None, restore_best=True,
        diagnostics=False):
    """Train `model` with mini-batch steps of `optimizer` on loss_fn(model(X_batch), y_batch)
    (+ l2_penalty(model, l2)). Returns a History with one entry per epoch.

    X: (n, features); y: (n,) integer labels or targets of the output's shape.
    The steps run in training mode; the evaluation passes in eval mode; at the end every
    module has the mode it had before.
    l2: the gradient of l2_penalty(model, l2), l2 * W for every Dense weight W that
    requires grad (a frozen weight stays as it is), is added to W.grad after each backward
    (the same as adding the penalty to the loss, without computing its value every step);
    History.cost includes the penalty's value.
    rng / seed: the RandomState that shuffles (pass the one that drew the weights to
    replay the lecture). schedule(step) -> learning rate, set before each step.
    eval_train: after each epoch, the cost and accuracy over all of X in one extra
    forward pass under no_grad (the lecture's eval_); if False, the running mean of the
    batch losses and the accuracy on the batches seen during the epoch.
    eval_batch_size: rows per batch of those evaluations (None: 10,000, or 1,000 for a
    model with a convolution; see `predict`).
    on_epoch_end(epoch, history): called after each epoch.
    replay: True runs the steps through `jit` (jit.py): recorded, then replayed as compiled
    code, the same numbers bit for bit with less Python per step. False: build every graph.
    Stops with NonFiniteError (naming epoch, batch and parameter) at the first NaN/inf
    loss or gradient when check_finite.

    checkpoint=PATH: after every epoch (after on_epoch_end), an atomic .npz checkpoint of
    everything the run needs to go on: model.state_dict() (weights and buffers),
    optimizer.state_dict(), the state of every random generator the run draws from (the
    shuffling rng and every RandomState/Generator attribute of a module, e.g. Dropout's),
    the position in the epoch, the step count the schedule reads, the History and the
    run's settings. Ctrl-C waits for the end of the current step, writes a (mid-epoch)
    checkpoint and re-raises KeyboardInterrupt.
    resume=PATH: load such a checkpoint, restoring generators in place, and go on; the
    final weights and History (all but `time`) are bit-identical to the uninterrupted
    run's. `epochs` counts the whole run, the checkpoint's epochs included. A corrupt
    file, or one from another model (names, shapes, dtypes), optimizer or settings
    (batch_size, shuffle, l2, data, ...) raises CheckpointError naming the file and what
    differs, before anything changes.
    early_stopping=N: stop after N epochs in a row without a higher validation accuracy
    (needs X_valid); with restore_best the model ends with the weights and buffers of
    the best epoch (History.best_epoch).
    diagnostics=True: History.diagnostics[name] gets one value per epoch: for each
    parameter `grad_norm` (mean over the epoch's steps of the norm of the gradient the
    step used), `weight_norm` (at the end of the epoch) and `update_ratio` (mean over the
    steps of |p_after - p_before| / |p_before|, steps with |p_before| = 0 left out); for
    each Sigmoid/Tanh module `saturated` (fraction of outputs within 0.01 of the
    asymptotes) and each ReLU `dead` (fraction of units never positive), measured at the
    end of the epoch in one extra no_grad, eval-mode forward over the epoch's batches.
    Diagnostics only read: the training numbers are the same with or without them.
    """
    X = _check_X(X)
    y_arr = y.data if isinstance(y, Tensor) else np.asarray(y)
    n = X.shape[0]
    if len(y_arr) != n:
        raise ValueError(f"fit: X has {n} rows but y has {len(y_arr)}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: epochs must be an integer >= 0, got {epochs!r}")
    batch_size = _check_batch_size(batch_size, n)
    eval_batch_size = _eval_batch_size(model, eval_batch_size)
    if (X_valid is None) != (y_valid is None):
        raise ValueError("fit: give both X_valid and y_valid, or neither")
    if rng is None:
        rng = np.random.RandomState(seed)
    l2 = float(l2)
    if l2 < 0 or not math.isfinite(l2):
        raise ValueError(f"fit: l2 must be a finite number >= 0, got {l2}")
    if early_stopping is not None:
        if isinstance(early_stopping, bool) or not isinstance(early_stopping, (int, np.integer)) \
                or early_stopping <= 0:
            raise ValueError(f"fit: early_stopping must be a positive integer (epochs without "
                             f"improvement), got {early_stopping!r}")
        if X_valid is None:
            raise ValueError("fit: early_stopping needs validation data (X_valid, y_valid)")
        early_stopping = int(early_stopping)
    if (checkpoint is not None or resume is not None) and not hasattr(optimizer, "state_dict"):
        raise TypeError(f"fit: checkpoint/resume need an optimizer with state_dict(), got "
                        f"{type(optimizer).__name__}")

    n_out = _output_width(model, X)
    _check_labels(y_arr, n_out, "fit: y")
    targets, labels = y_arr, _labels(y_arr)
    if isinstance(loss_fn, nn.BinaryCrossEntropy) and y_arr.ndim == 1 and n_out > 1:
        targets = np.zeros((n, n_out), dtype=X.dtype if X.dtype.kind == "f" else np.float32)
        targets[np.arange(n), y_arr.astype(np.int64)] = 1.0  # one-hot once, not per batch
    if X_valid is not None:
        X_valid = _check_X(X_valid, "X_valid")
        y_valid = _labels(y_valid)
        if len(y_valid) != X_valid.shape[0]:
            raise ValueError(f"fit: X_valid has {X_valid.shape[0]} rows but y_valid has "
                             f"{len(y_valid)}")
        _check_labels(y_valid, n_out, "fit: y_valid")

    params = optimizer.params
    l2_weights = nn.dense_weights(model)
    l2_buffers = {}  # per weight: l2 as a 0-d array of its dtype and a scratch array
    # Gradients checked every step: the biases (else the small parameters). A Dense
    # weight's gradient x^T delta is non-finite only if delta (then the bias gradient, its
    # column sums) or x (then the loss) is; every gradient is checked again at the end of
    # each epoch. The error names the first parameter (in order) with a bad gradient.
    small_params = [p for p in params if p.size <= _SMALL]
    step_checked = [p for p in small_params if p.ndim == 1] or small_params
    names = {id(p): name for name, p in model.named_parameters()}
    n_batches = n // batch_size  # full batches only
    run_rows = n_batches * batch_size
    preds = np.empty(n, dtype=np.intp) if not eval_train else None  # batch predictions
    diag = _Diagnostics(model, params, names) if diagnostics else None
    step_fn, step_params = _step_function(model, loss_fn, replay), model.parameters()

    # -- the run's state: everything a checkpoint holds ------------------------------------
    history = History()
    step = 0            # optimizer steps so far (what the schedule reads)
    epochs_done = 0     # whole epochs, history included
    in_epoch = False    # an epoch is in progress: its order, next batch and sums count
    order, batch_next, run_loss, elapsed = None, 0, 0.0, 0.0
    best_acc, bad_epochs, stopped, best_state = -1.0, 0, False, None
    gens = _checkpoint.generators(model, loss_fn, rng) if checkpoint or resume else {}
    settings = {} if not (checkpoint or resume) else {
        "rows": n, "X": [list(X.shape), X.dtype.str], "y": [list(y_arr.shape), y_arr.dtype.str],
        "data": _checkpoint.fingerprint(X, y_arr),
        "valid": None if X_valid is None else _checkpoint.fingerprint(X_valid, y_valid),
        "batch_size": batch_size, "shuffle": bool(shuffle), "l2": l2,
        "eval_train": bool(eval_train), "schedule": schedule is not None,
        "early_stopping": early_stopping, "restore_best": bool(restore_best),
        "diagnostics": bool(diagnostics), "hyperparameters": _hyperparameters(optimizer, schedule)}
    keep_best = early_stopping is not None and restore_best

    def save_checkpoint():
        meta = {"settings": settings, "step": step, "history": history.as_dict(),
                "position": {"epochs_done": epochs_done, "in_epoch": in_epoch,
                             "next_batch": batch_next, "stopped": stopped},
                "epoch": {"run_loss": run_loss, "elapsed": elapsed,
                          "diagnostics": diag.sums if diag is not None else None},
                "early_stopping": {"best_acc": best_acc, "bad_epochs": bad_epochs},
                "generators": {"layout": _checkpoint.generator_layout(gens),
                               "states": {k: _checkpoint.generator_state(g)
                                          for k, g in gens.items()}}}
        opt_state = optimizer.state_dict()
        meta["optimizer"] = {"class": opt_state["optimizer"], "steps": opt_state["steps"],
                             "hyperparameters": opt_state["hyperparameters"],
                             "n_params": len(opt_state["state"])}
        arrays = {f"model:{k}": v for k, v in model.state_dict().items()}
        arrays.update(_checkpoint.optimizer_arrays(opt_state))
        if best_state is not None:
            arrays.update({f"best:{k}": v for k, v in best_state.items()})
        if in_epoch:
            arrays["order"] = order
            if preds is not None:
                arrays["epoch:preds"] = preds
        _checkpoint.write(checkpoint, meta, arrays)

    if resume is not None:
        meta, arrays = _checkpoint.read(resume)
        try:
            problems = _resume_problems(meta, arrays, model, optimizer, gens, settings)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"fit: {resume} is not a complete checkpoint of fit "
                                  f"({type(e).__name__}: {e})") from None
        if problems:
            raise CheckpointError(f"fit: cannot resume from {resume}: " + "; ".join(problems))
        pos, ep = meta["position"], meta["epoch"]
        model.load_state_dict(_checkpoint.prefixed(arrays, "model:"), source=resume)
        optimizer.load_state_dict(_checkpoint.optimizer_state(meta, arrays), source=resume)
        for name, g in gens.items():
            _checkpoint.set_generator_state(g, meta["generators"]["states"][name])
        history = History.from_dict(meta["history"])
        step, epochs_done, stopped = meta["step"], pos["epochs_done"], pos["stopped"]
        best_acc = meta["early_stopping"]["best_acc"]
        bad_epochs = meta["early_stopping"]["bad_epochs"]
        best_state = _checkpoint.prefixed(arrays, "best:") or None
        if pos["in_epoch"]:
            in_epoch, order, batch_next = True, arrays["order"], pos["next_batch"]
            run_loss, elapsed = ep["run_loss"], ep["elapsed"]
            if preds is not None:
                preds[:] = arrays["epoch:preds"]
            if diag is not None:
                diag.sums = ep["diagnostics"]

    bar = _Progress(epochs, progress, initial=min(epochs_done, epochs))
    guard = _DeferInterrupt().install()
    saved_at = None  # (epochs_done, batch_next, step) of the last checkpoint written
    outer_modes = nn._in_mode(model, True)  # train mode for the steps; every mode back at the end
    outer_modes.__enter__()
    t0 = time.perf_counter()
    try:
        for epoch in range(epochs_done + 1, epochs + 1):
            if stopped:
                break
            guard.enter()  # a new epoch's order and the position change together
            if not in_epoch:
                order = _epoch_order(n, rng, shuffle)
                in_epoch, batch_next, run_loss, elapsed = True, 0, 0.0, 0.0
                if diag is not None:
                    diag.reset()
            guard.leave()
            t0 = time.perf_counter()
            if replay and model.parameters() != step_params:  # on_epoch_end changed them
                step_fn, step_params = _step_function(model, loss_fn, replay), model.parameters()
            for batch in range(batch_next, n_batches):
                guard.enter()  # Ctrl-C waits for the end of the step
                start = batch * batch_size
                idx = order[start:start + batch_size]
                if schedule is not None:
                    optimizer.lr = float(schedule(step))
                optimizer.zero_grad()
                # (take: the rows of X[idx], in about 10% less time for scattered rows; the
                # method, not np.take, which adds a Python wrapper)
                xb, yb = X.take(idx, axis=0), targets.take(idx, axis=0)
                out, loss = step_fn(xb, yb)
                out_data, loss_data = out.data, loss.data
                value = float(loss_data)
                if check_finite and not math.isfinite(value):
                    raise NonFiniteError(f"fit: the loss became {value} at "
                                         f"{_describe(epoch, batch, idx)}; training stopped "
                                         f"before updating (lr={optimizer.lr})")
                loss.backward()
                if l2:  # the gradient of l2_penalty(model, l2): + l2 * W, as the lecture adds it
                    for w in l2_weights:
                        if w.requires_grad:  # a frozen weight takes no penalty gradient
                            _add_l2(w, l2, l2_buffers)
                if check_finite:
                    for p in step_checked:
                        g = p.grad
                        if g is not None and not math.isfinite(np.add.reduce(g, axis=None)):
                            _raise_non_finite(_first_non_finite(params, p), names, epoch,
                                              batch, idx, optimizer)
                if diag is not None:
                    diag.before_step()
                optimizer.step()
                if diag is not None:
                    diag.after_step()
                step += 1
                batch_next = batch + 1
                if not eval_train:
                    run_loss += value
                    out_data.argmax(axis=1, out=preds[start:start + batch_size])
                guard.leave()
            if check_finite:
                for p in params:
                    if p.grad is not None and not np.isfinite(p.grad).all():
                        _raise_non_finite(p, names, epoch, "last", (), optimizer)
                    if not np.isfinite(p.data).all():
                        raise NonFiniteError(f"fit: parameter {names.get(id(p), '?')} "
                                             f"{p.shape} became non-finite during epoch "
                                             f"{epoch}")
            seconds = elapsed + time.perf_counter() - t0
            # the epoch's record, computed first (Ctrl-C may stop this), then stored at once
            if eval_train:
                cost, train_acc = _evaluate(model, loss_fn, X, targets, labels,
                                            eval_batch_size)
                if l2:
                    with no_grad():
                        cost += float(nn.l2_penalty(model, l2).data)
            else:
                run_correct = int(np.count_nonzero(preds[:run_rows] == labels[order[:run_rows]]))
                cost, train_acc = run_loss / max(1, n_batches), run_correct / max(1, run_rows)
            valid_acc = (accuracy(model, X_valid, y_valid, eval_batch_size)
                         if X_valid is not None else None)
            record = History()
            if diag is not None:
                diag.end_epoch(model, X, order[:run_rows], eval_batch_size, record)
            guard.enter()
            history.time.append(seconds)
            history.cost.append(cost)
            history.train_acc.append(train_acc)
            if valid_acc is not None:
                history.valid_acc.append(valid_acc)
                if valid_acc > best_acc:
                    best_acc, bad_epochs, history.best_epoch = valid_acc, 0, epoch
                    if keep_best:
                        best_state = model.state_dict()
                else:
                    bad_epochs += 1
                    stopped = early_stopping is not None and bad_epochs >= early_stopping
            for name, stats in record.diagnostics.items():
                for key, values in stats.items():
                    history.diagnostics.setdefault(name, {}).setdefault(key, []).extend(values)
            epochs_done, in_epoch, order, batch_next = epoch, False, None, 0
            guard.leave()
            text = f"cost {cost:.2f} | train {train_acc:.2%}"
            if valid_acc is not None:
                text += f" | valid {valid_acc:.2%}"
            text += f" | {seconds:.2f} s"
            bar.update(epoch, text)
            if on_epoch_end is not None:
                on_epoch_end(epoch, history)
            if checkpoint is not None:
                guard.enter()
                save_checkpoint()
                saved_at = (epochs_done, batch_next, step)
                guard.leave()
        if keep_best and best_state is not None:
            model.load_state_dict(best_state, source=f"the best epoch ({history.best_epoch})")
    except KeyboardInterrupt:
        if not guard.interrupted() and checkpoint is not None \
                and saved_at != (epochs_done, batch_next, step):
            if in_epoch:
                elapsed += time.perf_counter() - t0
            save_checkpoint()
        raise
    finally:
        guard.uninstall()
        outer_modes.__exit__(None, None, None)
        bar.close()
    return history
