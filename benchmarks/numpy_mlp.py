"""The baseline: the lecture's MLP trained by a hand-written NumPy loop (the delta rule).

784-H-10, sigmoid hidden and output layers, logistic cost summed over the batch, L2 on the
weights, plain SGD; the forward pass, the backward deltas and the update are written out
by hand exactly as the lecture's NeuralNetMLP does:

    a_h = sigmoid(X w_h + b_h),  a_out = sigmoid(a_h w_out + b_out)
    delta_out = a_out - y,  delta_h = (delta_out w_out^T) * a_h (1 - a_h)
    w_h -= eta (X^T delta_h + l2 w_h),  b_h -= eta sum(delta_h)   (likewise for w_out, b_out)

No cost is computed during the steps (the lecture computes it once per epoch, outside the
timed loop here too).
"""

from __future__ import annotations

import time

import numpy as np


def clip_bound(dtype):
    """|z| beyond which sigmoid is clipped: exp(-z) cannot overflow in `dtype`."""
    return 250.0 if dtype == np.float64 else 88.0


def sigmoid(z):
    """The lecture's logistic function; the clip bound fits the dtype (exp cannot overflow)."""
    bound = clip_bound(z.dtype)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -bound, bound)))


class NumpyMLP:
    """Parameters w_h (784, H), b_h (H,), w_out (H, 10), b_out (10,), drawn like the lecture's:
    rng.normal(0, 0.1) for the weights (hidden first), zeros for the biases."""

    def __init__(self, n_in=784, n_hidden=100, n_out=10, *, rng=None, seed=1, dtype=np.float64):
        rng = np.random.RandomState(seed) if rng is None else rng
        self.w_h = rng.normal(0.0, 0.1, (n_in, n_hidden)).astype(dtype)
        self.b_h = np.zeros(n_hidden, dtype=dtype)
        self.w_out = rng.normal(0.0, 0.1, (n_hidden, n_out)).astype(dtype)
        self.b_out = np.zeros(n_out, dtype=dtype)

    def forward(self, X):
        a_h = sigmoid(np.dot(X, self.w_h) + self.b_h)
        a_out = sigmoid(np.dot(a_h, self.w_out) + self.b_out)
        return a_h, a_out

    def step(self, X, Y, eta, l2):
        """One SGD step on a batch X (n, 784) with one-hot targets Y (n, 10)."""
        a_h, a_out = self.forward(X)
        delta_out = a_out - Y
        delta_h = np.dot(delta_out, self.w_out.T) * (a_h * (1.0 - a_h))
        grad_w_h = np.dot(X.T, delta_h)
        grad_b_h = np.sum(delta_h, axis=0)
        grad_w_out = np.dot(a_h.T, delta_out)
        grad_b_out = np.sum(delta_out, axis=0)
        self.w_h -= eta * (grad_w_h + l2 * self.w_h)
        self.b_h -= eta * grad_b_h
        self.w_out -= eta * (grad_w_out + l2 * self.w_out)
        self.b_out -= eta * grad_b_out

    def epoch(self, X, Y, rng, *, eta=0.0005, l2=0.01, batch_size=100):
        """One epoch as the lecture runs it: shuffle the row indices, full batches only."""
        for _ in self.epoch_steps(X, Y, rng, eta=eta, l2=l2, batch_size=batch_size):
            pass

    def epoch_steps(self, X, Y, rng, *, eta=0.0005, l2=0.01, batch_size=100):
        """The steps of `epoch`, yielding after each (to interleave it with other runs)."""
        indices = np.arange(X.shape[0])
        rng.shuffle(indices)
        for start in range(0, X.shape[0] - batch_size + 1, batch_size):
            idx = indices[start:start + batch_size]
            self.step(self.gather(X, idx), self.gather(Y, idx), eta, l2)
            yield

    @staticmethod
    def gather(A, idx):
        """The rows idx of A, as the lecture takes them."""
        return A[idx]

    def predict(self, X):
        return np.argmax(np.dot(sigmoid(np.dot(X, self.w_h) + self.b_h), self.w_out)
                         + self.b_out, axis=1)


