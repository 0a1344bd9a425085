"""The Tensor section of DESIGN.md, line by line: construction and dtypes, attributes,
conversions, backward (seeding, accumulation, retain_grad, freeing, deep graphs), grad
modes, shape errors, custom Functions and the tricky graphs.
"""

from __future__ import annotations

import gc
import os
import sys
import weakref

import numpy as np
import pytest

import tinygrad_mlp as tm
from tinygrad_mlp import Function, Tensor, enable_grad, gradcheck, no_grad, ops

sys.path.insert(0, os.path.dirname(__file__))
from test_ops import CASE_IDS, CASES, make_inputs  # noqa: E402


def leaf(values, dtype=np.float64):
    return Tensor(np.asarray(values, dtype=dtype), requires_grad=True)


# ----------------------------------------------------------------------------- construction


def test_constructor_signature_positional_and_keyword():
    t = Tensor(np.ones(2), True, np.float32, "w")
    assert t.requires_grad is True and t.dtype == np.float32 and t.name == "w"
    u = Tensor(data=[1, 2], requires_grad=False, dtype=None, name=None)
    assert u.requires_grad is False and u.name is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.int32,
                                   np.uint8, np.bool_])
def test_a_numpy_array_keeps_its_dtype(dtype):
    arr = np.ones((2, 3), dtype=dtype)
    t = Tensor(arr)
    assert t.dtype == dtype and t.shape == (2, 3)
    np.testing.assert_array_equal(t.data, arr)


@pytest.mark.parametrize("data", [3, 3.5, -1, 0, [1, 2, 3], [[1.0, 2.0]],
                                  [[1, 2], [3, 4]], [], (1.5, 2.5)])
def test_python_scalars_and_lists_become_float32(data):
    t = Tensor(data)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.asarray(data, dtype=np.float32))


@pytest.mark.parametrize("data", [3, 2.5, [1, 2], np.ones(2, np.float32), np.arange(3)])
@pytest.mark.parametrize("dtype", [np.float64, "float64", np.dtype("float16")])
def test_dtype_argument_wins(data, dtype):
    t = Tensor(data, dtype=dtype)
    assert t.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(t.data, np.asarray(data).astype(dtype))


SCALARS = [2, 2.5, np.float64(2.5), np.float32(2.5), np.int64(2), np.float16(2)]
SCALAR_OPS = [
    ("t+s", lambda t, s: t + s), ("s+t", lambda t, s: s + t),
    ("t-s", lambda t, s: t - s), ("s-t", lambda t, s: s - t),
    ("t*s", lambda t, s: t * s), ("s*t", lambda t, s: s * t),
    ("t/s", lambda t, s: t / s), ("s/t", lambda t, s: s / t),
    ("t**s", lambda t, s: t ** s),
]


