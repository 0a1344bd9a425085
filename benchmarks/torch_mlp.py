"""The PyTorch eager peers of the benchmarked runs (optional: skipped when torch is absent).

Written the way a PyTorch user writes them: `nn.Sequential` of `nn.Linear` layers, a fused
loss on logits (`BCEWithLogitsLoss(reduction="sum")` for the lecture's network,
`CrossEntropyLoss()` for the fast recipe), `torch.optim` with default settings, float32,
`torch.set_num_threads(threads)`. Weights are copied from the library's model so that both
start from the same point, and the epochs walk the same shuffled order.
"""

from __future__ import annotations

import numpy as np


def import_torch(threads=2):
    """torch with `threads` intra-op threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def _linear_layers(torch, weights, biases, activation):
    """nn.Sequential of Linear layers holding the given (in, out) weights and biases."""
    nn = torch.nn
    layers = []
    for i, (w, b) in enumerate(zip(weights, biases)):
        lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T, dtype=np.float32)))
            lin.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(activation())
    return nn.Sequential(*layers)


class LectureNet:
    """784-H-10 sigmoid MLP, summed logistic cost on the logits, SGD with L2 on the weights
    (`weight_decay=l2` adds l2 * W to each weight's gradient, as the lecture does)."""

    def __init__(self, torch, weights, biases, *, lr=0.0005, l2=0.01):
        self.torch = torch
        self.model = _linear_layers(torch, weights, biases, torch.nn.Sigmoid)
        self.loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
        linears = [m for m in self.model if isinstance(m, torch.nn.Linear)]
        self.opt = torch.optim.SGD([
            {"params": [m.weight for m in linears], "weight_decay": l2},
            {"params": [m.bias for m in linears], "weight_decay": 0.0},
        ], lr=lr)

    def epoch(self, X, Y, rng, batch_size=100):
        """One epoch over torch tensors X (n, 784) and one-hot Y (n, 10), full batches."""
        for _ in self.epoch_steps(X, Y, rng, batch_size):
            pass

    def epoch_steps(self, X, Y, rng, batch_size=100):
        """The steps of `epoch`, yielding after each (to interleave it with other runs)."""
        torch = self.torch
        n = X.shape[0]
        order = np.arange(n)
        rng.shuffle(order)
        order = torch.from_numpy(order)
        model, loss_fn, opt = self.model, self.loss_fn, self.opt
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]), Y[idx])
            loss.backward()
            opt.step()
            yield


class FastNet:
    """The `--preset fast` recipe: 784-H-10 ReLU, softmax cross-entropy (mean), Adam with the
    learning rate set before every step from the same one-cycle schedule as the library's."""

    def __init__(self, torch, weights, biases, *, lr_at):
        self.torch = torch
        self.model = _linear_layers(torch, weights, biases, torch.nn.ReLU)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr_at(0))
        self.lr_at = lr_at
        self.step_count = 0

    def epoch(self, X, y, rng, batch_size):
        torch = self.torch
        n = X.shape[0]
        order = np.arange(n)
        rng.shuffle(order)
        order = torch.from_numpy(order)
        model, loss_fn, opt, group = self.model, self.loss_fn, self.opt, self.opt.param_groups[0]
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            group["lr"] = self.lr_at(self.step_count)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            self.step_count += 1

    def accuracy(self, X, y):
        torch = self.torch
        with torch.no_grad():
            return float((self.model(X).argmax(dim=1) == y).double().mean())
