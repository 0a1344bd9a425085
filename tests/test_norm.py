"""BatchNorm1d and LayerNorm: gradcheck (float64), PyTorch oracle, running statistics."""

import numpy as np
import pytest
from test_conv import _jvp_matches_finite_differences as jvp_matches_finite_differences

from tinygrad_mlp import Tensor, gradcheck, nn, ops

torch = pytest.importorskip("torch")


def t64(shape, seed, grad=True, scale=1.0, shift=0.0):
    r = np.random.RandomState(seed)
    return Tensor(r.normal(shift, scale, size=shape), requires_grad=grad)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(2, 1), (5, 3), (7, 4)])
def test_batch_norm_gradcheck(training, shape):
    x = t64(shape, 0, scale=2.0, shift=0.5)
    gamma, beta = t64(shape[1:], 1), t64(shape[1:], 2)
    rm = Tensor(np.random.RandomState(3).normal(size=shape[1:]))
    rv = Tensor(np.random.RandomState(4).uniform(0.5, 2.0, size=shape[1:]))
    w = np.random.RandomState(5).normal(size=shape)  # a weighted sum: not invariant

    def f(x, gamma, beta):
        before = rm.data.copy(), rv.data.copy()
        y = ops.BatchNorm1d.apply(x, gamma, beta, rm, rv, np.array(0), training=training,
                                  momentum=0.1, eps=1e-5)
        rm.data[:], rv.data[:] = before  # each evaluation sees the same statistics
        return y * w

    assert gradcheck(f, x, gamma, beta)


@pytest.mark.parametrize("normalized", [(4,), (3, 5), (1,)])
def test_layer_norm_gradcheck(normalized):
    x = t64((2, 3) + normalized if len(normalized) == 1 else (2,) + normalized, 0, scale=3.0)
    gamma, beta = t64(normalized, 1), t64(normalized, 2)
    w = np.random.RandomState(5).normal(size=x.shape)
    if normalized == (1,):  # xhat = 0 for a single element: only beta matters
        w = np.ones(x.shape)
    assert gradcheck(lambda x, g, b: ops.LayerNorm.apply(x, g, b, eps=1e-5) * w, x, gamma,
                     beta)


def _torch_bn(ours):
    tbn = torch.nn.BatchNorm1d(ours.num_features, eps=ours.eps, momentum=ours.momentum)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(ours.weight.data))
        tbn.bias.copy_(torch.tensor(ours.bias.data))
    return tbn