@pytest.mark.parametrize("tdtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("scalar", SCALARS, ids=lambda s: f"{type(s).__name__}")
@pytest.mark.parametrize("name, op", SCALAR_OPS, ids=[n for n, _ in SCALAR_OPS])
def test_a_scalar_combined_with_a_tensor_takes_the_tensors_dtype(tdtype, scalar, name, op):
    t = Tensor(np.array([1.0, 2.0], dtype=tdtype), requires_grad=True)
    out = op(t, scalar)
    assert out.dtype == tdtype, f"{name} with {type(scalar).__name__} gave {out.dtype}"
    out.sum().backward()
    assert t.grad.dtype == tdtype


def test_float64_ndarray_with_float32_tensor_promotes_but_the_leaf_grad_stays_float32():
    t = Tensor(np.ones(3, np.float32), requires_grad=True)
    out = np.full(3, 2.0) * t
    assert out.dtype == np.float64
    out.sum().backward()
    assert t.grad.dtype == np.float32
    np.testing.assert_array_equal(t.grad, [2.0, 2.0, 2.0])


F32_CASES = [c for c in CASES if not c.ndarray_consts and "astype" not in c.name]


@pytest.mark.parametrize("case", F32_CASES, ids=[c.name for c in F32_CASES])
def test_a_float32_graph_stays_float32_through_every_op_and_its_grads(case):
    inputs = make_inputs(case, dtype=np.float32)
    out = case.fn(*inputs)
    assert out.dtype == np.float32, f"{case.name} gave {out.dtype}"
    seen = []
    node = out
    out.retain_grad()
    stack = [out]
    while stack:  # every intermediate of the graph is float32 too
        node = stack.pop()
        seen.append(node)
        assert node.dtype == np.float32 or node.dtype.kind in "iub", \
            f"{case.name}: op {node.op} made {node.dtype}"
        stack.extend(p for p in node.parents if p._ctx is not None)
    out.backward(np.ones(out.shape, np.float32))
    assert out.grad.dtype == np.float32
    for x in inputs:
        assert x.grad.dtype == np.float32, f"{case.name}: grad is {x.grad.dtype}"


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating"):
        Tensor(np.arange(3), requires_grad=True)


# ----------------------------------------------------------------------------- attributes


def test_attributes_of_a_leaf():
    arr = np.arange(6.0).reshape(2, 3)
    t = Tensor(arr, requires_grad=True, name="x")
    assert isinstance(t.data, np.ndarray)
    np.testing.assert_array_equal(t.data, arr)
    assert t.grad is None
    assert t.requires_grad is True
    assert t.shape == (2, 3) and t.dtype == np.float64 and t.ndim == 2
    assert t.name == "x"
    assert t.op is None
    assert tuple(t.parents) == ()
    assert Tensor(1.0).ndim == 0 and Tensor(1.0).shape == ()
    assert Tensor(np.ones(4)).requires_grad is False


def test_op_and_parents_of_results():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    c = a * b
    assert c.op == "mul"
    assert len(c.parents) == 2 and c.parents[0] is a and c.parents[1] is b
    d = c + 2
    assert d.op == "add" and d.parents[0] is c
    assert isinstance(d.parents[1], Tensor) and d.parents[1].item() == 2.0
    assert d.name is None
    named = {"sub": a - b, "div": a / b, "neg": -a, "pow": a ** 3, "matmul": a @ b,
             "transpose": a.T, "reshape": a.reshape(2, 1), "getitem": a[0], "sum": a.sum(),
             "mean": a.mean(), "max": a.max(), "exp": a.exp(), "log": a.log(),
             "sqrt": a.sqrt(), "abs": a.abs(), "sigmoid": a.sigmoid(), "tanh": a.tanh(),
             "relu": a.relu(), "softmax": a.softmax(), "log_softmax": a.log_softmax(),
             "concatenate": tm.concatenate([a, b]), "cast": a.astype(np.float32)}
    for name, t in named.items():
        assert t.op == name
    assert c.grad is None
    c.backward(np.ones(2))
    assert c.grad is None  # a non-leaf keeps no grad unless asked


def test_numpy_item_and_asarray():
    t = Tensor(np.array([[1.5, 2.5]]), requires_grad=True)
    assert isinstance(t.numpy(), np.ndarray)
    np.testing.assert_array_equal(t.numpy(), [[1.5, 2.5]])
    np.testing.assert_array_equal(np.asarray(t), [[1.5, 2.5]])
    assert np.asarray(t).dtype == np.float64
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    assert np.array(t).shape == (1, 2)
    s = t.sum()
    assert s.item() == 4.0 and isinstance(s.item(), float)
    assert Tensor(np.array([[7.0]])).item() == 7.0
    with pytest.raises(ValueError, match="item"):
        t.item()


def test_detach_cuts_the_graph_and_shares_the_data():
    x = leaf([1.0, 2.0])
    y = x * 3
    d = y.detach()
    assert d.requires_grad is False and d.op is None and tuple(d.parents) == ()
    assert np.shares_memory(d.data, y.data)
    np.testing.assert_array_equal(d.data, [3.0, 6.0])
    z = d * x
    z.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 6.0])  # nothing flowed through d into x


