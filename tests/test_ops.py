"""Every op: forward values against NumPy, gradients against finite differences (float64).

`CASES` is the catalogue of op applications used here and by test_forward.py and
test_tensor.py: each case is a function of Tensors, a NumPy reference of the same value,
and one input spec (shape, domain) per differentiable input. The domains keep each op
away from its kinks and singularities so finite differences are meaningful.

Each gradcheck weights the output by a fixed random array before the sum, so an op whose
backward permutes, drops or misplaces entries cannot pass by symmetry (the gradient of a
plain sum of a transpose is all ones whatever the permutation).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import pytest

import tinygrad_mlp as tm
from tinygrad_mlp import Tensor, gradcheck, ops

ANY, POS, AWAY0, PROB = "any", "pos", "away0", "prob"
SAME = "same"  # the case's function also computes the reference on ndarrays


class Case(NamedTuple):
    name: str
    fn: Callable          # Tensors -> Tensor
    ref: object           # ndarrays -> ndarray, or SAME
    specs: tuple          # ((shape, domain), ...) one per differentiable input
    ndarray_consts: bool = False  # closes over float64 ndarrays (NumPy promotion applies)


def make_array(shape, domain, rng):
    if domain == ANY:
        return rng.standard_normal(shape)
    if domain == POS:
        return rng.uniform(0.5, 2.0, shape)
    if domain == AWAY0:
        return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    if domain == PROB:
        return rng.uniform(0.1, 0.9, shape)
    raise ValueError(domain)


def make_arrays(case, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [make_array(shape, dom, rng).astype(dtype) for shape, dom in case.specs]


def make_inputs(case, seed=0, dtype=np.float64):
    return [Tensor(a, requires_grad=True) for a in make_arrays(case, seed, dtype)]


def reference(case, arrays):
    ref = case.fn if case.ref is SAME else case.ref
    return np.asarray(ref(*[a.copy() for a in arrays]))


_R = np.random.default_rng(99)
C34 = _R.standard_normal((3, 4))
C34_AWAY0 = _R.uniform(0.5, 2.0, (3, 4)) * _R.choice([-1.0, 1.0], (3, 4))
C23 = _R.standard_normal((2, 3))
LABELS = np.array([2, 0, 3])
MASK = np.array([[True, False, True, True], [False, False, True, False],
                 [True, True, False, False]])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _log_softmax(z, axis):
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def _reduce(loss, reduction):
    return {"sum": np.sum, "mean": np.mean, "none": lambda v: v}[reduction](loss)


def _bce(a, y):
    return -(y * np.log(a) + (1 - y) * np.log(1 - a))


def _sigmoid_bce_case(reduction):
    return Case(
        f"sigmoid_bce-{reduction}",
        lambda z, y: ops.SigmoidBinaryCrossEntropy.apply(z, z.sigmoid(), y,
                                                         reduction=reduction),
        lambda z, y: _reduce(_bce(_sigmoid(z), y), reduction),
        (((3, 4), ANY), ((3, 4), PROB)))


def _bce_case(reduction):
    return Case(
        f"bce-{reduction}",
        lambda a, y: ops.BinaryCrossEntropy.apply(a, y, reduction=reduction),
        lambda a, y: _reduce(_bce(a, y), reduction),
        (((3, 4), PROB), ((3, 4), PROB)))


def _softmax_ce_case(reduction):
    return Case(
        f"softmax_ce-{reduction}",
        lambda z: ops.SoftmaxCrossEntropy.apply(z, labels=LABELS, reduction=reduction),
        lambda z: _reduce(-_log_softmax(z, 1)[np.arange(3), LABELS], reduction),
        (((3, 4), ANY),))


def _mlp(x, w1, b1, w2, b2):
    h = ops.Dense.apply(x, w1, b1).sigmoid()
    z = ops.Dense.apply(h, w2, b2)
    y = np.eye(3)[[0, 2, 1, 2]]
    cost = ops.SigmoidBinaryCrossEntropy.apply(z, z.sigmoid(), y, reduction="sum")
    return cost + ops.L2Penalty.apply(w1, w2, lam=0.1)


def _mlp_ref(x, w1, b1, w2, b2):
    a = _sigmoid(_sigmoid(x @ w1 + b1) @ w2 + b2)
    y = np.eye(3)[[0, 2, 1, 2]]
    return _bce(a, y).sum() + 0.05 * ((w1 ** 2).sum() + (w2 ** 2).sum())


def _reduction_cases():
    out = []
    for op in ("sum", "mean", "max"):
        for axis in (None, 0, 1, -1, (0, 2), (-1, -3)):
            for keepdims in (False, True):
                out.append(Case(
                    f"{op}-axis{axis}-keep{keepdims}".replace(" ", ""),
                    lambda a, op=op, axis=axis, k=keepdims: getattr(a, op)(axis=axis,
                                                                            keepdims=k),
                    SAME, (((2, 3, 4), ANY),)))
        out.append(Case(f"{op}-default", lambda a, op=op: getattr(a, op)(), SAME,
                        (((3, 4), ANY),)))
        out.append(Case(f"{op}-0d", lambda a, op=op: getattr(a, op)(), SAME, (((), ANY),)))
    return out


CASES = [
    # -- arithmetic, same shapes and broadcast ----------------------------------------
    Case("add", lambda a, b: a + b, SAME, (((3, 4), ANY), ((3, 4), ANY))),
    Case("add-(3,1)+(1,4)", lambda a, b: a + b, SAME, (((3, 1), ANY), ((1, 4), ANY))),
    Case("add-(4,)+(3,4)", lambda a, b: a + b, SAME, (((4,), ANY), ((3, 4), ANY))),
    Case("add-()+(3,4)", lambda a, b: a + b, SAME, (((), ANY), ((3, 4), ANY))),
    Case("sub", lambda a, b: a - b, SAME, (((3, 4), ANY), ((3, 4), ANY))),
    Case("sub-(3,4)-(3,1)", lambda a, b: a - b, SAME, (((3, 4), ANY), ((3, 1), ANY))),
    Case("sub-()-(2,3)", lambda a, b: a - b, SAME, (((), ANY), ((2, 3), ANY))),
    Case("mul", lambda a, b: a * b, SAME, (((3, 4), ANY), ((3, 4), ANY))),
    Case("mul-(2,3,4)*(3,1)", lambda a, b: a * b, SAME, (((2, 3, 4), ANY), ((3, 1), ANY))),
    Case("mul-(3,1)*(1,4)", lambda a, b: a * b, SAME, (((3, 1), ANY), ((1, 4), ANY))),
    Case("mul-(2,1,4)*(3,1)", lambda a, b: a * b, SAME, (((2, 1, 4), ANY), ((3, 1), ANY))),
    Case("mul-x*x", lambda a: a * a, SAME, (((3, 4), ANY),)),
    Case("div", lambda a, b: a / b, SAME, (((3, 4), ANY), ((3, 4), AWAY0))),
    Case("div-(3,1)/(1,4)", lambda a, b: a / b, SAME, (((3, 1), ANY), ((1, 4), AWAY0))),
    Case("div-(2,3,4)/()", lambda a, b: a / b, SAME, (((2, 3, 4), ANY), ((), AWAY0))),
    Case("neg", lambda a: -a, SAME, (((3, 4), ANY),)),
    # -- numbers and ndarrays on either side ------------------------------------------
    Case("number+t", lambda a: 2 + a, SAME, (((3, 4), ANY),)),
    Case("t+number", lambda a: a + 2.5, SAME, (((3, 4), ANY),)),
    Case("number-t", lambda a: 2 - a, SAME, (((3, 4), ANY),)),
    Case("t-number", lambda a: a - 2, SAME, (((3, 4), ANY),)),
    Case("number*t", lambda a: 3 * a, SAME, (((3, 4), ANY),)),
    Case("t*number", lambda a: a * -1.5, SAME, (((3, 4), ANY),)),
    Case("number/t", lambda a: 2 / a, SAME, (((3, 4), AWAY0),)),
    Case("t/number", lambda a: a / 4, SAME, (((3, 4), ANY),)),
    Case("npscalar*t", lambda a: np.float64(1.5) * a, SAME, (((3, 4), ANY),)),
    Case("t-npscalar", lambda a: a - np.float32(0.5), SAME, (((3, 4), ANY),)),
    Case("ndarray+t", lambda a: C34 + a, SAME, (((3, 4), ANY),), True),
    Case("ndarray-t", lambda a: C34 - a, SAME, (((3, 1), ANY),), True),
    Case("t-ndarray", lambda a: a - C34, SAME, (((4,), ANY),), True),
    Case("ndarray*t", lambda a: C34 * a, SAME, (((3, 4), ANY),), True),
    Case("t*ndarray", lambda a: a * C34, SAME, (((1, 4), ANY),), True),
    Case("ndarray/t", lambda a: C34 / a, SAME, (((3, 4), AWAY0),), True),
    Case("t/ndarray", lambda a: a / C34_AWAY0, SAME, (((3, 4), ANY),), True),
    Case("ndarray@t", lambda a: C23 @ a, SAME, (((3, 4), ANY),), True),
    Case("t@ndarray", lambda a: a @ C34, SAME, (((2, 3), ANY),), True),
    # -- powers -----------------------------------------------------------------------
    Case("pow2", lambda a: a ** 2, SAME, (((3, 4), ANY),)),
    Case("pow3", lambda a: a ** 3, SAME, (((3, 4), ANY),)),
    Case("pow1", lambda a: a ** 1, SAME, (((3, 4), ANY),)),
    Case("pow0", lambda a: a ** 0, SAME, (((3, 4), ANY),)),
    Case("pow0.5", lambda a: a ** 0.5, SAME, (((3, 4), POS),)),
    Case("pow-1", lambda a: a ** -1, SAME, (((3, 4), AWAY0),)),
    Case("pow-2", lambda a: a ** -2, SAME, (((3, 4), AWAY0),)),
    Case("pow1.5", lambda a: a ** 1.5, SAME, (((3, 4), POS),)),
    Case("pow-2.5", lambda a: a ** -2.5, SAME, (((3, 4), POS),)),
    Case("pow-npint3", lambda a: a ** np.int64(3), SAME, (((3, 4), ANY),)),
    Case("rpow-2**t", lambda a: 2 ** a, lambda a: 2.0 ** a, (((3, 4), ANY),)),
    # -- matmul -----------------------------------------------------------------------
    Case("matmul-2d", lambda a, b: a @ b, SAME, (((2, 3), ANY), ((3, 4), ANY))),
    Case("matmul-1d@2d", lambda a, b: a @ b, SAME, (((3,), ANY), ((3, 4), ANY))),
    Case("matmul-2d@1d", lambda a, b: a @ b, SAME, (((2, 3), ANY), ((3,), ANY))),
    Case("matmul-1d@1d", lambda a, b: a @ b, SAME, (((3,), ANY), ((3,), ANY))),
    Case("matmul-batched", lambda a, b: a @ b, SAME, (((2, 2, 3), ANY), ((2, 3, 4), ANY))),
    Case("matmul-batched@2d", lambda a, b: a @ b, SAME, (((2, 2, 3), ANY), ((3, 4), ANY))),
    Case("matmul-2d@batched", lambda a, b: a @ b, SAME, (((2, 3), ANY), ((2, 3, 4), ANY))),
    Case("matmul-batch-broadcast", lambda a, b: a @ b, SAME,
         (((1, 2, 3), ANY), ((2, 3, 2), ANY))),
    Case("matmul-1d@batched", lambda a, b: a @ b, SAME, (((3,), ANY), ((2, 3, 4), ANY))),
    Case("matmul-batched@1d", lambda a, b: a @ b, SAME, (((2, 2, 3), ANY), ((3,), ANY))),
    # -- shape ops --------------------------------------------------------------------
    Case("T-2d", lambda a: a.T, SAME, (((3, 4), ANY),)),
    Case("T-3d", lambda a: a.T, SAME, (((2, 3, 4), ANY),)),
    Case("transpose()", lambda a: a.transpose(), SAME, (((2, 3, 4), ANY),)),
    Case("transpose(1,0,2)", lambda a: a.transpose(1, 0, 2), SAME, (((2, 3, 4), ANY),)),
    Case("transpose(2,0,1)", lambda a: a.transpose(2, 0, 1), SAME, (((2, 3, 4), ANY),)),
    Case("transpose((1,2,0))", lambda a: a.transpose((1, 2, 0)), SAME, (((2, 3, 4), ANY),)),
    Case("transpose(-1,0,1)", lambda a: a.transpose(-1, 0, 1),
         lambda a: a.transpose(2, 0, 1), (((2, 3, 4), ANY),)),
    Case("reshape(6,4)", lambda a: a.reshape(6, 4), SAME, (((2, 3, 4), ANY),)),
    Case("reshape((4,-1))", lambda a: a.reshape((4, -1)), SAME, (((2, 3, 4), ANY),)),
    Case("reshape(-1)", lambda a: a.reshape(-1), SAME, (((2, 3, 4), ANY),)),
    Case("reshape-to-0d", lambda a: a.reshape(()), SAME, (((1,), ANY),)),
    # -- indexing ---------------------------------------------------------------------
    Case("getitem-slice", lambda a: a[1:3], SAME, (((3, 4), ANY),)),
    Case("getitem-step", lambda a: a[:, ::2], SAME, (((3, 4), ANY),)),
    Case("getitem-reverse", lambda a: a[::-1, 1:], SAME, (((3, 4), ANY),)),
    Case("getitem-int", lambda a: a[1], SAME, (((3, 4), ANY),)),
    Case("getitem-ints", lambda a: a[-1, 2], SAME, (((3, 4), ANY),)),
    Case("getitem-int-slice", lambda a: a[1, :, 1:3], SAME, (((2, 3, 4), ANY),)),
    Case("getitem-ellipsis", lambda a: a[..., 1], SAME, (((2, 3, 4), ANY),)),
    Case("getitem-newaxis", lambda a: a[None, 1:], SAME, (((3, 4), ANY),)),
    Case("getitem-list-repeated", lambda a: a[[0, 2, 0, 0]], SAME, (((3, 4), ANY),)),
    Case("getitem-array-repeated", lambda a: a[np.array([2, 2, 1])], SAME, (((3, 4), ANY),)),
    Case("getitem-array-2d", lambda a: a[np.array([[0, 1], [1, 1]])], SAME,
         (((3, 4), ANY),)),
    Case("getitem-pairs-repeated", lambda a: a[np.array([0, 0, 2]), np.array([1, 1, 3])],
         SAME, (((3, 4), ANY),)),
    Case("getitem-slice-and-array", lambda a: a[:, [3, 0, 3]], SAME, (((3, 4), ANY),)),
    Case("getitem-3d-mixed", lambda a: a[0, :, [1, 1]], SAME, (((2, 3, 4), ANY),)),
    Case("getitem-mask", lambda a: a[MASK], SAME, (((3, 4), ANY),)),
    Case("getitem-row-mask", lambda a: a[np.array([True, False, True])], SAME,
         (((3, 4), ANY),)),
    Case("getitem-tensor-index", lambda a: a[Tensor(np.array([1, 1, 0]))],
         lambda a: a[np.array([1, 1, 0])], (((3, 4), ANY),)),
    # -- reductions -------------------------------------------------------------------
    *_reduction_cases(),
    # -- elementwise ------------------------------------------------------------------
    Case("exp", lambda a: a.exp(), np.exp, (((3, 4), ANY),)),
    Case("log", lambda a: a.log(), np.log, (((3, 4), POS),)),
    Case("sqrt", lambda a: a.sqrt(), np.sqrt, (((3, 4), POS),)),
    Case("abs", lambda a: a.abs(), np.abs, (((3, 4), AWAY0),)),
    Case("sigmoid", lambda a: a.sigmoid(), _sigmoid, (((3, 4), ANY),)),
    Case("tanh", lambda a: a.tanh(), np.tanh, (((3, 4), ANY),)),
    Case("relu", lambda a: a.relu(), lambda a: np.maximum(a, 0), (((3, 4), AWAY0),)),
    Case("softmax", lambda a: a.softmax(),
         lambda a: np.exp(_log_softmax(a, -1)), (((3, 4), ANY),)),
    Case("softmax-axis0", lambda a: a.softmax(axis=0),
         lambda a: np.exp(_log_softmax(a, 0)), (((3, 4), ANY),)),
    Case("softmax-3d-axis1", lambda a: a.softmax(axis=1),
         lambda a: np.exp(_log_softmax(a, 1)), (((2, 3, 4), ANY),)),
    Case("log_softmax", lambda a: a.log_softmax(),
         lambda a: _log_softmax(a, -1), (((3, 4), ANY),)),
    Case("log_softmax-axis0", lambda a: a.log_softmax(axis=0),
         lambda a: _log_softmax(a, 0), (((3, 4), ANY),)),
    Case("log_softmax-3d-axis-2", lambda a: a.log_softmax(axis=-2),
         lambda a: _log_softmax(a, -2), (((2, 3, 4), ANY),)),
    # -- joining ----------------------------------------------------------------------
    Case("concatenate-axis0", lambda a, b: tm.concatenate([a, b]),
         lambda a, b: np.concatenate([a, b]), (((2, 3), ANY), ((1, 3), ANY))),
    Case("concatenate-axis1-with-ndarray", lambda a, b: tm.concatenate([a, C23, b], axis=1),
         lambda a, b: np.concatenate([a, C23, b], axis=1),
         (((2, 1), ANY), ((2, 4), ANY)), True),
    Case("concatenate-axis-1", lambda a, b: tm.concatenate((a, b, a), axis=-1),
         lambda a, b: np.concatenate((a, b, a), axis=-1),
         (((2, 2, 1), ANY), ((2, 2, 3), ANY))),
    Case("stack-axis0", lambda a, b: tm.stack([a, b]),
         lambda a, b: np.stack([a, b]), (((2, 3), ANY), ((2, 3), ANY))),
    Case("stack-axis1", lambda a, b: tm.stack([a, b, a], axis=1),
         lambda a, b: np.stack([a, b, a], axis=1), (((2, 3), ANY), ((2, 3), ANY))),
    Case("stack-axis-1", lambda a, b: tm.stack([a, b], axis=-1),
         lambda a, b: np.stack([a, b], axis=-1), (((2, 3), ANY), ((2, 3), ANY))),
    # -- casts ------------------------------------------------------------------------
    Case("astype-float64", lambda a: a.astype(np.float64) * 2, SAME, (((3, 4), ANY),)),
    Case("astype-longdouble-roundtrip",
         lambda a: (a.astype(np.longdouble) * 3.0).exp().astype(np.float64),
         lambda a: np.exp(a * 3.0), (((3, 4), ANY),)),
    # -- fused ops --------------------------------------------------------------------
    Case("dense", lambda x, w, b: ops.Dense.apply(x, w, b), lambda x, w, b: x @ w + b,
         (((4, 3), ANY), ((3, 2), ANY), ((2,), ANY))),
    Case("dense-no-bias", lambda x, w: ops.Dense.apply(x, w), lambda x, w: x @ w,
         (((4, 3), ANY), ((3, 2), ANY))),
    Case("dense-3d-input", lambda x, w, b: ops.Dense.apply(x, w, b),
         lambda x, w, b: x @ w + b, (((2, 2, 3), ANY), ((3, 2), ANY), ((2,), ANY))),
    Case("dense-1d-input", lambda x, w, b: ops.Dense.apply(x, w, b),
         lambda x, w, b: x @ w + b, (((3,), ANY), ((3, 2), ANY), ((2,), ANY))),
    *[_sigmoid_bce_case(r) for r in ("sum", "mean", "none")],
    *[_bce_case(r) for r in ("sum", "mean", "none")],
    *[_softmax_ce_case(r) for r in ("sum", "mean", "none")],
    Case("l2_penalty", lambda w1, w2: ops.L2Penalty.apply(w1, w2, lam=0.3),
         lambda w1, w2: 0.15 * ((w1 ** 2).sum() + (w2 ** 2).sum()),
         (((3, 2), ANY), ((2,), ANY))),
    Case("mlp", _mlp, _mlp_ref,
         (((4, 5), ANY), ((5, 3), ANY), ((3,), ANY), ((3, 3), ANY), ((3,), ANY))),
]

CASE_IDS = [c.name for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "case names must be unique"


def weighted(fn, out_shape, seed=7):
    """fn(*xs) * R for a fixed random R of the output's shape (breaks symmetries of sum)."""
    r = np.random.default_rng(seed).standard_normal(out_shape)
    return lambda *xs: fn(*xs) * r


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_value_matches_numpy(case):
    arrays = make_arrays(case)
    out = case.fn(*[Tensor(a, requires_grad=True) for a in arrays])
    assert isinstance(out, Tensor)
    expected = reference(case, arrays)
    assert out.shape == expected.shape
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradcheck(case):
    inputs = make_inputs(case)
    out_shape = case.fn(*inputs).shape
    assert gradcheck(weighted(case.fn, out_shape), *inputs, atol=1e-6, rtol=1e-5) is True


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradient_has_each_inputs_shape_and_dtype(case):
    inputs = make_inputs(case)
    out = case.fn(*inputs)
    out.backward(np.ones(out.shape))
    for x in inputs:
        assert isinstance(x.grad, np.ndarray)
        assert x.grad.shape == x.shape and x.grad.dtype == x.dtype


