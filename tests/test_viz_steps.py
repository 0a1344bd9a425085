"""viz.backward_steps and viz.save_html (the page's structure; the browser test is in
test_viz_browser.py), and the clear errors when `dot` is missing."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_mlp import Function, Tensor, nn, ops, viz

CURRENT = "#e65100"  # the colour of the op whose backward a frame shows


def lecture_net(seed=0):
    rng = np.random.RandomState(seed)
    model = nn.Sequential(nn.Dense(4, 6, rng=rng, dtype=np.float64), nn.Sigmoid(),
                          nn.Dense(6, 3, rng=rng, dtype=np.float64), nn.Sigmoid())
    X = Tensor(rng.normal(size=(5, 4)), name="X")
    cost = nn.BinaryCrossEntropy()(model(X), rng.randint(0, 3, 5)) + nn.l2_penalty(model, 0.1)
    cost.name = "cost"
    return model, cost


def engine_order(cost, monkeypatch):
    """The ops Tensor.backward really runs, in its order (each class's backward wrapped)."""
    seen = []
    classes = {t._ctx.function for t in _op_outputs(cost)}
    for cls in classes:
        original = cls.backward

        def wrapped(ctx, g, _original=original):
            seen.append(ctx.function.name)
            return _original(ctx, g)
        monkeypatch.setattr(cls, "backward", staticmethod(wrapped))
    return seen


def _op_outputs(t):
    from tinygrad_mlp.gradcheck import graph_ops

    return graph_ops(t)


def current_op(source):
    lines = [line for line in source.splitlines() if CURRENT in line]
    assert len(lines) == 1, lines
    return re.search(r"label=(\w+)", lines[0]).group(1)


def test_one_distinct_frame_per_op_backward_visits_in_its_order(monkeypatch):
    model, cost = lecture_net()
    frames = viz.backward_steps(cost)
    names = [current_op(f.source) for f in frames]
    # the engine's own order: every class's backward wrapped, then a real backward
    _, twin = lecture_net()
    seen = engine_order(twin, monkeypatch)
    twin.backward()
    assert names == seen == ["add", "l2_penalty", "sigmoid_binary_cross_entropy", "dense",
                             "sigmoid", "dense"]
    # the output sigmoid feeds only the fused loss's no-gradient input: no frame
    assert len(frames) == len(_op_outputs(cost)) - 1
    assert len({f.source for f in frames}) == len(frames)
    # every frame draws the same nodes, so the page can step without the layout moving
    node_ids = [sorted(re.findall(r"^\s*(\w+) \[", f.source, re.M)) for f in frames]
    assert all(ids == node_ids[0] for ids in node_ids)


def test_gradients_known_so_far_are_shown_and_the_last_frame_has_them_all():
    model, cost = lecture_net()
    frames = viz.backward_steps(cost)
    pending = [f.source.count("|grad| = pending") for f in frames]
    known = [len(re.findall(r"\|grad\| = \d", f.source)) for f in frames]
    assert pending[-1] == 0 and pending[0] > 0
    assert known == sorted(known) and known[0] >= 1 and known[-1] > known[0]
    # after the first op (the final add) its two inputs have their gradient
    assert known[0] == 3
    # the last frame's norms are those of the real backward
    cost.backward()
    for name, p in model.named_parameters():
        assert f"|grad| = {np.linalg.norm(p.grad):.2e}" in frames[-1].source, name


def test_the_graph_is_unchanged_and_a_later_backward_gives_the_same_grads():
    model, cost = lecture_net()
    viz.backward_steps(cost)
    viz.backward_steps(cost)  # twice: nothing was freed
    assert all(p.grad is None for p in model.parameters())
    cost.backward()
    twin_model, twin = lecture_net()
    twin.backward()
    for p, q in zip(model.parameters(), twin_model.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    with pytest.raises(RuntimeError, match="freed by a backward"):
        viz.backward_steps(cost)


def test_gradients_arriving_from_two_paths_are_summed():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True, name="x")
    y = x * 3.0
    z = (y * y + y).sum()
    frames = viz.backward_steps(z)
    assert [current_op(f.source) for f in frames] == ["sum", "add", "mul", "mul"]
    z.backward()
    assert f"|grad| = {np.linalg.norm(x.grad):.2e}" in frames[-1].source


class TwoGradsForOne(Function):
    """A broken op: one input, but its backward returns two gradients."""

    name = "two_grads_for_one"

    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, g):
        return g * 2.0, g


def test_an_op_whose_backward_returns_too_many_gradients_is_named_as_in_backward():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    z = TwoGradsForOne.apply(x).sum()
    message = r"two_grads_for_one: backward returned 2 gradient\(s\) for 1 input\(s\)"
    with pytest.raises(RuntimeError, match=message):
        viz.backward_steps(z)
    with pytest.raises(RuntimeError, match=message):  # the engine's own step says the same
        z.backward()


def test_bad_arguments():
    with pytest.raises(TypeError, match="expected a Tensor"):
        viz.backward_steps(np.ones(2))
    with pytest.raises(ValueError, match="not made by an op"):
        viz.backward_steps(Tensor(np.ones(2), requires_grad=True))
    with pytest.raises(ValueError, match=r"one-element output; this one has shape \(2,\)"):
        viz.backward_steps(Tensor(np.ones(2), requires_grad=True) * 2.0)
    _, cost = lecture_net()
    with pytest.raises(TypeError, match="group must be an nn.Module"):
        viz.save_html(cost, "x.html", group="model")


