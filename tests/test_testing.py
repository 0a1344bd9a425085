"""tinygrad_mlp.testing: a student's hand-derived gradients of the lecture's network against
autodiff, each usual mistake made on purpose and recognised."""

import numpy as np
import pytest

from tinygrad_mlp import Tensor, nn
from tinygrad_mlp.reference import NeuralNetMLP, one_hot, sigmoid
from tinygrad_mlp.testing import GradientReport, assert_gradients_match, compare_gradients

N_IN, N_HIDDEN, N_OUT, N = 6, 5, 3, 8
L2 = 0.1
NAMES = {"w_h": "0.weight", "b_h": "0.bias", "w_out": "2.weight", "b_out": "2.bias"}
BCE = nn.BinaryCrossEntropy(reduction="sum")


@pytest.fixture
def lecture():
    """(model, reference with the same weights, X, one-hot Y)."""
    rng = np.random.RandomState(1)
    model = nn.Sequential(nn.Dense(N_IN, N_HIDDEN, rng=rng, dtype=np.float64), nn.Sigmoid(),
                          nn.Dense(N_HIDDEN, N_OUT, rng=rng, dtype=np.float64), nn.Sigmoid())
    ref = NeuralNetMLP(n_hidden=N_HIDDEN, seed=1).initialize(N_IN, N_OUT)
    data = np.random.RandomState(0)
    X = data.uniform(-1, 1, (N, N_IN))
    Y = one_hot(data.randint(0, N_OUT, N), N_OUT)
    return model, ref, X, Y


def correct(ref, X, Y, l2=L2):
    """reference.NeuralNetMLP.gradients + l2 W on the weights: the right answer."""
    g = ref.gradients(X, Y)
    return {k: v + (l2 * getattr(ref, k) if k.startswith("w") else 0.0) for k, v in g.items()}


def student(p, X, Y, mistake=None, l2=L2):
    """A student's delta rule, written out, with one of the usual mistakes."""
    a_h = sigmoid(X @ p["w_h"] + p["b_h"])
    a_out = sigmoid(a_h @ p["w_out"] + p["b_out"])
    delta_out = (Y - a_out) if mistake == "sign" else (a_out - Y)
    if mistake == "mean":
        delta_out = delta_out / X.shape[0]
    delta_h = delta_out @ p["w_out"].T * a_h * (1 - a_h)
    l2_factor = 2 * l2 if mistake == "l2-doubled" else (0.0 if mistake == "l2-missing" else l2)
    g = {"w_h": X.T @ delta_h + l2_factor * p["w_h"],
         "b_h": delta_h.sum(axis=0),
         "w_out": a_h.T @ delta_out + l2_factor * p["w_out"],
         "b_out": delta_out.sum(axis=0)}
    if mistake == "transposed":
        g["w_h"] = delta_h.T @ X + l2 * p["w_h"].T
    if mistake == "swapped":
        g["w_h"], g["w_out"] = g["w_out"], g["w_h"]
    return g


def diagnoses(report):
    return {row["hand_name"]: row["diagnosis"] for row in report.rows}


def test_the_correct_delta_rule_matches(lecture):
    model, ref, X, Y = lecture
    report = compare_gradients(correct(ref, X, Y), model, BCE, X, Y, l2=L2, names=NAMES)
    assert isinstance(report, GradientReport) and report.ok
    assert diagnoses(report) == dict.fromkeys(NAMES, "match")
    assert [row["name"] for row in report.rows] == list(NAMES.values())
    for row in report.rows:
        assert row["ok"] and row["max_abs"] <= 1e-12 and row["max_rel"] <= 1e-12
        assert row["shape"] == getattr(ref, row["hand_name"]).shape
    # the student's function, called with the model's weights under the hand names
    assert compare_gradients(student, model, BCE, X, Y, l2=L2, names=NAMES).ok


