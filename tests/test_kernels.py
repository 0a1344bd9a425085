"""jit's fast kernels (_kernels.py) give their op's numbers, bit for bit, and change no input;
the convolution's kernels do so with the batch split over threads."""

import multiprocessing
import threading

import numpy as np
import pytest

import tinygrad_mlp
from tinygrad_mlp import Tensor, _kernels, conv_ops, jit, nn, ops, optim
from tinygrad_mlp.conv_ops import Conv2d, MaxPool2d
from tinygrad_mlp.tensor import Context

ELEMENTWISE = [ops.Sigmoid]  # _kernels.FAST's kernels of one array of any shape


@pytest.fixture
def threads():
    """set_num_threads for one test; the number before it is given back after."""
    before = tinygrad_mlp.get_num_threads()
    yield tinygrad_mlp.set_num_threads
    tinygrad_mlp.set_num_threads(before)


@pytest.mark.parametrize("function", ELEMENTWISE)
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


POOL_CASES = [  # (N, C, H, W), kernel, stride
    ((128, 6, 28, 28), (2, 2), (2, 2)),   # LeNet-5's first pool
    ((7, 3, 9, 11), (3, 2), (2, 3)),      # odd sizes, uneven parts, pixels in no window
    ((5, 2, 6, 6), (3, 3), (1, 1)),       # overlapping windows
]


