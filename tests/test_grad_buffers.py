"""Gradient memory: the eager engine adds a leaf's later gradients into the .grad it made
in the same backward, and jit's compiled backward writes Dense and L2 gradients into
arrays it keeps between calls (_kernels.INTO). Same bits as the ops; never an array
someone else holds."""

import numpy as np
import pytest

from tinygrad_mlp import Tensor, _kernels, jit, nn, ops, optim
from tinygrad_mlp.tensor import Context


def _dense_case(dtype, bias, needs, rng):
    x = rng.normal(size=(6, 5)).astype(dtype)
    w = rng.normal(size=(5, 3)).astype(dtype)
    arrays = [x, w] + ([rng.normal(size=3).astype(dtype)] if bias else [])
    return ops.Dense, arrays, {}, needs[:len(arrays)], (6, 3)


def _l2_case(dtype, bias, needs, rng):
    arrays = [rng.normal(size=(5, 3)).astype(dtype), rng.normal(size=(4,)).astype(dtype)]
    return ops.L2Penalty, arrays, {"lam": 0.3}, needs[:2], ()


@pytest.mark.parametrize("case", [_dense_case, _l2_case])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("needs", [(True, True, True), (False, True, True), (True, False, False)])
def test_into_kernels_equal_their_ops_and_reuse_only_free_buffers(case, dtype, bias, needs):
    rng = np.random.RandomState(0)
    function, arrays, params, needs, out_shape = case(dtype, bias, needs, rng)
    before = [a.copy() for a in arrays]
    kernel = _kernels.INTO[function]
    buffers = [None] * len(arrays)
    ctx_op, ctx_fast = (Context(function, (), needs) for _ in range(2))
    function.forward(ctx_op, *arrays, **params)
    function.forward(ctx_fast, *arrays, **params)
    g = rng.normal(size=out_shape).astype(dtype)
    expected = function.backward(ctx_op, g)
    first = kernel(ctx_fast, g, buffers)
    assert len(first) == len(expected)
    for got, want in zip(first, expected):
        assert (got is None) == (want is None)
        if want is not None:
            assert got.dtype == want.dtype and np.array_equal(got, want)
    held = list(first)  # someone holds every result
    copies = [None if a is None else a.copy() for a in held]
    second = kernel(ctx_fast, g * 2, buffers)
    for h, c, s in zip(held, copies, second):
        if h is not None:
            assert s is not h and np.array_equal(h, c)  # a held array is never written
    expected2 = function.backward(ctx_op, g * 2)
    ids = [None if a is None else id(a) for a in second]
    del held, first, second, h, s
    third = kernel(ctx_fast, g * 2, buffers)
    for got, want, old in zip(third, expected2, ids):
        if want is not None:
            assert np.array_equal(got, want)
            if dtype != np.float16 and (function is ops.L2Penalty or want.ndim == 2):
                assert id(got) == old  # nothing held it: the same array again
    assert all(np.array_equal(a, b) for a, b in zip(arrays, before))


def test_eager_backward_sums_a_leafs_gradients_and_never_writes_a_held_grad():
    rng = np.random.RandomState(3)
    w = Tensor(rng.normal(size=(4, 3)), requires_grad=True)
    x = Tensor(rng.normal(size=(5, 4)))
    loss = (x @ w).sum() + (w * w).sum() * 0.5 + nn.l2_penalty([w], 0.1)
    loss.backward()
    assert np.allclose(w.grad, 0.1 * w.data + w.data + x.data.T @ np.ones((5, 3)))
    kept, value = w.grad, w.grad.copy()
    ((x @ w).sum() + nn.l2_penalty([w], 0.1)).backward()  # accumulate: a new array
    assert np.array_equal(kept, value) and w.grad is not kept
    assert np.array_equal(w.grad, (value + 0.1 * w.data) + x.data.T @ np.ones((5, 3)))


def test_jit_reuses_gradient_arrays_after_zero_grad_and_never_a_held_one():
    rng = np.random.RandomState(1)
    model = nn.Sequential(nn.Dense(8, 6, rng=rng, dtype=np.float64), nn.Sigmoid(),
                          nn.Dense(6, 2, rng=rng, dtype=np.float64), nn.Sigmoid())
    twin = nn.Sequential(nn.Dense(8, 6, rng=np.random.RandomState(1), dtype=np.float64),
                         nn.Sigmoid(),
                         nn.Dense(6, 2, rng=np.random.RandomState(1), dtype=np.float64),
                         nn.Sigmoid())
    twin.load_state_dict(model.state_dict())
    cost = nn.BinaryCrossEntropy()
    fast = jit(lambda x, y: cost(model(x), y) + nn.l2_penalty(model, 0.01))
    opt, opt_twin = optim.SGD(model.parameters(), lr=0.1), optim.SGD(twin.parameters(), lr=0.1)
    X, Y = rng.uniform(-1, 1, (60, 8)), np.eye(2)[rng.randint(0, 2, 60)]
    w = model.parameters()[0]
    seen, held = [], None
    for step in range(6):
        xb, yb = X[step * 10:step * 10 + 10], Y[step * 10:step * 10 + 10]
        loss = fast(Tensor(xb), Tensor(yb))
        opt.zero_grad()
        loss.backward()
        seen.append(id(w.grad))
        if step == 3:
            held, held_value = w.grad, w.grad.copy()
        opt.step()
        slow = cost(twin(Tensor(xb)), Tensor(yb)) + nn.l2_penalty(twin, 0.01)
        opt_twin.zero_grad()
        slow.backward()
        opt_twin.step()
        for p, q in zip(model.parameters(), twin.parameters()):
            assert np.array_equal(p.grad, q.grad) and np.array_equal(p.data, q.data)
    assert fast.stats["replayed"] == 4
    assert seen[3] == seen[2]          # replays 1 and 2: the freed array is used again
    assert seen[4] != seen[3]          # the user holds step 3's gradient: a new array
    assert np.array_equal(held, held_value)
