"""Sliding-window ops: 2-D convolution (through im2col and one matrix product) and pooling.

All of them look at the input x (N, C, H, W) through windows of kh x kw pixels, placed
every `stride` pixels. With the input padded by (ph, pw) zeros on each side, there are

    OH = (H + 2 ph - kh) // sh + 1,   OW = (W + 2 pw - kw) // sw + 1

windows along each axis. im2col ("image to columns") copies every window into a column
of a matrix, so a sliding-window op becomes an op on a matrix:

    cols[n, (c, i, j), (oh, ow)] = xpad[n, c, oh * sh + i, ow * sw + j]      (N, C kh kw, OH OW)

NumPy's `sliding_window_view` gives all windows as a view without copying; one reshape
then copies them into `cols`. The backward of im2col, col2im, adds each column back onto
the pixels it came from: a pixel that lies in several windows gets the sum of their
gradients. It loops over the kh * kw offsets (i, j) only, each step one strided add over
the whole batch.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .tensor import Function, _shape_str

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "im2col", "col2im"]


def output_size(x_shape, kernel, stride, padding):
    """(OH, OW): the windows along each axis of an input (N, C, H, W), as above."""
    return tuple((x_shape[a] + 2 * padding[a - 2] - kernel[a - 2]) // stride[a - 2] + 1
                 for a in (2, 3))


def _windows(x, kernel, stride, padding=(0, 0)):
    """Every window of the zero-padded x (N, C, H, W), as a view (N, C, OH, OW, kh, kw)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def column_view(x, kernel, stride=(1, 1), padding=(0, 0)):
    """The windows of x in column order, (N, C, kh, kw, OH, OW): a view (of a padded copy
    when there is padding) that im2col copies into cols."""
    return _windows(x, kernel, stride, padding).transpose(0, 1, 4, 5, 2, 3)


def im2col(x, kernel, stride=(1, 1), padding=(0, 0), out=None):
    """cols (N, C kh kw, OH OW): column (oh, ow) of sample n holds the window at (oh, ow).
    out: a C-contiguous array of that shape to write into instead of a new one."""
    in_column_order = column_view(x, kernel, stride, padding)   # a view, no copy
    n, c, kh, kw, oh, ow = in_column_order.shape
    if out is None:
        return in_column_order.reshape(n, c * kh * kw, oh * ow)   # the copy
    out.reshape(in_column_order.shape)[...] = in_column_order
    return out


def col2im(cols, x_shape, kernel, stride=(1, 1), padding=(0, 0), out=None):
    """The adjoint of im2col, batch last: cols (C kh kw, OH OW N), or a view of it as
    (C kh kw, OH OW, N), -> dx (N, C, H, W) (written into `out` when given).

    Every entry goes back onto the pixel its window took it from, and a pixel that lies in
    several windows gets the sum: for each offset (i, j),
        dxpad[c, oh sh + i, ow sw + j, n] += cols[(c, i, j), (oh, ow, n)]
    With the batch axis last, each of those adds is a long contiguous run of OW N numbers
    (with it first, N C OH short runs of OW numbers: several times slower in NumPy).
    """
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = output_size(x_shape, kernel, stride, padding)
    parts = cols.reshape(c, kh, kw, oh, ow, n)
    dx = np.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, i:i + sh * oh:sh, j:j + sw * ow:sw] += parts[:, i, j]
    dx = dx[:, ph:ph + h, pw:pw + w].transpose(3, 0, 1, 2)
    if out is None:
        return np.ascontiguousarray(dx)
    out[...] = dx
    return out


# dx is made a block of samples at a time: a block's W^T g columns (about this many bytes)
# stay in the cache while col2im adds them up, and jit's threads take whole blocks, so
# that they make the very same products as this op (the same bits)
DX_BLOCK_BYTES = 4 * 2 ** 20


