"""viz: graphviz drawings of the graph (DOT source, clusters, rendering, no side effects)."""

import gc
import html
import os
import re
import shutil
import sys
import weakref
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("graphviz", reason="the viz extra (pip install graphviz) is not installed")

from tinygrad_mlp import Tensor, nn, viz  # noqa: E402

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="the Graphviz program `dot` is not on PATH "
                               "(apt-get install graphviz); CI installs it")
SVG_NS = "{http://www.w3.org/2000/svg}"


# ----------------------------------------------------------------------------- helpers
_NODE = re.compile(r"^\s*(\w+) \[(.*)\]$")
_EDGE = re.compile(r"^\s*(\w+) -> (\w+)(?: \[(.*)\])?$")
_SUB = re.compile(r"^\s*subgraph (\w+) \{$")
_LABEL = re.compile(r"label=(<.*>|\"(?:[^\"\\]|\\.)*\"|\S+)")


def parse(dot):
    """DOT source (as the graphviz package writes it) -> nodes, edges, clusters.

    nodes: {id: attribute text}; edges: [(tail, head, attribute text)];
    clusters: {name: {"label": ..., "nodes": [...], "parent": enclosing cluster or None}}.
    """
    nodes, edges, clusters, stack = {}, [], {}, []
    for line in dot.splitlines():
        m = _SUB.match(line)
        if m:
            clusters[m.group(1)] = {"label": None, "nodes": [],
                                    "parent": stack[-1] if stack else None}
            stack.append(m.group(1))
            continue
        if line.strip() == "}":
            if stack:
                stack.pop()
            continue
        m = _EDGE.match(line)
        if m:
            edges.append((m.group(1), m.group(2), m.group(3) or ""))
            continue
        m = _NODE.match(line)
        if m:
            name, attrs = m.groups()
            if name in ("graph", "node", "edge"):
                if name == "graph" and stack:
                    clusters[stack[-1]]["label"] = _LABEL.search(attrs).group(1)
                continue
            nodes[name] = attrs
            if stack:
                clusters[stack[-1]]["nodes"].append(name)
    return nodes, edges, clusters


def label_of(attrs):
    return _LABEL.search(attrs).group(1)


def text_of(label):
    """The visible text of an HTML-like label, tags stripped and entities decoded."""
    if label.startswith("<"):
        label = re.sub(r"<[^>]*>", " ", label[1:-1])
    elif label.startswith('"'):
        label = label[1:-1]
    return " ".join(html.unescape(label).split())


def tensor_nodes(nodes):
    return {k: v for k, v in nodes.items() if k.startswith("t")}


def op_nodes(nodes):
    return {k: v for k, v in nodes.items() if k.startswith("op")}


def neuron(dtype=np.float64):
    x = Tensor(np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], dtype=dtype), name="x")
    w = Tensor(np.array([0.5, -1.0, 0.25], dtype=dtype), requires_grad=True, name="w")
    b = Tensor(np.array([0.1, 0.2, 0.3], dtype=dtype), requires_grad=True, name="b")
    y = (x * w + b).sigmoid()
    return x, w, b, y


def mlp(n=6, seed=0):
    rng = np.random.RandomState(seed)
    model = nn.Sequential(nn.Dense(784, 100, rng=rng), nn.Sigmoid(),
                          nn.Dense(100, 10, rng=rng), nn.Sigmoid())
    loss_fn = nn.BinaryCrossEntropy(reduction="sum")
    X = Tensor(rng.uniform(-1, 1, (n, 784)).astype(np.float32), name="X")
    y = rng.randint(0, 10, n)
    cost = loss_fn(model(X), y) + nn.l2_penalty(model, 0.01)
    return model, X, cost


def svg_nodes(svg_bytes):
    root = ET.fromstring(svg_bytes)
    return [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "node"]


