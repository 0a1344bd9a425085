"""Graphviz drawings of a computation graph: what was computed from what, with shapes.

    from tinygrad_mlp import viz
    d = viz.draw(loss)                  # a graphviz.Digraph; d.source is the DOT text
    d = viz.draw(loss, group=model)     # one labelled box (cluster) per module
    viz.save(loss, "graph.svg", group=model)

Every Tensor is a box (its name, or the op that made it; shape; dtype; the gradient's L2
norm once backward has set `.grad`), every op application an ellipse, and the arrows go
the way data flows: input tensor -> op -> output tensor. A grey dashed arrow carries no
gradient back (its tensor does not require grad, or the op ignores that input's gradient).

Colours: parameters (leaves with requires_grad) orange, inputs and constants grey,
intermediate values blue, the tensor drawn from green.

Drawing only reads the graph: it changes no `.grad`, `.data` or parents, and the returned
Digraph holds only strings (no Tensor or array is kept alive by it). The walk is
iterative, so a chain of many thousand ops draws without hitting the recursion limit.

The Python package `graphviz` is an optional extra (`pip install "tinygrad-mlp[viz]"`);
rendering (`save`, `Digraph.pipe`, `Digraph.render`) also needs the `dot` program
(Debian: `apt-get install graphviz`).
"""

from __future__ import annotations

import html
import os
import shutil
from collections import deque

import numpy as np

from ._files import atomic_write
from .tensor import Tensor

__all__ = ["draw", "save", "FORMATS"]

FORMATS = ("svg", "png", "pdf")  # what `save` picks from a path's suffix

# ----------------------------------------------------------------------------- styling
_FONT = "Helvetica"
_STYLE = {  # kind -> (fill colour, border colour)
    "param": ("#fde2c4", "#c9731f"),
    "input": ("#ececec", "#8a8a8a"),
    "value": ("#dbe9f6", "#4a7ab5"),
    "output": ("#c8e6c9", "#2e7d32"),
    "op": ("#fffbe6", "#8d7a3a"),
    "module": ("#f3e5f5", "#7b4f8a"),
    "cut": ("#ffffff", "#999999"),
}
_GRAD_COLOR = "#a33a2c"
_HIGHLIGHT = {"fillcolor": "#ffcdd2", "color": "#d50000", "fontcolor": "#b71c1c",
              "penwidth": "2.5"}  # ops marked by `highlight` (e.g. a failed check_ops)
_DATA_COLOR = "#333333"
_DIM_COLOR = "#555555"
_NO_GRAD_EDGE = {"style": "dashed", "color": "#9a9a9a"}
_CLUSTER = {"style": "rounded,filled", "fillcolor": "#f7f7fb", "color": "#9aa0b4",
            "fontname": _FONT, "fontsize": "11", "labeljust": "l"}
_LOSS_CLUSTER = dict(_CLUSTER, fillcolor="#fbf3f3", color="#c2a0a0")
_DATA_MAX_ELEMENTS = 16

# Inputs an op reads but sends no gradient to (drawn dashed). A Function may declare its
# own with a class attribute `no_grad_inputs = (index, ...)`.
_NO_GRAD_INPUTS = {"sigmoid_binary_cross_entropy": (1,)}  # a = sigmoid(z): all goes to z


def _graphviz():
    try:
        import graphviz
    except ImportError as e:
        raise ImportError('tinygrad_mlp.viz needs the Python package graphviz: '
                          'pip install "tinygrad-mlp[viz]" (rendering also needs the `dot` '
                          'program: apt-get install graphviz)') from e
    return graphviz


# ----------------------------------------------------------------------------- labels
def _shape_text(shape):
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _grad_norm_text(grad):
    """`|grad| = 1.23e-02`: the L2 norm of the gradient, as `np.linalg.norm` gives it."""
    with np.errstate(all="ignore"):
        norm = float(np.linalg.norm(np.asarray(grad)))
    return f"|grad| = {norm:.2e}"


def _data_text(data):
    with np.errstate(all="ignore"):
        if data.ndim == 0:
            value = data.item()
            return f"{value:.4g}" if isinstance(value, float) else str(value)
        return np.array2string(data, separator=", ", max_line_width=48,
                               formatter={"float_kind": lambda v: f"{v:.4g}"})


def _html_lines(text):
    return "<br/>".join(html.escape(line) for line in text.splitlines())


