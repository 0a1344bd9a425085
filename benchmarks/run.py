#!/usr/bin/env python3
"""The benchmark suite of issue 6: the library against hand-written NumPy and PyTorch eager.

    python benchmarks/run.py [--quick] [--native-blas] [--data DIR] [--json FILE] [--no-torch]

Everything runs in this one process (the memory check in a child process, for a clean
RSS), contenders interleaved (A, B, C, then B, C, A, ...), and the table shows medians.
A ratio is the median over the repeats of (library time / peer time) measured in the same
repeat, which is robust against a machine whose load changes while the suite runs.

Targets (see docs/performance.md):
  1  one lecture epoch (784-100-10 sigmoid, summed logistic cost, l2 0.01, SGD lr 0.0005,
     batch 100, 55,000 rows): library / hand-written NumPy <= 1.15, float32 and float64
  2  the same epoch, library / PyTorch eager (float32, 2 threads) <= 0.6
  3  online learning, 2,000 steps: library / NumPy <= 2.0 at batch 1, <= 1.3 at batch 10
  4  peak RSS of a 20-epoch lecture run <= 1.3 x (dataset arrays + 100 MB), and no growth
     from epoch to epoch
  5  `train.predict` on the 10,000 test images >= 70% of the float32 GEMM rate of a
     (10000, 784) @ (784, 100) product measured in the same run
  6  time to 98.0% test accuracy, the `--preset fast` recipe of examples/mnist.py against
     the same recipe in PyTorch eager: library / PyTorch <= 0.8

`--quick` (under a minute) runs fewer rows and repeats; targets 4 and 6 then only give
indicative figures. Real MNIST comes from --data or $TINYGRAD_MLP_DATA/mnist; without it
the suite runs on synthetic data of the same shapes (timings only).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time

# OpenBLAS's idle threads spin for 2^28 cycles (about 0.1 s here) before they sleep, and
# a spinning thread takes a core from whatever runs next: PyTorch's OpenMP threads, in row
# 2's chunks, took twice as long behind it. 2^22 cycles (about 1.5 ms) is still far longer
# than the gaps between the matrix products of a training step, so NumPy's own speed does
# not change; it only lets the threads go idle in the pauses between contenders. It must
# be set before NumPy loads OpenBLAS (an environment variable that is already set wins).
if "numpy" not in sys.modules:
    OPENBLAS_THREAD_TIMEOUT = os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")
else:  # imported from a process that has NumPy (and OpenBLAS) loaded: too late to set
    OPENBLAS_THREAD_TIMEOUT = None

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, REPO)

import machine  # noqa: E402 (it loads NumPy only when asked)

# --native-blas: run without the variables that pin OpenBLAS's kernel (machine.BLAS_PINS).
# OpenBLAS reads them once, when NumPy loads it, so the script starts itself again without
# them; the restarted process finds none and goes on. Only this command changes: the
# tests and CI keep the machine's settings.
NATIVE_BLAS = "--native-blas"
if __name__ == "__main__" and NATIVE_BLAS in sys.argv[1:] and "numpy" not in sys.modules \
        and any(k in os.environ for k in machine.BLAS_PINS):
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:],
              machine.unpinned_environment())

import bench_data  # noqa: E402
import numpy as np  # noqa: E402
import numpy_mlp  # noqa: E402
import torch_mlp  # noqa: E402

from tinygrad_mlp import nn, optim, train  # noqa: E402

MB = 1024 * 1024
LOCKSTEP_CHUNK = 55  # steps per chunk of a lockstep run: ten chunks in a lecture epoch
TORCH_CHUNK_PAUSE = 0.02  # seconds before each chunk of a lockstep run against PyTorch


@dataclasses.dataclass
class Config:
    """Sizes of one run of the suite (FULL, QUICK, or TINY for the smoke test)."""

    rows: int = 55000            # training rows of a lecture epoch
    repeats: int = 9             # interleaved repeats of the epoch and online runs
    torch_repeats: int = 15      # lockstep epochs against PyTorch (row 2); whole epochs
    #                              interleaved spread over +-40%, lockstep ones +-5%
    online_steps: int = 2000     # steps of the online runs (batch 1 and batch 10)
    memory_epochs: int = 20      # epochs of the memory run (child process)
    memory_rows: int = 0         # 0: all 55,000 rows
    predict_repeats: int = 30
    tta_repeats: int = 2         # interleaved runs of library and PyTorch (target 6)
    tta_epochs: int = 0          # 0: the recipe's epochs; else stop after this many
    tta_rows: int = 55000
    target_accuracy: float = 0.98
    synthetic: bool = False      # force synthetic data (the smoke test)
    label: str = "full"


FULL = Config()
QUICK = Config(rows=11000, repeats=3, torch_repeats=3, online_steps=500, memory_epochs=3,
               predict_repeats=10, tta_repeats=1, tta_epochs=1, label="quick")
TINY = Config(rows=600, repeats=1, torch_repeats=1, online_steps=20, memory_epochs=2,
              memory_rows=500, predict_repeats=2, tta_repeats=1, tta_epochs=1, tta_rows=1000,
              synthetic=True, label="tiny")


@dataclasses.dataclass
class Row:
    target: str
    what: str
    measured: str
    value: float = float("nan")  # the ratio or figure the limit applies to
    limit: str = ""
    status: str = ""

    def markdown(self):
        value = ("" if math.isnan(self.value) else f"{self.value:.3f}"
                 if abs(self.value) < 10 else f"{self.value:.0f}")
        return (f"| {self.target} | {self.what} | {self.measured} | {value} | {self.limit} "
                f"| {self.status} |")


def judge(value, limit, op):
    if value is None or math.isnan(value):
        return "n/a"
    return "PASS" if (value <= limit if op == "<=" else value >= limit) else "FAIL"


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def interleave(jobs, repeats, pause=0.1):
    """Run every job once untimed (warm-up), then once per repeat, rotating their order;
    {name: [seconds, ...]}. A short pause between jobs lets the BLAS/OpenMP threads of
    the previous job go idle (they spin for a while after their work)."""
    for _, fn in jobs:
        fn()
    times = {name: [] for name, _ in jobs}
    for r in range(repeats):
        k = r % len(jobs)
        for name, fn in jobs[k:] + jobs[:k]:
            time.sleep(pause)
            times[name].append(timed(fn))
    return times


def lockstep(run_library, peers, chunk, lr, pause=0.0):
    """One run of the library (`run_library(schedule)`: a call of `train.fit` given
    `schedule`, which returns the constant learning rate `lr` to fit) and of each peer (a
    generator that yields after each step), in alternating chunks of `chunk` steps: the
    peers' chunk k, then the library's chunk k, and so on (fit calls `schedule(step)`
    before each step; every `chunk` steps it runs the peers). A drift of the machine's
    speed, which on this machine moves single epochs by +-30% within seconds, then slows
    all contenders alike. `pause` seconds before each chunk (not timed) let the threads of
    the previous contender go idle: needed with PyTorch, whose OpenMP threads and
    OpenBLAS's spin for a while after their work (see OPENBLAS_THREAD_TIMEOUT above).
    Returns {name: seconds}; the library's is fit's wall time minus the time spent in the
    peers' chunks and the pauses."""
    spent = {name: 0.0 for name, _ in peers}
    inside = 0.0

    def run_peers():
        nonlocal inside
        t_in = time.perf_counter()
        for name, steps in peers:
            if pause:
                time.sleep(pause)
            t = time.perf_counter()
            for _ in itertools.islice(steps, chunk):
                pass
            spent[name] += time.perf_counter() - t
        if pause:
            time.sleep(pause)
        inside += time.perf_counter() - t_in

    def schedule(step):
        if step % chunk == 0:
            run_peers()
        return lr

    t0 = time.perf_counter()
    run_library(schedule)
    total = time.perf_counter() - t0
    for name, steps in peers:  # any steps left (none when all run the same epoch)
        spent[name] += timed(lambda steps=steps: [None for _ in steps])
    spent["library"] = total - inside
    return spent