def test_repr_is_useful():
    x = Tensor(np.array([1.25, -2.0]), requires_grad=True, name="w")
    r = repr(x)
    assert r.startswith("Tensor(")
    for part in ("1.25", "-2.", "shape=(2,)", "float64", "'w'", "requires_grad=True"):
        assert part in r, f"{part!r} missing from {r}"
    y = x * 2
    assert "op='mul'" in repr(y) and "shape=(2,)" in repr(y)
    assert "float32" in repr(Tensor(3.0))
    big = repr(Tensor(np.zeros((1000, 1000))))
    assert len(big) < 400 and "shape=(1000, 1000)" in big


# ----------------------------------------------------------------------------- backward


def test_a_scalar_output_is_seeded_with_one():
    x = leaf([1.0, 2.0, 3.0])
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0, 3.0])


def test_a_one_element_output_is_seeded_with_one():
    x = leaf([[2.0]])
    (x * x).backward()
    np.testing.assert_array_equal(x.grad, [[4.0]])


def test_a_non_scalar_output_needs_grad():
    x = leaf([1.0, 2.0])
    y = x * x
    with pytest.raises(ValueError, match=r"\(2,\)"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(3))
    y.backward(np.array([10.0, 100.0]))
    np.testing.assert_array_equal(x.grad, [20.0, 400.0])


def test_backward_accepts_a_tensor_as_grad():
    x = leaf([1.0, 2.0])
    (x * 2).backward(Tensor(np.array([1.0, 3.0])))
    np.testing.assert_array_equal(x.grad, [2.0, 6.0])


def test_backward_of_a_leaf_itself():
    x = leaf([1.0, 2.0])
    x.backward(np.array([5.0, 6.0]))
    np.testing.assert_array_equal(x.grad, [5.0, 6.0])


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * x).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])
    x.grad = None
    (x * 5).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0])


def test_only_leaves_that_require_grad_get_a_grad():
    x = leaf([1.0, 2.0])
    c = Tensor(np.array([3.0, 4.0]))
    h = x * c
    (h * 2).sum().backward()
    assert c.grad is None and h.grad is None
    np.testing.assert_array_equal(x.grad, [6.0, 8.0])


def test_retain_grad_keeps_a_non_leafs_grad():
    x = leaf([1.0, 2.0])
    h = x * 3
    assert h.retain_grad() is h
    out = (h * h).sum() + h.sum()  # h used twice: both contributions
    out.backward()
    np.testing.assert_array_equal(h.grad, 2 * h.data + 1)
    np.testing.assert_array_equal(x.grad, 3 * (2 * h.data + 1))


def test_graph_is_freed_and_a_second_backward_says_so():
    x = leaf([1.0, 2.0])
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time") as e:
        y.backward()
    assert "retain_graph=True" in str(e.value) and "freed" in str(e.value)
    np.testing.assert_allclose(x.grad, 2 * np.exp([1.0, 2.0]))  # unchanged by the failure


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])
    y.backward()
    np.testing.assert_array_equal(x.grad, [6.0, 12.0])
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


class _SaveTemporary(Function):
    """y = 2 x, saving a fresh temporary (so freeing can be observed through a weakref)."""

    @staticmethod
    def forward(ctx, x):
        tmp = np.full(x.shape, 2.0)
        ctx.save_for_backward(tmp)
        _SaveTemporary.last = weakref.ref(tmp)
        return x * tmp

    @staticmethod
    def backward(ctx, grad):
        (tmp,) = ctx.saved
        return grad * tmp


@pytest.mark.parametrize("retain", [False, True])
def test_backward_frees_the_saved_arrays_unless_retain_graph(retain):
    x = leaf([1.0, 2.0])
    y = _SaveTemporary.apply(x).sum()
    gc.collect()
    assert _SaveTemporary.last() is not None
    y.backward(retain_graph=retain)
    gc.collect()
    assert (_SaveTemporary.last() is not None) == retain
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_a_chain_of_100000_ops_backward_is_iterative():
    x = Tensor(np.array(0.5), requires_grad=True)
    y = x
    for _ in range(100_001):  # an odd number of negations: y = -x, dy/dx = -1
        y = -y
    limit = sys.getrecursionlimit()
    y.backward()
    assert sys.getrecursionlimit() == limit
    assert x.grad == -1.0 and y.item() == -0.5


