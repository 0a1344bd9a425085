"""Regenerate the pictures of docs/visualization.md: python docs/img/make_images.py

Needs the graphviz extra and the `dot` program. Writes next to this file.
"""

import os

import numpy as np

from tinygrad_mlp import Tensor, nn, viz

HERE = os.path.dirname(os.path.abspath(__file__))

# The tiny example: one neuron, y = sigmoid(x * w + b), summed.
x = Tensor([1.0, 2.0, 3.0], name="x")
w = Tensor([0.5, -1.0, 0.25], requires_grad=True, name="w")
b = Tensor(0.1, requires_grad=True, name="b")
y = (x * w + b).sigmoid()
y.name = "y"
loss = y.sum()
loss.name = "loss"
loss.backward()
for fmt in ("svg", "png"):
    viz.save(loss, os.path.join(HERE, f"tiny_graph.{fmt}"), show_data=True)

# The lecture's MLP 784-100-10: sigmoid layers, BCE (sum) + L2 penalty, one backward.
rng = np.random.RandomState(1)
model = nn.Sequential(nn.Dense(784, 100, rng=rng), nn.Sigmoid(),
                      nn.Dense(100, 10, rng=rng), nn.Sigmoid())
loss_fn = nn.BinaryCrossEntropy(reduction="sum")
X = Tensor(rng.uniform(-1, 1, (8, 784)).astype(np.float32), name="X")
labels = rng.randint(0, 10, 8)
cost = loss_fn(model(X), labels) + nn.l2_penalty(model, 0.01)
cost.name = "cost"
cost.backward()
for fmt in ("svg", "png"):
    viz.save(cost, os.path.join(HERE, f"mlp_graph.{fmt}"), group=model, rankdir="TB")
    viz.save(cost, os.path.join(HERE, f"mlp_graph_collapsed.{fmt}"), group=model,
             rankdir="TB", collapse=True)

# check_ops: a leaky ReLU whose backward forgets the slope, marked by draw(highlight=...).
from tinygrad_mlp import Function, check_ops  # noqa: E402


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx, x, slope=0.01):
        ctx.save_for_backward(x)
        return np.where(x > 0, x, slope * x)

    @staticmethod
    def backward(ctx, grad):
        return grad * np.where(ctx.saved[0] > 0, 1.0, 1.0)  # the bug: the slope is missing


class Leaky(nn.Module):
    def forward(self, x):
        return LeakyReLU.apply(x, slope=0.01)


rng = np.random.RandomState(1)
net = nn.Sequential(nn.Dense(784, 30, rng=rng), Leaky(), nn.Dense(30, 10, rng=rng),
                    nn.Sigmoid())
X = Tensor(rng.uniform(-1, 1, (20, 784)).astype(np.float32), name="X")
cost = loss_fn(net(X), rng.randint(0, 10, 20)) + nn.l2_penalty(net, 0.01)
cost.name = "cost"
checks = check_ops(cost)
viz.save(cost, os.path.join(HERE, "check_ops_highlight.png"), group=net, rankdir="TB",
         highlight=[c for c in checks if not c.ok])
