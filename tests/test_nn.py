"""nn: losses against plain NumPy formulas, finite differences and PyTorch; Module plumbing."""

import os

import numpy as np
import pytest

from tinygrad_mlp import Tensor, gradcheck, nn

TIGHT = dict(atol=1e-7, rtol=1e-6)
REDUCTIONS = ["sum", "mean", "none"]


def reduce(loss, reduction):
    return {"sum": np.sum, "mean": np.mean, "none": lambda v: v}[reduction](loss)


def param(arr):
    return Tensor(np.array(arr, dtype=np.float64), requires_grad=True)


@pytest.fixture
def rng():
    return np.random.RandomState(0)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_on_probabilities(rng, reduction):
    a = rng.uniform(0.05, 0.95, (5, 3))
    y = (rng.uniform(size=(5, 3)) > 0.5).astype(np.float64)
    loss_fn = nn.BinaryCrossEntropy(reduction=reduction)
    expected = reduce(-(y * np.log(a) + (1 - y) * np.log(1 - a)), reduction)
    np.testing.assert_allclose(loss_fn(Tensor(a), y).data, expected, rtol=1e-12)
    assert gradcheck(lambda t: loss_fn(t, y), param(a), **TIGHT)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_after_a_sigmoid(rng, reduction):
    """The fused path (the loss sees the sigmoid's input): same value, gradient a - y."""
    z = rng.normal(0, 3, (4, 3))
    y = (rng.uniform(size=(4, 3)) > 0.5).astype(np.float64)
    a = 1 / (1 + np.exp(-z))
    loss_fn = nn.BinaryCrossEntropy(reduction=reduction)
    expected = reduce(-(y * np.log(a) + (1 - y) * np.log(1 - a)), reduction)
    zt = param(z)
    out = loss_fn(zt.sigmoid(), y)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12)
    out.sum().backward()
    scale = 1 / a.size if reduction == "mean" else 1.0
    np.testing.assert_allclose(zt.grad, scale * (a - y), rtol=1e-12, atol=1e-15)
    assert gradcheck(lambda t: loss_fn(t.sigmoid(), y), param(z), **TIGHT)


def test_binary_cross_entropy_integer_labels_equal_one_hot(rng):
    a = rng.uniform(0.05, 0.95, (6, 4))
    labels = np.array([0, 3, 1, 1, 2, 0])
    onehot = np.eye(4)[labels]
    loss_fn = nn.BinaryCrossEntropy()
    for x in (Tensor(a), param(rng.normal(size=(6, 4))).sigmoid()):
        assert float(loss_fn(x, labels).data) == float(loss_fn(x, onehot).data)
    with pytest.raises(ValueError, match="label 4"):
        loss_fn(Tensor(a), np.array([0, 4, 1, 1, 2, 0]))


def test_binary_cross_entropy_is_safe_at_zero_and_one():
    a = param([[0.0, 1.0, 0.0, 1.0, 0.5]])
    y = np.array([[0.0, 1.0, 1.0, 0.0, 1.0]])
    out = nn.BinaryCrossEntropy()(a, y)  # RuntimeWarnings are errors in this test suite
    # right at 0 and 1: no cost; wrong: each log clamped at -100
    assert float(out.data) == pytest.approx(200.0 + np.log(2.0), rel=1e-12)
    out.backward()
    assert np.all(np.isfinite(a.grad))
    assert a.grad[0, 2] < 0 < a.grad[0, 3]  # pushes towards the target
    # saturated sigmoid: the fused path gives the exact cost from the logits
    z = param([[-1000.0, 1000.0, 1000.0]])
    out = nn.BinaryCrossEntropy()(z.sigmoid(), np.array([[0.0, 1.0, 0.0]]))
    assert float(out.data) == 1000.0
    out.backward()
    np.testing.assert_allclose(z.grad, [[0.0, 0.0, 1.0]], rtol=0, atol=1e-100)


def log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_against_numpy_and_finite_differences(rng, reduction):
    z = rng.normal(0, 2, (5, 4))
    labels = np.array([0, 3, 2, 2, 1])
    loss_fn = nn.CrossEntropy(reduction=reduction)
    expected = reduce(-log_softmax(z)[np.arange(5), labels], reduction)
    np.testing.assert_allclose(loss_fn(Tensor(z), labels).data, expected, rtol=1e-12)
    assert gradcheck(lambda t: loss_fn(t, labels), param(z), **TIGHT)
    np.testing.assert_allclose(loss_fn(Tensor(z), np.eye(4)[labels]).data, expected,
                               rtol=1e-12)  # one-hot rows are turned into labels


