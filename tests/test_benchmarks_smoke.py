"""The benchmark suite (benchmarks/run.py) still runs, in a tiny configuration (seconds).

Benchmarks are not tests: nothing here asserts a speed. It checks that every section of
the suite runs end to end on synthetic data and produces finite, positive timings and a
table, so that the suite cannot rot unnoticed. PyTorch's peers run when it is installed.
"""

import importlib.util
import io
import math
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_suite():
    spec = importlib.util.spec_from_file_location(
        "benchmarks_run", os.path.join(REPO, "benchmarks", "run.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _all_finite_positive(times):
    return bool(times) and all(math.isfinite(t) and t > 0 for t in times)


def test_tiny_suite_runs_every_section_with_finite_timings():
    run = _load_suite()
    out = io.StringIO()
    suite = run.run_suite(run.TINY, out=out)

    targets = [row.target for row in suite.rows]
    assert targets[:4] == ["1a", "1b", "1c", "1d"]  # 1c, 1d: references (lean NumPy loops)
    assert {"2", "3a", "3b", "4a", "4b", "5", "6"} <= set(targets)
    assert ("2*" in targets) == ("2**" in targets)  # both references, when PyTorch runs
    for section in ("lecture_epoch_seconds", "online_batch1_seconds", "online_batch10_seconds",
                    "predict_seconds"):
        for name, times in suite.raw[section].items():
            assert _all_finite_positive(times), (section, name, times)
    lib_runs = suite.raw["time_to_accuracy"]["library"]
    assert lib_runs and all(_all_finite_positive([t for t, _ in curve]) for curve in lib_runs)

    memory = suite.raw["memory"]
    assert memory["rows"] == run.TINY.memory_rows
    assert len(memory["epochs"]) == run.TINY.memory_epochs
    assert all(e["rss"] > 0 and e["hwm"] >= e["rss"] for e in memory["epochs"])

    for row in suite.rows:  # every judged figure is a number
        if row.status in ("PASS", "FAIL"):
            assert math.isfinite(row.value) or row.value == float("inf"), row
    table = suite.markdown().splitlines()
    assert table[0].startswith("| target |") and len(table) == 2 + len(suite.rows)
    assert "data: synthetic" in out.getvalue()
    # the machine lines, printed first and kept for --json: the BLAS and its kernel among them
    assert suite.machine and out.getvalue().startswith(suite.machine[0])
    assert any(line.startswith("BLAS environment") for line in suite.machine)
    assert any("BLAS: " in line for line in suite.machine)


def test_step_stages_times_every_stage_and_steps_exactly_as_fit():
    import numpy as np

    from tinygrad_mlp import nn, optim, train

    spec = importlib.util.spec_from_file_location(
        "benchmarks_step_stages", os.path.join(REPO, "benchmarks", "step_stages.py"))
    stages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stages)
    X, y, _, _ = stages.bench_data.synthetic(n_train=100, n_test=1, dtype=np.float32)
    # 4 warm-up + 15 measured + 1 recording step of batch 10: two epochs of 100 rows (each
    # records a tape in its first step)
    result = stages.measure(X, y, batch=10, steps=15, warmup=4, seed=0)
    assert result.recorded == 2
    assert result.lib.shape[0] == result.ref.shape[0] == result.lean.shape[0] == 15

    split = ~np.isnan(result.lib[:, stages.COL["fwd1"]])
    assert 0 < split.sum() < len(split)  # both the per-op steps and the tape-call steps ran
    for key, _, on_lib, on_ref in stages.STAGES:
        lib = result.lib[:, stages.COL[key]]
        lib = lib[~np.isnan(lib)]
        assert (lib.size > 0) == on_lib, key
        assert np.all(np.isfinite(lib) & (lib > 0)), (key, lib)
        for ref in (result.ref[:, stages.COL[key]], result.lean[:, stages.COL[key]]):
            assert (np.all(np.isfinite(ref) & (ref > 0)) if on_ref
                    else np.all(np.isnan(ref))), key
    for times in (result.lib[:, stages.TOTAL], result.ref[:, stages.TOTAL],
                  result.lean[:, stages.TOTAL]):
        assert np.all(np.isfinite(times) & (times > 0))
    text = stages.table(result)
    assert "| **sum of the stage medians** |" in text and "lean NumPy (µs)" in text

    model = stages.lecture_model(np.float32)
    start = [p.data.copy() for p in model.parameters()]
    history = train.fit(model, nn.BinaryCrossEntropy(reduction="sum"),
                        optim.SGD(model.parameters(), lr=stages.LR), X, y, epochs=2,
                        batch_size=10, rng=np.random.RandomState(0), l2=stages.L2,
                        progress=False, eval_train=False)
    measured = list(result.lib_net.model.parameters())
    assert all(not np.array_equal(p.data, w) for p, w in zip(measured, start))  # trained
    for p, q in zip(measured, model.parameters()):
        assert np.array_equal(p.data, q.data), p.shape
    assert history.cost[-1] == result.lib_net.run_loss / 10  # the same batch losses

    Y = stages.numpy_mlp.one_hot(y, dtype=np.float32)
    # the inline NumPy step is NumpyMLP.step; the timed lean step is LeanMLP.step
    for net, timed in ((stages.numpy_mlp.NumpyMLP(dtype=np.float32), result.ref_net),
                       (stages.numpy_mlp.LeanMLP(dtype=np.float32), result.lean_net)):
        rng = np.random.RandomState(0)
        for _ in range(2):
            net.epoch(X, Y, rng, eta=stages.LR, l2=stages.L2, batch_size=10)
        for name in ("w_h", "b_h", "w_out", "b_out"):
            assert np.array_equal(getattr(net, name), getattr(timed, name)), name


def test_lean_numpy_loop_makes_the_lecture_loops_numbers():
    """The reference rows 1c, 1d, 2** time benchmarks/numpy_mlp.LeanMLP: with fold_lr=False
    its weights equal the lecture loop's bit for bit; folding eta into the deltas changes
    them only by rounding."""
    import numpy as np

    run = _load_suite()
    numpy_mlp = run.numpy_mlp
    X, y, _, _ = run.bench_data.synthetic(n_train=300, n_test=1)
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-4)):
        Xd, Y = X.astype(dtype), numpy_mlp.one_hot(y, dtype=dtype)
        nets = [numpy_mlp.NumpyMLP(dtype=dtype), numpy_mlp.LeanMLP(dtype=dtype),
                numpy_mlp.LeanMLP(dtype=dtype, fold_lr=True)]
        start = nets[0].w_h.copy()
        for net in nets:
            rng = np.random.RandomState(4)
            for _ in range(3):
                net.epoch(Xd, Y, rng, eta=0.01, l2=0.1, batch_size=50)
        lecture, lean, folded = nets
        assert not np.allclose(lecture.w_h, start, rtol=0, atol=1e-3)  # it trained
        for name in ("w_h", "b_h", "w_out", "b_out"):
            want = getattr(lecture, name)
            assert getattr(lean, name).dtype == dtype
            assert np.array_equal(getattr(lean, name), want), (dtype, name)
            scale = np.abs(want).max()
            assert np.allclose(getattr(folded, name), want, rtol=0, atol=rtol * scale), \
                (dtype, name)