def test_batch_norm_matches_torch_in_training_and_eval_over_several_steps():
    rng = np.random.RandomState(0)
    bn = nn.BatchNorm1d(6, momentum=0.2)
    bn.weight.data[:] = rng.uniform(0.5, 1.5, 6)
    bn.bias.data[:] = rng.normal(size=6)
    tbn = _torch_bn(bn)
    for _ in range(4):
        x = rng.normal(2.0, 3.0, size=(16, 6)).astype(np.float32)
        g = rng.normal(size=(16, 6)).astype(np.float32)
        xs, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        bn.zero_grad()
        tbn.zero_grad()
        y, yt = bn(xs), tbn(xt)
        np.testing.assert_allclose(y.data, yt.detach().numpy(), atol=1e-5, rtol=1e-5)
        y.backward(g)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(xs.grad, xt.grad.numpy(), atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(bn.weight.grad, tbn.weight.grad.numpy(), atol=1e-4,
                                   rtol=1e-4)
        np.testing.assert_allclose(bn.bias.grad, tbn.bias.grad.numpy(), atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(bn.running_mean.data, tbn.running_mean.numpy(), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(bn.running_var.data, tbn.running_var.numpy(), rtol=1e-5)
    assert bn.running_mean.data.dtype == np.float32
    # eval mode: the running statistics normalize, and do not change
    bn.eval()
    tbn.eval()
    x = rng.normal(size=(5, 6)).astype(np.float32)
    xs, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    before = bn.running_mean.data.copy()
    y, yt = bn(xs), tbn(xt)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), atol=1e-5, rtol=1e-5)
    y.backward(np.ones_like(x))
    yt.backward(torch.ones(5, 6))
    np.testing.assert_allclose(xs.grad, xt.grad.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(bn.running_mean.data, before)


def test_batch_norm_forward_matches_torch_and_state_dict_holds_the_statistics():
    rng = np.random.RandomState(1)
    bn = nn.BatchNorm1d(3)
    tbn = _torch_bn(bn)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    np.testing.assert_allclose(bn(Tensor(x)).data, tbn(torch.tensor(x)).detach().numpy(),
                               atol=1e-5, rtol=1e-5)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]  # torch's names and order
    other = nn.BatchNorm1d(3)
    other.load_state_dict(bn.state_dict())
    np.testing.assert_array_equal(other.running_var.data, bn.running_var.data)
    assert other.running_var.data is not bn.running_var.data
    assert bn.running_var.data.tolist() != [1.0, 1.0, 1.0]  # the step updated it
    theirs = {k: v.numpy() for k, v in tbn.state_dict().items()}
    assert list(theirs) == list(bn.state_dict())
    for k, v in bn.state_dict().items():
        np.testing.assert_allclose(v, theirs[k], rtol=1e-5, atol=1e-7)
    assert int(bn.num_batches_tracked.data) == 1
    fresh = nn.BatchNorm1d(3)
    fresh.load_state_dict(theirs)  # a torch BatchNorm1d's state_dict loads unchanged
    np.testing.assert_allclose(fresh(Tensor(x)).data, bn(Tensor(x)).data, rtol=1e-6)


def test_layer_norm_matches_torch():
    rng = np.random.RandomState(2)
    ln = nn.LayerNorm((4, 5))
    ln.weight.data[:] = rng.normal(size=(4, 5))
    ln.bias.data[:] = rng.normal(size=(4, 5))
    tln = torch.nn.LayerNorm((4, 5))
    with torch.no_grad():
        tln.weight.copy_(torch.tensor(ln.weight.data))
        tln.bias.copy_(torch.tensor(ln.bias.data))
    x = rng.normal(1.0, 2.0, size=(3, 4, 5)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    xs, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = ln(xs), tln(xt)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), atol=1e-5, rtol=1e-5)
    y.backward(g)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(xs.grad, xt.grad.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(ln.weight.grad, tln.weight.grad.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(ln.bias.grad, tln.bias.grad.numpy(), atol=1e-5, rtol=1e-4)
    assert ln.eval()(Tensor(x)).data.tolist() == y.data.tolist()  # no mode dependence


def test_norm_shape_errors_name_the_layer_and_shapes():
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected input \(N, 3\), "
                                         r"got \(4, 5\)"):
        nn.BatchNorm1d(3)(Tensor(np.ones((4, 5))))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected input \(N, 3\), "
                                         r"got \(4, 3, 2\)"):
        nn.BatchNorm1d(3)(Tensor(np.ones((4, 3, 2))))
    with pytest.raises(ValueError, match="more than 1 value per feature"):
        nn.BatchNorm1d(3)(Tensor(np.ones((1, 3))))
    with pytest.raises(ValueError, match=r"LayerNorm\(\(4, 5\)\): expected input "
                                         r"\(\.\.\., 4, 5\), got \(2, 5, 4\)"):
        nn.LayerNorm((4, 5))(Tensor(np.ones((2, 5, 4))))
    for bad in (dict(eps=0), dict(momentum=1.5)):
        with pytest.raises(ValueError, match="BatchNorm1d: "):
            nn.BatchNorm1d(3, **bad)
    with pytest.raises(ValueError, match="LayerNorm: normalized_shape"):
        nn.LayerNorm(0)


@pytest.mark.parametrize("training", [True, False])
def test_norm_jvp(training):
    r = np.random.RandomState(0)
    x, gamma, beta = r.normal(size=(6, 4)), r.normal(size=4), r.normal(size=4)
    rm, rv = r.normal(size=4), r.uniform(0.5, 2, size=4)
    jvp_matches_finite_differences(
        lambda x, g, b: ops.BatchNorm1d.apply(x, g, b, rm.copy(), rv.copy(), np.array(0),
                                              training=training, momentum=0.1, eps=1e-5),
        [x, gamma, beta])
    jvp_matches_finite_differences(
        lambda x, g, b: ops.LayerNorm.apply(x, g, b, eps=1e-5),
        [r.normal(size=(3, 2, 4)), r.normal(size=(2, 4)), r.normal(size=(2, 4))])
