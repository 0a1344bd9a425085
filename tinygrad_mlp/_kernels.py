"""Fast kernels that jit's compiled code calls in place of some ops' forward and backward.

Each computes exactly what the op in ops.py computes, with the same ufuncs in the same
order (so the same bits), but writes into arrays it has just made (`out=`) instead of
making a temporary per ufunc. The ops' own code stays the readable formula; this module
is only for speed, and only `jit` uses it (`FAST`: Function -> (forward, backward), with
the ops' signatures). tests/test_kernels.py checks every kernel against its op, bit for bit.

The convolution's kernels (and max pooling's backward, on large inputs) split the batch
over `get_num_threads()` threads: NumPy and BLAS let go of the GIL while they copy and
multiply, so a part should be little else (what Python a step needs is done before the
threads start). Each sample's numbers are made by the op's own calls on its own rows, and
the one sum over the batch (the weight's gradient) is taken after the threads are done,
over the whole batch in the op's order: the same bits.

`INTO` holds backward kernels that write their gradients into arrays the compiled program
keeps from one call to the next (`buffers`: one slot per input, this thread's), instead of
allocating them anew at every step: a weight gradient of 784 x 100 floats is a fresh
mapping of memory, page faults and all, each time. A slot's array is reused only when its
reference count proves that nothing but the slot holds it any more (the `.grad` it became
was set to None by `zero_grad()`, or it was a temporary summed into another gradient);
otherwise (a user kept it, gradients accumulate without zero_grad) a new one is made.
`FORWARD_INTO` holds forward kernels given slots of the same kind (`buffers=`): the
convolution's cols, tens of MB in a CNN's step, are written into the same array every step
once the last step's backward has let go of it.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import conv_ops, ops

# ---- the threads of the batch-split kernels

_threads = {"n": None, "pool": None, "lock": threading.Lock()}


def _default_threads():
    """TINYGRAD_MLP_NUM_THREADS when set, else 1: no threads of our own unless asked, for
    NumPy's BLAS has threads of its own, and both on the same cores slow each other down."""
    value = os.environ.get("TINYGRAD_MLP_NUM_THREADS", "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"TINYGRAD_MLP_NUM_THREADS must be an int >= 1, got {value!r}")
    return int(value)


def get_num_threads():
    """How many threads jit's convolution and pooling kernels split a batch over (PyTorch's
    name)."""
    if _threads["n"] is None:
        _threads["n"] = _default_threads()
    return _threads["n"]


def set_num_threads(n):
    """Split jit's convolution and pooling kernels over n threads (1, the default: none of
    our own).
    NumPy's BLAS keeps its own threads: give it one (OPENBLAS_NUM_THREADS=1 before NumPy
    loads, or threadpoolctl) when this uses the cores (docs/performance.md)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: expected an int >= 1, got {n!r}")
    with _threads["lock"]:
        if _threads["pool"] is not None and int(n) != _threads["n"]:
            _threads["pool"].shutdown(wait=False)  # its running parts still finish
            _threads["pool"] = None
        _threads["n"] = int(n)


def _pool():
    """The threads' pool, made at its first use (one for the whole process)."""
    with _threads["lock"]:
        if _threads["pool"] is None:
            _threads["pool"] = ThreadPoolExecutor(get_num_threads() - 1,
                                                  thread_name_prefix="tinygrad_mlp")
        return _threads["pool"]


def _forget_pool():  # a forked child has none of its parent's threads (nor its lock's owner)
    _threads["pool"], _threads["lock"] = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _batch_parts(n, k=None):
    """Rows 0..n-1 of a batch as k slices (default: one per thread), fewer when n is small."""
    k = max(1, min(get_num_threads() if k is None else k, n))
    edges = [n * i // k for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


def _run_parts(work, parts):
    """work(part) for every part: all but the last on the pool's threads, the last here.
    Returns when every part is done; the first part's error, if any, is raised."""
    started = [_pool().submit(work, part) for part in parts[:-1]]
    try:
        work(parts[-1])
    finally:
        errors = [f.exception() for f in started]  # waits for each
    for e in errors:
        if e is not None:
            raise e


def _bound(dtype):
    return 250.0 if dtype == np.float64 else (11.0 if dtype == np.float16 else 88.0)


def sigmoid_forward(ctx, z):
    """ops.Sigmoid.forward: 1 / (1 + exp(-clip(z))), one array, four ufuncs in place."""
    if z.dtype.kind != "f":
        return ops.Sigmoid.forward(ctx, z)
    bound = _bound(z.dtype)
    t = np.clip(z, -bound, bound)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.add(t, 1.0, out=t)
    np.divide(1.0, t, out=t)
    ctx.save_for_backward(t)
    return t


def sigmoid_backward(ctx, g):
    """ops.Sigmoid.backward: g * (a * (1 - a)), in one fresh array (g is not changed)."""
    a = ctx.saved[0]
    d = np.subtract(1.0, a)
    np.multiply(a, d, out=d)
    if g.dtype != d.dtype or g.shape != d.shape:
        return g * d
    np.multiply(g, d, out=d)
    return d


def _references(buffers, i):
    return sys.getrefcount(buffers[i])


# the count `_references` gives for an array that only its slot holds (measured, not
# assumed: what getrefcount counts of its own call differs between Python versions)
_ONLY_THE_SLOT = _references([np.empty(1)], 0)


def reusable(buffers, i, shape, dtype):
    """Slot i's array if it has this shape and dtype and no one else holds it, else a new
    one (kept in the slot). C-contiguous, as `ndarray.dot(..., out=)` requires."""
    a = buffers[i]
    if a is None or a.shape != shape or a.dtype != dtype or (
            _references(buffers, i) - 1 != _ONLY_THE_SLOT):  # - 1: the local `a`
        a = buffers[i] = np.empty(shape, dtype)
    return a


def dense_backward(ctx, g, buffers):
    """ops.Dense.backward: g W^T and x^T g by the same BLAS products (`dot`), written into
    the program's buffers (`out=`); the bias gradient as the op makes it."""
    x, w = ctx.saved
    dtype = x.dtype
    if (x.ndim != 2 or g.ndim != 2 or w.dtype != dtype or g.dtype != dtype
            or dtype.kind != "f" or dtype.itemsize < 4):
        return ops.Dense.backward(ctx, g)
    need = ctx.needs_input_grad
    gx = g.dot(w.T, out=reusable(buffers, 0, x.shape, dtype)) if need[0] else None
    gw = x.T.dot(g, out=reusable(buffers, 1, w.shape, dtype)) if need[1] else None
    if len(need) == 2:
        return gx, gw
    return gx, gw, (np.add.reduce(g, axis=0) if need[2] else None)


def l2_penalty_backward(ctx, g, buffers):
    """ops.L2Penalty.backward: (g lam) W per weight, written into the program's buffers."""
    scale = float(g) * ctx.lam
    return tuple(None if not need else
                 np.multiply(w, scale, out=reusable(buffers, i, w.shape, w.dtype))
                 if w.dtype.kind == "f" else scale * w
                 for i, (w, need) in enumerate(zip(ctx.saved, ctx.needs_input_grad)))


def _kernel_fits(x, *arrays):
    """Does the convolution's kernel apply? A batch of images and one float dtype
    throughout (else the op itself runs)."""
    return x.ndim == 4 and x.dtype.kind == "f" and all(a.dtype == x.dtype for a in arrays)


def _array(buffers, i, shape, dtype):
    """Slot i's array when it can be reused (`reusable`), or a new one without slots."""
    return np.empty(shape, dtype) if buffers is None else reusable(buffers, i, shape, dtype)


def conv2d_forward(ctx, x, w, *b, stride=(1, 1), padding=(0, 0), buffers=None):
    """conv_ops.Conv2d.forward, the batch split over threads (one part on one thread): each
    part's im2col (its rows of the windows' view) and matrix products written into its own
    rows of one cols and one y.
    cols (a step's largest array, N C kh kw OH OW numbers) goes into slot 0 when free."""
    if not _kernel_fits(x, w, *b) or w.ndim != 4:
        return conv_ops.Conv2d.forward(ctx, x, w, *b, stride=stride, padding=padding)
    conv_ops.check_conv(x, w, padding)
    n, o, kernel = len(x), w.shape[0], w.shape[2:]
    oh, ow = conv_ops.output_size(x.shape, kernel, stride, padding)
    w2 = w.reshape(o, -1)                                     # (O, C kh kw)
    cols = _array(buffers, 0, (n, w2.shape[1], oh * ow), x.dtype)
    y = np.empty((n, o, oh * ow), x.dtype)
    # the windows (and the padding) made here, once: each part is then only NumPy's copy and
    # product, which let go of the GIL (a part's own Python would hold the other thread up)
    in_column_order = conv_ops.column_view(x, kernel, stride, padding)

    def part(rows):
        cols[rows].reshape(in_column_order[rows].shape)[...] = in_column_order[rows]
        np.matmul(w2, cols[rows], out=y[rows])
        if b:
            y[rows] += b[0][:, None]

    _run_parts(part, _batch_parts(n))
    ctx.save_for_backward(cols, w)
    ctx.x_shape, ctx.stride, ctx.padding = x.shape, stride, padding
    return y.reshape(n, o, oh, ow)


def conv2d_backward(ctx, g, buffers=None):
    """conv_ops.Conv2d.backward, the batch split over threads: each thread takes whole blocks
    of samples (conv_ops.dx_blocks, the op's blocks), makes each block's dcols = W^T g and
    col2im of it, and its rows' per-sample products g[n] @ cols[n]^T; the weight's gradient,
    their sum over the batch, once after. dcols and the products go into the program's
    buffer slots 0 and 1 when free."""
    cols, w = ctx.saved
    if not _kernel_fits(g, cols, w):
        return conv_ops.Conv2d.backward(ctx, g)
    need = ctx.needs_input_grad
    n, o = g.shape[:2]
    w2 = w.reshape(o, -1)                                     # (O, C kh kw)
    g3 = g.reshape(n, o, -1)                                  # (N, O, OH OW)
    gx = np.empty(ctx.x_shape, g.dtype) if need[0] else None
    ckk = w2.shape[1]                                         # C kh kw
    products = _array(buffers, 1, (n * o * ckk,), g.dtype) if need[1] else None
    blocks = conv_ops.dx_blocks(n, cols[0].nbytes)
    sample = cols[0].size                                     # C kh kw OH OW numbers
    dcols = _array(buffers, 0, (n * sample,), g.dtype) if need[0] else None
    row_parts = _batch_parts(n)            # a part: its rows' products, its share of blocks
    block_parts = _batch_parts(len(blocks), len(row_parts)) if need[0] else []

    def part(k):
        if k < len(block_parts):  # the op's blocks, each into its own stretch of dcols
            for b in blocks[block_parts[k]]:
                conv_ops.block_input_grad(
                    w2, g[b], w.shape[2:], ctx.stride, ctx.padding, gx[b],
                    dcols=dcols[b.start * sample:b.stop * sample].reshape(ckk, -1))
        if need[1]:  # the op's per-sample products, into the part's stretch of `products`
            rows = row_parts[k]
            conv_ops.weight_products(cols[rows], g3[rows],
                                     out=products[rows.start * o * ckk:rows.stop * o * ckk])

    _run_parts(part, list(range(len(row_parts))))
    if need[1]:  # the products of the whole batch, viewed as the op sees them, summed
        shape, axes = conv_ops._products_layout(n, o, ckk)
        gw = products.reshape(shape).transpose(axes).sum(axis=0).reshape(w.shape)
    else:
        gw = None
    if len(need) == 2:
        return gx, gw
    return gx, gw, (g3.sum(axis=(0, 2)) if need[2] else None)


# ---- max pooling's backward on a large batch of images: each part on its own thread

# numbers of x; under this, handing a part to a thread (about 0.1 ms) costs more than it saves.
# Measured on LeNet-5 (batch 128, 2 threads): the first pool's backward (x of 602,112
# numbers) 2.1-2.6 -> 1.6-1.8 ms; the second's (204,800) and ReLU's, and the pools'
# forward, were no faster split, so only max_pool2d_backward splits, and only above this
SPLIT_MIN = 2 ** 19


def _splits(x):
    """Is x worth splitting over the threads? (else the op runs, on this thread)"""
    return (_kernel_fits(x) and x.size >= SPLIT_MIN and len(x) > 1
            and get_num_threads() > 1)


def max_pool2d_backward(ctx, g):
    """conv_ops.MaxPool2d.backward, the batch split over threads (max_pool_grad of each part:
    the same comparisons for each window, the same bits)."""
    x, y = ctx.saved
    if not _splits(x) or g.shape != y.shape:
        return conv_ops.MaxPool2d.backward(ctx, g)
    dx = np.empty(x.shape, g.dtype)
    _run_parts(lambda rows: conv_ops.max_pool_grad(x[rows], y[rows], g[rows], ctx.kernel,
                                                   ctx.stride, out=dx[rows]),
               _batch_parts(len(x)))
    return dx


FAST = {ops.Sigmoid: (sigmoid_forward, sigmoid_backward),
        conv_ops.MaxPool2d: (conv_ops.MaxPool2d.forward, max_pool2d_backward)}
INTO = {ops.Dense: dense_backward, ops.L2Penalty: l2_penalty_backward,
        conv_ops.Conv2d: conv2d_backward}
# forward kernels given `buffers=` (FORWARD_SLOTS slots per op), as INTO's backward kernels
FORWARD_INTO = {conv_ops.Conv2d: conv2d_forward}
FORWARD_SLOTS = 1