@pytest.mark.parametrize("n_threads", [1, 2, 3, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_backward_split_over_threads_gives_the_ops_bits(threads, monkeypatch,
                                                                  n_threads, dtype, case):
    """Max-pooling a ReLU's output, as in a CNN (windows of tied zeros), the backward split
    however small the array (SPLIT_MIN 1): the kernel gives the op's gradient, bit for bit."""
    threads(n_threads)
    monkeypatch.setattr(_kernels, "SPLIT_MIN", 1)
    x_shape, kernel, stride = case
    rng = np.random.RandomState(5)
    x = np.maximum(rng.normal(size=x_shape), 0).astype(dtype)
    x[0, 0, :3, :3] = 0.5                                    # ties of a maximum above zero
    x_before = x.copy()
    ctx = Context(MaxPool2d, (), (True,))
    y = MaxPool2d.forward(ctx, x, kernel, stride)
    g = rng.normal(size=y.shape).astype(dtype)
    g[0, 0, 0, :2] = -0.0                                   # a signed zero goes through too
    assert _kernels.FAST[MaxPool2d][0] is MaxPool2d.forward
    dx_op, dx_fast = MaxPool2d.backward(ctx, g), _kernels.max_pool2d_backward(ctx, g)
    assert dx_fast.shape == dx_op.shape and dx_fast.dtype == dx_op.dtype
    assert dx_fast.tobytes() == dx_op.tobytes()
    if all(s_ >= k for s_, k in zip(stride, kernel)):  # windows apart: one winner in each
        assert np.count_nonzero(dx_op) == y.size - np.count_nonzero(g == 0)
    np.testing.assert_array_equal(x, x_before)


def test_max_pool_backward_runs_the_op_on_one_thread_or_a_small_array(threads, monkeypatch):
    calls = []
    monkeypatch.setattr(conv_ops, "max_pool_grad",
                        lambda *a, **k: calls.append(k.get("out") is not None))
    threads(2)
    for shape, n_threads, splits in [((2, 1, 4, 4), 2, False), ((128, 6, 28, 28), 2, True),
                                     ((128, 6, 28, 28), 1, False)]:
        threads(n_threads)
        x = np.ones(shape, np.float32)
        assert _kernels._splits(x) is splits
        ctx = Context(MaxPool2d, (), (True,))
        ctx.saved, ctx.kernel, ctx.stride = (x, x[:, :, ::2, ::2]), (2, 2), (2, 2)
        calls.clear()
        _kernels.max_pool2d_backward(ctx, np.ones(ctx.saved[1].shape, np.float32))
        assert calls == ([True] * n_threads if splits else [False])  # parts, or the op


CONV_CASES = [  # (N, C, H, W), (O, kh, kw), stride, padding, bias
    ((128, 1, 28, 28), (6, 5, 5), (1, 1), (2, 2), True),    # LeNet-5's first layer
    ((128, 6, 14, 14), (16, 5, 5), (1, 1), (0, 0), True),   # and its second
    ((7, 3, 9, 11), (4, 3, 2), (2, 1), (1, 0), False),      # odd sizes, uneven parts
    ((3, 2, 5, 5), (3, 1, 1), (1, 1), (0, 0), True),        # kernel 1, fewer rows than threads
]


@pytest.mark.parametrize("n_threads", [1, 2, 3, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("needs_x", [True, False])
def test_conv2d_kernels_split_over_threads_give_the_ops_bits(threads, n_threads, dtype, case,
                                                              needs_x):
    threads(n_threads)
    x_shape, (o, kh, kw), stride, padding, bias = case
    rng = np.random.RandomState(0)
    x = rng.normal(size=x_shape).astype(dtype)
    w = rng.normal(size=(o, x_shape[1], kh, kw)).astype(dtype)
    args = (x, w, rng.normal(size=o).astype(dtype)) if bias else (x, w)
    before = [a.copy() for a in args]
    needs = (needs_x,) + (True,) * (len(args) - 1)
    ctx_op, ctx_fast = (Context(Conv2d, (), needs) for _ in range(2))
    y_op = Conv2d.forward(ctx_op, *args, stride=stride, padding=padding)
    y_fast = _kernels.conv2d_forward(ctx_fast, *args, stride=stride, padding=padding)
    assert y_fast.shape == y_op.shape and y_fast.dtype == y_op.dtype
    np.testing.assert_array_equal(y_fast, y_op)
    g = rng.normal(size=y_op.shape).astype(dtype)
    grads_op, grads_fast = Conv2d.backward(ctx_op, g), _kernels.conv2d_backward(ctx_fast, g)
    assert len(grads_fast) == len(grads_op)
    for a, b, need in zip(grads_op, grads_fast, needs):
        assert (a is None) == (b is None) == (not need)
        if need:
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(b, a)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("block_bytes", [1, 15000])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_conv2d_input_gradient_in_many_blocks_gives_the_ops_bits_and_the_whole_batchs_values(
        threads, monkeypatch, block_bytes, n_threads):
    """dx is made a block of samples at a time (conv_ops.dx_blocks): with tiny blocks (one
    sample each, or a few) the kernel still gives the op's bits on any thread count, and
    the op the values of one block for the whole batch."""
    threads(n_threads)
    rng = np.random.RandomState(4)
    x = rng.normal(size=(7, 3, 9, 11))
    w = rng.normal(size=(4, 3, 3, 2))
    whole = Context(Conv2d, (), (True, True))
    g = rng.normal(size=Conv2d.forward(whole, x, w, stride=(2, 1), padding=(1, 0)).shape)
    gx_whole = Conv2d.backward(whole, g)[0]
    monkeypatch.setattr(conv_ops, "DX_BLOCK_BYTES", block_bytes)
    blocks = conv_ops.dx_blocks(len(x), whole.saved[0][0].nbytes)
    assert len(blocks) == (7 if block_bytes == 1 else 4)
    assert [i for b in blocks for i in range(b.start, b.stop)] == list(range(7))
    ctx_op, ctx_fast = (Context(Conv2d, (), (True, True)) for _ in range(2))
    Conv2d.forward(ctx_op, x, w, stride=(2, 1), padding=(1, 0))
    _kernels.conv2d_forward(ctx_fast, x, w, stride=(2, 1), padding=(1, 0))
    grads_op = Conv2d.backward(ctx_op, g)
    for a, b in zip(grads_op, _kernels.conv2d_backward(ctx_fast, g, [None, None])):
        np.testing.assert_array_equal(b, a)
    np.testing.assert_allclose(grads_op[0], gx_whole, rtol=1e-13, atol=1e-13)


def test_conv2d_kernels_reuse_their_slots_only_when_nothing_else_holds_them(threads):
    threads(2)
    rng = np.random.RandomState(2)
    x = rng.normal(size=(6, 2, 7, 7)).astype(np.float32)
    w = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    fwd_slots, bwd_slots = [None], [None, None]

    def step(x):
        ctx = Context(Conv2d, (), (True, True))
        y = _kernels.conv2d_forward(ctx, x, w, padding=(1, 1), buffers=fwd_slots)
        g = np.ones_like(y)
        return ctx, y, _kernels.conv2d_backward(ctx, g, bwd_slots)

    ctx1, y1, grads1 = step(x)
    assert ctx1.saved[0] is fwd_slots[0]
    dcols, products = id(bwd_slots[0]), id(bwd_slots[1])  # ids: a reference would hold them
    x2 = x[::-1].copy()
    ctx2, y2, grads2 = step(x2)  # ctx1 still holds its cols: a new one, the old one untouched
    assert fwd_slots[0] is not ctx1.saved[0] and fwd_slots[0] is ctx2.saved[0]
    ctx_op = Context(Conv2d, (), (True, True))
    np.testing.assert_array_equal(y1, Conv2d.forward(ctx_op, x, w, padding=(1, 1)))
    np.testing.assert_array_equal(ctx1.saved[0], ctx_op.saved[0])
    assert (id(bwd_slots[0]), id(bwd_slots[1])) == (dcols, products)  # reused: kernel-only
    for a, b in zip(grads1, Conv2d.backward(ctx_op, np.ones_like(y1))):
        np.testing.assert_array_equal(a, b)
    cols = id(fwd_slots[0])
    del ctx1, ctx2  # nothing holds the slot's cols now: the next step writes into it
    ctx3, y3, grads3 = step(x2)
    assert id(fwd_slots[0]) == cols and ctx3.saved[0] is fwd_slots[0]
    np.testing.assert_array_equal(y3, y2)
    for a, b in zip(grads3, grads2):
        np.testing.assert_array_equal(a, b)


def test_conv2d_kernels_fall_back_to_the_op_on_mixed_dtypes(threads):
    rng = np.random.RandomState(1)
    x = rng.normal(size=(4, 2, 6, 6))
    w = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)  # float32 weight, float64 input
    for n in (1, 2):
        threads(n)
        ctx_op, ctx_fast = (Context(Conv2d, (), (True, True)) for _ in range(2))
        y_op = Conv2d.forward(ctx_op, x, w)
        slots = [None]
        y_fast = _kernels.conv2d_forward(ctx_fast, x, w, buffers=slots)
        assert y_fast.dtype == y_op.dtype == np.float64
        np.testing.assert_array_equal(y_fast, y_op)
        assert slots == [None]  # the op ran, not the kernel


def test_a_bad_input_raises_the_ops_error_from_the_threaded_kernel(threads):
    threads(2)
    ctx = Context(Conv2d, (), (True, True))
    with pytest.raises(ValueError, match=r"conv2d: input \(4, 3, 6, 6\) does not match weight"):
        _kernels.conv2d_forward(ctx, np.zeros((4, 3, 6, 6), np.float32),
                                np.zeros((2, 1, 3, 3), np.float32))


def test_an_error_in_a_part_run_on_the_pool_reaches_the_caller_after_every_part(threads):
    threads(3)
    done = []

    def work(rows):
        if rows.start == 0:  # the first part runs on a pool thread
            raise RuntimeError(f"part {rows} failed")
        done.append(rows)

    with pytest.raises(RuntimeError, match="part slice.0, 2, None. failed"):
        _kernels._run_parts(work, _kernels._batch_parts(6))
    assert sorted(r.start for r in done) == [2, 4]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_refuses_what_is_not_a_count(threads, bad):
    with pytest.raises(ValueError, match="set_num_threads: expected an int >= 1"):
        threads(bad)


def test_batch_parts_cover_every_row_once():
    for n in (1, 2, 5, 128):
        for k in (1, 2, 3, 8):
            tinygrad_mlp.set_num_threads(k)
            parts = _kernels._batch_parts(n)
            assert len(parts) == min(n, k)
            assert [i for p in parts for i in range(p.start, p.stop)] == list(range(n))
    tinygrad_mlp.set_num_threads(1)


def lenet_like(seed=0):
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 5, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dense(6 * 2 * 2, 10, rng=rng))


def train_steps(n_threads, steps=4):
    """Adam steps of a small CNN under jit, on n_threads kernel threads: (losses, weights)."""
    tinygrad_mlp.set_num_threads(n_threads)
    model, cost = lenet_like(), nn.CrossEntropy()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    step = jit(lambda x, y: cost(model(x), y))
    rng = np.random.RandomState(3)
    losses = []
    for _ in range(steps):
        x = rng.normal(size=(9, 1, 12, 12)).astype(np.float32)
        loss = step(Tensor(x), Tensor(rng.randint(0, 10, 9)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert step.source  # replayed as compiled code, with the kernels
    return losses, [p.data.copy() for p in model.parameters()]


def test_training_a_cnn_on_kernel_threads_is_bit_identical_to_one_thread(threads,
                                                                         monkeypatch):
    monkeypatch.setattr(_kernels, "SPLIT_MIN", 1)  # max pooling's backward splits too
    one = train_steps(1)
    for n in (2, 3):
        losses, weights = train_steps(n)
        assert losses == one[0]
        for a, b in zip(weights, one[1]):
            np.testing.assert_array_equal(a, b)
    threads(1)


def test_threaded_kernels_serve_several_user_threads_at_once(threads):
    expected = train_steps(1)
    threads(2)
    results = [None] * 3

    def run(i):
        results[i] = train_steps(2)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    for losses, weights in results:
        assert losses == expected[0]
        for a, b in zip(weights, expected[1]):
            np.testing.assert_array_equal(a, b)


def _conv_of_ones(forward):
    x, w = np.ones((4, 1, 5, 5), np.float32), np.ones((2, 1, 3, 3), np.float32)
    return forward(Context(Conv2d, (), (True, True)), x, w, padding=(1, 1))


def _child_conv(queue):
    queue.put(_conv_of_ones(_kernels.conv2d_forward))


def test_a_forked_child_gets_a_pool_of_its_own(threads):
    threads(2)
    _child_conv(multiprocessing.Queue())  # the parent's pool exists before the fork
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(target=_child_conv, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the child hung or failed on its parent's dead threads"
    np.testing.assert_array_equal(queue.get(timeout=5), _conv_of_ones(Conv2d.forward))
