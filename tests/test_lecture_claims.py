"""The lecture's side claims, checked in this library (issue 9).

- nn.summary: per-layer and total parameter counts equal the parameters' sizes; the quiz
  network (m=39 inputs, d=43 hidden, t=10 outputs) has 2,160 weights including biases.
- Vanishing gradients: in examples/vanishing_gradients.py's setup, the first layer's
  gradient norm of an 8-hidden-layer sigmoid net is >= 100x smaller than the last layer's;
  with ReLU and He init it is not. Checked on the synthetic batch always, on MNIST when
  $TINYGRAD_MLP_DATA holds it.
- Convergence: per epoch, online SGD lowers the cost more than mini-batches, which lower
  it more than one full-batch step (counted in epochs, so independent of machine speed).
- Forward vs reverse mode: P JVPs give the same gradient as one backward.
- Each example runs end to end on a small setting (main(argv) in this process; one as a
  separate program) and writes its PNG.
"""

from __future__ import annotations

import importlib.util
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrad_mlp import Tensor, nn, numerical_gradient

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"lecture_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


vanishing = _load("vanishing_gradients")
convergence = _load("convergence")
fwd_rev = _load("forward_vs_reverse")


def _mnist_root():
    root = os.environ.get("TINYGRAD_MLP_DATA")
    if not root or not (Path(root) / "mnist").is_dir():
        pytest.skip("set TINYGRAD_MLP_DATA to a folder with mnist/ to check this on MNIST")
    return root


def _run(script, *args, env=None, timeout=120):
    full_env = dict(os.environ, MPLBACKEND="Agg")
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _assert_png(path, min_width=300):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= min_width and height >= 200, f"{path} is only {width}x{height}"
    assert len(data) > 5000, f"{path} is suspiciously small ({len(data)} bytes)"


# ----------------------------------------------------------------------------- summary


def _quiz_net():
    return nn.Sequential(nn.Dense(39, 43), nn.Sigmoid(), nn.Dense(43, 10), nn.Sigmoid())