@pytest.mark.parametrize("mistake, expected", [
    ("l2-missing", {"w_h": "l2-missing", "w_out": "l2-missing"}),
    ("l2-doubled", {"w_h": "l2-doubled", "w_out": "l2-doubled"}),
    ("sign", {"w_h": "sign", "b_h": "sign", "w_out": "sign", "b_out": "sign"}),
    ("mean", {"w_h": "mean-vs-sum", "b_h": "mean-vs-sum", "w_out": "mean-vs-sum",
              "b_out": "mean-vs-sum"}),
    ("transposed", {"w_h": "transposed"}),
    ("swapped", {"w_h": "swapped", "w_out": "swapped"}),
])
def test_each_mistake_in_the_students_delta_rule_is_recognised(lecture, mistake, expected):
    model, ref, X, Y = lecture

    def hand(p, X, Y):
        return student(p, X, Y, mistake)

    report = compare_gradients(hand, model, BCE, X, Y, l2=L2, names=NAMES)
    assert not report.ok
    assert diagnoses(report) == {**dict.fromkeys(NAMES, "match"), **expected}
    for row in report.rows:
        assert row["ok"] == (row["diagnosis"] == "match")
    if mistake == "mean":  # the factor on the data term is 1/n
        assert all(row["scale"] == pytest.approx(1 / N) for row in report.rows)
    if mistake == "swapped":
        assert report["w_h"]["other"] == "w_out" and report["w_out"]["other"] == "w_h"


def test_deliberately_wrong_gradients_of_the_reference(lecture):
    """Each diagnosis from the reference's own correct dict, damaged one way."""
    model, ref, X, Y = lecture
    good = correct(ref, X, Y)
    g = ref.gradients(X, Y)
    cases = {
        "scaled": ("b_h", 2.5 * good["b_h"]),
        "mean-vs-sum": ("b_out", N * good["b_out"]),           # a sum where the cost means
        "sign": ("w_out", -good["w_out"]),
        "l2-missing": ("w_h", g["w_h"]),
        "l2-doubled": ("w_out", g["w_out"] + 2 * L2 * ref.w_out),
        "transposed": ("w_out", good["w_out"].T),
        "swapped": ("b_h", good["b_out"]),                      # b_out's gradient under b_h
        "shape": ("b_h", good["b_h"][:2]),
        "mismatch": ("w_h", good["w_h"] + 1e-3 * np.random.RandomState(5).normal(
            size=good["w_h"].shape)),
    }
    for diagnosis, (name, wrong) in cases.items():
        hand = dict(good, **{name: wrong})
        report = compare_gradients(hand, model, BCE, X, Y, l2=L2, names=NAMES)
        assert diagnoses(report) == dict(dict.fromkeys(NAMES, "match"), **{name: diagnosis}), \
            diagnosis
        row = report[name]
        assert not row["ok"] and not report.ok
        if diagnosis == "scaled":
            assert row["scale"] == pytest.approx(2.5)
        if diagnosis == "mean-vs-sum":
            assert row["scale"] == pytest.approx(N)
        if diagnosis == "swapped":
            assert row["other"] == "b_out"
        if diagnosis in ("shape", "transposed", "swapped") and wrong.shape != row["shape"]:
            assert np.isnan(row["max_abs"])
        else:
            assert row["max_abs"] > 0


def test_a_factor_of_two_without_l2_is_scaled_not_l2(lecture):
    model, ref, X, Y = lecture
    good = correct(ref, X, Y, l2=0.0)
    report = compare_gradients(dict(good, w_h=2 * good["w_h"]), model, BCE, X, Y, names=NAMES)
    assert report["w_h"]["diagnosis"] == "scaled" and report["w_h"]["scale"] == pytest.approx(2)


def test_the_table_names_the_hand_names_and_explains(lecture):
    model, ref, X, Y = lecture
    hand = student(dict((k, getattr(ref, k)) for k in NAMES), X, Y, "l2-doubled")
    text = str(compare_gradients(hand, model, BCE, X, Y, l2=L2, names=NAMES))
    lines = text.splitlines()
    assert "2 of 4" in lines[0]
    assert lines[1].split() == ["parameter", "shape", "max", "abs", "diff", "max", "rel",
                                "diff", "diagnosis"]
    assert lines[2].split()[:2] == ["w_h", "(0.weight)"] and lines[2].endswith("l2-doubled")
    assert lines[3].split()[:2] == ["b_h", "(0.bias)"] and lines[3].endswith("match")
    assert any(line.startswith("w_out: hand has 2 * l2 * W") for line in lines)


def test_without_names_the_model_names_are_used(lecture):
    model, ref, X, Y = lecture
    hand = {NAMES[k]: v for k, v in correct(ref, X, Y).items()}
    report = compare_gradients(hand, model, BCE, X, Y, l2=L2)
    assert report.ok and [r["hand_name"] for r in report.rows] == list(NAMES.values())
    # only the parameters given are compared
    report = compare_gradients({"2.bias": hand["2.bias"]}, model, BCE, X, Y, l2=L2)
    assert [r["name"] for r in report.rows] == ["2.bias"] and report.ok


