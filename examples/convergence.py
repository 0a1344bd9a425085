#!/usr/bin/env python3
"""Full-batch gradient descent vs mini-batch vs online SGD, for the same wall-clock budget.

The lecture's MLP (784 -> 100 sigmoid -> 10 sigmoid, weights normal(0, 0.1), summed
logistic cost, plain SGD, no L2) is trained three times from the same initial weights on
the same subset of MNIST:

  full batch   one step per epoch on all n rows
  mini-batch   steps on batches of 100 (the lecture's choice), reshuffled every epoch
  online       one step per training example

Each method gets the same training time (--budget seconds; evaluation time excluded). The
cost, summed over the subset and divided by n (the logistic cost per example), is recorded
at 80 times spaced geometrically from budget/1000 to budget seconds of training, and plotted
against time and against epochs.

Time is measured by --clock cpu (default): the CPU seconds of this process, with NumPy's BLAS
held to one thread (OPENBLAS_NUM_THREADS=1 unless already set), so that on an idle machine
it is the wall-clock time, and on a busy one each method still gets the same computation;
--clock wall measures wall-clock seconds instead (fair only on an otherwise idle machine).

Learning rates. The cost is a sum over the batch, so its gradient grows with the batch size
B: the SGD step lr * sum_b g_b equals a step of eta = lr * B on the mean gradient. So lr is
given on the summed cost (what the library's SGD sees) and eta = lr * B is printed beside it.
Each default is the eta with the lowest cost in a coarse sweep on the default setting (the
first 5,000 MNIST images) at a fixed number of epochs, so the choice does not depend on the
machine's speed:
  online      lr 0.03     eta 0.03 of {0.01, 0.02, 0.03, 0.05, 0.1}, after 1 epoch
                          (0.1 already makes single-example steps too noisy)
  mini-batch  lr 0.005    eta 0.5 of {0.05, 0.1, 0.2, 0.3, 0.5, 1}, after 5 epochs
                          (the lecture's lr 0.0005 is eta 0.05: safe, 10x slower)
  full batch  lr 0.5 / n  eta 0.5 of {0.2, 0.3, 0.5, 0.7, 1, 1.5}, after 60 epochs
                          (1.5 diverges)
Averaging over more examples lowers the gradient's noise, so larger batches take larger eta.
Override with --lr-online, --lr-mini, --lr-full (the last as eta, divided by n here).

Data: --data auto (default) uses the first --rows MNIST training images (and --test-rows
test images for accuracy) when found without downloading, else synthetic MNIST-like data
(said so in the output); --data mnist / synthetic force one.

  TINYGRAD_MLP_DATA=DIR python examples/convergence.py \\
      --out docs/img/convergence.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field

if __name__ == "__main__":  # one BLAS thread, so CPU seconds equal wall-clock seconds when idle
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

try:
    import tinygrad_mlp  # noqa: F401
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_mlp  # noqa: F401

from tinygrad_mlp import nn, no_grad, optim  # noqa: E402
from tinygrad_mlp.train import minibatches  # noqa: E402

#: How training time is measured: CPU seconds of this process (not disturbed by other jobs
#: on the machine; with one BLAS thread this is the wall-clock time of an idle machine), or
#: wall-clock seconds.
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}

#: Default learning rates on the summed cost (see the module docstring).
LR_ONLINE = 0.03
LR_MINI = 0.005
ETA_FULL = 0.5  # full batch: lr = ETA_FULL / n


# ----------------------------------------------------------------------------- data


def synthetic_digits(n, seed=0, dtype=np.float32):
    """An MNIST-like stand-in: (n, 784) in [-1, 1], labels (n,) in 0..9 (ten fixed random
    templates, about 20% of pixels on, plus pixel noise)."""
    rng = np.random.RandomState(1234)
    templates = np.where(rng.uniform(size=(10, 784)) < 0.2, 1.0, -1.0)
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 10, n).astype(np.int64)
    X = np.clip(templates[y] + rng.normal(0.0, 0.5, (n, 784)), -1.0, 1.0)
    return X.astype(dtype), y


def load_data(source="auto", rows=5000, test_rows=2000, *, root=None, dtype=np.float32):
    """(X, y, X_test, y_test, description): the first `rows` MNIST training images and the
    first `test_rows` test images, or synthetic ones (source 'auto', 'mnist', 'synthetic')."""
    if source not in ("auto", "mnist", "synthetic"):
        raise ValueError(f"data source must be auto, mnist or synthetic, got {source!r}")
    reason = "--data synthetic"
    if source != "synthetic":
        try:
            from tinygrad_mlp import data

            kw = dict(root=root, download=(source == "mnist"), dtype=dtype)
            X, y = data.load_mnist(kind="train", **kw)
            X_test, y_test = data.load_mnist(kind="test", **kw)
            return (X[:rows], y[:rows], X_test[:test_rows], y_test[:test_rows],
                    f"MNIST: first {min(rows, len(y))} training images, first "
                    f"{min(test_rows, len(y_test))} test images")
        except (ImportError, FileNotFoundError, OSError) as e:
            if source == "mnist":
                raise
            reason = f"MNIST unavailable: {type(e).__name__}: {str(e)[:120]}"
    X, y = synthetic_digits(rows, seed=0, dtype=dtype)
    X_test, y_test = synthetic_digits(test_rows, seed=1, dtype=dtype)
    return X, y, X_test, y_test, f"SYNTHETIC MNIST-like data, {rows} rows ({reason})"


# ----------------------------------------------------------------------------- training


def lecture_mlp(seed=1, dtype=np.float32):
    """784 -> 100 -> 10, sigmoid hidden and output, weights normal(0, 0.1) from
    RandomState(seed), biases zero: the lecture's network."""
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Dense(784, 100, rng=rng, dtype=dtype), nn.Sigmoid(),
                         nn.Dense(100, 10, rng=rng, dtype=dtype), nn.Sigmoid())


