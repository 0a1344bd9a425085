"""gradcheck.check_ops: every op of a graph checked on its own against finite differences
of its forward; a student's custom op with a wrong backward is found among the others, and
viz.draw(highlight=...) marks it."""

import re

import numpy as np
import pytest

import tinygrad_mlp
from tinygrad_mlp import Function, Tensor, nn, viz
from tinygrad_mlp.gradcheck import OpCheck, check_ops, graph_ops


class LeakyReLU(Function):
    """max(x, slope x), with the slope forgotten in backward: the student's bug."""

    @staticmethod
    def forward(ctx, x, slope=0.1):
        ctx.save_for_backward(x)
        ctx.slope = slope
        return np.where(x > 0, x, slope * x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * np.where(x > 0, 1.0, 1.0)  # should be np.where(x > 0, 1.0, ctx.slope)


class RightLeakyReLU(LeakyReLU):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * np.where(x > 0, 1.0, ctx.slope)


class Leaky(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op.apply(x, slope=0.1)


def network(op=LeakyReLU, dtype=np.float32):
    """A small real network: Dense, the custom op, Dense, tanh, Dense; cross-entropy + L2."""
    rng = np.random.RandomState(0)
    model = nn.Sequential(nn.Dense(4, 6, rng=rng, dtype=dtype), Leaky(op),
                          nn.Dense(6, 5, rng=rng, dtype=dtype), nn.Tanh(),
                          nn.Dense(5, 3, rng=rng, dtype=dtype))
    X = rng.normal(size=(7, 4)).astype(dtype)
    y = rng.randint(0, 3, 7)
    loss = nn.CrossEntropy()(model(Tensor(X)), y) + nn.l2_penalty(model, 0.01)
    return model, loss


def test_finds_exactly_the_wrong_op_among_several():
    model, loss = network()
    checks = check_ops(loss)
    assert len(checks) >= 7 and all(isinstance(c, OpCheck) for c in checks)
    assert [c.index for c in checks] == list(range(len(checks)))
    names = [c.op for c in checks]
    assert names.count("dense") == 3 and "tanh" in names and "softmax_cross_entropy" in names
    failed = [c for c in checks if not c.ok]
    assert [(c.op, c.index) for c in failed] == [("leakyrelu", 1)]
    assert failed[0].max_error > 0.1 and "input 0 of shape (7, 6)" in failed[0].detail
    assert all(c.max_error < 1e-5 for c in checks if c.ok)
    # with the right backward, every op passes
    assert all(c.ok for c in check_ops(network(RightLeakyReLU)[1]))
    # exported at the top level too
    assert tinygrad_mlp.check_ops is check_ops


def test_the_graph_is_unchanged_and_backward_still_works():
    model, loss = network(RightLeakyReLU, dtype=np.float64)
    data = [t.data.copy() for t in graph_ops(loss)]
    check_ops(loss)
    for t, before in zip(graph_ops(loss), data):
        np.testing.assert_array_equal(t.data, before)
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    m2, loss2 = network(RightLeakyReLU, dtype=np.float64)
    loss2.backward()
    for p, q in zip(model.parameters(), m2.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    with pytest.raises(RuntimeError, match="before backward"):
        check_ops(loss)


def test_integer_labels_and_no_grad_inputs_are_skipped():
    rng = np.random.RandomState(1)
    model = nn.Sequential(nn.Dense(3, 2, rng=rng), nn.Sigmoid())
    loss = nn.BinaryCrossEntropy()(model(Tensor(rng.normal(size=(4, 3)))), np.array([0, 1, 1, 0]))
    checks = check_ops(loss)
    assert all(c.ok for c in checks), checks
    # the fused loss takes (z, a = sigmoid(z), labels): only z is checked
    assert "sigmoid_binary_cross_entropy" in [c.op for c in checks]


def test_ops_with_random_draws_see_the_same_numbers_each_time():
    """An op that draws from an rng keyword (as Dropout does) gets its state restored."""
    class Noise(Function):
        @staticmethod
        def forward(ctx, x, rng):
            mask = rng.uniform(size=x.shape) > 0.5
            ctx.save_for_backward(mask)
            return x * mask

        @staticmethod
        def backward(ctx, g):
            return g * ctx.saved[0]

    rng = np.random.RandomState(3)
    x = Tensor(np.ones((4, 5)), requires_grad=True)
    out = Noise.apply(x, rng=rng).sum()
    state = rng.get_state()[1].copy()
    assert all(c.ok for c in check_ops(out))
    np.testing.assert_array_equal(rng.get_state()[1], state)


def test_draw_highlights_that_op_only():
    model, loss = network()
    checks = check_ops(loss)
    bad = [c for c in checks if not c.ok]
    source = viz.draw(loss, highlight=bad).source
    red = [line for line in source.splitlines() if "#d50000" in line]
    assert len(red) == 1 and "label=leakyrelu" in red[0], red
    node = re.match(r"\s*(\w+)", red[0]).group(1)
    assert node.startswith("op")
    # by index, and the same node; no highlight: no red
    assert [line for line in viz.draw(loss, highlight=[1]).source.splitlines()
            if "#d50000" in line] == red
    assert "#d50000" not in viz.draw(loss).source
    # highlighting the last op (the final add) marks another node
    last = viz.draw(loss, highlight=checks[-1]).source
    assert [line for line in last.splitlines() if "#d50000" in line] != red
    with pytest.raises(ValueError, match="graph has"):
        viz.draw(loss, highlight=[len(checks)])
    with pytest.raises(TypeError, match="OpCheck objects or op indices"):
        viz.draw(loss, highlight=["leakyrelu"])


def test_the_built_in_ops_all_pass():
    rng = np.random.RandomState(2)
    a = Tensor(rng.uniform(0.5, 2.0, (3, 4)), requires_grad=True)
    b = Tensor(rng.normal(size=(4, 2)), requires_grad=True)
    c = Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    h = (a @ b).tanh() + (a.log() * c).exp().sqrt().sum(axis=1, keepdims=True)
    h = tinygrad_mlp.concatenate([h, c[:, 1:3].abs() / (a[:, :2] ** 2)], axis=1)
    h = h.T.reshape(2, 6).softmax(axis=1) - h.reshape(6, 2).T.log_softmax(axis=0)
    out = h.max(axis=0).mean() - (c - a).relu().sigmoid().mean()
    checks = check_ops(out)
    assert len(checks) > 20
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert len({c.op for c in checks}) > 15


def test_the_fused_loss_on_a_large_batch_recomputes_its_sigmoid_input():
    """sigmoid_binary_cross_entropy(z, a = sigmoid(z), y) reads `a` for big batches: the
    check moves a with z (else its own forward would not be a function of z alone)."""
    rng = np.random.RandomState(4)
    z = Tensor(rng.normal(size=(100, 10)), requires_grad=True)
    loss = nn.BinaryCrossEntropy()(z.sigmoid(), rng.randint(0, 10, 100))
    checks = check_ops(loss)
    assert [c.op for c in checks] == ["sigmoid", "sigmoid_binary_cross_entropy"]
    assert all(c.ok for c in checks), checks


def test_a_large_input_wrong_at_one_element_is_caught():
    """Beyond 200 elements a sample of elements is checked, and random directions, which
    see an error anywhere."""
    class WrongAtOne(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            d = g * 3 * ctx.saved[0] ** 2
            d[17, 3] += 1.0
            return d

    x = Tensor(np.random.RandomState(5).normal(size=(30, 30)), requires_grad=True)
    checks = check_ops(WrongAtOne.apply(x).sum())
    assert [(c.op, c.ok) for c in checks] == [("wrongatone", False), ("sum", True)], checks
    assert checks[0].max_error > 0.1
