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

import numpy as np


def sigmoid(z):
    """The lecture's logistic function; the clip bound fits the dtype (exp cannot overflow)."""
    bound = 250.0 if z.dtype == np.float64 else 88.0
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
            self.step(X[idx], Y[idx], eta, l2)
            yield

    def predict(self, X):
        return np.argmax(np.dot(sigmoid(np.dot(X, self.w_h) + self.b_h), self.w_out)
                         + self.b_out, axis=1)


def one_hot(y, n_classes=10, dtype=np.float64):
    out = np.zeros((len(y), n_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1.0
    return out