@dataclass
class Run:
    """What one method did: evaluation points (training seconds, epochs, cost per example,
    training accuracy) and the totals."""

    name: str
    batch_size: int
    lr: float
    seconds: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    cost: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    steps: int = 0
    test_acc: float = float("nan")

    @property
    def eta(self):
        """The step size on the mean gradient: lr * batch size."""
        return self.lr * self.batch_size


def _one_hot(y, dtype):
    T = np.zeros((len(y), 10), dtype=dtype)
    T[np.arange(len(y)), y] = 1.0
    return T


def _evaluate(model, loss_fn, X, T, y):
    """(cost per example, accuracy) over all rows, no graph."""
    with no_grad():
        out = model(X)
        cost = float(loss_fn(out, T).data) / X.shape[0]
    return cost, float(np.mean(out.data.argmax(axis=1) == y))


def train_for(name, batch_size, lr, X, y, *, budget, max_epochs=None, seed=1, points=80,
              X_test=None, y_test=None, clock="cpu"):
    """Train the lecture's MLP with SGD (lr on the summed cost) on batches of `batch_size`
    for `budget` seconds of training (or until `max_epochs` epochs, whichever is first).

    The weights come from RandomState(seed), the same for every method; the shuffles from
    RandomState(seed + 1). Returns a Run with `points` evaluations at geometrically spaced
    times from budget / 1000 to budget (and one at the start and the end).
    clock: 'cpu' (process CPU seconds) or 'wall'.
    """
    timer = CLOCKS[clock]
    n = X.shape[0]
    if not 1 <= batch_size <= n:
        raise ValueError(f"{name}: batch size {batch_size} must be in 1..{n}")
    model = lecture_mlp(seed, X.dtype)
    loss_fn = nn.BinaryCrossEntropy(reduction="sum")
    opt = optim.SGD(model.parameters(), lr=lr)
    T = _one_hot(y, X.dtype)
    rng = np.random.RandomState(seed + 1)
    run = Run(name, batch_size, lr)
    per_epoch = n // batch_size

    def record():
        cost, acc = _evaluate(model, loss_fn, X, T, y)
        if not math.isfinite(cost):
            raise FloatingPointError(f"{name}: the cost became {cost} after {run.steps} "
                                     f"steps (lr {lr} too large?)")
        run.seconds.append(spent)
        run.epochs.append(run.steps / per_epoch)
        run.cost.append(cost)
        run.train_acc.append(acc)

    spent = 0.0
    schedule = iter(np.geomspace(budget / 1000, budget, points))  # dense early, sparse late
    next_eval = next(schedule)
    record()
    done = False
    while not done:
        for idx in minibatches(n, batch_size, rng, shuffle=batch_size < n):
            t0 = timer()
            opt.zero_grad()
            loss_fn(model(X[idx]), T[idx]).backward()
            opt.step()
            spent += timer() - t0
            run.steps += 1
            if spent >= budget:
                done = True
                break
            if spent >= next_eval:
                record()
                while next_eval <= spent:
                    next_eval = next(schedule, float("inf"))
        if max_epochs is not None and run.steps >= max_epochs * per_epoch:
            done = True
    if run.seconds[-1] != spent:
        record()
    if X_test is not None:
        run.test_acc = _evaluate(model, loss_fn, X_test, _one_hot(y_test, X.dtype), y_test)[1]
    return run


