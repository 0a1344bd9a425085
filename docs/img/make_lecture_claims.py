"""Regenerate the pictures of docs/lecture_claims.md: python docs/img/make_lecture_claims.py

Runs the three examples with their default settings and writes vanishing_gradients.png
(and vanishing_diagnostics.png), convergence.png and forward_vs_reverse.png next to this
file, printing each table. Set
TINYGRAD_MLP_DATA to the folder holding mnist/ (DIR/mnist/ holding the IDX files): without MNIST the
first two fall back to synthetic data and say so. Takes about a minute and a half.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples")

for name in ("vanishing_gradients", "convergence", "forward_vs_reverse"):
    out = os.path.join(HERE, f"{name}.png")
    print(f"$ python examples/{name}.py --out docs/img/{name}.png", flush=True)
    extra = []
    if name == "vanishing_gradients":  # and the same measured during training
        extra = ["--diagnostics", os.path.join(HERE, "vanishing_diagnostics.png")]
    subprocess.run([sys.executable, os.path.join(EXAMPLES, f"{name}.py"), "--out", out, *extra],
                   check=True)