def test_lockstep_runs_every_step_of_each_contender_in_alternating_chunks():
    run = _load_suite()
    log = []

    def library(schedule):  # a stand-in for fit: 23 steps, schedule called before each
        for step in range(23):
            assert schedule(step) == 0.25  # the learning rate given to lockstep
            log.append(("library", step))

    def peer(name, n):
        for step in range(n):
            log.append((name, step))
            yield

    spent = run.lockstep(library, [("a", peer("a", 23)), ("b", peer("b", 23))], chunk=5,
                         lr=0.25)
    assert set(spent) == {"library", "a", "b"} and all(t >= 0 for t in spent.values())
    for name in ("library", "a", "b"):
        assert [s for who, s in log if who == name] == list(range(23))
    # chunks of 5 alternate: a's and b's chunk k run just before the library's chunk k
    assert [who for who, _ in log[:15]] == ["a"] * 5 + ["b"] * 5 + ["library"] * 5
    assert [who for who, _ in log[15:30]] == ["a"] * 5 + ["b"] * 5 + ["library"] * 5


def test_lockstep_pauses_before_each_chunk_and_counts_no_pause_as_work():
    # row 2's lockstep against PyTorch sleeps before each chunk; no contender is charged
    # for the sleeps: each one's time is the time of its own steps
    run = _load_suite()
    work = 0.002  # seconds per step of every contender
    pause = 0.03

    def library(schedule):
        for step in range(6):
            schedule(step)
            time.sleep(work)

    def peer():
        for _ in range(6):
            time.sleep(work)
            yield

    t0 = time.perf_counter()
    spent = run.lockstep(library, [("a", peer()), ("b", peer())], chunk=2, lr=0.1,
                         pause=pause)
    wall = time.perf_counter() - t0
    # three chunks, each with a pause before a's, b's and the library's chunk
    assert wall >= 9 * pause + 18 * work
    for name in ("library", "a", "b"):
        assert 6 * work <= spent[name] < 6 * work + pause, (name, spent[name])


