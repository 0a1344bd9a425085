"""Check hand-derived gradients against autodiff, and say what is wrong with them.

    from tinygrad_mlp.testing import compare_gradients, assert_gradients_match
    report = compare_gradients(my_gradients, model, loss_fn, X, y, l2=0.01,
                               names={"w_h": "0.weight", "b_h": "0.bias",
                                      "w_out": "2.weight", "b_out": "2.bias"})
    print(report)                       # one row per parameter, with a diagnosis
    assert_gradients_match(my_gradients, model, loss_fn, X, y, ...)   # a homework test

Autodiff differentiates J = loss_fn(model(X), y) + l2_penalty(model, l2). Writing D for
the gradient of the data term and P = l2 W for the penalty's (zero for biases), so that the
autodiff gradient is A = D + P, a hand gradient H is diagnosed by the first that fits:

    match         H = A                       (|H - A| <= atol + rtol |A|, every element)
    transposed    H^T = A
    swapped       H = A' of another parameter (the two gradients were exchanged)
    shape         shapes differ otherwise
    l2-missing    H = D                       (the penalty term forgotten)
    l2-doubled    H = D + 2 P                 (d/dW of l2 sum(W^2) instead of l2/2 sum(W^2))
    sign          H = -A, or H = -D + P       (e.g. y - a instead of a - y)
    mean-vs-sum   H = s A or H - P = s D with s = n or 1/n (n rows in X: a mean where the
                  cost sums, or the other way round)
    scaled        the same with any other factor s (row["scale"])
    mismatch      none of these

Compare in float64 (build the model with dtype=np.float64): float32 roundoff is larger
than the default tolerances.
"""

from __future__ import annotations

import numpy as np

from .tensor import Tensor, enable_grad

__all__ = ["compare_gradients", "assert_gradients_match", "GradientReport"]

DIAGNOSES = ("match", "scaled", "sign", "transposed", "l2-missing", "l2-doubled",
             "mean-vs-sum", "swapped", "shape", "mismatch")

_HINTS = {
    "match": "",
    "transposed": "hand gradient is the transpose of autodiff's: check the order in the "
                  "matrix product (e.g. X^T delta, not delta^T X)",
    "swapped": "hand gradient is that of {other}: two gradients were exchanged",
    "shape": "shape {hand_shape} but the parameter has shape {shape}",
    "l2-missing": "hand lacks the L2 term l2 * W (l2 = {l2:g})",
    "l2-doubled": "hand has 2 * l2 * W: the gradient of l2 * sum(W^2); the penalty is "
                  "l2/2 * sum(W^2), whose gradient is l2 * W",
    "sign": "hand is autodiff negated: check the sign of the error term (a - y, not y - a)",
    "mean-vs-sum": "hand = {scale:.6g} x autodiff, with n = {n} rows: a mean where the cost "
                   "sums over the rows (or a sum where it takes the mean)",
    "scaled": "hand = {scale:.6g} x autodiff: a constant factor",
    "mismatch": "differs, not by a factor, sign, transpose, swap or the L2 term",
}


class GradientReport:
    """The result of `compare_gradients`: `rows` (one dict per parameter) and `ok`.

    Each row has `name` (the model's parameter name), `hand_name` (the key in the hand
    dict), `shape`, `max_abs` and `max_rel` (largest |H - A| and |H - A| / max(|H|, |A|)
    over the elements; NaN when the shapes differ), `ok` and `diagnosis`; "scaled" and
    "mean-vs-sum" rows also have `scale` (hand / autodiff), "swapped" rows `other`.
    `note`: a warning when the model is not float64 (else ""). `str(report)` is a table.
    """

    def __init__(self, rows, *, l2=0.0, n=None, atol=1e-8, rtol=1e-6, note=""):
        self.rows = rows
        self.note = note
        self.l2 = l2
        self.n = n
        self.atol = atol
        self.rtol = rtol

    @property
    def ok(self):
        """True when every parameter's hand gradient matches autodiff."""
        return all(row["ok"] for row in self.rows)

    def __getitem__(self, name):
        """The row of a parameter, by its hand name or the model's name."""
        for row in self.rows:
            if name in (row["hand_name"], row["name"]):
                return row
        raise KeyError(f"GradientReport: no parameter {name!r}; rows: "
                       f"{[row['hand_name'] for row in self.rows]}")

    def __repr__(self):
        return f"<GradientReport ok={self.ok} rows={len(self.rows)}>"

    def __str__(self):
        good = sum(row["ok"] for row in self.rows)
        head = (f"Hand-derived gradients vs autodiff: {good} of {len(self.rows)} "
                f"parameter(s) match (atol={self.atol:g}, rtol={self.rtol:g}"
                + (f", l2={self.l2:g}" if self.l2 else "") + ")")
        table = [("parameter", "shape", "max abs diff", "max rel diff", "diagnosis")]
        for row in self.rows:
            name = row["hand_name"]
            if row["name"] != name:
                name = f"{name} ({row['name']})"
            diag = row["diagnosis"]
            if "scale" in row:
                diag += f" (x {row['scale']:.6g})"
            if "other" in row:
                diag += f" (with {row['other']})"
            table.append((name, _shape_text(row["shape"]), _num(row["max_abs"]),
                          _num(row["max_rel"]), diag))
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines = [head] + ([f"note: {self.note}"] if self.note else [])
        for r in table:
            cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]),
                     r[2].rjust(widths[2]), r[3].rjust(widths[3]), r[4]]
            lines.append("  ".join(cells).rstrip())
        for row in self.rows:
            if not row["ok"]:
                lines.append(f"{row['hand_name']}: {row['hint']}")
        return "\n".join(lines)


