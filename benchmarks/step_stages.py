"""Where the time of one lecture training step goes, stage by stage: library and NumPy loops.

    python benchmarks/step_stages.py [--batch 100] [--steps 1500] [--dtype float32] [--data DIR]

The library side is `train.fit`'s inner loop on its fast path written out here, with a
`time.perf_counter()` between stages: the lecture net (784-100-10 sigmoid), summed logistic
cost, l2 0.01, SGD lr 0.0005. The first step of each epoch records a `replay.StepTape`
through the ordinary engine, as fit does (those steps are not counted); the others replay
it. Half of the replayed steps (alternating in pairs) run the tape's ops group by group
(the pieces `StepTape.forward` / `StepTape.backward` are made of: `load`, `run_forward`,
`seed`, `run_backward`, `release`), so that each group of ops gets its own time; the
other half call `tape.forward` and `tape.backward` themselves, which shows what the split
adds. "layer 1" forward includes filling the tape's slots, "layer 1"
backward the clean-up of the step's arrays; "finite checks" sums fit's three small pieces
(float(loss) and its check, the bias-gradient check, the running argmax). Weights after N
steps equal fit's over the same batches, bit for bit (tests/test_benchmarks_smoke.py).

The hand-written sides are the lecture's loop, `NumpyMLP.step` written out inline with
timers (the same numbers as `NumpyMLP.step`), and the lean loop, `LeanMLP.step` (the
library's arithmetic, every array reused, nothing else; it notes its own stage times).
Each iteration runs one step of each on the same batch (separate models, the same shuffled
order), which one goes first rotating, after `--warmup` untimed steps. The table shows
medians in microseconds per stage, their sum, and the median of the whole-step times (not
the same number: a sum of medians is not the median of sums). A whole-step time includes
its own timer calls (11 or 13 in the library's, 7 in each loop's).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

import bench_data  # noqa: E402
import numpy_mlp  # noqa: E402
from profile_steps import lecture_model  # noqa: E402

from tinygrad_mlp import nn, optim, train  # noqa: E402
from tinygrad_mlp.replay import StepTape, can_replay, is_static  # noqa: E402

LR, L2 = 0.0005, 0.01
TAPE_OPS = ("dense", "sigmoid", "dense", "sigmoid", "sigmoid_binary_cross_entropy")

# Stages: (key, label, library?, NumPy loops?). NaN where a step does not measure a stage.
STAGES = (
    ("zero_grad", "`optimizer.zero_grad()`", True, False),
    ("gather", "row gather (library, lean: `X.take(idx, axis=0)`; loop: `X[idx]`)", True, True),
    ("fwd1", "forward: layer 1 (dense, sigmoid)", True, True),
    ("fwd2", "forward: layer 2 (dense, sigmoid)", True, True),
    ("loss", "forward: loss value (sigmoid + BCE op)", True, False),
    ("bwd2", "backward: loss grad + layer 2", True, True),
    ("bwd1", "backward: layer 1", True, True),
    ("l2", "L2 term (`_add_l2` per weight)", True, False),
    ("checks", "finite checks, `float(loss)`, running argmax", True, False),
    ("sgd", "SGD step (NumPy: L2 + update)", True, True),
    ("fwd_call", "forward as one `tape.forward` call", True, False),
    ("bwd_call", "backward as one `tape.backward` call", True, False),
)
COL = {key: i for i, (key, *_) in enumerate(STAGES)}
TOTAL = len(STAGES)  # the last column: the whole step, first timer to last


# ----------------------------------------------------------------------------- library


class LibraryNet:
    """The lecture net trained as `train.fit(..., l2=L2, eval_train=False)` trains it."""

    def __init__(self, dtype, n_rows, seed=1):
        self.model = lecture_model(dtype, seed)
        self.loss_fn = nn.BinaryCrossEntropy(reduction="sum")
        self.optimizer = optim.SGD(self.model.parameters(), lr=LR)
        self.l2_weights = nn.dense_weights(self.model)
        self.l2_buffers = {}
        small = [p for p in self.optimizer.params if p.size <= train._SMALL]
        self.step_checked = [p for p in small if p.ndim == 1] or small
        self.static = is_static(self.model) and is_static(self.loss_fn)
        self.preds = np.empty(n_rows, dtype=np.intp)
        self.tape = None
        self.run_loss = 0.0

    def new_epoch(self):
        self.tape = None  # fit records the tape anew each epoch
        self.run_loss = 0.0

    def _check_grads(self):
        for p in self.step_checked:
            g = p.grad
            if g is not None and not math.isfinite(np.add.reduce(g, axis=None)):
                raise train.NonFiniteError("a gradient became non-finite")

    def step(self, X, targets, idx, start, row, split_ops):
        """One step of fit's loop on rows idx; stage times (s) into `row`. Returns False
        for a recording step (through the engine; its times are not filled in)."""
        opt, tape = self.optimizer, self.tape
        t0 = time.perf_counter()
        opt.zero_grad()
        t1 = time.perf_counter()
        xb, yb = X.take(idx, axis=0), targets.take(idx, axis=0)  # as fit does
        t2 = time.perf_counter()
        if tape is None or not can_replay():
            return self._recorded_step(xb, yb, idx, start)
        if split_ops:
            ops = tape.ops
            tape.load(xb, yb)
            tape.run_forward(ops[:2])
            t3 = time.perf_counter()
            tape.run_forward(ops[2:4])
            t4 = time.perf_counter()
            tape.run_forward(ops[4:])
            t5 = time.perf_counter()
        else:
            tape.forward(xb, yb)
            t3 = t4 = t5 = time.perf_counter()
        out_data, loss_data = tape.slots[tape.out_slot], tape.slots[tape.loss_slot]
        value = float(loss_data)
        if not math.isfinite(value):
            raise train.NonFiniteError(f"the loss became {value}")
        t6 = time.perf_counter()
        if split_ops:
            grads = tape.seed()
            tape.run_backward(tape.order[:3], grads)  # loss, sigmoid 2, dense 2
            t7 = time.perf_counter()
            tape.run_backward(tape.order[3:], grads)  # sigmoid 1, dense 1
            tape.release()
        else:
            tape.backward()
            t7 = time.perf_counter()
        t8 = time.perf_counter()
        for w in self.l2_weights:
            train._add_l2(w, L2, self.l2_buffers)
        t9 = time.perf_counter()
        self._check_grads()
        t10 = time.perf_counter()
        opt.step()
        t11 = time.perf_counter()
        self.run_loss += value
        out_data.argmax(axis=1, out=self.preds[start:start + len(idx)])
        t12 = time.perf_counter()
        row[COL["zero_grad"]] = t1 - t0
        row[COL["gather"]] = t2 - t1
        row[COL["l2"]] = t9 - t8
        row[COL["checks"]] = (t6 - t5) + (t10 - t9) + (t12 - t11)
        row[COL["sgd"]] = t11 - t10
        row[TOTAL] = t12 - t0
        if split_ops:
            row[COL["fwd1"]], row[COL["fwd2"]], row[COL["loss"]] = t3 - t2, t4 - t3, t5 - t4
            row[COL["bwd2"]], row[COL["bwd1"]] = t7 - t6, t8 - t7
        else:
            row[COL["fwd_call"]], row[COL["bwd_call"]] = t5 - t2, t7 - t6
        return True

    def _recorded_step(self, xb, yb, idx, start):
        """fit's first step of an epoch: the engine runs it while the tape is recorded."""
        if self.static and can_replay():
            tape, out, loss = StepTape.record(self.model, self.loss_fn, xb, yb)
            if tape is None or [op.function.name for op in tape.ops] != list(TAPE_OPS):
                raise RuntimeError(f"step_stages expects a tape of the ops {TAPE_OPS}; the "
                                   "library records something else now: update this script")
            self.tape = tape
        else:
            raise RuntimeError("the lecture net is not replayable: fit would not replay it")
        value = float(loss.data)
        if not math.isfinite(value):
            raise train.NonFiniteError(f"the loss became {value}")
        loss.backward()
        for w in self.l2_weights:
            train._add_l2(w, L2, self.l2_buffers)
        self._check_grads()
        self.optimizer.step()
        self.run_loss += value
        out.data.argmax(axis=1, out=self.preds[start:start + len(idx)])
        return False


