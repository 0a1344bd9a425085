"""The benchmark suite still runs (benchmarks/run.py --quick on tiny synthetic data) and its
contenders all do the same work. Nothing here asserts a speed."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_mlp
from tinygrad_mlp import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")
JIT = hasattr(tinygrad_mlp, "jit")
CNN = all(hasattr(nn, name) for name in ("Conv2d", "MaxPool2d", "Flatten"))
try:
    import jax  # noqa: F401
    JAX = True
except ImportError:
    JAX = False


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "run.json"
    done = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--synthetic", "--batches",
         "3", "--repeats", "1", "--cnn-rows", "256", "--pause", "0", "--threads", "1",
         "--markdown", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(out) as f:
        return json.load(f), done.stdout


def test_quick_run_has_every_row_and_each_one_ran(quick_run):
    result, stdout = quick_run
    rows = result["rows"]
    for dtype in ("float32", "float64"):
        cell = [r for r in rows if r["what"].startswith(f"{dtype}, 1 thread:")]
        assert [r["target"] for r in cell] == ["1", "2", "floor", "3", "4", "ref", "A/A"] \
            + ["ref"] * JAX
        raw = result["raw"]["lecture"][f"{dtype}, 1 thread"]
        expected = ["eager", "fit", "numpy", "numpy again", "numpy with cost", "torch"] \
            + ["jit"] * JIT \
            + ["jax"] * JAX
        assert set(raw) == set(expected)
        assert all(len(t) == 1 and t[0] > 0 for t in raw.values())
    assert [r["what"].split(": ")[-1] for r in rows if r["target"] == "5"] == \
        ["fit", "jit", "eager"]
    assert [r["target"] for r in rows if r["what"].startswith("LeNet-5")] == ["6", "ref"]
    for r in rows:
        missing = r["result"] == "not available"
        why = r["measured"]
        # a row is "not available" only when what it needs is really missing
        assert missing == (("jit" in why and not JIT) or ("nn." in why and not CNN)), r
        if not missing:
            assert r["result"] in ({"reference"} if r["limit"] is None else {"PASS", "FAIL"})
            assert math.isfinite(r["ratio"]) and r["ratio"] >= 0, r
    assert "data: synthetic" in stdout and result["data"].startswith("synthetic")
    assert result["command"].startswith("python benchmarks/run.py --quick")
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| target | what | measured (medians) | ratio | limit | result |"
    assert len(table) == 2 + len(rows)


def test_the_contenders_train_the_same_numbers(monkeypatch):
    """Every contender of the lecture epoch makes the same weights (float64): the suite
    compares the same work."""
    monkeypatch.syspath_prepend(BENCH)
    import lecture

    X, y, _ = lecture.load_mnist(synthetic=True, rows=300)
    Y = np.eye(10)[y]
    names = ["eager", "fit", "numpy", "numpy with cost", "torch"] + ["jit"] * JIT + ["jax"] * JAX
    weights = {}
    for name in names:
        run = lecture.CONTENDERS[name](X, Y)
        for _ in range(2):
            run.epoch()
        if name.startswith("numpy"):
            weights[name] = [run.w_h, run.b_h, run.w_out, run.b_out]
        elif name == "torch":
            weights[name] = [run.model[0].weight.detach().numpy().T, run.model[0].bias,
                             run.model[2].weight.detach().numpy().T, run.model[2].bias]
        elif name == "jax":
            weights[name] = run.params
        else:
            weights[name] = [p.data for p in run.model.parameters()]
    start = lecture.start_weights(np.float64)
    assert not np.allclose(weights["numpy"][0], start[0], rtol=0, atol=1e-4)  # it trained
    for name in names:
        for got, want in zip(weights[name], weights["numpy"]):
            np.testing.assert_allclose(np.asarray(got.detach() if hasattr(got, "detach")
                                                  else got), want, rtol=0, atol=1e-10,
                                       err_msg=name)


def test_the_floor_contender_computes_the_cost_the_users_loop_returns(monkeypatch):
    """Row 2's floor does the user's work: its cost at the first step is the library's loss."""
    monkeypatch.syspath_prepend(BENCH)
    import lecture

    X, y, _ = lecture.load_mnist(synthetic=True, rows=300)
    Y = np.eye(10)[y]
    floor = lecture.CONTENDERS["numpy with cost"](X, Y)
    floor.epoch()
    model = lecture.lecture_model(np.float64)
    idx = lecture.batches(len(X), np.random.RandomState(2))[0]
    cost = nn.BinaryCrossEntropy(reduction="sum")
    loss = cost(model(tinygrad_mlp.Tensor(X[idx])), tinygrad_mlp.Tensor(Y[idx])) \
        + nn.l2_penalty(model, lecture.L2)
    assert len(floor.costs) == 3
    assert floor.costs[0] == pytest.approx(loss.item(), rel=1e-12)
    assert floor.costs[1] != floor.costs[0]  # one value per step, on that step's batch


def test_the_lenet_contenders_train_the_same_numbers(monkeypatch):
    """LeNet-5: the library's loop (eager and jit) and PyTorch's make the same weights after
    two Adam steps (float32); without the layers, the rows say which one is missing."""
    monkeypatch.syspath_prepend(BENCH)
    import lecture
    import lenet

    X, y, _ = lecture.load_mnist(synthetic=True, rows=256)
    images = X.astype(np.float32).reshape(-1, 1, 28, 28)
    if not CNN:
        with pytest.raises(lecture.Unavailable, match=r"nn\.\w+ is missing"):
            lenet.CONTENDERS["eager"](images, y)
        return
    runs = {name: lenet.CONTENDERS[name](images, y) for name in ["eager", "torch"] + ["jit"] * JIT}
    for run in runs.values():
        run.epoch()
    want = [m.weight.detach().numpy() for m in runs["torch"].model if hasattr(m, "weight")]
    for name in runs.keys() - {"torch"}:
        got = [m.weight.data for m in runs[name].model if hasattr(m, "weight")]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g if g.ndim == 4 else g.T, w, rtol=0, atol=1e-5,
                                       err_msg=name)
