"""tinygrad_mlp.export.to_onnx: the file passes onnx.checker and onnxruntime computes what the
model computes in eval mode, for any batch size; bad input leaves no file."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tinygrad_mlp import Tensor, nn
from tinygrad_mlp.export import to_onnx

BATCHES = (1, 3, 64)
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-10}


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _assert_runtime_matches(model, path, input_shape, dtype, seed=0):
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = _session(path)
    rng = np.random.RandomState(seed)
    was = [m.training for m in model.modules()]
    for n in BATCHES:
        X = rng.normal(size=(n,) + tuple(input_shape[1:])).astype(dtype)
        (got,) = session.run(None, {"input": X})
        want = model.eval()(Tensor(X)).data
        assert got.dtype == want.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE[dtype])
    for m, mode in zip(model.modules(), was):
        m.train(mode)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lecture_network_and_activations(tmp_path, dtype):
    rng = np.random.RandomState(1)
    model = nn.Sequential(nn.Dense(784, 100, rng=rng, dtype=dtype), nn.Sigmoid(),
                          nn.Dense(100, 30, rng=rng, dtype=dtype), nn.Tanh(),
                          nn.Dropout(0.4, seed=0),
                          nn.Sequential(nn.Dense(30, 10, rng=rng, dtype=dtype), nn.ReLU()),
                          nn.Dense(10, 10, rng=rng, dtype=dtype, bias=False))
    for layer in (model[0], model[2]):
        layer.bias.data[:] = rng.normal(size=layer.bias.shape)  # not just zeros
    path = tmp_path / "lecture.onnx"
    assert to_onnx(model, path, (None, 784)) == path
    _assert_runtime_matches(model, path, (None, 784), dtype)
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim[1:]] == [10]
    ops = [node.op_type for node in graph.node]
    assert ops == ["MatMul", "Add", "Sigmoid", "MatMul", "Add", "Tanh", "Identity", "MatMul",
                   "Add", "Relu", "MatMul"]


def test_export_leaves_the_models_modes_as_they_were(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Dense(16, 4, seed=0), nn.Dropout(0.5, seed=1))
    model.train()
    to_onnx(model, tmp_path / "m.onnx", (None, 1, 4, 4))
    assert all(m.training for m in model.modules())
    _assert_runtime_matches(model, tmp_path / "m.onnx", (None, 1, 4, 4), np.float32)


def test_fixed_batch_size(tmp_path):
    model = nn.Sequential(nn.Dense(5, 2, seed=0))
    to_onnx(model, tmp_path / "m.onnx", (3, 5))
    dim = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 3
    (out,) = _session(tmp_path / "m.onnx").run(None, {"input": np.ones((3, 5), np.float32)})
    assert out.shape == (3, 2)


class Square(nn.Module):
    def forward(self, x):
        return x * x


def test_unsupported_module_is_named_and_no_file_is_left(tmp_path):
    model = nn.Sequential(nn.Dense(4, 3, seed=0), nn.ReLU(),
                          nn.Sequential(nn.Dense(3, 3, seed=1), Square()))
    path = tmp_path / "m.onnx"
    with pytest.raises(TypeError, match=r"layer 2\.1 \(Square\) is not supported"):
        to_onnx(model, path, (None, 4))
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"an older export")  # an existing file stays as it was
    with pytest.raises(TypeError, match="Square"):
        to_onnx(model, path, (None, 4))
    assert path.read_bytes() == b"an older export" and os.listdir(tmp_path) == ["m.onnx"]


@pytest.mark.parametrize("shape, error", [
    ((None, 100), "784"),          # the model's own shape error, naming the layer
    (784, "input_shape"),
    ((None,), "input_shape"),
    ((None, 0), "input_shape"),
    ((None, None), "input_shape"),
])
def test_bad_input_shape_raises_and_writes_nothing(tmp_path, shape, error):
    model = nn.Sequential(nn.Dense(784, 10, seed=0))
    with pytest.raises(ValueError, match=error):
        to_onnx(model, tmp_path / "m.onnx", shape)
    assert os.listdir(tmp_path) == []


def test_not_a_sequential_or_mixed_dtypes(tmp_path):
    class Block(nn.Module):  # a container that is not a Sequential: its order is unknown
        def __init__(self):
            self.a, self.b = nn.Dense(3, 3, seed=0), nn.ReLU()

    for not_a_chain in ("model.npz", Block()):
        with pytest.raises(TypeError, match="expected an nn.Sequential"):
            to_onnx(not_a_chain, tmp_path / "m.onnx", (None, 3))
    with pytest.raises(TypeError, match=r"layer 0 \(MSE\) is not supported"):
        to_onnx(nn.MSE(), tmp_path / "m.onnx", (None, 3))
    mixed = nn.Sequential(nn.Dense(3, 3, seed=0), nn.Dense(3, 3, seed=0, dtype=np.float64))
    with pytest.raises(TypeError, match="mix dtypes"):
        to_onnx(mixed, tmp_path / "m.onnx", (None, 3))
    assert os.listdir(tmp_path) == []


def test_a_single_layer_is_exported_too(tmp_path):
    layer = nn.Dense(3, 2, seed=0)
    to_onnx(layer, tmp_path / "m.onnx", (None, 3))
    _assert_runtime_matches(layer, tmp_path / "m.onnx", (None, 3), np.float32)


def test_an_estimators_network_exports_its_probabilities(tmp_path):
    from sklearn.datasets import load_iris

    from tinygrad_mlp.estimators import MLPClassifier

    X, y = load_iris(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0, dtype="float32",
                        learning_rate_init=0.01)
    with pytest.warns(Warning):
        clf.fit(X, y)  # 20 epochs: a ConvergenceWarning
    to_onnx(clf.model_, tmp_path / "iris.onnx", (None, 4))
    (logits,) = _session(tmp_path / "iris.onnx").run(None, {"input": X.astype(np.float32)})
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), clf.predict_proba(X),
                               atol=1e-6)


def _convnet(dtype):
    """Every supported layer: convolutions (padding, stride), both pools, LayerNorm over an
    image's (C, H, W) and over features, BatchNorm1d with trained running statistics."""
    rng = np.random.RandomState(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2, rng=rng, dtype=dtype), nn.ReLU(),
        nn.MaxPool2d(2),                                          # 28 -> 14
        nn.LayerNorm((6, 14, 14), dtype=dtype),
        nn.Conv2d(6, 8, (3, 5), stride=(2, 1), padding=(1, 2), rng=rng, dtype=dtype),
        nn.Tanh(),                                                # -> (8, 7, 14)
        nn.MaxPool2d(3, stride=2),                                # -> (8, 3, 6)
        nn.Conv2d(8, 8, 1, bias=False, rng=rng, dtype=dtype),
        nn.AvgPool2d((1, 2)),                                     # -> (8, 3, 3)
        nn.Flatten(), nn.Dropout(0.25, seed=0),
        nn.Dense(72, 32, rng=rng, dtype=dtype), nn.BatchNorm1d(32, dtype=dtype), nn.Sigmoid(),
        nn.LayerNorm(32, dtype=dtype), nn.Dense(32, 10, rng=rng, dtype=dtype))
    for name, p in model.named_parameters():  # norms and biases away from ones and zeros
        if p.ndim <= 3 and not name.endswith("weight") or "LayerNorm" in repr(p):
            p.data[...] = rng.normal(size=p.shape)
    for layer in model:
        if isinstance(layer, (nn.LayerNorm, nn.BatchNorm1d)):
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.weight.shape)
            layer.bias.data[...] = rng.normal(size=layer.bias.shape)
    model.train()
    for _ in range(3):  # training steps' forward passes move the running statistics
        model(Tensor(rng.normal(size=(16, 1, 28, 28)).astype(dtype)))
    bn = model[12]
    assert not np.allclose(np.asarray(bn.running_var.data if hasattr(bn.running_var, "data")
                                      else bn.running_var), 1.0)
    return model


