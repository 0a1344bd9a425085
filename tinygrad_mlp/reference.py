"""The lecture's one-hidden-layer sigmoid MLP with backpropagation derived by hand, in NumPy.

This is the yardstick the library is measured against: no autodiff, every gradient written
out. Rows are samples. For a batch X (n, features) with one-hot targets Y (n, classes):

    forward     z_h = X w_h + b_h            a_h = sigmoid(z_h)         (n, hidden)
                z_out = a_h w_out + b_out    a_out = sigmoid(z_out)     (n, classes)
    cost        J = -sum(Y log a_out + (1 - Y) log(1 - a_out)) + l2/2 (|w_h|^2 + |w_out|^2)
    backward    delta_out = a_out - Y                                  (dJ/dz_out)
                delta_h = (delta_out w_out^T) * a_h (1 - a_h)          (dJ/dz_h)
                dJ/dw_out = a_h^T delta_out      dJ/db_out = column sums of delta_out
                dJ/dw_h   = X^T delta_h          dJ/db_h   = column sums of delta_h
    update      W <- W - eta (dJ/dW + l2 W) for both weights; biases without the l2 term.

delta_out = a_out - Y is where the logistic cost and the sigmoid meet: d/dz of
-(y log s(z) + (1 - y) log(1 - s(z))) is s(z) - y, so a_out (1 - a_out) cancels.

About the L2 term: the lecture prints the cost with `l2 * sum(w**2)` but updates with
`l2 * w`. The gradient of `l2 * sum(w**2)` is `2 * l2 * w`, so that cost is not the function
the updates descend; the one they do descend is `l2/2 * sum(w**2)`. `eval_['cost']` uses the
consistent l2/2 form (it equals the library's `History.cost`); `eval_['cost_lecture']`
keeps the lecture's printed number, for comparison with its plots. The updates are the
lecture's either way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NeuralNetMLP", "sigmoid", "one_hot"]


def sigmoid(z):
    """1 / (1 + exp(-z)), with z clipped to [-250, 250] so exp cannot overflow."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -250, 250)))


def one_hot(y, n_classes):
    """Integer labels (n,) -> (n, n_classes) float64 rows with a single 1."""
    y = np.asarray(y).astype(np.int64)
    out = np.zeros((y.shape[0], n_classes))
    out[np.arange(y.shape[0]), y] = 1.0
    return out


def logistic_cost(z_out, y_enc):
    """-sum(Y log a + (1 - Y) log(1 - a)) for a = sigmoid(z_out), computed from z_out.

    Per element that is softplus(z) - y z = max(z, 0) - y z + log(1 + exp(-|z|)): the same
    number as the log form, but finite where a rounds to exactly 0 or 1.
    """
    return float(np.sum(np.maximum(z_out, 0) - z_out * y_enc + np.log1p(np.exp(-np.abs(z_out)))))


