"""Memory of a lecture run, measured in a fresh process (so that its RSS is its own).

    python benchmarks/memory_run.py [--epochs 20] [--rows N] [--data DIR] [--synthetic]

Loads MNIST (float64, as the lecture), trains the lecture recipe of examples/mnist.py with
`train_model` (784-100-10 sigmoid, SGD, l2, batch 100, the per-epoch evaluation on the
training and validation rows), and prints one JSON object: the bytes of the dataset arrays,
the RSS after start-up, and after every epoch the current RSS (VmRSS) and the peak so far
(VmHWM, the same as ru_maxrss), all in bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, REPO)

import bench_data  # noqa: E402


def status_bytes(field):
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes; ru_maxrss off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--rows", type=int, help="train on the first N rows only")
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--synthetic", action="store_true", help="synthetic data of MNIST's shape")
    args = p.parse_args(argv)


    mnist = bench_data.load_example()
    start_rss = status_bytes("VmRSS")
    if args.synthetic:
        n = (args.rows or 55000) * 12 // 11 + 12
        X, y, X_test, y_test = bench_data.synthetic(n_train=n, n_test=n // 6, dtype=np.float64)
        source = "synthetic"
    else:
        X, y, X_test, y_test, source = bench_data.load(args.data, dtype=np.float64)
    dataset_bytes = sum(a.nbytes for a in (X, y, X_test, y_test))
    n_fit = X.shape[0] - X.shape[0] // 12
    X_fit, y_fit = X[:n_fit], y[:n_fit]
    X_valid, y_valid = X[n_fit:], y[n_fit:]
    if args.rows:
        X_fit, y_fit = X_fit[:args.rows], y_fit[:args.rows]
    loaded_rss, loaded_hwm = status_bytes("VmRSS"), status_bytes("VmHWM")
    epochs = []

    def on_epoch_end(epoch, history):
        epochs.append({"epoch": epoch, "rss": status_bytes("VmRSS"),
                       "hwm": status_bytes("VmHWM"), "time": history.time[-1]})

    _, history = mnist.train_model("lecture", X_fit, y_fit, X_valid, y_valid,
                                   epochs=args.epochs, on_epoch_end=on_epoch_end)
    print(json.dumps({
        "source": source, "rows": int(X_fit.shape[0]), "dtype": str(X.dtype),
        "dataset_bytes": int(dataset_bytes), "start_rss": start_rss,
        "loaded_rss": loaded_rss, "loaded_hwm": loaded_hwm, "epochs": epochs,
        "final_hwm": status_bytes("VmHWM"), "valid_acc": history.valid_acc[-1],
    }))


if __name__ == "__main__":
    main()