# ----------------------------------------------------------------------------- DOT source
def test_neuron_nodes_and_edges_exactly():
    x, w, b, y = neuron()
    nodes, edges, clusters = parse(viz.draw(y).source)
    # 6 tensors: x, w, b, x*w, x*w+b, sigmoid; 3 ops: mul, add, sigmoid
    assert len(tensor_nodes(nodes)) == 6
    assert len(op_nodes(nodes)) == 3
    assert len(nodes) == 9 and not clusters
    ops = {k: label_of(v) for k, v in op_nodes(nodes).items()}
    assert sorted(ops.values()) == ["add", "mul", "sigmoid"]
    titles = {k: text_of(label_of(v)).split()[0] for k, v in tensor_nodes(nodes).items()}
    assert sorted(titles.values()) == ["add", "b", "mul", "sigmoid", "w", "x"]
    by_title = {v: k for k, v in titles.items()}
    by_op = {v: k for k, v in ops.items()}
    pairs = {(a, b_) for a, b_, _ in edges}
    expected = {
        (by_title["x"], by_op["mul"]), (by_title["w"], by_op["mul"]),
        (by_op["mul"], by_title["mul"]),
        (by_title["mul"], by_op["add"]), (by_title["b"], by_op["add"]),
        (by_op["add"], by_title["add"]),
        (by_title["add"], by_op["sigmoid"]), (by_op["sigmoid"], by_title["sigmoid"]),
    }
    assert pairs == expected and len(edges) == 8


def test_labels_carry_shape_and_dtype():
    x, w, b, y = neuron(np.float32)
    nodes, _, _ = parse(viz.draw(y).source)
    texts = [text_of(label_of(v)) for v in tensor_nodes(nodes).values()]
    assert sum("(2, 3) float32" in t for t in texts) == 4  # x, mul, add, sigmoid
    assert sum("(3,) float32" in t for t in texts) == 2  # w, b


def test_styles_differ_by_kind():
    x, w, b, y = neuron()
    nodes, _, _ = parse(viz.draw(y).source)
    fill = {text_of(label_of(v)).split()[0]: re.search(r'fillcolor="([^"]+)"', v).group(1)
            for v in tensor_nodes(nodes).values()}
    assert fill["w"] == fill["b"]  # both parameters
    assert len({fill["x"], fill["w"], fill["mul"], fill["sigmoid"]}) == 4
    assert fill["mul"] == fill["add"]  # both intermediate values


def test_gradient_norms_after_backward_only():
    x, w, b, y = neuron()
    before = viz.draw(y).source
    assert "|grad|" not in before
    loss = y.sum()
    loss.backward()
    after = viz.draw(loss).source
    for p in (w, b):
        expected = f"|grad| = {np.linalg.norm(p.grad):.2e}"
        assert expected in after
    assert after.count("|grad|") == 2  # only the leaves keep .grad
    assert "|grad|" not in viz.draw(loss, show_grad=False).source


def test_gradient_norm_of_retained_intermediate():
    x, w, b, y = neuron()
    y.retain_grad()
    loss = (y * y).sum()
    loss.backward()
    src = viz.draw(loss).source
    assert f"|grad| = {np.linalg.norm(y.grad):.2e}" in src
    assert src.count("|grad|") == 3


def test_show_data_small_arrays_only():
    x, w, b, y = neuron()
    big = Tensor(np.arange(40.0), requires_grad=True, name="big")
    out = (y.sum() + (big * 2).sum())
    plain = viz.draw(out).source
    assert "0.25]" not in plain
    src = viz.draw(out, show_data=True).source
    nodes, _, _ = parse(src)
    texts = {text_of(label_of(v)).split()[0]: text_of(label_of(v))
             for v in tensor_nodes(nodes).values()}
    assert "[0.5, -1, 0.25]" in texts["w"]
    assert "39" not in texts["big"]  # 40 elements: too many to show


