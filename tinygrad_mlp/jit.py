"""jit: record the ops a function applies, then replay them as compiled straight-line code.

    step = jit(lambda x, y: cost(model(x), y) + nn.l2_penalty(model, 0.01))
    loss = step(Tensor(xb), Tensor(yb))     # a Tensor, as without jit
    loss.backward()                         # the recorded backward, into the same .grad

A function of Tensors built from the library's ops applies the same ops, in the same order,
to arrays of the same shapes on every call; only the values change. The ordinary engine
rebuilds the graph each time (a Tensor and a Context per op, a heap in backward), which at
small batches costs more than the arithmetic. `jit` runs the first calls of each call
signature on the ordinary engine while noting every `Function.apply` (the Function, where
each input came from, its keyword parameters, the modules that ran and their `.training`).
When two recordings agree, it writes the ops out as Python, one line per op:

    forward:  v3 = fwd3(ctx3, v1, w0, w1)      # F_i.forward on arrays, in order
    backward: r = bwd3(ctx3, g3)               # F_i.backward in reverse creation order,
              each gradient summed into its input's gradient (a leaf's `.grad`) as
              `Tensor.backward` sums it: the same helper, in the same order

and later calls with that signature run this code. Every number is the ordinary engine's,
bit for bit: the same Functions on the same arrays, the gradients of an input summed one
`+` at a time in the same order (tests/test_jit.py checks it over whole trainings).

Rules of the compiled path (what makes a replay exact):
- Tensors the function did not receive (parameters, buffers: "captured" leaves) are read
  by reference on every call (`.data` re-read), so in-place updates, `p.data = ...` and
  `load_state_dict` are seen. A change of their shape, dtype or `requires_grad`, or of a
  recorded module's `.training`, makes the call record anew.
- Each op's `forward` is called on every replayed call, so an op with side effects (Dropout
  drawing from the rng passed as a keyword parameter, BatchNorm updating its buffers in
  place) behaves as on the ordinary engine. Python code outside the ops (a print, appending
  to a list) runs only in the recorded calls.
- Constants (numbers, arrays made inside the function) are compared by value between the
  two recordings: one computed from the data differs, and the function stays on the
  ordinary engine. So does a function whose ops differ between calls (Python control flow
  on data), that reads a value (`item()`, `bool()`, a comparison, `np.asarray`) of a Tensor
  computed from its inputs, that takes an input made by ops outside it, or that runs under
  `detect_anomaly()` or `jvp`. It then warns once (JitFallbackWarning) saying why, and every
  call stays correct. A branch on `t.data` that went the same way in both recorded calls
  cannot be seen: keep such code outside the function.
- The call signature is the shapes, dtypes and requires_grad of the Tensor and array
  arguments, the values of the other arguments, and grad mode: a new one (a short last
  batch, a call under `no_grad()`) is recorded and replayed on its own.
"""

from __future__ import annotations

import functools
import itertools
import numbers
import threading
import warnings

import numpy as np

from . import _kernels
from . import tensor as _tensor
from .tensor import (
    Context,
    Function,
    Tensor,
    _add_leaf_grad,
    _as_input_grad,
    _check_finite,
    _new_tensor,
    _sum_grad,
    _unit_grad,
)

__all__ = ["jit", "Jit", "JitFallbackWarning"]

MAX_VARIANTS = 8       # programs kept per call signature (e.g. train and eval modes)
MAX_SIGNATURES = 64    # call signatures kept per function (e.g. batch sizes)
MAX_PENDING = 3        # recordings kept per signature while waiting for a matching one


class JitFallbackWarning(UserWarning):
    """A jit-compiled function runs on the ordinary engine (the message says why)."""


class _Unreplayable(Exception):
    """Raised while reading a recording that cannot be replayed exactly; the reason."""


def jit(fn):
    """Compile `fn` (a function of Tensors returning a Tensor or a tuple of Tensors).

    Usable as `jit(fn)` or `@jit`. See the module docstring for what is replayed and when
    a call runs on the ordinary engine instead.
    """
    if isinstance(fn, Jit):
        return fn
    if not callable(fn):
        raise TypeError(f"jit: expected a function, got {type(fn).__name__}")
    return Jit(fn)


