"""examples/lecture.ipynb runs top to bottom in a Jupyter kernel (nbclient, ipykernel's
python3), with pictures and a sane test accuracy; the committed file carries no outputs.

Quick settings: 2 epochs on 3,000 training rows (TINYGRAD_MLP_NOTEBOOK_EPOCHS / _ROWS). The
data: the real MNIST files when $TINYGRAD_MLP_DATA holds them, else a small fake MNIST
folder written here (the notebook reads whichever $TINYGRAD_MLP_DATA points at; it never
downloads in the tests).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "lecture.ipynb"


def _data_folder(tmp_path):
    root = os.environ.get("TINYGRAD_MLP_DATA")
    if root and (Path(root) / "mnist").is_dir():
        return root, True
    from test_fresh_machine import write_fake_mnist

    write_fake_mnist(str(tmp_path / "data" / "mnist"), n_train=1200, n_test=300)
    return str(tmp_path / "data"), False


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 10
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"


def _outputs(cell):
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    kinds = set()
    for o in cell.outputs:
        kinds.update(o.get("data", {}))
    return text, kinds


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    data_root, real = _data_folder(tmp_path)
    monkeypatch.setenv("TINYGRAD_MLP_DATA", data_root)
    monkeypatch.setenv("TINYGRAD_MLP_NOTEBOOK_EPOCHS", "2")
    monkeypatch.setenv("TINYGRAD_MLP_NOTEBOOK_ROWS", "3000")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # small matrices; a busy machine
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebook's inline backend
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "examples")}}).execute()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    outputs = [_outputs(c) for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(t for t, _ in outputs)
    pngs = sum("image/png" in kinds for _, kinds in outputs)
    assert pngs >= 4, f"expected the digits, sevens, cost/accuracy, misclassified plots: {pngs}"
    assert "epochs: 2" in text and "2 epochs in" in text
    # the summary of the 784-100-10 network: 79,510 parameters
    assert "Total params: 79,510" in text
    if shutil.which("dot"):
        svg = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if "image/svg+xml" in o.get("data", {})]
        assert svg and "<svg" in svg[0]["data"]["image/svg+xml"]
    else:
        assert "`dot` program is not installed" in text
    match = re.search(r"Test accuracy: (\d+\.\d\d)%", text)
    assert match, text
    accuracy = float(match.group(1))
    # well above chance (10%): 2 epochs (60 steps) on 3,000 real digits gave 56% here
    assert (35.0 if real else 25.0) < accuracy <= 100.0, accuracy
    assert "all match: True" in text
    rows = re.findall(r"^(w_h|b_h|w_out|b_out) \([02]\.(?:weight|bias)\) .* match$", text, re.M)
    assert rows == ["w_h", "b_h", "w_out", "b_out"], text


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
