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