def compare(X, y, *, budget, batch=100, lr_online=LR_ONLINE, lr_mini=LR_MINI,
            eta_full=ETA_FULL, max_epochs=None, seed=1, X_test=None, y_test=None, clock="cpu"):
    """The three runs, in the order full batch, mini-batch, online."""
    n = X.shape[0]
    plan = [("full batch", n, eta_full / n), (f"mini-batch ({batch})", batch, lr_mini),
            ("online (1)", 1, lr_online)]
    return [train_for(name, b, lr, X, y, budget=budget, max_epochs=max_epochs, seed=seed,
                      X_test=X_test, y_test=y_test, clock=clock) for name, b, lr in plan]


def format_table(runs):
    head = (f"{'method':<17} {'batch':>6} {'lr (sum)':>10} {'eta':>6} {'epochs':>8} "
            f"{'steps':>8} {'seconds':>8} {'cost/example':>12} {'train acc':>9} "
            f"{'test acc':>8}")
    lines = [head, "-" * len(head)]
    for r in runs:
        lines.append(f"{r.name:<17} {r.batch_size:>6} {r.lr:>10.3g} {r.eta:>6.3g} "
                     f"{r.epochs[-1]:>8.2f} {r.steps:>8} {r.seconds[-1]:>8.1f} "
                     f"{r.cost[-1]:>12.4f} {r.train_acc[-1]:>9.2%} {r.test_acc:>8.2%}")
    return "\n".join(lines)


def plot(runs, path, title="", clock="cpu"):
    """Two panels: cost per example vs training seconds, and vs epochs (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for r in runs:
        label = f"{r.name}, lr {r.lr:.3g} (eta {r.eta:.3g})"
        left.plot(r.seconds, r.cost, marker=".", label=label)
        ep = np.asarray(r.epochs)
        keep = ep > 0
        right.plot(ep[keep], np.asarray(r.cost)[keep], marker=".", label=label)
    left.set_xlabel("training time (CPU s, one BLAS thread)" if clock == "cpu"
                    else "training time (wall-clock s)")
    left.set_ylabel("logistic cost per example (training subset)")
    left.set_yscale("log")
    right.set_xlabel("epochs (log scale)")
    right.set_xscale("log")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    left.set_title("cost vs training time")
    right.set_title("cost vs epochs")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("auto", "mnist", "synthetic"), default="auto")
    p.add_argument("--root", metavar="DIR", help="folder with the MNIST files")
    p.add_argument("--rows", type=int, default=5000, help="training rows (default 5000)")
    p.add_argument("--test-rows", type=int, default=2000)
    p.add_argument("--budget", type=float, default=15.0,
                   help="training seconds per method (default 15: about a minute in all)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="also stop each method after this many epochs")
    p.add_argument("--batch", type=int, default=100, help="mini-batch size (default 100)")
    p.add_argument("--lr-online", type=float, default=LR_ONLINE)
    p.add_argument("--lr-mini", type=float, default=LR_MINI)
    p.add_argument("--eta-full", type=float, default=ETA_FULL,
                   help="full batch step on the mean gradient; lr = eta / n")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                   help="cpu: process CPU seconds, one BLAS thread (default); wall: wall-clock")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="convergence.png", help="the plot (PNG)")
    args = p.parse_args(argv)

    X, y, X_test, y_test, described = load_data(args.data, args.rows, args.test_rows,
                                                root=args.root, dtype=np.dtype(args.dtype))
    print(f"data: {described}")
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"network: 784-100-10 sigmoid, summed logistic cost, SGD, {args.dtype}; budget "
          f"{args.budget:g} s of training per method ({args.clock} clock, BLAS threads: "
          f"{threads})")
    runs = compare(X, y, budget=args.budget, batch=args.batch, lr_online=args.lr_online,
                   lr_mini=args.lr_mini, eta_full=args.eta_full, max_epochs=args.max_epochs,
                   seed=args.seed, X_test=X_test, y_test=y_test, clock=args.clock)
    print(format_table(runs))
    plot(runs, args.out, title=f"784-100-10 sigmoid MLP, same initial weights, "
                               f"{args.budget:g} s each; {described}", clock=args.clock)
    print(f"plot: {args.out}")
    return runs


if __name__ == "__main__":
    main()
