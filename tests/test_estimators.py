"""tinygrad_mlp.estimators: scikit-learn's own check suite, and the estimators at work in
scikit-learn's tools (Pipeline, GridSearchCV, cross_val_score, pickle).

scikit-learn's `check_array_api_input` runs only when SCIPY_ARRAY_API is set (else it skips):
set here, before scikit-learn and SciPy are imported, so that every check runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pickle  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits, load_iris, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from tinygrad_mlp import nn  # noqa: E402
from tinygrad_mlp.estimators import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_scikit_learn_check_estimator(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def test_classifier_learns_iris_with_string_labels_and_gives_probabilities(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = _quiet(MLPClassifier(hidden_layer_sizes=(16,), random_state=0, max_iter=300,
                               learning_rate_init=0.01).fit,
                 X, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    assert clf.score(X, names) > 0.95
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    assert np.allclose(np.exp(clf.predict_log_proba(X)), proba)
    assert clf.n_features_in_ == 4 and clf.n_iter_ == len(clf.loss_curve_)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    # the network is the library's: Dense 4 -> 16, ReLU, Dense 16 -> 3
    kinds = [type(m) for m in clf.model_]
    assert kinds == [nn.Dense, nn.ReLU, nn.Dense]
    assert [w.shape for w in clf.coefs_] == [(4, 16), (16, 3)]


def test_dataframe_columns_become_feature_names(iris):
    import pandas as pd  # the dev extra installs it
    X, y = iris
    frame = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    clf = _quiet(MLPClassifier(hidden_layer_sizes=(8,), random_state=0, max_iter=50).fit,
                 frame, y)
    assert list(clf.feature_names_in_) == ["sl", "sw", "pl", "pw"]
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame.rename(columns={"sl": "other"}))


def test_float32_and_float64(iris):
    X, y = iris
    proba = {}
    for dtype in ("float32", "float64"):
        clf = _quiet(MLPClassifier(hidden_layer_sizes=(8,), random_state=1, max_iter=30,
                                   batch_size=32, learning_rate_init=0.01, dtype=dtype).fit,
                     X, y)
        assert all(p.dtype == np.dtype(dtype) for p in clf.model_.parameters())
        proba[dtype] = clf.predict_proba(X)
        assert proba[dtype].dtype == np.dtype(dtype)
        assert clf.score(X, y) > 0.8
    # the same initial draws and steps: float32 follows float64 to its rounding
    assert np.allclose(proba["float32"], proba["float64"], atol=1e-3)


def test_pickle_round_trip_predicts_the_same(iris):
    X, y = iris
    clf = _quiet(MLPClassifier(hidden_layer_sizes=(8, 8), activation="tanh", random_state=0,
                               max_iter=40).fit, X, y)
    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict_proba(X), clf.predict_proba(X))
    Xr, yr = make_regression(n_samples=80, n_features=5, n_targets=2, random_state=0)
    reg = _quiet(MLPRegressor(hidden_layer_sizes=(10,), random_state=0, max_iter=40).fit,
                 Xr, yr)
    assert np.array_equal(pickle.loads(pickle.dumps(reg)).predict(Xr), reg.predict(Xr))
    assert reg.predict(Xr).shape == (80, 2)


def test_pipeline_grid_search_and_cross_val_score(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=60, random_state=0,
                                                       learning_rate_init=0.01))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(2,), (20,)],
                               "mlpclassifier__activation": ["relu", "sigmoid"]}, cv=3)
    _quiet(grid.fit, X, y)
    assert len(grid.cv_results_["mean_test_score"]) == 4
    assert grid.best_params_["mlpclassifier__hidden_layer_sizes"] == (20,)
    assert grid.best_score_ > 0.85
    scores = _quiet(cross_val_score, MLPClassifier(hidden_layer_sizes=(10,), random_state=0,
                                                   max_iter=100, learning_rate_init=0.01),
                    X, y, cv=5)
    assert scores.shape == (5,) and scores.mean() > 0.85


def test_early_stopping_keeps_the_best_validation_epoch():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    clf = MLPClassifier(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=3,
                        validation_fraction=0.2, random_state=0, max_iter=200,
                        learning_rate_init=0.01)
    clf.fit(X, y)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # stopped after n_iter_no_change + 1 epochs without a better score by tol
    best = int(np.argmax(clf.validation_scores_))
    assert clf.n_iter_ - 1 - best >= clf.n_iter_no_change + 1
    assert clf.best_loss_ is None
    # the weights are the best epoch's: the held-out rows (same split) score that value
    from sklearn.model_selection import train_test_split

    _, X_valid, _, y_valid = train_test_split(X, y, test_size=0.2, stratify=y,
                                              random_state=np.random.RandomState(0))
    assert clf.score(X_valid, y_valid) == pytest.approx(clf.best_validation_score_)


def test_one_sgd_step_equals_scikit_learns_from_the_same_weights():
    """Loss, L2 term (alpha/2 sum W^2 / n) and update follow scikit-learn's MLPRegressor."""
    X, y = make_regression(n_samples=40, n_features=3, random_state=0)
    y = y / y.std()
    kw = dict(hidden_layer_sizes=(5,), activation="tanh", solver="sgd", momentum=0.0,
              alpha=0.3, batch_size=40, learning_rate_init=0.05, shuffle=False)
    ours = _quiet(MLPRegressor(max_iter=1, random_state=0, **kw).fit, X, y)
    # the documented initial weights: RandomState(0) draws N(0, 2/(fan_in+fan_out)) per layer
    rng = np.random.RandomState(0)
    w0 = [rng.normal(0, np.sqrt(2 / (3 + 5)), (3, 5)), rng.normal(0, np.sqrt(2 / 6), (5, 1))]
    sk = SkMLPRegressor(max_iter=1, random_state=0, **kw)
    _quiet(sk.partial_fit, X, y)  # sets up the network, then start it from our weights
    sk.coefs_ = [w.copy() for w in w0]
    sk.intercepts_ = [np.zeros(5), np.zeros(1)]
    _quiet(sk.partial_fit, X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        assert np.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert ours.loss_curve_[0] == pytest.approx(sk.loss_curve_[-1], rel=1e-10)


def test_bad_parameters_are_named_at_fit(iris):
    X, y = iris
    for params, word in [({"activation": "softplus"}, "activation"),
                         ({"solver": "lbfgs"}, "solver"),
                         ({"hidden_layer_sizes": (10, 0)}, "hidden_layer_sizes"),
                         ({"dtype": "float16"}, "dtype"),
                         ({"alpha": -1.0}, "alpha"),
                         ({"max_iter": 0}, "max_iter"),
                         ({"batch_size": 0}, "batch_size"),
                         ({"validation_fraction": 1.0}, "validation_fraction")]:
        with pytest.raises(ValueError, match=word):
            MLPClassifier(**params).fit(X, y)


def test_diverging_training_is_reported():
    X, y = make_regression(n_samples=50, n_features=4, random_state=0)
    reg = MLPRegressor(solver="sgd", learning_rate_init=10.0, momentum=0.9, max_iter=50,
                       random_state=0)
    with pytest.raises(FloatingPointError, match="learning_rate_init"), \
            np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reg.fit(X * 100, y * 100)
