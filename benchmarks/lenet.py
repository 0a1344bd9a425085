"""A LeNet-5 training epoch: the library (the user's loop, eager or under `jit`) and PyTorch.

conv 5x5 (1 -> 6, padding 2) - ReLU - max-pool 2, conv 5x5 (6 -> 16) - ReLU - max-pool 2,
flatten, dense 400-120-84-10 with ReLU; softmax cross-entropy (mean), Adam lr 1e-3, batches
of 128, float32, images (n, 1, 28, 28). Both start from the same weights.
"""

import numpy as np
from lecture import TorchUserLoop, Unavailable, UserLoop, import_torch

from tinygrad_mlp import nn, optim

BATCH = 128


def lenet_model():
    try:
        layers = [nn.Conv2d(1, 6, 5, padding=2, seed=1), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(6, 16, 5, seed=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                  nn.Dense(400, 120, seed=3), nn.ReLU(),
                  nn.Dense(120, 84, seed=4), nn.ReLU(),
                  nn.Dense(84, 10, seed=5)]
    except AttributeError as e:  # nn.Conv2d, MaxPool2d or Flatten not there yet
        raise Unavailable(f"nn.{str(e).split()[-1].strip(chr(39))} is missing") from None
    return nn.Sequential(*layers)


def library_lenet(images, labels, use_jit=False):
    model, cost = lenet_model(), nn.CrossEntropy()
    return UserLoop(images, labels, model, lambda x, y: cost(model(x), y),
                    optim.Adam(model.parameters(), lr=1e-3), BATCH, use_jit)


def torch_lenet(images, labels):
    torch = import_torch()
    tnn = torch.nn
    model = tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
                           tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
                           tnn.Linear(84, 10))
    with torch.no_grad():  # the library's weights (Conv2d: the same layout; Dense: .T)
        ours = [m for m in lenet_model() if hasattr(m, "weight")]
        theirs = [m for m in model if hasattr(m, "weight")]
        for a, b in zip(ours, theirs):
            w = a.weight.data if a.weight.ndim == 4 else a.weight.data.T
            b.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            b.bias.copy_(torch.from_numpy(a.bias.data))
    return TorchUserLoop(torch, torch.from_numpy(images), torch.from_numpy(labels), model,
                         tnn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=1e-3),
                         BATCH)


CONTENDERS = {"eager": library_lenet, "jit": lambda X, y: library_lenet(X, y, use_jit=True),
              "torch": torch_lenet}