def _describe(*flags, **env):
    import subprocess

    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    environ.update(env)
    done = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "run.py"),
                           "--describe", "--no-torch", *flags], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_native_blas_restarts_the_suite_without_the_kernel_pins():
    # --native-blas: the suite runs without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, so NumPy's
    # OpenBLAS picks its kernel for this CPU (as PyTorch's BLAS does); without the flag the
    # pins stay, and the suite says so when they hold NumPy to another kernel
    pinned = _describe(OPENBLAS_CORETYPE="Prescott", OPENBLAS_L2_SIZE="512")
    blas_env = next(line for line in pinned.splitlines() if line.startswith("BLAS environment"))
    assert "OPENBLAS_CORETYPE=Prescott" in blas_env and "OPENBLAS_L2_SIZE=512" in blas_env
    native = _describe("--native-blas", OPENBLAS_CORETYPE="Prescott", OPENBLAS_L2_SIZE="512")
    blas_env = next(line for line in native.splitlines() if line.startswith("BLAS environment"))
    assert "OPENBLAS_CORETYPE" not in blas_env and "OPENBLAS_L2_SIZE" not in blas_env
    assert "OPENBLAS_THREAD_TIMEOUT=22" in blas_env  # set by the restarted suite itself
    assert "pins NumPy" not in native and "pin NumPy" not in native

    machine = _load_suite().machine

    def kernel(text):
        return machine.kernel_name(next(line for line in text.splitlines() if "kernel " in line))

    if kernel(pinned) != kernel(native):  # the pin holds NumPy to another kernel: a warning
        assert f"pin NumPy's OpenBLAS to the {kernel(pinned)} kernel" in pinned
        assert f"would pick {kernel(native)}" in pinned and "--native-blas" in pinned
    else:
        assert "pin NumPy" not in pinned


def test_profile_steps_counts_the_steps_that_ran(monkeypatch):
    # asked for more steps than one epoch has, it profiles the epoch and divides by its steps
    spec = importlib.util.spec_from_file_location(
        "benchmarks_profile_steps", os.path.join(REPO, "benchmarks", "profile_steps.py"))
    prof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prof)
    small = prof.bench_data.synthetic(n_train=200, n_test=1)
    monkeypatch.setattr(prof.bench_data, "load",
                        lambda data=None, dtype=None: (*[a.astype(dtype) if a.dtype.kind == "f"
                                                         else a for a in small], "synthetic"))
    out = io.StringIO()
    prof.profile(steps=1000, batch=10, repeats=1, out=out)
    text = out.getvalue()
    assert "20 steps, batch 10" in text, text
    assert "1000 steps" not in text
