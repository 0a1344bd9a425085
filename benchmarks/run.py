#!/usr/bin/env python3
"""The benchmark suite: tinygrad_mlp against a hand-written NumPy loop and PyTorch eager.

    python benchmarks/run.py [--quick] [--data DIR | --synthetic] [--json FILE] [--markdown]

Everything runs in this one process (the memory runs each in a child process, for an RSS
of their own). The contenders of a measurement take turns (A B C, then B C A, ...) after one
untimed round, with a short pause before each so that the previous one's idle BLAS and
OpenMP threads have stopped spinning; the table shows medians, and a ratio is the median
over the repeats of (time of A / time of B) within one repeat. docs/performance.md says what
each row measures and why its limit is what it is.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lecture  # noqa: E402
import lenet  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import tinygrad_mlp  # noqa: E402

FIT_LIMIT = 1.03  # fit / jit loop: "no slower", plus the noise of two equal loops (row A/A)
MB = 2 ** 20


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: few batches, few repeats")
    p.add_argument("--data", metavar="DIR", help="MNIST folder (default: $TINYGRAD_MLP_DATA)")
    p.add_argument("--synthetic", action="store_true", help="synthetic data of MNIST's shape")
    p.add_argument("--batches", type=int, help="lecture epoch: the first N batches of 100 "
                   "(default: all 600; --quick: 60)")
    p.add_argument("--repeats", type=int, help="timed rounds (default 7; --quick: 2)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="BLAS threads")
    p.add_argument("--memory-epochs", type=int, help="epochs of the memory runs (default "
                   "20; --quick: 3)")
    p.add_argument("--cnn-rows", type=int, help="LeNet-5 epoch rows (default 12,800; "
                   "--quick: 1,280); times are scaled to 60,000 rows")
    p.add_argument("--pause", type=float, default=0.15, help="seconds of sleep before each "
                   "epoch (default 0.15: idle OpenBLAS threads spin for about 0.1 s)")
    p.add_argument("--skip", nargs="+", default=[], choices=["lecture", "memory", "cnn"])
    p.add_argument("--json", metavar="FILE", help="also write rows and raw timings as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown "
                   "(docs/performance.md's format)")
    args = p.parse_args(argv)
    quick = args.quick
    args.batches = args.batches or (60 if quick else 0)
    args.repeats = args.repeats or (2 if quick else 7)
    args.memory_epochs = args.memory_epochs or (3 if quick else 20)
    args.cnn_rows = args.cnn_rows or (1280 if quick else 12800)
    return args


def import_torch():
    try:
        return lecture.import_torch()
    except lecture.Unavailable:
        return None


def build(contenders, names, *data):
    """{name: object with .epoch()} of those that can run here, and {name: why not}."""
    ready, missing = {}, {}
    for name in names:
        try:
            ready[name] = contenders[name](*data)
        except lecture.Unavailable as e:
            missing[name] = str(e)
    return ready, missing


def measure(groups, repeats, torch, pause):
    """groups: [(threads, {name: contender})]; threads: n (NumPy's BLAS, PyTorch and the
    library's kernels all get n threads) or a pair (BLAS threads, the library's
    set_num_threads). One untimed round, then `repeats` rounds; in each, every group in
    turn with its threads set, its contenders in an order that rotates from round to round,
    `pause` seconds of sleep before each epoch.
    [{name: [seconds per round]}], one per group; a contender's warnings (e.g. jit giving
    up) under the name "warnings"."""
    times = [{name: [] for name in jobs} for _, jobs in groups]
    for r in range(-1, repeats):
        for (threads, jobs), out in zip(groups, times):
            names = list(jobs)
            names = names[r % len(names):] + names[:r % len(names)] if names else []
            blas, ours = threads if isinstance(threads, tuple) else (threads, threads)
            with threadpool_limits(limits=blas, user_api="blas"):
                if torch is not None:
                    torch.set_num_threads(ours)
                tinygrad_mlp.set_num_threads(ours)
                for name in names:
                    time.sleep(pause)
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        t0 = time.perf_counter()
                        jobs[name].epoch()
                        seconds = time.perf_counter() - t0
                    if r >= 0:
                        out[name].append(seconds)
                    for w in caught:
                        out.setdefault("warnings", {}).setdefault(name, str(w.message))
    return times


def threads_label(n):
    return f"{n} thread{'s' if n > 1 else ''}"


def ms(seconds):
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def row(target, what, times, missing, a, b, limit, scale=1.0):
    """A table row comparing contender a with contender b (ratio of paired times)."""
    r = {"target": target, "what": what, "limit": limit}
    if a in missing or b in missing:
        r.update(measured=missing.get(a) or missing[b], ratio=None, result="not available")
        return r
    ratio = statistics.median(x / y for x, y in zip(times[a], times[b]))
    r.update(measured=f"{ms(statistics.median(times[a]) * scale)} / "
                      f"{ms(statistics.median(times[b]) * scale)}", ratio=ratio,
             result="reference" if limit is None else "PASS" if ratio <= limit else "FAIL")
    for name in (a, b):
        if name in times.get("warnings", {}):
            r["measured"] += f"; {name} warned: {times['warnings'][name][:150]}"
    return r


def lecture_rows(args, torch, X64, y):
    rows, raw = [], {}
    names = ["eager", "jit", "fit", "numpy", "numpy again", "numpy with cost", "torch", "jax"]
    groups, cells = [], []
    for dtype in (np.float32, np.float64):
        X, Y = X64.astype(dtype, copy=False), np.eye(10, dtype=dtype)[y]
        for threads in args.threads:
            ready, missing = build(lecture.CONTENDERS, names, X, Y)
            groups.append((threads, ready))
            cells.append((np.dtype(dtype).name, threads, missing))
    measured = measure(groups, args.repeats, torch, args.pause)
    for (dtype, threads, missing), times in zip(cells, measured):
        cell = f"{dtype}, {threads_label(threads)}"
        raw[cell] = times
        rows += [
            row("1", f"{cell}: eager loop / NumPy", times, missing, "eager", "numpy", 1.45),
            row("2", f"{cell}: jit loop / NumPy", times, missing, "jit", "numpy", 0.95),
            row("floor", f"{cell}: NumPy computing the cost too / NumPy (row 2's floor)",
                times, missing, "numpy with cost", "numpy", None),
            row("3", f"{cell}: jit loop / PyTorch eager", times, missing, "jit", "torch", 0.8),
            row("4", f"{cell}: fit / jit loop", times, missing, "fit", "jit", FIT_LIMIT),
            row("ref", f"{cell}: PyTorch eager / NumPy", times, missing, "torch", "numpy",
                None),
            row("A/A", f"{cell}: NumPy / the same NumPy loop again (noise)", times, missing,
                "numpy", "numpy again", None)]
        if "jax" not in missing:
            rows.append(row("ref", f"{cell}: jit loop / JAX jit (XLA's threads)", times,
                            missing, "jit", "jax", None))
    return rows, raw


def memory_rows(args):
    rows, raw = [], {}
    for name in ("fit", "jit", "eager"):
        cmd = [sys.executable, os.path.join(HERE, "memory.py"), name, "--epochs",
               str(args.memory_epochs), "--batches", str(args.batches)]
        cmd += ["--synthetic"] if args.synthetic else ["--data", args.data] if args.data else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        what = f"RSS growth, epoch 2 to {args.memory_epochs}, float64: {name}"
        r = {"target": "5", "what": what, "limit": 10.0, "unit": " MB", "ratio": None}
        if done.returncode != 0:
            rows.append({**r, "measured": done.stderr.strip()[-300:], "result": "FAIL"})
            continue
        rec = raw[name] = json.loads(done.stdout.splitlines()[-1])
        if "unavailable" in rec:
            rows.append({**r, "measured": rec["unavailable"], "result": "not available"})
            continue
        rss, hwm = rec["rss"], rec["hwm"]
        growth = max(rss[-1] - rss[1], hwm[-1] - hwm[1]) / MB
        rows.append({**r, "ratio": growth, "result": "PASS" if growth <= 10 else "FAIL",
                     "measured": f"peak {hwm[-1] / MB:.0f} MB (data {rec['dataset_bytes'] / MB:.0f}"
                                 f" MB); RSS {rss[1] / MB:.0f} -> {rss[-1] / MB:.0f} MB"})
    return rows, raw


def cnn_rows(args, torch, X64, y):
    """LeNet-5 rows for each thread count n: the library on n threads of its own with one
    BLAS thread each (set_num_threads(n): its best use of n cores, docs/performance.md)
    against PyTorch on n threads; for reference, the library's jit loop with n BLAS threads
    and none of its own (what it gets from OpenBLAS's default)."""
    images = X64[:args.cnn_rows].astype(np.float32).reshape(-1, 1, 28, 28)
    labels = y[:len(images)]
    groups, cells = [], []
    for threads in args.threads:
        ready, missing = build(lenet.CONTENDERS, ["eager", "jit", "torch"], images, labels)
        torch_run = {"torch": ready.pop("torch")} if "torch" in ready else {}
        first = len(groups)
        groups += [(threads, torch_run), ((1, threads), ready)]
        if threads > 1:
            blas, why = build({"jit, BLAS threads": lenet.CONTENDERS["jit"]},
                              ["jit, BLAS threads"], images, labels)
            groups.append(((threads, 1), blas))
            missing.update(why)
        cells.append((threads, missing, range(first, len(groups))))
    measured = measure(groups, args.repeats, torch, args.pause)
    scale, rows, raw = 60000 / len(images), [], {}
    for threads, missing, members in cells:
        times = {k: v for g in members for k, v in measured[g].items()}
        label = threads_label(threads)
        raw[label] = times
        what = f"LeNet-5, float32, {label}: "
        rows += [row("6", what + "jit loop / PyTorch eager", times, missing, "jit", "torch",
                     1.5, scale),
                 row("ref", what + "eager loop / PyTorch eager", times, missing, "eager",
                     "torch", None, scale)]
        if threads > 1:
            rows.append(row("ref", what + "jit loop on BLAS threads instead / PyTorch eager",
                            times, missing, "jit, BLAS threads", "torch", None, scale))
    for r in rows:
        if r["ratio"] is not None:
            r["measured"] += f" per 60,000 rows ({len(images):,} timed)"
    return rows, raw


def machine(torch):
    blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info() if i["user_api"] == "blas"]
    return (f"Python {platform.python_version()}, NumPy {np.__version__} with "
            f"{', '.join(blas)}, PyTorch {torch.__version__ if torch else 'not installed'}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")


