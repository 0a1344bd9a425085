"""Optimizers: several steps against the written formulas and against torch.optim."""

import numpy as np
import pytest

from tinygrad_mlp import Tensor, optim

SHAPES = [(4, 3), (3,)]


def setup(seed=0, steps=6):
    """Parameters and a fixed sequence of gradients for them (the same for every optimizer)."""
    rng = np.random.RandomState(seed)
    init = [rng.normal(size=s) for s in SHAPES]
    grads = [[rng.normal(size=s) for s in SHAPES] for _ in range(steps)]
    return init, grads


def run_ours(make, init, grads, lrs=None):
    params = [Tensor(a.copy(), requires_grad=True) for a in init]
    opt = make(params)
    for k, gs in enumerate(grads):
        if lrs is not None:
            opt.lr = lrs[k]
        for p, g in zip(params, gs):
            p.grad = g.copy()
        opt.step()
    return [p.data for p in params], opt


def run_torch(torch, make, init, grads, lrs=None):
    params = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in init]
    opt = make(params)
    for k, gs in enumerate(grads):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[k]
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is not installed: the comparison "
                               "with torch.optim cannot run")


def test_plain_sgd_is_p_minus_lr_g():
    init, grads = setup()
    ours, opt = run_ours(lambda ps: optim.SGD(ps, lr=0.1), init, grads)
    expected = [a - 0.1 * sum(g[i] for g in grads) for i, a in enumerate(init)]
    for a, b in zip(ours, expected):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    assert opt.steps == len(grads)


def test_sgd_momentum_by_the_formula():
    init, grads = setup()
    ours, _ = run_ours(lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9), init, grads)
    for i, a in enumerate(init):
        p, v = a.copy(), np.zeros_like(a)
        for gs in grads:
            v = 0.9 * v + gs[i]
            p = p - 0.05 * v
        np.testing.assert_allclose(ours[i], p, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_sgd_matches_torch(torch, momentum):
    init, grads = setup(1)
    ours, _ = run_ours(lambda ps: optim.SGD(ps, lr=0.03, momentum=momentum), init, grads)
    theirs = run_torch(torch, lambda ps: torch.optim.SGD(ps, lr=0.03, momentum=momentum),
                       init, grads)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs", [
    dict(lr=1e-2),
    dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.1, betas=(0.0, 0.9), eps=1e-8),
])
def test_adam_matches_torch(torch, kwargs):
    init, grads = setup(2, steps=8)
    ours, _ = run_ours(lambda ps: optim.Adam(ps, **kwargs), init, grads)
    theirs = run_torch(torch, lambda ps: torch.optim.Adam(ps, **kwargs), init, grads)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_changing_lr_between_steps_matches_torch(torch):
    init, grads = setup(3, steps=5)
    lrs = [0.01, 0.02, 0.05, 0.02, 0.001]
    for ours_make, torch_make in [
        (lambda ps: optim.Adam(ps, lr=1.0), lambda ps: torch.optim.Adam(ps, lr=1.0)),
        (lambda ps: optim.SGD(ps, lr=1.0, momentum=0.9),
         lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=0.9)),
    ]:
        ours, _ = run_ours(ours_make, init, grads, lrs)
        theirs = run_torch(torch, torch_make, init, grads, lrs)
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_parameters_without_gradient_are_left_alone_and_zero_grad_clears():
    a = Tensor(np.ones(3), requires_grad=True)
    b = Tensor(np.ones(2), requires_grad=True)
    opt = optim.Adam([a, b, a], lr=0.1)  # a repeated parameter is updated once
    assert len(opt.params) == 2
    a.grad = np.array([1.0, -1.0, 0.0])
    opt.step()
    np.testing.assert_allclose(a.data, [0.9, 1.1, 1.0], rtol=1e-7)
    np.testing.assert_array_equal(b.data, np.ones(2))
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_one_cycle_warms_up_peaks_and_anneals():
    total, peak = 100, 0.01
    lrs = [optim.one_cycle(s, total, peak) for s in range(total)]
    top = int(np.argmax(lrs))
    assert lrs[top] == pytest.approx(peak)
    assert lrs[0] == pytest.approx(peak / 25)
    assert lrs[-1] == pytest.approx(peak / 25 / 1e4)
    assert all(x <= y for x, y in zip(lrs[:top], lrs[1:top + 1]))
    assert all(x >= y for x, y in zip(lrs[top:], lrs[top + 1:]))


@pytest.mark.parametrize("total", [8, 37, 100, 857])
def test_one_cycle_matches_torch_one_cycle_lr(torch, total):
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=total,
                                                pct_start=0.25, cycle_momentum=False)
    theirs = []
    for _ in range(total):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [optim.one_cycle(s, total, 0.01, pct_start=0.25) for s in range(total)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


# ----------------------------------------------------------------------------- subnormal state

FLUSH_EVERY = optim.FLUSH_EVERY


def _dead_unit_run(make_opt, flush_every, monkeypatch, steps=1200, dtype=np.float32):
    """A (6, 4) weight whose last column gets an exactly-zero gradient after step 5 (a dead
    unit): returns the weight and the optimizer's state arrays after `steps` steps."""
    monkeypatch.setattr(optim, "FLUSH_EVERY", flush_every)
    rng = np.random.RandomState(3)
    w = Tensor(rng.normal(0, 0.1, (6, 4)).astype(dtype), requires_grad=True)
    opt = make_opt(w)
    for t in range(steps):
        g = rng.normal(0, 1e-2, (6, 4)).astype(dtype)
        if t >= 5:
            g[:, 3] = 0.0
        w.grad = g
        opt.step()
    return w.data.copy(), opt


@pytest.mark.parametrize("make_opt, state", [
    (lambda w: optim.Adam([w], lr=1e-3), lambda o: o._m[0]),
    (lambda w: optim.SGD([w], lr=1e-2, momentum=0.9), lambda o: o._velocity[0]),
])
def test_dead_units_state_is_flushed_to_zero_not_stuck_subnormal(make_opt, state, monkeypatch):
    tiny = np.finfo(np.float32).tiny
    w_kept, opt_kept = _dead_unit_run(make_opt, 10**9, monkeypatch)  # never flushed
    stuck = state(opt_kept)[:, 3]
    assert np.all((stuck != 0) & (np.abs(stuck) < tiny))  # 0.9 x a few subnormal steps rounds back
    w, opt = _dead_unit_run(make_opt, FLUSH_EVERY, monkeypatch)
    assert np.all(state(opt)[:, 3] == 0.0)
    assert np.all(np.abs(state(opt)[:, :3]) >= tiny)  # live units untouched
    assert np.array_equal(w, w_kept)  # the flushed values moved no weight