def test_leaf_titles_param_input_const():
    a = Tensor(np.ones(3), requires_grad=True)
    c = Tensor(np.ones(3))
    out = a * c * 2.5
    nodes, _, _ = parse(viz.draw(out).source)
    titles = sorted(text_of(label_of(v)).split()[0] for v in tensor_nodes(nodes).values())
    assert titles == ["const", "input", "mul", "mul", "param"]
    assert "const 2.5" in viz.draw(out).source


def test_name_is_escaped():
    a = Tensor(np.ones(2), requires_grad=True, name='<a & "b">')
    out = (a * 2).sum()
    src = viz.draw(out).source
    assert "&lt;a &amp; &quot;b&quot;&gt;" in src
    assert '<a & "b">' not in src


def test_edges_into_ops_are_unlabelled_and_no_grad_edges_dashed():
    x, w, b, y = neuron()
    nodes, edges, _ = parse(viz.draw(y).source)
    assert all("label" not in attrs for _, _, attrs in edges)
    x_node = next(k for k, v in nodes.items() if text_of(label_of(v)).startswith("x "))
    dashed = [(a, b_) for a, b_, attrs in edges if "dashed" in attrs]
    assert [a for a, _ in dashed] == [x_node]  # x does not require grad


def test_fused_bce_sigmoid_input_gets_no_gradient_edge():
    model, X, cost = mlp()
    nodes, edges, _ = parse(viz.draw(cost).source)
    op = next(k for k, v in op_nodes(nodes).items()
              if label_of(v) == "sigmoid_binary_cross_entropy")
    into = [(t, attrs) for t, h, attrs in edges if h == op]
    assert len(into) == 3  # z, a = sigmoid(z), targets
    z, a, y = into
    assert "dashed" not in z[1] and "dashed" in a[1] and "dashed" in y[1]
    assert text_of(label_of(nodes[y[0]])).startswith("target")


def test_ids_are_stable():
    _, _, _, y1 = neuron()
    _, _, _, y2 = neuron()
    assert viz.draw(y1).source == viz.draw(y2).source
    assert viz.draw(y1).source == viz.draw(y1).source


def test_draw_leaf_and_output_style():
    w = Tensor(np.ones(3), requires_grad=True, name="w")
    nodes, edges, _ = parse(viz.draw(w).source)
    assert list(nodes) == ["t0"] and not edges
    assert "penwidth=2" in nodes["t0"]


def test_bad_arguments():
    _, _, _, y = neuron()
    with pytest.raises(TypeError, match="Tensor"):
        viz.draw(np.ones(3))
    with pytest.raises(ValueError, match="rankdir"):
        viz.draw(y, rankdir="XY")
    with pytest.raises(ValueError, match="collapse"):
        viz.draw(y, collapse=True)
    with pytest.raises(TypeError, match="group"):
        viz.draw(y, group="model")
    with pytest.raises(ValueError, match="max_nodes"):
        viz.draw(y, max_nodes=0)


def test_rankdir():
    _, _, _, y = neuron()
    assert "rankdir=TB" in viz.draw(y, rankdir="TB").source
    assert "rankdir=LR" in viz.draw(y).source


def test_missing_graphviz_package_says_how_to_install(monkeypatch):
    _, _, _, y = neuron()
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match=re.escape('pip install "tinygrad-mlp[viz]"')):
        viz.draw(y)


