"""Record the ops of one training step, then replay them on the next batches (fit's fast path).

A training step of a model built from the library's layers applies the same ops, in the
same order, to arrays of the same shapes every time; only the batch changes. Building the
graph anew each step (a Tensor and a Context per op, a heap in backward) is pure Python
overhead, and at small batches it costs more than the arithmetic. So `fit` runs the first
step of each epoch through the ordinary engine while `StepTape.record` notes every
`Function.apply` (the Function, where each input came from, its keyword parameters), and
runs the other steps by calling the same Functions' `forward` and `backward` directly on
arrays:

    forward:  out_i = F_i.forward(ctx_i, *inputs_i)          for the ops i in order
    backward: g_in  = F_i.backward(ctx_i, g_i)               for the ops in reverse order,
              each g_in summed into its input's gradient (a leaf's `.grad` at the end)

The numbers are the ordinary engine's, bit for bit: the same calls on the same arrays, the
gradients of an input summed in the same order (reverse creation order, as the heap of
`Tensor.backward` pops them), the same unbroadcast and cast to the leaf's dtype.

Only a graph that cannot change from step to step is recorded. Every module of the model
and of the loss must say so with `static_graph = True` in the class that defines its
`forward`. The library's Dense, Sigmoid, ReLU, Tanh, Sequential and losses do: their
forward applies the same ops whatever the values, and no number computed from the data
reaches an op as a constant (the tape would keep the recorded one). And every input of
every op must be the batch, the targets, a Tensor held by one of those modules (read anew
each step, so `load_state_dict` is seen), an earlier op's output, or a 0-d constant.
Anything else (a custom module without the flag, a target array converted outside an op)
makes `record` give no tape, and every step uses the ordinary engine.
"""

from __future__ import annotations

import numpy as np

from . import tensor as _tensor
from .tape_code import compile_tape
from .tensor import Context, Tensor, _add_leaf_grad, _as_input_grad, _unit_grad

__all__ = ["StepTape", "is_static", "can_replay"]

# The arrays of one step live in a flat list of slots: the batch, the targets, then one slot
# per leaf Tensor and per constant (filled when recorded), then one per op output.
_BATCH, _TARGET = 0, 1


def is_static(module):
    """True when `module` and all its submodules declare `static_graph = True` in the class
    that defines their `forward` (so a subclass that overrides forward must declare it
    again), and none has a `forward` patched onto the instance."""
    modules = getattr(module, "modules", None)
    if modules is None:
        return False
    for m in modules():
        if "forward" in vars(m):
            return False
        for klass in type(m).__mro__:
            if "forward" in klass.__dict__:
                if klass.__dict__.get("static_graph") is not True:
                    return False
                break
    return True


def can_replay():
    """Grad mode on, no anomaly detection, no forward-mode tangents: a replay would skip
    what those modes add to every op, so steps then take the ordinary engine."""
    return (_tensor.is_grad_enabled() and not _tensor.is_anomaly_enabled()
            and not _tensor.forward_mode_depth())


def _held_tensors(*modules):
    """id -> Tensor for every Tensor attribute of the modules and their submodules."""
    held = {}
    for module in modules:
        for m in getattr(module, "modules", tuple)():  # a plain-function loss holds none
            for value in vars(m).values():
                if isinstance(value, Tensor):
                    held[id(value)] = value
    return held


class _Recording:
    def __init__(self):
        self.ops, self.modules = [], []


class _Op:
    """One recorded op: its Function, a Context of its own (reused every step), the slots
    of its inputs, its keyword parameters (with the targets or batch put back each step
    where the recording passed them) and the slot of its output.

    `grads_to`: for each input that requires grad, (its position, its slot, the leaf
    Tensor or None for an op output)."""

    __slots__ = ("function", "ctx", "input_slots", "params", "slot_params", "out",
                 "grads_to", "tracked")

    def __init__(self, function, recorded_ctx, inputs, params, slot_params, out, grads_to,
                 tracked):
        ctx = Context.__new__(Context)
        ctx.function = function
        ctx.parents = ()
        ctx.saved = ()
        ctx.freed = False
        ctx.module = recorded_ctx.module
        ctx.needs_input_grad = recorded_ctx.needs_input_grad
        ctx.seq = -1
        self.function = function
        self.ctx = ctx
        self.input_slots = inputs
        self.params = params
        self.slot_params = slot_params  # ((key, slot), ...)
        self.out = out
        self.grads_to = grads_to
        self.tracked = tracked


