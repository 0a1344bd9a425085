"""Memory of lecture epochs in a fresh process, so that its RSS is its own.

    python benchmarks/memory.py CONTENDER [--epochs 20] [--batches N] [--data DIR] [--synthetic]

CONTENDER is one of benchmarks/lecture.py's ("fit", "jit", "eager", ...); float64, as the
lecture. Prints one JSON line: the dataset's bytes, then after every epoch the resident set
(VmRSS) and its peak so far (VmHWM), in bytes; or {"unavailable": reason}.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lecture  # noqa: E402
import numpy as np  # noqa: E402


def status_bytes(field):
    """A kB field of /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("contender", choices=sorted(lecture.CONTENDERS))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batches", type=int, default=0, help="the first N batches (0: all)")
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--synthetic", action="store_true")
    args = p.parse_args(argv)
    X, y, _ = lecture.load_mnist(args.data, args.synthetic, args.batches * lecture.BATCH or None)
    Y = np.eye(10)[y]
    try:
        run = lecture.CONTENDERS[args.contender](X, Y)
    except lecture.Unavailable as e:
        print(json.dumps({"unavailable": str(e)}))
        return
    rss, hwm = [], []
    for _ in range(args.epochs):
        run.epoch()
        rss.append(status_bytes("VmRSS"))
        hwm.append(status_bytes("VmHWM"))
    print(json.dumps({"dataset_bytes": X.nbytes + Y.nbytes + y.nbytes, "rss": rss, "hwm": hwm}))


if __name__ == "__main__":
    main()
