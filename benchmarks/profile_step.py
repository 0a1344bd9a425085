#!/usr/bin/env python3
"""Where the time of one contender's epoch goes: cProfile, the functions by own time.

    python benchmarks/profile_step.py [jit|eager|fit|numpy|torch] [--cnn] [--batches 100]
        [--threads 1] [--dtype float32] [--top 20] [--data DIR | --synthetic]

One untimed epoch first (it records a jit step), then one epoch under the profiler.
"""

import argparse
import cProfile
import os
import pstats
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lecture  # noqa: E402
import lenet  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import tinygrad_mlp  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("contender", nargs="?", default="jit")
    p.add_argument("--cnn", action="store_true", help="the LeNet-5 epoch (float32)")
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--synthetic", action="store_true")
    args = p.parse_args(argv)
    batch = lenet.BATCH if args.cnn else lecture.BATCH
    X, y, source = lecture.load_mnist(args.data, args.synthetic, args.batches * batch)
    if args.cnn:
        run = lenet.CONTENDERS[args.contender](
            X.astype(np.float32).reshape(-1, 1, 28, 28), y)
    else:
        run = lecture.CONTENDERS[args.contender](X.astype(args.dtype),
                                                 np.eye(10, dtype=args.dtype)[y])
    if args.contender == "torch":
        run.torch.set_num_threads(args.threads)
    tinygrad_mlp.set_num_threads(args.threads)
    print(f"{args.contender}, {'LeNet-5' if args.cnn else 'lecture MLP'}, {args.batches} "
          f"batches, {args.threads} thread(s); data: {source}")
    with threadpool_limits(limits=args.threads, user_api="blas"):
        run.epoch()
        profiler = cProfile.Profile()
        profiler.runcall(run.epoch)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
