"""An independent oracle: every op, the fused losses and an MLP-like expression, evaluated
by tinygrad_mlp and by PyTorch autograd (CPU, float64). Values and gradients (for one random
cotangent of the output) must agree to 1e-9 relative.

Each row gives the expression twice, once per library, written independently (PyTorch
spells some ops differently: permute, amax, cat, F.cross_entropy, ...).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import tinygrad_mlp as tm
from tinygrad_mlp import Tensor, ops

torch = pytest.importorskip(
    "torch", reason="torch==2.13.0 is the oracle; install with pip install -e '.[oracle]'")
F = torch.nn.functional

sys.path.insert(0, os.path.dirname(__file__))
from test_ops import ANY, AWAY0, C23, C34, LABELS, MASK, POS, PROB, make_array  # noqa: E402

RTOL = 1e-9
TC34, TC23 = torch.from_numpy(C34), torch.from_numpy(C23)
TLABELS, TMASK = torch.from_numpy(LABELS), torch.from_numpy(MASK)
Y_ONEHOT = np.eye(3)[[0, 2, 1, 2]]


def _dims(ndim, axis):
    if axis is None:
        return tuple(range(ndim))
    return (axis,) if isinstance(axis, int) else tuple(axis)


def _torch_reduce(op, x, axis, keepdims):
    dims = _dims(x.ndim, axis)
    if not dims:  # a 0-d input: nothing to reduce
        return x * 1
    if op == "max":
        return torch.amax(x, dim=dims, keepdim=keepdims)  # splits ties evenly, like ours
    return getattr(torch, op)(x, dim=dims, keepdim=keepdims)


def _reduction_rows():
    rows = []
    for op in ("sum", "mean", "max"):
        for axis in (None, 0, -1, (0, 2), (-1, -3)):
            for keepdims in (False, True):
                rows.append((
                    f"{op}-axis{axis}-keep{keepdims}".replace(" ", ""),
                    lambda a, op=op, axis=axis, k=keepdims: getattr(a, op)(axis=axis,
                                                                            keepdims=k),
                    lambda a, op=op, axis=axis, k=keepdims: _torch_reduce(op, a, axis, k),
                    (((2, 3, 4), ANY),)))
        rows.append((f"{op}-0d", lambda a, op=op: getattr(a, op)(),
                     lambda a, op=op: _torch_reduce(op, a, None, False), (((), ANY),)))
    return rows


def _mlp_tm(x, w1, b1, w2, b2):
    h = ops.Dense.apply(x, w1, b1).sigmoid()
    z = ops.Dense.apply(h, w2, b2)
    cost = ops.SigmoidBinaryCrossEntropy.apply(z, z.sigmoid(), Y_ONEHOT, reduction="sum")
    return cost + ops.L2Penalty.apply(w1, w2, lam=0.1)


def _mlp_torch(x, w1, b1, w2, b2):
    z = torch.sigmoid(x @ w1 + b1) @ w2 + b2
    cost = F.binary_cross_entropy_with_logits(z, torch.from_numpy(Y_ONEHOT), reduction="sum")
    return cost + 0.05 * ((w1 ** 2).sum() + (w2 ** 2).sum())


def _mlp_primitive_tm(x, w1, b1, w2, b2):
    """The same network from primitive ops only: @, +, sigmoid, log, *, -, sum, **."""
    a = ((x @ w1 + b1).sigmoid() @ w2 + b2).sigmoid()
    y = Y_ONEHOT
    cost = -(y * a.log() + (1 - y) * (1 - a).log()).sum()
    return cost + 0.1 / 2 * ((w1 ** 2).sum() + (w2 ** 2).sum())


def _mlp_primitive_torch(x, w1, b1, w2, b2):
    a = torch.sigmoid(torch.sigmoid(x @ w1 + b1) @ w2 + b2)
    y = torch.from_numpy(Y_ONEHOT)
    cost = -(y * torch.log(a) + (1 - y) * torch.log(1 - a)).sum()
    return cost + 0.1 / 2 * ((w1 ** 2).sum() + (w2 ** 2).sum())


def _softmax_mlp_tm(x, w1, w2):
    logits = (x @ w1).tanh() @ w2
    return ops.SoftmaxCrossEntropy.apply(logits, labels=np.array([0, 2, 1, 2]),
                                         reduction="mean")


def _softmax_mlp_torch(x, w1, w2):
    return F.cross_entropy(torch.tanh(x @ w1) @ w2, torch.tensor([0, 2, 1, 2]))


MLP_SPECS = (((4, 5), ANY), ((5, 3), ANY), ((3,), ANY), ((3, 3), ANY), ((3,), ANY))
BIN = (((3, 4), ANY), ((3, 4), ANY))

ROWS = [
    # arithmetic and broadcasting
    ("add", lambda a, b: a + b, lambda a, b: a + b, BIN),
    ("add-(3,1)+(1,4)", lambda a, b: a + b, lambda a, b: a + b, (((3, 1), ANY), ((1, 4), ANY))),
    ("add-()+(3,4)", lambda a, b: a + b, lambda a, b: a + b, (((), ANY), ((3, 4), ANY))),
    ("sub-(4,)-(3,4)", lambda a, b: a - b, lambda a, b: a - b, (((4,), ANY), ((3, 4), ANY))),
    ("mul-(2,3,4)*(3,1)", lambda a, b: a * b, lambda a, b: a * b,
     (((2, 3, 4), ANY), ((3, 1), ANY))),
    ("div-(3,1)/(1,4)", lambda a, b: a / b, lambda a, b: a / b,
     (((3, 1), ANY), ((1, 4), AWAY0))),
    ("neg", lambda a: -a, lambda a: -a, (((3, 4), ANY),)),
    ("2-t", lambda a: 2 - a, lambda a: 2 - a, (((3, 4), ANY),)),
    ("2/t", lambda a: 2 / a, lambda a: 2 / a, (((3, 4), AWAY0),)),
    ("t*1.5+0.5", lambda a: a * 1.5 + 0.5, lambda a: a * 1.5 + 0.5, (((3, 4), ANY),)),
    ("ndarray*t", lambda a: C34 * a, lambda a: TC34 * a, (((3, 4), ANY),)),
    ("ndarray-t", lambda a: C34 - a, lambda a: TC34 - a, (((4,), ANY),)),
    ("ndarray/t", lambda a: C34 / a, lambda a: TC34 / a, (((3, 4), AWAY0),)),
    ("ndarray@t", lambda a: C23 @ a, lambda a: TC23 @ a, (((3, 4), ANY),)),
    # powers
    *[(f"pow{p}", lambda a, p=p: a ** p, lambda a, p=p: a ** p, (((3, 4), dom),))
      for p, dom in ((2, ANY), (3, ANY), (0, ANY), (1, ANY), (0.5, POS), (-1, AWAY0),
                     (-2.5, POS), (1.5, POS))],
    ("rpow", lambda a: 2 ** a, lambda a: 2 ** a, (((3, 4), ANY),)),
    # matmul
    ("matmul-2d", lambda a, b: a @ b, torch.matmul, (((2, 3), ANY), ((3, 4), ANY))),
    ("matmul-1d@2d", lambda a, b: a @ b, torch.matmul, (((3,), ANY), ((3, 4), ANY))),
    ("matmul-2d@1d", lambda a, b: a @ b, torch.matmul, (((2, 3), ANY), ((3,), ANY))),
    ("matmul-1d@1d", lambda a, b: a @ b, torch.matmul, (((3,), ANY), ((3,), ANY))),
    ("matmul-batched", lambda a, b: a @ b, torch.matmul,
     (((2, 2, 3), ANY), ((2, 3, 4), ANY))),
    ("matmul-batch-broadcast", lambda a, b: a @ b, torch.matmul,
     (((1, 2, 3), ANY), ((2, 3, 2), ANY))),
    ("matmul-2d@batched", lambda a, b: a @ b, torch.matmul, (((2, 3), ANY), ((2, 3, 4), ANY))),
    ("matmul-1d@batched", lambda a, b: a @ b, torch.matmul, (((3,), ANY), ((2, 3, 4), ANY))),
    # shape ops
    ("T", lambda a: a.T, lambda a: a.T, (((3, 4), ANY),)),
    ("T-3d", lambda a: a.T, lambda a: a.permute(2, 1, 0), (((2, 3, 4), ANY),)),
    ("transpose(2,0,1)", lambda a: a.transpose(2, 0, 1), lambda a: a.permute(2, 0, 1),
     (((2, 3, 4), ANY),)),
    ("transpose(-2,-1,0)", lambda a: a.transpose(-2, -1, 0), lambda a: a.permute(1, 2, 0),
     (((2, 3, 4), ANY),)),
    ("reshape", lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1), (((2, 3, 4), ANY),)),
    # indexing
    ("getitem-slices", lambda a: a[1:, ::2], lambda a: a[1:, ::2], (((3, 4), ANY),)),
    ("getitem-reversed", lambda a: a[::-1], lambda a: a.flip(0), (((3, 4), ANY),)),
    ("getitem-int", lambda a: a[1, -1], lambda a: a[1, -1], (((3, 4), ANY),)),
    ("getitem-newaxis-ellipsis", lambda a: a[None, ..., 2], lambda a: a[None, ..., 2],
     (((2, 3, 4), ANY),)),
    ("getitem-repeated", lambda a: a[[0, 2, 0, 0]], lambda a: a[[0, 2, 0, 0]],
     (((3, 4), ANY),)),
    ("getitem-pairs", lambda a: a[np.array([0, 0, 2]), np.array([1, 1, 3])],
     lambda a: a[torch.tensor([0, 0, 2]), torch.tensor([1, 1, 3])], (((3, 4), ANY),)),
    ("getitem-2d-array", lambda a: a[np.array([[0, 1], [1, 1]])],
     lambda a: a[torch.tensor([[0, 1], [1, 1]])], (((3, 4), ANY),)),
    ("getitem-columns", lambda a: a[:, [3, 0, 3]], lambda a: a[:, [3, 0, 3]],
     (((3, 4), ANY),)),
    ("getitem-mask", lambda a: a[MASK], lambda a: a[TMASK], (((3, 4), ANY),)),
    # reductions
    *_reduction_rows(),
    # elementwise
    ("exp", lambda a: a.exp(), torch.exp, (((3, 4), ANY),)),
    ("log", lambda a: a.log(), torch.log, (((3, 4), POS),)),
    ("sqrt", lambda a: a.sqrt(), torch.sqrt, (((3, 4), POS),)),
    ("abs", lambda a: a.abs(), torch.abs, (((3, 4), AWAY0),)),
    ("sigmoid", lambda a: a.sigmoid(), torch.sigmoid, (((3, 4), ANY),)),
    ("tanh", lambda a: a.tanh(), torch.tanh, (((3, 4), ANY),)),
    ("relu", lambda a: a.relu(), torch.relu, (((3, 4), AWAY0),)),
    ("softmax", lambda a: a.softmax(), lambda a: torch.softmax(a, -1), (((3, 4), ANY),)),
    ("softmax-axis0", lambda a: a.softmax(axis=0), lambda a: torch.softmax(a, 0),
     (((3, 4), ANY),)),
    ("log_softmax", lambda a: a.log_softmax(), lambda a: torch.log_softmax(a, -1),
     (((3, 4), ANY),)),
    ("log_softmax-3d-axis1", lambda a: a.log_softmax(axis=1),
     lambda a: torch.log_softmax(a, 1), (((2, 3, 4), ANY),)),
    # joining and casting
    ("concatenate", lambda a, b: tm.concatenate([a, C23, b], axis=1),
     lambda a, b: torch.cat([a, TC23, b], dim=1), (((2, 1), ANY), ((2, 2), ANY))),
    ("concatenate-axis0", lambda a, b: tm.concatenate([b, a]),
     lambda a, b: torch.cat([b, a]), (((1, 3), ANY), ((2, 3), ANY))),
    ("stack", lambda a, b: tm.stack([a, b, a], axis=-1),
     lambda a, b: torch.stack([a, b, a], dim=-1), BIN),
    ("astype-float32-roundtrip", lambda a: (a.astype(np.float32) * 3).astype(np.float64),
     lambda a: (a.float() * 3).double(), (((3, 4), ANY),)),
    # fused ops
    ("dense", lambda x, w, b: ops.Dense.apply(x, w, b), lambda x, w, b: x @ w + b,
     (((4, 3), ANY), ((3, 2), ANY), ((2,), ANY))),
    ("dense-no-bias", lambda x, w: ops.Dense.apply(x, w), lambda x, w: x @ w,
     (((4, 3), ANY), ((3, 2), ANY))),
    *[(f"sigmoid_bce-{r}",
       lambda z, y, r=r: ops.SigmoidBinaryCrossEntropy.apply(z, z.sigmoid(), y, reduction=r),
       lambda z, y, r=r: F.binary_cross_entropy_with_logits(z, y, reduction=r),
       (((3, 4), ANY), ((3, 4), PROB))) for r in ("sum", "mean", "none")],
    *[(f"bce-{r}", lambda a, y, r=r: ops.BinaryCrossEntropy.apply(a, y, reduction=r),
       lambda a, y, r=r: F.binary_cross_entropy(a, y, reduction=r),
       (((3, 4), PROB), ((3, 4), PROB))) for r in ("sum", "mean", "none")],
    *[(f"softmax_ce-{r}",
       lambda z, r=r: ops.SoftmaxCrossEntropy.apply(z, labels=LABELS, reduction=r),
       lambda z, r=r: F.cross_entropy(z, TLABELS, reduction=r), (((3, 4), ANY),))
      for r in ("sum", "mean", "none")],
    ("l2_penalty", lambda w1, w2: ops.L2Penalty.apply(w1, w2, lam=0.3),
     lambda w1, w2: 0.15 * ((w1 ** 2).sum() + (w2 ** 2).sum()), (((3, 2), ANY), ((2,), ANY))),
    # whole expressions
    ("mlp-fused", _mlp_tm, _mlp_torch, MLP_SPECS),
    ("mlp-primitive", _mlp_primitive_tm, _mlp_primitive_torch, MLP_SPECS),
    ("softmax-mlp", _softmax_mlp_tm, _softmax_mlp_torch,
     (((4, 5), ANY), ((5, 3), ANY), ((3, 3), ANY))),
    ("x*x+x", lambda x: x * x + x, lambda x: x * x + x, (((3, 4), ANY),)),
    ("diamond", lambda x: (lambda h: h.tanh() * h.sigmoid() + h)(x.exp()),
     lambda x: (lambda h: torch.tanh(h) * torch.sigmoid(h) + h)(torch.exp(x)),
     (((3, 4), ANY),)),
]

ROW_IDS = [r[0] for r in ROWS]
assert len(set(ROW_IDS)) == len(ROW_IDS)


def _compare(ours, theirs, what):
    ours, theirs = np.asarray(ours), theirs.detach().numpy()
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    scale = max(1.0, float(np.abs(theirs).max())) if theirs.size else 1.0
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-12 * scale, err_msg=what)


@pytest.mark.parametrize("name, ours, theirs, specs", ROWS, ids=ROW_IDS)
def test_values_and_gradients_agree_with_torch(name, ours, theirs, specs):
    rng = np.random.default_rng(2024)
    arrays = [make_array(shape, dom, rng) for shape, dom in specs]
    xs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out, ref = ours(*xs), theirs(*ts)
    assert out.dtype == np.float64
    _compare(out.data, ref, f"{name}: value")
    u = rng.standard_normal(out.shape)
    out.backward(u)
    ref.backward(torch.from_numpy(u))
    for i, (x, t) in enumerate(zip(xs, ts)):
        _compare(x.grad, t.grad, f"{name}: gradient of input {i}")


TIES = [
    np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, -1.0, 0.0, 0.0]]),
    np.array([[2.0, 2.0], [2.0, 1.0]]),
]


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("which", range(len(TIES)))
def test_max_with_ties_agrees_with_torch_amax(axis, which):
    data = TIES[which]
    x = Tensor(data.copy(), requires_grad=True)
    t = torch.tensor(data, requires_grad=True)
    out = x.max(axis=axis)
    ref = torch.amax(t) if axis is None else torch.amax(t, dim=axis)
    _compare(out.data, ref, "value")
    u = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(u)
    ref.backward(torch.from_numpy(u))
    _compare(x.grad, t.grad, "gradient")


@pytest.mark.parametrize("shapes", [((3, 1), (1, 4)), ((2, 3, 4), (3, 1)), ((), (2, 2)),
                                    ((4,), (3, 1, 4)), ((2, 1, 3), (4, 1))])
def test_broadcast_chains_agree_with_torch(shapes):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s) for s in shapes]
    a, b = (Tensor(v.copy(), requires_grad=True) for v in arrays)
    ta, tb = (torch.tensor(v, requires_grad=True) for v in arrays)
    out = ((a * b - a / (b * b + 1)).tanh() + 2 - b).sigmoid().sum()
    ref = torch.sigmoid(torch.tanh(ta * tb - ta / (tb * tb + 1)) + 2 - tb).sum()
    _compare(out.data, ref, "value")
    out.backward()
    ref.backward()
    _compare(a.grad, ta.grad, "gradient of a")
    _compare(b.grad, tb.grad, "gradient of b")
