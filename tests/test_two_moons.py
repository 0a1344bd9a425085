"""examples/two_moons.py: trains offline in seconds, separates the moons, draws the boundary."""

import importlib.util
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "two_moons.py")


def _load():
    spec = importlib.util.spec_from_file_location("two_moons_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


moons = _load()


def test_make_moons_shapes_and_classes():
    X, y = moons.make_moons(101, noise=0.0, rng=np.random.RandomState(3))
    assert X.shape == (101, 2) and X.dtype == np.float32
    assert y.shape == (101,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [50, 51]
    # without noise every point lies on its arc: radius 1 around (0, 0) or (1, 0.5)
    r0 = np.hypot(X[y == 0, 0], X[y == 0, 1])
    r1 = np.hypot(X[y == 1, 0] - 1.0, X[y == 1, 1] - 0.5)
    np.testing.assert_allclose(r0, 1.0, atol=1e-6)
    np.testing.assert_allclose(r1, 1.0, atol=1e-6)
    assert (X[y == 0, 1] >= -1e-6).all() and (X[y == 1, 1] <= 0.5 + 1e-6).all()


def test_two_moons_runs_offline_and_draws_its_boundary(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, SCRIPT, "--n-samples", "500", "--epochs", "40",
                           "--out", str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    test_acc = float(re.search(r"^test accuracy: (\d+\.\d\d)%$", proc.stdout, re.M).group(1))
    train_acc = float(re.search(r"^train accuracy: (\d+\.\d\d)%$", proc.stdout, re.M).group(1))
    assert test_acc > 97.0 and train_acc > 97.0, proc.stdout
    seconds = float(re.search(r"epochs in (\S+) s", proc.stdout).group(1))
    assert seconds < 30

    path = tmp_path / "two_moons.png"
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (640, 480)
    plt_image = pytest.importorskip("matplotlib.image")
    pixels = plt_image.imread(str(path))[..., :3]
    # both region colours of the boundary plot are there, each over a sizeable area
    for rgb in ((0xF4, 0xC7, 0xC3), (0xC6, 0xDB, 0xEF)):
        share = np.mean(np.all(np.abs(pixels - np.array(rgb) / 255) < 0.02, axis=-1))
        assert share > 0.1, (rgb, share)
