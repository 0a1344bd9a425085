"""Property-based tests (hypothesis): random broadcast-compatible shapes for every binary
op and random chains of ops, gradients checked against central finite differences.

Values come from hypothesis-drawn seeds (smooth, away from kinks); shapes, op choices and
chain lengths are drawn directly, so failures shrink to small shapes and short chains.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_mlp import Tensor, gradcheck, jvp, numerical_gradient, unbroadcast

SETTINGS = settings(max_examples=40, deadline=None)

shape_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                min_side=1, max_side=3)
seeds = st.integers(0, 2**32 - 1)


def _away_from_zero(rng, shape):
    return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@SETTINGS
@given(shapes=shape_pairs, op=st.sampled_from(sorted(BINARY)), seed=seeds)
def test_binary_ops_broadcast_and_their_gradients_match_finite_differences(shapes, op, seed):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    rng = np.random.default_rng(seed)
    a = Tensor(rng.standard_normal(sa), requires_grad=True)
    b = Tensor(_away_from_zero(rng, sb), requires_grad=True)
    fn = BINARY[op]
    out = fn(a, b)
    assert out.shape == out_shape
    np.testing.assert_allclose(out.data, fn(a.data, b.data), rtol=1e-15)
    w = rng.standard_normal(out_shape)
    assert gradcheck(lambda a, b: fn(a, b) * w, a, b, atol=1e-6, rtol=1e-5)
    assert a.grad is None and b.grad is None
    fn(a, b).backward(w)
    assert a.grad.shape == sa and b.grad.shape == sb


@SETTINGS
@given(shapes=shape_pairs, op=st.sampled_from(sorted(BINARY)), seed=seeds,
       number=st.floats(0.5, 3.0), number_left=st.booleans())
def test_numbers_and_arrays_on_either_side(shapes, op, seed, number, number_left):
    (sa, sb) = shapes.input_shapes
    rng = np.random.default_rng(seed)
    t = Tensor(_away_from_zero(rng, sa), requires_grad=True)
    arr = _away_from_zero(rng, sb)
    fn = BINARY[op]
    for other in (number, arr):
        out = fn(other, t) if number_left else fn(t, other)
        assert isinstance(out, Tensor)
        expected = fn(other, t.data) if number_left else fn(t.data, other)
        np.testing.assert_allclose(out.data, expected, rtol=1e-15)
        f = ((lambda x, o=other: fn(o, x)) if number_left
             else (lambda x, o=other: fn(x, o)))
        assert gradcheck(f, t, atol=1e-6, rtol=1e-5)


@SETTINGS
@given(shapes=shape_pairs)
def test_unbroadcast_sums_the_copies(shapes):
    sa = shapes.input_shapes[0]
    grad = unbroadcast(np.ones(shapes.result_shape), sa)
    assert isinstance(grad, np.ndarray) and grad.shape == sa
    copies = int(np.prod(shapes.result_shape)) // max(int(np.prod(sa)), 1)
    np.testing.assert_array_equal(grad, np.full(sa, float(copies)))


# ----------------------------------------------------------------------------- chains

# each step maps a Tensor of shape (n, m) to one of the same shape, smooth on all of R
# (the second operand `y` is another leaf of shape (1, m), broadcast)
STEPS = {
    "tanh": lambda t, y: t.tanh(),
    "sigmoid": lambda t, y: t.sigmoid(),
    "exp_tanh": lambda t, y: t.tanh().exp(),
    "log1p_sq": lambda t, y: (t * t + 1).log(),
    "sqrt1p_sq": lambda t, y: (1 + t ** 2).sqrt(),
    "cube_tanh": lambda t, y: t.tanh() ** 3,
    "mul_y": lambda t, y: t * y,
    "add_y": lambda t, y: t + y,
    "div_y": lambda t, y: t / (y * y + 1),
    "sub_from_2": lambda t, y: 2 - t,
    "neg": lambda t, y: -t,
    "scale": lambda t, y: 0.7 * t,
    "softmax": lambda t, y: t.softmax(axis=-1),
    "log_softmax0": lambda t, y: t.log_softmax(axis=0),
    "center_rows": lambda t, y: t - t.mean(axis=1, keepdims=True),
    "add_col_sums": lambda t, y: t + 0.1 * t.sum(axis=0),
    "double_T": lambda t, y: (t.T * 1.5).T,
    "flip": lambda t, y: t[::-1],
    "reshape_roundtrip": lambda t, y: t.reshape(-1).reshape(t.shape) * 0.5,
    "transpose_reshape": lambda t, y: t.transpose(1, 0).reshape(t.shape) + t,
    "self_matmul": lambda t, y: (t @ t.T).tanh() @ t * 0.2,
}

chains = st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=6)
matrix_shapes = st.tuples(st.integers(1, 3), st.integers(1, 3))


def _chain(names):
    def fn(x, y):
        t = x
        for name in names:
            t = STEPS[name](t, y)
        return t
    return fn


@SETTINGS
@given(names=chains, shape=matrix_shapes, seed=seeds)
def test_random_chains_of_ops_gradcheck(names, shape, seed):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    y = Tensor(rng.standard_normal((1, shape[1])), requires_grad=True)
    fn = _chain(names)
    w = rng.standard_normal(shape)
    assert gradcheck(lambda x, y: fn(x, y) * w, x, y, atol=1e-6, rtol=1e-4)


@SETTINGS
@given(names=chains, shape=matrix_shapes, seed=seeds)
def test_random_chains_forward_and_reverse_mode_agree(names, shape, seed):
    rng = np.random.default_rng(seed)
    xa, ya = rng.standard_normal(shape), rng.standard_normal((1, shape[1]))
    vx, vy = rng.standard_normal(xa.shape), rng.standard_normal(ya.shape)
    fn = _chain(names)
    _, jv = jvp(fn, (xa, ya), (vx, vy))
    x, y = Tensor(xa, requires_grad=True), Tensor(ya, requires_grad=True)
    u = rng.standard_normal(shape)
    fn(x, y).backward(u)
    forward = float(np.sum(u * jv))
    y_grad = np.zeros_like(ya) if y.grad is None else y.grad  # y unused by the chain
    reverse = float(np.sum(x.grad * vx) + np.sum(y_grad * vy))
    assert abs(forward - reverse) <= 1e-10 * max(1.0, abs(forward))


@SETTINGS
@given(names=chains, shape=matrix_shapes, seed=seeds)
def test_random_chains_keep_float32(names, shape, seed):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    y = Tensor(rng.standard_normal((1, shape[1])).astype(np.float32), requires_grad=True)
    out = _chain(names)(x, y)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32
    assert y.grad is None or y.grad.dtype == np.float32


@SETTINGS
@given(names=chains, shape=matrix_shapes, seed=seeds)
def test_a_chain_reused_twice_accumulates_twice(names, shape, seed):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    y = Tensor(rng.standard_normal((1, shape[1])), requires_grad=True)
    fn = _chain(names)
    (numeric,) = numerical_gradient(lambda x: fn(x, y) + fn(x, y) * 2, x)
    (fn(x, y) + fn(x, y) * 2).sum().backward()
    np.testing.assert_allclose(x.grad, numeric, rtol=1e-4, atol=1e-6)
