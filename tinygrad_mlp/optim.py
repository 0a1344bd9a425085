"""Optimizers: update parameters in place from their `.grad`, with torch.optim's formulas.

g is a parameter's gradient, p the parameter, t the step number (1, 2, ...).

SGD:     g <- g + wd p (weight decay);  v <- momentum v + g  (v = g at the first step);
         p <- p - lr v, or with nesterov p <- p - lr (g + momentum v); plain p <- p - lr g
Adam:    g <- g + wd p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
         m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t);  p <- p - lr m_hat / (sqrt(v_hat) + eps)
AdamW:   p <- p (1 - lr wd) (decoupled weight decay), then Adam's step without wd
RMSprop: s <- alpha s + (1 - alpha) g^2;  p <- p - lr g / (sqrt(s) + eps), or with momentum
         b <- momentum b + g / (sqrt(s) + eps);  p <- p - lr b

`lr` is an attribute and may be changed between steps (learning-rate schedules). Every
optimizer's `state_dict()` holds its step count, hyperparameters and per-parameter state (as
arrays, PyTorch's names: momentum_buffer, exp_avg, exp_avg_sq, square_avg, step), so a
checkpoint can hold it; `load_state_dict` checks it all before changing anything.

Subnormal state is flushed to zero every FLUSH_EVERY steps. A parameter whose gradient stays
exactly 0 (the weights of a dead ReLU unit) has its momentum decay by b1 each step until it
is stuck at a subnormal number (in float32, 0.9 x 5.6e-45 rounds back to 5.6e-45),
and some arithmetic on subnormals is slower: here, Adam's division over a 784 x 256 weight
with one entry in seven stuck (the dead units of the fast MNIST recipe) took 1.5 times as
long. The flushed values are below 1.2e-38 (float32): the weight updates they would make
are below 1e-30, too small to change any weight above 1e-23 in magnitude.
"""

from __future__ import annotations

import math

import numpy as np

from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "clip_grad_norm", "one_cycle"]

FLUSH_EVERY = 64  # steps between flushes of subnormal optimizer state to zero


def _flush_subnormals(state, scratch):
    """Set the entries of `state` whose magnitude is below the dtype's smallest normal
    number to zero, in place (`scratch`: an array like it, overwritten)."""
    tiny = np.finfo(state.dtype).tiny
    np.abs(state, out=scratch)
    np.putmask(state, scratch < tiny, 0)


def _ema(avg, rate, x, scratch):
    """avg <- rate avg + (1 - rate) x, in place (an exponential moving average;
    `scratch`: an array like avg, overwritten)."""
    avg *= rate
    avg += np.multiply(x, 1 - rate, out=scratch)


def _check_positive(owner, label, value, allow_zero=False):
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}: {label} must be a finite number {bound}, got {value}")
    return value


def _check_betas(owner, betas):
    b1, b2 = (float(b) for b in betas)
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"{owner}: betas must be in [0, 1), got {betas}")
    return b1, b2