class Jit:
    """A function under `jit`. Call it like the function.

    `source`: the generated code of the latest compiled program (None before one exists);
    `stats`: counts of calls "recorded", "replayed" and run "eager" (given up or a mode
    that needs the ordinary engine).
    """

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn, updated=())
        self.stats = {"recorded": 0, "replayed": 0, "eager": 0}
        self.source = None
        self._signatures = {}  # signature -> _Signature
        self._lock = threading.Lock()
        self._warned = False

    def __repr__(self):
        return f"jit({_name(self.fn)})"

    def __get__(self, obj, objtype=None):  # @jit on a method: bind like a function
        return self if obj is None else functools.partial(self, obj)

    def __call__(self, *args, **kwargs):
        if _tensor.current_recording() is not None:
            return self.fn(*args, **kwargs)  # inside another jit's recording: its ops
        if _tensor.is_anomaly_enabled() or _tensor.forward_mode_depth():
            mode = "detect_anomaly()" if _tensor.is_anomaly_enabled() else "jvp"
            return self._eager(f"{mode} is on (it checks every op of the ordinary engine)",
                               args, kwargs)
        try:
            signature, args, kwargs = _signature(args, kwargs)
        except _Unreplayable as e:
            return self._eager(str(e), args, kwargs)
        with self._lock:
            entry = self._signatures.get(signature)
            if entry is None:
                if len(self._signatures) >= MAX_SIGNATURES:
                    entry = _Signature(given_up=f"more than {MAX_SIGNATURES} call signatures "
                                                f"(shapes, dtypes, grad mode)")
                else:
                    entry = self._signatures[signature] = _Signature()
        if entry.given_up:
            return self._eager(entry.given_up, args, kwargs)
        for program in entry.programs:
            if program.guard():
                self.stats["replayed"] += 1
                return program.run([a for a in args + list(kwargs.values())
                                    if isinstance(a, (Tensor, np.ndarray))])
        return self._record(entry, args, kwargs)

    def _eager(self, reason, args, kwargs):
        self.stats["eager"] += 1
        if not self._warned:
            self._warned = True
            warnings.warn(f"jit({_name(self.fn)}): {reason}; these calls run on the ordinary "
                          f"engine", JitFallbackWarning, stacklevel=3)
        return self.fn(*args, **kwargs)

    def _record(self, entry, args, kwargs):
        self.stats["recorded"] += 1
        recording = _Recording()
        with _tensor.recording_into(recording):
            result = self.fn(*args, **kwargs)
        try:
            trace = _Trace(recording, args, kwargs, result)
        except _Unreplayable as e:
            with self._lock:
                self._give_up(entry, str(e))
            return result
        with self._lock:
            for pending in entry.pending:  # a recording of the same signature waiting
                reason = pending.differs_from(trace)
                if reason is not None and pending.state_holds():
                    # the same signature, Tensors and modules, and other ops: they depend
                    # on the data (e.g. a branch on it), and a replay could take the wrong one
                    self._give_up(entry, reason)
                    return result
                if reason is None:
                    entry.pending.remove(pending)
                    if len(entry.programs) >= MAX_VARIANTS:
                        entry.programs.pop(0)
                    program = _Program(pending, trace, _name(self.fn))
                    entry.programs.append(program)
                    self.source = program.source
                    return result
            entry.pending = (entry.pending + [trace])[-MAX_PENDING:]
        return result

    def _give_up(self, entry, reason):
        entry.given_up = reason
        entry.pending = []
        entry.programs = []
        if not self._warned:
            self._warned = True
            warnings.warn(f"jit({_name(self.fn)}): {reason}; these calls run on the ordinary "
                          f"engine", JitFallbackWarning, stacklevel=4)


def _name(fn):
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


class _Signature:
    """What jit knows about one call signature: programs, a recording waiting for its
    twin, or the reason it runs on the ordinary engine."""

    def __init__(self, given_up=None):
        self.programs = []
        self.pending = []
        self.given_up = given_up


class _Recording:
    """Filled by the engine while a recording is in progress in this thread (tensor.py):
    `ops` holds (Function, inputs, params, ctx, output) per apply, `modules` each module
    called, `reads` each Tensor whose value Python read (item(), bool(), ...)."""

    def __init__(self):
        self.ops, self.modules, self.reads = [], [], []


