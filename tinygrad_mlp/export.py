"""Export a trained network to ONNX, the format other runtimes read (onnxruntime, browsers,
phones): `to_onnx(model, path, input_shape)`.

    from tinygrad_mlp.export import to_onnx
    to_onnx(model, "mnist.onnx", (None, 784))      # None: the batch size, any at run time

The model is an `nn.Sequential` (nested ones are flattened) of these layers, each written as
the ONNX operator of the same meaning (opset 17), its parameters stored in the file:

    Dense        MatMul(x, weight) + bias       weight (in, out), as the lecture's x @ W + b
    Conv2d       Conv(x, weight, bias)          PyTorch's layout (out, in, kh, kw), pads
    MaxPool2d    MaxPool                        floor mode, as the library's
    AvgPool2d    AveragePool
    Flatten      Flatten(axis=1)                (N, ...) -> (N, prod)
    BatchNorm1d  BatchNormalization             the running statistics (eval mode)
    LayerNorm    LayerNormalization             over the last len(normalized_shape) axes
    Dropout      Identity                       (eval mode)
    Sigmoid, ReLU, Tanh                         Sigmoid, Relu, Tanh

The file describes the model in eval mode, in the parameters' dtype (float32 or float64;
onnxruntime's CPU provider has no float64 Conv or AveragePool, so export those in float32).
Anything else raises a TypeError naming the module and its position, before a byte is
written; the file is written atomically (whole or not at all) after `onnx.checker` passes.

Needs the `onnx` package: pip install "tinygrad-mlp[onnx]" (onnxruntime, to run the file,
comes with the same extra).
"""

from __future__ import annotations

import os

import numpy as np

from . import nn
from ._files import atomic_write
from .tensor import Tensor, no_grad

__all__ = ["to_onnx", "OPSET"]

OPSET = 17  # LayerNormalization needs 17; every runtime of the last years reads it
_IR_VERSION = 8  # the IR version of opset 17, so that older runtimes read the file too


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:
        raise ImportError("to_onnx needs the onnx package: pip install "
                          "'tinygrad-mlp[onnx]'") from e
    return onnx, helper, numpy_helper


def _layers(model):
    """The leaf modules of `model` in order, with their positions ('3', '1.2' when nested)."""
    if not isinstance(model, nn.Sequential):  # one layer alone; else not a chain of layers
        is_leaf = isinstance(model, nn.Module) and next(model._children(), None) is None
        return [("0", model)] if is_leaf else None
    out = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Sequential):
            out += [(f"{i}.{pos}", m) for pos, m in _layers(layer)]
        else:
            out.append((str(i), layer))
    return out


def _pair(v):
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


class _Graph:
    """Collects the nodes and initializers while walking the layers."""

    def __init__(self, helper, numpy_helper, dtype):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.dtype = dtype
        self.nodes, self.initializers = [], []
        self.count = 0

    def const(self, name, array):
        self.initializers.append(self.numpy_helper.from_array(
            np.ascontiguousarray(array, dtype=self.dtype), name=name))
        return name

    def node(self, op, inputs, name, **attrs):
        self.count += 1
        out = f"{name}_out"
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=name, **attrs))
        return out


def _data(t):
    return t.data if isinstance(t, Tensor) else np.asarray(t)


def _emit(g, pos, layer, x):
    """Append `layer`'s ONNX node(s) that take tensor name `x`; return the output's name,
    or None when the layer is not supported."""
    name = f"{type(layer).__name__}_{pos}".replace(".", "_")
    kind = type(layer).__name__
    if isinstance(layer, nn.Dense):
        y = g.node("MatMul", [x, g.const(f"{pos}.weight", _data(layer.weight))], name)
        if layer.bias is None:
            return y
        return g.node("Add", [y, g.const(f"{pos}.bias", _data(layer.bias))], name + "_bias")
    if isinstance(layer, nn.Sigmoid):
        return g.node("Sigmoid", [x], name)
    if isinstance(layer, nn.ReLU):
        return g.node("Relu", [x], name)
    if isinstance(layer, nn.Tanh):
        return g.node("Tanh", [x], name)
    if kind == "Dropout":
        return g.node("Identity", [x], name)
    if kind == "Flatten":
        return g.node("Flatten", [x], name, axis=1)
    if kind == "Conv2d":
        w = _data(layer.weight)
        inputs = [x, g.const(f"{pos}.weight", w)]
        if getattr(layer, "bias", None) is not None:
            inputs.append(g.const(f"{pos}.bias", _data(layer.bias)))
        ph, pw = _pair(layer.padding)
        return g.node("Conv", inputs, name, kernel_shape=list(w.shape[2:]),
                      strides=list(_pair(layer.stride)), pads=[ph, pw, ph, pw])
    if kind in ("MaxPool2d", "AvgPool2d"):
        k = _pair(layer.kernel_size)
        s = _pair(layer.stride if layer.stride is not None else layer.kernel_size)
        op = "MaxPool" if kind == "MaxPool2d" else "AveragePool"
        return g.node(op, [x], name, kernel_shape=list(k), strides=list(s))
    if kind == "BatchNorm1d":
        inputs = [x] + [g.const(f"{pos}.{key}", _data(getattr(layer, key)))
                        for key in ("weight", "bias", "running_mean", "running_var")]
        return g.node("BatchNormalization", inputs, name, epsilon=float(layer.eps))
    if kind == "LayerNorm":
        shape = tuple(layer.normalized_shape)
        inputs = [x, g.const(f"{pos}.weight", _data(layer.weight)),
                  g.const(f"{pos}.bias", _data(layer.bias))]
        return g.node("LayerNormalization", inputs, name, axis=-len(shape),
                      epsilon=float(layer.eps))
    return None


