#!/usr/bin/env python3
"""Train a multilayer perceptron on MNIST with tinygrad_mlp, from the library's modules.

Presets (a recipe is a dict: LECTURE and FAST below; the benchmarks import them):

  lecture (default)  the lecture's network and run, step for step: 784-100-10, sigmoid
                     hidden and output layers, weights drawn from one RandomState(1) that
                     then also shuffles every epoch, logistic cost summed over the batch,
                     plain SGD lr=0.0005 with L2 0.01, batches of 100, 200 epochs, float64,
                     55,000 training rows and 5,000 validation rows. Expected at the end:
                     train 99.28%, valid 97.98%, test 97.54%, Cost: 5065.78.
  fast               the best quick one-hidden-layer net: 784-H-10 ReLU with He init, softmax
                     cross-entropy on logits, Adam with a one-cycle learning rate, float32,
                     no extra evaluation pass over the training set per epoch.

Data: the four MNIST IDX files (plain or .gz) in --data DIR (the folder with the files, or
its parent), else in $TINYGRAD_MLP_DATA/<dataset>, else ~/.cache/tinygrad_mlp/<dataset>
(downloaded there when missing, unless --no-download).

Examples:
  python examples/mnist.py                        # downloads MNIST once (checksummed)
  TINYGRAD_MLP_DATA=DIR python examples/mnist.py  # DIR/mnist holds the four IDX files
  python examples/mnist.py --preset fast --data ~/datasets/mnist --out runs/fast
  python examples/mnist.py --resume runs/mnist/checkpoint.npz   # after Ctrl-C or a crash

From Python (the same recipes):
  mnist = runpy.run_path("examples/mnist.py")  # or importlib; nothing runs on import
  model, history = mnist["train_model"]("fast", X_train, y_train, X_valid, y_valid)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# One BLAS thread unless the environment says otherwise; this must be set before NumPy loads
# OpenBLAS, so it only acts when this file is run as a program. Measured here (2 cores shared
# with other work, load ~2.7): --preset fast trained in 8.7 s with one thread and in 114-141 s
# with OpenBLAS's default two, whose threads wait on each other when a core is busy. The
# matrices are small (batches of 100-128 rows), so a second thread has little to gain.
if __name__ == "__main__" and not any(v in os.environ for v in ("OPENBLAS_NUM_THREADS",
                                                                  "OMP_NUM_THREADS")):
    os.environ["OPENBLAS_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402

try:
    import tinygrad_mlp
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_mlp

from tinygrad_mlp import Tensor, nn, optim, train
from tinygrad_mlp._files import atomic_write  # temp file + fsync + rename

# ----------------------------------------------------------------------------- recipes

#: The lecture's setup (Raschka's NeuralNetMLP on MNIST), exactly.
LECTURE = dict(
    hidden=100, activation="sigmoid", init_std=0.1,
    loss="binary-cross-entropy-sum", optimizer="sgd", lr=0.0005, schedule=None, l2=0.01,
    batch_size=100, epochs=200, seed=1, dtype="float64", eval_train=True,
)

#: Fast: >= 98.0% test accuracy in a few seconds of training on 2 CPU cores.
#: `lr` is the peak learning rate of the one-cycle schedule.
FAST = dict(
    hidden=256, activation="relu", init_std="he",
    loss="cross-entropy", optimizer="adam", lr=3e-3, schedule="one-cycle", l2=0.0,
    batch_size=128, epochs=10, seed=0, dtype="float32", eval_train=False,
)

PRESETS = {"lecture": LECTURE, "fast": FAST}

N_VALID = 5000  # the lecture's split: the last 5,000 of the 60,000 training images validate

_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


def recipe(preset="lecture", **overrides):
    """The preset's recipe (a new dict), with every override that is not None applied."""
    if isinstance(preset, dict):
        cfg = dict(preset)
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        cfg = dict(PRESETS[preset])
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise TypeError(f"recipe: unknown setting(s) {sorted(unknown)}")
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def build_model(preset="lecture", hidden=None, *, rng=None, seed=None, dtype=None):
    """784-hidden-10 Sequential for a preset name or recipe dict.

    The lecture model ends in a Sigmoid (its cost works on probabilities); the fast one
    has no final activation (CrossEntropy takes logits). Both layers draw their weights
    from `rng` (else RandomState(seed), else RandomState(recipe seed)), hidden first.
    """
    cfg = recipe(preset, hidden=hidden, dtype=dtype)
    if rng is None:
        rng = np.random.RandomState(cfg["seed"] if seed is None else seed)
    act = _ACTIVATIONS[cfg["activation"]]
    dt, h, std = np.dtype(cfg["dtype"]), int(cfg["hidden"]), cfg["init_std"]
    layers = [nn.Dense(784, h, init_std=std, rng=rng, dtype=dt), act(),
              nn.Dense(h, 10, init_std=std, rng=rng, dtype=dt)]
    if cfg["loss"] == "binary-cross-entropy-sum":
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def build_loss(preset="lecture"):
    cfg = recipe(preset)
    if cfg["loss"] == "binary-cross-entropy-sum":
        return nn.BinaryCrossEntropy(reduction="sum")
    if cfg["loss"] == "cross-entropy":
        return nn.CrossEntropy()
    raise ValueError(f"unknown loss {cfg['loss']!r}")


