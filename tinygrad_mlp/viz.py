"""Graphviz drawings of a computation graph: what was computed from what, with shapes.

    from tinygrad_mlp import viz
    d = viz.draw(loss)                  # a graphviz.Digraph; d.source is the DOT text
    d = viz.draw(loss, group=model)     # one labelled box (cluster) per module
    viz.save(loss, "graph.svg", group=model)
    frames = viz.backward_steps(loss)   # one drawing per op, in the order backward runs them
    viz.save_html(loss, "steps.html")   # a page stepping through them (self-contained)

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
rendering (`save`, `save_html`, `Digraph.pipe`, `Digraph.render`) also needs the `dot`
program (Debian: `apt-get install graphviz`); without it they raise a RuntimeError that
says so.
"""

from __future__ import annotations

import heapq
import html
import json
import os
import re
import shutil
from collections import deque

import numpy as np

from ._files import atomic_write
from .gradcheck import _op_name, graph_ops
from .tensor import Tensor

__all__ = ["draw", "save", "backward_steps", "save_html", "FORMATS"]

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
_PENDING_COLOR = "#b0b0b0"
_CURRENT = {"fillcolor": "#ffe082", "color": "#e65100", "penwidth": "3"}  # backward_steps
_DONE = {"fillcolor": "#eeeeee", "color": "#9e9e9e"}  # ops whose backward has run
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


def _dot_missing(what):
    return (f"{what}: the Graphviz program `dot` was not found on PATH; install Debian's "
            f"graphviz package: apt-get install graphviz (other systems: "
            f"https://graphviz.org/download/). Without it, `.source` still gives the DOT "
            f"text.")


def _with_dot(what, render):
    """render(), with a clear RuntimeError when the `dot` program is missing."""
    gv = _graphviz()
    if shutil.which("dot") is None:
        raise RuntimeError(_dot_missing(what))
    try:
        return render()
    except gv.ExecutableNotFound:
        raise RuntimeError(_dot_missing(what)) from None


def _pipe(graph, what, **kwargs):
    """graph.pipe(**kwargs) (bytes), saying how to install `dot` when it is missing."""
    gv = _graphviz()
    pipe = gv.Digraph.pipe if isinstance(graph, gv.Digraph) else type(graph).pipe
    return _with_dot(what, lambda: pipe(graph, **kwargs))


_DRAWING = []  # the Digraph subclass draw returns, made on first use (graphviz is lazy)


def _drawing_class():
    """graphviz.Digraph whose pipe / render (and Jupyter display) say how to install
    `dot` when it is missing, instead of failing deep inside graphviz."""
    if not _DRAWING:
        gv = _graphviz()

        class Drawing(gv.Digraph):
            def pipe(self, *args, **kwargs):
                return _with_dot("Digraph.pipe", lambda: super(Drawing, self).pipe(
                    *args, **kwargs))

            def render(self, *args, **kwargs):
                return _with_dot("Digraph.render", lambda: super(Drawing, self).render(
                    *args, **kwargs))

        Drawing.__name__ = Drawing.__qualname__ = "Digraph"
        Drawing.__module__ = __name__
        _DRAWING.append(Drawing)
    return _DRAWING[0]


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


def _tensor_label(title, t, show_grad, show_data, grad, pending=False):
    data = t.data
    parts = [f"<b>{html.escape(title)}</b>",
             f'<font point-size="10" color="{_DIM_COLOR}">'
             f"{html.escape(_shape_text(data.shape))} {html.escape(str(data.dtype))}</font>"]
    if show_grad and grad is not None:
        parts.append(f'<font point-size="10" color="{_GRAD_COLOR}">'
                     f"{html.escape(_grad_norm_text(grad))}</font>")
    elif show_grad and pending:  # backward_steps: a gradient that is still to come
        parts.append(f'<font point-size="10" color="{_PENDING_COLOR}">|grad| = pending</font>')
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
    _graphviz()
    return _draw(tensor, show_grad=show_grad, show_data=show_data, rankdir=rankdir,
                 group=group, collapse=collapse, max_nodes=max_nodes,
                 marked=_highlighted(tensor, highlight))[0]