def test_group_and_rankdir_pass_through():
    model, cost = lecture_net()
    frames = viz.backward_steps(cost, group=model, rankdir="TB")
    assert "0: Dense(4, 6)" in frames[0].source and "rankdir=TB" in frames[0].source


# ----------------------------------------------------------------------------- the page
def test_save_html_is_one_self_contained_file(tmp_path):
    model, cost = lecture_net()
    path = viz.save_html(cost, tmp_path / "steps.html", group=model)
    assert os.listdir(tmp_path) == ["steps.html"] and str(path).endswith("steps.html")
    text = (tmp_path / "steps.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert text.count('class="tg-frame"') == 6 and text.count("<svg") == 6
    assert not re.search(r"https?:", text)  # nothing to fetch: no URL at all
    assert "<script src" not in text and "@import" not in text
    assert 'id="tg-prev"' in text and 'id="tg-next"' in text and 'type="range"' in text
    data = json.loads(re.search(r'<script type="application/json" id="tg-data">(.*?)</script>',
                                text, re.S).group(1))
    assert len(data["frames"]) == 6 and data["steps"] is True
    assert data["frames"][0]["title"].startswith("step 1 of 6: backward of add")
    weight = [k for k, n in data["nodes"].items() if n.get("name") == "0.weight"]
    assert len(weight) == 1
    node = data["nodes"][weight[0]]
    assert node["dtype"] == "float64" and node["role"] == "parameter" and node["gets_grad"]
    assert node["shape"] == "(4, 6)"
    assert {n["name"] for n in data["nodes"].values() if n["kind"] == "tensor"} >= {
        "X", "target", "cost", "2.bias"}
    assert set(node["value"]) == {"min", "mean", "max", "norm"}
    assert weight[0] not in data["frames"][0]["grads"]  # not known after the first step
    cost.backward()
    w = model[0].weight.grad
    assert data["frames"][-1]["grads"][weight[0]]["norm"] == f"{np.linalg.norm(w):.4g}"


def test_save_html_without_steps_shows_grad_as_it_is(tmp_path):
    model, cost = lecture_net()
    cost.backward(retain_graph=True)
    viz.save_html(cost, tmp_path / "g.html", steps=False)
    text = (tmp_path / "g.html").read_text(encoding="utf-8")
    assert text.count('class="tg-frame"') == 1
    data = json.loads(re.search(r'id="tg-data">(.*?)</script>', text, re.S).group(1))
    norms = {g["norm"] for g in data["frames"][0]["grads"].values()}
    assert f"{np.linalg.norm(model[0].weight.grad):.4g}" in norms


def test_save_html_failure_leaves_nothing(tmp_path, monkeypatch):
    _, cost = lecture_net()
    (tmp_path / "old.html").write_text("old")

    def broken(*args, **kwargs):
        raise RuntimeError("dot crashed")
    monkeypatch.setattr(viz, "_pipe", broken)
    with pytest.raises(RuntimeError, match="dot crashed"):
        viz.save_html(cost, tmp_path / "old.html")
    assert os.listdir(tmp_path) == ["old.html"] and (tmp_path / "old.html").read_text() == "old"


# ----------------------------------------------------------------------------- no `dot`
def test_without_dot_every_renderer_says_how_to_install(tmp_path, monkeypatch):
    _, cost = lecture_net()
    drawing = viz.draw(cost)
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    for call in (lambda: viz.save_html(cost, tmp_path / "p.html"),
                 lambda: viz.save(cost, tmp_path / "p.svg"),
                 lambda: drawing.pipe(format="svg"),
                 lambda: drawing.render(tmp_path / "r")):
        with pytest.raises(RuntimeError, match="apt-get install graphviz"):
            call()
    assert os.listdir(tmp_path) == []
    assert "digraph" in drawing.source  # the DOT text needs no `dot`


def test_dot_vanishing_after_the_check_is_reported_the_same(monkeypatch):
    """shutil.which finds it, but graphviz cannot run it: still our message."""
    _, cost = lecture_net()
    monkeypatch.setattr(viz.shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        viz.draw(cost).pipe(format="svg")


def test_without_dot_on_path_in_a_fresh_process(tmp_path):
    code = ("import numpy as np\n"
            "from tinygrad_mlp import Tensor, viz\n"
            "x = Tensor(np.ones(3), requires_grad=True)\n"
            "d = viz.draw((x * 2.0).sum())\n"
            "try:\n"
            "    d.pipe(format='svg')\n"
            "except RuntimeError as e:\n"
            "    print('MESSAGE', e)\n")
    env = dict(os.environ, PATH=str(tmp_path))  # an empty folder: no `dot`
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "MESSAGE" in proc.stdout and "apt-get install graphviz" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_custom_function_gets_its_frame():
    class Twice(Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    x = Tensor(np.ones(2), requires_grad=True)
    out = ops.Sum.apply(Twice.apply(x))
    assert [current_op(f.source) for f in viz.backward_steps(out)] == ["sum", "twice"]

