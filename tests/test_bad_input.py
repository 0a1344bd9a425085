"""Bad input gets a clear error naming what was wrong, never a crash deep in NumPy or a NaN.

One test per bad input of the engine, nn, optim and train (the files' bad inputs are in
test_data*.py / test_idx_fuzz.py, checkpoint files in test_nn.py). Each asserts the
exception type and that the message names the offending op, shape or value.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tinygrad_mlp as tm
from tinygrad_mlp import Function, Tensor, nn, optim, train

F64 = np.float64


def t64(shape, seed=0, requires_grad=True):
    return Tensor(np.random.RandomState(seed).randn(*shape), requires_grad=requires_grad)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("op, fn", [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b),
])
def test_broadcast_error_names_op_and_both_shapes(op, fn):
    with pytest.raises(ValueError) as e:
        fn(t64((2, 3)), t64((4,)))
    assert str(e.value) == f"{op}: shapes (2, 3) and (4,) cannot be broadcast together"


def test_matmul_error_is_the_designs_message():
    with pytest.raises(ValueError, match=r"^matmul: shapes \(100, 784\) and \(100, 10\) "
                                         r"do not align"):
        Tensor(np.zeros((100, 784))) @ Tensor(np.zeros((100, 10)))


def test_dense_layer_names_input_and_weight_shapes():
    layer = nn.Dense(784, 100, seed=0)
    with pytest.raises(ValueError, match=r"dense: input of shape \(5, 783\) does not match "
                                         r"weight of shape \(784, 100\)"):
        layer(np.zeros((5, 783), np.float32))


@pytest.mark.parametrize("fn, pattern", [
    (lambda t: t.reshape(4, 4), r"reshape: cannot reshape an input of shape \(2, 3\)"),
    (lambda t: t.transpose(0, 0), r"transpose: axes \(0, 0\) are not a permutation"),
    (lambda t: t.sum(axis=2), r"sum: axis 2 is out of range for an input with 2"),
    (lambda t: t.max(axis=-3), r"max: axis -3 is out of range"),
    (lambda t: tm.concatenate([t, t64((3, 3))], axis=1),
     r"concatenate: shapes \(2, 3\), \(3, 3\) do not fit together along axis 1"),
    (lambda t: t[5], r"getitem: index 5 is invalid for shape \(2, 3\)"),
])
def test_shape_errors_name_op_and_shapes(fn, pattern):
    with pytest.raises((ValueError, IndexError), match=pattern):
        fn(t64((2, 3)))


# ----------------------------------------------------------------------------- types


@pytest.mark.parametrize("data, kind", [
    (np.array([1 + 2j, 3j]), "complex"),
    (np.array([object(), 1], dtype=object), "object"),
    (np.array(["a", "b"]), "string"),
])
def test_non_numeric_arrays_are_refused_at_construction(data, kind):
    with pytest.raises(TypeError, match=kind):
        Tensor(data)


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match=r"only floating tensors can require grad; got "
                                        r"dtype int64"):
        Tensor(np.arange(3), requires_grad=True)


def test_dtype_rule_scalars_take_the_tensors_dtype_arrays_promote():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    assert (x * 2.5).dtype == np.float32
    assert (x * np.float64(2.5)).dtype == np.float32        # NumPy scalar: no silent upcast
    mixed = x * np.ones(3, np.float64)                        # arrays promote like NumPy
    assert mixed.dtype == np.float64
    mixed.sum().backward()
    assert x.grad.dtype == np.float32                          # a leaf's grad keeps its dtype


# ----------------------------------------------------------------------------- numerics


def _no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_and_losses_are_finite_at_logits_of_1000(dtype):
    z = Tensor(np.array([[-1000.0, 0.0, 1000.0], [1000.0, -1000.0, 3.0]], dtype),
               requires_grad=True)
    labels = np.array([0, 1])

    def run():
        outs = [z.sigmoid().sum(), z.tanh().sum(), z.softmax(axis=1).max(),
                z.log_softmax(axis=1).sum(), nn.CrossEntropy()(z, labels),
                nn.BinaryCrossEntropy()(z.sigmoid(), labels),
                nn.BinaryCrossEntropy()(Tensor(np.array([[0.0, 1.0]], dtype)),
                                        np.array([[1.0, 0.0]], dtype))]
        for out in outs:
            z.grad = None
            assert np.isfinite(out.data).all(), out
            if out.requires_grad:
                out.backward()
                assert np.isfinite(z.grad).all(), out
        return outs

    outs = _no_warnings(run)
    # each row's true class sits 2000 below its largest logit: -log softmax = 2000 exactly
    assert outs[4].item() == 2000.0


def test_detect_anomaly_names_the_op_that_made_the_first_nan():
    x = Tensor(np.array([1.0, -1.0]), requires_grad=True)
    with tm.detect_anomaly(), np.errstate(invalid="ignore"):
        with pytest.raises(FloatingPointError, match=r"^log: forward produced 1 non-finite"):
            x.log()


def _tiny_problem(n=40, seed=0):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, 3)
    y = (X[:, 0] > 0).astype(np.int64)
    model = nn.Sequential(nn.Dense(3, 4, seed=1, dtype=F64), nn.Tanh(),
                          nn.Dense(4, 2, seed=2, dtype=F64))
    return X, y, model


class _BlowUp(Function):
    """Identity forward; backward returns inf from the second call on."""

    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        _BlowUp.calls += 1
        return g * (np.inf if _BlowUp.calls >= 2 else 1.0)


def test_fit_stops_at_a_non_finite_gradient_naming_epoch_batch_parameter():
    X, y, model = _tiny_problem()

    class Wrapped(nn.Module):
        def __init__(self):
            self.net = model

        def forward(self, x):
            return _BlowUp.apply(self.net(x))

    _BlowUp.calls = 0
    wrapped = Wrapped()
    opt = optim.SGD(wrapped.parameters(), lr=0.1)
    with pytest.raises(train.NonFiniteError) as e, np.errstate(invalid="ignore"):
        train.fit(wrapped, nn.CrossEntropy(), opt, X, y, epochs=2, batch_size=10,
                  progress=False, seed=0)
    msg = str(e.value)
    assert "gradient of net.0.weight (3, 4)" in msg
    assert "epoch 1, batch 1" in msg and "before updating" in msg


def test_fit_stops_when_the_loss_becomes_nan_before_updating():
    X, y, model = _tiny_problem()
    X = X.copy()
    X[25] = np.nan
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(train.NonFiniteError, match=r"the loss became nan at epoch 1, batch \d"):
        train.fit(model, nn.CrossEntropy(), opt, X, y, epochs=1, batch_size=10,
                  shuffle=False, progress=False)
    assert all(np.isfinite(p.data).all() for p in model.parameters())


# ----------------------------------------------------------------------------- misuse


def test_backward_through_a_freed_graph_says_so():
    x = t64((3,))
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"second time \(at op '(sum|mul)'\).*retain_graph"):
        y.backward()


def test_backward_on_a_tensor_that_needs_no_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (t64((3,), requires_grad=False) * 2).sum().backward()


def test_backward_of_a_non_scalar_needs_grad_of_its_shape():
    y = t64((2, 3)) * 2
    with pytest.raises(ValueError, match=r"shape \(2, 3\): pass grad="):
        y.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), the output has shape "
                                         r"\(2, 3\)"):
        y.backward(np.ones(3))


def test_optimizers_given_no_parameters():
    for make in (lambda: optim.SGD([], lr=0.1), lambda: optim.Adam([])):
        with pytest.raises(ValueError, match="got no parameters"):
            make()


def test_optimizer_rejects_bad_learning_rates():
    p = t64((2,))
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got -0.1"):
        optim.SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got nan"):
        optim.Adam([p], lr=float("nan"))


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(batch_size=0), r"batch_size must be a positive integer, got 0"),
    (dict(batch_size=41), r"batch_size 41 is larger than the 40 training rows"),
    (dict(epochs=-1), r"epochs must be an integer >= 0, got -1"),
])
def test_fit_rejects_bad_batch_sizes_and_epochs(kwargs, pattern):
    X, y, model = _tiny_problem()
    args = dict(epochs=1, batch_size=10, progress=False) | kwargs
    with pytest.raises(ValueError, match=pattern):
        train.fit(model, nn.CrossEntropy(), optim.SGD(model.parameters(), lr=0.1), X, y, **args)


def test_fit_rejects_x_and_y_of_different_lengths():
    X, y, model = _tiny_problem()
    with pytest.raises(ValueError, match=r"X has 40 rows but y has 39"):
        train.fit(model, nn.CrossEntropy(), optim.SGD(model.parameters(), lr=0.1), X, y[:-1],
                  epochs=1, batch_size=10, progress=False)


def test_fit_rejects_labels_outside_the_models_classes():
    X, y, model = _tiny_problem()
    y = y.copy()
    y[7] = 5
    with pytest.raises(ValueError, match=r"label 5 is outside \[0, 2\): the model has 2 "
                                         r"outputs"):
        train.fit(model, nn.CrossEntropy(), optim.SGD(model.parameters(), lr=0.1), X, y,
                  epochs=1, batch_size=10, progress=False)


def test_cross_entropy_label_out_of_range_names_the_row():
    with pytest.raises(ValueError, match=r"label 3 at row 1 is outside \[0, 3\)"):
        nn.CrossEntropy()(t64((2, 3)), np.array([0, 3]))


def test_load_state_dict_of_wrong_shape_leaves_the_model_untouched():
    model = nn.Sequential(nn.Dense(3, 4, seed=0), nn.Sigmoid(), nn.Dense(4, 2, seed=1))
    before = model.state_dict()
    state = model.state_dict()
    state["2.weight"] = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"2.weight: shape \(5, 2\) in state_dict, \(4, 2\) in "
                                         r"the model"):
        model.load_state_dict(state)
    for name, arr in model.state_dict().items():
        np.testing.assert_array_equal(arr, before[name])


def test_checkpoints_and_histories_get_ordinary_file_permissions(tmp_path):
    """Atomic writes go through a 0600 temporary file; the result must be as open() makes."""
    import os

    umask = os.umask(0o022)
    try:
        model = nn.Sequential(nn.Dense(3, 2, seed=0))
        model.save(tmp_path / "m.npz")
        train.History(cost=[1.0]).save(tmp_path / "h.json")
    finally:
        os.umask(umask)
    for name in ("m.npz", "h.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.json", "m.npz"]


def test_loading_a_file_that_is_not_an_npz_says_so(tmp_path):
    bad = tmp_path / "notes.npz"
    bad.write_bytes(b"these are not weights")
    model = nn.Sequential(nn.Dense(3, 2, seed=0))
    before = model[0].weight.data.copy()
    with pytest.raises(ValueError, match=r"notes\.npz is not a readable \.npz checkpoint "
                                         r"\(no zip header"):
        model.load(bad)
    np.testing.assert_array_equal(model[0].weight.data, before)