SUPPORTED = ("Dense", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "BatchNorm1d",
             "LayerNorm", "Dropout", "Sigmoid", "ReLU", "Tanh")


def _check_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    ok = len(shape) >= 2 and all(
        (i == 0 and n is None) or (isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                                   and n > 0) for i, n in enumerate(shape))
    if not ok:
        raise ValueError(f"to_onnx: input_shape must be a tuple of the batch size (None for "
                         f"any) and positive sizes, e.g. (None, 784) or (None, 1, 28, 28); "
                         f"got {input_shape!r}")
    return shape


def _model_dtype(model):
    params = model.parameters()
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1:
        raise TypeError(f"to_onnx: the parameters mix dtypes {sorted(map(str, dtypes))}; "
                        f"convert them to one (float32 or float64)")
    dtype = np.dtype(dtypes.pop()) if dtypes else np.dtype(np.float32)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"to_onnx: parameters of dtype {dtype} cannot be exported; use "
                        f"float32 or float64")
    return dtype


def to_onnx(model, path, input_shape):
    """Write `model` (an nn.Sequential of supported layers) to the ONNX file `path`.

    input_shape: the input's shape, batch first: (None, 784), (None, 1, 28, 28); None makes
    the batch size dynamic (named "batch"). The graph's input is "input", its output
    "output", in the parameters' dtype. Returns `path`.
    Raises TypeError naming the first unsupported module (and its position) and ValueError
    for a shape the model cannot take; nothing is written then.
    """
    onnx, helper, numpy_helper = _onnx()
    shape = _check_input_shape(input_shape)
    layers = _layers(model)
    if layers is None:
        raise TypeError(f"to_onnx: expected an nn.Sequential of layers, got "
                        f"{type(model).__name__}")
    for pos, layer in layers:
        if type(layer).__name__ not in SUPPORTED or not isinstance(layer, nn.Module):
            raise TypeError(f"to_onnx: layer {pos} ({type(layer).__name__}) is not supported; "
                            f"supported layers: {', '.join(SUPPORTED)}")
    dtype = _model_dtype(model)

    # one forward pass in eval mode: checks the shape and gives the output's width
    with nn._in_mode(model, False), no_grad():
        out = model(Tensor(np.zeros((1 if shape[0] is None else shape[0],) + shape[1:],
                                    dtype=dtype)))
    out_shape = (shape[0],) + tuple(out.shape[1:])

    g = _Graph(helper, numpy_helper, dtype)
    x = "input"
    for pos, layer in layers:
        x = _emit(g, pos, layer, x)
    if x == "input":  # an empty Sequential: the identity
        x = g.node("Identity", [x], "Identity")
    g.nodes[-1].output[0] = "output"

    elem = onnx.TensorProto.FLOAT if dtype == np.float32 else onnx.TensorProto.DOUBLE

    def dims(s):
        return ["batch" if n is None else int(n) for n in s]

    graph = helper.make_graph(
        g.nodes, "tinygrad_mlp", [helper.make_tensor_value_info("input", elem, dims(shape))],
        [helper.make_tensor_value_info("output", elem, dims(out_shape))], g.initializers)
    proto = helper.make_model(graph, producer_name="tinygrad_mlp",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = _IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write(os.fspath(path), lambda f: f.write(data))
    return path