def test_assert_gradients_match_raises_the_table(lecture):
    model, ref, X, Y = lecture
    assert assert_gradients_match(correct(ref, X, Y), model, BCE, X, Y, l2=L2,
                                  names=NAMES).ok
    hand = dict(correct(ref, X, Y))
    hand["w_h"] = hand["w_h"].T
    with pytest.raises(AssertionError) as info:
        assert_gradients_match(hand, model, BCE, X, Y, l2=L2, names=NAMES)
    message = str(info.value)
    assert str(compare_gradients(hand, model, BCE, X, Y, l2=L2, names=NAMES)) in message
    assert "transposed" in message


def test_model_weights_and_grads_are_left_alone(lecture):
    model, ref, X, Y = lecture
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    model[0].weight.grad = np.ones(model[0].weight.shape)

    def hand(p, X, Y):
        g = student(p, X, Y)
        p["w_h"][...] = 0.0  # a careless student overwrites its copy: the model keeps its own
        return g

    assert compare_gradients(hand, model, BCE, X, Y, l2=L2, names=NAMES).ok
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[n])
    np.testing.assert_array_equal(model[0].weight.grad, 1.0)
    assert model[2].weight.grad is None


def test_mean_reduction_loss_and_tensor_inputs():
    """CrossEntropy(mean): the student's sum over rows is a factor n too large."""
    rng = np.random.RandomState(3)
    model = nn.Sequential(nn.Dense(4, 3, rng=rng, dtype=np.float64))
    X, y = rng.normal(size=(7, 4)), rng.randint(0, 3, 7)

    def hand(p, X, y):
        z = X @ p["0.weight"] + p["0.bias"]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        delta = e / e.sum(axis=1, keepdims=True) - one_hot(y, 3)  # summed, not averaged
        return {"0.weight": X.T @ delta, "0.bias": delta.sum(axis=0)}

    report = compare_gradients(hand, model, nn.CrossEntropy(), Tensor(X), y)
    assert diagnoses(report) == {"0.weight": "mean-vs-sum", "0.bias": "mean-vs-sum"}
    assert report["0.bias"]["scale"] == pytest.approx(7)


def test_bad_arguments_are_named(lecture):
    model, ref, X, Y = lecture
    with pytest.raises(ValueError, match="'w_h' is not a parameter.*0.weight"):
        compare_gradients(correct(ref, X, Y), model, BCE, X, Y)
    with pytest.raises(ValueError, match="names maps to \\['3.weight'\\]"):
        compare_gradients({}, model, BCE, X, Y, names={"w": "3.weight"})
    with pytest.raises(TypeError, match="hand must be a dict"):
        compare_gradients([1, 2], model, BCE, X, Y)
    with pytest.raises(ValueError, match="must be a scalar"):
        compare_gradients({"0.bias": np.zeros(N_HIDDEN)}, model,
                          lambda out, y: out, X, Y)
    with pytest.raises(KeyError, match="no parameter 'nope'"):
        compare_gradients({"0.bias": np.zeros(N_HIDDEN)}, model, BCE, X, Y)["nope"]



def test_a_float32_model_is_flagged_in_the_table():
    rng = np.random.RandomState(1)
    model = nn.Sequential(nn.Dense(N_IN, N_HIDDEN, rng=rng), nn.Sigmoid(),
                          nn.Dense(N_HIDDEN, N_OUT, rng=rng), nn.Sigmoid())
    ref = NeuralNetMLP(n_hidden=N_HIDDEN, seed=1).initialize(N_IN, N_OUT)
    X = np.random.RandomState(0).uniform(-1, 1, (N, N_IN))
    Y = one_hot(np.random.RandomState(0).randint(0, N_OUT, N), N_OUT)
    report = compare_gradients(ref.gradients(X, Y), model, BCE, X.astype(np.float32), Y,
                               names=NAMES, rtol=1e-3)
    assert report.ok  # float32 rounding is within 1e-3
    assert "float32" in report.note and str(report).splitlines()[1].startswith("note: ")
    model64 = nn.Sequential(nn.Dense(N_IN, N_HIDDEN, rng=np.random.RandomState(1),
                                     dtype=np.float64))
    assert compare_gradients({"0.bias": np.zeros(N_HIDDEN)}, model64,
                             lambda out, y: out.sum(), X, None).note == ""
