#!/usr/bin/env python3
"""Vanishing gradients, measured: per-layer gradient norms of freshly initialised deep MLPs.

For depth L in (2, 4, 8) hidden layers of 100 units and each activation (sigmoid, tanh,
ReLU) the network is 784 -> 100 -> ... -> 100 -> 10, a sigmoid output and the lecture's
summed logistic cost. One forward and one backward on one batch of MNIST; for every Dense
layer l the Frobenius norm ||dC/dW_l|| is reported, layer 1 (next to the input) to L+1 (the
output layer).

Initialisation (normal, zero-mean, biases zero):
  sigmoid, tanh  std 0.1, the lecture's init_std (for the 100x100 layers this is also
                 Xavier's sqrt(2 / (100 + 100)) = 0.1; --init xavier uses Xavier everywhere)
  relu           He: std sqrt(2 / fan_in)

Backpropagation multiplies the error by W_l^T and by the activation's derivative once per
layer. The sigmoid's derivative is at most 1/4, so with ||W_l^T|| near 1 the error shrinks
by about 4x per layer and the first layer's gradient is orders of magnitude smaller than
the last's; tanh' <= 1 shrinks it less, and ReLU with He init keeps its size.

Data: --data auto (default) uses MNIST when tinygrad_mlp.data.load_mnist finds the files
($TINYGRAD_MLP_DATA/mnist, or --root DIR) without downloading, else a synthetic MNIST-like
batch, and says which it used; --data mnist (may download) or --data synthetic forces one.

  TINYGRAD_MLP_DATA=DIR python examples/vanishing_gradients.py \\
      --out docs/img/vanishing_gradients.png

--diagnostics PNG also trains the 8-hidden-layer sigmoid net and the ReLU one for a few
epochs with fit(diagnostics=True) (the lecture's cost and plain SGD, 1,000 rows) and plots,
per epoch, each layer's mean gradient norm and each activation's saturated (sigmoid) or
dead (ReLU) fraction: the same vanishing, seen during training.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

try:
    import tinygrad_mlp  # noqa: F401
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_mlp  # noqa: F401

from tinygrad_mlp import nn, optim, train

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
#: The init of each activation's Dense layers (Dense's init_std), unless --init says otherwise.
DEFAULT_INIT = {"sigmoid": 0.1, "tanh": 0.1, "relu": "he"}


# ----------------------------------------------------------------------------- data


def synthetic_digits(n, seed=0, dtype=np.float64):
    """An MNIST-like stand-in: (n, 784) in [-1, 1], labels (n,) in 0..9.

    Ten fixed random stroke templates (about 20% of pixels on, the rest -1 like MNIST's
    background), each image its class template with pixel noise.
    """
    rng = np.random.RandomState(1234)  # the same ten templates for every seed
    templates = np.where(rng.uniform(size=(10, 784)) < 0.2, 1.0, -1.0)
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 10, n).astype(np.int64)
    X = np.clip(templates[y] + rng.normal(0.0, 0.5, (n, 784)), -1.0, 1.0)
    return X.astype(dtype), y


def load_rows(source="auto", rows=100, *, kind="train", root=None, seed=0, dtype=np.float64):
    """(X, y, description): the first `rows` images of MNIST `kind`, or synthetic ones.

    source 'auto': MNIST if its files are found (no download), else synthetic;
    'mnist': MNIST (downloads when missing); 'synthetic': synthetic_digits.
    """
    if source not in ("auto", "mnist", "synthetic"):
        raise ValueError(f"data source must be auto, mnist or synthetic, got {source!r}")
    reason = "--data synthetic"
    if source != "synthetic":
        try:
            from tinygrad_mlp import data

            X, y = data.load_mnist(root=root, kind=kind, download=(source == "mnist"),
                                   dtype=dtype)
            return X[:rows], y[:rows], f"MNIST {kind}, first {min(rows, len(y))} rows"
        except (ImportError, FileNotFoundError, OSError) as e:
            if source == "mnist":
                raise
            reason = f"MNIST unavailable: {type(e).__name__}: {str(e)[:120]}"
    X, y = synthetic_digits(rows, seed=seed + (0 if kind == "train" else 1), dtype=dtype)
    return X, y, f"SYNTHETIC MNIST-like data, {rows} rows ({reason})"


# ----------------------------------------------------------------------------- measurement


def build_mlp(depth, activation, *, init=None, seed=0, dtype=np.float64, width=100,
              n_in=784, n_out=10):
    """784 -> width (x depth hidden layers, `activation`) -> 10 -> sigmoid.

    init: Dense's init_std for every layer (default DEFAULT_INIT[activation]); the weights
    come from one RandomState(seed), layer by layer.
    """
    if init is None:
        init = DEFAULT_INIT[activation]
    rng = np.random.RandomState(seed)
    sizes = [n_in] + [width] * depth
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Dense(fan_in, fan_out, init_std=init, rng=rng, dtype=dtype),
                   ACTIVATIONS[activation]()]
    layers += [nn.Dense(width, n_out, init_std=init, rng=rng, dtype=dtype), nn.Sigmoid()]
    return nn.Sequential(*layers)


def gradient_norms(model, X, y):
    """||dC/dW|| (Frobenius) of every Dense weight after one backward of the summed
    logistic cost C on (X, y), first layer first."""
    model.zero_grad()
    cost = nn.BinaryCrossEntropy(reduction="sum")(model(X), y)
    cost.backward()
    return [float(np.linalg.norm(w.grad)) for w in nn.dense_weights(model)]


def measure(X, y, depths=(2, 4, 8), activations=("sigmoid", "tanh", "relu"), *, init=None,
            seed=0):
    """{(depth, activation): (init, [norm of layer 1, ..., norm of layer depth + 1])}."""
    results = {}
    for depth in depths:
        for act in activations:
            chosen = DEFAULT_INIT[act] if init is None else init
            model = build_mlp(depth, act, init=chosen, seed=seed, dtype=X.dtype)
            results[(depth, act)] = (chosen, gradient_norms(model, X, y))
    return results


def format_table(results):
    """One row per network: the norms of layers 1..L+1 and last/first."""
    n_cols = max(len(norms) for _, norms in results.values())
    head = (f"{'hidden':>6}  {'activation':<10}  {'init':<6}  "
            + "  ".join(f"{'W' + str(i + 1):>8}" for i in range(n_cols))
            + f"  {'last/first':>10}")
    lines = [head, "-" * len(head)]
    for (depth, act), (init, norms) in results.items():
        cells = [f"{v:8.1e}" for v in norms] + [" " * 8] * (n_cols - len(norms))
        lines.append(f"{depth:>6}  {act:<10}  {str(init):<6}  " + "  ".join(cells)
                     + f"  {norms[-1] / norms[0]:>10.3g}")
    return "\n".join(lines)


def _save(plt, fig, path, title):
    """Title the figure, write it as a PNG to `path` (creating its folder), close it."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(results, path, title=""):
    """One panel per depth, layer index vs gradient norm (log scale), a line per activation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({d for d, _ in results})
    acts = list(dict.fromkeys(a for _, a in results))
    fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 3.8), sharey=True,
                             squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for act in acts:
            if (depth, act) not in results:
                continue
            init, norms = results[(depth, act)]
            ax.semilogy(range(1, len(norms) + 1), norms, marker="o",
                        label=f"{act} (init {init})")
        ax.set_title(f"{depth} hidden layers")
        ax.set_xlabel("layer (1 = next to the input, last = output)")
        ax.set_xticks(range(1, depth + 2))
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("||dC/dW|| after one backward")
    axes[0][0].legend(fontsize=8)
    _save(plt, fig, path, title)


# ----------------------------------------------------------------------------- in training


def train_diagnostics(X, y, depth=8, activation="sigmoid", *, epochs=4, batch_size=100,
                      lr=0.0005, seed=0):
    """fit(diagnostics=True) of build_mlp(depth, activation) on (X, y) with the lecture's
    summed logistic cost and plain SGD; returns (model, History)."""
    model = build_mlp(depth, activation, seed=seed, dtype=X.dtype)
    history = train.fit(model, nn.BinaryCrossEntropy(reduction="sum"),
                        optim.SGD(model.parameters(), lr=lr), X, y, epochs=epochs,
                        batch_size=batch_size, seed=seed, progress=False, diagnostics=True)
    return model, history


def layer_series(model, history, key="grad_norm"):
    """[per-epoch values of `key`] for each Dense weight, first layer first."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [history.diagnostics[names[id(w)]][key] for w in nn.dense_weights(model)]


