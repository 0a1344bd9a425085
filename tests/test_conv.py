"""Conv2d, MaxPool2d, AvgPool2d: gradcheck (float64) and PyTorch as the oracle."""

import numpy as np
import pytest

from tinygrad_mlp import Tensor, gradcheck, nn, ops
from tinygrad_mlp.conv_ops import col2im, im2col

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (N, C, H, W), out channels, kernel, stride, padding: odd sizes, non-square inputs and
# kernels, kernel 1, strides that skip pixels, padding wider than the kernel's half;
# short and long columns (C kh kw), the two ways `conv_ops.weight_products` multiplies
CONV_CASES = [
    ((2, 3, 7, 6), 4, (3, 2), (2, 1), (1, 2)),
    ((1, 1, 5, 5), 2, (1, 1), (1, 1), (0, 0)),
    ((3, 2, 9, 8), 3, (3, 3), (3, 2), (0, 1)),
    ((2, 2, 4, 7), 1, (4, 3), (1, 3), (2, 0)),
    ((1, 3, 6, 6), 2, (1, 1), (2, 2), (1, 1)),
    ((2, 5, 6, 7), 3, (3, 3), (1, 2), (1, 1)),  # columns of 45 > SHORT_COLUMNS: dW the other way
]
POOL_CASES = [((2, 3, 6, 6), (2, 2), (2, 2)), ((1, 2, 7, 5), (3, 2), (2, 1)),
              ((2, 1, 5, 8), (2, 3), (3, 3)), ((1, 2, 4, 4), (1, 1), (1, 1)),
              ((2, 2, 5, 5), (3, 3), (1, 1))]


def t64(shape, seed, grad=True):
    return Tensor(np.random.RandomState(seed).normal(size=shape), requires_grad=grad)


def weights_for(shape, seed=9):
    return np.random.RandomState(seed).normal(size=shape)  # a weighted sum: not invariant


@pytest.mark.parametrize("shape,out,kernel,stride,padding", CONV_CASES)
def test_conv2d_gradcheck(shape, out, kernel, stride, padding):
    x, w, b = t64(shape, 0), t64((out, shape[1]) + kernel, 1), t64((out,), 2)
    y = ops.Conv2d.apply(x, w, b, stride=stride, padding=padding)
    mix = weights_for(y.shape)
    assert gradcheck(lambda x, w, b: ops.Conv2d.apply(x, w, b, stride=stride,
                                                      padding=padding) * mix, x, w, b)
    assert gradcheck(lambda x, w: ops.Conv2d.apply(x, w, stride=stride, padding=padding)
                     * mix, x, w)  # without a bias


@pytest.mark.parametrize("shape,out,kernel,stride,padding", CONV_CASES)
def test_conv2d_matches_torch_values_and_gradients(shape, out, kernel, stride, padding):
    x, w, b = t64(shape, 0), t64((out, shape[1]) + kernel, 1), t64((out,), 2)
    y = ops.Conv2d.apply(x, w, b, stride=stride, padding=padding)
    xt, wt, bt = (torch.tensor(t.data, requires_grad=True) for t in (x, w, b))
    yt = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = weights_for(y.shape)
    y.backward(g)
    yt.backward(torch.tensor(g))
    for ours, theirs in ((x, xt), (w, wt), (b, bt)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_conv2d_module_loads_torch_weights_unchanged():
    tconv = torch.nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=1)
    conv = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=1)
    assert conv.weight.shape == tuple(tconv.weight.shape)
    conv.load_state_dict({k: v.detach().numpy() for k, v in tconv.state_dict().items()})
    x = np.random.RandomState(0).normal(size=(4, 3, 9, 7)).astype(np.float32)
    xs, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = conv(xs), tconv(xt)
    assert y.dtype == np.float32 and y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    g = np.random.RandomState(1).normal(size=y.shape).astype(np.float32)
    y.backward(g)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(xs.grad, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv.weight.grad, tconv.weight.grad.numpy(), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(conv.bias.grad, tconv.bias.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op,torch_op", [(ops.MaxPool2d, F.max_pool2d),
                                         (ops.AvgPool2d, F.avg_pool2d)])
