"""The lecture MLP epoch, written seven ways: the contenders of benchmarks/run.py.

784-100-10, sigmoid hidden and output layers, logistic cost summed over the batch, L2 0.01
on the weights, SGD lr 0.0005, batches of 100, the rows in a shuffled order each epoch.
Every contender starts from the same weights (the library's Dense layers drawn from
RandomState(1)), owns its own copy of them and its own shuffling RandomState(2), and runs
one epoch per call of `epoch()`.
"""

import numpy as np

from tinygrad_mlp import Tensor, data, nn, optim, train

LR, L2, BATCH = 0.0005, 0.01, 100


class Unavailable(Exception):
    """A contender that cannot run here (a package or a library feature is missing)."""


def load_mnist(root=None, synthetic=False, rows=None):
    """(X float64 (n, 784) in [-1, 1], y int64 (n,), where from): the first `rows` (default
    all 60,000) training rows of MNIST from `root` (else $TINYGRAD_MLP_DATA), or, when
    there are none or `synthetic`, noisy class templates of the same shape."""
    if not synthetic:
        try:
            X, y = data.load_mnist(root=root, kind="train", download=False, dtype=np.float64)
            X, y = X[:rows].copy(), y[:rows].copy()  # copies: the rest of the set is freed
            return X, y, f"MNIST, the first {len(X):,} training rows"
        except FileNotFoundError:
            pass
    n = rows or 60000
    rng = np.random.RandomState(0)
    templates = rng.uniform(-1, 1, (10, 784))
    y = rng.randint(0, 10, n)
    X = 0.5 * templates[y] + 0.5 * rng.uniform(-1, 1, (n, 784))
    why = "--synthetic" if synthetic else "no MNIST files found: pass --data DIR"
    return X, y, f"synthetic, {n:,} rows of MNIST's shape ({why})"


def lecture_model(dtype):
    rng = np.random.RandomState(1)
    return nn.Sequential(nn.Dense(784, 100, rng=rng, dtype=dtype), nn.Sigmoid(),
                         nn.Dense(100, 10, rng=rng, dtype=dtype), nn.Sigmoid())


def start_weights(dtype):
    """[w_h, b_h, w_out, b_out]: the library model's initial parameters, as arrays."""
    return [p.data.copy() for p in lecture_model(dtype).parameters()]


def batches(n, rng, size=BATCH):
    """Index arrays of the full batches of one epoch, in a new shuffled order."""
    order = rng.permutation(n)
    return [order[i:i + size] for i in range(0, n - size + 1, size)]


class UserLoop:
    """The user's loop, one epoch per call: eager (a graph per step), or with the step
    function under `jit`. step(x, y) -> the loss Tensor."""

    def __init__(self, X, Y, model, step, opt, batch=BATCH, use_jit=False):
        self.X, self.Y, self.rng, self.batch = X, Y, np.random.RandomState(2), batch
        self.model, self.step, self.opt = model, step, opt
        if use_jit:
            try:
                from tinygrad_mlp import jit
            except ImportError:
                raise Unavailable("tinygrad_mlp.jit is missing") from None
            self.step = jit(step)

    def epoch(self):
        X, Y, opt, step = self.X, self.Y, self.opt, self.step
        for idx in batches(len(X), self.rng, self.batch):
            loss = step(Tensor(X[idx]), Tensor(Y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()


def library_loop(X, Y, use_jit=False):
    model = lecture_model(X.dtype)
    cost = nn.BinaryCrossEntropy(reduction="sum")
    return UserLoop(X, Y, model, lambda x, y: cost(model(x), y) + nn.l2_penalty(model, L2),
                    optim.SGD(model.parameters(), lr=LR), use_jit=use_jit)


class LibraryFit:
    """`train.fit(..., epochs=1)` per call (no per-epoch evaluation pass: the loops have none)."""

    def __init__(self, X, Y):
        self.X, self.Y, self.rng = X, Y, np.random.RandomState(2)
        self.model = lecture_model(X.dtype)
        self.cost = nn.BinaryCrossEntropy(reduction="sum")
        self.opt = optim.SGD(self.model.parameters(), lr=LR)

    def epoch(self):
        train.fit(self.model, self.cost, self.opt, self.X, self.Y, epochs=1, batch_size=BATCH,
                  rng=self.rng, l2=L2, progress=False, eval_train=False)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -250, 250)))


