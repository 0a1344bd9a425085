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
    _FRESH_MODULE,
    Context,
    Function,
    Tensor,
    _add_in_place,
    _add_leaf_grad,
    _as_input_grad,
    _check_finite,
    _grad_tuple,
    _new_tensor,
    _sum_grad,
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
    modules still match?) and `run(args)` -> the outputs, as Tensors. `source` is the
    code: the recorded ops' forward, one line per op, and their backward (Tensor.backward's
    loop unrolled), each call a call of the op's own `forward` / `backward`."""

    _count = itertools.count()

    def __init__(self, first, trace, name):
        self.name = name
        self.trace = trace
        self.names = {"asarray": np.asarray, "Tensor": Tensor, "context": _context,
                      "results": _grad_tuple, "input_grad": _input_grad, "sum_grad": _sum_grad,
                      "add_in_place": _add_in_place, "add_leaf_grad": _add_leaf_grad,
                      "call_node": _call_node, "graph_output": _graph_output,
                      "new_tensor": _new_tensor}
        # a leaf is captured when both recordings read the same Tensor, else a constant
        self.captured = [a is b for a, b in zip(first.leaves, trace.leaves)]
        lines = self._guard_lines() + [""] + self._run_lines()
        self.source = "\n".join(lines) + "\n"
        code = compile(self.source, f"<jit {name} #{next(self._count)}>", "exec")
        exec(code, self.names)  # noqa: S102 (our own code, generated from the recorded ops)
        self.guard = self.names["guard"]
        self.run = self.names["run"]
        for k, leaf in enumerate(first.leaves):  # a constant read by reference, or a copy
            if not self.captured[k]:
                b = trace.leaves[k].data
                self.names[f"const{k}"] = b if leaf.data is b else b.copy()

    def _guard_lines(self):
        trace, names, checks = self.trace, self.names, []
        for k, t in enumerate(trace.leaves):
            if self.captured[k]:
                names[f"leaf{k}"], names[f"dtype{k}"] = t, t.data.dtype
                checks += [f"leaf{k}.requires_grad is {t.requires_grad}",
                           f"leaf{k}.data.shape == {t.data.shape!r}",
                           f"leaf{k}.data.dtype == dtype{k}"]
        for i, (m, training) in enumerate(trace.modules):
            names[f"module{i}"] = m
            checks.append(f"getattr(module{i}, 'training', True) is {training}")
        lines = ["def guard():",
                 '    """Do the captured Tensors and the modules match the recording?"""']
        if not checks:
            return lines + ["    return True"]
        return lines + ["    return (" + "\n            and ".join(checks) + ")"]

    def _run_lines(self):
        trace, names = self.trace, self.names
        lines = ["def run(args):",
                 '    """One call on `args` (the Tensor and array arguments): the recorded ops\''
                 ' forward, then the outputs."""']
        value = {}  # source -> the name of its array in the code
        for i, is_tensor in enumerate(trace.arg_kinds):
            value[("arg", i)] = f"a{i}"
            lines += [f"    t{i} = args[{i}]", f"    a{i} = t{i}.data"] if is_tensor else \
                [f"    a{i} = args[{i}]"]
        for k in range(len(trace.leaves)):
            if self.captured[k]:
                lines.append(f"    w{k} = leaf{k}.data  # read anew every call")
                value[("leaf", k)] = f"w{k}"
            else:
                value[("leaf", k)] = f"const{k}"
        into = [j for j, op in enumerate(trace.ops) if op.function in _kernels.FORWARD_INTO]
        if into:  # forward kernels that write into arrays kept between calls
            names["forward_buffers"] = functools.partial(
                _thread_buffers, threading.local(), {j: _kernels.FORWARD_SLOTS for j in into})
            lines.append("    fbufs = forward_buffers()  # this thread's arrays, kept between "
                         "calls")
        for j, op in enumerate(trace.ops):
            fast = _kernels.FAST.get(op.function)  # the same numbers, fewer temporaries
            names[f"F{j}"], names[f"needs{j}"], names[f"m{j}"] = op.function, op.needs, op.module
            names[f"fwd{j}"] = _kernels.FORWARD_INTO.get(
                op.function, fast[0] if fast else op.function.forward)
            names[f"bwd{j}"] = fast[1] if fast else _kernels.INTO.get(op.function,
                                                                      op.function.backward)
            args = [f"c{j}"] + [value[s] for s in op.sources]
            if j in into:
                args.append(f"buffers=fbufs[{j}]")
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
            value[("op", j)] = f"v{j}"
            lines += [f"    c{j} = context(F{j}, needs{j}, m{j})",
                      f"    v{j} = asarray(fwd{j}({', '.join(args)}))  # {op.function.name}"]
        # the outputs: Tensors; those in the graph hang from one node of the call
        graph_outputs = list(dict.fromkeys(
            s for s in trace.outputs if s[0] == "op" and trace.ops[s[1]].tracked))
        if graph_outputs:
            lines += self._backward_lines(graph_outputs, value)
            lines.append(f"    call = call_node(backward, {len(graph_outputs)})")
        made, out_exprs = {}, []
        for s in trace.outputs:
            if s not in made:
                kind, n = s
                if kind == "op" and s in graph_outputs:
                    pos = graph_outputs.index(s)
                    function = trace.ops[n].function
                    names[f"Out{pos}"] = type(f"JitOutput_{function.__name__}", (_JitOutput,),
                                              {"name": function.name})
                    lines.append(f"    o{n} = graph_output(v{n}, call, {pos}, Out{pos})")
                    made[s] = f"o{n}"
                elif kind == "op":
                    made[s] = f"new_tensor(v{n})"
                elif kind == "arg":
                    made[s] = f"t{n}" if trace.arg_kinds[n] else f"Tensor(a{n})"
                else:
                    made[s] = f"leaf{n}" if self.captured[n] else f"Tensor(const{n})"
            out_exprs.append(made[s])
        if trace.single:
            lines.append(f"    return {out_exprs[0]}")
        else:
            names["output_type"] = trace.output_type
            lines.append(f"    return output_type(({', '.join(out_exprs)},))")
        return lines

    def _backward_lines(self, graph_outputs, value):
        """Tensor.backward's loop unrolled over the recorded ops, in reverse creation order:
        `g{j}` is the gradient of op j's output so far (None until one arrives), summed one
        contribution at a time with the engine's helpers, in the engine's order."""
        trace = self.trace
        tracked = [j for j, op in enumerate(trace.ops) if op.tracked]
        seeded = {s[1]: pos for pos, s in enumerate(graph_outputs)}
        lines = ["",
                 "    def backward(seeds, anomaly):",
                 '        """Reverse mode from the outputs\' gradients `seeds`."""']
        lines += [f"        g{j} = seeds[{pos}]" for j, pos in seeded.items()]
        rest = [f"g{j}" for j in tracked if j not in seeded]
        if rest:
            lines.append("        " + " = ".join(rest) + " = None")
        into = [j for j in tracked if trace.ops[j].function in _kernels.INTO]
        if into:  # the kernels that write into arrays kept between calls (_kernels.INTO)
            sizes = {j: len(trace.ops[j].sources) for j in into}
            self.names["buffers"] = functools.partial(_thread_buffers, threading.local(), sizes)
            lines.append("        bufs = buffers()  # this thread's arrays, kept between calls")
        own_line = len(lines)
        total = {}  # leaf name -> how many gradients it gets; contributions: so far
        for j in tracked:
            for kind, n in trace.ops[j].sources:
                if (kind == "arg" and trace.arg_grads[n]) or (
                        kind == "leaf" and self.captured[n] and trace.leaves[n].requires_grad):
                    leaf = f"t{n}" if kind == "arg" else f"leaf{n}"
                    total[leaf] = total.get(leaf, 0) + 1
        contributions = {}
        for j in reversed(tracked):
            op = trace.ops[j]
            buffers = f", bufs[{j}]" if j in into else ""
            lines += [f"        if g{j} is not None:  # {op.function.name}",
                      f"            r = results(bwd{j}(c{j}, g{j}{buffers}), F{j}, "
                      f"{len(op.sources)})"]
            for k, s in enumerate(op.sources):
                kind, n = s
                grad = f"input_grad(r[{k}], {value[s]}, F{j}, anomaly)"
                if kind == "op":
                    if trace.ops[n].tracked:
                        lines += [f"            if r[{k}] is not None:",
                                  f"                g{n} = sum_grad(g{n}, {grad})"]
                    continue
                if kind == "arg" and trace.arg_grads[n]:
                    leaf = f"t{n}"
                elif kind == "leaf" and self.captured[n] and trace.leaves[n].requires_grad:
                    leaf = f"leaf{n}"
                else:
                    continue
                contributions[leaf] = contributions.get(leaf, 0) + 1
                trusted = op.function.__module__ == _FRESH_MODULE
                lines.append(f"            if r[{k}] is not None and {leaf}.requires_grad:")
                if total[leaf] == 1:
                    lines.append(f"                add_leaf_grad({leaf}, {grad}, g{j})")
                elif contributions[leaf] == 1:  # the first of several
                    lines.append(f"                own_{leaf} = add_leaf_grad({leaf}, "
                                 f"{grad}, g{j}, {trusted})")
                else:  # .grad is an array made here: + in place (the same `+`, same bits)
                    lines += [f"                pg = {grad}",
                              f"                if own_{leaf}:",
                              f"                    add_in_place({leaf}, pg)",
                              "                else:",
                              f"                    own_{leaf} = add_leaf_grad({leaf}, "
                              f"pg, g{j}, False)"]
            lines.append(f"            r = g{j} = None")
        owned = [f"own_{leaf}" for leaf, n in contributions.items() if n > 1]
        if owned:
            lines.insert(own_line, "        " + " = ".join(owned) + " = False  # .grad made "
                         "by this backward?")
        return lines