def interleave_lockstep(make_run, repeats, chunk, lr, pause=0.1, chunk_pause=0.0):
    """`repeats` lockstep runs after an untimed one (learning rate `lr`, `chunk_pause`
    before each chunk); make_run() -> (run_library, peers) for each. The peers' order
    rotates from run to run. {name: [seconds, ...]}."""
    times = {}
    for r in range(-1, repeats):
        run_library, peers = make_run()
        k = r % len(peers) if peers else 0
        time.sleep(pause)
        spent = lockstep(run_library, peers[k:] + peers[:k], chunk, lr, chunk_pause)
        if r >= 0:
            for name, seconds in spent.items():
                times.setdefault(name, []).append(seconds)
    return times


def paired_ratio(times, a, b):
    """Median over repeats of times[a][r] / times[b][r]."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def ms(seconds):
    return f"{1e3 * seconds:.0f} ms" if seconds >= 0.1 else f"{1e3 * seconds:.1f} ms"


def median(xs):
    return statistics.median(xs)


# ----------------------------------------------------------------------------- models


def lecture_model(dtype, seed=1):
    """The lecture's 784-100-10 sigmoid net; its weights equal NumpyMLP(seed=seed)'s."""
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Dense(784, 100, rng=rng, dtype=dtype), nn.Sigmoid(),
                         nn.Dense(100, 10, rng=rng, dtype=dtype), nn.Sigmoid())


class LibraryLecture:
    """The library side of a lecture run: `train.fit` for one epoch per call."""

    lr = 0.0005

    def __init__(self, dtype, seed=1):
        self.model = lecture_model(dtype, seed)
        self.loss_fn = nn.BinaryCrossEntropy(reduction="sum")
        self.opt = optim.SGD(self.model.parameters(), lr=self.lr)
        self.rng = np.random.RandomState(2)

    def epoch(self, X, y, batch_size=100, schedule=None):
        train.fit(self.model, self.loss_fn, self.opt, X, y, epochs=1, batch_size=batch_size,
                  rng=self.rng, l2=0.01, progress=False, eval_train=False, schedule=schedule)


# ----------------------------------------------------------------------------- sections


class Suite:
    def __init__(self, cfg, data=None, use_torch=True, out=sys.stdout):
        self.cfg = cfg
        self.out = out
        self.torch = torch_mlp.import_torch(2) if use_torch else None
        if cfg.synthetic:
            X, y, Xt, yt = bench_data.synthetic(n_train=max(cfg.rows, cfg.tta_rows,
                                                            cfg.online_steps * 10) + 100,
                                                n_test=max(1000, cfg.rows // 5))
            source = "synthetic"
        else:
            X, y, Xt, yt, source = bench_data.load(data)
        self.data_dir = data
        self.source = source
        self.real = not source.startswith("synthetic")
        self.X64, self.y, self.Xt64, self.yt = X, y, Xt, yt
        self.X32 = X.astype(np.float32)
        self.Xt32 = Xt.astype(np.float32)
        self.rows = []
        self.raw = {}
        self.machine = []  # the lines describing machine, BLAS and PyTorch, once run
        self.lib32 = None

    def log(self, text):
        print(text, file=self.out, flush=True)

    def add(self, row):
        self.rows.append(row)
        self.log(f"  {row.target}: {row.what}: {row.measured}"
                 + (f" -> {row.value:.3f} ({row.limit}: {row.status})" if row.limit else
                    f" -> {row.value:.3f} ({row.status})" if not math.isnan(row.value) else ""))

    # -- 1 and 2 ------------------------------------------------------------------------
    def lecture_epochs(self):
        cfg, torch = self.cfg, self.torch
        n = min(cfg.rows, self.X64.shape[0])
        self.log(f"[1, 2] lecture epochs: {n} rows, batch 100, {cfg.repeats} repeats "
                 f"(lockstep), {cfg.torch_repeats} against PyTorch")
        times, vs_torch = {}, None
        for dtype, X in ((np.float32, self.X32), (np.float64, self.X64)):
            name = np.dtype(dtype).name
            X, y = X[:n], self.y[:n]
            Y = numpy_mlp.one_hot(y, dtype=dtype)
            lib = LibraryLecture(dtype)
            peers = [("numpy", numpy_mlp.NumpyMLP(seed=1, dtype=dtype))]
            if dtype == np.float32:  # references: how fast hand-written NumPy can be
                peers += [("lean", numpy_mlp.LeanMLP(seed=1, dtype=dtype)),
                          ("lean folded", numpy_mlp.LeanMLP(seed=1, dtype=dtype,
                                                            fold_lr=True))]
            rngs = {peer: np.random.RandomState(2) for peer, _ in peers}

            def make_run(lib=lib, peers=peers, rngs=rngs, X=X, y=y, Y=Y):
                return ((lambda schedule: lib.epoch(X, y, schedule=schedule)),
                        [(peer, net.epoch_steps(X, Y, rngs[peer])) for peer, net in peers])

            for key, seconds in interleave_lockstep(make_run, cfg.repeats, LOCKSTEP_CHUNK,
                                                    LibraryLecture.lr).items():
                times[f"{key} {name}"] = seconds
            if dtype == np.float32:
                self.lib32 = lib
                if torch is not None:
                    # In lockstep too, with a pause before each chunk (TORCH_CHUNK_PAUSE)
                    # so that no contender's idle threads spin into the next one's chunk.
                    params = [lecture_model(np.float32)[i] for i in (0, 2)]
                    peer = torch_mlp.LectureNet(torch, [p.weight.data for p in params],
                                                [p.bias.data for p in params])
                    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
                    # references: hand-written NumPy (the lecture's, the leanest) / PyTorch
                    ref2 = numpy_mlp.NumpyMLP(seed=1, dtype=dtype)
                    lean = numpy_mlp.LeanMLP(seed=1, dtype=dtype, fold_lr=True)
                    t_rngs = {k: np.random.RandomState(2) for k in ("torch", "numpy", "lean")}

                    def make_torch_run(lib=lib, X=X, y=y, Y=Y, Xt=Xt, Yt=Yt, peer=peer,
                                       ref2=ref2, lean=lean, r=t_rngs):
                        return ((lambda schedule: lib.epoch(X, y, schedule=schedule)), [
                            ("torch", peer.epoch_steps(Xt, Yt, r["torch"])),
                            ("numpy", ref2.epoch_steps(X, Y, r["numpy"])),
                            ("lean folded", lean.epoch_steps(X, Y, r["lean"]))])

                    vs_torch = {f"{key} float32": seconds for key, seconds in
                                interleave_lockstep(make_torch_run, cfg.torch_repeats,
                                                    LOCKSTEP_CHUNK, LibraryLecture.lr,
                                                    chunk_pause=TORCH_CHUNK_PAUSE).items()}
        self.raw["lecture_epoch_seconds"] = times
        for tag, name in (("1a", "float32"), ("1b", "float64")):
            ratio = paired_ratio(times, f"library {name}", f"numpy {name}")
            self.add(Row(tag, f"lecture epoch {name}: library / hand-written NumPy (lockstep)",
                         f"{ms(median(times[f'library {name}']))} / "
                         f"{ms(median(times[f'numpy {name}']))}", ratio, "<= 1.15",
                         judge(ratio, 1.15, "<=")))
        for tag, peer, what in (("1c", "lean", "same arithmetic"),
                                ("1d", "lean folded", "eta folded into the deltas")):
            self.add(Row(tag, f"for reference: library / lean NumPy loop, {what} (lockstep)",
                         f"{ms(median(times['library float32']))} / "
                         f"{ms(median(times[f'{peer} float32']))}",
                         paired_ratio(times, "library float32", f"{peer} float32"),
                         status="reference"))
        if torch is None:
            self.add(Row("2", "lecture epoch float32: library / PyTorch eager",
                         "skipped: PyTorch is not installed", status="skipped"))
        else:
            self.raw["lecture_epoch_seconds_vs_torch"] = vs_torch
            ratio = paired_ratio(vs_torch, "library float32", "torch float32")
            self.add(Row("2", "lecture epoch float32: library / PyTorch eager (2 threads)",
                         f"{ms(median(vs_torch['library float32']))} / "
                         f"{ms(median(vs_torch['torch float32']))}", ratio, "<= 0.6",
                         judge(ratio, 0.6, "<=")))
            floor = paired_ratio(vs_torch, "numpy float32", "torch float32")
            self.add(Row("2*", "for reference, the same epochs: hand-written NumPy / PyTorch "
                               "eager", f"{ms(median(vs_torch['numpy float32']))} / "
                               f"{ms(median(vs_torch['torch float32']))}", floor,
                         status="reference"))
            lean = paired_ratio(vs_torch, "lean folded float32", "torch float32")
            self.add(Row("2**", "for reference, the same epochs: lean NumPy loop, eta folded "
                                "/ PyTorch eager",
                         f"{ms(median(vs_torch['lean folded float32']))} / "
                         f"{ms(median(vs_torch['torch float32']))}", lean,
                         status="reference"))

    # -- 3 ------------------------------------------------------------------------------
    def online(self):
        cfg = self.cfg
        steps = cfg.online_steps
        self.log(f"[3] online learning: {steps} steps at batch 1 and at batch 10, float32, "
                 f"{cfg.repeats} repeats")
        for tag, batch, limit in (("3a", 1, 2.0), ("3b", 10, 1.3)):
            n = steps * batch
            X, y = self.X32[:n], self.y[:n]
            Y = numpy_mlp.one_hot(y, dtype=np.float32)
            lib = LibraryLecture(np.float32)
            ref = numpy_mlp.NumpyMLP(seed=1, dtype=np.float32)
            rng = np.random.RandomState(2)

            def make_run(lib=lib, ref=ref, rng=rng, X=X, y=y, Y=Y, b=batch):
                return ((lambda schedule: lib.epoch(X, y, b, schedule=schedule)),
                        [("numpy", ref.epoch_steps(X, Y, rng, batch_size=b))])

            times = interleave_lockstep(make_run, cfg.repeats, max(1, steps // 10),
                                        LibraryLecture.lr)
            self.raw[f"online_batch{batch}_seconds"] = times
            ratio = paired_ratio(times, "library", "numpy")
            per = 1e6 / steps
            self.add(Row(tag, f"online, batch {batch}: library / hand-written NumPy",
                         f"{median(times['library']) * per:.0f} us / "
                         f"{median(times['numpy']) * per:.0f} us per step", ratio,
                         f"<= {limit:g}", judge(ratio, limit, "<=")))

    # -- 4 ------------------------------------------------------------------------------
    def memory(self):
        cfg = self.cfg
        cmd = [sys.executable, os.path.join(HERE, "memory_run.py"),
               "--epochs", str(cfg.memory_epochs)]
        if cfg.memory_rows:
            cmd += ["--rows", str(cfg.memory_rows)]
        if cfg.synthetic:
            cmd += ["--synthetic"]
        elif self.data_dir:
            cmd += ["--data", self.data_dir]
        self.log(f"[4] memory: {cfg.memory_epochs} lecture epochs (float64) in a child "
                 f"process")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            self.add(Row("4", "memory run", "failed: " + proc.stderr.strip()[-300:],
                         status="FAIL"))
            return
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        self.raw["memory"] = rec
        budget = rec["dataset_bytes"] + 100 * MB
        peak = rec["final_hwm"]
        ratio = peak / budget
        full = cfg.memory_epochs >= 20
        self.add(Row("4a", f"peak RSS of {cfg.memory_epochs} lecture epochs / (dataset "
                           f"{rec['dataset_bytes'] / MB:.0f} MB + 100 MB)",
                     f"{peak / MB:.0f} MB (after loading: {rec['loaded_hwm'] / MB:.0f} MB)",
                     ratio, "<= 1.3",
                     judge(ratio, 1.3, "<=") if full else "indicative (short run)"))
        epochs = rec["epochs"]
        first = epochs[1] if len(epochs) > 1 else epochs[0]
        last = epochs[-1]
        growth = max(last["rss"] - first["rss"], last["hwm"] - first["hwm"]) / MB
        self.add(Row("4b", f"RSS growth from epoch {first['epoch']} to {last['epoch']}",
                     "RSS " + " ".join(f"{e['rss'] / MB:.0f}" for e in epochs) + " MB",
                     growth, "<= 10 MB",
                     judge(growth, 10.0, "<=") if full else "indicative (short run)"))

    # -- 5 ------------------------------------------------------------------------------
    def predict(self):
        cfg = self.cfg
        model = self.lib32.model if self.lib32 is not None else lecture_model(np.float32)
        Xt = self.Xt32
        n = Xt.shape[0]
        W = model[0].weight.data
        ref = numpy_mlp.NumpyMLP(seed=1, dtype=np.float32)
        self.log(f"[5] predict on {n} test rows vs a ({n}, 784) @ (784, 100) float32 GEMM, "
                 f"{cfg.predict_repeats} repeats")
        times = interleave([
            ("gemm", lambda: np.dot(Xt, W)),
            ("predict", lambda: train.predict(model, Xt)),
            ("numpy predict", lambda: ref.predict(Xt)),
        ], cfg.predict_repeats, pause=0.01)
        self.raw["predict_seconds"] = times
        gemm_flops = 2.0 * n * 784 * 100
        predict_flops = 2.0 * n * (784 * 100 + 100 * 10)
        ratios = [(predict_flops / tp) / (gemm_flops / tg)
                  for tp, tg in zip(times["predict"], times["gemm"])]
        ratio = median(ratios)
        gemm_rate = gemm_flops / median(times["gemm"]) / 1e9
        pred_rate = predict_flops / median(times["predict"]) / 1e9
        np_rate = predict_flops / median(times["numpy predict"]) / 1e9
        self.add(Row("5", "predict rate / GEMM rate (float32)",
                     f"predict {ms(median(times['predict']))} = {pred_rate:.0f} GFLOP/s, GEMM "
                     f"{gemm_rate:.0f} GFLOP/s (hand-written NumPy predict {np_rate:.0f})",
                     ratio, ">= 0.7", judge(ratio, 0.7, ">=")))

    # -- 6 ------------------------------------------------------------------------------
    def time_to_accuracy(self):
        cfg = self.cfg
        mnist = bench_data.load_example()
        recipe = mnist.recipe("fast")
        n = min(cfg.tta_rows, self.X32.shape[0] - self.X32.shape[0] // 12)
        X, y = self.X32[:n], self.y[:n]
        Xt, yt = self.Xt32, self.yt
        bs, epochs = int(recipe["batch_size"]), int(recipe["epochs"])
        max_epochs = cfg.tta_epochs or epochs
        target = cfg.target_accuracy
        total_steps = epochs * (n // bs)
        self.log(f"[6] time to {100 * target:.1f}% test accuracy: --preset fast "
                 f"({mnist.describe(recipe)}), {n} rows, up to {max_epochs} epochs, "
                 f"{cfg.tta_repeats} repeat(s)")

        class Reached(Exception):
            pass

        def run_pair(torch_first):
            """One run of each contender, their epochs alternating (T1 L1 T2 L2 ... or
            L1 T1 L2 T2 ...), so that a machine whose speed drifts during the run slows
            both alike. Curves of (training seconds so far, test accuracy) per epoch."""
            rng = np.random.RandomState(recipe["seed"])
            model = mnist.build_model(recipe, rng=rng)
            curves = {"library": [], "torch": []}
            peer = None
            if self.torch is not None:
                torch = self.torch
                t_rng = np.random.RandomState(recipe["seed"])
                start_model = mnist.build_model(recipe, rng=t_rng)  # same weights and rng
                dense = [start_model[0], start_model[2]]
                peer = torch_mlp.FastNet(torch, [d.weight.data for d in dense],
                                         [d.bias.data for d in dense],
                                         lr_at=mnist.build_schedule(recipe, total_steps))
                Xg, yg = torch.from_numpy(X), torch.from_numpy(y)
                Xtg, ytg = torch.from_numpy(Xt), torch.from_numpy(yt)

            def torch_epoch():
                """PyTorch's next epoch unless it is done; True when one ran."""
                curve = curves["torch"]
                if peer is None or len(curve) >= max_epochs or (curve and
                                                                curve[-1][1] >= target):
                    return False
                t = timed(peer.epoch, Xg, yg, t_rng, bs)
                curve.append(((curve[-1][0] if curve else 0.0) + t, peer.accuracy(Xtg, ytg)))
                return True

            def on_epoch_end(epoch, history):
                acc = train.accuracy(model, Xt, yt)  # fit timed the epoch: history.time
                curves["library"].append((sum(history.time), acc))
                torch_epoch()
                if acc >= target or epoch >= max_epochs:
                    raise Reached

            if torch_first:
                torch_epoch()
            try:
                mnist.train_model(recipe, X, y, model=model, rng=rng, on_epoch_end=on_epoch_end)
            except Reached:
                pass
            while torch_epoch():  # PyTorch's epochs after the library has stopped
                pass
            return curves

        runs = {"library": [], "torch": []}
        for r in range(cfg.tta_repeats):
            curves = run_pair(torch_first=r % 2 == 1)
            for name in runs:
                if curves[name]:
                    runs[name].append(curves[name])
        self.raw["time_to_accuracy"] = runs

        def reached(curve):
            for epoch, (t, acc) in enumerate(curve, 1):
                if acc >= target:
                    return t, epoch
            return None

        def summary(name):
            hits = [reached(c) for c in runs[name]]
            epoch_times = [c[-1][0] / len(c) for c in runs[name]]
            final = [c[-1][1] for c in runs[name]]
            if all(hits):
                text = (f"{median(h[0] for h in hits):.2f} s ({hits[0][1]} epochs, test "
                        f"{100 * median(final):.2f}%)")
            else:
                text = (f"not reached in {len(runs[name][0])} epochs (test "
                        f"{100 * median(final):.2f}%)")
            return hits, median(epoch_times), text

        lib_hits, lib_epoch, lib_text = summary("library")
        if self.torch is None:
            self.add(Row("6", f"time to {100 * target:.1f}%: library (PyTorch not installed)",
                         lib_text, status="skipped"))
            return
        torch_hits, torch_epoch, torch_text = summary("torch")
        quick = cfg.tta_epochs and cfg.tta_epochs < epochs
        if quick:
            ratio = lib_epoch / torch_epoch
            self.add(Row("6", f"fast recipe, time per epoch (first {max_epochs}): library / "
                              f"PyTorch", f"{lib_epoch:.2f} s / {torch_epoch:.2f} s", ratio,
                         "<= 0.8", "indicative (short run)"))
            return
        if all(lib_hits) and all(torch_hits):
            ratio = median(a[0] / b[0] for a, b in zip(lib_hits, torch_hits))
        elif all(lib_hits):
            ratio = 0.0  # PyTorch never got there
        else:
            ratio = float("inf")
        self.add(Row("6", f"time to {100 * target:.1f}% test accuracy, fast recipe: library "
                          f"/ PyTorch eager", f"{lib_text} / {torch_text}", ratio, "<= 0.8",
                     judge(ratio, 0.8, "<=")))

    # -- all ----------------------------------------------------------------------------
    def run(self, sections=("lecture", "online", "memory", "predict", "tta")):
        self.machine = machine.report(self.torch)
        for line in self.machine:
            self.log(line)
        self.log(f"data: {self.source}; configuration: {self.cfg.label}")
        self.log("OpenBLAS idle threads sleep after 2^"
                 f"{OPENBLAS_THREAD_TIMEOUT} cycles (OPENBLAS_THREAD_TIMEOUT)"
                 if OPENBLAS_THREAD_TIMEOUT else "note: NumPy was loaded before run.py could "
                 "set OPENBLAS_THREAD_TIMEOUT: OpenBLAS's idle threads spin for 0.1 s and "
                 "slow the next contender (row 2)")
        if not self.real:
            self.log("note: synthetic data: timings are meaningful, accuracies are not")
        t0 = time.perf_counter()
        steps = {"lecture": self.lecture_epochs, "online": self.online,
                 "memory": self.memory, "predict": self.predict, "tta": self.time_to_accuracy}
        for name in sections:
            steps[name]()
        self.log(f"suite time: {time.perf_counter() - t0:.0f} s; " + machine.describe()[-1])
        return self.rows

    def markdown(self):
        lines = ["| target | what | measured (medians) | ratio | limit | result |",
                 "| --- | --- | --- | --- | --- | --- |"]
        lines += [row.markdown() for row in self.rows]
        return "\n".join(lines)


