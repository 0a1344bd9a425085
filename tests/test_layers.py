"""nn: train/eval modes, buffers in state_dict, Dropout and Flatten."""

import numpy as np
import pytest

from tinygrad_mlp import Tensor, gradcheck, nn, ops


class Plain(nn.Module):
    """A custom module that never calls Module.__init__."""

    def __init__(self):
        self.inner = nn.Sequential(nn.Dense(3, 4, seed=0), nn.Dropout(0.5, seed=1))
        self.register_buffer("steps", np.zeros(2))

    def forward(self, x):
        return self.inner(x)


# ----------------------------------------------------------------------------- modes


def test_every_module_starts_in_training_mode_and_eval_train_propagate():
    model = nn.Sequential(nn.Dense(3, 4), nn.ReLU(), Plain())
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert [m.training for m in model.modules()] == [False] * len(model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    assert model.train(False) is model and not model[2].inner[1].training
    model[2].train()  # a submodule alone
    assert model[2].inner[1].training and not model.training and not model[0].training


def test_modes_are_per_instance():
    a, b = nn.Dropout(), nn.Dropout()
    a.eval()
    assert not a.training and b.training and nn.Dropout().training


# ----------------------------------------------------------------------------- buffers


def test_buffers_are_state_but_not_parameters(tmp_path):
    model = nn.Sequential(nn.Dense(3, 2, seed=0), Plain())
    assert [n for n, _ in model.named_buffers()] == ["1.steps"]
    assert model.buffers()[0] is model[1].steps and not model[1].steps.requires_grad
    assert all(p is not model[1].steps for p in model.parameters())
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.inner.0.weight", "1.inner.0.bias",
                           "1.steps"]  # parameters, then buffers
    model[1].steps.data[:] = [3.0, 4.0]
    other = nn.Sequential(nn.Dense(3, 2, seed=5), Plain())
    other.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(other[1].steps.data, [3.0, 4.0])
    assert other[1].steps.data is not model[1].steps.data
    path = tmp_path / "m.npz"
    model.save(path)
    third = nn.Sequential(nn.Dense(3, 2, seed=6), Plain()).load(path)
    np.testing.assert_array_equal(third[1].steps.data, [3.0, 4.0])
    np.testing.assert_array_equal(third[0].weight.data, model[0].weight.data)


def test_load_state_dict_checks_buffers_too():
    model = Plain()
    state = model.state_dict()
    state["steps"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"steps: shape \(3,\)"):
        model.load_state_dict(state)
    del state["steps"]
    with pytest.raises(ValueError, match=r"missing \['steps'\]"):
        model.load_state_dict(state)


def test_register_buffer_rejects_parameters_and_bad_names():
    m = Plain()
    with pytest.raises(ValueError, match="requires grad"):
        m.register_buffer("w", Tensor(np.zeros(2), requires_grad=True))
    with pytest.raises(ValueError, match="identifier"):
        m.register_buffer("a.b", np.zeros(2))


# ----------------------------------------------------------------------------- Dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_drops_a_fraction_p_and_scales_the_rest(p):
    x = np.ones((200, 500), dtype=np.float32)
    y = nn.Dropout(p, seed=0)(Tensor(x)).data
    dropped = np.mean(y == 0)
    assert abs(dropped - p) < 4 * np.sqrt(p * (1 - p) / x.size)  # 4 sigma
    kept = y[y != 0]
    np.testing.assert_allclose(kept, 1.0 / (1.0 - p), rtol=1e-6)
    assert y.dtype == np.float32
    assert abs(y.mean() - 1.0) < 0.02  # the expectation is unchanged


def test_dropout_is_the_identity_in_eval_mode():
    x = Tensor(np.arange(12.0).reshape(3, 4))
    d = nn.Dropout(0.9, seed=0).eval()
    assert d(x) is x
    d.train()
    assert (d(x).data == 0).sum() > 0


def test_dropout_is_reproducible_with_a_seed_and_differs_between_calls():
    x = Tensor(np.ones((50, 40)))
    a, b = nn.Dropout(0.5, seed=3), nn.Dropout(0.5, seed=3)
    ya1, yb1 = a(x).data, b(x).data
    np.testing.assert_array_equal(ya1, yb1)
    assert not np.array_equal(ya1, a(x).data)  # the next call draws a new mask
    rng = np.random.RandomState(3)
    expect = (rng.random_sample((50, 40)) >= 0.5) * 2.0
    np.testing.assert_array_equal(ya1, expect)


def test_dropout_gradient_is_mask_times_scale():
    x = Tensor(np.random.RandomState(0).normal(size=(7, 9)), requires_grad=True)
    d = nn.Dropout(0.25, seed=4)
    y = d(x)
    g = np.random.RandomState(1).normal(size=(7, 9))
    y.backward(g)
    mask = (np.random.RandomState(4).random_sample((7, 9)) >= 0.25) / 0.75
    np.testing.assert_allclose(x.grad, g * mask, rtol=1e-12)
    np.testing.assert_allclose(y.data, x.data * mask, rtol=1e-12)