def _thread_buffers(local, sizes):
    """The calling thread's buffer slots of one program: {op index: [array or None per
    input]} (per thread, so that two threads replaying it never share an array)."""
    slots = getattr(local, "slots", None)
    if slots is None:
        slots = local.slots = {j: [None] * n for j, n in sizes.items()}
    return slots


def _context(function, needs, module):
    """A fresh Context for one replayed op, as `apply` makes it (no parents: a replay
    links no Tensors)."""
    ctx = Context(function, (), needs)
    ctx.module = module
    return ctx


def _input_grad(pg, like, function, anomaly):
    """`_as_input_grad` (unbroadcast, cast), then the anomaly check, as the engine does."""
    pg = _as_input_grad(pg, like, function)
    if anomaly:
        _check_finite(pg, f"{function.name}: backward produced")
    return pg


def _call_node(backward, n_outputs):
    """The Tensor whose Context runs a replayed call's `backward` (see _JitCall)."""
    call = _new_tensor(_TOKEN)
    call.requires_grad = True
    call._ctx = ctx = Context(_JitCall, (), ())
    ctx.seeds = [None] * n_outputs
    ctx.backward = backward
    return call


def _graph_output(data, call, position, function):
    """Output `position` of a replayed call: a Tensor in the graph, its gradient going to
    the call's node."""
    out = _new_tensor(data)
    out.requires_grad = True
    out._ctx = ctx = Context(function, (call,), (True,))
    ctx.call, ctx.position = call._ctx, position
    return out