# ----------------------------------------------------------------------------- signatures
def _signature(args, kwargs):
    """(hashable signature, args, kwargs) with arrays made Tensors: the shapes, dtypes and
    requires_grad of Tensor arguments, the values of the others, and grad mode."""
    parts = []
    new_args = []
    for i, a in enumerate(args):
        a, part = _argument(a, f"argument {i}")
        new_args.append(a)
        parts.append(part)
    new_kwargs = {}
    for key in sorted(kwargs):
        a, part = _argument(kwargs[key], f"argument {key!r}")
        new_kwargs[key] = a
        parts.append((key, part))
    return (tuple(parts), _tensor.is_grad_enabled()), new_args, new_kwargs


def _argument(a, what):
    if isinstance(a, np.ndarray):  # passed on as it is; its ops read it as the engine does
        return a, ("A", a.shape, a.dtype.str)
    if isinstance(a, Tensor):
        if a._ctx is not None:
            raise _Unreplayable(f"{what} was made by ops outside the function (its gradient "
                                f"flows on into that graph)")
        return a, ("T", a.data.shape, a.data.dtype.str, a.requires_grad)
    try:
        hash(a)
    except TypeError:
        raise _Unreplayable(f"{what} is a {type(a).__name__}, neither a Tensor, an array "
                            f"nor a hashable value") from None
    return a, ("V", type(a), a)


# ----------------------------------------------------------------------------- traces
class _Trace:
    """One recording read as a program: for each op its Function, the sources of its
    inputs ("arg", i) / ("op", j) / ("leaf", k), its keyword parameters, the needs of its
    inputs and whether it is in the graph; the leaves it read (captured Tensors or
    constants, told apart by comparing two traces); the modules that ran with their
    `.training`; the outputs' sources."""

    def __init__(self, recording, args, kwargs, result):
        arg_tensors = [a for a in list(args) + list(kwargs.values())
                       if isinstance(a, (Tensor, np.ndarray))]
        # a Tensor argument by identity; an array argument by the Tensors ops wrap it in
        arg_index = {id(t): i for i, t in enumerate(arg_tensors) if isinstance(t, Tensor)}
        self.array_index = {id(a): i for i, a in enumerate(arg_tensors)
                            if isinstance(a, np.ndarray)}
        self.arg_kinds = tuple(isinstance(a, Tensor) for a in arg_tensors)
        self.n_args = len(arg_tensors)
        self.arg_grads = tuple(isinstance(t, Tensor) and t.requires_grad for t in arg_tensors)
        made = {}           # id(output Tensor) -> op position
        leaf_index = {}     # id(leaf Tensor) -> position in self.leaves
        self.leaves = []
        self.ops = []
        for j, (function, inputs, params, ctx, out) in enumerate(recording.ops):
            sources = tuple(self._source(t, made, arg_index, leaf_index, function)
                            for t in inputs)
            self.ops.append(_TraceOp(function, sources, params, ctx, out, arg_tensors))
            made[id(out)] = j
        for t in recording.reads:
            if id(t) in made or id(t) in arg_index or t.requires_grad:
                raise _Unreplayable("the function reads the value of a Tensor computed from "
                                    "its inputs (item(), bool(), a comparison, np.asarray): "
                                    "Python may branch on it")
        self.modules = []
        seen = set()
        for m in recording.modules:
            if id(m) not in seen:
                seen.add(id(m))
                self.modules.append((m, getattr(m, "training", True)))
        self.single = isinstance(result, Tensor)
        outputs = (result,) if self.single else result
        if not isinstance(outputs, (tuple, list)) or not all(isinstance(t, Tensor)
                                                             for t in outputs):
            raise _Unreplayable(f"the function returned a {type(result).__name__}, not a "
                                f"Tensor or a tuple of Tensors")
        self.output_type = type(outputs)
        self.outputs = tuple(self._source(t, made, arg_index, leaf_index, None)
                             for t in outputs)
        self.leaf_states = [(t.requires_grad, t.data.shape, t.data.dtype) for t in self.leaves]

    def state_holds(self):
        """Are the Tensors it read and the modules that ran as they were when it was
        recorded? (If so, a different recording now means the ops depend on the data.)"""
        return (all((t.requires_grad, t.data.shape, t.data.dtype) == state
                    for t, state in zip(self.leaves, self.leaf_states))
                and all(getattr(m, "training", True) is training
                        for m, training in self.modules))

    def _source(self, t, made, arg_index, leaf_index, function):
        j = made.get(id(t))
        if j is not None:
            return ("op", j)
        i = arg_index.get(id(t))
        if i is not None:
            return ("arg", i)
        if t._ctx is not None:
            raise _Unreplayable(f"{function.name if function else 'an output'}: an input was "
                                f"made by ops outside the function")
        i = self.array_index.get(id(t.data))
        if i is not None and not t.requires_grad:
            return ("arg", i)
        k = leaf_index.get(id(t))
        if k is None:
            k = leaf_index[id(t)] = len(self.leaves)
            self.leaves.append(t)
        return ("leaf", k)

    def differs_from(self, other):
        """None when `other` (a second recording of the same signature) applies the same
        ops to the same sources with the same parameters and constants; else the reason."""
        if len(self.ops) != len(other.ops) or any(
                a.function is not b.function for a, b in zip(self.ops, other.ops)):
            return ("the ops differ between calls (Python control flow on the data?): "
                    f"{_op_names(self)} vs {_op_names(other)}")
        for j, (a, b) in enumerate(zip(self.ops, other.ops)):
            where = f"op {j} ({a.function.name})"
            if a.sources != b.sources:
                return f"{where} takes its inputs from other places between calls"
            if (a.needs, a.tracked, a.out_shape, a.out_dtype, type(a.module)) != \
                    (b.needs, b.tracked, b.out_shape, b.out_dtype, type(b.module)):
                return f"{where} differs between calls (shapes, modules or grad needs)"
            if a.params.keys() != b.params.keys():
                return f"{where} takes other keyword parameters between calls"
            for key in a.params:
                if not _same_param(a.params[key], b.params[key]):
                    return (f"{where}: parameter {key!r} differs between calls (a value "
                            f"computed from the data?)")
        if (self.outputs, self.single, self.output_type) != \
                (other.outputs, other.single, other.output_type):
            return "the function returns other Tensors between calls"
        if len(self.leaves) != len(other.leaves):
            return "the function reads other Tensors between calls"
        for a, b in zip(self.leaves, other.leaves):
            if a is b:
                continue  # captured: read by reference every call
            if a.requires_grad or b.requires_grad:
                return "a Tensor that requires grad is made anew inside the function"
            if not _same_array(a.data, b.data):
                return ("a constant differs between calls (a number or array computed from "
                        "the data?)")
        # (modules by type: one made anew inside the function, e.g. a loss, is the same)
        if [(type(m), t) for m, t in self.modules] != [(type(m), t) for m, t in other.modules]:
            return "other modules (or training modes) ran between calls"
        return None


