"""The lecture's hand-derived MLP (reference.NeuralNetMLP) against the library's autodiff.

Autodiff gradients equal the delta formulas, and the library's `fit` replays the
reference's training step for step when both use the same RandomState.
"""

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from tinygrad_mlp import Tensor, nn, optim, train
from tinygrad_mlp.reference import NeuralNetMLP, logistic_cost, one_hot, sigmoid
from tinygrad_mlp.testing import assert_gradients_match

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = [("0.weight", "w_h"), ("0.bias", "b_h"), ("2.weight", "w_out"), ("2.bias", "b_out")]


def lecture_model(rng, n_in=784, n_hidden=100, n_out=10):
    return nn.Sequential(nn.Dense(n_in, n_hidden, rng=rng, dtype=np.float64), nn.Sigmoid(),
                         nn.Dense(n_hidden, n_out, rng=rng, dtype=np.float64), nn.Sigmoid())


def prototype_data(n, n_features=784, n_classes=10, noise=0.6, seed=0):
    """Learnable synthetic digits: a random prototype per class plus noise, in [-1, 1]."""
    rng = np.random.RandomState(seed)
    protos = rng.uniform(-1, 1, (n_classes, n_features))
    y = rng.randint(0, n_classes, n)
    X = np.clip(protos[y] + noise * rng.normal(size=(n, n_features)), -1, 1)
    return X, y


def assert_close_to_scale(actual, expected, rel=1e-9):
    """Every element within rel * (largest |expected|): relative to the array's scale."""
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale)


# ----------------------------------------------------------------------------- weights


def test_weights_are_drawn_as_the_lecture_draws_them():
    ref = NeuralNetMLP(n_hidden=7, seed=3).initialize(5, 4)
    rng = np.random.RandomState(3)
    np.testing.assert_array_equal(ref.w_h, rng.normal(0.0, 0.1, (5, 7)))
    np.testing.assert_array_equal(ref.w_out, rng.normal(0.0, 0.1, (7, 4)))
    assert ref.b_h.shape == (7,) and not ref.b_h.any()
    assert ref.b_out.shape == (4,) and not ref.b_out.any()
    # the next draw of ref.random is the first shuffle: the same as rng's next draw
    assert ref.random.randint(1 << 30) == rng.randint(1 << 30)


def test_library_layers_from_one_rng_draw_the_references_weights():
    model = lecture_model(np.random.RandomState(11), 6, 5, 3)
    ref = NeuralNetMLP(n_hidden=5, seed=11).initialize(6, 3)
    params = dict(model.named_parameters())
    for lib, mine in PAIRS:
        np.testing.assert_array_equal(params[lib].data, getattr(ref, mine))


def test_sigmoid_and_cost_are_finite_where_the_log_form_is_not():
    z = np.array([[-1000.0, 0.0, 1000.0]])
    a = sigmoid(z)  # z clipped to [-250, 250]: no overflow in exp
    assert a[0, 0] == np.exp(-250.0) / (1.0 + np.exp(-250.0)) and a[0, 1] == 0.5
    assert a[0, 2] == 1.0
    y = np.array([[1.0, 0.0, 0.0]])  # both saturated rows are wrong: cost 1000 each
    assert logistic_cost(z, y) == pytest.approx(2000.0 + np.log(2.0), rel=1e-15)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_autodiff_gradients_equal_the_delta_formulas(l2):
    """Sequential(Dense(784,100), Sigmoid(), Dense(100,10), Sigmoid()) with
    BinaryCrossEntropy(sum) + l2_penalty: autodiff == hand gradients + l2 W, float64."""
    X, y = prototype_data(64, seed=1)
    model = lecture_model(np.random.RandomState(1))
    ref = NeuralNetMLP(n_hidden=100, l2=l2, seed=1).initialize(784, 10)
    Y = one_hot(y, 10)
    hand = {mine: g + (l2 * getattr(ref, mine) if mine.startswith("w") else 0.0)
            for mine, g in ref.gradients(X, Y).items()}
    assert all(np.abs(g).max() > 0 for g in hand.values())
    # every element within 1e-9 of the smallest parameter's gradient scale, and 1e-9 relative
    atol = 1e-9 * min(np.abs(g).max() for g in hand.values())
    report = assert_gradients_match(hand, model, nn.BinaryCrossEntropy(reduction="sum"), X, Y,
                                    l2=l2, names={mine: lib for lib, mine in PAIRS},
                                    atol=atol, rtol=1e-9)
    assert [(row["name"], row["hand_name"]) for row in report.rows] == PAIRS
    assert all(row["diagnosis"] == "match" and row["shape"] == getattr(ref, row["hand_name"]).shape
               for row in report.rows)
    assert all(p.grad is None for p in model.parameters())  # the check leaves .grad alone
    cost = nn.BinaryCrossEntropy(reduction="sum")(model(Tensor(X)), Y)
    if l2:
        cost = cost + nn.l2_penalty(model, l2)
    assert float(cost.data) == pytest.approx(ref.cost(X, Y), rel=1e-12)