def table(rows, markdown):
    cols = ["target", "what", "measured (medians)", "ratio", "limit", "result"]
    cells = [[str(r["target"]), r["what"], r["measured"],
              "" if r["ratio"] is None else f"{r['ratio']:.3f}",
              "" if r["limit"] is None else f"<= {r['limit']:g}{r.get('unit', '')}",
              r["result"]] for r in rows]
    if markdown:
        return "\n".join(["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
                         + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(x) for x in column) for column in zip(cols, *cells)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip()
                     for line in [cols] + cells)


def main(argv=None):
    args = parse_args(argv)
    torch = import_torch()
    start = time.perf_counter()
    n = args.batches * lecture.BATCH or None  # None: all rows
    cnn_n = 0 if "cnn" in args.skip else args.cnn_rows
    X64, y, source = lecture.load_mnist(args.data, args.synthetic, n and max(n, cnn_n))
    Xl, yl = X64[:n], y[:n]
    print(f"{machine(torch)}\ndata: {source}; lecture epoch {len(Xl):,} rows, "
          f"{args.repeats} repeats", flush=True)
    rows, raw = [], {}
    for part, run in (("lecture", lambda: lecture_rows(args, torch, Xl, yl)),
                      ("memory", lambda: memory_rows(args)),
                      ("cnn", lambda: cnn_rows(args, torch, X64, y))):
        if part not in args.skip:
            new, raw[part] = run()
            rows += new
            print(f"{part}: {len(new)} rows after {time.perf_counter() - start:.0f} s",
                  flush=True)
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{date}, {time.perf_counter() - start:.0f} s: {command}\n{machine(torch)}\n")
    print(table(rows, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": date, "command": command, "machine": machine(torch),
                       "data": source, "rows": rows, "raw": raw}, f, indent=1)


if __name__ == "__main__":
    main()