class NeuralNetMLP:
    """Feedforward net: input -> sigmoid hidden layer -> sigmoid output layer.

    n_hidden: hidden units. l2: L2 strength (the update adds l2 * W to each weight
    gradient). epochs: passes over the training data. eta: learning rate. shuffle:
    reshuffle the rows every epoch. minibatch_size: rows per step; only full batches are
    used, so up to minibatch_size - 1 rows sit out each epoch. seed: of the single
    np.random.RandomState (`self.random`) that draws w_h, then w_out, then every shuffle.

    Parameters (after `fit` or `initialize`): w_h (features, hidden), b_h (hidden,),
    w_out (hidden, classes), b_out (classes,). `eval_` after `fit`: per epoch `cost`
    (logistic cost summed over the training rows + l2/2 * sum of squared weights),
    `cost_lecture` (the same with the lecture's l2 * sum of squared weights, see the
    module docstring), `train_acc` and `valid_acc` (fractions in [0, 1]).
    """

    def __init__(self, n_hidden=30, l2=0.0, epochs=100, eta=0.001, shuffle=True,
                 minibatch_size=1, seed=None):
        self.random = np.random.RandomState(seed)
        self.n_hidden = n_hidden
        self.l2 = l2
        self.epochs = epochs
        self.eta = eta
        self.shuffle = shuffle
        self.minibatch_size = minibatch_size

    # -- parameters ----------------------------------------------------------------------
    def initialize(self, n_features, n_output):
        """Zero biases; weights drawn from N(0, 0.1^2) by `self.random`, w_h first."""
        self.b_h = np.zeros(self.n_hidden)
        self.w_h = self.random.normal(0.0, 0.1, (n_features, self.n_hidden))
        self.b_out = np.zeros(n_output)
        self.w_out = self.random.normal(0.0, 0.1, (self.n_hidden, n_output))
        return self

    def sum_squared_weights(self):
        """|w_h|^2 + |w_out|^2 (biases are not penalized)."""
        return float(np.sum(self.w_h ** 2) + np.sum(self.w_out ** 2))

    # -- forward, cost, backward ---------------------------------------------------------
    def _forward(self, X):
        """(z_h, a_h, z_out, a_out) for a batch X (n, features)."""
        z_h = np.dot(X, self.w_h) + self.b_h
        a_h = sigmoid(z_h)
        z_out = np.dot(a_h, self.w_out) + self.b_out
        a_out = sigmoid(z_out)
        return z_h, a_h, z_out, a_out

    def _targets(self, y):
        y = np.asarray(y)
        return y if y.ndim == 2 else one_hot(y, self.w_out.shape[1])

    def cost(self, X, y, *, lecture_form=False):
        """Logistic cost of X summed over rows, plus l2/2 * sum(w^2) (l2 * sum(w^2) with
        `lecture_form`). y: one-hot (n, classes) or integer labels (n,)."""
        z_out = self._forward(X)[2]
        factor = 1.0 if lecture_form else 0.5
        return logistic_cost(z_out, self._targets(y)) + factor * self.l2 * \
            self.sum_squared_weights()

    def gradients(self, X, y_onehot):
        """Hand-derived gradients of the summed logistic cost of one batch, without the
        L2 term: dict of arrays w_h, b_h, w_out, b_out shaped like the parameters.
        y_onehot: (n, classes) targets (integer labels (n,) are one-hot encoded)."""
        y_enc = self._targets(y_onehot)
        _, a_h, _, a_out = self._forward(X)
        delta_out = a_out - y_enc                                  # dJ/dz_out  (n, classes)
        delta_h = np.dot(delta_out, self.w_out.T) * (a_h * (1.0 - a_h))  # dJ/dz_h (n, hidden)
        return {
            "w_h": np.dot(X.T, delta_h),
            "b_h": np.sum(delta_h, axis=0),
            "w_out": np.dot(a_h.T, delta_out),
            "b_out": np.sum(delta_out, axis=0),
        }

    def step(self, X, y_onehot):
        """One gradient-descent update on the batch (X, y_onehot), L2 on the weights."""
        g = self.gradients(X, y_onehot)
        self.w_h -= self.eta * (g["w_h"] + self.l2 * self.w_h)
        self.b_h -= self.eta * g["b_h"]
        self.w_out -= self.eta * (g["w_out"] + self.l2 * self.w_out)
        self.b_out -= self.eta * g["b_out"]

    # -- prediction and training ---------------------------------------------------------
    def predict(self, X):
        """Class labels (n,): the argmax of z_out (the same as of a_out, without the ties
        that saturated sigmoids would create)."""
        return np.argmax(self._forward(X)[2], axis=1)

    def fit(self, X_train, y_train, X_valid, y_valid):
        """Draw the weights, then train for `epochs` epochs of mini-batch gradient descent.

        y_train, y_valid: integer labels. The number of outputs is max(y_train) + 1 (the
        lecture counts the distinct labels, which is the same when every class occurs).
        Returns self.
        """
        y_train = np.asarray(y_train)
        y_valid = np.asarray(y_valid)
        n_output = int(np.max(y_train)) + 1
        self.initialize(X_train.shape[1], n_output)
        y_train_enc = one_hot(y_train, n_output)
        self.eval_ = {"cost": [], "cost_lecture": [], "train_acc": [], "valid_acc": []}
        n, size = X_train.shape[0], self.minibatch_size
        for _ in range(self.epochs):
            order = np.arange(n)
            if self.shuffle:
                self.random.shuffle(order)
            for start in range(0, n - size + 1, size):  # full batches only
                rows = order[start:start + size]
                self.step(X_train[rows], y_train_enc[rows])
            data_cost = logistic_cost(self._forward(X_train)[2], y_train_enc)
            penalty = self.l2 * self.sum_squared_weights()
            self.eval_["cost"].append(data_cost + 0.5 * penalty)
            self.eval_["cost_lecture"].append(data_cost + penalty)
            self.eval_["train_acc"].append(float(np.mean(self.predict(X_train) == y_train)))
            self.eval_["valid_acc"].append(float(np.mean(self.predict(X_valid) == y_valid)))
        return self