def test_hand_gradients_are_the_gradients_of_the_consistent_cost():
    """Finite differences: gradients() + l2 W is d/dW of cost (l2/2 form); the lecture's
    printed cost (l2 form) has 2 l2 W instead."""
    rng = np.random.RandomState(4)
    X, y = rng.normal(size=(6, 5)), rng.randint(0, 3, 6)
    l2, eps = 0.3, 1e-6
    ref = NeuralNetMLP(n_hidden=4, l2=l2, seed=2).initialize(5, 3)
    hand = ref.gradients(X, one_hot(y, 3))
    for name in ("w_h", "b_h", "w_out", "b_out"):
        p = getattr(ref, name)
        for lecture_form, factor in ((False, 1.0), (True, 2.0)):
            numeric = np.zeros_like(p)
            for i in np.ndindex(p.shape):
                orig = p[i]
                p[i] = orig + eps
                plus = ref.cost(X, y, lecture_form=lecture_form)
                p[i] = orig - eps
                minus = ref.cost(X, y, lecture_form=lecture_form)
                p[i] = orig
                numeric[i] = (plus - minus) / (2 * eps)
            expected = hand[name] + (factor * l2 * p if name.startswith("w") else 0.0)
            np.testing.assert_allclose(numeric, expected, rtol=1e-6, atol=1e-8)


def test_gradients_accept_integer_labels():
    ref = NeuralNetMLP(n_hidden=3, seed=0).initialize(4, 3)
    X, y = np.random.RandomState(0).normal(size=(5, 4)), np.array([0, 2, 1, 1, 0])
    a, b = ref.gradients(X, y), ref.gradients(X, one_hot(y, 3))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# ----------------------------------------------------------------------------- training


def _train_both(X, y, X_valid, y_valid, *, epochs, l2, eta=0.0005, batch=100, seed=1):
    ref = NeuralNetMLP(n_hidden=100, l2=l2, epochs=epochs, eta=eta, minibatch_size=batch,
                       seed=seed)
    ref.fit(X, y, X_valid, y_valid)
    rng = np.random.RandomState(seed)  # one RandomState: weights, then every shuffle
    model = lecture_model(rng, n_in=X.shape[1])
    history = train.fit(model, nn.BinaryCrossEntropy(reduction="sum"),
                        optim.SGD(model.parameters(), lr=eta), X, y, epochs=epochs,
                        batch_size=batch, rng=rng, X_valid=X_valid, y_valid=y_valid, l2=l2,
                        progress=False)
    return ref, model, history


def _assert_same_trajectory(ref, model, history, X_valid):
    params = dict(model.named_parameters())
    for lib, mine in PAIRS:
        assert_close_to_scale(params[lib].data, getattr(ref, mine))
    np.testing.assert_allclose(history.cost, ref.eval_["cost"], rtol=1e-9)
    assert history.train_acc == ref.eval_["train_acc"]
    assert history.valid_acc == ref.eval_["valid_acc"]
    np.testing.assert_array_equal(train.predict(model, X_valid), ref.predict(X_valid))


def test_library_fit_follows_the_reference_step_for_step():
    # 2050 rows: 20 full batches of 100 per epoch, 50 rows sit out (full batches only)
    # 196 features (a 14 x 14 image) keeps it quick; the 784-wide case runs on MNIST below
    X, y = prototype_data(2050, n_features=196, seed=2)
    X_valid, y_valid = prototype_data(300, n_features=196, seed=3)
    ref, model, history = _train_both(X, y, X_valid, y_valid, epochs=4, l2=0.01)
    assert len(history.cost) == len(ref.eval_["cost"]) == 4
    assert ref.eval_["train_acc"][-1] > ref.eval_["train_acc"][0]  # it does learn
    _assert_same_trajectory(ref, model, history, X_valid)


def test_library_fit_follows_the_reference_on_mnist():
    root = os.environ.get("TINYGRAD_MLP_DATA")
    if not root:
        pytest.skip("TINYGRAD_MLP_DATA is not set: no real MNIST for this run")
    from tinygrad_mlp import data

    # the 10,000-image file is the quicker read; which images train does not matter here
    X, y = data.load_mnist(os.path.join(root, "mnist"), kind="test", download=False,
                           dtype=np.float64)
    ref, model, history = _train_both(X[:2000], y[:2000], X[-500:], y[-500:], epochs=3,
                                      l2=0.01)
    assert ref.eval_["valid_acc"][-1] > ref.eval_["valid_acc"][0] + 0.1  # it does learn
    _assert_same_trajectory(ref, model, history, X[-500:])