def run_suite(cfg, data=None, use_torch=True, out=sys.stdout, sections=None):
    """Run the suite with `cfg`; returns the Suite (rows, raw timings, markdown())."""
    suite = Suite(cfg, data=data, use_torch=use_torch, out=out)
    suite.run(sections or ("lecture", "online", "memory", "predict", "tta"))
    return suite


def main(argv=None):
    p = argparse.ArgumentParser(description="Benchmarks of issue 6: the library against "
                                "hand-written NumPy and PyTorch eager.")
    p.add_argument("--quick", action="store_true", help="fewer rows and repeats (< 1 minute)")
    p.add_argument("--data", metavar="DIR", help="MNIST folder (default: "
                   "$TINYGRAD_MLP_DATA/mnist)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peers")
    p.add_argument("--repeats", type=int, help="override the number of interleaved repeats")
    p.add_argument("--only", nargs="+", choices=["lecture", "online", "memory", "predict",
                                                 "tta"], help="run only these sections")
    p.add_argument("--json", metavar="FILE", help="also write the raw timings as JSON")
    p.add_argument(NATIVE_BLAS, action="store_true",
                   help="run without " + " and ".join(machine.BLAS_PINS) + ", so that "
                   "OpenBLAS picks its kernel for this CPU as PyTorch's BLAS does (the "
                   "script restarts itself; the tests keep the machine's settings)")
    p.add_argument("--describe", action="store_true",
                   help="print the machine, BLAS and PyTorch lines, then exit")
    args = p.parse_args(argv)
    if args.describe:
        torch = None if args.no_torch else torch_mlp.import_torch(2)
        print("\n".join(machine.report(torch)))
        return 0
    cfg = QUICK if args.quick else FULL
    if args.repeats:
        cfg = dataclasses.replace(cfg, repeats=args.repeats)
    suite = Suite(cfg, data=args.data, use_torch=not args.no_torch)
    sections = args.only or ["lecture", "online", "memory", "predict", "tta"]
    if "predict" in sections and "lecture" not in sections:
        suite.log("note: predict uses an untrained model (run with 'lecture' to train it)")
    suite.run(sections)
    print()
    print(suite.markdown())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": dataclasses.asdict(cfg), "source": suite.source,
                       "machine": suite.machine,
                       "rows": [dataclasses.asdict(r) for r in suite.rows],
                       "raw": suite.raw}, f, indent=1, default=float)
    failed = [r.target for r in suite.rows if r.status == "FAIL"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
