"""The repository works on a machine that has nothing of ours beside the checkout.

- No file names a folder only this project's machines have (absolute paths, the data
  folder beside the clone).
- The main job finishes without Graphviz's `dot`, saying which pictures it skipped.
- A wheel builds, holds the package and nothing else (no tests, no data), and installs into
  a plain virtual environment (numpy fetched by pip, no system site-packages) where
  `import tinygrad_mlp` and the README's example run with NumPy alone (slow: it builds and
  installs; run with -m slow).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", "__pycache__", "runs", "build", "dist", ".pytest_cache", ".ruff_cache",
             ".hypothesis", ".ipynb_checkpoints"}

# Written in pieces so that this file does not match itself.
MACHINE_PATHS = re.compile("|".join([
    r"/" + r"work/", r"shared" + r"/data", r"/" + r"home/", r"/" + r"root/",
    r"/" + r"Users/", r"(?<![\w.])/" + r"tmp/", r"[A-Z]:\\" + r"\\?Users",
]))


def _repository_files():
    """The files of the repository: git's list (tracked and new, not ignored) when this is a
    git checkout, else every file below the root except caches and build output."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    except OSError:
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return [ROOT / line for line in out.stdout.splitlines() if (ROOT / line).is_file()]
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found += [Path(folder) / name for name in files if name != ".git"]
    return found


def _text_files():
    for path in _repository_files():
        if path.suffix in {".png", ".npz", ".gz", ".pyc", ".whl", ".onnx"}:
            continue
        try:
            yield path, path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


# CI's own script describes CI's machine (the project's shared folder beside the clone); it is
# not something a user follows, so it may name that folder.
CI_ONLY = {".ci/run"}


def test_no_machine_specific_paths_in_the_repository():
    hits = []
    for path, text in _text_files():
        if path.relative_to(ROOT).as_posix() in CI_ONLY:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATHS.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "machine-specific paths:\n" + "\n".join(hits)


def test_the_path_check_catches_a_machine_path():
    assert MACHINE_PATHS.search("TINYGRAD_MLP_DATA=../sha" + "red/data python x.py")
    assert MACHINE_PATHS.search("see /" + "work/main/README.md")
    assert not MACHINE_PATHS.search("python examples/mnist.py --data DIR")


def _readme_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_gives_the_two_setup_commands_without_local_folders():
    commands = _readme_commands()
    assert 'pip install -e ".[dev,oracle]" && python -m pytest' in commands
    main = [c for c in commands if "examples/mnist.py" in c]
    assert len(main) == 1 and "TINYGRAD_MLP_DATA" not in main[0], main
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "apt-get install graphviz chromium chromium-driver" in text


def test_import_needs_numpy_only():
    """The optional parts are imported by the functions that need them, not by the package."""
    code = ("import sys, tinygrad_mlp\n"
            "heavy = ['sklearn', 'scipy', 'onnx', 'onnxruntime', 'matplotlib', 'graphviz', "
            "'torch', 'pandas', 'tqdm']\n"
            "print([m for m in heavy if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def _python_without_dot(tmp_path):
    """A PATH that has this Python but no `dot` (nor anything else)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    return str(bin_dir)


def write_fake_mnist(folder, n_train=600, n_test=200, seed=0):
    """The four MNIST IDX files of noisy class templates (28x28 uint8), in `folder`."""
    import numpy as np

    from tinygrad_mlp import data

    rng = np.random.RandomState(seed)
    templates = (rng.uniform(size=(10, 28, 28)) < 0.2) * 255.0
    os.makedirs(folder, exist_ok=True)
    for kind, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = templates[labels] * rng.uniform(0.6, 1.0, (n, 1, 1))
        images += rng.uniform(0, 60, images.shape)
        data.write_idx(os.path.join(folder, f"{kind}-images-idx3-ubyte"),
                       np.clip(images, 0, 255).astype(np.uint8))
        data.write_idx(os.path.join(folder, f"{kind}-labels-idx1-ubyte"),
                       labels.astype(np.uint8))
    return folder


def test_main_job_finishes_without_dot_and_names_the_skipped_pictures(tmp_path):
    data = write_fake_mnist(str(tmp_path / "mnist"))
    env = dict(os.environ, PATH=_python_without_dot(tmp_path), MPLBACKEND="Agg")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mnist.py"), "--data", data,
         "--no-download", "--epochs", "1", "--train-rows", "200", "--no-progress",
         "--out", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "skipping the graph drawing (the pictures graph.svg and graph.png)" in proc.stdout
    assert "`dot`" in proc.stdout and "apt-get install graphviz" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    written = sorted(os.listdir(out))
    assert "graph.svg" not in written and "graph.png" not in written
    assert "model.npz" in written and "cost.png" in written
    assert proc.stdout.splitlines()[-1].startswith("test accuracy: ")


# ----------------------------------------------------------------------------- the wheel


def _build_wheel(dest):
    """`python -m build --wheel` on a copy of the checkout (the build leaves build/ and
    *.egg-info beside the sources; not in the repository)."""
    import shutil

    src = Path(dest) / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "runs", "build", "dist", "*.egg-info", ".pytest_cache"))
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                           "--outdir", str(dest), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(Path(dest).glob("tinygrad_mlp-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _readme_example():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_wheel_holds_the_package_only(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"tinygrad_mlp", next(t for t in top if t.endswith(".dist-info"))}, top
    sources = sorted(f"tinygrad_mlp/{p.name}" for p in (ROOT / "tinygrad_mlp").glob("*.py"))
    assert sorted(n for n in names if n.startswith("tinygrad_mlp/")) == sources
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))
                or n.endswith((".gz", ".npz", ".onnx", ".ipynb"))
                or "-ubyte" in n], names
    meta = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    hard = [r for r in requires if "extra ==" not in r]
    assert hard == ["Requires-Dist: numpy>=1.22"], hard


@pytest.mark.slow
def test_wheel_installs_into_a_clean_venv_and_runs_with_numpy_alone(tmp_path):
    wheel = _build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True,
                            text=True, env=env, check=True).stdout.lower()
    packages = sorted(line.split("==")[0].split(" @ ")[0] for line in freeze.splitlines())
    assert packages == ["numpy", "tinygrad-mlp"], packages
    script = ("import tinygrad_mlp, sys\n"
              "assert 'site-packages' in tinygrad_mlp.__file__, tinygrad_mlp.__file__\n"
              + _readme_example())
    run = subprocess.run([str(py), "-c", script], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    loss, shape = run.stdout.split(maxsplit=1)
    assert float(loss) > 0 and shape.strip() == "(3, 4)"