def test_dropout_gradcheck_with_a_fixed_mask():
    x = Tensor(np.random.RandomState(0).normal(size=(5, 3, 2)), requires_grad=True)
    assert gradcheck(lambda t: ops.Dropout.apply(t, p=0.4, rng=np.random.RandomState(2)), x)


def test_dropout_matches_torch_scaling():
    torch = pytest.importorskip("torch")
    x = np.random.RandomState(0).normal(size=(64, 33)).astype(np.float32)
    torch.manual_seed(0)
    ty = torch.nn.functional.dropout(torch.tensor(x), p=0.3, training=True).numpy()
    y = nn.Dropout(0.3, seed=0)(Tensor(x)).data
    # different generators, so different masks; both scale what they keep by 1/(1-p)
    kept_t, kept = ty != 0, y != 0
    np.testing.assert_allclose(ty[kept_t], x[kept_t] / np.float32(0.7), rtol=1e-6)
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(0.7), rtol=1e-6)
    both = kept & kept_t
    np.testing.assert_allclose(y[both], ty[both], rtol=1e-6)
    assert abs(kept.mean() - kept_t.mean()) < 0.05


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "0.5", None, True])
def test_dropout_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r"Dropout: p must be a number in \[0, 1\)"):
        nn.Dropout(p)


# ----------------------------------------------------------------------------- Flatten


def test_flatten_keeps_the_batch_and_joins_the_rest():
    x = Tensor(np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5),
               requires_grad=True)
    y = nn.Flatten()(x)
    assert y.shape == (2, 60)
    np.testing.assert_array_equal(y.data, x.data.reshape(2, 60))
    y.backward(np.arange(120.0).reshape(2, 60))
    np.testing.assert_array_equal(x.grad, np.arange(120.0).reshape(2, 3, 4, 5))
    assert gradcheck(nn.Flatten(), Tensor(np.ones((3, 2, 2)), requires_grad=True))


def test_flatten_shape_error_names_the_layer():
    with pytest.raises(ValueError, match=r"Flatten\(\): expected input \(N, \.\.\.\).*got \(5,\)"):
        nn.Flatten()(Tensor(np.ones(5)))


# ----------------------------------------------------------------------------- a CNN end to end


def small_cnn(seed=1, batch_norm=True):
    rng = np.random.RandomState(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(4, 4, 3, stride=2, rng=rng), nn.ReLU(), nn.AvgPool2d(1), nn.Flatten(),
              nn.Dense(16, 12, init_std="he", rng=rng)]
    layers += [nn.BatchNorm1d(12)] if batch_norm else [nn.LayerNorm(12)]
    layers += [nn.ReLU(), nn.Dropout(0.2, seed=seed), nn.Dense(12, 2, rng=rng)]
    return nn.Sequential(*layers)


def cnn_data(n=96):
    r = np.random.RandomState(0)
    X = r.normal(size=(n, 1, 10, 10)).astype(np.float32)
    y = (X[:, 0, :5].sum(axis=(1, 2)) > 0).astype(np.int64)
    return X, y


def test_a_cnn_graph_draws_with_its_module_clusters():
    from tinygrad_mlp import viz

    model = small_cnn()
    X, y = cnn_data(8)
    loss = nn.CrossEntropy()(model(Tensor(X)), y)
    loss.backward()
    source = viz.draw(loss, group=model).source
    for label in ("0: Conv2d(1, 4, 3, padding=1)", "2: MaxPool2d(2)",
                  "3: Conv2d(4, 4, 3, stride=2)", "8: BatchNorm1d(12", "10: Dropout(p=0.2)"):
        assert label in source, label
    for op in ("conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "dropout", "reshape"):
        assert op in source, op


@pytest.mark.parametrize("batch_norm", [False, True])
def test_fit_trains_a_cnn_the_same_with_and_without_replay(batch_norm):
    from tinygrad_mlp import optim, train

    X, y = cnn_data()
    results = []
    for replay in (True, False):
        model = small_cnn(batch_norm=batch_norm)
        history = train.fit(model, nn.CrossEntropy(), optim.Adam(model.parameters(), 1e-2),
                            X, y, epochs=3, batch_size=16, seed=0, progress=False,
                            replay=replay)
        results.append((history.cost, model.state_dict(), model.training))
    (cost_a, state_a, mode_a), (cost_b, state_b, mode_b) = results
    assert cost_a == cost_b and cost_a[-1] < cost_a[0]
    assert list(state_a) == list(state_b)
    for name in state_a:  # weights and running statistics, bit for bit
        np.testing.assert_array_equal(state_a[name], state_b[name], err_msg=name)
    assert mode_a and mode_b  # fit leaves the model in the mode it found it in
    if batch_norm:
        assert not np.array_equal(state_a["8.running_var"], np.ones(12, np.float32))