class Optimizer:
    """Holds the parameters; `step()` updates them, `zero_grad()` clears their gradients.

    `state[i]` is the dict of per-parameter state of `params[i]` (empty until its first
    step); `steps` counts the calls of `step()`. A subclass lists its hyperparameters in
    `hyperparameters` (attribute names) and the names its state may hold in `state_names`.
    """

    hyperparameters = ("lr",)
    state_names = ()
    n_scratch = 2  # work arrays per parameter that `update` needs

    def __init__(self, params, lr):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got no parameters to optimize "
                             f"(pass model.parameters())")
        seen, unique = set(), []
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a "
                                f"{type(p).__name__}, not a Tensor")
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: parameter {i} of shape {p.shape} "
                                 f"does not require grad")
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        self.params = unique
        self.lr = _check_positive(type(self).__name__, "lr", lr)
        self.steps = 0
        self.state = [{} for _ in self.params]
        self._scratch = [()] * len(self.params)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient (`update` of the subclass)."""
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.update(p, p.grad, self.state[i], self._scratch_arrays(i))
        self.steps += 1

    def update(self, p, g, state, scratch):
        """Update one parameter p (a Tensor) from its gradient g, in place; `state`: its
        dict of state arrays; `scratch`: `n_scratch` work arrays like p.data."""
        raise NotImplementedError

    def _scratch_arrays(self, i):
        """Work arrays like params[i].data, kept between steps (no new arrays per step)."""
        data, arrays = self.params[i].data, self._scratch[i]
        if not arrays or arrays[0].shape != data.shape or arrays[0].dtype != data.dtype:
            arrays = self._scratch[i] = tuple(np.empty_like(data) for _ in range(self.n_scratch))
        return arrays

    def _flush_due(self):
        return self.steps % FLUSH_EVERY == FLUSH_EVERY - 1

    # -- state ----------------------------------------------------------------------------
    def state_dict(self):
        """{'optimizer': class name, 'steps': int, 'hyperparameters': {name: value},
        'state': one dict per parameter of arrays (copies)}."""
        hyper = {}
        for name in self.hyperparameters:
            value = getattr(self, name)
            hyper[name] = list(value) if isinstance(value, tuple) else value
        return {"optimizer": type(self).__name__, "steps": int(self.steps),
                "hyperparameters": hyper,
                "state": [{k: np.array(v, copy=True) for k, v in s.items()}
                          for s in self.state]}

    def load_state_dict(self, state, *, source="state_dict"):
        """Set the step count, hyperparameters and per-parameter state from `state_dict()`.

        Checks the optimizer class, the number of parameters and every array's shape and
        dtype first: on any difference raises ValueError naming it and changes nothing."""
        problems = self._state_problems(state)
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: {source} does not fit: "
                             + "; ".join(problems))
        for name, value in state["hyperparameters"].items():
            setattr(self, name, tuple(value) if isinstance(value, (list, tuple)) else value)
        self.steps = int(state["steps"])
        self.state = [{k: (int(v) if k == "step" else np.array(v, copy=True))
                       for k, v in s.items()} for s in state["state"]]

    def _state_problems(self, state):
        """What keeps `state` from loading into this optimizer (a list of strings)."""
        mine = type(self).__name__
        try:
            kind, per_param = state["optimizer"], list(state["state"])
            hyper, steps = dict(state["hyperparameters"]), int(state["steps"])
        except (KeyError, TypeError, ValueError) as e:
            return [f"not an optimizer state_dict ({type(e).__name__}: {e})"]
        if kind != mine:
            return [f"it is the state of {kind}, not {mine}"]
        problems = []
        if steps < 0:
            problems.append(f"steps {steps} < 0")
        if sorted(hyper) != sorted(self.hyperparameters):
            problems.append(f"hyperparameters {sorted(hyper)}, expected "
                            f"{sorted(self.hyperparameters)}")
        if len(per_param) != len(self.params):
            return problems + [f"state for {len(per_param)} parameters, the optimizer has "
                               f"{len(self.params)}"]
        for i, (s, p) in enumerate(zip(per_param, self.params)):
            for k, v in s.items():
                v = np.asarray(v)
                if k not in self.state_names:
                    problems.append(f"parameter {i}: unknown state {k!r}")
                elif k == "step":
                    if v.shape != () or v.dtype.kind not in "iu":
                        problems.append(f"parameter {i}: step must be an integer, got "
                                        f"{v.dtype} of shape {v.shape}")
                elif v.shape != p.shape or v.dtype != p.dtype:
                    problems.append(f"parameter {i}: {k} is {v.dtype} {v.shape}, the "
                                    f"parameter is {p.dtype} {p.shape}")
        return problems


class SGD(Optimizer):
    """Stochastic gradient descent with optional (heavy-ball or Nesterov) momentum and L2
    weight decay, as torch.optim.SGD (dampening 0)."""

    hyperparameters = ("lr", "momentum", "nesterov", "weight_decay")
    state_names = ("momentum_buffer",)
    n_scratch = 1

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum = _check_positive("SGD", "momentum", momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"SGD: momentum must be < 1, got {self.momentum}")
        self.nesterov = bool(nesterov)
        if self.nesterov and not self.momentum:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")
        self.weight_decay = _check_positive("SGD", "weight_decay", weight_decay,
                                            allow_zero=True)

    def update(self, p, g, state, scratch):
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        tmp = scratch[0]
        if wd:
            g = g + wd * p.data
        if mu:
            v = state.get("momentum_buffer")
            if v is None:
                v = state["momentum_buffer"] = g.astype(p.dtype, copy=True)
            else:
                v *= mu
                v += g
                if self._flush_due():
                    _flush_subnormals(v, tmp)
            g = g + mu * v if self.nesterov else v
        p.data -= np.multiply(g, lr, out=tmp)  # p <- p - lr g, without a new array


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam; weight_decay adds the
    L2 term wd p to the gradient (AdamW decouples it)."""

    hyperparameters = ("lr", "betas", "eps", "weight_decay")
    state_names = ("step", "exp_avg", "exp_avg_sq")
    _decoupled = False  # AdamW: shrink p by (1 - lr wd) instead of adding wd p to g

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        name = type(self).__name__
        self.betas = _check_betas(name, betas)
        self.eps = _check_positive(name, "eps", eps)
        self.weight_decay = _check_positive(name, "weight_decay", weight_decay,
                                            allow_zero=True)

    def update(self, p, g, state, scratch):
        (b1, b2), lr, eps, wd = self.betas, self.lr, self.eps, self.weight_decay
        tmp, tmp2 = scratch
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(p.data),
                         exp_avg_sq=np.zeros_like(p.data))
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if wd and self._decoupled:
            p.data *= 1 - lr * wd
        elif wd:
            g = g + wd * p.data
        _ema(m, b1, g, tmp)                                # m <- b1 m + (1 - b1) g
        _ema(v, b2, np.multiply(g, g, out=tmp2), tmp)      # v <- b2 v + (1 - b2) g^2
        m_hat = np.divide(m, 1 - b1 ** t, out=tmp)
        v_hat = np.divide(v, 1 - b2 ** t, out=tmp2)
        denom = np.sqrt(v_hat, out=tmp2)
        denom += eps
        step = np.divide(m_hat, denom, out=tmp)            # m_hat / (sqrt(v_hat) + eps)
        p.data -= np.multiply(step, lr, out=tmp)
        if self._flush_due():
            _flush_subnormals(m, tmp)
            _flush_subnormals(v, tmp)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW:
    p <- p (1 - lr wd) before Adam's step on the plain gradient."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """RMSprop (Hinton), as torch.optim.RMSprop (not centered): divides the gradient by the
    root of a running mean of its square."""

    hyperparameters = ("lr", "alpha", "eps", "momentum")
    state_names = ("square_avg", "momentum_buffer")

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0):
        super().__init__(params, lr)
        self.alpha = _check_positive("RMSprop", "alpha", alpha, allow_zero=True)
        if self.alpha >= 1:
            raise ValueError(f"RMSprop: alpha must be < 1, got {self.alpha}")
        self.eps = _check_positive("RMSprop", "eps", eps)
        self.momentum = _check_positive("RMSprop", "momentum", momentum, allow_zero=True)

    def update(self, p, g, state, scratch):
        lr, alpha, eps, mu = self.lr, self.alpha, self.eps, self.momentum
        tmp, tmp2 = scratch
        if not state:
            state["square_avg"] = np.zeros_like(p.data)
            if mu:
                state["momentum_buffer"] = np.zeros_like(p.data)
        sq = state["square_avg"]
        _ema(sq, alpha, np.multiply(g, g, out=tmp2), tmp)  # s <- alpha s + (1 - alpha) g^2
        denom = np.sqrt(sq, out=tmp2)
        denom += eps
        step = np.divide(g, denom, out=tmp)                # g / (sqrt(s) + eps)
        if mu:
            buf = state["momentum_buffer"]
            buf *= mu
            buf += step
            step = buf
        p.data -= np.multiply(step, lr, out=tmp)
        if self._flush_due():
            _flush_subnormals(sq, tmp)
            if mu:
                _flush_subnormals(state["momentum_buffer"], tmp)


def clip_grad_norm(params, max_norm):
    """Scale the gradients of `params` (Tensors, or one Tensor) in place so that their
    total norm sqrt(sum of all squared entries) is at most max_norm, as PyTorch's
    clip_grad_norm_: each gradient is multiplied by min(1, max_norm / (norm + 1e-6)).
    Parameters without a gradient are skipped. Returns the total norm before clipping."""
    params = [params] if isinstance(params, Tensor) else list(params)
    max_norm = _check_positive("clip_grad_norm", "max_norm", max_norm, allow_zero=True)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = [np.sqrt(np.vdot(g, g)) for g in grads]  # each in the gradient's dtype
    total = float(np.sqrt(np.sum(np.square(np.array(norms, dtype=np.float64)))))
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        for g in grads:
            g *= coef
    return total


def one_cycle(step, total_steps, max_lr, *, pct_start=0.25, div_factor=25.0,
              final_div_factor=1e4):
    """The one-cycle learning rate at `step` (0-based) of `total_steps`.

    Rises from max_lr/div_factor to max_lr over the first pct_start of the steps (cosine),
    then falls to max_lr/(div_factor*final_div_factor) (cosine), as PyTorch's OneCycleLR
    (anneal_strategy='cos') given the same pct_start (PyTorch's default is 0.3).
    """
    if total_steps <= 0:
        raise ValueError(f"one_cycle: total_steps must be > 0, got {total_steps}")
    initial = max_lr / div_factor
    final = initial / final_div_factor
    warm = max(1.0, pct_start * total_steps - 1)  # a float, as in PyTorch
    step = min(max(step, 0), total_steps - 1)
    if step <= warm:
        frac, lo, hi = step / warm, initial, max_lr
    else:
        frac = (step - warm) / max(1, total_steps - 1 - warm)
        lo, hi = max_lr, final
    return hi + (lo - hi) * (1 + math.cos(math.pi * frac)) / 2