# ----------------------------------------------------------------------------- modules
def test_group_one_cluster_per_module_with_params_inside():
    model, X, cost = mlp()
    cost.backward()
    nodes, edges, clusters = parse(viz.draw(cost, group=model).source)
    labels = {c["label"]: c for c in clusters.values()}
    assert [text_of(lab) for lab in labels] == [
        "0: Dense(784, 100)", "1: Sigmoid", "2: Dense(100, 10)", "3: Sigmoid",
        "loss: BinaryCrossEntropy(sum)"]
    assert "cluster_loss" in clusters
    texts = {k: text_of(label_of(v)) for k, v in nodes.items()}
    for name, c in zip(("0", "2"), (clusters["cluster_0"],
                                    clusters["cluster_2"])):
        inside = [texts[k] for k in c["nodes"]]
        w, b = model[int(name)].weight, model[int(name)].bias
        assert any(t.startswith(f"{name}.weight {_shape(w.shape)}") for t in inside)
        assert any(t.startswith(f"{name}.bias {_shape(b.shape)}") for t in inside)
        assert sum(label_of(nodes[k]) == "dense" for k in c["nodes"]) == 1  # the op
        assert len(c["nodes"]) == 4  # weight, bias, op, output
        assert f"|grad| = {np.linalg.norm(w.grad):.2e}" in " ".join(inside)
    for cname in ("cluster_1", "cluster_3"):
        assert [label_of(nodes[k]) for k in clusters[cname]["nodes"]][0] == "sigmoid"
        assert len(clusters[cname]["nodes"]) == 2
    loss_ops = [label_of(nodes[k]) for k in clusters["cluster_loss"]["nodes"]
                if k.startswith("op")]
    assert loss_ops == ["sigmoid_binary_cross_entropy"]
    # outside any module: X, the targets, l2_penalty (op + value), add (op + cost)
    in_clusters = {k for c in clusters.values() for k in c["nodes"]}
    outside = sorted(texts[k].split()[0] for k in nodes if k not in in_clusters)
    assert outside == ["X", "add", "add", "l2_penalty", "l2_penalty", "target"]
    # same nodes and edges as the flat drawing
    flat_nodes, flat_edges, _ = parse(viz.draw(cost).source)
    assert len(flat_nodes) == len(nodes) == 20 and len(flat_edges) == len(edges) == 22


