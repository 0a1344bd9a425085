"""The new layers under `jit`: bit-identical to the ordinary engine, including Dropout's
draws and BatchNorm's running statistics, over several steps and a switch to eval mode."""

import numpy as np
import pytest

from tinygrad_mlp import Tensor, jit, nn, optim


def cnn(seed=1):
    rng = np.random.RandomState(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, (3, 2), stride=(2, 1), rng=rng), nn.ReLU(), nn.AvgPool2d(2, stride=1),
        nn.Flatten(), nn.Dense(12, 16, init_std="xavier", rng=rng), nn.BatchNorm1d(16),
        nn.ReLU(), nn.Dropout(0.3, seed=seed), nn.Dense(16, 8, rng=rng), nn.LayerNorm(8),
        nn.Dense(8, 3, rng=rng))


def batches(steps, n=12):
    r = np.random.RandomState(0)
    return [(r.normal(size=(n, 1, 10, 9)).astype(np.float32), r.randint(0, 3, n))
            for _ in range(steps)]


def run(use_jit, steps=6):
    model = cnn()
    loss_fn = nn.CrossEntropy()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    def step(x, y):
        return loss_fn(model(x), y)

    if use_jit:
        step = jit(step)
    losses, grads = [], []
    for x, y in batches(steps):
        loss = step(Tensor(x), Tensor(y))
        opt.zero_grad()
        loss.backward()
        grads.append([p.grad.copy() for p in model.parameters()])
        opt.step()
        losses.append(loss.data.copy())
    model.eval()
    evals = [step(Tensor(x), Tensor(y)).data.copy() for x, y in batches(3)]
    return model, losses, grads, evals, step


def test_a_cnn_with_batch_norm_and_dropout_is_bit_identical_under_jit():
    eager, jitted = run(False), run(True)
    model_e, losses_e, grads_e, evals_e, _ = eager
    model_j, losses_j, grads_j, evals_j, step = jitted
    assert step.source  # the steps were replayed as compiled code, not run eagerly
    for a, b in zip(losses_e, losses_j):
        np.testing.assert_array_equal(a, b)
    for ga, gb in zip(grads_e, grads_j):
        for a, b in zip(ga, gb):
            np.testing.assert_array_equal(a, b)
    state_e, state_j = model_e.state_dict(), model_j.state_dict()
    assert "8.running_mean" in state_j
    for name in state_e:  # weights and BatchNorm's running statistics
        np.testing.assert_array_equal(state_e[name], state_j[name], err_msg=name)
    assert not np.array_equal(state_j["8.running_mean"], np.zeros(16, np.float32))
    # both Dropouts drew the same masks: their generators are in the same state
    assert model_e[10].rng.get_state()[2] == model_j[10].rng.get_state()[2]
    np.testing.assert_array_equal(model_e[10].rng.get_state()[1],
                                  model_j[10].rng.get_state()[1])
    for a, b in zip(evals_e, evals_j):  # eval mode: running statistics, no dropout
        np.testing.assert_array_equal(a, b)


def test_jit_sees_load_state_dict_of_buffers():
    model = cnn()
    step = jit(lambda x: model(x))
    model.eval()
    data = [x for x, _ in batches(4)]
    for x in data[:3]:
        step(Tensor(x))  # recorded, then replayed
    state = model.state_dict()
    state["8.running_mean"] = np.full(16, 5.0, np.float32)
    model.load_state_dict(state)
    np.testing.assert_array_equal(step(Tensor(data[3])).data, model(Tensor(data[3])).data)


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_dropout_alone_under_jit_draws_like_eager(p):
    a, b = nn.Dropout(p, seed=7), nn.Dropout(p, seed=7)
    f = jit(lambda x: b(x) * 2.0)
    x = Tensor(np.ones((5, 6)))
    for _ in range(4):
        np.testing.assert_array_equal(a(x).data * 2.0, f(x).data)
