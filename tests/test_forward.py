"""Forward mode (`jvp`) against reverse mode and finite differences, for every op (float64).

For f with inputs x_i, tangents v_i and the output's Jacobian-vector product Jv:
  - Jv matches the central difference (f(x + h v) - f(x - h v)) / 2h;
  - for any cotangent u of the output's shape, u . (J v) == sum_i (J_i^T u) . v_i, where
    J_i^T u is what backward(u) leaves in x_i.grad (for a scalar output, u = 1: v . grad).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from tinygrad_mlp import Function, Tensor, jvp, no_grad

sys.path.insert(0, os.path.dirname(__file__))
from test_ops import CASE_IDS, CASES, make_arrays  # noqa: E402


def _tangents(arrays, seed=5):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(a.shape) for a in arrays]


def _finite_difference(fn, arrays, tangents, h=1e-6):
    with no_grad():
        plus = fn(*[Tensor(a + h * v) for a, v in zip(arrays, tangents)]).data
        minus = fn(*[Tensor(a - h * v) for a, v in zip(arrays, tangents)]).data
    return (plus - minus) / (2 * h)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jvp_value_is_the_forward_value(case):
    arrays = make_arrays(case)
    out, tangent = jvp(case.fn, arrays, _tangents(arrays))
    expected = case.fn(*[Tensor(a) for a in arrays])
    np.testing.assert_array_equal(out.data, expected.data)
    assert isinstance(tangent, np.ndarray)
    assert tangent.shape == out.shape and tangent.dtype == np.float64


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jvp_matches_finite_differences(case):
    arrays = make_arrays(case)
    tangents = _tangents(arrays)
    _, tangent = jvp(case.fn, arrays, tangents)
    numeric = _finite_difference(case.fn, arrays, tangents)
    np.testing.assert_allclose(tangent, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jvp_agrees_with_backward(case):
    arrays = make_arrays(case)
    tangents = _tangents(arrays)
    _, jv = jvp(case.fn, arrays, tangents)
    inputs = [Tensor(a, requires_grad=True) for a in arrays]
    out = case.fn(*inputs)
    u = np.random.default_rng(11).standard_normal(out.shape)
    if out.ndim == 0:
        out.backward()  # a scalar output: u = 1, so v . grad must equal J v
        u = np.ones(())
    else:
        out.backward(u)
    forward = float(np.sum(u * jv))
    reverse = sum(float(np.sum(x.grad * v)) for x, v in zip(inputs, tangents))
    assert forward == pytest.approx(reverse, rel=1e-10, abs=1e-12)


def test_a_constant_primal_has_a_none_tangent():
    a, b = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    out, t = jvp(lambda x, y: x * y + x, (a, b), (np.array([1.0, 0.5]), None))
    np.testing.assert_array_equal(out.data, a * b + a)
    np.testing.assert_array_equal(t, np.array([1.0, 0.5]) * (b + 1))


def test_a_single_primal_need_not_be_in_a_tuple():
    out, t = jvp(lambda x: x.exp(), np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    np.testing.assert_allclose(t, [2.0, 3.0 * np.e], rtol=1e-15)


def test_an_output_independent_of_the_tangents_has_a_zero_tangent():
    out, t = jvp(lambda x, y: y * 2, (np.ones(2), np.ones(3)), (np.ones(2), None))
    np.testing.assert_array_equal(t, np.zeros(3))


def test_jvp_of_a_number_times_a_tensor_and_broadcasting():
    out, t = jvp(lambda x, y: 3 - x * y, (np.ones((3, 1)), np.ones((1, 4))),
                 (np.full((3, 1), 2.0), np.full((1, 4), 5.0)))
    assert t.shape == (3, 4)
    np.testing.assert_array_equal(t, np.full((3, 4), -7.0))


def test_jvp_keeps_float32():
    out, t = jvp(lambda x: (x * 2.0).sigmoid().sum(), np.ones(3, np.float32),
                 np.ones(3, np.float32))
    assert out.dtype == np.float32 and t.dtype == np.float32


def test_jvp_checks_tangent_shapes_and_counts():
    with pytest.raises(ValueError, match="shape"):
        jvp(lambda x: x * 2, (np.ones(3),), (np.ones(4),))
    with pytest.raises(ValueError, match="tangent"):
        jvp(lambda x, y: x * y, (np.ones(3), np.ones(3)), (np.ones(3),))


def test_a_custom_op_without_a_jvp_rule_is_named():
    class NoJvp(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    with pytest.raises(NotImplementedError, match="nojvp"):
        jvp(NoJvp.apply, np.ones(2), np.ones(2))
    # the failure left forward mode off: ordinary ops carry no tangents afterwards
    x = Tensor(np.ones(2), requires_grad=True)
    y = NoJvp.apply(x) * 3
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])


def test_jvp_builds_no_reverse_graph_on_its_primals():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    out, t = jvp(lambda a: a * a, (x,), (np.ones(2),))
    np.testing.assert_array_equal(t, [2.0, 4.0])
    assert x.grad is None
