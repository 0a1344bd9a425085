"""The training loop: mini-batches as in the lecture, `fit`, `predict`, `accuracy`, `History`.

Batching follows the lecture: each epoch shuffles `np.arange(n)` with `rng.shuffle` and
walks it in full batches only (`range(0, n - batch_size + 1, batch_size)`). Given the same
`np.random.RandomState` that drew the weights, `fit` therefore replays the reference
`NeuralNetMLP` step for step.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import nn
from ._files import atomic_write
from .jit import jit
from .tensor import Tensor, no_grad

__all__ = ["History", "fit", "predict", "accuracy", "minibatches", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient."""


@dataclass
class History:
    """Per-epoch record of a run: `cost`, `train_acc`, `valid_acc` (fractions in [0, 1])
    and `time` (seconds of training, evaluation excluded), one entry per epoch."""

    cost: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    valid_acc: list = field(default_factory=list)
    time: list = field(default_factory=list)

    def as_dict(self):
        return {"cost": list(self.cost), "train_acc": list(self.train_acc),
                "valid_acc": list(self.valid_acc), "time": list(self.time)}

    def save(self, path):
        """Write the history as JSON, atomically."""
        atomic_write(path, lambda f: json.dump(self.as_dict(), f, indent=1), binary=False)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            d = json.load(f)
        return cls(**{k: list(d.get(k, [])) for k in ("cost", "train_acc", "valid_acc", "time")})

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


def predict(model, X, batch_size=10000):
    """Class labels (n,) int64: the argmax of the model's output, computed in batches
    under no_grad (no graph, bounded memory)."""
    X = _check_X(X)
    batch_size = _check_batch_size(batch_size, None)
    body, _ = _split_head(model)
    out = np.empty(X.shape[0], dtype=np.int64)
    with no_grad():
        for start in range(0, X.shape[0], batch_size):
            z = body(X[start:start + batch_size]).data
            out[start:start + batch_size] = z.argmax(axis=1)
    return out


def accuracy(model, X, y, batch_size=10000):
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
    """(cost, accuracy) over all of X in batches, one forward pass per batch."""
    body, head = _split_head(model)
    reduction = getattr(loss_fn, "reduction", "mean")
    total, correct = 0.0, 0
    with no_grad():
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
    with no_grad():
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

    def __init__(self, epochs, enabled):
        self.bar = None
        self.enabled = enabled
        self.epochs = epochs
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=epochs, unit="epoch", file=sys.stderr,
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
        eval_train=True, eval_batch_size=10000, check_finite=True, on_epoch_end=None,
        replay=True):
    """Train `model` with mini-batch steps of `optimizer` on loss_fn(model(X_batch), y_batch)
    (+ l2_penalty(model, l2)). Returns a History with one entry per epoch.

    X: (n, features); y: (n,) integer labels or targets of the output's shape.
    l2: the gradient of l2_penalty(model, l2), l2 * W for every Dense weight W that
    requires grad (a frozen weight stays as it is), is added to W.grad after each backward
    (the same as adding the penalty to the loss, without computing its value every step);
    History.cost includes the penalty's value.
    rng / seed: the RandomState that shuffles (pass the one that drew the weights to
    replay the lecture). schedule(step) -> learning rate, set before each step.
    eval_train: after each epoch, the cost and accuracy over all of X in one extra
    forward pass under no_grad (the lecture's eval_); if False, the running mean of the
    batch losses and the accuracy on the batches seen during the epoch.
    on_epoch_end(epoch, history): called after each epoch (e.g. to save a checkpoint).
    replay: True runs the steps through `jit` (jit.py): recorded, then replayed as compiled
    code, the same numbers bit for bit with less Python per step. False: build every graph.
    Stops with NonFiniteError (naming epoch, batch and parameter) at the first NaN/inf
    loss or gradient when check_finite.
    """
    X = _check_X(X)
    y_arr = y.data if isinstance(y, Tensor) else np.asarray(y)
    n = X.shape[0]
    if len(y_arr) != n:
        raise ValueError(f"fit: X has {n} rows but y has {len(y_arr)}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: epochs must be an integer >= 0, got {epochs!r}")
    batch_size = _check_batch_size(batch_size, n)
    if (X_valid is None) != (y_valid is None):
        raise ValueError("fit: give both X_valid and y_valid, or neither")
    if rng is None:
        rng = np.random.RandomState(seed)
    l2 = float(l2)
    if l2 < 0 or not math.isfinite(l2):
        raise ValueError(f"fit: l2 must be a finite number >= 0, got {l2}")

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
    history = History()
    if not eval_train:  # predictions on the batches seen, scored once per epoch
        preds = np.empty(n, dtype=np.intp)
    bar = _Progress(epochs, progress)
    step = 0
    step_fn, step_params = _step_function(model, loss_fn, replay), model.parameters()
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            run_loss = 0.0
            order = _epoch_order(n, rng, shuffle)
            run_rows = n - n % batch_size  # full batches only
            if replay and model.parameters() != step_params:  # on_epoch_end changed them
                step_fn, step_params = _step_function(model, loss_fn, replay), model.parameters()
            for batch, start in enumerate(range(0, run_rows, batch_size)):
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
                optimizer.step()
                step += 1
                if not eval_train:
                    run_loss += value
                    out_data.argmax(axis=1, out=preds[start:start + batch_size])
            if check_finite:
                for p in params:
                    if p.grad is not None and not np.isfinite(p.grad).all():
                        _raise_non_finite(p, names, epoch, "last", (), optimizer)
                    if not np.isfinite(p.data).all():
                        raise NonFiniteError(f"fit: parameter {names.get(id(p), '?')} "
                                             f"{p.shape} became non-finite during epoch "
                                             f"{epoch}")
            history.time.append(time.perf_counter() - t0)
            if eval_train:
                cost, train_acc = _evaluate(model, loss_fn, X, targets, labels,
                                            eval_batch_size)
                if l2:
                    with no_grad():
                        cost += float(nn.l2_penalty(model, l2).data)
            else:
                batches = max(1, n // batch_size)
                run_correct = int(np.count_nonzero(preds[:run_rows] == labels[order[:run_rows]]))
                cost, train_acc = run_loss / batches, run_correct / max(1, run_rows)
            history.cost.append(cost)
            history.train_acc.append(train_acc)
            text = f"cost {cost:.2f} | train {train_acc:.2%}"
            if X_valid is not None:
                history.valid_acc.append(accuracy(model, X_valid, y_valid, eval_batch_size))
                text += f" | valid {history.valid_acc[-1]:.2%}"
            text += f" | {history.time[-1]:.2f} s"
            bar.update(epoch, text)
            if on_epoch_end is not None:
                on_epoch_end(epoch, history)
    finally:
        bar.close()
    return history