def _shape_text(shape):
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _num(x):
    return "-" if x is None or not np.isfinite(x) else f"{x:.3e}"


def _close(h, a, atol, rtol):
    return h.shape == a.shape and bool(np.all(np.abs(h - a) <= atol + rtol * np.abs(a)))


def _fit_scale(h, a):
    """The factor s minimising |h - s a| (None when a is zero)."""
    aa = float(np.vdot(a, a))
    if aa == 0.0 or not np.isfinite(aa):
        return None
    return float(np.vdot(h, a)) / aa


def _differences(h, a):
    if h.shape != a.shape:
        return float("nan"), float("nan")
    diff = np.abs(h - a)
    if diff.size == 0:
        return 0.0, 0.0
    scale = np.maximum(np.abs(h), np.abs(a))
    rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    return float(diff.max()), float(rel.max())


def _autodiff(model, loss_fn, X, y, l2):
    """{name: (D, P)}: gradients of the data term and of l2_penalty(model, l2), float64."""
    from .nn import l2_penalty

    params = dict(model.named_parameters())
    saved = {name: p.grad for name, p in params.items()}

    def grads_of(make):
        for p in params.values():
            p.grad = None
        with enable_grad():
            value = make()
            if not isinstance(value, Tensor):
                raise TypeError(f"compare_gradients: the cost must be a Tensor, got "
                                f"{type(value).__name__}")
            if value.data.size != 1:
                raise ValueError(f"compare_gradients: loss_fn(model(X), y) must be a scalar, "
                                 f"got shape {_shape_text(value.shape)}")
            if value.requires_grad:
                value.backward()
        return {name: (np.zeros(p.shape) if p.grad is None
                       else np.asarray(p.grad, dtype=np.float64).copy())
                for name, p in params.items()}

    try:
        inputs = X if isinstance(X, Tensor) else Tensor(np.asarray(X))
        data = grads_of(lambda: loss_fn(model(inputs), y))
        if l2:
            penalty = grads_of(lambda: l2_penalty(model, l2))
        else:
            penalty = {name: np.zeros(p.shape) for name, p in params.items()}
    finally:
        for name, p in params.items():
            p.grad = saved[name]
    return {name: (data[name], penalty[name]) for name in params}


def _diagnose(h, d, p, others, n, atol, rtol):
    """(diagnosis, extra fields) for hand gradient h against autodiff d + p."""
    a = d + p
    if _close(h, a, atol, rtol):
        return "match", {}
    if h.shape != a.shape:
        if h.ndim == 2 and h.shape == a.shape[::-1] and _close(h.T, a, atol, rtol):
            return "transposed", {}
        for other, (od, op) in others.items():
            if _close(h, od + op, atol, rtol) or (op.any() and _close(h, od, atol, rtol)):
                return "swapped", {"other": other}
        return "shape", {}
    if p.any():
        if _close(h, d, atol, rtol):
            return "l2-missing", {}
        if _close(h, d + 2 * p, atol, rtol):
            return "l2-doubled", {}
    for other, (od, op) in others.items():
        if od.shape == h.shape and (_close(h, od + op, atol, rtol)
                                    or (op.any() and _close(h, od, atol, rtol))):
            return "swapped", {"other": other}
    if h.ndim == 2 and h.shape[0] == h.shape[1] and _close(h.T, a, atol, rtol):
        return "transposed", {}
    # a constant factor: on the whole gradient, else on the data term alone
    candidates = [(h, a)]
    if p.any():
        candidates.append((h - p, d))
    for lhs, rhs in candidates:
        s = _fit_scale(lhs, rhs)
        if s is None or s == 0.0 or not _close(lhs, s * rhs, atol, rtol):
            continue
        if abs(s + 1.0) <= 1e-6:
            return "sign", {}
        if n and n > 1 and any(abs(s - f) <= 1e-6 * abs(f) for f in (n, 1.0 / n)):
            return "mean-vs-sum", {"scale": s}
        return "scaled", {"scale": s}
    return "mismatch", {}