# ----------------------------------------------------------------------------- exact values


def test_max_ties_split_the_gradient_evenly():
    x = Tensor(np.array([1.0, 3.0, 3.0, 2.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.5, 0.5, 0.0])


def test_max_ties_along_an_axis_with_keepdims():
    x = Tensor(np.array([[5.0, 5.0, 5.0, 1.0], [0.0, 2.0, 1.0, 2.0], [7.0, 1.0, 1.0, 1.0]]),
               requires_grad=True)
    m = x.max(axis=1, keepdims=True)
    np.testing.assert_array_equal(m.data, [[5.0], [2.0], [7.0]])
    m.backward(np.array([[3.0], [1.0], [2.0]]))
    np.testing.assert_array_equal(x.grad, [[1.0, 1.0, 1.0, 0.0], [0.0, 0.5, 0.0, 0.5],
                                           [2.0, 0.0, 0.0, 0.0]])


def test_max_all_equal_and_over_negative_axis_tuple():
    x = Tensor(np.full((2, 2, 2), 4.0), requires_grad=True)
    x.max(axis=(-1, 0)).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((2, 2, 2), 0.25))


def test_repeated_indices_accumulate():
    x = Tensor(np.arange(4.0), requires_grad=True)
    y = x[[0, 0, 3, 0]]
    np.testing.assert_array_equal(y.data, [0.0, 0.0, 3.0, 0.0])
    y.backward(np.array([1.0, 10.0, 100.0, 1000.0]))
    np.testing.assert_array_equal(x.grad, [1011.0, 0.0, 0.0, 100.0])