def test_every_supported_layer(tmp_path):
    model = _convnet(np.float32)
    path = tmp_path / "cnn.onnx"
    to_onnx(model, path, (None, 1, 28, 28))
    _assert_runtime_matches(model, path, (None, 1, 28, 28), np.float32)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ops >= {"Conv", "MaxPool", "AveragePool", "Flatten", "BatchNormalization",
                   "LayerNormalization", "Identity", "MatMul", "Sigmoid", "Relu", "Tanh"}


def test_float64_convolutions_are_valid_onnx(tmp_path):
    """onnxruntime's CPU provider has no float64 Conv or AveragePool kernel: the file is
    checked only (its float32 twin runs above)."""
    to_onnx(_convnet(np.float64), tmp_path / "cnn64.onnx", (None, 1, 28, 28))
    proto = onnx.load(str(tmp_path / "cnn64.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_and_norms_in_both_dtypes(tmp_path, dtype):
    rng = np.random.RandomState(3)
    model = nn.Sequential(nn.MaxPool2d(2), nn.LayerNorm((2, 4, 4), dtype=dtype),
                          nn.MaxPool2d(2, stride=1), nn.Flatten(),
                          nn.Dense(18, 8, rng=rng, dtype=dtype), nn.BatchNorm1d(8, dtype=dtype),
                          nn.Tanh(), nn.LayerNorm(8, dtype=dtype))
    model.train()
    model(Tensor(rng.normal(2.0, 3.0, size=(32, 2, 8, 8)).astype(dtype)))  # running stats
    to_onnx(model, tmp_path / "m.onnx", (None, 2, 8, 8))
    _assert_runtime_matches(model, tmp_path / "m.onnx", (None, 2, 8, 8), dtype)
