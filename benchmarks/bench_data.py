"""MNIST for the benchmarks: real data when it can be found, else synthetic data of its shape.

Order of preference: `tinygrad_mlp.data.load_mnist` (when the package has it), then the four
IDX gz files read directly, from `--data DIR` (the folder with the files, or its parent) or
`$TINYGRAD_MLP_DATA/mnist`. Without either, synthetic images of MNIST's shapes are made
(timings are then still meaningful; accuracies are not: the time-to-accuracy target is
reported as not applicable). Images are scaled to [-1, 1] as the lecture does.
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np

FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
N_FIT = 55000  # the lecture's split: the first 55,000 training rows train


def find_folder(data=None):
    """The folder holding the MNIST IDX files (plain or .gz), or None."""
    candidates = []
    if data:
        candidates += [data, os.path.join(data, "mnist")]
    env = os.environ.get("TINYGRAD_MLP_DATA")
    if env:
        candidates += [os.path.join(env, "mnist"), env]
    for folder in candidates:
        name = FILES[("train", "images")]
        if any(os.path.isfile(os.path.join(folder, name + ext)) for ext in (".gz", "")):
            return folder
    return None


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _scale(images, dtype):
    """uint8 (n, 28, 28) -> (n, 784) in [-1, 1] as ((x / 255) - 0.5) * 2, in place."""
    X = images.reshape(len(images), -1).astype(dtype)
    X /= 255.0
    X -= 0.5
    X *= 2.0
    return X


def _load_files(folder, kind, dtype):
    arrays = []
    for part in ("images", "labels"):
        base = os.path.join(folder, FILES[(kind, part)])
        path = base + ".gz" if os.path.isfile(base + ".gz") else base
        arrays.append(_read_idx(path))
    return _scale(arrays[0], dtype), arrays[1].astype(np.int64)


def synthetic(n_train=60000, n_test=10000, seed=0, dtype=np.float64):
    """Noisy class templates of MNIST's shape: (X_train, y_train, X_test, y_test)."""
    rng = np.random.RandomState(seed)
    templates = rng.uniform(-1, 1, (10, 784))
    out = []
    for n in (n_train, n_test):
        y = rng.randint(0, 10, n).astype(np.int64)
        X = (0.5 * templates[y] + 0.5 * rng.uniform(-1, 1, (n, 784))).astype(dtype)
        out += [X, y]
    return tuple(out)


def load(data=None, dtype=np.float64, allow_synthetic=True):
    """(X_train, y_train, X_test, y_test, source): 60,000 + 10,000 rows, X in [-1, 1].

    `source` says where the rows came from ("tinygrad_mlp.data: DIR", "IDX files: DIR" or
    "synthetic"). Raises FileNotFoundError when no data is found and synthetic is not allowed.
    """
    folder = find_folder(data)
    if folder is not None:
        try:
            from tinygrad_mlp import data as tg_data
        except ImportError:
            tg_data = None
        if tg_data is not None:
            X, y = tg_data.load_mnist(root=folder, kind="train", download=False, dtype=dtype)
            Xt, yt = tg_data.load_mnist(root=folder, kind="test", download=False, dtype=dtype)
            return X, y, Xt, yt, f"tinygrad_mlp.data.load_mnist: {folder}"
        X, y = _load_files(folder, "train", dtype)
        Xt, yt = _load_files(folder, "test", dtype)
        return X, y, Xt, yt, f"IDX files: {folder}"
    if not allow_synthetic:
        raise FileNotFoundError("no MNIST files found: pass --data DIR or set TINYGRAD_MLP_DATA")
    return (*synthetic(dtype=dtype), "synthetic (no MNIST files found)")


def load_example():
    """examples/mnist.py as a module (its LECTURE and FAST recipes, `train_model`)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples", "mnist.py")
    spec = importlib.util.spec_from_file_location("mnist_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