@pytest.mark.parametrize("shape,kernel,stride", POOL_CASES)
def test_pools_gradcheck_and_match_torch(op, torch_op, shape, kernel, stride):
    x = t64(shape, 0)
    y = op.apply(x, kernel=kernel, stride=stride)
    mix = weights_for(y.shape)
    assert gradcheck(lambda x: op.apply(x, kernel=kernel, stride=stride) * mix, x)
    xt = torch.tensor(x.data, requires_grad=True)
    yt = torch_op(xt, kernel, stride)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    y.backward(mix)
    yt.backward(torch.tensor(mix))
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kernel,stride", [((2, 2), (2, 2)), ((3, 3), (1, 1)),
                                           ((2, 3), (1, 2))])
def test_max_pool_gives_tied_maxima_one_gradient_as_torch(kernel, stride):
    # after a ReLU many windows are all zeros: the gradient goes to one position, the first
    x = np.maximum(np.random.RandomState(0).normal(size=(2, 3, 8, 9)), 0.0).round(0)
    xs, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    g = np.random.RandomState(1).normal(size=ops.MaxPool2d.apply(xs, kernel=kernel,
                                                                  stride=stride).shape)
    ops.MaxPool2d.apply(xs, kernel=kernel, stride=stride).backward(g)
    F.max_pool2d(xt, kernel, stride).backward(torch.tensor(g))
    np.testing.assert_allclose(xs.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(xs.grad != 0, xt.grad.numpy() != 0)  # the same positions
    ones = np.ones((1, 1, 4, 4))
    xs = Tensor(ones, requires_grad=True)
    ops.MaxPool2d.apply(xs, kernel=(2, 2), stride=(2, 2)).sum().backward()
    np.testing.assert_array_equal(xs.grad[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0]] * 2)