def test_repeated_index_pairs_accumulate_in_2d():
    x = Tensor(np.zeros((2, 3)), requires_grad=True)
    x[np.array([1, 1, 0]), np.array([2, 2, 0])].backward(np.array([1.0, 2.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [[4.0, 0.0, 0.0], [0.0, 0.0, 3.0]])


def test_boolean_mask_gradient_lands_on_the_selected_entries():
    x = Tensor(np.zeros((3, 4)), requires_grad=True)
    x[MASK].backward(np.arange(1.0, MASK.sum() + 1))
    expected = np.zeros((3, 4))
    expected[MASK] = np.arange(1.0, MASK.sum() + 1)
    np.testing.assert_array_equal(x.grad, expected)


def test_slice_gradient_is_zero_outside_the_slice():
    x = Tensor(np.zeros((3, 4)), requires_grad=True)
    x[1:, ::3].backward(np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(x.grad, [[0, 0, 0, 0], [1, 0, 0, 2], [3, 0, 0, 4]])


def test_broadcast_gradients_sum_over_the_broadcast_axes():
    a = Tensor(np.ones((3, 1)), requires_grad=True)
    b = Tensor(np.ones((1, 4)), requires_grad=True)
    c = Tensor(np.array(2.0), requires_grad=True)
    ((a + b) * c).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full((3, 1), 8.0))
    np.testing.assert_array_equal(b.grad, np.full((1, 4), 6.0))
    assert c.grad.shape == () and c.grad == 24.0


def test_broadcast_of_a_leading_axis_reduces_it():
    a = Tensor(np.ones((2, 3, 4)), requires_grad=True)
    b = Tensor(np.arange(3.0).reshape(3, 1), requires_grad=True)
    (a * b).sum().backward()
    np.testing.assert_array_equal(b.grad, np.full((3, 1), 8.0))
    np.testing.assert_array_equal(a.grad, np.broadcast_to(b.data, (2, 3, 4)))


@pytest.mark.parametrize("make", [
    lambda t, arr: arr * t, lambda t, arr: arr + t, lambda t, arr: arr - t,
    lambda t, arr: arr / t, lambda t, arr: arr @ t.T, lambda t, arr: 2 - t,
    lambda t, arr: 2.0 * t, lambda t, arr: 1 / t, lambda t, arr: np.float64(2) - t,
], ids=["ndarray*t", "ndarray+t", "ndarray-t", "ndarray/t", "ndarray@t", "2-t", "2.0*t",
        "1/t", "npscalar-t"])
def test_operand_on_the_left_returns_a_tensor_in_the_graph(make):
    t = Tensor(np.full((2, 2), 2.0), requires_grad=True)
    out = make(t, np.full((2, 2), 3.0))
    assert isinstance(out, Tensor)
    assert out.requires_grad and out.op is not None
    out.sum().backward()
    assert t.grad is not None and np.all(t.grad != 0)


def test_rsub_and_rdiv_are_not_swapped():
    t = Tensor(np.array([4.0]), requires_grad=True)
    assert (2 - t).item() == -2.0 and (t - 2).item() == 2.0
    assert (2 / t).item() == 0.5 and (t / 2).item() == 2.0
    (2 - t).backward()
    assert t.grad.item() == -1.0


def test_pow_zero_has_zero_gradient_even_at_zero():
    x = Tensor(np.array([0.0, 2.0]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])


def test_pow_by_a_tensor_is_refused():
    with pytest.raises(TypeError, match="pow"):
        Tensor(np.ones(2)) ** Tensor(np.ones(2))


def test_cast_to_float32_sends_a_float64_gradient_back():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.astype(np.float32)
    assert y.dtype == np.float32 and y.op == "cast"
    (y * 3).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_sigmoid_bce_gives_the_lecture_delta_a_minus_y():
    z = Tensor(np.array([[0.3, -1.2], [2.0, 0.1]]), requires_grad=True)
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    a = z.sigmoid()
    ops.SigmoidBinaryCrossEntropy.apply(z, a, y, reduction="sum").backward()
    np.testing.assert_allclose(z.grad, a.data - y, rtol=1e-15)


def test_softmax_ce_gradient_is_softmax_minus_onehot_over_n():
    z = Tensor(np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]), requires_grad=True)
    labels = np.array([1, 2])
    ops.SoftmaxCrossEntropy.apply(z, labels=labels, reduction="mean").backward()
    s = np.exp(z.data) / np.exp(z.data).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(z.grad, (s - np.eye(3)[labels]) / 2, rtol=1e-12)


def test_concatenate_splits_the_gradient_back():
    a = Tensor(np.zeros((2, 1)), requires_grad=True)
    b = Tensor(np.zeros((2, 2)), requires_grad=True)
    tm.concatenate([a, b], axis=1).backward(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(a.grad, [[0.0], [3.0]])
    np.testing.assert_array_equal(b.grad, [[1.0, 2.0], [4.0, 5.0]])
