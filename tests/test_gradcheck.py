"""gradcheck itself: it passes correct gradients, catches wrong ones (naming the input, the
element and both values), honours eps/atol/rtol, refuses float32, and leaves the inputs'
data and .grad as they were.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tinygrad_mlp import Function, GradcheckError, Tensor, gradcheck, numerical_gradient


def leaf(shape, seed=0, name=None):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True,
                  name=name)


class Cube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        return grad * 3 * x ** 2


class CubeWrongAtOneElement(Cube):
    """Cube whose backward is off by +1 at flat element 4 only."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        g = grad * 3 * x ** 2
        g.reshape(-1)[4] += 1.0
        return g


class MulWrongSecondGradient(Function):
    """a * b with the gradient of b forgotten to be multiplied by g (wrong for input 1)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return grad * b, a * 2.0


def _numbers(message):
    return [float(v) for v in re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", message)]


def test_returns_true_on_correct_gradients():
    assert gradcheck(Cube.apply, leaf((3, 2))) is True
    assert gradcheck(lambda a, b: (a @ b).tanh(), leaf((2, 3)), leaf((3, 4), 1)) is True


def test_names_input_element_and_both_values():
    x = leaf((2, 3))
    with pytest.raises(GradcheckError) as e:
        gradcheck(CubeWrongAtOneElement.apply, x)
    msg = str(e.value)
    assert "input 0" in msg
    assert "element (1, 1)" in msg  # flat index 4 of shape (2, 3)
    true = 3 * x.data[1, 1] ** 2
    values = _numbers(msg)
    assert any(abs(v - (true + 1.0)) < 1e-9 for v in values), msg   # autodiff's value
    assert any(abs(v - true) < 1e-5 for v in values), msg           # the finite difference
    assert "autodiff" in msg and "finite diff" in msg


def test_names_the_second_input_and_its_name():
    a, b = leaf((3,), 0), leaf((3,), 1, name="bias")
    with pytest.raises(GradcheckError, match=r"input 1 \('bias'\)"):
        gradcheck(MulWrongSecondGradient.apply, a, b)


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(GradcheckError, AssertionError)


def test_refuses_float32_with_a_clear_message():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises((TypeError, ValueError)) as e:
        gradcheck(Cube.apply, x)
    assert "float32" in str(e.value) and "float64" in str(e.value)


def test_float32_constants_are_fine():
    c = Tensor(np.ones(3, np.float32))  # does not require grad: not checked
    assert gradcheck(lambda x, c: x * c, leaf((3,)), c)


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(Cube.apply, Tensor(np.ones(3)))


def test_fn_must_return_a_tensor():
    with pytest.raises(TypeError, match="Tensor"):
        gradcheck(lambda x: x.data * 2, leaf((2,)))


def test_tolerances_are_honoured():
    class SlightlyOff(Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            return grad * 2 * (1 + 1e-4)

    x = Tensor(np.ones(3), requires_grad=True)
    assert gradcheck(SlightlyOff.apply, x)                      # rtol=1e-3 by default
    with pytest.raises(GradcheckError):
        gradcheck(SlightlyOff.apply, x, atol=0, rtol=1e-6)
    assert gradcheck(SlightlyOff.apply, x, atol=1e-3, rtol=0)


def test_eps_is_the_finite_difference_step():
    x = Tensor(np.ones(2), requires_grad=True)
    # the central difference of x^3 at 1 is 3 + eps^2: 1.3e-2 relative at eps = 0.2
    with pytest.raises(GradcheckError):
        gradcheck(Cube.apply, x, eps=0.2, atol=0, rtol=1e-3)
    assert gradcheck(Cube.apply, x, eps=1e-6, atol=0, rtol=1e-6)


def test_inputs_data_and_grads_are_left_as_they_were():
    x = leaf((2, 3))
    before = x.data.copy()
    x.grad = np.full((2, 3), 7.0)
    gradcheck(lambda t: t.exp() * t, x)
    np.testing.assert_array_equal(x.data, before)
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 7.0))
    fresh = leaf((2,))
    gradcheck(Cube.apply, fresh)
    assert fresh.grad is None


def test_checks_the_sum_of_a_non_scalar_output():
    # d/dx sum(x * w) = w, whatever shape the output has
    w = np.arange(6.0).reshape(2, 3)
    x = leaf((2, 3))
    (grad,) = numerical_gradient(lambda t: t * w, x)
    np.testing.assert_allclose(grad, w, atol=1e-8)


def test_numerical_gradient_one_array_per_checked_input():
    a, b = leaf((2,), 0), leaf((3,), 1)
    c = Tensor(np.ones(3))
    grads = numerical_gradient(lambda a, c, b: (a.sum() * b * c), a, c, b)
    assert len(grads) == 2
    np.testing.assert_allclose(grads[0], np.full(2, b.data.sum()), rtol=1e-7)
    np.testing.assert_allclose(grads[1], np.full(3, a.data.sum()), rtol=1e-7)


def test_a_wrong_gradient_of_zero_size_output_dependence_is_caught():
    class ForgetsInput(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 5

        @staticmethod
        def backward(ctx, grad):
            return None  # claims no gradient

    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(ForgetsInput.apply, leaf((2,)))


def test_non_contiguous_inputs_are_checked():
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3)).T, requires_grad=True)
    assert not x.data.flags.c_contiguous
    assert gradcheck(lambda t: t.exp() * t, x)
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(CubeWrongAtOneElement.apply, x)