def build_optimizer(preset, model, lr=None):
    cfg = recipe(preset, lr=lr)
    if cfg["optimizer"] == "sgd":
        return optim.SGD(model.parameters(), lr=cfg["lr"])
    if cfg["optimizer"] == "adam":
        return optim.Adam(model.parameters(), lr=cfg["lr"])
    raise ValueError(f"unknown optimizer {cfg['optimizer']!r}")


def build_schedule(preset, total_steps, lr=None):
    """step -> learning rate, or None for a constant rate."""
    cfg = recipe(preset, lr=lr)
    if cfg["schedule"] is None:
        return None
    if cfg["schedule"] == "one-cycle":
        max_lr = float(cfg["lr"])
        total = max(1, int(total_steps))
        return lambda step: optim.one_cycle(step, total, max_lr)
    raise ValueError(f"unknown schedule {cfg['schedule']!r}")


def train_model(preset, X, y, X_valid=None, y_valid=None, *, model=None, rng=None,
                progress=False, on_epoch_end=None, checkpoint=None, resume=None, **overrides):
    """Train with a preset's recipe (overrides as in `recipe`); returns (model, History).

    One RandomState(seed) draws the weights (unless `model` is given) and then shuffles
    every epoch, as the lecture does. checkpoint / resume: fit's (a checkpoint after every
    epoch; resume a stopped run exactly, to `epochs` epochs in all).
    """
    cfg = recipe(preset, **overrides)
    dt = np.dtype(cfg["dtype"])
    X = np.asarray(X, dtype=dt)
    if X_valid is not None:
        X_valid = np.asarray(X_valid, dtype=dt)
    if rng is None:
        rng = np.random.RandomState(cfg["seed"])
    if model is None:
        model = build_model(cfg, rng=rng)
    bs, epochs = int(cfg["batch_size"]), int(cfg["epochs"])
    history = train.fit(
        model, build_loss(cfg), build_optimizer(cfg, model), X, y,
        epochs=epochs, batch_size=bs, shuffle=True, rng=rng,
        X_valid=X_valid, y_valid=y_valid, l2=cfg["l2"], progress=progress,
        schedule=build_schedule(cfg, epochs * (X.shape[0] // bs)),
        eval_train=cfg["eval_train"], on_epoch_end=on_epoch_end, checkpoint=checkpoint,
        resume=resume)
    return model, history


def sum_squared_weights(model):
    """Sum of the squared Dense weights (biases excluded), in float64."""
    return float(sum(np.sum(np.square(w.data, dtype=np.float64)) for w in nn.dense_weights(model)))


def describe(cfg):
    act = cfg["activation"]
    head = " + sigmoid output" if cfg["loss"] == "binary-cross-entropy-sum" else " (logits)"
    loss = {"binary-cross-entropy-sum": "logistic cost (sum)",
            "cross-entropy": "softmax cross-entropy (mean)"}[cfg["loss"]]
    opt = cfg["optimizer"].upper() if cfg["optimizer"] == "sgd" else "Adam"
    lr = (f"one-cycle max lr {cfg['lr']:g}" if cfg["schedule"] == "one-cycle"
          else f"lr {cfg['lr']:g}")
    return (f"784-{cfg['hidden']}-10 {act}{head}, init std {cfg['init_std']}, {loss}, {opt} {lr}, "
            f"l2 {cfg['l2']:g}, batch {cfg['batch_size']}, {cfg['epochs']} epochs, "
            f"{cfg['dtype']}, seed {cfg['seed']}")


# ----------------------------------------------------------------------------- files


def write_json(path, obj):
    """Write JSON atomically: a temporary file in the same folder, then a rename."""

    def write(f):
        json.dump(obj, f, indent=1)
        f.write("\n")

    atomic_write(path, write, binary=False)


_PER_EPOCH = ("cost", "train_acc", "valid_acc", "time")


def load_data(args):
    try:
        from tinygrad_mlp import data
    except ImportError as e:
        sys.exit(f"error: tinygrad_mlp.data is not available ({e})")
    dt = np.dtype(args.dtype)
    kw = dict(root=args.data, download=not args.no_download, dataset=args.dataset, dtype=dt)
    try:
        X, y = data.load_mnist(kind="train", **kw)
        X_test, y_test = data.load_mnist(kind="test", **kw)
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"error: could not load {args.dataset}: {e}")
    return X, y, X_test, y_test


# ----------------------------------------------------------------------------- plots


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cost(plt, cost, path, ylabel, title):
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    epochs = np.arange(1, len(cost) + 1)
    ax.plot(epochs, cost, marker="." if len(cost) <= 30 else None)
    ax.set_xlabel("Epochs")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _integer_epochs(ax, len(cost))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_accuracy(plt, train_acc, valid_acc, path, train_label):
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    epochs = np.arange(1, len(train_acc) + 1)
    marker = "." if len(train_acc) <= 30 else None
    ax.plot(epochs, 100 * np.asarray(train_acc), marker=marker, label=train_label)
    if valid_acc:
        ax.plot(epochs, 100 * np.asarray(valid_acc), marker=marker, linestyle="--",
                label="validation")
    ax.set_xlabel("Epochs")
    ax.set_ylabel("Accuracy (%)")
    _integer_epochs(ax, len(train_acc))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _integer_epochs(ax, n):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if n == 1:
        ax.set_xlim(0.5, 1.5)


def _image(row):
    return np.asarray(row, dtype=np.float64).reshape(28, 28)


def plot_digits(plt, X, y, path):
    """The first training image of each digit 0-9, 2 rows of 5."""
    fig, axes = plt.subplots(2, 5, figsize=(7.5, 3.5), dpi=100, sharex=True, sharey=True)
    for digit, ax in enumerate(axes.flat):
        where = np.flatnonzero(y == digit)
        if where.size:
            ax.imshow(_image(X[where[0]]), cmap="Greys", interpolation="nearest")
            ax.set_title(str(digit))
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_misclassified(plt, X, y_true, y_pred, path, n=25):
    """The first n misclassified images in a 5x5 grid, titled 't: true p: predicted'."""
    wrong = np.flatnonzero(y_true != y_pred)[:n]
    fig, axes = plt.subplots(5, 5, figsize=(6.4, 7.2), dpi=100, sharex=True, sharey=True)
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(_image(X[i]), cmap="Greys", interpolation="nearest")
        ax.set_title(f"t: {int(y_true[i])} p: {int(y_pred[i])}", fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(wrong):]:
        ax.axis("off")
    if not len(wrong):
        fig.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_graph(model, loss_fn, cfg, X, y, out):
    """One training step's graph (forward, loss, L2 penalty, backward), grouped by module."""
    from tinygrad_mlp import viz

    bs = min(int(cfg["batch_size"]), X.shape[0])
    model.zero_grad()
    x = Tensor(X[:bs], name="X")
    cost = loss_fn(model(x), y[:bs])
    if cfg["l2"]:
        cost = cost + nn.l2_penalty(model, cfg["l2"])
    cost.name = "cost"
    cost.backward()
    try:
        paths = [viz.save(cost, os.path.join(out, f"graph.{fmt}"), group=model, rankdir="TB")
                 for fmt in ("svg", "png")]
    finally:
        model.zero_grad()
    return paths


# ----------------------------------------------------------------------------- command line


def make_parser():
    p = argparse.ArgumentParser(
        prog="mnist.py",
        description="Train a 784-hidden-10 MLP on MNIST with tinygrad_mlp: the lecture's "
                    "network exactly (--preset lecture), or a fast ReLU/Adam recipe "
                    "(--preset fast). Settings given below override the preset's.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
presets:
  lecture  784-100-10 sigmoid, logistic cost (sum), SGD lr 0.0005, l2 0.01, batch 100,
           200 epochs, float64, seed 1; one RandomState draws the weights and shuffles.
           Prints: train 99.28%, valid 97.98%, test 97.54%, Cost: 5065.78.
  fast     784-{hidden}-10 ReLU (He init), softmax cross-entropy, Adam with a one-cycle
           learning rate (max lr {lr:g}), batch {batch_size}, {epochs} epochs, float32.

data split: the first 55,000 training images train, the last 5,000 validate (1/12 of a
smaller file); the 10,000 test images test. --train-rows N uses the first N training rows.

outputs (in --out): model.npz (Module.save; load with Module.load into build_model(...)),
history.json (per-epoch cost/train_acc/valid_acc/time, final accuracies, settings),
checkpoint.npz (fit's checkpoint, rewritten after every epoch and on Ctrl-C),
cost.png, accuracy.png, digits.png, misclassified.png (need matplotlib),
graph.svg and graph.png (one training step's graph; need graphviz and `dot`).

--resume CKPT continues the run saved in CKPT (a checkpoint.npz) exactly where it stopped,
whether it was interrupted with Ctrl-C, killed, or finished: the weights, the optimizer's
state, the shuffling generator, the position in the epoch and the schedule's step are
restored, so an interrupted lecture run resumed ends with the weights of the uninterrupted
run, bit for bit. Give the same settings as the first run (a different network, optimizer,
batch size or data is refused, naming what differs); --epochs is the number of epochs in
all (default: the preset's), so --resume with a larger --epochs trains more.
""".format(**FAST))
    p.add_argument("--preset", choices=sorted(PRESETS), default="lecture",
                   help="recipe to start from (default: lecture)")
    p.add_argument("--epochs", type=int, help="epochs to train (with --resume: in all, the "
                   "checkpoint's included)")
    p.add_argument("--hidden", type=int, help="hidden units")
    p.add_argument("--lr", type=float, help="learning rate (fast: the one-cycle peak)")
    p.add_argument("--batch-size", type=int, help="mini-batch size")
    p.add_argument("--l2", type=float, help="L2 strength: adds l2 * W to each weight gradient")
    p.add_argument("--seed", type=int, help="seed of the RandomState that draws the weights "
                   "and shuffles")
    p.add_argument("--dtype", choices=["float32", "float64"], help="floating-point type")
    p.add_argument("--data", metavar="DIR", help="folder with the four IDX files, or its "
                   "parent (default: $TINYGRAD_MLP_DATA/<dataset>, else "
                   "~/.cache/tinygrad_mlp/<dataset>)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading "
                   "missing files")
    p.add_argument("--train-rows", type=int, metavar="N", help="train on the first N rows "
                   "only (quick runs)")
    p.add_argument("--out", default=os.path.join("runs", "mnist"), metavar="DIR",
                   help="output folder (default: runs/mnist)")
    p.add_argument("--resume", metavar="CKPT", help="continue the run saved in CKPT (a "
                   "checkpoint.npz) exactly")
    p.add_argument("--checkpoint", metavar="PATH", help="fit's checkpoint, written after every "
                   "epoch and on Ctrl-C (default: OUT/checkpoint.npz; with --resume: CKPT)")
    p.add_argument("--no-checkpoint", action="store_true", help="write no checkpoint")
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib pictures")
    p.add_argument("--no-graph", action="store_true", help="skip the graph drawing")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar")
    return p


def _pct(frac):
    return f"{100 * frac:.2f}%"


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    cfg = recipe(args.preset, epochs=args.epochs, hidden=args.hidden, lr=args.lr,
                 batch_size=args.batch_size, l2=args.l2, seed=args.seed, dtype=args.dtype)
    args.dtype = cfg["dtype"]
    for name in ("epochs", "hidden", "batch_size", "train_rows"):
        value = cfg.get(name, getattr(args, name, None))
        if value is not None and (value < 0 or (value == 0 and name in ("hidden",
                                                                         "batch_size",
                                                                         "train_rows"))):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if cfg["lr"] <= 0 or cfg["l2"] < 0:
        parser.error("--lr must be > 0 and --l2 >= 0")
    if args.resume and not os.path.isfile(args.resume):
        parser.error(f"--resume: no such file: {args.resume}")

    X_all, y_all, X_test, y_test = load_data(args)
    n_valid = min(N_VALID, X_all.shape[0] // 12)
    n_fit = X_all.shape[0] - n_valid
    X_train, y_train = X_all[:n_fit], y_all[:n_fit]
    X_valid, y_valid = X_all[n_fit:], y_all[n_fit:]
    if args.train_rows is not None:
        X_train, y_train = X_train[:args.train_rows], y_train[:args.train_rows]
    if cfg["batch_size"] > X_train.shape[0]:
        parser.error(f"--batch-size {cfg['batch_size']} is larger than the "
                     f"{X_train.shape[0]} training rows")
    print(f"preset {args.preset}: {describe(cfg)}")
    print(f"data: {args.dataset}, {X_train.shape[0]} train / {X_valid.shape[0]} valid / "
          f"{X_test.shape[0]} test rows, {X_train.dtype}")

    rng = np.random.RandomState(cfg["seed"])
    model = build_model(cfg, rng=rng)
    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.npz")
    history_path = os.path.join(args.out, "history.json")
    checkpoint = None if args.no_checkpoint else (
        args.checkpoint or args.resume or os.path.join(args.out, "checkpoint.npz"))

    lecture_form = bool(cfg["l2"]) and cfg["eval_train"]
    # sum of squared weights after each epoch (the lecture's printed cost adds l2 * it);
    # on a resume, the earlier epochs' values come from the history.json beside CKPT
    sumsq = []
    if args.resume:
        old_path = os.path.join(os.path.dirname(os.path.abspath(args.resume)), "history.json")
        try:
            with open(old_path) as f:
                sumsq = [float(v) for v in json.load(f).get("sum_squared_weights", [])]
        except (OSError, ValueError, TypeError):
            sumsq = []
        print(f"resuming the run saved in {args.resume} ({cfg['epochs']} epochs in all)")
    live = {"epochs_here": 0}

    def record(history, final=None):
        rec = {k: list(getattr(history, k)) for k in _PER_EPOCH}
        done = len(history.cost)
        squares = sumsq[:done] + [None] * (done - len(sumsq))
        rec["sum_squared_weights"] = squares
        if lecture_form:
            rec["cost_lecture"] = [None if s is None else c + 0.5 * cfg["l2"] * s
                                   for c, s in zip(history.cost, squares)]
        rec["epochs_done"] = done
        rec["cost_form"] = (
            "cost: logistic cost summed over the training rows + l2/2 * sum(W^2); "
            "cost_lecture: + l2 * sum(W^2) as the lecture prints it" if lecture_form else
            "mean cross-entropy over the batches of each epoch" if not cfg["eval_train"] else
            "loss over the training rows (+ l2/2 * sum(W^2))")
        rec["preset"] = args.preset
        rec["recipe"] = cfg
        rec["args"] = {k: v for k, v in vars(args).items()}
        rec["checkpoint"] = checkpoint
        rec["tinygrad_mlp"] = tinygrad_mlp.__version__
        if final:
            rec.update(final)
        return rec

    def on_epoch_end(epoch, history):
        live["history"] = history
        live["epochs_here"] += 1
        del sumsq[epoch - 1:]  # (from a resumed history.json: maybe longer, or shorter)
        sumsq.extend([None] * (epoch - 1 - len(sumsq)) + [sum_squared_weights(model)])
        if checkpoint is not None:  # before fit's checkpoint: it never has more epochs
            write_json(history_path, record(history))

    try:
        model, history = train_model(
            cfg, X_train, y_train, X_valid, y_valid, model=model, rng=rng,
            progress=not args.no_progress, on_epoch_end=on_epoch_end, checkpoint=checkpoint,
            resume=args.resume)
    except train.CheckpointError as e:
        sys.exit(f"error: --resume: {e}")
    except KeyboardInterrupt:
        model.save(model_path)
        if "history" in live:
            write_json(history_path, record(live["history"]))
        where = (f"; continue with --resume {checkpoint}" if checkpoint is not None
                 else " (no checkpoint: --no-checkpoint)")
        print(f"\ninterrupted: the weights after the last whole step saved to {model_path}"
              f"{where}", file=sys.stderr)
        return 130
    train_time = float(sum(history.time))

    # Final numbers: the lecture's eval_ already scored all training rows after the last
    # epoch; the fast recipe scored running batches, so score the training rows once here.
    if history.train_acc and cfg["eval_train"]:
        train_acc = history.train_acc[-1]
    else:
        train_acc = train.accuracy(model, X_train, y_train)
    valid_acc = (history.valid_acc[-1] if history.valid_acc
                 else train.accuracy(model, X_valid, y_valid))
    y_pred = train.predict(model, X_test)
    test_acc = float(np.mean(y_pred == y_test))

    model.save(model_path)
    rec = record(history, final={
        "final_train_acc": train_acc, "final_valid_acc": valid_acc, "test_acc": test_acc,
        "train_time": train_time, "epochs_run": live["epochs_here"]})
    write_json(history_path, rec)
    written = [model_path, history_path]

    plt = None if args.no_plots else _pyplot()
    if args.no_plots:
        pass
    elif plt is None:
        print("note: matplotlib is not installed (pip install 'tinygrad-mlp[plot]'): "
              "skipping the plots")
    else:
        costs = rec["cost_lecture"] if lecture_form else rec["cost"]
        if costs:
            if lecture_form:
                ylabel, title = "Cost", "Logistic cost + L2 penalty (lecture form: l2 * sum W²)"
            elif cfg["eval_train"]:
                ylabel, title = "Cost", "Loss over the training rows"
            else:
                ylabel, title = "Cross-entropy", "Mean cross-entropy over each epoch's batches"
            costs = [np.nan if c is None else c for c in costs]  # (an epoch not on record)
            plot_cost(plt, costs, os.path.join(args.out, "cost.png"), ylabel, title)
            plot_accuracy(plt, rec["train_acc"], rec["valid_acc"],
                          os.path.join(args.out, "accuracy.png"),
                          "training" if cfg["eval_train"] else "training (batches, during "
                                                               "the epoch)")
            written += [os.path.join(args.out, n) for n in ("cost.png", "accuracy.png")]
        plot_digits(plt, X_train, y_train, os.path.join(args.out, "digits.png"))
        plot_misclassified(plt, X_test, y_test, y_pred,
                           os.path.join(args.out, "misclassified.png"))
        written += [os.path.join(args.out, n) for n in ("digits.png", "misclassified.png")]
    if not args.no_graph:
        try:
            written += draw_graph(model, build_loss(cfg), cfg, X_train, y_train, args.out)
        except (ImportError, RuntimeError) as e:
            print(f"note: skipping the graph drawing (the pictures graph.svg and graph.png): {e}")

    print("wrote " + ", ".join(written))
    if history.cost:
        if lecture_form and rec["cost_lecture"][-1] is not None:
            print(f"Cost: {rec['cost_lecture'][-1]:.2f} (lecture form: + l2*sum(W^2); "
                  f"consistent l2/2 form: {rec['cost'][-1]:.2f})")
        else:
            print(f"cost: {rec['cost'][-1]:.4f} ({rec['cost_form']})")
    epochs_run = len(history.cost)
    per_epoch = f", {train_time / epochs_run:.3f} s/epoch" if epochs_run else ""
    print(f"training time: {train_time:.2f} s for {epochs_run} epochs{per_epoch} "
          f"(evaluation excluded; whole run {time.perf_counter() - t_start:.1f} s)")
    print(f"train accuracy: {_pct(train_acc)}")
    print(f"valid accuracy: {_pct(valid_acc)}")
    print(f"test accuracy: {_pct(test_acc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
