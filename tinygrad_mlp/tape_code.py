"""A recorded step (replay.StepTape) written out as straight-line Python, then compiled.

`StepTape.run_forward` and `StepTape.run_backward` interpret the tape: a loop over the ops
that looks up each op's inputs, parameters and gradient targets on every step. All of that
is fixed once the tape is recorded, so this module writes the same calls out, one line per
op, and compiles them with `exec`: for the lecture's net the forward reads

    v6 = fwd0(ctx0, batch, v2, v3)                        # dense
    v7 = fwd1(ctx1, v6)                                   # sigmoid
    ...

and the backward calls each op's `backward` in reverse order, summing the gradients of an
input in the same order as the interpreter. The numbers are the interpreter's, bit for bit
(the same Functions on the same arrays, tests/test_replay.py checks it); what goes is the
loop's bookkeeping, about 20 us a step at batch 100 (docs/performance.md). The code is
kept as `StepTape.source`: print it to read a step of your model as plain calls.
"""

from __future__ import annotations

import numpy as np

from .tensor import _add_leaf_grad, _as_input_grad, _unit_grad

__all__ = ["compile_tape"]


_compiled = {}  # source -> code object: the names bound to it differ per tape, the code not
_MAX_CACHED = 64


def _arity_error(function, got, want):
    raise RuntimeError(f"{function.name}: backward returned {got} gradient(s) for {want} "
                       f"input(s)")


def _value(slot):
    """The name of the variable that holds `slot`'s array in the generated code."""
    if slot == 0:
        return "batch"
    if slot == 1:
        return "targets"
    return f"v{slot}"


def _forward_lines(tape, names):
    lines = ["def forward(batch, targets):",
             "    slots = tape_slots",
             "    slots[0] = batch",
             "    slots[1] = targets"]
    for slot, leaf in tape.leaves:
        names[f"leaf{slot}"] = leaf
        lines.append(f"    v{slot} = slots[{slot}] = leaf{slot}.data")
    for slot in range(2 + len(tape.leaves), tape.n_fixed):
        lines.append(f"    v{slot} = slots[{slot}]  # a constant")
    for i, op in enumerate(tape.ops):
        names[f"fwd{i}"] = op.function.forward
        names[f"ctx{i}"] = op.ctx
        args = [f"ctx{i}"] + [_value(s) for s in op.input_slots]
        if op.slot_params:
            names[f"params{i}"] = op.params
            put = ", ".join(f"{key!r}: {_value(s)}" for key, s in op.slot_params)
            args.append(f"**{{**params{i}, {put}}}")
        elif op.params:
            names[f"params{i}"] = op.params
            args.append(f"**params{i}")
        out = f"v{op.out}"
        lines.append(f"    {out} = fwd{i}({', '.join(args)})  # {op.function.name}")
        lines.append(f"    if {out}.__class__ is not ndarray:")
        lines.append(f"        {out} = asarray({out})")
        lines.append(f"    slots[{op.out}] = {out}")
    lines.append(f"    return v{tape.out_slot}, v{tape.loss_slot}")
    return lines


def _backward_lines(tape, names):
    """StepTape.seed, run_backward and release unrolled: `g{slot}` is the gradient of an
    op output so far (None until one arrives), summed in the order the loop sums it. The
    common case of `_as_input_grad` (a gradient that already is an ndarray of the input's
    shape and dtype) is tested inline, so that only other gradients pay for the call."""
    op_slots = [op.out for op in tape.ops if op.out != tape.loss_slot]
    lines = ["def backward():",
             "    slots = tape_slots",
             f"    g{tape.loss_slot} = unit_grad(slots[{tape.loss_slot}])  # d loss / d loss"]
    if op_slots:
        lines.append("    " + " = ".join(f"g{s}" for s in op_slots) + " = None")
    position = {id(op): i for i, op in enumerate(tape.ops)}
    for op in tape.order:
        i = position[id(op)]
        names[f"bwd{i}"] = op.function.backward
        names[f"F{i}"] = op.function
        g = f"g{op.out}"
        n_inputs = len(op.ctx.needs_input_grad)
        lines += [f"    if {g} is not None:  # {op.function.name}",
                  f"        r = bwd{i}(ctx{i}, {g})",
                  "        if r.__class__ is not tuple:",
                  "            r = (r,)",
                  f"        if len(r) != {n_inputs}:",
                  f"            arity_error(F{i}, len(r), {n_inputs})"]
        for k, slot, leaf in op.grads_to:
            lines += [f"        pg = r[{k}]",
                      "        if pg is not None:",
                      f"            like = slots[{slot}]",
                      "            if (pg.__class__ is not ndarray or pg.shape != like.shape"
                      " or pg.dtype is not like.dtype):",
                      f"                pg = as_input_grad(pg, like, F{i})"]
            if leaf is not None:
                names[f"leaf{slot}"] = leaf
                lines.append(f"            add_leaf_grad(leaf{slot}, pg, {g})")
            else:
                lines.append(f"            g{slot} = pg if g{slot} is None else g{slot} + pg")
        lines.append(f"        {g} = r = pg = like = None")  # dropped, as the loop does
    lines.append("    # release: what the contexts keep and the step's arrays")
    for i, _ in enumerate(tape.ops):
        lines += [f"    ctx{i}.saved = ()",
                  f"    ctx{i}.__dict__.clear()"]
    lines += ["    slots[0] = slots[1] = None",
              f"    slots[{tape.n_fixed}:] = no_arrays"]
    names["no_arrays"] = [None] * (len(tape.slots) - tape.n_fixed)
    return lines


def compile_tape(tape):
    """(forward(batch, targets) -> (out, loss), backward(), source) for `tape`: the
    calls of load + run_forward, and of seed + run_backward + release; both read and
    write `tape.slots` as those do."""
    names = {"ndarray": np.ndarray, "asarray": np.asarray, "tape_slots": tape.slots,
             "unit_grad": _unit_grad, "as_input_grad": _as_input_grad,
             "add_leaf_grad": _add_leaf_grad, "arity_error": _arity_error}
    lines = _forward_lines(tape, names) + [""] + _backward_lines(tape, names)
    source = "\n".join(lines) + "\n"
    code = _compiled.get(source)
    if code is None:  # fit records a tape each epoch: compile each distinct source once
        if len(_compiled) >= _MAX_CACHED:
            _compiled.clear()
        code = _compiled[source] = compile(source, "<tinygrad_mlp step tape>", "exec")
    exec(code, names)  # noqa: S102 (our own generated code, from the recorded ops only)
    return names["forward"], names["backward"], source