def _shape(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def test_group_nested_modules_nest_clusters():
    rng = np.random.RandomState(0)
    model = nn.Sequential(nn.Sequential(nn.Dense(4, 3, rng=rng), nn.Tanh()),
                          nn.Dense(3, 2, rng=rng))
    out = model(Tensor(np.ones((2, 4), np.float32))).sum()
    _, _, clusters = parse(viz.draw(out, group=model).source)
    by_label = {text_of(c["label"]): name for name, c in clusters.items()}
    assert set(by_label) == {"0: Sequential", "0.0: Dense(4, 3)", "0.1: Tanh",
                             "1: Dense(3, 2)"}
    assert clusters[by_label["0.0: Dense(4, 3)"]]["parent"] == by_label["0: Sequential"]
    assert clusters[by_label["0.1: Tanh"]]["parent"] == by_label["0: Sequential"]
    assert clusters[by_label["1: Dense(3, 2)"]]["parent"] is None


def test_group_ops_of_the_model_itself():
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Dense(3, 2, seed=0)

        def forward(self, x):
            return (self.fc(x) * 2.0).relu()

    net = Net()
    out = net(Tensor(np.ones((1, 3), np.float32))).sum()
    nodes, _, clusters = parse(viz.draw(out, group=net).source)
    labels = {text_of(c["label"]): c for c in clusters.values()}
    assert set(labels) == {"Net", "fc: Dense(3, 2)"}
    net_ops = sorted(label_of(nodes[k]) for k in labels["Net"]["nodes"] if k.startswith("op"))
    assert net_ops == ["mul", "relu"]
    assert clusters["cluster_fc"]["parent"] == "cluster_model"


def test_collapse_one_node_per_module():
    model, X, cost = mlp()
    cost.backward()
    nodes, edges, clusters = parse(viz.draw(cost, group=model, collapse=True).source)
    assert not clusters
    modules = [text_of(label_of(v)) for k, v in nodes.items() if k.startswith("m")]
    heads = ("0: Dense(784, 100)", "1: Sigmoid", "2: Dense(100, 10)", "3: Sigmoid",
             "loss: BinaryCrossEntropy(sum)")
    assert len(modules) == 5
    assert all(t.strip().startswith(h) for t, h in zip(modules, heads))
    m0 = modules[0]
    assert "0.weight (784, 100)" in m0 and "out (6, 100)" in m0
    assert "out (784, 100)" not in m0
    # X -> m0, m0 -> m1, ..., no self loops, no duplicate edges
    assert len({(a, b) for a, b, _ in edges}) == len(edges)
    assert all(a != b for a, b, _ in edges)


def test_group_leaves_graph_without_module_info_flat():
    _, _, _, y = neuron()
    model = nn.Sequential(nn.Dense(3, 3, seed=0))
    _, _, clusters = parse(viz.draw(y, group=model).source)
    assert not clusters  # no op of y was applied by a module


# ----------------------------------------------------------------------------- no side effects
def test_drawing_does_not_modify_the_graph():
    model, X, cost = mlp()
    params = model.parameters()
    data_before = [p.data.copy() for p in params]
    parents_before = [id(p) for p in cost.parents]
    viz.draw(cost, group=model, show_data=True)
    viz.draw(cost, group=model, collapse=True)
    assert all(p.grad is None for p in params)
    assert [id(p) for p in cost.parents] == parents_before
    cost.backward()  # still works after drawing
    grads = [p.grad.copy() for p in params]
    viz.draw(cost, group=model)  # and drawing after backward changes nothing
    for p, d, g in zip(params, data_before, grads):
        np.testing.assert_array_equal(p.data, d)
        np.testing.assert_array_equal(p.grad, g)


def test_backward_after_drawing_matches_undrawn():
    _, w1, _, y1 = neuron()
    _, w2, _, y2 = neuron()
    viz.draw(y1)
    l1, l2 = y1.sum(), y2.sum()
    viz.draw(l1)
    l1.backward()
    l2.backward()
    np.testing.assert_array_equal(w1.grad, w2.grad)


def test_digraph_keeps_no_tensor_alive():
    model, X, cost = mlp()
    cost.backward()
    hidden = cost.parents[0].parents[0]  # an intermediate value
    ref, ref_x = weakref.ref(hidden), weakref.ref(X)
    ref_data = weakref.ref(hidden.data)
    d = viz.draw(cost, group=model, show_data=True)
    d2 = viz.draw(cost, group=model, collapse=True)
    del hidden, cost, X, model
    gc.collect()
    assert ref() is None and ref_x() is None
    assert ref_data() is None
    assert "dense" in d.source and d2.source  # the drawings are still alive


# ----------------------------------------------------------------------------- big graphs
def test_deep_chain_draws_without_recursion_error():
    t = Tensor(np.ones(2), requires_grad=True)
    s = t
    for _ in range(5000):
        s = s.tanh()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # prove the walk is iterative
    try:
        d = viz.draw(s)
    finally:
        sys.setrecursionlimit(limit)
    nodes, edges, _ = parse(d.source)
    assert len(tensor_nodes(nodes)) == 5001 and len(op_nodes(nodes)) == 5000
    assert len(edges) == 10000


def test_max_nodes_cuts_the_drawing():
    t = Tensor(np.ones(2), requires_grad=True)
    s = t
    for _ in range(100):
        s = s * 1.5
    nodes, edges, _ = parse(viz.draw(s, max_nodes=10).source)
    assert len(tensor_nodes(nodes)) == 10
    assert "cut" in nodes and "max_nodes=10" in nodes["cut"]
    assert any(a == "cut" for a, _, _ in edges)
    full, _, _ = parse(viz.draw(s, max_nodes=1000).source)
    assert "cut" not in full and len(tensor_nodes(full)) == 201


# ----------------------------------------------------------------------------- rendering
@needs_dot
def test_svg_has_one_node_element_per_node():
    x, w, b, y = neuron()
    y.sum().backward()
    d = viz.draw(y, show_data=True)
    nodes, _, _ = parse(d.source)
    svg = d.pipe(format="svg")
    assert len(svg_nodes(svg)) == len(nodes) == 9


@needs_dot
def test_svg_of_grouped_mlp_parses():
    model, X, cost = mlp()
    cost.backward()
    for kwargs in ({}, {"rankdir": "TB"}, {"collapse": True}):
        d = viz.draw(cost, group=model, **kwargs)
        nodes, _, clusters = parse(d.source)
        root = ET.fromstring(d.pipe(format="svg"))
        groups = [g.get("class") for g in root.iter(f"{SVG_NS}g")]
        assert groups.count("node") == len(nodes)
        assert groups.count("cluster") == len(clusters)


@needs_dot
def test_svg_with_awkward_names_parses():
    a = Tensor(np.ones(2), requires_grad=True, name='<w> & "q"')
    d = viz.draw((a * 2).sum(), show_data=True)
    root = ET.fromstring(d.pipe(format="svg"))
    text = " ".join(t.text or "" for t in root.iter(f"{SVG_NS}text"))
    assert '<w> & "q"' in text


@needs_dot
def test_save_svg_png_pdf_atomically(tmp_path):
    model, X, cost = mlp()
    cost.backward()
    svg = viz.save(cost, tmp_path / "graph.svg", group=model, rankdir="TB")
    png = viz.save(viz.draw(cost), str(tmp_path / "graph.png"))
    pdf = viz.save(cost, tmp_path / "g.out", format="pdf")
    assert svg == str(tmp_path / "graph.svg") and png == str(tmp_path / "graph.png")
    assert sorted(os.listdir(tmp_path)) == ["g.out", "graph.png", "graph.svg"]
    assert len(svg_nodes((tmp_path / "graph.svg").read_bytes())) == 20
    assert (tmp_path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert open(pdf, "rb").read(5) == b"%PDF-"
    viz.save(cost, tmp_path / "graph.svg")  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["g.out", "graph.png", "graph.svg"]


@needs_dot
def test_save_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    _, _, _, y = neuron()
    target = tmp_path / "graph.svg"
    target.write_text("old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(viz.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        viz.save(y, target)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["graph.svg"]


def test_save_without_dot_says_how_to_install(tmp_path, monkeypatch):
    _, _, _, y = neuron()
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        viz.save(y, tmp_path / "graph.svg")
    assert os.listdir(tmp_path) == []


def test_save_bad_arguments(tmp_path):
    _, _, _, y = neuron()
    with pytest.raises(ValueError, match="suffix"):
        viz.save(y, tmp_path / "graph.txt")
    with pytest.raises(TypeError, match="Digraph"):
        viz.save(viz.draw(y), tmp_path / "graph.svg", rankdir="TB")
    with pytest.raises(TypeError, match="Tensor or a graphviz.Digraph"):
        viz.save("y", tmp_path / "graph.svg")
    assert os.listdir(tmp_path) == []


def test_non_finite_gradient_norm_is_shown_without_warning():
    w = Tensor(np.ones(3), requires_grad=True, name="w")
    w.grad = np.array([np.inf, 1.0, np.nan])
    src = viz.draw(w).source
    assert "|grad| = nan" in src
    w.grad = np.full(3, 1e300)
    assert "|grad| = inf" in viz.draw(w).source or "|grad| = 1.73e+300" in viz.draw(w).source


def test_collapse_with_ops_of_the_model_itself():
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Dense(3, 2, seed=0)

        def forward(self, x):
            return (self.fc(x) * 2.0).relu()

    net = Net()
    out = net(Tensor(np.ones((1, 3), np.float32), name="x")).sum()
    out.backward()
    nodes, edges, _ = parse(viz.draw(out, group=net, collapse=True).source)
    modules = [text_of(label_of(v)) for k, v in nodes.items() if k.startswith("m")]
    assert len(modules) == 1  # everything of Net, fc included, is one node
    assert modules[0].startswith("Net fc.weight (3, 2) |grad|")
    assert "fc.bias (2,)" in modules[0]