def _rows(text):
    """(name, type, output shape, count) of each table row between the rules."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) <= {"=", "-"} and line]
    body = lines[rules[1] + 1:rules[2]]
    out = []
    for line in body:
        m = re.match(r"^(\S+)\s+(\w+(?:\([^)]*\))?)\s+(\(not called\)|\([^)]*\))\s+([\d,]+)$",
                     line)
        assert m, f"unparsed summary row: {line!r}"
        out.append((m.group(1), m.group(2), m.group(3), int(m.group(4).replace(",", ""))))
    return out


def _total(text, label):
    m = re.search(rf"^{label}: ([\d,]+)$", text, re.M)
    assert m, f"no '{label}' line in:\n{text}"
    return int(m.group(1).replace(",", ""))


def test_summary_of_the_lecture_quiz_network_says_2160(capsys):
    model = _quiz_net()
    text = nn.summary(model, (None, 39))
    assert capsys.readouterr().out.strip() == text.strip()  # printed and returned
    assert "Total params: 2,160" in text
    assert "Trainable params: 2,160" in text
    assert model.num_parameters() == 2160 == 39 * 43 + 43 + 43 * 10 + 10
    rows = _rows(text)
    assert rows == [("0", "Dense(39, 43)", "(None, 43)", 1720),
                    ("1", "Sigmoid", "(None, 43)", 0),
                    ("2", "Dense(43, 10)", "(None, 10)", 440),
                    ("3", "Sigmoid", "(None, 10)", 0)]


class _Block(nn.Module):
    """A custom module with its own tensor, a frozen one and nested children."""

    def __init__(self):
        rng = np.random.RandomState(0)
        self.body = nn.Sequential(nn.Dense(5, 7, rng=rng), nn.Tanh(),
                                  nn.Dense(7, 3, rng=rng, bias=False))
        self.scale = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
        self.offset = Tensor(np.zeros(3, dtype=np.float32))  # not trainable
        self.unused = nn.Dense(2, 2)

    def forward(self, x):
        return self.body(x) * self.scale + self.offset


@pytest.mark.parametrize("make, shape", [
    (_quiz_net, (None, 39)),
    (lambda: vanishing.build_mlp(8, "relu", dtype=np.float32), (None, 784)),
    (_Block, (4, 5)),
    (lambda: nn.Dense(3, 2), (None, 3)),
])
def test_summary_counts_equal_the_parameter_sizes(make, shape):
    model = make()
    text = nn.summary(model, shape, quiet=True)
    rows = _rows(text)
    trainable = sum(p.size for p in model.parameters())
    assert _total(text, "Trainable params") == trainable == model.num_parameters()
    assert sum(r[3] for r in rows) == _total(text, "Total params")
    assert _total(text, "Total params") == (_total(text, "Trainable params")
                                            + _total(text, "Non-trainable params"))


def test_summary_of_nested_module_shapes_and_frozen_tensors():
    model = _Block()
    text = model.summary((4, 5), quiet=True)  # the method form
    rows = {r[0]: r for r in _rows(text)}
    assert rows["(model)"][2:] == ("(4, 3)", 6)  # own tensors: scale (3) + offset (3)
    assert rows["body.0"][2:] == ("(4, 7)", 5 * 7 + 7)
    assert rows["body.2"][2:] == ("(4, 3)", 7 * 3)  # no bias
    assert rows["unused"][2:] == ("(not called)", 2 * 2 + 2)
    assert _total(text, "Non-trainable params") == 3
    assert "input (4, 5)" in text


def test_summary_leaves_the_model_as_it_was():
    model = _quiz_net()
    x = np.random.RandomState(0).uniform(-1, 1, (3, 39)).astype(np.float32)
    before = model(x).data.copy()
    nn.summary(model, (None, 39), quiet=True)
    assert all("forward" not in vars(m) for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    np.testing.assert_array_equal(model(x).data, before)


@pytest.mark.parametrize("bad", [39, (), (None, 0), (None, "39"), (None, None), (2.5, 39)])
def test_summary_rejects_a_bad_input_shape(bad):
    with pytest.raises(ValueError, match="summary: input_shape"):
        nn.summary(_quiz_net(), bad, quiet=True)


def test_summary_reports_a_shape_that_does_not_fit_the_model():
    with pytest.raises(ValueError, match="matmul|dense|shape"):
        nn.summary(_quiz_net(), (None, 40), quiet=True)
    assert all("forward" not in vars(m) for m in _quiz_net().modules())


# ----------------------------------------------------------------------------- vanishing


def _check_vanishing_claim(X, y):
    results = vanishing.measure(X, y, depths=(2, 4, 8), activations=("sigmoid", "relu"))
    ratio = {key: norms[-1] / norms[0] for key, (_, norms) in results.items()}
    assert results[(8, "sigmoid")][0] == 0.1 and results[(8, "relu")][0] == "he"
    assert ratio[(8, "sigmoid")] >= 100, ratio
    assert ratio[(8, "relu")] < 100, ratio
    # and it gets worse as sigmoid layers are added
    assert ratio[(2, "sigmoid")] < ratio[(4, "sigmoid")] < ratio[(8, "sigmoid")], ratio
    # the first layer's gradient of the 8-layer sigmoid net is still a number, not 0
    assert results[(8, "sigmoid")][1][0] > 0


def test_vanishing_gradients_on_the_synthetic_batch():
    X, y, described = vanishing.load_rows("synthetic", 100)
    assert described.startswith("SYNTHETIC")
    _check_vanishing_claim(X, y)


def test_vanishing_gradients_on_mnist():
    root = _mnist_root()
    X, y, described = vanishing.load_rows("mnist", 100, root=os.path.join(root, "mnist"))
    assert described.startswith("MNIST")
    assert X.shape == (100, 784) and X.dtype == np.float64
    _check_vanishing_claim(X, y)


def _check_vanishing_in_training(X, y):
    for act, vanishes in (("sigmoid", True), ("relu", False)):
        model, history = vanishing.train_diagnostics(X, y, 8, act, epochs=2)
        grads = vanishing.layer_series(model, history)
        assert len(grads) == 9 and all(len(g) == 2 for g in grads)
        for epoch in range(2):
            ratio = grads[-1][epoch] / grads[0][epoch]
            assert (ratio >= 100) == vanishes, (act, epoch, ratio)
        acts = vanishing.activation_series(model, history)
        assert len(acts) == 8 and {key for _, key, _ in acts} == {
            "saturated" if act == "sigmoid" else "dead"}
        assert all(0.0 <= v <= 1.0 for _, _, values in acts for v in values)


def test_vanishing_gradients_in_training_diagnostics_on_the_synthetic_batch():
    X, y, _ = vanishing.load_rows("synthetic", 200)
    _check_vanishing_in_training(X, y)


def test_vanishing_gradients_in_training_diagnostics_on_mnist():
    root = _mnist_root()
    X, y, _ = vanishing.load_rows("mnist", 200, root=os.path.join(root, "mnist"))
    _check_vanishing_in_training(X, y)


def test_gradient_norms_are_the_norms_of_the_weight_gradients():
    X, y, _ = vanishing.load_rows("synthetic", 10)
    model = vanishing.build_mlp(2, "tanh", dtype=np.float64)
    norms = vanishing.gradient_norms(model, X, y)
    weights = nn.dense_weights(model)
    assert len(norms) == 3
    np.testing.assert_allclose(norms, [np.sqrt(np.sum(w.grad ** 2)) for w in weights])


# ----------------------------------------------------------------------------- convergence


def test_per_epoch_online_beats_mini_batch_beats_full_batch():
    X, y, X_test, y_test, _ = convergence.load_data("synthetic", 500, 100)
    runs = convergence.compare(X, y, budget=1e9, max_epochs=1, batch=50,
                               X_test=X_test, y_test=y_test)
    full, mini, online = runs
    assert [r.steps for r in runs] == [1, 10, 500]
    assert all(r.epochs[-1] == 1.0 for r in runs)
    assert all(r.cost[0] == full.cost[0] for r in runs)  # the same initial weights
    assert online.cost[-1] < mini.cost[-1] < full.cost[-1] < full.cost[0]
    assert online.test_acc > 0.5


def test_learning_rates_are_on_the_summed_cost():
    run = convergence.Run("mini", 100, convergence.LR_MINI)
    assert run.eta == pytest.approx(100 * convergence.LR_MINI)


# ----------------------------------------------------------------------------- forward vs reverse


def test_forward_mode_gradient_equals_reverse_mode_and_finite_differences():
    loss_fn, params = fwd_rev.make_problem(3, inputs=4, outputs=2, rows=5)
    g_rev = fwd_rev.reverse_gradient(loss_fn, params)
    g_fwd = fwd_rev.forward_gradient(loss_fn, params)
    leaves = [Tensor(p.copy(), requires_grad=True) for p in params]
    g_num = np.concatenate([g.ravel() for g in numerical_gradient(loss_fn, *leaves)])
    assert g_rev.shape == (4 * 3 + 3 + 3 * 2 + 2,)
    np.testing.assert_allclose(g_fwd, g_rev, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_num, g_rev, rtol=1e-5, atol=1e-7)


def test_measure_reports_agreement_for_each_size():
    results = fwd_rev.measure((1, 2, 5), repeat=1, inputs=6, outputs=3, rows=4)
    assert [r["params"] for r in results] == [6 * h + h + h * 3 + 3 for h in (1, 2, 5)]
    assert all(r["agree"] and r["rel_diff"] < 1e-10 for r in results)


# ----------------------------------------------------------------------------- programs


def test_vanishing_gradients_program_falls_back_to_synthetic_data(tmp_path, monkeypatch,
                                                                  capsys):
    out = tmp_path / "vg.png"
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("TINYGRAD_MLP_DATA", str(empty))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/tinygrad_mlp/mnist either
    vanishing.main(["--depths", "2", "8", "--rows", "20", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert "data: SYNTHETIC" in stdout and "MNIST unavailable" in stdout
    assert re.search(r"^\s+8\s+sigmoid\s+0\.1\s", stdout, re.M)
    assert re.search(r"^\s+8\s+relu\s+he\s", stdout, re.M)
    _assert_png(out)


def test_convergence_program_runs_and_plots(tmp_path, capsys):
    out = tmp_path / "conv.png"
    convergence.main(["--data", "synthetic", "--rows", "200", "--test-rows", "50", "--budget",
                      "0.3", "--batch", "20", "--out", str(out)])
    stdout = capsys.readouterr().out
    for method in ("full batch", "mini-batch (20)", "online (1)"):
        assert re.search(rf"^{re.escape(method)}\s+\d", stdout, re.M), stdout
    _assert_png(out)


def test_forward_vs_reverse_program_runs_and_plots(tmp_path):
    """As a separate program (python examples/forward_vs_reverse.py ...), like the others
    would run: the in-process tests above call their main(argv)."""
    out = tmp_path / "fr.png"
    stdout = _run("forward_vs_reverse.py", "--hidden", "1", "2", "4", "--repeat", "1",
                  "--inputs", "5", "--rows", "4", "--no-lecture-net", "--out",
                  str(out))
    table = [line for line in stdout.splitlines() if re.match(r"^\s+\d+\s+[\d,]+\s", line)]
    assert len(table) == 3 and all(line.rstrip().endswith("yes") for line in table), stdout
    _assert_png(out)


def test_lecture_network_estimate_counts_its_parameters():
    P, t_rev, t_jvp = fwd_rev.lecture_estimate(repeat=2, rows=10)
    assert P == 784 * 100 + 100 + 100 * 10 + 10 == 79510
    assert t_rev > 0 and t_jvp > 0