def test_fit_uses_full_batches_and_records_eval():
    X, y = prototype_data(250, n_features=8, n_classes=3, seed=5)
    ref = NeuralNetMLP(n_hidden=6, l2=0.1, epochs=3, eta=0.01, minibatch_size=100, seed=0)
    sizes = []
    step = ref.step
    ref.step = lambda Xb, Yb: (sizes.append(len(Xb)), step(Xb, Yb))
    assert ref.fit(X, y, X[:40], y[:40]) is ref
    assert sizes == [100, 100] * 3  # 50 rows sit out of every epoch
    assert set(ref.eval_) == {"cost", "cost_lecture", "train_acc", "valid_acc"}
    for key, values in ref.eval_.items():
        assert len(values) == 3, key
    assert all(0.0 <= a <= 1.0 for a in ref.eval_["train_acc"] + ref.eval_["valid_acc"])
    assert ref.eval_["train_acc"][-1] == np.mean(ref.predict(X) == y)
    # the two cost forms differ by l2/2 * sum(W^2) of the final weights
    gap = ref.eval_["cost_lecture"][-1] - ref.eval_["cost"][-1]
    assert gap == pytest.approx(0.5 * ref.l2 * ref.sum_squared_weights(), rel=1e-9)
    assert ref.eval_["cost"][-1] == pytest.approx(ref.cost(X, y), rel=1e-12)


def test_predict_is_the_argmax_of_z_out_even_when_the_sigmoid_saturates():
    ref = NeuralNetMLP(n_hidden=2, seed=0).initialize(2, 2)
    ref.w_h[:] = np.eye(2)
    ref.w_out[:] = [[100.0, 0.0], [0.0, 200.0]]
    X = np.array([[5.0, 5.0]])          # a_out = [1.0, 1.0] exactly; z_out differs
    assert np.all(ref._forward(X)[3] == 1.0)
    assert ref.predict(X).tolist() == [1]


def test_without_shuffle_no_random_numbers_are_drawn_after_the_weights():
    X, y = prototype_data(50, n_features=4, n_classes=2, seed=6)
    ref = NeuralNetMLP(n_hidden=3, epochs=2, minibatch_size=10, shuffle=False, seed=9)
    ref.fit(X, y, X, y)
    rng = np.random.RandomState(9)
    rng.normal(size=(4, 3))
    rng.normal(size=(3, 2))
    assert ref.random.randint(1 << 30) == rng.randint(1 << 30)


# ----------------------------------------------------------------------------- the example


def _load_example():
    spec = importlib.util.spec_from_file_location(
        "compare_gradients", os.path.join(ROOT, "examples", "compare_gradients.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_gradients_example_prints_tiny_differences_and_writes_files(tmp_path, capsys):
    example = _load_example()
    out = tmp_path / "cg"
    assert example.main(["--synthetic", "--batch-size", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "Table 1" in printed and "Table 2" in printed

    # Table 1 as printed (two compare_gradients reports): 8 rows (4 parameters, without
    # and with L2), tiny differences, each diagnosed "match"
    table1 = printed[printed.index("Table 1"):printed.index("Table 2")]
    names = {f"({lib})" for lib, _ in PAIRS}
    rows = [line.split() for line in table1.splitlines()
            if len(line.split()) > 2 and line.split()[1] in names]
    assert len(rows) == 8
    for row in rows:
        max_abs, max_rel = float(row[-3]), float(row[-2])
        assert max_abs <= 1e-9 and max_rel <= 1e-9 and row[-1] == "match", row

    result = json.loads((out / "compare_gradients.json").read_text())
    assert len(result["table"]) == 8
    assert max(r["max_rel"] for r in result["table"]) <= 1e-9
    assert {r["diagnosis"] for r in result["table"]} == {"match"}
    # Table 2: the printed cost's gradient, checked as a hand derivation, is "l2-doubled"
    assert result["lecture_l2_diagnosis"] == {"w_h": "l2-doubled", "b_h": "match",
                                              "w_out": "l2-doubled", "b_out": "match"}
    assert result["finite_differences"]["max_rel"] < 1e-5
    for row in result["lecture_l2"]:  # the lecture's l2 * sum(W^2): a factor of 2
        assert row["ratio_min"] == pytest.approx(2.0, rel=1e-6)
        assert row["ratio_max"] == pytest.approx(2.0, rel=1e-6)
        assert row["max_abs_vs_update"] == pytest.approx(row["max_l2_w"], rel=1e-6)
    assert result["cost_lecture_form"] > result["cost_reference"]

    if shutil.which("dot") is None:
        assert "skipping the graph drawing" in printed
    else:
        svg, png = out / "graph.svg", out / "graph.png"
        assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "0: Dense(784, 100)" in svg.read_text()