class NumpyLoop:
    """The baseline: the lecture's delta rule by hand, as reference.NeuralNetMLP computes it.
    with_cost: also the cost's value at each step (`self.costs`)."""

    with_cost = False

    def __init__(self, X, Y):
        self.X, self.Y, self.rng = X, Y, np.random.RandomState(2)
        self.w_h, self.b_h, self.w_out, self.b_out = start_weights(X.dtype)
        self.costs = []

    def epoch(self):
        for idx in batches(len(self.X), self.rng):
            X, Y = self.X[idx], self.Y[idx]
            a_h = sigmoid(np.dot(X, self.w_h) + self.b_h)               # forward
            z_out = np.dot(a_h, self.w_out) + self.b_out
            a_out = sigmoid(z_out)
            if self.with_cost:  # summed logistic cost from the logits, plus the L2 penalty
                self.costs.append(np.sum(np.logaddexp(0.0, z_out) - Y * z_out) + 0.5 * L2 * (
                    np.sum(self.w_h ** 2) + np.sum(self.w_out ** 2)))
            delta_out = a_out - Y                                       # backward
            delta_h = np.dot(delta_out, self.w_out.T) * (a_h * (1.0 - a_h))
            grad_w_h, grad_b_h = np.dot(X.T, delta_h), np.sum(delta_h, axis=0)
            grad_w_out, grad_b_out = np.dot(a_h.T, delta_out), np.sum(delta_out, axis=0)
            self.w_h -= LR * (grad_w_h + L2 * self.w_h)                 # update
            self.b_h -= LR * grad_b_h
            self.w_out -= LR * (grad_w_out + L2 * self.w_out)
            self.b_out -= LR * grad_b_out


class NumpyLoopWithCost(NumpyLoop):
    """The baseline plus the one thing more that the user's loop asks for at every step:
    the cost's value, as `step(x, y)` returns it. The user's work with no library at all:
    the floor of row 2 (docs/performance.md)."""

    with_cost = True


def import_torch():
    try:
        import torch
    except ImportError:
        raise Unavailable("torch is not installed") from None
    return torch


class TorchUserLoop:
    """A PyTorch user's loop over one epoch's batches of the tensors X, Y."""

    def __init__(self, torch, X, Y, model, cost, opt, batch=BATCH):
        self.torch, self.X, self.Y, self.batch = torch, X, Y, batch
        self.rng = np.random.RandomState(2)
        self.model, self.cost, self.opt = model, cost, opt

    def epoch(self):
        for idx in batches(len(self.X), self.rng, self.batch):
            idx = self.torch.from_numpy(idx)
            loss = self.cost(self.model(self.X[idx]), self.Y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


def torch_loop(X, Y):
    """PyTorch eager as a PyTorch user writes it: Linear-Sigmoid-Linear, the output sigmoid
    fused into BCEWithLogitsLoss(reduction="sum"), SGD with weight_decay=l2 on the weights."""
    torch = import_torch()
    model = torch.nn.Sequential(torch.nn.Linear(784, 100), torch.nn.Sigmoid(),
                                torch.nn.Linear(100, 10))
    model.to(torch.float64 if X.dtype == np.float64 else torch.float32)
    first, second = model[0], model[2]
    w_h, b_h, w_out, b_out = (torch.from_numpy(a) for a in start_weights(X.dtype))
    with torch.no_grad():
        for layer, w, b in ((first, w_h, b_h), (second, w_out, b_out)):
            layer.weight.copy_(w.T)
            layer.bias.copy_(b)
    opt = torch.optim.SGD([{"params": [first.weight, second.weight], "weight_decay": L2},
                           {"params": [first.bias, second.bias], "weight_decay": 0.0}], lr=LR)
    return TorchUserLoop(torch, torch.from_numpy(X), torch.from_numpy(Y), model,
                         torch.nn.BCEWithLogitsLoss(reduction="sum"), opt)


class JaxJit:
    """JAX: the whole step (gradient and SGD update) under jax.jit. A reference row only.
    Its threads are XLA's (set at start-up by XLA_FLAGS), not the cell's."""

    def __init__(self, X, Y):
        try:
            import jax
            import jax.numpy as jnp
        except ImportError:
            raise Unavailable("jax is not installed") from None
        if X.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        self.X, self.Y, self.rng = X, Y, np.random.RandomState(2)
        self.params = [jnp.asarray(a) for a in start_weights(X.dtype)]

        def loss(params, x, y):
            w_h, b_h, w_out, b_out = params
            z = jax.nn.sigmoid(x @ w_h + b_h) @ w_out + b_out
            cost = jnp.sum(jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z))))
            return cost + L2 / 2 * (jnp.sum(w_h ** 2) + jnp.sum(w_out ** 2))

        @jax.jit
        def step(params, x, y):
            return [p - LR * g for p, g in zip(params, jax.grad(loss)(params, x, y))]

        self.step = step

    def epoch(self):
        for idx in batches(len(self.X), self.rng):
            self.params = self.step(self.params, self.X[idx], self.Y[idx])
        self.params[0].block_until_ready()


CONTENDERS = {"eager": library_loop, "jit": lambda X, Y: library_loop(X, Y, use_jit=True),
              "fit": LibraryFit, "numpy": NumpyLoop, "numpy again": NumpyLoop,
              "numpy with cost": NumpyLoopWithCost,
              "torch": torch_loop, "jax": JaxJit}