def _tensor_label(title, t, show_grad, show_data):
    data = t.data
    parts = [f"<b>{html.escape(title)}</b>",
             f'<font point-size="10" color="{_DIM_COLOR}">'
             f"{html.escape(_shape_text(data.shape))} {html.escape(str(data.dtype))}</font>"]
    if show_grad and t.grad is not None:
        parts.append(f'<font point-size="10" color="{_GRAD_COLOR}">'
                     f"{html.escape(_grad_norm_text(t.grad))}</font>")
    if show_data and data.size <= _DATA_MAX_ELEMENTS:
        parts.append(f'<font point-size="9" face="Courier" color="{_DATA_COLOR}">'
                     f"{_html_lines(_data_text(data))}</font>")
    return "<" + "<br/>".join(parts) + ">"


def _tensor_kind(t, is_root):
    if is_root:
        return "output"
    if t._ctx is not None:
        return "value"
    return "param" if t.requires_grad else "input"


def _leaf_title(t):
    if t.requires_grad:
        return "param"
    return "const" if t.data.ndim == 0 else "input"


def _module_desc(m):
    cls = type(m).__name__
    try:
        extra = m.extra_repr()
    except Exception:  # a user's module with a broken extra_repr still gets drawn
        extra = ""
    if not extra and isinstance(getattr(m, "reduction", None), str):
        extra = m.reduction
    return f"{cls}({extra})" if extra else cls


def _is_loss(m):
    from . import nn

    return isinstance(m, (nn.BinaryCrossEntropy, nn.CrossEntropy, nn.MSE))


def _no_grad_inputs(fn):
    own = getattr(fn, "no_grad_inputs", None)
    if own is not None:
        return tuple(own)
    return _NO_GRAD_INPUTS.get(getattr(fn, "name", None), ())


# ----------------------------------------------------------------------------- the walk
def _select(root, max_nodes):
    """ids of the `max_nodes` tensors nearest to `root` (breadth first)."""
    keep = {id(root)}
    queue = deque([root])
    while queue and len(keep) < max_nodes:
        for p in queue.popleft().parents:
            if id(p) not in keep:
                if len(keep) >= max_nodes:
                    break
                keep.add(id(p))
                queue.append(p)
    return keep


def _topological(root, keep):
    """The tensors reachable from `root` (within `keep`), inputs before outputs.

    Iterative depth-first post-order; a tensor's first input comes first, so the drawing
    reads in the order the expression was written.
    """
    order = []
    seen = set()
    stack = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        for p in reversed(t.parents):
            if id(p) not in seen and (keep is None or id(p) in keep):
                stack.append((p, False))
    return order


def _loss_targets(order):
    """ids of the unnamed constant inputs of ops applied by a loss module: the targets."""
    found = set()
    for t in order:
        ctx = t._ctx
        if ctx is not None and ctx.module is not None and _is_loss(ctx.module):
            for p in ctx.parents[1:]:
                if (p._ctx is None and p.name is None and not p.requires_grad
                        and p.data.ndim > 0):
                    found.add(id(p))
    return found


class _Clusters:
    """Which module cluster each op / tensor belongs to, for `group=model`."""

    def __init__(self, model):
        self.names = {}  # id(module) -> dotted name ("" for the model itself)
        self.modules = {}  # name -> module
        for name, m in model.named_modules():
            if id(m) not in self.names:
                self.names[id(m)] = name
                self.modules[name] = m
        self.param_names = {}  # id(param) -> ("0.weight", owner module name)
        for name, p in model.named_parameters():
            self.param_names[id(p)] = (name, name.rpartition(".")[0])
        self.outside = {}  # id(module) -> key, for modules not in the model (the loss)
        self.outside_modules = {}
        self.used = {}  # cluster key -> True, in first-use order

    def key_of_module(self, m):
        if m is None:
            return None
        name = self.names.get(id(m))
        if name is not None:
            key = ("in", name)
        else:
            key = self.outside.get(id(m))
            if key is None:
                key = ("out", len(self.outside))
                self.outside[id(m)] = key
                self.outside_modules[key] = m
        self.used[key] = True
        return key

    def key_of_param(self, t):
        info = self.param_names.get(id(t))
        if info is None:
            return None
        key = ("in", info[1])
        self.used[key] = True
        return key

    def parent(self, key):
        """The enclosing cluster: the nearest module whose name is a dotted prefix."""
        if key[0] != "in" or key[1] == "":
            return None
        name = key[1]
        while "." in name:
            name = name.rpartition(".")[0]
            if name in self.modules:
                return ("in", name)
        return ("in", "") if ("in", "") in self.used else None

    def label(self, key):
        if key[0] == "in":
            name = key[1]
            desc = _module_desc(self.modules[name])
            return f"{name}: {desc}" if name else desc
        m = self.outside_modules[key]
        return f"loss: {_module_desc(m)}" if _is_loss(m) else _module_desc(m)

    def all_keys(self):
        """Every cluster to draw (used ones and their enclosing ones), outermost first."""
        keys = list(self.used)
        seen = set(keys)
        i = 0
        while i < len(keys):
            up = self.parent(keys[i])
            if up is not None and up not in seen:
                seen.add(up)
                keys.append(up)
            i += 1
        return sorted(keys, key=self.depth)

    def depth(self, key):
        d = 0
        while True:
            key = self.parent(key)
            if key is None:
                return d
            d += 1

    def top(self, key):
        while True:
            up = self.parent(key)
            if up is None:
                return key
            key = up

    def cluster_id(self, key, taken):
        if key[0] == "in":
            base = "cluster_" + ("".join(c if c.isalnum() else "_" for c in key[1]) or "model")
        else:
            m = self.outside_modules[key]
            base = "cluster_loss" if _is_loss(m) else "cluster_" + type(m).__name__
        cid, n = base, 1
        while cid in taken:
            cid = f"{base}_{n}"
            n += 1
        taken.add(cid)
        return cid


