"""scikit-learn estimators built on the library: `MLPClassifier` and `MLPRegressor`.

    from tinygrad_mlp.estimators import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(100,), activation="sigmoid").fit(X, y)
    clf.predict(X), clf.predict_proba(X), clf.score(X, y)

They take scikit-learn's parameter names and follow its MLPs where the idea is the same, so
they drop into Pipeline, GridSearchCV and cross_val_score, and they pass scikit-learn's own
`check_estimator`. Inside, the network is an `nn.Sequential` of `nn.Dense` layers and
activations (`model_` after fit), trained by the library's autodiff and optimizers:

- the model: Dense(n_features, h1), act, ..., Dense(h_last, n_outputs); no final activation
  (the classifier's outputs are logits; predict_proba is their softmax). Weights are drawn
  by `np.random.RandomState(random_state)` with scikit-learn's variance (Glorot's:
  std = sqrt(2 / (fan_in + fan_out)), a third of that variance for the sigmoid).
- the loss of a batch of n rows: mean softmax cross-entropy (classifier) or half the mean
  squared error (regressor), plus `alpha / 2 * sum(W^2) / n` over the Dense weights (no
  biases): scikit-learn's L2 term, "divided by the sample size".
- every epoch shuffles the rows (`shuffle`) and walks them in batches of `batch_size`
  (`"auto"`: min(200, n)); the last batch may be smaller. `loss_curve_` holds each epoch's
  mean batch loss (weighted by batch size).
- stopping: after `max_iter` epochs (a ConvergenceWarning), or when `n_iter_no_change`
  epochs in a row fail to improve by `tol`: the training loss, or with `early_stopping`
  the score (accuracy or R^2) on a `validation_fraction` of the training rows held out
  (stratified for the classifier); early stopping ends with the best epoch's weights.
- `dtype`: "float64" (default, like scikit-learn) or "float32": the inputs are converted
  to it and the network computes in it.

Needs scikit-learn: pip install "tinygrad-mlp[sklearn]".
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
    from threadpoolctl import threadpool_limits
except ImportError as e:  # pragma: no cover - the extra is installed in the tests
    raise ImportError("tinygrad_mlp.estimators needs scikit-learn >= 1.6: "
                      "pip install 'tinygrad-mlp[sklearn]'") from e

from . import nn, optim
from .tensor import Tensor, no_grad

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "logistic": nn.Sigmoid,
                "tanh": nn.Tanh}
_DTYPES = ("float32", "float64")


class _BaseMLP(BaseEstimator):
    """What both estimators share: the parameters, the network, the training loop."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate_init=0.001, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, momentum=0.9,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 dtype="float64"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.momentum = momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype

    # -- checks ---------------------------------------------------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0:
                raise ValueError(f"{type(self).__name__}: hidden_layer_sizes must be positive "
                                 f"integers, got {self.hidden_layer_sizes!r}")
        return [int(s) for s in sizes]

    def _check_params(self):
        name = type(self).__name__

        def bad(what, value, expected):
            raise ValueError(f"{name}: {what} must be {expected}, got {value!r}")

        if self.activation not in _ACTIVATIONS:
            bad("activation", self.activation, "'relu', 'sigmoid' (or 'logistic') or 'tanh'")
        if self.solver not in ("sgd", "adam"):
            bad("solver", self.solver, "'sgd' or 'adam'")
        if self.dtype not in _DTYPES:
            bad("dtype", self.dtype, "'float32' or 'float64'")
        for what in ("alpha", "tol", "learning_rate_init", "momentum"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not np.isfinite(value) or value < 0 \
                    or (what == "learning_rate_init" and value == 0):
                bad(what, value, "a finite number " + (
                    "> 0" if what == "learning_rate_init" else ">= 0"))
        for what in ("max_iter", "n_iter_no_change"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                bad(what, value, "a positive integer")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral)
                                              and not isinstance(self.batch_size, bool)
                                              and self.batch_size >= 1)):
            bad("batch_size", self.batch_size, "'auto' or a positive integer")
        if not 0 < self.validation_fraction < 1:
            bad("validation_fraction", self.validation_fraction, "in (0, 1)")
        return self._hidden_sizes()

    # -- the network ----------------------------------------------------------------------
    def _build(self, n_in, n_out, sizes, rng):
        act = _ACTIVATIONS[self.activation]
        factor = 2.0 if act is nn.Sigmoid else 6.0  # scikit-learn's Glorot-uniform bound
        widths = [n_in] + sizes + [n_out]
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            std = float(np.sqrt(factor / 3.0 / (a + b)))
            layers.append(nn.Dense(a, b, init_std=std, rng=rng, dtype=np.dtype(self.dtype)))
            if i < len(widths) - 2:
                layers.append(act())
        return nn.Sequential(*layers)

    def _forward(self, X):
        """The network's outputs for X (already validated), no graph, in eval mode."""
        with no_grad():
            return self.model_(Tensor(X)).data

    # -- training -------------------------------------------------------------------------
    def _fit(self, X, y):
        """Train on X (n, features) and targets y (labels (n,) or values (n, outputs)).

        One BLAS thread while training: the matrices of a step are small (a batch of at
        most 200 rows), and a second OpenBLAS thread that waits for a busy core made a
        GridSearchCV on the digits take 116 s instead of 15 s on a loaded 2-core machine.
        """
        with threadpool_limits(limits=1, user_api="blas"):
            return self._train(X, y)

    def _train(self, X, y):
        sizes = self._check_params()
        rng = check_random_state(self.random_state)
        X_valid = y_valid = None
        if self.early_stopping:
            stratify = y if isinstance(self, ClassifierMixin) else None
            X, X_valid, y, y_valid = train_test_split(
                X, y, test_size=self.validation_fraction, random_state=rng, stratify=stratify)
        n = X.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        n_out = self._n_network_outputs()
        self.model_ = model = self._build(X.shape[1], n_out, sizes, rng)
        params = model.parameters()
        if self.solver == "adam":
            opt = optim.Adam(params, lr=self.learning_rate_init)
        else:
            opt = optim.SGD(params, lr=self.learning_rate_init, momentum=self.momentum)
        loss_fn = self._loss()
        alpha = float(self.alpha)

        self.loss_curve_ = []
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_loss_ = None if self.early_stopping else np.inf
        self.best_validation_score_ = -np.inf if self.early_stopping else None
        best_state, stale = None, 0
        model.train()
        for epoch in range(1, self.max_iter + 1):
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            total = 0.0
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                xb, yb = X[idx], y[idx]
                loss = loss_fn(model(Tensor(xb)), yb)
                if alpha:
                    loss = loss + nn.l2_penalty(model, alpha / len(idx))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.data) * len(idx)
            self.loss_curve_.append(total / n)
            if not np.isfinite(self.loss_curve_[-1]):
                raise FloatingPointError(
                    f"{type(self).__name__}: the training loss became "
                    f"{self.loss_curve_[-1]} in epoch {epoch}; lower learning_rate_init "
                    f"(now {self.learning_rate_init}) or scale the inputs")
            if self.early_stopping:
                model.eval()
                score = self._validation_score(X_valid, y_valid)
                model.train()
                self.validation_scores_.append(score)
                stale = stale + 1 if score < self.best_validation_score_ + self.tol else 0
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best_state = model.state_dict()
            else:
                last = self.loss_curve_[-1]
                stale = stale + 1 if last > self.best_loss_ - self.tol else 0
                self.best_loss_ = min(self.best_loss_, last)
            if stale > self.n_iter_no_change:
                break
        else:
            warnings.warn(f"{type(self).__name__}: stopped after max_iter={self.max_iter} "
                          f"epochs and the optimization has not converged yet",
                          ConvergenceWarning, stacklevel=4)
        self.n_iter_ = epoch
        if best_state is not None:
            model.load_state_dict(best_state)
        model.zero_grad()
        model.eval()
        return self

    # -- scikit-learn's attributes --------------------------------------------------------
    @property
    def coefs_(self):
        """The Dense weights, (in, out) each, as scikit-learn's MLPs give them."""
        check_is_fitted(self, "model_")
        return [layer.weight.data for layer in self.model_ if isinstance(layer, nn.Dense)]

    @property
    def intercepts_(self):
        check_is_fitted(self, "model_")
        return [layer.bias.data for layer in self.model_ if isinstance(layer, nn.Dense)]

    def _validated(self, X):
        check_is_fitted(self, "model_")
        return validate_data(self, X, reset=False, dtype=np.dtype(self.dtype))


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier: softmax over one output per class.

    Parameters (scikit-learn's names): hidden_layer_sizes (one width per hidden layer),
    activation ("relu", "sigmoid" or its scikit-learn name "logistic", "tanh"), solver
    ("adam", "sgd" with `momentum`), alpha (L2 strength), batch_size ("auto" = min(200, n)),
    learning_rate_init, max_iter (epochs), shuffle, random_state, tol, early_stopping,
    validation_fraction, n_iter_no_change, dtype ("float64" or "float32").

    After fit: classes_ (sorted labels, any type, strings too), n_features_in_,
    feature_names_in_ (for a DataFrame with string column names), loss_curve_, n_iter_,
    best_loss_, validation_scores_, best_validation_score_, model_ (the nn.Sequential),
    coefs_, intercepts_.
    """

    def fit(self, X, y):
        """Train on X (n, features) and labels y (n,); returns self."""
        X, y = validate_data(self, X, y, dtype=np.dtype(self.dtype))
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        return self._fit(X, y_index.reshape(-1))

    def _n_network_outputs(self):
        return len(self.classes_)

    def _loss(self):
        return nn.CrossEntropy()

    def _validation_score(self, X, y_index):
        return float(np.mean(self._forward(X).argmax(axis=1) == y_index))

    def predict_proba(self, X):
        """Class probabilities (n, n_classes), columns in the order of classes_."""
        z = self._forward(self._validated(X))
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """log of predict_proba(X)."""
        z = self._forward(self._validated(X))
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X):
        """The most probable class of each row (n,), from classes_."""
        z = self._forward(self._validated(X))
        return self.classes_[z.argmax(axis=1)]


class _HalfMSE(nn.Module):
    """scikit-learn's squared error: mean((pred - target)^2) / 2."""

    def __init__(self):
        self.mse = nn.MSE()

    def forward(self, pred, target):
        return self.mse(pred, target) * 0.5


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor: linear outputs, half the mean squared error.

    Parameters as MLPClassifier's. y may be (n,) or (n, outputs); predict returns the
    same shape. After fit: n_features_in_, feature_names_in_, n_outputs_, loss_curve_,
    n_iter_, best_loss_, validation_scores_, best_validation_score_, model_, coefs_,
    intercepts_.
    """

    def fit(self, X, y):
        """Train on X (n, features) and targets y (n,) or (n, outputs); returns self."""
        X, y = validate_data(self, X, y, dtype=np.dtype(self.dtype), multi_output=True,
                             y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self._single_output = y.ndim == 1
        y = np.asarray(y, dtype=np.dtype(self.dtype)).reshape(X.shape[0], -1)
        self.n_outputs_ = y.shape[1]
        return self._fit(X, y)

    def _n_network_outputs(self):
        return self.n_outputs_

    def _loss(self):
        return _HalfMSE()

    def _validation_score(self, X, y):
        from sklearn.metrics import r2_score

        return float(r2_score(y, self._forward(X)))

    def predict(self, X):
        """Predicted targets: (n,) when fit on (n,) targets, else (n, outputs)."""
        out = self._forward(self._validated(X))
        return out.ravel() if self._single_output else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