def test_a_deep_chain_of_products_has_the_right_gradient():
    x = Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(2000):
        y = y * 1.001
    y.backward()
    assert x.grad == pytest.approx(1.001 ** 2000, rel=1e-12)


# ----------------------------------------------------------------------------- grad modes


def test_no_grad_as_a_context_manager_builds_no_graph():
    x = leaf([1.0, 2.0])
    assert tm.is_grad_enabled()
    with no_grad():
        assert not tm.is_grad_enabled()
        y = (x * 2).exp().sum()
    assert tm.is_grad_enabled()
    assert y.requires_grad is False and y.op is None and tuple(y.parents) == ()
    np.testing.assert_allclose(y.item(), np.exp([2.0, 4.0]).sum())
    with pytest.raises(RuntimeError, match="no_grad"):
        y.backward()


def test_no_grad_as_a_decorator_with_and_without_parentheses():
    x = leaf([1.0])

    @no_grad
    def f(t):
        return t * 2

    @no_grad()
    def g(t):
        return t * 3

    assert f.__name__ == "f"
    assert f(x).requires_grad is False and g(x).requires_grad is False
    assert (x * 2).requires_grad is True


def test_no_grad_restores_the_mode_after_an_exception_and_nests():
    with pytest.raises(KeyError):
        with no_grad():
            raise KeyError("inside no_grad")
    assert tm.is_grad_enabled()
    with no_grad():
        with no_grad():
            pass
        assert not tm.is_grad_enabled()
    assert tm.is_grad_enabled()


def test_enable_grad_inside_no_grad():
    x = leaf([1.0, 2.0])
    with no_grad():
        with enable_grad():
            y = (x * x).sum()
        z = x * x

        @enable_grad
        def h(t):
            return t * 4

        w = h(x)
    assert y.requires_grad and not z.requires_grad and w.requires_grad
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


# ----------------------------------------------------------------------------- shape errors


def test_matmul_shape_error_is_the_designs_message():
    with pytest.raises(ValueError) as e:
        Tensor(np.zeros((100, 784))) @ Tensor(np.zeros((100, 10)))
    assert str(e.value).startswith("matmul: shapes (100, 784) and (100, 10) do not align")


@pytest.mark.parametrize("name, fn, shapes", [
    ("add", lambda a, b: a + b, [(2, 3), (3, 2)]),
    ("sub", lambda a, b: a - b, [(4,), (5,)]),
    ("mul", lambda a, b: a * b, [(2, 3, 4), (2, 4)]),
    ("div", lambda a, b: a / b, [(3, 1, 2), (4, 3)]),
    ("matmul", lambda a, b: a @ b, [(3,), (4,)]),
    ("matmul", lambda a, b: a @ b, [(2, 3, 4), (3, 4, 5)]),
    ("matmul", lambda a, b: a @ b, [(5, 2), (3,)]),
    ("concatenate", lambda a, b: tm.concatenate([a, b]), [(2, 3), (2, 4)]),
    ("dense", lambda a, b: ops.Dense.apply(a, b), [(5, 3), (4, 2)]),
])
def test_a_shape_error_names_the_op_and_both_shapes(name, fn, shapes):
    a, b = (Tensor(np.ones(s), requires_grad=True) for s in shapes)
    with pytest.raises(ValueError) as e:
        fn(a, b)
    msg = str(e.value)
    assert msg.startswith(f"{name}:"), msg
    for s in shapes:
        assert str(s) in msg, f"{s} missing from {msg!r}"


# ----------------------------------------------------------------------------- custom ops


class Cube(Function):
    @staticmethod
    def forward(ctx, x):            # x: ndarray
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):        # grad: ndarray of the output's shape
        (x,) = ctx.saved
        return grad * 3 * x ** 2    # one gradient per input (a tuple for several)