class LeanMLP(NumpyMLP):
    """NumpyMLP written for speed instead of to mirror the lecture: a reference for how fast
    hand-written NumPy can train this network (benchmarks/run.py, rows 1c, 1d and 2**).

    Every per-step array is allocated once and reused; the sigmoids, deltas and updates
    run in place. The work is the same as the library's fast path minus what a general
    training loop adds (the loss value, finite checks, running accuracy, calls through
    recorded ops).

    fold_lr=False: NumpyMLP's arithmetic, operation for operation (the weights equal
    NumpyMLP's bit for bit): gradients, + l2 W, then w -= eta (grad + l2 w), four passes
    over each weight, as the library's fit + SGD make.
    fold_lr=True: eta is folded into the deltas before the weight-gradient products
    (X^T (eta delta_h) = eta grad_w_h) and the decay applied as w *= 1 - eta l2: two passes
    over each weight. A general autodiff cannot take this shortcut: it never forms the
    gradient. The same numbers up to rounding (in float32 the factor 1 - eta l2 itself is
    rounded, which changes the decay by up to 1%).
    """

    @staticmethod
    def gather(A, idx):
        """The rows idx of A: `take`, about 10% faster than A[idx] for scattered rows."""
        return A.take(idx, axis=0)

    def __init__(self, *args, fold_lr=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fold_lr = fold_lr
        self._buffers = {}

    def _buffers_for(self, n, eta, l2):
        key = (n, eta, l2)
        b = self._buffers.get(key)
        if b is None:
            dtype = self.w_h.dtype
            hidden, out = self.w_h.shape[1], self.w_out.shape[1]
            bound = clip_bound(dtype)
            b = self._buffers[key] = {
                "a_h": np.empty((n, hidden), dtype), "a_out": np.empty((n, out), dtype),
                "delta_h": np.empty((n, hidden), dtype), "slope": np.empty((n, hidden), dtype),
                "grad_w_h": np.empty_like(self.w_h), "grad_w_out": np.empty_like(self.w_out),
                "scratch_h": np.empty_like(self.w_h), "scratch_out": np.empty_like(self.w_out),
                "eta": np.array(eta, dtype), "l2": np.array(l2, dtype),
                "decay": np.array(1.0 - eta * l2, dtype), "one": np.array(1.0, dtype),
                "lo": np.array(-bound, dtype), "hi": np.array(bound, dtype)}
        return b

    @staticmethod
    def _sigmoid_inplace(z, b):
        np.clip(z, b["lo"], b["hi"], out=z)
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += b["one"]
        np.divide(b["one"], z, out=z)
        return z

    def step(self, X, Y, eta, l2, marks=None):
        """One step on a batch X (n, 784), one-hot Y (n, 10). marks: a list, or None; when
        given, time.perf_counter() is appended after each of the five stages (forward
        layer 1, forward layer 2, backward layer 2, backward layer 1, the updates) for
        benchmarks/step_stages.py."""
        b = self._buffers_for(X.shape[0], eta, l2)
        z_h = np.dot(X, self.w_h, out=b["a_h"])
        z_h += self.b_h
        a_h = self._sigmoid_inplace(z_h, b)
        _mark(marks)
        z_out = np.dot(a_h, self.w_out, out=b["a_out"])
        z_out += self.b_out
        delta_out = self._sigmoid_inplace(z_out, b)
        _mark(marks)
        delta_out -= Y                                      # a_out - y
        if self.fold_lr:
            delta_out *= b["eta"]
        grad_w_out = np.dot(a_h.T, delta_out, out=b["grad_w_out"])
        delta_h = np.dot(delta_out, self.w_out.T, out=b["delta_h"])
        _mark(marks)
        slope = np.subtract(b["one"], a_h, out=b["slope"])
        slope *= a_h
        delta_h *= slope                                    # (delta_out w_out^T) a_h (1 - a_h)
        grad_w_h = np.dot(X.T, delta_h, out=b["grad_w_h"])
        _mark(marks)
        for w, grad, bias, delta, scratch in (
                (self.w_h, grad_w_h, self.b_h, delta_h, b["scratch_h"]),
                (self.w_out, grad_w_out, self.b_out, delta_out, b["scratch_out"])):
            if self.fold_lr:                                # grad is eta * gradient already
                w *= b["decay"]
                w -= grad
                bias -= np.add.reduce(delta, axis=0)
            else:
                grad += np.multiply(w, b["l2"], out=scratch)
                w -= np.multiply(grad, b["eta"], out=scratch)
                bias -= np.multiply(np.add.reduce(delta, axis=0), b["eta"])
        _mark(marks)


def _mark(marks):
    if marks is not None:
        marks.append(time.perf_counter())


def one_hot(y, n_classes=10, dtype=np.float64):
    out = np.zeros((len(y), n_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1.0
    return out