def _op_names(trace):
    names = [op.function.name for op in trace.ops]
    return "[" + ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") + "]"


class _TraceOp:
    __slots__ = ("function", "sources", "params", "needs", "tracked", "out_shape",
                 "out_dtype", "module")

    def __init__(self, function, sources, params, ctx, out, arg_tensors):
        self.function = function
        self.sources = sources
        self.params = {key: _param(value, arg_tensors) for key, value in params.items()}
        self.needs = tuple(ctx.needs_input_grad)
        self.tracked = out._ctx is ctx
        self.out_shape = out.data.shape
        self.out_dtype = out.data.dtype
        self.module = ctx.module


class _ArgParam:
    """A keyword parameter that is an argument (a Tensor, or the array of one)."""

    __slots__ = ("index", "array")

    def __init__(self, index, array):
        self.index, self.array = index, array

    def __eq__(self, other):
        return (isinstance(other, _ArgParam) and (self.index, self.array)
                == (other.index, other.array))

    __hash__ = None


def _param(value, arg_tensors):
    for i, t in enumerate(arg_tensors):
        if value is t:
            return _ArgParam(i, isinstance(t, np.ndarray))
        if isinstance(t, Tensor) and value is t.data:
            return _ArgParam(i, True)
    return value


def _same_param(a, b):
    if isinstance(a, _ArgParam) or isinstance(b, _ArgParam):
        return a == b
    if a is b:
        return True
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return False  # a Tensor made anew each call: perhaps from the data
    return _same_value(a, b)


def _same_value(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return _same_array(a, b)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (numbers.Number, np.generic, str, bytes, slice, type, np.dtype,
                      type(None), type(Ellipsis))):
        try:
            return bool(a == b) or (a != a and b != b)  # nan == nan here
        except (TypeError, ValueError):
            return False
    return False  # another object made anew each call: cannot tell it is the same