def test_the_designs_cube_example():
    t = Tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
    y = Cube.apply(t)
    assert isinstance(y, Tensor) and y.op == "cube" and y.parents[0] is t
    np.testing.assert_array_equal(y.data, [1.0, -8.0, 0.125])
    y.sum().backward()
    np.testing.assert_array_equal(t.grad, [3.0, 12.0, 0.75])
    assert gradcheck(Cube.apply, Tensor(np.random.default_rng(0).standard_normal((3, 2)),
                                        requires_grad=True))


class _MulAdd(Function):
    """a * b + c with a broadcast c: several inputs, a tuple of gradients, a None."""

    name = "muladd"

    @staticmethod
    def forward(ctx, a, b, c):
        ctx.save_for_backward(a, b)
        return a * b + c

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return grad * b, grad * a, (grad if ctx.needs_input_grad[2] else None)


def test_a_custom_op_with_several_inputs_and_broadcasting():
    rng = np.random.default_rng(1)
    a = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    c = Tensor(rng.standard_normal((4,)), requires_grad=True)
    out = _MulAdd.apply(a, b, c)
    assert out.op == "muladd"
    assert gradcheck(lambda a, b, c: _MulAdd.apply(a, b, c) * a, a, b, c)
    d = _MulAdd.apply(a, b, np.ones(4))  # a constant input gets no gradient
    d.sum().backward()
    np.testing.assert_allclose(a.grad, b.data)


def test_a_custom_op_returning_the_wrong_number_of_gradients_is_named():
    class Bad(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, grad):
            return grad

    y = Bad.apply(leaf([1.0]), leaf([2.0]))
    with pytest.raises(RuntimeError, match="bad: backward returned 1 gradient"):
        y.backward()


# ----------------------------------------------------------------------------- tricky graphs


def test_a_node_used_several_times():
    x = leaf([1.0, -2.0, 3.0])
    (x * x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.data + 1)
    y = leaf([2.0])
    (y * y * y + y * y).backward()
    np.testing.assert_array_equal(y.grad, [3 * 4.0 + 2 * 2.0])


def test_a_diamond():
    x = leaf([0.5, 1.5])
    a = x.exp()
    b = a * 2
    c = a.log() * a        # = x e^x
    (b * c).sum().backward()  # 2 x e^(2x): d/dx = 2 e^(2x) (1 + 2x)
    np.testing.assert_allclose(x.grad, 2 * np.exp(2 * x.data) * (1 + 2 * x.data), rtol=1e-14)


def test_a_leaf_used_by_two_graphs():
    x = leaf([1.0, 2.0])
    y1 = (x * 2).sum()
    y2 = (x * x).sum()
    y1.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])
    y2.backward()  # its own graph was not freed by the first backward
    np.testing.assert_array_equal(x.grad, [4.0, 6.0])


def test_two_outputs_sharing_a_subgraph():
    x = leaf([1.0, 2.0])
    h = x.exp()
    y1, y2 = (h * 2).sum(), (h * 3).sum()
    y1.backward(retain_graph=True)
    y2.backward()
    np.testing.assert_allclose(x.grad, 5 * np.exp(x.data), rtol=1e-15)
    z1 = (x.exp() * 2).sum()
    z2 = z1 * 3
    z1.backward()
    with pytest.raises(RuntimeError, match="second time"):
        z2.backward()


def test_independent_leaves_accumulate_independently():
    a, b = leaf([1.0]), leaf([2.0])
    out = a * b + a
    out.backward()
    assert a.grad.item() == 3.0 and b.grad.item() == 1.0
    assert a.grad is not b.grad


@pytest.mark.parametrize("case", CASES[:12], ids=CASE_IDS[:12])
def test_backward_twice_with_retain_graph_doubles_every_grad(case):
    inputs = make_inputs(case)
    out = case.fn(*inputs)
    u = np.random.default_rng(3).standard_normal(out.shape)
    out.backward(u, retain_graph=True)
    first = [x.grad.copy() for x in inputs]
    out.backward(u)
    for x, g in zip(inputs, first):
        np.testing.assert_allclose(x.grad, 2 * g, rtol=1e-15)