def dx_blocks(n, sample_bytes):
    """Rows 0..n-1 of a batch in equal blocks of at most about DX_BLOCK_BYTES of columns
    (`sample_bytes` a sample): the blocks that Conv2d's input gradient is made in, by the op
    and by jit alike."""
    k = min(n, max(1, -(-n * sample_bytes // DX_BLOCK_BYTES)))   # ceil, 1 <= k <= n
    edges = [n * i // k for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


def block_input_grad(w2, g, kernel, stride, padding, out, dcols=None):
    """One block's dx, into `out` (n, C, H, W): col2im(W^T g) for g (n, O, OH, OW) and
    W = w2 (O, C kh kw), the product made batch last (C kh kw, OH OW n) for col2im (into
    `dcols` when given). The op calls it for each of its `dx_blocks`, jit's kernel for
    each block a thread takes: the same products, the same bits."""
    g_last = g.transpose(1, 2, 3, 0).reshape(w2.shape[0], -1)       # (O, OH OW n)
    return col2im(np.matmul(w2.T, g_last, out=dcols), out.shape, kernel, stride, padding,
                  out=out)


# columns this short (C kh kw numbers: a first layer on 1 to 3 channels) make the copy of g
# that `weight_products` otherwise multiplies with cost more than the product itself
SHORT_COLUMNS = 32


def _products_layout(n, o, ckk):
    """(shape of the array that `weight_products` writes, axes that view it as (N, O, C kh kw))"""
    return ((n, o, ckk), (0, 1, 2)) if ckk <= SHORT_COLUMNS else ((n, ckk, o), (0, 2, 1))


def weight_products(cols, g, out=None):
    """The per-sample products g[n] @ cols[n]^T (N, O, C kh kw), whose sum over n is dW,
    from cols (N, C kh kw, OH OW) and g (N, O, OH OW).

    BLAS reads cols[n] transposed for short columns (C kh kw <= SHORT_COLUMNS); for longer
    ones it is faster at the same products the other way round, (cols[n] @ g[n]^T)^T, with
    g copied to (N, OH OW, O) (measured on LeNet-5's layers, float32, a half batch: C kh kw
    25: 0.22 ms against 0.72; 150: 1.2 ms against 0.37). out: a C-contiguous array of
    N O C kh kw numbers to write them into; the result is a view of it."""
    shape, axes = _products_layout(len(g), g.shape[1], cols.shape[1])
    store = None if out is None else out.reshape(shape)
    if axes == (0, 1, 2):
        return np.matmul(g, cols.transpose(0, 2, 1), out=store)
    g_t = np.ascontiguousarray(g.transpose(0, 2, 1))             # (N, OH OW, O)
    return np.matmul(cols, g_t, out=store).transpose(axes)


def _add_windows(part, x_shape, kernel, stride, dtype, out=None):
    """Sum over the offsets (i, j) of part(i, j) (N, C, OH, OW), each added at the pixels
    (oh * sh + i, ow * sw + j) of a zero image (N, C, H, W): the pools' backward.
    out: an array of that shape to make the image in instead of a new one."""
    (kh, kw), (sh, sw) = kernel, stride
    if out is None:
        dx = np.zeros(x_shape, dtype=dtype)
    else:
        dx = out
        dx[...] = 0
    for i in range(kh):
        for j in range(kw):
            p = part(i, j)
            dx[:, :, i:i + sh * p.shape[2]:sh, j:j + sw * p.shape[3]:sw] += p
    return dx


def _check_input(op, x, kernel, padding):
    if x.ndim != 4:
        raise ValueError(f"{op}: expected input (N, C, H, W), got {_shape_str(x.shape)}")
    (kh, kw), (ph, pw) = kernel, padding
    if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
        raise ValueError(f"{op}: input {_shape_str(x.shape)} (padding {ph}, {pw}) is smaller "
                         f"than the kernel {kh}x{kw}")


def check_conv(x, w, padding):
    """A clear error unless x (N, C, H, W) fits the weight w (O, C, kh, kw) and padding."""
    if w.ndim != 4 or x.ndim != 4 or x.shape[1] != w.shape[1]:
        expected = f"(N, {w.shape[1]}, H, W)" if w.ndim == 4 else "a weight (O, C, kh, kw)"
        raise ValueError(f"conv2d: input {_shape_str(x.shape)} does not match weight "
                         f"{_shape_str(w.shape)} (expected {expected})")
    _check_input("conv2d", x, w.shape[2:], padding)


class Conv2d(Function):
    """2-D cross-correlation, PyTorch's layout: x (N, C, H, W), w (O, C, kh, kw), b (O,)
    -> y (N, O, OH, OW). params: stride, padding (pairs).

        y[n, o, oh, ow] = sum over c, i, j of w[o, c, i, j] xpad[n, c, oh sh + i, ow sw + j]
                          + b[o]

    With cols = im2col(x) (N, C kh kw, OH OW) and W = w as a matrix (O, C kh kw), this
    is one matrix product per sample, y[n] = W @ cols[n], and its backward is that of a
    matrix product:

        dW = sum over n of g[n] @ cols[n]^T,    db = sum of g over n, oh, ow
        dcols[n] = W^T @ g[n],                  dx = col2im(dcols)

    dcols is made and summed up a block of samples at a time (`dx_blocks`), batch last
    for col2im: a few MB of columns at once instead of the whole batch's.
    """

    name = "conv2d"

    @staticmethod
    def forward(ctx, x, w, *b, stride=(1, 1), padding=(0, 0)):
        check_conv(x, w, padding)
        cols = im2col(x, w.shape[2:], stride, padding)       # (N, C kh kw, OH OW)
        y = np.matmul(w.reshape(w.shape[0], -1), cols)       # (N, O, OH OW)
        if b:
            y += b[0][:, None]
        ctx.save_for_backward(cols, w)
        ctx.x_shape, ctx.stride, ctx.padding = x.shape, stride, padding
        return y.reshape(x.shape[0], w.shape[0], *output_size(x.shape, w.shape[2:], stride,
                                                              padding))

    @staticmethod
    def backward(ctx, g):
        cols, w = ctx.saved
        need = ctx.needs_input_grad
        w2 = w.reshape(w.shape[0], -1)                        # (O, C kh kw)
        gx = gw = gb = None
        if need[0]:  # dcols = W^T g, batch last for col2im (see col2im), block by block
            gx = np.empty(ctx.x_shape, g.dtype)
            for rows in dx_blocks(len(g), cols[0].nbytes):
                block_input_grad(w2, g[rows], w.shape[2:], ctx.stride, ctx.padding, gx[rows])
        g = g.reshape(g.shape[0], g.shape[1], -1)             # (N, O, OH OW)
        if need[1]:  # sum over n of g[n] @ cols[n]^T
            gw = weight_products(cols, g).sum(axis=0).reshape(w.shape)
        if len(need) == 3 and need[2]:
            gb = g.sum(axis=(0, 2))
        return (gx, gw, gb) if len(need) == 3 else (gx, gw)

    @staticmethod
    def jvp(ctx, tx, tw, *tb):
        """Linear in x and in w: dy = conv(dx, w) + conv(x, dw) + db."""
        cols, w = ctx.saved
        n, o = ctx.x_shape[0], w.shape[0]
        t = None
        if tx is not None:
            t = np.matmul(w.reshape(o, -1), im2col(tx, w.shape[2:], ctx.stride, ctx.padding))
        if tw is not None:
            t_w = np.matmul(tw.reshape(o, -1), cols)
            t = t_w if t is None else t + t_w
        if tb and tb[0] is not None:
            t = (0 if t is None else t) + tb[0][:, None]
        if t is None:
            return None
        oh, ow = output_size(ctx.x_shape, w.shape[2:], ctx.stride, ctx.padding)
        return np.broadcast_to(t, (n, o, cols.shape[2])).reshape(n, o, oh, ow)


def _window_offsets(x, kernel, stride):
    """For each offset (i, j) of a window, in row order, the view (N, C, OH, OW) of the pixels
    at that offset in every window: x[n, c, oh * sh + i, ow * sw + j]."""
    win = _windows(x, kernel, stride)
    return [win[:, :, :, :, i, j] for i in range(kernel[0]) for j in range(kernel[1])]


def max_pool_grad(x, y, g, kernel, stride, out=None):
    """dx (N, C, H, W) from g (N, C, OH, OW): each window's g at its first maximum, found
    by comparing the offsets with the window maxima y in row order (into `out`)."""
    at_offset = _window_offsets(x, kernel, stride)
    taken = np.zeros(y.shape, dtype=bool)   # windows whose maximum has been found

    def winner(i, j):
        first = at_offset[i * kernel[1] + j] == y
        first &= ~taken
        taken[...] |= first
        return g * first

    return _add_windows(winner, x.shape, kernel, stride, g.dtype, out)


class MaxPool2d(Function):
    """The maximum of each kh x kw window: x (N, C, H, W) -> (N, C, OH, OW).
    params: kernel, stride (pairs).

    The gradient of a maximum goes to the position that holds it; of tied maxima (common
    after a ReLU: a window of zeros), to the first in the window, row by row, as PyTorch:
        dx[n, c, oh sh + i, ow sw + j] += g[n, c, oh, ow]  for the first (i, j) where
                                           x[n, c, oh sh + i, ow sw + j] = y[n, c, oh, ow]
    Both directions loop over the kh kw offsets, each step one vectorised pass; backward
    finds the positions again by comparing with the saved output (cheaper than keeping
    an argmax in forward): `max_pool_grad`, which jit runs on batch parts in threads.
    """

    name = "max_pool2d"

    @staticmethod
    def forward(ctx, x, kernel, stride):
        _check_input("max_pool2d", x, kernel, (0, 0))
        at_offset = _window_offsets(x, kernel, stride)
        y = at_offset[0].copy()
        for v in at_offset[1:]:
            np.maximum(y, v, out=y)
        ctx.save_for_backward(x, y)
        ctx.kernel, ctx.stride = kernel, stride
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        return max_pool_grad(x, y, g, ctx.kernel, ctx.stride)

    @staticmethod
    def jvp(ctx, tx):
        """The tangent of each window's first maximum."""
        x, y = ctx.saved
        at_offset = _window_offsets(x, ctx.kernel, ctx.stride)
        t_offset = _window_offsets(tx, ctx.kernel, ctx.stride)
        t, taken = np.zeros(y.shape, dtype=tx.dtype), np.zeros(y.shape, dtype=bool)
        for v, tv in zip(at_offset, t_offset):
            first = (v == y) & ~taken
            taken |= first
            t[first] = tv[first]
        return t


def _window_mean(x, kernel, stride):
    """The mean of each window: the sum of the views at each offset, over kh kw."""
    at_offset = _window_offsets(x, kernel, stride)
    total = at_offset[0].copy()
    for v in at_offset[1:]:
        total += v
    total /= np.asarray(len(at_offset), dtype=x.dtype)
    return total


class AvgPool2d(Function):
    """The mean of each kh x kw window: x (N, C, H, W) -> (N, C, OH, OW).
    params: kernel, stride (pairs).

    Each pixel of a window gets an equal share of that window's gradient:
        dx[n, c, oh sh + i, ow sw + j] += g[n, c, oh, ow] / (kh kw)
    """

    name = "avg_pool2d"

    @staticmethod
    def forward(ctx, x, kernel, stride):
        _check_input("avg_pool2d", x, kernel, (0, 0))
        ctx.x_shape, ctx.kernel, ctx.stride = x.shape, kernel, stride
        return _window_mean(x, kernel, stride)

    @staticmethod
    def backward(ctx, g):
        share = g / np.asarray(ctx.kernel[0] * ctx.kernel[1], dtype=g.dtype)
        return _add_windows(lambda i, j: share, ctx.x_shape, ctx.kernel, ctx.stride, g.dtype)

    @staticmethod
    def jvp(ctx, tx):
        return _window_mean(tx, ctx.kernel, ctx.stride)