def test_cross_entropy_is_stable_at_logits_of_1000():
    z = param([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])
    out = nn.CrossEntropy(reduction="none")(z, np.array([0, 2]))
    np.testing.assert_allclose(out.data, [0.0, 1.0 + np.log1p(np.exp(-1.0))], rtol=1e-12)
    out.sum().backward()
    assert np.all(np.isfinite(z.grad))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_against_numpy_and_finite_differences(rng, reduction):
    p, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    loss_fn = nn.MSE(reduction=reduction)
    np.testing.assert_allclose(loss_fn(Tensor(p), t).data, reduce((p - t) ** 2, reduction),
                               rtol=1e-12)
    assert gradcheck(lambda a: loss_fn(a, t), param(p), **TIGHT)
    with pytest.raises(ValueError, match="does not match"):
        loss_fn(Tensor(p), t[:, :2])


def test_losses_reject_unknown_reductions():
    for cls in (nn.BinaryCrossEntropy, nn.CrossEntropy, nn.MSE):
        with pytest.raises(ValueError, match="reduction"):
            cls(reduction="average")


def test_l2_penalty_is_half_lambda_sum_of_squared_weights_without_biases(rng):
    model = nn.Sequential(nn.Dense(3, 4, rng=rng, dtype=np.float64), nn.Tanh(),
                          nn.Dense(4, 2, rng=rng, dtype=np.float64))
    for layer in (model[0], model[2]):
        layer.bias.data[:] = 5.0  # biases must not count
    w1, w2 = model[0].weight.data, model[2].weight.data
    out = nn.l2_penalty(model, 0.3)
    assert float(out.data) == pytest.approx(0.15 * (np.sum(w1 ** 2) + np.sum(w2 ** 2)),
                                            rel=1e-12)
    out.backward()
    np.testing.assert_allclose(model[0].weight.grad, 0.3 * w1, rtol=1e-12)
    np.testing.assert_allclose(model[2].weight.grad, 0.3 * w2, rtol=1e-12)
    assert model[0].bias.grad is None or not model[0].bias.grad.any()


# ----------------------------------------------------------------------------- torch


