#!/usr/bin/env python3
"""Autodiff against the lecture's hand-derived backpropagation, one batch, side by side.

The lecture's network is built twice with the same weights:
  * from the library's modules, Sequential(Dense(784, 100), Sigmoid(), Dense(100, 10),
    Sigmoid()) with BinaryCrossEntropy(reduction="sum") + l2_penalty, whose gradients come
    from reverse-mode autodiff;
  * as tinygrad_mlp.reference.NeuralNetMLP, whose gradients are the delta formulas
    (delta_out = a_out - y, delta_h = delta_out W_out^T * a_h (1 - a_h), ...).
Both draw their weights from a RandomState(seed): w_h first, then w_out.

Table 1: tinygrad_mlp.testing.compare_gradients of the delta formulas against autodiff,
without and with L2 (hand side: gradient + l2 * W for the weights): for each parameter the
largest absolute and relative difference and the diagnosis ("match").
Table 2: the lecture prints its cost with l2 * sum(W^2) but updates with l2 * W. Autodiff of
that printed cost gives 2 * l2 * W for the penalty part: checked against the cost with
l2/2 * sum(W^2) (the library's l2_penalty), compare_gradients diagnoses it "l2-doubled".

Also draws one training step's graph (forward, cost, L2 penalty, backward) as graph.svg and
graph.png in --out (needs graphviz and the `dot` program), and writes the numbers to
compare_gradients.json there.

Data: the first --batch-size rows of the MNIST training set, found in --data DIR (the folder
with the IDX files or its parent), else $TINYGRAD_MLP_DATA/mnist, else
~/.cache/tinygrad_mlp/mnist (downloaded there only with --download). Without the files (or
with --synthetic) a random batch of the same shapes is used, and the output says so.

  TINYGRAD_MLP_DATA=DIR python examples/compare_gradients.py
  python examples/compare_gradients.py --synthetic --batch-size 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

try:
    import tinygrad_mlp
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_mlp

from tinygrad_mlp import Tensor, nn
from tinygrad_mlp._files import atomic_write  # temp file + fsync + rename
from tinygrad_mlp.reference import NeuralNetMLP, one_hot
from tinygrad_mlp.testing import compare_gradients

N_FEATURES, N_HIDDEN, N_CLASSES = 784, 100, 10

#: (library name, reference name) of each parameter, in the model's order
PAIRS = [("0.weight", "w_h"), ("0.bias", "b_h"), ("2.weight", "w_out"), ("2.bias", "b_out")]


def load_batch(batch_size, data=None, download=False, synthetic=False, seed=0):
    """(X (batch, 784) float64 in [-1, 1], y (batch,) int64, description)."""
    why = "--synthetic"
    if not synthetic:
        try:
            from tinygrad_mlp import data as data_mod

            X, y = data_mod.load_mnist(root=data, kind="train", download=download,
                                       dtype=np.float64)
            return X[:batch_size], y[:batch_size], f"MNIST, the first {batch_size} " \
                                                   f"training images"
        except (ImportError, OSError, ValueError, RuntimeError) as e:
            why = f"MNIST not available ({type(e).__name__}: {e})"
    rng = np.random.RandomState(seed + 12345)
    X = rng.uniform(-1.0, 1.0, (batch_size, N_FEATURES))
    y = rng.randint(0, N_CLASSES, batch_size)
    return X, y, (f"SYNTHETIC: {batch_size} random rows uniform in [-1, 1] with random labels "
                  f"({why}; pass --data DIR or set TINYGRAD_MLP_DATA for real digits)")


def build_pair(seed, l2):
    """The library model and the reference, with identical weights."""
    rng = np.random.RandomState(seed)
    model = nn.Sequential(
        nn.Dense(N_FEATURES, N_HIDDEN, rng=rng, dtype=np.float64), nn.Sigmoid(),
        nn.Dense(N_HIDDEN, N_CLASSES, rng=rng, dtype=np.float64), nn.Sigmoid())
    ref = NeuralNetMLP(n_hidden=N_HIDDEN, l2=l2, seed=seed).initialize(N_FEATURES, N_CLASSES)
    params = dict(model.named_parameters())
    for lib_name, ref_name in PAIRS:
        if not np.array_equal(params[lib_name].data, getattr(ref, ref_name)):
            raise AssertionError(f"{lib_name} and {ref_name} were drawn differently")
    return model, ref


def autodiff_gradients(model, X, y, penalty=None):
    """(cost, {name: gradient}) of BinaryCrossEntropy(sum)(model(X), y) + penalty(model)."""
    model.zero_grad()
    cost = nn.BinaryCrossEntropy(reduction="sum")(model(Tensor(X, name="X")), y)
    if penalty is not None:
        cost = cost + penalty(model)
    cost.backward()
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}
    model.zero_grad()
    return float(cost.data), grads


def hand_gradients(ref, X, Y, l2):
    """The delta-rule gradients, + l2 * W on the weights (the lecture's update direction),
    under the lecture's names w_h, b_h, w_out, b_out."""
    g = ref.gradients(X, Y)
    return {r: g[r] + (l2 * getattr(ref, r) if r.startswith("w") else 0.0) for _, r in PAIRS}


def finite_difference_check(ref, X, Y, hand, entries=4, eps=1e-5, seed=0):
    """Central differences of ref.cost (l2/2 form) at a few random entries of each parameter
    against the hand gradients `hand` (which include + l2 * W): (max abs, max rel) diff."""
    rng = np.random.RandomState(seed)
    worst_abs = worst_rel = 0.0
    for _, ref_name in PAIRS:
        p = getattr(ref, ref_name)
        for _ in range(entries):
            i = tuple(rng.randint(0, n) for n in p.shape)
            orig = p[i]
            p[i] = orig + eps
            plus = ref.cost(X, Y)
            p[i] = orig - eps
            minus = ref.cost(X, Y)
            p[i] = orig
            numeric, exact = (plus - minus) / (2 * eps), hand[ref_name][i]
            worst_abs = max(worst_abs, abs(numeric - exact))
            worst_rel = max(worst_rel, abs(numeric - exact) / max(abs(exact), 1e-8))
    return {"entries_per_parameter": entries, "eps": eps, "max_abs": worst_abs,
            "max_rel": worst_rel}


def lecture_penalty(l2):
    """The lecture's printed penalty, l2 * sum(W^2), written with plain tensor ops."""
    def penalty(model):
        weights = nn.dense_weights(model)
        total = (weights[0] * weights[0]).sum()
        for w in weights[1:]:
            total = total + (w * w).sum()
        return l2 * total
    return penalty


def draw_graph(model, X, y, l2, out):
    """One training step's graph (forward, cost, L2 penalty, backward), grouped by module."""
    from tinygrad_mlp import viz

    model.zero_grad()
    cost = nn.BinaryCrossEntropy(reduction="sum")(model(Tensor(X, name="X")), y)
    if l2:
        cost = cost + nn.l2_penalty(model, l2)
    cost.name = "cost"
    cost.backward()
    try:
        return [viz.save(cost, os.path.join(out, f"graph.{fmt}"), group=model, rankdir="TB")
                for fmt in ("svg", "png")]
    finally:
        model.zero_grad()


def compare(X, y, seed=1, l2=0.01):
    """(model, the numbers of both tables as a dict, the reports of Table 1 and 2)."""
    model, ref = build_pair(seed, l2)
    Y = one_hot(y, N_CLASSES)
    bce = nn.BinaryCrossEntropy(reduction="sum")
    names = {ref_name: lib_name for lib_name, ref_name in PAIRS}
    result = {"l2": l2, "seed": seed, "batch_size": int(X.shape[0]), "table": [],
              "lecture_l2": []}
    reports = []
    for lam in (0.0, l2):
        # hand: the delta formulas (+ lam W); autodiff: bce(model(X), Y) + l2_penalty(lam)
        report = compare_gradients(hand_gradients(ref, X, Y, lam), model, bce, X, Y, l2=lam,
                                   names=names)
        reports.append(report)
        for row in report.rows:
            result["table"].append({"l2": lam, "library": row["name"],
                                    "reference": row["hand_name"], "shape": list(row["shape"]),
                                    "max_abs": row["max_abs"], "max_rel": row["max_rel"],
                                    "diagnosis": row["diagnosis"]})
    hand = hand_gradients(ref, X, Y, l2)
    ref.l2 = l2
    result["finite_differences"] = finite_difference_check(ref, X, Y, hand)
    result["cost_autodiff"] = autodiff_gradients(model, X, Y,
                                                 lambda m: nn.l2_penalty(m, l2))[0]
    result["cost_reference"] = ref.cost(X, Y)
    result["cost_lecture_form"] = ref.cost(X, Y, lecture_form=True)

    # The lecture's printed cost, differentiated: its penalty part is 2 * l2 * W. Given to
    # compare_gradients as if it were a hand derivation, it is diagnosed "l2-doubled".
    _, data_only = autodiff_gradients(model, X, Y)
    _, lecture = autodiff_gradients(model, X, Y, lecture_penalty(l2))
    printed = {ref_name: lecture[lib_name] for lib_name, ref_name in PAIRS}
    report = compare_gradients(printed, model, bce, X, Y, l2=l2, names=names)
    reports.append(report)
    result["lecture_l2_diagnosis"] = {row["hand_name"]: row["diagnosis"] for row in report.rows}
    for lib_name, ref_name in PAIRS[::2]:
        w = getattr(ref, ref_name)
        part = lecture[lib_name] - data_only[lib_name]          # the penalty's gradient
        big = np.abs(w) > 1e-3 * np.abs(w).max()                # ratios of tiny W are noise
        ratio = part[big] / (l2 * w[big])
        result["lecture_l2"].append({
            "library": lib_name, "reference": ref_name, "shape": list(w.shape),
            "max_abs_vs_update": report[ref_name]["max_abs"],
            "max_l2_w": float(np.abs(l2 * w).max()),
            "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max())})
    return model, result, reports


def format_tables(result, reports):
    """Both tables as text: the reports of compare_gradients, and what they mean."""
    lines = [f"Table 1. Autodiff vs the hand-derived delta formulas, batch of "
             f"{result['batch_size']}, float64 (tinygrad_mlp.testing.compare_gradients)",
             "Without L2:", str(reports[0]), "",
             f"With L2 (l2 = {result['l2']:g}; hand side: delta formulas + l2 * W):",
             str(reports[1]), "",
             "0 means bit-identical: autodiff runs the same floating-point operations as "
             "the delta formulas (dense backward x^T g, sigmoid backward g a (1 - a), "
             "fused sigmoid + logistic cost giving a - y)."]
    fd = result["finite_differences"]
    lines.append(f"Both agree with central differences of the cost (eps {fd['eps']:g}, "
                 f"{fd['entries_per_parameter']} random entries per parameter, l2 = "
                 f"{result['l2']:g}): max abs diff {fd['max_abs']:.3e}, max rel diff "
                 f"{fd['max_rel']:.3e}")
    lines.append(f"cost (l2 = {result['l2']:g}): autodiff {result['cost_autodiff']:.10f}, "
                 f"reference {result['cost_reference']:.10f}")
    lines.append("")
    lines.append(f"Table 2. The lecture's printed cost, logistic + l2 * sum(W^2) "
                 f"(l2 = {result['l2']:g}), differentiated by autodiff, checked as if it "
                 f"were a hand derivation of the cost with l2/2 * sum(W^2)")
    lines.append(str(reports[2]))
    for row in result["lecture_l2"]:
        lines.append(f"{row['reference']}: penalty gradient / (l2 W) from "
                     f"{row['ratio_min']:.6f} to {row['ratio_max']:.6f}; max |l2 W| "
                     f"{row['max_l2_w']:.3e}")
    lines.append("The penalty's gradient is 2 * l2 * W, so the difference equals l2 * W: the "
                 "lecture's update l2 * W is the gradient of l2/2 * sum(W^2), the form "
                 "nn.l2_penalty uses.")
    lines.append(f"cost with l2/2 * sum(W^2): {result['cost_reference']:.6f}; as the lecture "
                 f"prints it (l2 * sum(W^2)): {result['cost_lecture_form']:.6f}")
    return "\n".join(lines)


def write_json(path, obj):
    """Write JSON atomically (a temporary file, then a rename)."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1) + "\n"), binary=False)


def main(argv=None):
    p = argparse.ArgumentParser(prog="compare_gradients.py", description=__doc__.split("\n")[0])
    p.add_argument("--data", metavar="DIR", help="folder with the MNIST IDX files, or its "
                   "parent (default: $TINYGRAD_MLP_DATA/mnist, else ~/.cache/tinygrad_mlp/mnist)")
    p.add_argument("--download", action="store_true", help="download MNIST when missing")
    p.add_argument("--synthetic", action="store_true", help="use a random batch, not MNIST")
    p.add_argument("--batch-size", type=int, default=100, help="rows in the batch (100)")
    p.add_argument("--l2", type=float, default=0.01, help="L2 strength (the lecture's 0.01)")
    p.add_argument("--seed", type=int, default=1, help="RandomState seed of the weights (1)")
    p.add_argument("--out", default=os.path.join("runs", "compare_gradients"), metavar="DIR",
                   help="folder for graph.svg, graph.png and compare_gradients.json")
    p.add_argument("--no-graph", action="store_true", help="skip the graph drawing")
    args = p.parse_args(argv)
    if args.batch_size <= 0 or args.l2 <= 0:
        p.error("--batch-size and --l2 must be positive")

    X, y, source = load_batch(args.batch_size, args.data, args.download, args.synthetic)
    print(f"data: {source}")
    print(f"network: 784-100-10 sigmoid, weights from RandomState({args.seed}), identical in "
          f"the library model and NeuralNetMLP\n")
    model, result, reports = compare(X, y, seed=args.seed, l2=args.l2)
    result["data"] = source
    result["tinygrad_mlp"] = tinygrad_mlp.__version__
    print(format_tables(result, reports))

    os.makedirs(args.out, exist_ok=True)
    written = [os.path.join(args.out, "compare_gradients.json")]
    write_json(written[0], result)
    if not args.no_graph:
        try:
            written += draw_graph(model, X, one_hot(y, N_CLASSES), args.l2, args.out)
        except (ImportError, RuntimeError) as e:
            print(f"note: skipping the graph drawing: {e}")
    print("\nwrote " + ", ".join(written))
    if not (reports[0].ok and reports[1].ok):
        print("MISMATCH: autodiff and the delta formulas disagree (Table 1)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