def _array(x):
    return x.data if isinstance(x, Tensor) else x


def _hand_dict(hand, params, names, X, y):
    if callable(hand):
        if names:
            arrays = {hand_name: params[model_name].data.copy()
                      for hand_name, model_name in names.items() if model_name in params}
        else:
            arrays = {name: p.data.copy() for name, p in params.items()}
        hand = hand(arrays, _array(X), _array(y))  # the student's NumPy code gets arrays
    if not isinstance(hand, dict):
        raise TypeError(f"compare_gradients: hand must be a dict of gradients or a function "
                        f"returning one, got {type(hand).__name__}")
    return hand


def compare_gradients(hand, model, loss_fn, X, y, *, l2=0.0, names=None, atol=1e-8,
                      rtol=1e-6):
    """Compare hand-derived gradients with autodiff of loss_fn(model(X), y) + l2_penalty.

    hand: {name: gradient array}, or a function hand(params, X, y) -> such a dict, where
        params maps the same names to copies of the model's weight arrays (X and y are
        passed as NumPy arrays when they are Tensors).
    names: {hand name: model parameter name}, e.g. {"w_h": "0.weight"}; without it the
        hand names are the model's (`model.named_parameters()`).
    Only the parameters in `hand` are compared. Returns a GradientReport; the model's
    weights and `.grad` are left as they were.
    """
    params = dict(model.named_parameters())
    if names is not None:
        names = dict(names)
        unknown = [m for m in names.values() if m not in params]
        if unknown:
            raise ValueError(f"compare_gradients: names maps to {unknown}, which the model "
                             f"does not have; its parameters are {list(params)}")
    hand = _hand_dict(hand, params, names, X, y)
    to_model = names if names is not None else {}
    pairs = []
    for hand_name, grad in hand.items():
        model_name = to_model.get(hand_name, hand_name)
        if model_name not in params:
            hint = (f"; pass names={{'{hand_name}': <one of those>}}" if names is None
                    else "; add it to names")
            raise ValueError(f"compare_gradients: hand gradient {hand_name!r} is not a "
                             f"parameter of the model, whose parameters are "
                             f"{list(params)}{hint}")
        pairs.append((hand_name, model_name, grad))
    if not pairs:
        raise ValueError("compare_gradients: hand has no gradients to compare")
    order = {name: i for i, name in enumerate(params)}
    pairs.sort(key=lambda pair: order[pair[1]])
    auto = _autodiff(model, loss_fn, X, y, l2)
    hand_name_of = {m: h for h, m, _ in pairs}
    rows_of_x = np.asarray(X.data if isinstance(X, Tensor) else X)
    n = int(rows_of_x.shape[0]) if rows_of_x.ndim else None  # the batch size

    rows = []
    for hand_name, model_name, grad in pairs:
        h = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=np.float64)
        d, p = auto[model_name]
        others = {hand_name_of.get(m, m): auto[m] for m in params if m != model_name}
        diagnosis, extra = _diagnose(h, d, p, others, n, atol, rtol)
        max_abs, max_rel = _differences(h, d + p)
        row = {"name": model_name, "hand_name": hand_name,
               "shape": tuple(params[model_name].shape),
               "max_abs": max_abs, "max_rel": max_rel, "ok": diagnosis == "match",
               "diagnosis": diagnosis}
        row.update(extra)
        row["hint"] = _HINTS[diagnosis].format(
            other=extra.get("other"), scale=extra.get("scale", 0.0), n=n, l2=l2,
            hand_shape=_shape_text(h.shape), shape=_shape_text(row["shape"]))
        rows.append(row)
    low = sorted({str(params[m].dtype) for _, m, _ in pairs
                  if params[m].dtype != np.float64})
    note = (f"the model's parameters are {', '.join(low)}: autodiff's gradients carry its "
            f"rounding (about 1e-7 relative for float32, more after long sums), which can "
            f"exceed rtol={rtol:g}; build the model with dtype=np.float64 to check a "
            f"derivation") if low else ""
    return GradientReport(rows, l2=l2, n=n, atol=atol, rtol=rtol, note=note)


def assert_gradients_match(hand, model, loss_fn, X, y, *, l2=0.0, names=None, atol=1e-8,
                           rtol=1e-6):
    """`compare_gradients(...)`, raising AssertionError (its table as the message) unless
    every parameter matches; returns the report. A one-line test of a student's backprop."""
    report = compare_gradients(hand, model, loss_fn, X, y, l2=l2, names=names, atol=atol,
                               rtol=rtol)
    if not report.ok:
        raise AssertionError("\n" + str(report))
    return report