def test_pool_modules_match_torch_in_float32():
    x = np.random.RandomState(0).normal(size=(4, 6, 28, 28)).astype(np.float32)
    for ours, theirs in ((nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
                         (nn.AvgPool2d(3, stride=2), torch.nn.AvgPool2d(3, stride=2)),
                         (nn.MaxPool2d((2, 3), stride=(1, 2)),
                          torch.nn.MaxPool2d((2, 3), stride=(1, 2)))):
        y = ours(Tensor(x))
        assert y.dtype == np.float32
        np.testing.assert_allclose(y.data, theirs(torch.tensor(x)).numpy(), rtol=1e-6)


def test_im2col_and_col2im_are_adjoint():
    # <im2col(x), c> == <x, col2im(c)>: col2im is the transpose of im2col (batch last)
    x = np.random.RandomState(0).normal(size=(2, 3, 7, 6))
    kernel, stride, padding = (3, 2), (2, 1), (1, 2)
    cols = im2col(x, kernel, stride, padding)                # (N, C kh kw, OH OW)
    c = np.random.RandomState(1).normal(size=cols.shape)
    c_last = c.transpose(1, 2, 0).reshape(cols.shape[1], -1)  # (C kh kw, OH OW N)
    lhs = np.sum(cols * c)
    rhs = np.sum(x * col2im(c_last, x.shape, kernel, stride, padding))
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_conv2d_init_std_he_xavier_and_number():
    for init, std in (("he", np.sqrt(2 / 75)), ("xavier", np.sqrt(2 / (75 + 200))),
                      (0.01, 0.01)):
        conv = nn.Conv2d(3, 8, 5, init_std=init, rng=np.random.RandomState(0))
        expect = np.random.RandomState(0).normal(0.0, std, (8, 3, 5, 5)).astype(np.float32)
        np.testing.assert_array_equal(conv.weight.data, expect)
        assert not conv.bias.data.any()
    assert nn.Conv2d(1, 2, 3, bias=False).bias is None
    assert nn.Conv2d(2, 2, 3, seed=1).weight.data.tolist() == \
        nn.Conv2d(2, 2, 3, seed=1).weight.data.tolist()
    dense = nn.Dense(50, 30, init_std="xavier", rng=np.random.RandomState(0))
    np.testing.assert_array_equal(dense.weight.data, np.random.RandomState(0).normal(
        0.0, np.sqrt(2 / 80), (50, 30)).astype(np.float32))
    for layer in (lambda: nn.Conv2d(1, 2, 3, init_std="lecun"),
                  lambda: nn.Dense(2, 2, init_std=-1.0)):
        with pytest.raises(ValueError, match="init_std must be a number"):
            layer()


def test_conv_and_pool_shape_errors_name_the_layer_and_shapes():
    cases = [
        (nn.Conv2d(1, 6, 5), np.ones((128, 784)),
         r"Conv2d\(1, 6, 5\): expected input \(N, 1, H, W\), got \(128, 784\)"),
        (nn.Conv2d(1, 6, 5), np.ones((2, 3, 28, 28)),
         r"Conv2d\(1, 6, 5\): expected input \(N, 1, H, W\), got \(2, 3, 28, 28\)"),
        (nn.Conv2d(1, 6, 5, padding=1), np.ones((2, 1, 2, 9)),
         r"Conv2d\(1, 6, 5, padding=1\): input \(2, 1, 2, 9\) \(padding 1\) is smaller "
         r"than the kernel 5x5"),
        (nn.MaxPool2d(2), np.ones((4, 6)),
         r"MaxPool2d\(2\): expected input \(N, C, H, W\), got \(4, 6\)"),
        (nn.AvgPool2d(3, stride=2), np.ones((1, 1, 2, 2)),
         r"AvgPool2d\(3, stride=2\): input \(1, 1, 2, 2\) \(padding 0\) is smaller"),
    ]
    for layer, x, message in cases:
        with pytest.raises(ValueError, match=message):
            layer(Tensor(x))
    with pytest.raises(ValueError, match="conv2d: input"):
        ops.Conv2d.apply(Tensor(np.ones((1, 2, 5, 5))), Tensor(np.ones((1, 3, 2, 2))),
                         stride=(1, 1), padding=(0, 0))
    for bad in (dict(kernel_size=0), dict(kernel_size=(2, 2, 2)), dict(stride=0),
                dict(padding=-1), dict(kernel_size=2.0)):
        args = dict(kernel_size=3) | bad
        with pytest.raises(ValueError, match="Conv2d: "):
            nn.Conv2d(1, 2, **args)
    with pytest.raises(ValueError, match="MaxPool2d: stride"):
        nn.MaxPool2d(2, stride=0)


def _jvp_matches_finite_differences(fn, primals, seed=3, eps=1e-6):
    from tinygrad_mlp import jvp

    r = np.random.RandomState(seed)
    tangents = [r.normal(size=np.shape(p)) for p in primals]
    _, t = jvp(fn, primals, tangents)
    plus = fn(*[Tensor(p + eps * v) for p, v in zip(primals, tangents)]).data
    minus = fn(*[Tensor(p - eps * v) for p, v in zip(primals, tangents)]).data
    np.testing.assert_allclose(t, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,out,kernel,stride,padding", CONV_CASES[:3])
def test_conv2d_jvp(shape, out, kernel, stride, padding):
    r = np.random.RandomState(0)
    primals = [r.normal(size=shape), r.normal(size=(out, shape[1]) + kernel),
               r.normal(size=out)]
    _jvp_matches_finite_differences(
        lambda x, w, b: ops.Conv2d.apply(x, w, b, stride=stride, padding=padding), primals)


@pytest.mark.parametrize("op", [ops.MaxPool2d, ops.AvgPool2d])
def test_pool_jvp(op):
    x = np.random.RandomState(0).normal(size=(2, 3, 7, 6))
    _jvp_matches_finite_differences(lambda x: op.apply(x, kernel=(3, 2), stride=(2, 1)), [x])
