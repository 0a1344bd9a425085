#!/usr/bin/env python3
"""Quick start: a small MLP separates two interleaving half-moons, in a second or two.

No download and no network: the data is drawn here. The model is assembled from library
modules (Dense, Tanh, CrossEntropy, Adam, fit) and its decision boundary is drawn to
<out>/two_moons.png (needs matplotlib).

  python examples/two_moons.py                 # writes runs/two_moons/two_moons.png
  python examples/two_moons.py --noise 0.25 --hidden 32 --out runs/moons
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

try:
    import tinygrad_mlp  # noqa: F401
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinygrad_mlp import nn, optim, train


def make_moons(n, noise=0.1, rng=None):
    """n points (X of shape (n, 2), y of shape (n,) in {0, 1}) on two half circles:
    class 0 on the upper arc around (0, 0), class 1 on the lower arc around (1, 0.5),
    with Gaussian noise of std `noise` on both coordinates."""
    rng = np.random.RandomState(0) if rng is None else rng
    n0 = n // 2
    t = rng.uniform(0.0, np.pi, n)
    upper = np.stack([np.cos(t[:n0]), np.sin(t[:n0])], axis=1)
    lower = np.stack([1.0 - np.cos(t[n0:]), 0.5 - np.sin(t[n0:])], axis=1)
    X = np.concatenate([upper, lower]) + rng.normal(0.0, noise, (n, 2))
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n - n0, np.int64)])
    order = rng.permutation(n)
    return X[order].astype(np.float32), y[order]


def build_model(hidden=16, rng=None):
    """2-hidden-hidden-2 MLP with tanh hidden layers; outputs logits for CrossEntropy."""
    return nn.Sequential(
        nn.Dense(2, hidden, init_std="xavier", rng=rng), nn.Tanh(),
        nn.Dense(hidden, hidden, init_std="xavier", rng=rng), nn.Tanh(),
        nn.Dense(hidden, 2, init_std="xavier", rng=rng),
    )


def plot_boundary(model, X, y, path, title):
    """Filled contours of the predicted class over a grid, the points on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pad = 0.5
    xs = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, 300)
    ys = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, 300)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(X.dtype)
    zz = train.predict(model, grid).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    ax.contourf(gx, gy, zz, levels=[-0.5, 0.5, 1.5], colors=["#f4c7c3", "#c6dbef"])
    ax.contour(gx, gy, zz, levels=[0.5], colors="k", linewidths=1)
    for label, color, marker in ((0, "#d62728", "o"), (1, "#1f77b4", "s")):
        pts = X[y == label]
        ax.scatter(pts[:, 0], pts[:, 1], s=10, c=color, marker=marker, label=f"class {label}",
                   edgecolors="none")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="two_moons.py", description="Train a small MLP on two "
                                "half-moons (no download) and draw its decision boundary.")
    p.add_argument("--n-samples", type=int, default=1000, help="points (default 1000)")
    p.add_argument("--noise", type=float, default=0.1, help="noise std (default 0.1)")
    p.add_argument("--hidden", type=int, default=16, help="units per hidden layer")
    p.add_argument("--epochs", type=int, default=60, help="epochs (default 60)")
    p.add_argument("--lr", type=float, default=0.02, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("runs", "two_moons"), metavar="DIR")
    p.add_argument("--no-plot", action="store_true", help="skip the picture")
    args = p.parse_args(argv)
    if args.n_samples < 4 or args.hidden < 1 or args.epochs < 1 or args.batch_size < 1:
        p.error("--n-samples must be >= 4 and --hidden, --epochs, --batch-size >= 1")

    rng = np.random.RandomState(args.seed)
    X, y = make_moons(args.n_samples, args.noise, rng)
    n_test = args.n_samples // 5
    X_train, y_train, X_test, y_test = X[n_test:], y[n_test:], X[:n_test], y[:n_test]
    batch_size = min(args.batch_size, len(X_train))
    model = build_model(args.hidden, rng)
    t0 = time.perf_counter()
    train.fit(model, nn.CrossEntropy(), optim.Adam(model.parameters(), lr=args.lr),
              X_train, y_train, epochs=args.epochs, batch_size=batch_size, rng=rng,
              progress=False)
    seconds = time.perf_counter() - t0
    train_acc = train.accuracy(model, X_train, y_train)
    test_acc = train.accuracy(model, X_test, y_test)
    print(f"two moons: {len(X_train)} train / {len(X_test)} test points, noise {args.noise}, "
          f"2-{args.hidden}-{args.hidden}-2 tanh, Adam lr {args.lr}, {args.epochs} epochs "
          f"in {seconds:.2f} s")
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("note: matplotlib is not installed (pip install 'tinygrad-mlp[plot]'): "
                  "no picture")
        else:
            os.makedirs(args.out, exist_ok=True)
            path = os.path.join(args.out, "two_moons.png")
            plot_boundary(model, X, y, path, f"decision boundary: train {train_acc:.2%}, "
                                             f"test {test_acc:.2%}")
            print(f"wrote {path}")
    print(f"train accuracy: {100 * train_acc:.2f}%")
    print(f"test accuracy: {100 * test_acc:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
