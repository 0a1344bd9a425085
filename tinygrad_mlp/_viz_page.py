"""The HTML page of `viz.save_html`: the frames' SVG, the data and the script, inline.

The script shows one frame at a time (previous / next buttons, a slider, the arrow
keys) and, on a click on a node, its shape, dtype and the summaries of its value and of
its gradient at the current frame. It loads nothing: no URL appears in the page.
"""

import html

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 0; color: #222; }
header { padding: 10px 16px; background: #f4f4f8; border-bottom: 1px solid #ccd;
         display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
header button { font-size: 15px; padding: 3px 12px; }
#tg-slider { width: 260px; }
#tg-title { font-weight: bold; }
main { display: flex; align-items: flex-start; }
#tg-frames { flex: 1; overflow: auto; padding: 8px; }
#tg-frames svg { display: block; }
#tg-frames g.node { cursor: pointer; }
#tg-frames g.node.tg-selected polygon, #tg-frames g.node.tg-selected ellipse,
#tg-frames g.node.tg-selected path { stroke: #1565c0; stroke-width: 3px; }
#tg-info { width: 280px; padding: 12px 16px; border-left: 1px solid #ccd; min-height: 200px;
           font-size: 14px; }
#tg-info h2 { font-size: 16px; margin: 0 0 8px 0; }
#tg-info table { border-collapse: collapse; }
#tg-info td { padding: 1px 8px 1px 0; vertical-align: top; }
#tg-info .tg-dim { color: #777; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tg-data").textContent);
  var frames = Array.prototype.slice.call(document.querySelectorAll(".tg-frame"));
  var slider = document.getElementById("tg-slider");
  var prev = document.getElementById("tg-prev");
  var next = document.getElementById("tg-next");
  var title = document.getElementById("tg-title");
  var info = document.getElementById("tg-info");
  var current = 0;
  var selected = null;

  function row(table, key, value, dim) {
    var tr = document.createElement("tr");
    var a = document.createElement("td");
    var b = document.createElement("td");
    a.textContent = key;
    b.textContent = value;
    if (dim) { b.className = "tg-dim"; }
    tr.appendChild(a);
    tr.appendChild(b);
    table.appendChild(tr);
  }

  function summary(table, what, s) {
    row(table, what, "min " + s.min + ", mean " + s.mean + ", max " + s.max);
    row(table, "", "norm " + s.norm);
  }

  function describe(id) {
    var node = data.nodes[id];
    info.textContent = "";
    var h = document.createElement("h2");
    var table = document.createElement("table");
    if (!node) { return; }
    if (node.kind === "op") {
      h.textContent = "op " + node.op;
      info.appendChild(h);
      row(table, "index", node.index === null ? "-" : String(node.index));
      row(table, "", "(position in creation order; backward runs the ops in reverse)", true);
    } else {
      h.textContent = node.name;
      info.appendChild(h);
      row(table, "shape", node.shape);
      row(table, "dtype", node.dtype);
      row(table, "is", node.role, true);
      summary(table, "value", node.value);
      var g = data.frames[current].grads[id];
      if (g) {
        summary(table, "gradient", g);
      } else if (node.gets_grad) {
        row(table, "gradient", "not known yet at this step", true);
      } else {
        row(table, "gradient", "none (no gradient flows here)", true);
      }
    }
    info.appendChild(table);
    info.setAttribute("data-node", id);
  }

  function mark() {
    frames.forEach(function (f) {
      f.querySelectorAll("g.node").forEach(function (g) {
        if (g.getAttribute("data-node") === selected) { g.classList.add("tg-selected"); }
        else { g.classList.remove("tg-selected"); }
      });
    });
  }

  function show(k) {
    k = Math.max(0, Math.min(frames.length - 1, k));
    frames.forEach(function (f, i) { f.hidden = i !== k; });
    current = k;
    slider.value = String(k);
    title.textContent = data.frames[k].title;
    prev.disabled = k === 0;
    next.disabled = k === frames.length - 1;
    document.body.setAttribute("data-frame", String(k));
    if (selected !== null) { describe(selected); }
  }

  frames.forEach(function (f) {
    f.querySelectorAll("g.node").forEach(function (g) {
      var t = g.querySelector("title");
      if (!t) { return; }
      var id = t.textContent;
      g.setAttribute("data-node", id);
      g.addEventListener("click", function () { selected = id; mark(); describe(id); });
    });
  });
  prev.addEventListener("click", function () { show(current - 1); });
  next.addEventListener("click", function () { show(current + 1); });
  slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
  document.addEventListener("keydown", function (e) {
    if (e.target === slider) { return; }  /* the slider moves itself on arrow keys */
    if (e.key === "ArrowLeft") { show(current - 1); e.preventDefault(); }
    else if (e.key === "ArrowRight") { show(current + 1); e.preventDefault(); }
  });
  show(0);
})();
"""


def page(svgs, data_json, steps):
    """The whole page as a string: one hidden <div class="tg-frame"> per SVG."""
    n = len(svgs)
    controls = (f'<button id="tg-prev" type="button" title="previous (left arrow)">&larr; '
                f'previous</button>\n'
                f'<input id="tg-slider" type="range" min="0" max="{n - 1}" value="0" '
                f'step="1" aria-label="step">\n'
                f'<button id="tg-next" type="button" title="next (right arrow)">next '
                f'&rarr;</button>\n')
    if not steps:
        controls = controls.replace("<button ", "<button hidden ").replace(
            "<input ", "<input hidden ")
    frames = "\n".join(f'<div class="tg-frame" data-step="{k}"{" hidden" if k else ""}>'
                       f"\n{svg}\n</div>" for k, svg in enumerate(svgs))
    heading = "backward, step by step" if steps else "the graph"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tinygrad_mlp: {html.escape(heading)}</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style>
</head>
<body data-frame="0">
<header>
{controls}<span id="tg-title"></span>
</header>
<main>
<div id="tg-frames">
{frames}
</div>
<aside id="tg-info"><p class="tg-dim">Click a node to see its shape, dtype, value and
gradient. {"Arrow keys, the buttons or the slider step through backward." if steps else ""}
</p></aside>
</main>
<script type="application/json" id="tg-data">{data_json}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""