def test_cross_entropy_matches_torch_values_and_gradients(rng):
    torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch "
                                "comparison of CrossEntropy cannot run")
    import torch.nn.functional as F

    z = rng.normal(0, 5, (7, 5))
    z[0, 1] = 800.0  # large logits too
    labels = np.array([1, 0, 4, 3, 3, 2, 0])
    for reduction in REDUCTIONS:
        zt = param(z)
        ours = nn.CrossEntropy(reduction=reduction)(zt, labels)
        zr = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        theirs = F.cross_entropy(zr, torch.tensor(labels), reduction=reduction)
        np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
        weights = rng.normal(size=ours.shape)  # a non-trivial upstream gradient
        ours.backward(weights if ours.ndim else None)
        theirs.backward(torch.tensor(weights) if ours.ndim else None)
        np.testing.assert_allclose(zt.grad, zr.grad.numpy(), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- layers


def test_dense_draws_rng_normal_in_layer_order_from_a_shared_rng():
    rng = np.random.RandomState(5)
    first = nn.Dense(4, 3, rng=rng, dtype=np.float64)
    second = nn.Dense(3, 2, init_std=0.5, rng=rng, dtype=np.float64)
    expect = np.random.RandomState(5)
    np.testing.assert_array_equal(first.weight.data, expect.normal(0.0, 0.1, (4, 3)))
    np.testing.assert_array_equal(second.weight.data, expect.normal(0.0, 0.5, (3, 2)))
    assert first.bias.shape == (3,) and not first.bias.data.any()
    seeded = nn.Dense(4, 3, seed=7, dtype=np.float64)
    np.testing.assert_array_equal(seeded.weight.data,
                                  np.random.RandomState(7).normal(0.0, 0.1, (4, 3)))
    assert nn.Dense(4, 3, seed=7).weight.dtype == np.float32  # the default dtype


def test_dense_forward_is_x_w_plus_b_with_rows_as_samples(rng):
    layer = nn.Dense(3, 2, rng=rng, dtype=np.float64)
    layer.bias.data[:] = [1.0, -2.0]
    x = rng.normal(size=(5, 3))
    np.testing.assert_allclose(layer(Tensor(x)).data, x @ layer.weight.data + [1.0, -2.0],
                               rtol=1e-14)
    assert gradcheck(lambda x_, w, b: nn.Dense.forward(layer, x_), param(x), layer.weight,
                     layer.bias, **TIGHT)


@pytest.mark.parametrize("module, fn", [
    (nn.Sigmoid(), lambda z: 1 / (1 + np.exp(-z))),
    (nn.Tanh(), np.tanh),
    (nn.ReLU(), lambda z: np.maximum(z, 0)),
])
def test_activations_against_numpy_and_finite_differences(rng, module, fn):
    z = rng.normal(0, 2, (4, 5))
    z[np.abs(z) < 1e-3] = 0.5  # keep ReLU away from its kink
    np.testing.assert_allclose(module(Tensor(z)).data, fn(z), rtol=1e-14)
    assert gradcheck(module, param(z), **TIGHT)


def test_sequential_indexing_iteration_and_forward(rng):
    layers = [nn.Dense(3, 4, rng=rng, dtype=np.float64), nn.Sigmoid(),
              nn.Dense(4, 2, rng=rng, dtype=np.float64)]
    model = nn.Sequential(*layers)
    assert len(model) == 3 and list(model) == layers
    assert model[0] is layers[0] and model[-1] is layers[2]
    head = model[:2]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:2]
    x = rng.normal(size=(5, 3))
    by_hand = layers[2](layers[1](layers[0](Tensor(x)))).data
    np.testing.assert_array_equal(model(Tensor(x)).data, by_hand)
    assert list(nn.Sequential(layers)) == layers  # a list works too
    with pytest.raises(TypeError, match="item 1"):
        nn.Sequential(layers[0], "sigmoid")


# ----------------------------------------------------------------------------- Module


def make_model(seed=0, hidden=4):
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Dense(3, hidden, rng=rng, dtype=np.float64), nn.Sigmoid(),
                         nn.Dense(hidden, 2, rng=rng, dtype=np.float64), nn.Sigmoid())


def test_parameters_have_a_stable_order_and_names():
    model = make_model()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [id(p) for p in model.parameters()] == [id(p) for p in model.parameters()]
    assert [id(p) for p in model.parameters()] == [
        id(model[0].weight), id(model[0].bias), id(model[2].weight), id(model[2].bias)]
    assert model.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2


def test_nested_modules_are_found_and_named():
    class Net(nn.Module):
        def __init__(self):
            self.body = make_model()
            self.extra = [nn.Dense(2, 2, seed=1)]

        def forward(self, x):
            return self.extra[0](self.body(x))

    names = [name for name, _ in Net().named_parameters()]
    assert names == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                     "extra.0.weight", "extra.0.bias"]


def test_zero_grad_clears_every_gradient(rng):
    model = make_model()
    model(Tensor(rng.normal(size=(4, 3)))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_is_a_copy_and_round_trips():
    model, other = make_model(0), make_model(1)
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    state["0.weight"][:] = 0.0
    assert model[0].weight.data.any()  # a copy, not a view
    other.load_state_dict(model.state_dict())
    for (_, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.data is not b.data


def test_save_and_load_npz_atomically(tmp_path):
    model = make_model(0)
    path = tmp_path / "model.npz"
    model.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    with np.load(path) as f:
        assert sorted(f.files) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    other = make_model(1)
    assert other.load(path) is other
    for (_, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    model.save(path)  # overwriting works and still leaves one file
    assert os.listdir(tmp_path) == ["model.npz"]


def test_loading_a_mismatched_checkpoint_leaves_the_model_untouched(tmp_path):
    path = tmp_path / "wide.npz"
    make_model(0, hidden=5).save(path)
    model = make_model(1, hidden=4)
    before = model.state_dict()
    with pytest.raises(ValueError, match="0.weight"):
        model.load(path)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable"):
        model.load(broken)
    with pytest.raises(ValueError, match="missing"):
        model.load_state_dict({k: v for k, v in before.items() if k != "2.bias"})
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])