def activation_series(model, history):
    """(module name, 'saturated' or 'dead', per-epoch values) per hidden activation (the
    output sigmoid left out)."""
    out = []
    for name, mod in list(model.named_modules())[:-1]:
        stats = history.diagnostics.get(name)
        if stats and isinstance(mod, tuple(ACTIVATIONS.values())):
            (key, values), = stats.items()
            out.append((name, key, values))
    return out


def format_diagnostics(runs):
    lines = []
    for label, (model, history) in runs.items():
        grads = layer_series(model, history)
        last_epoch = [g[-1] for g in grads]
        lines.append(f"{label}: mean gradient norm per layer in the last epoch "
                     f"(layer 1 first): " + " ".join(f"{v:.1e}" for v in last_epoch)
                     + f"; last/first {last_epoch[-1] / last_epoch[0]:.3g}")
        acts = activation_series(model, history)
        lines.append(f"{label}: " + acts[0][1] + " fraction per activation in the last "
                     "epoch: " + " ".join(f"{v[-1]:.2f}" for _, _, v in acts))
    return "\n".join(lines)


def plot_diagnostics(runs, path, title=""):
    """Per run a row: gradient norm per layer (one line per epoch), and the saturated /
    dead fraction per activation layer (one line per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 3.6 * len(runs)), squeeze=False)
    for row, (label, (model, history)) in zip(axes, runs.items()):
        grads = np.array(layer_series(model, history))  # (layers, epochs)
        acts = activation_series(model, history)
        for epoch in range(grads.shape[1]):
            shade = str(0.7 - 0.7 * epoch / max(1, grads.shape[1] - 1))
            row[0].semilogy(range(1, grads.shape[0] + 1), grads[:, epoch], marker="o",
                            color=shade, label=f"epoch {epoch + 1}")
            row[1].plot(range(1, len(acts) + 1), [v[epoch] for _, _, v in acts],
                        marker="o", color=shade, label=f"epoch {epoch + 1}")
        row[0].set_title(f"{label}: mean ||dC/dW|| over each epoch's steps", fontsize=9)
        row[0].set_xlabel("layer (1 = next to the input, last = output)")
        row[0].set_xticks(range(1, grads.shape[0] + 1))
        row[0].grid(True, which="both", alpha=0.3)
        row[0].legend(fontsize=7)
        key = acts[0][1] if acts else "saturated"
        row[1].set_title(f"{label}: {key} fraction per activation layer", fontsize=9)
        row[1].set_xlabel("hidden activation (1 = next to the input)")
        row[1].set_xticks(range(1, len(acts) + 1))
        row[1].set_ylim(-0.02, 1.02)
        row[1].grid(True, alpha=0.3)
    _save(plt, fig, path, title)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("auto", "mnist", "synthetic"), default="auto",
                   help="auto: MNIST when found, else synthetic (default)")
    p.add_argument("--root", metavar="DIR", help="folder with the MNIST files (else "
                   "$TINYGRAD_MLP_DATA/mnist, ~/.cache/tinygrad_mlp/mnist)")
    p.add_argument("--rows", type=int, default=100, help="batch size (default 100)")
    p.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--activations", nargs="+", choices=sorted(ACTIVATIONS),
                   default=["sigmoid", "tanh", "relu"])
    p.add_argument("--init", default=None, help="one init for every net: a number, 'he' or "
                   "'xavier' (default: 0.1 for sigmoid and tanh, 'he' for relu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="vanishing_gradients.png", help="the plot (PNG)")
    p.add_argument("--diagnostics", metavar="PNG", help="also train the 8-layer sigmoid and "
                   "ReLU nets with fit(diagnostics=True) and plot the diagnostics here")
    p.add_argument("--train-rows", type=int, default=1000, help="rows for --diagnostics "
                   "(default 1000)")
    p.add_argument("--epochs", type=int, default=4, help="epochs for --diagnostics")
    args = p.parse_args(argv)
    init = args.init
    if init is not None and init not in ("he", "xavier", "glorot"):
        init = float(init)

    X, y, described = load_rows(args.data, args.rows, root=args.root, seed=args.seed)
    print(f"data: {described}")
    print(f"network: 784 -> 100 x L -> 10 -> sigmoid, summed logistic cost, float64, "
          f"seed {args.seed}")
    results = measure(X, y, args.depths, args.activations, init=init, seed=args.seed)
    print(format_table(results))
    plot(results, args.out, title=f"gradient norms per layer after one backward; {described}")
    print(f"plot: {args.out}")
    if args.diagnostics:
        Xt, yt, described = load_rows(args.data, args.train_rows, root=args.root,
                                      seed=args.seed)
        runs = {f"8 x {act}": train_diagnostics(Xt, yt, 8, act, epochs=args.epochs,
                                                seed=args.seed)
                for act in ("sigmoid", "relu")}
        print(f"training diagnostics ({described}, {args.epochs} epochs, SGD lr 0.0005, "
              f"batch 100):")
        print(format_diagnostics(runs))
        plot_diagnostics(runs, args.diagnostics, title=f"fit(diagnostics=True); {described}")
        print(f"plot: {args.diagnostics}")
    return results


if __name__ == "__main__":
    main()