# ----------------------------------------------------------------------------- NumPy


def lean_step(net, X, Y, idx, row):
    """LeanMLP.step(X[idx], Y[idx], LR, L2), stage times (s) into `row`."""
    t0 = time.perf_counter()
    xb, yb = X.take(idx, axis=0), Y.take(idx, axis=0)
    marks = [time.perf_counter()]
    net.step(xb, yb, LR, L2, marks)
    for key, a, b in zip(("fwd1", "fwd2", "bwd2", "bwd1", "sgd"), marks, marks[1:]):
        row[COL[key]] = b - a
    row[COL["gather"]] = marks[0] - t0
    row[TOTAL] = marks[-1] - t0


def numpy_step(net, X, Y, idx, row):
    """NumpyMLP.step(X[idx], Y[idx], LR, L2) written out, stage times (s) into `row`."""
    sigmoid = numpy_mlp.sigmoid
    t0 = time.perf_counter()
    xb, yb = X[idx], Y[idx]
    t1 = time.perf_counter()
    a_h = sigmoid(np.dot(xb, net.w_h) + net.b_h)
    t2 = time.perf_counter()
    a_out = sigmoid(np.dot(a_h, net.w_out) + net.b_out)
    t3 = time.perf_counter()
    delta_out = a_out - yb
    grad_w_out = np.dot(a_h.T, delta_out)
    grad_b_out = np.sum(delta_out, axis=0)
    back = np.dot(delta_out, net.w_out.T)
    t4 = time.perf_counter()
    delta_h = back * (a_h * (1.0 - a_h))
    grad_w_h = np.dot(xb.T, delta_h)
    grad_b_h = np.sum(delta_h, axis=0)
    t5 = time.perf_counter()
    net.w_h -= LR * (grad_w_h + L2 * net.w_h)
    net.b_h -= LR * grad_b_h
    net.w_out -= LR * (grad_w_out + L2 * net.w_out)
    net.b_out -= LR * grad_b_out
    t6 = time.perf_counter()
    row[COL["gather"]], row[COL["fwd1"]], row[COL["fwd2"]] = t1 - t0, t2 - t1, t3 - t2
    row[COL["bwd2"]], row[COL["bwd1"]], row[COL["sgd"]] = t4 - t3, t5 - t4, t6 - t5
    row[TOTAL] = t6 - t0


