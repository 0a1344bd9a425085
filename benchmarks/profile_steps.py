"""Where the time of one lecture training step goes: cProfile over a few hundred steps.

    python benchmarks/profile_steps.py [--steps 300] [--batch 100] [--dtype float32] [--data DIR]
                                       [--no-replay]

Runs `train.fit` (the lecture's 784-100-10 sigmoid MLP, summed logistic cost, l2 0.01,
SGD lr 0.0005) for `--steps` mini-batches twice: once unprofiled for the wall time per
step (next to the hand-written NumPy loop's), once under cProfile, and prints the functions
with the largest own time and the number of calls per step. `--no-replay` runs fit with
replay=False (a graph built every step: the engine as it was before the replay).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

import bench_data  # noqa: E402
import numpy_mlp  # noqa: E402

from tinygrad_mlp import nn, optim, train  # noqa: E402


def lecture_model(dtype, seed=1):
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Dense(784, 100, rng=rng, dtype=dtype), nn.Sigmoid(),
                         nn.Dense(100, 10, rng=rng, dtype=dtype), nn.Sigmoid())


def run_library(X, y, dtype, batch, replay=True):
    model = lecture_model(dtype)
    opt = optim.SGD(model.parameters(), lr=0.0005)
    train.fit(model, nn.BinaryCrossEntropy(reduction="sum"), opt, X, y, epochs=1,
              batch_size=batch, rng=np.random.RandomState(0), l2=0.01, progress=False,
              eval_train=False, replay=replay)


def run_numpy(X, Y, dtype, batch):
    net = numpy_mlp.NumpyMLP(dtype=dtype)
    net.epoch(X, Y, np.random.RandomState(0), batch_size=batch)


def profile(steps=300, batch=100, dtype="float32", data=None, top=15, repeats=9, out=sys.stdout,
            replay=True):
    """Print per-step times (library, NumPy; medians of `repeats`) and the cProfile table."""
    dtype = np.dtype(dtype)
    X_all, y_all, _, _, source = bench_data.load(data, dtype=dtype)
    steps = min(steps, X_all.shape[0] // batch)  # one epoch at most: the steps that run
    X, y = np.ascontiguousarray(X_all[:steps * batch]), y_all[:steps * batch]
    Y = numpy_mlp.one_hot(y, dtype=dtype)
    lib, ref = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_library(X, y, dtype, batch, replay)
        lib.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_numpy(X, Y, dtype, batch)
        ref.append(time.perf_counter() - t0)
    lib_us = 1e6 * float(np.median(lib)) / steps
    ref_us = 1e6 * float(np.median(ref)) / steps
    ratio = float(np.median(np.array(lib) / np.array(ref)))
    print(f"data: {source}", file=out)
    print(f"{steps} steps, batch {batch}, {dtype.name}, replay {'on' if replay else 'off'}: "
          f"library {lib_us:.0f} us/step, "
          f"hand-written NumPy {ref_us:.0f} us/step (ratio {ratio:.2f}; medians of "
          f"{repeats} interleaved runs)", file=out)
    prof = cProfile.Profile()
    prof.enable()
    run_library(X, y, dtype, batch, replay)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    total = stats.total_tt
    print(f"cProfile: {1e6 * total / steps:.0f} us/step under the profiler, "
          f"{sum(v[1] for v in stats.stats.values()) / steps:.0f} function calls/step", file=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = buf.getvalue().splitlines()
    start = [i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")]
    if top and start:
        print("\n".join(lines[start[0]:]).rstrip(), file=out)
    return lib_us, ref_us


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--no-replay", action="store_true",
                   help="fit(replay=False): build the graph every step")
    args = p.parse_args(argv)
    profile(args.steps, args.batch, args.dtype, args.data, args.top, replay=not args.no_replay)


if __name__ == "__main__":
    main()
