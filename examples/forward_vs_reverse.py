#!/usr/bin/env python3
"""Forward vs reverse mode, measured: the full gradient of a scalar loss, computed both ways.

The network is a small MLP, m inputs -> h sigmoid units -> t sigmoid outputs, with the
lecture's summed logistic cost C over a fixed batch; its P = m h + h + h t + t parameters
are W1 (m, h), b1 (h,), W2 (h, t), b2 (t,). The gradient dC/dtheta has P entries.

  reverse  one forward pass that records the graph, then one backward: every one of the P
           entries at once, for about the cost of two or three forward passes.
  forward  `tinygrad_mlp.jvp(fn, params, tangents)` pushes one direction v through the
           network and returns dC/dtheta . v. With v the unit vector of one parameter it
           gives that one entry, so the gradient takes P JVPs: the time grows like P.

Both are computed in float64 for several hidden sizes h, checked equal (to 1e-10,
relative), timed (reverse: best of --repeat; forward: one full sweep; NumPy's BLAS held to
one thread unless OPENBLAS_NUM_THREADS is set) and plotted on log-log axes to --out. Then
one reverse gradient and a few JVPs of the lecture's 784-100-10 network on 100 rows are
timed, to say what a forward-mode gradient of it would cost. This is the lecture's
argument for backpropagation: a scalar loss of many parameters is the case reverse mode is
made for.

  python examples/forward_vs_reverse.py --out docs/img/forward_vs_reverse.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__":  # one BLAS thread: threads fighting over a busy machine's cores
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")  # can slow a small matmul down 100x

import numpy as np  # noqa: E402

try:
    import tinygrad_mlp  # noqa: F401
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_mlp  # noqa: F401

from tinygrad_mlp import Tensor, jvp, nn  # noqa: E402

PARAM_NAMES = ("W1", "b1", "W2", "b2")


def make_problem(hidden, *, inputs=16, outputs=10, rows=32, seed=0):
    """(loss_fn, params): loss_fn(W1, b1, W2, b2) -> scalar Tensor (the summed logistic
    cost on a fixed random batch), params the float64 arrays it is evaluated at."""
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1.0, 1.0, (rows, inputs))
    labels = rng.randint(0, outputs, rows)
    params = [rng.normal(0.0, 0.5, (inputs, hidden)), np.zeros(hidden),
              rng.normal(0.0, 0.5, (hidden, outputs)), np.zeros(outputs)]
    params[1] += rng.normal(0.0, 0.1, hidden)  # nonzero biases: every entry is exercised
    params[3] += rng.normal(0.0, 0.1, outputs)
    cost = nn.BinaryCrossEntropy(reduction="sum")

    def loss_fn(W1, b1, W2, b2):
        h = (X @ W1 + b1).sigmoid()
        return cost((h @ W2 + b2).sigmoid(), labels)

    return loss_fn, params


def reverse_gradient(loss_fn, params):
    """The gradient as one flat array: one forward, one backward."""
    leaves = [Tensor(p, requires_grad=True) for p in params]
    loss_fn(*leaves).backward()
    return np.concatenate([t.grad.ravel() for t in leaves])


def forward_gradient(loss_fn, params):
    """The gradient as one flat array: one JVP per parameter entry (P calls)."""
    out = []
    for i, p in enumerate(params):
        for k in range(p.size):
            direction = np.zeros(p.size)
            direction[k] = 1.0
            tangents = [None] * len(params)
            tangents[i] = direction.reshape(p.shape)
            _, dC = jvp(loss_fn, params, tangents)
            out.append(float(dC))
    return np.asarray(out)


def _best_time(fn, repeat):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def measure(hiddens=(2, 4, 8, 16, 32, 64, 128), *, repeat=5, inputs=16, outputs=10, rows=32,
            seed=0):
    """One dict per hidden size: hidden, P, reverse and forward seconds, max |difference|."""
    rows_out = []
    for h in hiddens:
        loss_fn, params = make_problem(h, inputs=inputs, outputs=outputs, rows=rows, seed=seed)
        t_rev, g_rev = _best_time(lambda: reverse_gradient(loss_fn, params), repeat)  # noqa: B023
        t_fwd, g_fwd = _best_time(lambda: forward_gradient(loss_fn, params), 1)  # noqa: B023
        P = sum(p.size for p in params)
        if g_rev.shape != (P,) or g_fwd.shape != (P,):
            raise AssertionError(f"hidden {h}: gradients of {g_rev.shape} and {g_fwd.shape} "
                                 f"entries, expected {P}")
        diff = float(np.max(np.abs(g_rev - g_fwd)))
        scale = float(np.max(np.abs(g_rev)))
        rows_out.append(dict(hidden=h, params=P, reverse=t_rev, forward=t_fwd, max_diff=diff,
                             rel_diff=diff / scale if scale else diff,
                             agree=bool(np.allclose(g_fwd, g_rev, rtol=1e-10,
                                                    atol=1e-10 * scale))))
    return rows_out


def lecture_estimate(repeat=10, rows=100, seed=0):
    """The lecture's 784-100-10 network on `rows` random rows: (P, seconds of one reverse
    gradient, seconds of one JVP), each the best of `repeat`. A forward-mode gradient
    would take P JVPs; only a few are run here."""
    loss_fn, params = make_problem(100, inputs=784, outputs=10, rows=rows, seed=seed)
    params[0] *= 0.2  # normal(0, 0.1), the lecture's init
    params[2] *= 0.2
    t_rev, _ = _best_time(lambda: reverse_gradient(loss_fn, params), repeat)
    best = float("inf")
    for k in range(repeat):
        direction = np.zeros(params[0].size)
        direction[k] = 1.0
        tangents = [direction.reshape(params[0].shape), None, None, None]
        t0 = time.perf_counter()
        jvp(loss_fn, params, tangents)
        best = min(best, time.perf_counter() - t0)
    return sum(p.size for p in params), t_rev, best


def format_table(results):
    head = (f"{'hidden':>6} {'params P':>9} {'reverse (s)':>12} {'forward (s)':>12} "
            f"{'fwd/rev':>9} {'fwd per P (us)':>15} {'max |diff|':>11} {'agree':>6}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['hidden']:>6} {r['params']:>9,} {r['reverse']:>12.2e} "
                     f"{r['forward']:>12.2e} {r['forward'] / r['reverse']:>9.0f} "
                     f"{r['forward'] / r['params'] * 1e6:>15.0f} {r['max_diff']:>11.1e} "
                     f"{'yes' if r['agree'] else 'NO':>6}")
    return "\n".join(lines)


def plot(results, path, title=""):
    """Seconds vs number of parameters, log-log, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    P = np.array([r["params"] for r in results], dtype=float)
    rev = np.array([r["reverse"] for r in results])
    fwd = np.array([r["forward"] for r in results])
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.loglog(P, fwd, marker="o", label="forward mode: P JVPs")
    ax.loglog(P, rev, marker="s", label="reverse mode: 1 forward + 1 backward")
    ax.loglog(P, fwd[0] * P / P[0], "k:", linewidth=1, label="slope 1 (time proportional to P)")
    ax.set_xlabel("number of parameters P")
    ax.set_ylabel("seconds for the full gradient")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "full gradient of a scalar loss", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128],
                   help="hidden sizes h (default 2 4 8 16 32 64 128)")
    p.add_argument("--inputs", type=int, default=16)
    p.add_argument("--outputs", type=int, default=10)
    p.add_argument("--rows", type=int, default=32, help="batch rows of the loss")
    p.add_argument("--repeat", type=int, default=5, help="reverse mode: best of N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-lecture-net", action="store_true", help="skip the estimate for the "
                   "lecture's 784-100-10 network")
    p.add_argument("--out", default="forward_vs_reverse.png", help="the plot (PNG)")
    args = p.parse_args(argv)
    print(f"network: {args.inputs} -> h sigmoid -> {args.outputs} sigmoid, summed logistic "
          f"cost over {args.rows} rows, float64")
    results = measure(args.hidden, repeat=args.repeat, inputs=args.inputs,
                      outputs=args.outputs, rows=args.rows, seed=args.seed)
    print(format_table(results))
    plot(results, args.out, title=f"full gradient of a {args.inputs}-h-{args.outputs} MLP's "
                                  f"summed cost ({args.rows} rows, float64)")
    print(f"plot: {args.out}")
    if not args.no_lecture_net:
        P, t_rev, t_jvp = lecture_estimate(seed=args.seed)
        print(f"the lecture's 784-100-10 network, 100 rows, P = {P:,}: one reverse gradient "
              f"{t_rev * 1e3:.2f} ms; one JVP {t_jvp * 1e3:.2f} ms, so a forward-mode "
              f"gradient would take {P:,} JVPs = {P * t_jvp:.0f} s "
              f"({P * t_jvp / t_rev:,.0f}x the reverse gradient)")
    if not all(r["agree"] for r in results):
        sys.exit("error: forward and reverse gradients disagree")
    return results


if __name__ == "__main__":
    main()