def _same_array(a, b):
    return (a.shape == b.shape and a.dtype == b.dtype
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


# ----------------------------------------------------------------------------- programs
class _JitOutput(Function):
    """The node of a Tensor returned by a replayed call: its backward hands the gradient
    that reached it to the call's compiled backward (the `_JitCall` node)."""

    name = "jit"

    @staticmethod
    def forward(ctx, *arrays):
        raise RuntimeError("jit outputs are made by the compiled program, not applied")

    @staticmethod
    def backward(ctx, grad):
        ctx.call.seeds[ctx.position] = grad
        return _TOKEN  # reaches the call node, which runs once all its outputs are done


class _JitCall(Function):
    """The node of one replayed call: runs the recorded backward once the gradients of all
    its outputs are known. Its Context keeps the call's arrays (freed with the graph)."""

    name = "jit_call"

    @staticmethod
    def forward(ctx, *arrays):
        raise RuntimeError("jit calls are made by the compiled program, not applied")

    @staticmethod
    def backward(ctx, grad):
        seeds = ctx.seeds
        ctx.backward(seeds, _tensor.is_anomaly_enabled())
        for i in range(len(seeds)):
            seeds[i] = None
        return ()


_TOKEN = np.zeros(())  # the gradient an output node passes to its call node (a marker)


class _Program:
    """Compiled code for one stable recording: `guard()` (do the captured Tensors and the
    modules still match?) and `run(args)` -> the outputs, as Tensors."""

    _count = itertools.count()

    def __init__(self, first, trace, name):
        self.name = name
        self.trace = trace
        names = {"ndarray": np.ndarray, "asarray": np.asarray, "Context": Context,
                 "Tensor": Tensor, "new_tensor": _new_tensor, "unit_grad": _unit_grad,
                 "as_input_grad": _as_input_grad, "add_leaf_grad": _add_leaf_grad,
                 "sum_grad": _sum_grad, "check_finite": _check_finite, "add": np.add,
                 "add_first_leaf_grad": _add_first_leaf_grad, "arity_error": _arity_error,
                 "JitCall": _JitCall, "TOKEN": _TOKEN}
        lines = self._guard_lines(first, trace, names) + [""]
        lines += self._run_lines(first, trace, names)
        self.source = "\n".join(lines) + "\n"
        code = compile(self.source, f"<jit {name} #{next(self._count)}>", "exec")
        exec(code, names)  # noqa: S102 (our own code, generated from the recorded ops)
        self.guard = names["guard"]
        self.run = names["run"]

    # -- the generated code -------------------------------------------------------------
    def _leaf_name(self, first, trace, k, names):
        a, b = first.leaves[k], trace.leaves[k]
        if a is b:
            names[f"leaf{k}"] = b
            return f"leaf{k}.data"
        if a.data is b.data:  # the same array object both times: read it by reference
            names[f"const{k}"] = b.data
        else:
            names[f"const{k}"] = b.data.copy()
        return f"const{k}"

    def _guard_lines(self, first, trace, names):
        checks = []
        for k, (a, b) in enumerate(zip(first.leaves, trace.leaves)):
            if a is b:
                names[f"leaf{k}"] = b
                names[f"dtype{k}"] = b.data.dtype
                checks.append(f"leaf{k}.requires_grad is {b.requires_grad}")
                checks.append(f"leaf{k}.data.shape == {b.data.shape!r}")
                checks.append(f"leaf{k}.data.dtype == dtype{k}")
        for i, (m, training) in enumerate(trace.modules):
            names[f"module{i}"] = m
            checks.append(f"getattr(module{i}, 'training', True) is {training}")
        lines = ["def guard():",
                 "    \"\"\"Do the captured Tensors and the modules match the recording?\"\"\""]
        if not checks:
            return lines + ["    return True"]
        lines.append("    return (" + checks[0])
        lines += [f"            and {c}" for c in checks[1:]]
        lines[-1] += ")"
        return lines

    def _run_lines(self, first, trace, names):
        lines = ["def run(args):",
                 "    \"\"\"One call on `args` (its Tensor and array arguments): the recorded "
                 "ops' forward, then the outputs; their backward is `backward` below.\"\"\""]
        value = {}
        for i, is_tensor in enumerate(trace.arg_kinds):
            value[("arg", i)] = f"a{i}"
            if is_tensor:
                lines.append(f"    t{i} = args[{i}]")
                lines.append(f"    a{i} = t{i}.data")
            else:
                lines.append(f"    a{i} = args[{i}]")
        for k in range(len(trace.leaves)):
            expr = self._leaf_name(first, trace, k, names)
            if expr.startswith("leaf"):
                lines.append(f"    w{k} = {expr}")
                value[("leaf", k)] = f"w{k}"
            else:
                value[("leaf", k)] = expr
        tracked = [j for j, op in enumerate(trace.ops) if op.tracked]
        grad_on = bool(tracked)
        for j, op in enumerate(trace.ops):
            names[f"F{j}"] = op.function
            fast = _kernels.FAST.get(op.function)  # the same numbers, fewer temporaries
            names[f"fwd{j}"] = fast[0] if fast else op.function.forward
            names[f"bwd{j}"] = fast[1] if fast else op.function.backward
            names[f"needs{j}"] = op.needs
            names[f"module{j}_"] = op.module
            lines.append(f"    c{j} = Context(F{j}, (), needs{j}); c{j}.module = module{j}_")
            args = [f"c{j}"] + [value[s] for s in op.sources]
            fixed = {k: v for k, v in op.params.items() if not isinstance(v, _ArgParam)}
            from_args = {k: v for k, v in op.params.items() if isinstance(v, _ArgParam)}
            if fixed:
                names[f"params{j}"] = fixed
            if from_args:
                put = ", ".join(f"{key!r}: {'a' if p.array else 't'}{p.index}"
                                for key, p in from_args.items())
                args.append(f"**{{{'**params' + str(j) + ', ' if fixed else ''}{put}}}")
            elif fixed:
                args.append(f"**params{j}")
            out = f"v{j}"
            value[("op", j)] = out
            lines.append(f"    {out} = fwd{j}({', '.join(args)})  # {op.function.name}")
            lines.append(f"    if {out}.__class__ is not ndarray:")
            lines.append(f"        {out} = asarray({out})")
        # the outputs: Tensors; those in the graph hang from one call node
        out_exprs = []
        made = {}
        graph_outputs = [s for s in trace.outputs if s[0] == "op" and trace.ops[s[1]].tracked]
        graph_outputs = list(dict.fromkeys(graph_outputs))
        if grad_on and graph_outputs:
            lines += self._backward_lines(trace, first, graph_outputs, value, names)
            lines.append("    call = Tensor.__new__(Tensor)  # the node that runs backward")
            lines.append("    call.data = TOKEN; call.grad = None; call.name = None")
            lines.append("    call.requires_grad = True; call._retain = False; "
                         "call._tangent = None")
            lines.append("    call._ctx = cc = Context(JitCall, (), ())")
            lines.append(f"    cc.seeds = [None] * {len(graph_outputs)}")
            lines.append("    cc.backward = backward")
        for s in trace.outputs:
            if s in made:
                out_exprs.append(made[s])
                continue
            if s[0] == "op":
                j = s[1]
                name = f"o{j}"
                lines.append(f"    {name} = new_tensor(v{j})")
                if trace.ops[j].tracked and grad_on:
                    pos = graph_outputs.index(s)
                    cls = type(f"JitOutput_{trace.ops[j].function.__name__}", (_JitOutput,),
                               {"name": trace.ops[j].function.name})
                    names[f"Out{pos}"] = cls
                    lines.append(f"    {name}.requires_grad = True")
                    lines.append(f"    {name}._ctx = x = Context(Out{pos}, (call,), (True,))")
                    lines.append(f"    x.call = cc; x.position = {pos}")
                made[s] = name
                out_exprs.append(name)
            elif s[0] == "arg":
                out_exprs.append(f"t{s[1]}" if trace.arg_kinds[s[1]] else f"Tensor(a{s[1]})")
            else:
                k = s[1]
                if first.leaves[k] is trace.leaves[k]:
                    out_exprs.append(f"leaf{k}")
                else:
                    out_exprs.append(f"Tensor(const{k})")
        if trace.single:
            lines.append(f"    return {out_exprs[0]}")
        else:
            names["output_type"] = trace.output_type
            lines.append(f"    return output_type(({', '.join(out_exprs)},))")
        return lines

    def _backward_lines(self, trace, first, graph_outputs, value, names):
        """Tensor.backward's loop unrolled over the recorded ops, in reverse creation order:
        `g{j}` is the gradient of op j's output so far (None until one arrives)."""
        lines = ["",
                 "    def backward(seeds, anomaly):",
                 "        \"\"\"Reverse mode through the recorded ops, from the outputs' "
                 "gradients.\"\"\""]
        tracked = [j for j, op in enumerate(trace.ops) if op.tracked]
        seeded = {s[1]: pos for pos, s in enumerate(graph_outputs)}
        for j in tracked:
            lines.append(f"        g{j} = {'seeds[%d]' % seeded[j] if j in seeded else 'None'}")
        arg_leaf = {}  # arg index -> its Tensor name (a leaf that may require grad)
        leaf_contributions = {}  # leaf name -> the ops that give it a gradient
        own_line = len(lines)  # own_<leaf> = False lines go here, once the leaves are known
        for j in reversed(tracked):
            op = trace.ops[j]
            n_inputs = len(op.sources)
            lines += [f"        if g{j} is not None:  # {op.function.name}",
                      f"            r = bwd{j}(c{j}, g{j})",
                      "            if r.__class__ is not tuple:",
                      "                r = (r,)",
                      f"            if len(r) != {n_inputs}:",
                      f"                arity_error(F{j}, len(r), {n_inputs})"]
            for k, s in enumerate(op.sources):
                if s[0] == "op":
                    if not trace.ops[s[1]].tracked:
                        continue
                elif s[0] == "arg":
                    if not trace.arg_grads[s[1]]:
                        continue
                    arg_leaf[s[1]] = f"t{s[1]}"
                elif not (first.leaves[s[1]] is trace.leaves[s[1]]
                          and trace.leaves[s[1]].requires_grad):
                    continue
                like = value[s]
                lines += [f"            pg = r[{k}]",
                          "            if pg is not None:",
                          f"                if (pg.__class__ is not ndarray or pg.shape != "
                          f"{like}.shape or pg.dtype is not {like}.dtype):",
                          f"                    pg = as_input_grad(pg, {like}, F{j})",
                          "                if anomaly:",
                          f"                    check_finite(pg, '{op.function.name}: backward "
                          "produced')"]
                if s[0] == "op":
                    t = f"g{s[1]}"
                    lines.append(f"                {t} = sum_grad({t}, pg)")
                else:
                    leaf = f"t{s[1]}" if s[0] == "arg" else f"leaf{s[1]}"
                    contributions = leaf_contributions.setdefault(leaf, [])
                    contributions.append(j)
                    if len(contributions) == 1:  # the only one, or the first of several
                        lines += [f"                if {leaf}.requires_grad:",
                                  f"                    own_{leaf} = add_first_leaf_grad("
                                  f"{leaf}, pg, g{j}, {op.function.__module__ == _ops_module})"]
                    else:  # .grad is ours once own_: add in place (the same `+`, same bits)
                        lines += [f"                if {leaf}.requires_grad:",
                                  f"                    if own_{leaf}:",
                                  f"                        add({leaf}.grad, pg, out={leaf}.grad)",
                                  "                    else:",
                                  f"                        own_{leaf} = add_first_leaf_grad("
                                  f"{leaf}, pg, g{j}, False)"]
            lines.append(f"            r = pg = g{j} = None")
        owned = [f"own_{leaf}" for leaf, js in leaf_contributions.items() if len(js) > 1]
        if owned:
            lines.insert(own_line, "        " + " = ".join(owned) + " = False  # .grad made here?")
        return lines


_ops_module = "tinygrad_mlp.ops"  # its ops' backward return fresh arrays (or views, copied)


def _add_first_leaf_grad(leaf, pg, g, trusted):
    """A leaf's first gradient in a compiled backward: as `_add_leaf_grad`. True when the
    leaf's `.grad` is now an array no one else holds (a sum, a copy, or a fresh array from
    a trusted op), so the next gradients can be added in place: `+` into it gives the bits
    of `+` into a new array, and nothing else sees the difference."""
    owned = leaf.grad is not None or trusted or pg is g or pg.base is not None
    _add_leaf_grad(leaf, pg, g)
    return owned


def _arity_error(function, got, want):
    raise RuntimeError(f"{function.name}: backward returned {got} gradient(s) for {want} "
                       f"input(s)")