# ----------------------------------------------------------------------------- measurement


class Result:
    """lib, ref, lean: (steps, len(STAGES) + 1) seconds, NaN where not measured; the last
    column is the whole step. lib_net, ref_net, lean_net: the trained models. recorded:
    steps not counted."""

    def __init__(self, lib, ref, lean, lib_net, ref_net, lean_net, recorded, warmup):
        self.lib, self.ref, self.lean = lib, ref, lean
        self.lib_net, self.ref_net, self.lean_net = lib_net, ref_net, lean_net
        self.recorded, self.warmup = recorded, warmup

    def median_us(self, side, col, rows=None):
        a = getattr(self, side)  # "lib", "ref" or "lean"
        if rows is not None:
            a = a[rows]
        col = a[:, col]
        col = col[~np.isnan(col)]
        return 1e6 * float(np.median(col)) if col.size else float("nan")


def measure(X, y, batch=100, steps=1500, warmup=50, seed=0):
    """Run `warmup` steps, then library, NumPy and lean NumPy steps until `steps` replayed steps are
    measured, on X, y (epochs over X's rows in the order of np.random.RandomState(seed), as
    fit shuffles). Recording steps (the first of each epoch) run but are not counted.
    Returns a Result."""
    dtype = X.dtype
    n = X.shape[0]
    if n // batch < 2:
        raise ValueError(f"{n} rows make fewer than 2 batches of {batch}: no step would replay")
    targets = numpy_mlp.one_hot(y, dtype=dtype)  # fit's one-hot targets, the same array
    lib_net = LibraryNet(dtype, n)
    ref_net = numpy_mlp.NumpyMLP(dtype=dtype)
    lean_net = numpy_mlp.LeanMLP(dtype=dtype)
    rng = np.random.RandomState(seed)
    width = len(STAGES) + 1
    lib, ref, lean = [], [], []
    recorded = i = 0
    lib_row, ref_row, lean_row = (np.full(width, np.nan) for _ in range(3))
    while len(lib) < steps:
        order = train._epoch_order(n, rng, True)
        lib_net.new_epoch()
        for start in range(0, n - n % batch, batch):
            if len(lib) >= steps:
                break
            idx = order[start:start + batch]
            for row in (lib_row, ref_row, lean_row):
                row[:] = np.nan
            split = (i // 2) % 2 == 0
            replayed = True
            for k in range(3):  # the three sides, first one rotating
                side = (i + k) % 3
                if side == 0:
                    replayed = lib_net.step(X, targets, idx, start, lib_row, split)
                elif side == 1:
                    numpy_step(ref_net, X, targets, idx, ref_row)
                else:
                    lean_step(lean_net, X, targets, idx, lean_row)
            if not replayed:
                recorded += 1
            elif i >= warmup:
                lib.append(lib_row.copy())
                ref.append(ref_row.copy())
                lean.append(lean_row.copy())
            i += 1
    return Result(*(np.array(a).reshape(-1, width) for a in (lib, ref, lean)),
                  lib_net, ref_net, lean_net, recorded, warmup)


def _fmt(us):
    return "–" if math.isnan(us) else f"{us:.1f}"


def table(result):
    """The Markdown table of medians (microseconds)."""
    split = ~np.isnan(result.lib[:, COL["fwd1"]])
    lines = ["| stage | library (µs) | hand-written NumPy (µs) | lean NumPy (µs) |",
             "| --- | ---: | ---: | ---: |"]
    sums = {"lib": 0.0, "ref": 0.0, "lean": 0.0}
    for key, label, on_lib, on_ref in STAGES:
        if key in ("fwd_call", "bwd_call"):
            continue
        us = {side: result.median_us(side, COL[key]) if on else float("nan")
              for side, on in (("lib", on_lib), ("ref", on_ref), ("lean", on_ref))}
        for side, value in us.items():
            sums[side] += 0.0 if math.isnan(value) else value
        ref_text = "in SGD step" if key == "l2" else _fmt(us["ref"])
        lean_text = "in SGD step" if key == "l2" else _fmt(us["lean"])
        lines.append(f"| {label} | {_fmt(us['lib'])} | {ref_text} | {lean_text} |")
    lines.append(f"| **sum of the stage medians** | **{sums['lib']:.1f}** | "
                 f"**{sums['ref']:.1f}** | **{sums['lean']:.1f}** |")
    lines.append(f"| **median of whole steps** (library: per-op timed steps) | "
                 f"**{result.median_us('lib', TOTAL, split):.1f}** | "
                 f"**{result.median_us('ref', TOTAL):.1f}** | "
                 f"**{result.median_us('lean', TOTAL):.1f}** |")
    for key in ("fwd_call", "bwd_call"):
        label = STAGES[COL[key]][1]
        lines.append(f"| {label} (other steps) | {_fmt(result.median_us('lib', COL[key]))} "
                     f"| – | – |")
    lines.append(f"| median of whole steps (library: steps with the two tape calls) | "
                 f"{result.median_us('lib', TOTAL, ~split):.1f} | – | – |")
    return "\n".join(lines)


def _timer_cost_us(n=100000):
    pc = time.perf_counter
    t0 = pc()
    for _ in range(n):
        pc()
    return 1e6 * (pc() - t0) / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=1500,
                   help="replayed steps measured (after the warm-up)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--data", metavar="DIR", help="MNIST folder (else $TINYGRAD_MLP_DATA)")
    args = p.parse_args(argv)
    dtype = np.dtype(args.dtype)
    X_all, y_all, _, _, source = bench_data.load(args.data, dtype=dtype)
    X = np.ascontiguousarray(X_all[:bench_data.N_FIT])
    y = y_all[:bench_data.N_FIT]
    result = measure(X, y, args.batch, args.steps, args.warmup)
    n = result.lib.shape[0]
    split = int(np.count_nonzero(~np.isnan(result.lib[:, COL["fwd1"]])))
    print(f"data: {source}; {X.shape[0]} rows")
    print(f"batch {args.batch}, {dtype.name}, {n} measured steps after {args.warmup} warm-up "
          f"({split} with per-op timers, {n - split} with the two tape calls; "
          f"{result.recorded} recording step(s) not counted); numpy {np.__version__}; "
          f"perf_counter() costs {_timer_cost_us():.2f} µs; medians in µs")
    print()
    print(table(result))
    lib_total = result.lib[:, TOTAL]
    print()
    for side, name in (("ref", "NumPy"), ("lean", "lean NumPy")):
        ratio = float(np.median(lib_total / getattr(result, side)[:, TOTAL]))
        print(f"median over steps of (library step / {name} step on the same batch): "
              f"{ratio:.2f}")


if __name__ == "__main__":
    main()