class StepTape:
    """The ops of one step of `loss_fn(model(batch), targets)`, replayable on new batches.

    tape, out, loss = StepTape.record(model, loss_fn, batch, targets)
        runs the step with the ordinary engine (out, loss are its Tensors; call
        loss.backward() as usual) and gives a tape, or None if the graph is not static.
    out, loss = tape.forward(batch, targets)   # arrays: the model's output and the loss
    tape.backward()                            # adds d loss / d leaf to each leaf's .grad
    """

    __slots__ = ("ops", "order", "leaves", "slots", "n_fixed", "out_slot", "loss_slot",
                 "source", "_forward", "_backward")

    def __init__(self, ops, leaves, consts, out_slot, loss_slot):
        self.ops = ops
        self.order = [op for op in reversed(ops) if op.tracked]
        self.leaves = leaves  # ((slot, Tensor), ...): each leaf's .data is read every step
        self.slots = [None, None] + [None] * len(leaves) + list(consts) + [None] * len(ops)
        self.n_fixed = 2 + len(leaves) + len(consts)
        self.out_slot = out_slot
        self.loss_slot = loss_slot
        # forward and backward run the same calls as run_forward and run_backward, written
        # out line by line (tape_code.py); `source` is that code, for reading
        self._forward, self._backward, self.source = compile_tape(self)

    @classmethod
    def record(cls, model, loss_fn, batch, targets):
        outer = _tensor.current_recording()
        with _tensor.recording_into(_Recording()) as recording:
            out = model(batch)
            loss = loss_fn(out, targets)
        log = [entry + (None,) for entry in recording.ops]
        tape = None
        if outer is None and can_replay():
            tape = cls._from_log(log, _held_tensors(model, loss_fn), batch, targets, out, loss)
        return tape, out, loss

    @classmethod
    def _from_log(cls, log, held, batch, targets, out, loss):
        leaves, consts = [], []
        leaf_slot = {}  # id(leaf) -> its position in `leaves`
        made = {}       # id(output Tensor) -> position of the op that made it
        entries = []
        for function, inputs, params, ctx, result, _ in log:
            sources = []  # ("op", position) / ("leaf", position) / ("const", position) / slot
            for t in inputs:
                j = made.get(id(t))
                if j is not None:
                    sources.append(("op", j))
                elif t._ctx is not None:
                    return None  # made by an op outside this step
                elif id(t) in held:
                    if id(t) not in leaf_slot:
                        leaf_slot[id(t)] = len(leaves)
                        leaves.append(t)
                    sources.append(("leaf", leaf_slot[id(t)]))
                elif t.requires_grad:
                    return None  # a leaf the modules do not hold
                elif t.data is batch:
                    sources.append(_BATCH)
                elif t.data is targets:
                    sources.append(_TARGET)
                elif t.data.ndim == 0:
                    consts.append(t.data)
                    sources.append(("const", len(consts) - 1))
                else:
                    return None  # an array made outside the ops (perhaps from the batch)
            slot_params = []
            for key, value in params.items():
                if value is batch or value is targets:
                    slot_params.append((key, _BATCH if value is batch else _TARGET))
                elif isinstance(value, Tensor) or (isinstance(value, np.ndarray)
                                                    and value.ndim > 0):
                    return None
            made[id(result)] = len(entries)
            needs = [t.requires_grad for t in inputs]
            entries.append((function, ctx, sources, params, slot_params, needs,
                            result._ctx is ctx))
        if made.get(id(out)) is None or made.get(id(loss)) is None or loss.data.size != 1:
            return None
        first_op = 2 + len(leaves) + len(consts)
        offsets = {"op": first_op, "leaf": 2, "const": 2 + len(leaves)}

        def slot(source):
            return source if source.__class__ is int else offsets[source[0]] + source[1]

        ops = []
        for i, (function, ctx, sources, params, slot_params, needs, tracked) in \
                enumerate(entries):
            grads_to = tuple((k, slot(src), leaves[src[1]] if src[0] == "leaf" else None)
                             for k, (src, need) in enumerate(zip(sources, needs)) if need)
            ops.append(_Op(function, ctx, tuple(slot(src) for src in sources), dict(params),
                           tuple(slot_params), first_op + i, grads_to, tracked))
        loss_op = ops[made[id(loss)]]
        if not loss_op.tracked:
            return None
        return cls(ops, tuple((2 + k, t) for k, t in enumerate(leaves)), consts,
                   first_op + made[id(out)], loss_op.out)

    def forward(self, batch, targets):
        """Run the recorded ops on a new batch; (the model's output, the loss) as arrays."""
        return self._forward(batch, targets)

    def backward(self):
        """Add the gradient of the loss of the last `forward` to every leaf's `.grad`, as
        `loss.backward()` would, then drop the step's arrays."""
        self._backward()

    # The interpreter: forward and backward as loops over the ops, in pieces (what the
    # compiled code unrolls; benchmarks/step_stages.py times the pieces one by one).
    def load(self, batch, targets):
        """Put the batch, the targets and each leaf's current array into their slots."""
        slots = self.slots
        slots[_BATCH] = batch
        slots[_TARGET] = targets
        for k, leaf in self.leaves:
            slots[k] = leaf.data

    def run_forward(self, ops):
        """Run `ops` (recorded ops, in order) on the arrays in the slots."""
        slots = self.slots
        for op in ops:
            params = op.params
            if op.slot_params:
                params = dict(params)
                for key, k in op.slot_params:
                    params[key] = slots[k]
            data = op.function.forward(op.ctx, *[slots[k] for k in op.input_slots], **params)
            if data.__class__ is not np.ndarray:
                data = np.asarray(data)
            slots[op.out] = data

    def seed(self):
        """{loss slot: d loss / d loss}: the gradients that `run_backward` starts from."""
        return {self.loss_slot: _unit_grad(self.slots[self.loss_slot])}

    def run_backward(self, ops, grads):
        """Run `ops` (tracked ops, in `self.order`) backward; `grads` maps an op output's
        slot to its gradient so far and is updated; leaves get their `.grad`."""
        slots = self.slots
        pop, get = grads.pop, grads.get
        for op in ops:
            g = pop(op.out, None)
            if g is None:
                continue  # the loss does not depend on this op
            in_grads = op.function.backward(op.ctx, g)
            if in_grads.__class__ is not tuple:
                in_grads = (in_grads,)
            if len(in_grads) != len(op.ctx.needs_input_grad):
                raise RuntimeError(f"{op.function.name}: backward returned {len(in_grads)} "
                                   f"gradient(s) for {len(op.ctx.needs_input_grad)} input(s)")
            for k, slot, leaf in op.grads_to:
                pg = in_grads[k]
                if pg is None:
                    continue
                pg = _as_input_grad(pg, slots[slot], op.function)
                if leaf is not None:
                    _add_leaf_grad(leaf, pg, g)
                else:
                    prev = get(slot)
                    grads[slot] = pg if prev is None else prev + pg

    def release(self):
        """Drop the step's arrays: what the Contexts keep and the slots of the batch,
        the targets and the op outputs (as Context.free, but the Contexts stay usable)."""
        for op in self.ops:
            op.ctx.saved = ()
            op.ctx.__dict__.clear()
        slots = self.slots
        for k in range(self.n_fixed, len(slots)):
            slots[k] = None
        slots[_BATCH] = slots[_TARGET] = None
