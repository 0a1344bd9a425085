"""jit's fast kernels (_kernels.py) give their op's numbers, bit for bit, and change no input."""

import numpy as np
import pytest

from tinygrad_mlp import _kernels
from tinygrad_mlp.tensor import Context


@pytest.mark.parametrize("function", list(_kernels.FAST))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("g_dtype", ["same", np.float64])
def test_kernels_equal_their_ops(function, dtype, g_dtype):
    fast_forward, fast_backward = _kernels.FAST[function]
    rng = np.random.RandomState(0)
    z = (rng.normal(0, 30, (7, 5)) ).astype(dtype)
    z[0, :3] = [-1e4, 1e4, 0.0]
    z_before = z.copy()
    ctx_op, ctx_fast = (Context(function, (), (True,)) for _ in range(2))
    out_op = function.forward(ctx_op, z)
    out_fast = fast_forward(ctx_fast, z)
    assert out_fast.dtype == out_op.dtype and np.array_equal(out_fast, out_op)
    g = rng.normal(size=z.shape).astype(dtype if g_dtype == "same" else g_dtype)
    g_before = g.copy()
    grad_op, grad_fast = function.backward(ctx_op, g), fast_backward(ctx_fast, g)
    assert grad_fast.dtype == grad_op.dtype and np.array_equal(grad_fast, grad_op)
    assert np.array_equal(z, z_before) and np.array_equal(g, g_before)
