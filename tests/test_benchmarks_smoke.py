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
    assert targets[:2] == ["1a", "1b"]
    assert {"2", "3a", "3b", "4a", "4b", "5", "6"} <= set(targets)
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
