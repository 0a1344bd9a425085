"""examples/mnist_cnn.py: LeNet-5 trains, writes what it promises; the full run reaches 99%.

The quick test trains on the fake MNIST folder of test_example_mnist.py (10 noisy class
templates); one on the real MNIST subset when $TINYGRAD_MLP_DATA has it; the full run
(8 epochs on 55,000 images, >= 99.0% test accuracy) is marked slow: pytest -m slow.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from test_example_mnist import fake_mnist, final_numbers, png_size  # noqa: F401 (fixture)

from tinygrad_mlp import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "mnist_cnn.py")


def _load_example():
    spec = importlib.util.spec_from_file_location("mnist_cnn_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, timeout=600):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, (f"mnist_cnn.py {' '.join(args)} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def check_outputs(out, epochs):
    for name in ("model.npz", "history.json", "cost.png", "accuracy.png", "digits.png",
                 "misclassified.png", "graph.svg"):
        path = os.path.join(out, name)
        assert os.path.isfile(path) and os.path.getsize(path) > 0, f"{name} missing or empty"
    assert png_size(os.path.join(out, "misclassified.png")) == (640, 720)
    with open(os.path.join(out, "graph.svg")) as f:
        svg = f.read()
    assert "Conv2d(1, 6, 5, padding=2)" in svg and "MaxPool2d(2)" in svg  # module clusters
    model = _load_example().build_model(seed=123)
    before = [p.data.copy() for p in model.parameters()]
    model.load(os.path.join(out, "model.npz"))
    assert any(not np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    assert isinstance(model[0], nn.Conv2d) and model[0].weight.shape == (6, 1, 5, 5)
    with open(os.path.join(out, "history.json")) as f:
        hist = json.load(f)
    assert len(hist["cost"]) == epochs and len(hist["valid_acc"]) == epochs
    assert not [n for n in os.listdir(out) if n.startswith(".tmp")]
    return hist


def test_lenet_trains_on_fake_digits_and_writes_its_outputs(fake_mnist, tmp_path):  # noqa: F811
    out = str(tmp_path / "cnn")
    proc = run("--data", fake_mnist, "--no-download", "--epochs", "2", "--batch-size", "50",
               "--lr", "0.01", "--no-progress", "--out", out)
    numbers = final_numbers(proc.stdout)
    assert set(numbers) == {"train", "valid", "test"}, proc.stdout
    assert numbers["test"] > 30.0, proc.stdout  # chance is 10%
    hist = check_outputs(out, 2)
    assert hist["test_acc"] == pytest.approx(numbers["test"] / 100, abs=5e-5)
    assert re.search(r"^training time: \d+\.\d s for 2 epochs", proc.stdout, re.M)


def test_threads_change_the_speed_not_one_weight(fake_mnist, tmp_path):  # noqa: F811
    common = ["--data", fake_mnist, "--no-download", "--batch-size", "50", "--lr", "0.01",
              "--train-rows", "300", "--test-rows", "50", "--epochs", "2", "--no-plots",
              "--no-graph", "--no-progress"]
    for threads in ("1", "3"):
        run(*common, "--threads", threads, "--out", str(tmp_path / threads))
    with np.load(tmp_path / "1" / "model.npz") as a, np.load(tmp_path / "3" / "model.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    env = dict(os.environ, PYTHONPATH=REPO)
    bad = subprocess.run([sys.executable, SCRIPT, *common, "--threads", "0"], env=env,
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "--threads must be positive, got 0" in bad.stderr


def test_build_model_is_lenet_with_a_400_wide_flatten():
    mnist_cnn = _load_example()
    model = mnist_cnn.build_model(seed=0)
    x = mnist_cnn.as_images(np.zeros((3, 784), dtype=np.float32))
    assert x.shape == (3, 1, 28, 28)
    assert model[:7](x).shape == (3, 400)
    assert model(x).shape == (3, 10)
    assert model.num_parameters() == 61706  # LeNet-5's count with these sizes
    other = mnist_cnn.build_model(seed=0)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(model.parameters(),
                                                               other.parameters()))


def _real_mnist():
    root = os.environ.get("TINYGRAD_MLP_DATA")
    return bool(root) and os.path.isdir(os.path.join(root, "mnist"))


@pytest.mark.skipif(not _real_mnist(), reason="needs MNIST in $TINYGRAD_MLP_DATA/mnist")
def test_lenet_learns_real_mnist_from_a_subset(tmp_path):
    proc = run("--epochs", "1", "--train-rows", "3000", "--test-rows", "1000", "--no-download",
               "--no-progress", "--no-graph", "--out", str(tmp_path / "sub"))
    assert final_numbers(proc.stdout)["test"] > 40.0, proc.stdout  # chance is 10%


@pytest.mark.slow
@pytest.mark.skipif(not _real_mnist(), reason="needs MNIST in $TINYGRAD_MLP_DATA/mnist")
def test_full_run_reaches_99_percent(tmp_path):
    proc = run("--no-download", "--no-progress", "--out", str(tmp_path / "full"), timeout=1800)
    numbers = final_numbers(proc.stdout)
    assert numbers["test"] >= 99.0, proc.stdout
    check_outputs(str(tmp_path / "full"), 8)


def test_interrupted_run_resumes_from_its_checkpoint_bit_for_bit(fake_mnist, tmp_path):  # noqa: F811
    """Ctrl-C after the first epoch, then --resume: the weights of the uninterrupted run."""
    import signal
    import time

    common = ["--data", fake_mnist, "--no-download", "--batch-size", "50", "--lr", "0.01",
              "--train-rows", "300", "--test-rows", "50", "--epochs", "30", "--no-plots",
              "--no-graph", "--no-progress"]
    run(*common, "--out", str(tmp_path / "straight"))
    split = tmp_path / "split"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, SCRIPT, *common, "--out", str(split)], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = split / "checkpoint.npz"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, out, err)  # stopped, not finished
    assert "--resume" in err and not (split / "model.npz").exists()
    resumed = run(*common, "--resume", str(ckpt), "--out", str(split))
    assert "test accuracy" in resumed.stdout
    with np.load(tmp_path / "straight" / "model.npz") as a, np.load(split / "model.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    with open(split / "history.json") as f:
        assert len(json.load(f)["cost"]) == 30  # the resumed History holds every epoch