# ----------------------------------------------------------------------------- draw
def draw(tensor, *, show_grad=True, show_data=False, rankdir="LR", group=None,
         collapse=False, max_nodes=None, highlight=()):
    """A graphviz.Digraph of the graph that computed `tensor`.

    One box per Tensor (its `name`, else the op that made it, else "input"/"const"/"param"
    for a leaf; shape and dtype; `|grad| = ...` when `.grad` is set and `show_grad`; the
    values of arrays of at most 16 elements when `show_data`), one ellipse per op
    application, arrows in the direction data flows. Grey dashed arrows carry no gradient.

    rankdir: "LR" (left to right), "TB" (top to bottom), "RL" or "BT".
    group: an nn.Module (the model). Each of its modules that applied ops becomes a
        labelled cluster ("0: Dense(784, 100)") holding those ops, their outputs and the
        module's own parameters (labelled "0.weight"); ops of a module outside the model
        (the loss function) form a cluster "loss"; ops outside any module stay outside.
    collapse: with `group`, draw each top-level module as a single node instead.
    max_nodes: draw only the `max_nodes` tensors nearest to `tensor`; the cut is marked.
    highlight: ops to mark in red: OpCheck objects (from `gradcheck.check_ops`) or op
        indices (positions in creation order, as OpCheck.index).

    The Digraph holds only strings: node ids come from a counter ("t0", "op0", ...) in
    the order inputs are first needed, so they are stable for the same graph.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"viz.draw: expected a Tensor, got {type(tensor).__name__}")
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise ValueError(f"viz.draw: rankdir must be 'LR', 'TB', 'RL' or 'BT', got {rankdir!r}")
    if max_nodes is not None and (isinstance(max_nodes, bool)
                                  or not isinstance(max_nodes, (int, np.integer))
                                  or max_nodes < 1):
        raise ValueError(f"viz.draw: max_nodes must be a positive integer or None, "
                         f"got {max_nodes!r}")
    if group is not None:
        from .nn import Module

        if not isinstance(group, Module):
            raise TypeError(f"viz.draw: group must be an nn.Module (the model), "
                            f"got {type(group).__name__}")
    if collapse and group is None:
        raise ValueError("viz.draw: collapse=True needs group=model")
    gv = _graphviz()
    marked = _highlighted(tensor, highlight)

    keep = _select(tensor, int(max_nodes)) if max_nodes is not None else None
    order = _topological(tensor, keep)
    clusters = _Clusters(group) if group is not None else None

    # Phase 1: plain data (strings only) for every node and edge.
    tid = {}  # id(Tensor) -> node id, only while drawing
    nodes = []  # (node id, attrs dict, cluster key or None)
    edges = []  # (tail, head, attrs dict)
    places = {}  # node id -> cluster key
    shapes = {}  # tensor node id -> shape text
    leaves = set()  # leaf tensor node ids
    targets = _loss_targets(order)
    param_lines = {}  # cluster key -> label lines of its parameters (collapse)
    n_ops = 0
    cut = False
    root_id = id(tensor)
    for t in order:
        name = f"t{len(tid)}"
        tid[id(t)] = name
        ctx = t._ctx
        is_root = id(t) == root_id
        kind = _tensor_kind(t, is_root)
        key = None
        title = t.name
        if ctx is None:
            leaves.add(name)
            if clusters is not None and t.requires_grad:
                key = clusters.key_of_param(t)
                if key is not None:
                    title = clusters.param_names[id(t)][0]
            if title is None and id(t) in targets:
                title = "target"
            if title is None:
                title = _leaf_title(t)
                if title == "const" and not show_data:
                    title = f"const {_data_text(t.data)}"
        else:
            fn = ctx.function
            op_name = getattr(fn, "name", None) or fn.__name__.lower()
            if title is None:
                title = op_name
            if clusters is not None:
                key = clusters.key_of_module(ctx.module)
            op = f"op{n_ops}"
            n_ops += 1
            fill, border = _STYLE["op"]
            op_attrs = {"label": op_name, "shape": "ellipse", "fillcolor": fill,
                        "color": border}
            if id(ctx) in marked:
                op_attrs.update(_HIGHLIGHT)
            nodes.append((op, op_attrs, key))
            places[op] = key
            no_grad = _no_grad_inputs(fn)
            for i, p in enumerate(t.parents):
                pid = tid.get(id(p))
                if pid is None:  # not drawn: beyond max_nodes
                    cut = True
                    edges.append(("cut", op, dict(_NO_GRAD_EDGE)))
                    continue
                attrs = dict(_NO_GRAD_EDGE) if (not p.requires_grad or i in no_grad) else {}
                edges.append((pid, op, attrs))
            edges.append((op, name, {}))
        fill, border = _STYLE[kind]
        attrs = {"label": _tensor_label(title, t, show_grad, show_data),
                 "fillcolor": fill, "color": border}
        if is_root:
            attrs["penwidth"] = "2"
        nodes.append((name, attrs, key))
        places[name] = key
        shapes[name] = _shape_text(t.shape)
        if collapse and key is not None and ctx is None:
            line = f"{title} {_shape_text(t.shape)}"
            if show_grad and t.grad is not None:
                line += f"  {_grad_norm_text(t.grad)}"
            param_lines.setdefault(key, []).append(line)
    root_node = tid[root_id]

    g = gv.Digraph(name="tinygrad_mlp", node_attr={"shape": "box", "style": "rounded,filled",
                                            "fontname": _FONT, "fontsize": "11",
                                            "margin": "0.12,0.06"},
                   edge_attr={"color": "#444444", "arrowsize": "0.7"},
                   graph_attr={"rankdir": rankdir, "fontname": _FONT, "bgcolor": "white",
                               "nodesep": "0.25", "ranksep": "0.35"})
    if cut:
        fill, border = _STYLE["cut"]
        nodes.insert(0, ("cut", {"label": f"… (cut at max_nodes={max_nodes})",
                                 "shape": "plaintext", "fillcolor": fill,
                                 "fontcolor": _DIM_COLOR}, None))

    if collapse:
        nodes, edges = _collapse(nodes, edges, places, shapes, leaves, clusters, param_lines,
                                 root_node)
        return _emit(g, nodes, edges, None)
    return _emit(g, nodes, edges, clusters)


def _highlighted(tensor, highlight):
    """ids of the Contexts of the ops to mark: OpCheck objects or creation-order indices."""
    if highlight is None:
        return set()
    if not isinstance(highlight, (list, tuple, set, frozenset)):
        highlight = [highlight]  # a single OpCheck or index
    wanted = []
    for h in highlight:
        i = getattr(h, "index", h)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"viz.draw: highlight takes OpCheck objects or op indices, got "
                            f"{type(h).__name__}")
        wanted.append(int(i))
    if not wanted:
        return set()
    from .gradcheck import graph_ops

    ops = graph_ops(tensor)
    bad = [i for i in wanted if not 0 <= i < len(ops)]
    if bad:
        raise ValueError(f"viz.draw: highlight {bad}: the graph has {len(ops)} ops "
                         f"(indices 0 to {len(ops) - 1})")
    return {id(ops[i]._ctx) for i in wanted}


def _collapse(nodes, edges, places, shapes, leaves, clusters, param_lines, root_node):
    """Replace everything inside each top-level cluster by one node for the module."""
    rep = {}
    module_node = {}  # top cluster key -> node id
    for node, key in places.items():
        if key is None or node == root_node:
            continue
        top = clusters.top(key)
        if top not in module_node:
            module_node[top] = f"m{len(module_node)}"
        rep[node] = module_node[top]
    outputs = {}  # module node id -> shapes of the tensors leaving it
    new_edges = {}
    for tail, head, attrs in edges:
        a, b = rep.get(tail, tail), rep.get(head, head)
        if a == b:
            continue
        if a != tail and tail in shapes and tail not in leaves:
            outs = outputs.setdefault(a, [])
            if shapes[tail] not in outs:
                outs.append(shapes[tail])
        if (a, b) not in new_edges or not attrs:  # a gradient-carrying arrow wins
            new_edges[(a, b)] = attrs
    lines_of = {}  # top cluster key -> parameter lines (clusters are known only now)
    for key, lines in param_lines.items():
        lines_of.setdefault(clusters.top(key), []).extend(lines)
    fill, border = _STYLE["module"]
    new_nodes = []
    done = set()
    for node, attrs, _key in nodes:
        m = rep.get(node)
        if m is None:
            new_nodes.append((node, attrs, None))
        elif m not in done:
            done.add(m)
            top = clusters.top(places[node])
            lines = [f"<b>{html.escape(clusters.label(top))}</b>"]
            for line in lines_of.get(top, ()):
                lines.append(f'<font point-size="10" color="{_DIM_COLOR}">'
                             f"{html.escape(line)}</font>")
            for shape in outputs.get(m, ()):
                lines.append(f'<font point-size="10" color="{_DIM_COLOR}">'
                             f"out {html.escape(shape)}</font>")
            new_nodes.append((m, {"label": "<" + "<br/>".join(lines) + ">", "shape": "box3d",
                                  "style": "filled", "fillcolor": fill, "color": border},
                              None))
    return new_nodes, [(a, b, attrs) for (a, b), attrs in new_edges.items()]


def _emit(g, nodes, edges, clusters):
    if clusters is None:
        for node, attrs, _key in nodes:
            g.node(node, **attrs)
    else:
        keys = clusters.all_keys()
        taken = set()
        subs = {}
        for key in keys:
            style = _CLUSTER if key[0] == "in" else _LOSS_CLUSTER
            label = "<<b>" + html.escape(clusters.label(key)) + "</b>>"
            subs[key] = g.__class__(name=clusters.cluster_id(key, taken),
                                    graph_attr=dict(style, label=label))
        for node, attrs, key in nodes:
            (subs[key] if key is not None else g).node(node, **attrs)
        # innermost first, so each is complete when attached; siblings in first-use order
        for key in sorted(keys, key=clusters.depth, reverse=True):
            up = clusters.parent(key)
            (subs[up] if up is not None else g).subgraph(subs[key])
    for tail, head, attrs in edges:
        g.edge(tail, head, **attrs)
    return g


# ----------------------------------------------------------------------------- save
def save(graph, path, format=None, **draw_kwargs):
    """Render a Tensor's graph (drawn with `draw(graph, **draw_kwargs)`) or a Digraph to
    `path` with `dot`; the format comes from the suffix (.svg, .png, .pdf) unless given.

    Written atomically: rendered to a temporary file in the same folder, then renamed, so
    `path` is either the old file or the complete new one. Returns `path`.
    """
    path = os.fspath(path)
    if format is None:
        format = os.path.splitext(path)[1].lstrip(".").lower()
        if format not in FORMATS:
            raise ValueError(f"viz.save: cannot tell the format from {path!r}: use a .svg, "
                             f".png or .pdf suffix, or pass format=")
    if isinstance(graph, Tensor):
        graph = draw(graph, **draw_kwargs)
    else:
        gv = _graphviz()
        if not isinstance(graph, (gv.Digraph, gv.Graph)):
            raise TypeError(f"viz.save: expected a Tensor or a graphviz.Digraph, got "
                            f"{type(graph).__name__}")
        if draw_kwargs:
            raise TypeError(f"viz.save: drawing options {sorted(draw_kwargs)} only apply "
                            f"when saving a Tensor, not a Digraph")
    gv = _graphviz()
    missing = ("viz.save: the Graphviz program `dot` was not found on PATH; install "
               "Debian's graphviz package: apt-get install graphviz")
    if shutil.which("dot") is None:
        raise RuntimeError(missing)
    try:
        data = graph.pipe(format=format)
    except gv.ExecutableNotFound:
        raise RuntimeError(missing) from None
    return atomic_write(path, lambda f: f.write(data))