def _draw(tensor, *, show_grad=True, show_data=False, rankdir="LR", group=None,
          collapse=False, max_nodes=None, marked=(), current=None, done=(), grads=None,
          pending=(), titles=None):
    """draw's work -> (Digraph, {tensor node id: Tensor}, {op node id: Context}).

    marked: ids of Contexts drawn red; current / done: the id of the Context whose
    backward runs in this frame / ids of those whose backward ran (backward_steps);
    grads: {id(Tensor): gradient} shown instead of `.grad`; pending: ids of tensors
    whose gradient is still to come (shown as "pending"); titles: a dict to fill with
    {tensor node id: the title drawn on it}.
    """
    _graphviz()
    keep = _select(tensor, int(max_nodes)) if max_nodes is not None else None
    order = _topological(tensor, keep)
    clusters = _Clusters(group) if group is not None else None

    # Phase 1: plain data (strings only) for every node and edge.
    tid = {}  # id(Tensor) -> node id, only while drawing
    tensor_nodes = {}  # node id -> Tensor (for save_html; the Digraph keeps none)
    op_nodes = {}  # op node id -> Context
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
        tensor_nodes[name] = t
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
            op_name = _op_name(fn)
            if title is None:
                title = op_name
            if clusters is not None:
                key = clusters.key_of_module(ctx.module)
            op = f"op{n_ops}"
            n_ops += 1
            fill, border = _STYLE["op"]
            op_attrs = {"label": op_name, "shape": "ellipse", "fillcolor": fill,
                        "color": border}
            if id(ctx) in done:
                op_attrs.update(_DONE)
            if id(ctx) == current:
                op_attrs.update(_CURRENT)
            if id(ctx) in marked:
                op_attrs.update(_HIGHLIGHT)
            op_nodes[op] = ctx
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
        if titles is not None:
            titles[name] = title
        fill, border = _STYLE[kind]
        grad = t.grad if grads is None else grads.get(id(t))
        attrs = {"label": _tensor_label(title, t, show_grad, show_data, grad,
                                        id(t) in pending),
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

    g = _drawing_class()(name="tinygrad_mlp", node_attr={"shape": "box", "style": "rounded,filled",
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
        return _emit(g, nodes, edges, None), tensor_nodes, op_nodes
    return _emit(g, nodes, edges, clusters), tensor_nodes, op_nodes


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
    data = _pipe(graph, "viz.save", format=format)
    return atomic_write(path, lambda f: f.write(data))


# ----------------------------------------------------------------------------- backward steps
def _op_positions(output):
    """id(Context) -> the op's position in creation order (as check_ops numbers them)."""
    return {id(t._ctx): i for i, t in enumerate(graph_ops(output))}


def _backward_trace(output):
    """The ops backward would run from `output`, in its order, each with the gradients
    known after it: [(Context, op output Tensor, {id(Tensor): gradient})].

    The engine's walk (Tensor.backward: reverse creation order, a heap on Context.seq),
    with its own steps (`_op_input_grads`, `_pass_on`), but without touching the graph: the
    gradients are summed here, not into `.grad`, and nothing is freed.
    """
    from .tensor import _op_input_grads, _pass_on

    if not isinstance(output, Tensor):
        raise TypeError(f"viz.backward_steps: expected a Tensor, got {type(output).__name__}")
    if output._ctx is None:
        raise ValueError("viz.backward_steps: the tensor was not made by an op (a leaf, or "
                         "computed without a graph): there is no backward to step through")
    if output.data.size != 1:
        raise ValueError(f"viz.backward_steps: backward starts from a one-element output; "
                         f"this one has shape {_shape_text(output.shape)} (draw its .sum())")
    known = {id(output): np.ones_like(output.data)}    # every gradient so far, leaves too
    pending = {id(output): np.ones_like(output.data)}  # ops' outputs still to pass theirs on
    heap = [(-output._ctx.seq, output)]
    steps = []
    while heap:
        node = heapq.heappop(heap)[1]
        ctx = node._ctx
        if ctx.freed:
            raise RuntimeError(f"viz.backward_steps: op '{_op_name(ctx.function)}' was freed "
                               f"by a backward; step through the graph before calling "
                               f"backward (or use backward(retain_graph=True))")
        for p, pg in _op_input_grads(ctx, pending.pop(id(node))):
            known[id(p)] = pg if id(p) not in known else known[id(p)] + pg
            if p._ctx is not None:
                _pass_on(pending, heap, p, pg)
        steps.append((ctx, node, dict(known)))
    return steps


def _steps(output, group, rankdir):
    """[(Digraph, tensor nodes, op nodes, grads, title)], one per backward step."""
    trace = _backward_trace(output)
    final = set(trace[-1][2]) if trace else set()
    index = _op_positions(output)
    frames = []
    done = set()
    for k, (ctx, _node, grads) in enumerate(trace):
        graph, tensors, ops = _draw(output, rankdir=rankdir, group=group, current=id(ctx),
                                    done=set(done), grads=grads,
                                    pending=final - set(grads))
        name = _op_name(ctx.function)
        title = (f"step {k + 1} of {len(trace)}: backward of {name} (op {index[id(ctx)]} "
                 f"in creation order)")
        frames.append((graph, tensors, ops, grads, title))
        done.add(id(ctx))
    return frames


def _check_group(group, rankdir, where):
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise ValueError(f"{where}: rankdir must be 'LR', 'TB', 'RL' or 'BT', got {rankdir!r}")
    if group is not None:
        from .nn import Module

        if not isinstance(group, Module):
            raise TypeError(f"{where}: group must be an nn.Module (the model), "
                            f"got {type(group).__name__}")


def backward_steps(output, *, group=None, rankdir="LR"):
    """One drawing per op in the order backward runs them: a list of graphviz.Digraph.

    Frame k is the graph with the k-th op of the backward pass highlighted (amber), the
    ops already done greyed, and on every tensor the gradient known after that op
    (`|grad| = ...`; "pending" for a gradient still to come). The first frame is the
    output's own op; ops that no gradient reaches (e.g. the sigmoid beside a fused
    loss) get no frame. `output` must have one element, as for `backward()`.

    Does not change the graph: no `.grad` is set and nothing is freed, so a later
    `output.backward()` works and gives the same gradients. group / rankdir: as `draw`.
    """
    _check_group(group, rankdir, "viz.backward_steps")
    _graphviz()
    return [frame[0] for frame in _steps(output, group, rankdir)]


# ----------------------------------------------------------------------------- the HTML page
def _summary(a):
    """min / mean / max / L2 norm of an array, as short strings (for the page)."""
    a = np.asarray(a)
    if a.size == 0:
        return {"min": "-", "mean": "-", "max": "-", "norm": "-"}
    with np.errstate(all="ignore"):
        f = a.astype(np.float64)
        return {"min": f"{f.min():.4g}", "mean": f"{f.mean():.4g}", "max": f"{f.max():.4g}",
                "norm": f"{float(np.linalg.norm(f.ravel())):.4g}"}


def _inline_svg(svg):
    """dot's SVG, made to sit inside HTML: no XML prolog, DOCTYPE, comments or xmlns
    (the HTML parser knows SVG), so the page names no URL at all."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg, count=2)
    return svg.strip()


def _node_info(tensors, titles):
    """{node id: what a click shows} for the tensor nodes."""
    info = {}
    for node, t in tensors.items():
        entry = {"kind": "tensor", "shape": _shape_text(t.shape), "dtype": str(t.dtype),
                 "value": _summary(t.data),
                 "role": ("made by " + _op_name(t._ctx.function))
                 if t._ctx is not None else ("parameter" if t.requires_grad else
                                             "input or constant (no gradient)")}
        entry["name"] = titles[node]
        info[node] = entry
    return info


def save_html(output, path, *, steps=True, group=None, rankdir="LR"):
    """Write one self-contained HTML page with the drawing of `output`'s graph.

    With `steps`, the page walks through backward one op at a time (the frames of
    `backward_steps`): previous / next buttons, a slider and the left / right arrow keys.
    Without, it shows one drawing, with the gradients `.grad` holds now. Clicking a node
    shows its shape, dtype, a summary of its value (min / mean / max / norm) and of its
    gradient at the current step. No network access: the SVG (rendered by `dot`) and
    the script are inline. Written atomically; returns `path`.
    """
    _check_group(group, rankdir, "viz.save_html")
    if not isinstance(output, Tensor):
        raise TypeError(f"viz.save_html: expected a Tensor, got {type(output).__name__}")
    path = os.fspath(path)
    _graphviz()
    if steps:
        frames = _steps(output, group, rankdir)
    else:
        graph, tensors, ops = _draw(output, rankdir=rankdir, group=group)
        grads = {id(t): t.grad for t in tensors.values() if t.grad is not None}
        frames = [(graph, tensors, ops, grads, "the graph (gradients as .grad holds them)")]
    if not frames:
        raise ValueError("viz.save_html: nothing to draw")
    svgs = [_inline_svg(_pipe(f[0], "viz.save_html", format="svg").decode("utf-8"))
            for f in frames]
    titles = {}
    _, tensors, ops = _draw(output, rankdir=rankdir, group=group, titles=titles)
    nodes = _node_info(tensors, titles)
    index = _op_positions(output)
    for node, ctx in ops.items():
        name = _op_name(ctx.function)
        nodes[node] = {"kind": "op", "op": name, "index": index.get(id(ctx))}
    final = frames[-1][3]
    for node, t in tensors.items():
        nodes[node]["gets_grad"] = final.get(id(t)) is not None
    data = {"nodes": nodes, "steps": bool(steps), "frames": [
        {"title": title,
         "grads": {node: _summary(grads[id(t)]) for node, t in f_tensors.items()
                   if id(t) in grads and grads[id(t)] is not None}}
        for _g, f_tensors, _o, grads, title in frames]}
    from ._viz_page import page

    text = page(svgs, json.dumps(data).replace("</", "<\\/"), steps)
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
