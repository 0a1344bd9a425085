"""The allocator tuning is opt-in: importing the package leaves the process's malloc alone."""

import os
import subprocess
import sys

CODE = "import tinygrad_mlp, tinygrad_mlp._malloc as m; print(m.tuned)"


def run(env_value):
    env = dict(os.environ)
    env.pop("TINYGRAD_MLP_MALLOC_TUNE", None)
    if env_value is not None:
        env["TINYGRAD_MLP_MALLOC_TUNE"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_import_does_not_tune_malloc_unless_asked():
    assert run(None) == "False"
    assert run("0") == "False"
    if sys.platform.startswith("linux"):
        assert run("1") == "True"  # glibc: mallopt applied


def test_tune_malloc_is_idempotent():
    import tinygrad_mlp

    first = tinygrad_mlp.tune_malloc()
    assert tinygrad_mlp.tune_malloc() is first
