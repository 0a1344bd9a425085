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
    (lambda w: optim.Adam([w], lr=1e-3), lambda o: o.state[0]["exp_avg"]),
    (lambda w: optim.SGD([w], lr=1e-2, momentum=0.9), lambda o: o.state[0]["momentum_buffer"]),
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


# ----------------------------------------------------------------------------- more optimizers

def _run(make, init, grads, dtype, lib):
    """Parameters of `dtype` after one step per gradient set, with our optim (lib=None) or
    torch's (lib=torch); the same gradients either way."""
    if lib is None:
        params = [Tensor(a.astype(dtype), requires_grad=True) for a in init]
    else:
        params = [lib.tensor(a.astype(dtype), requires_grad=True) for a in init]
    opt = make(params)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.astype(dtype) if lib is None else lib.tensor(g.astype(dtype))
        opt.step()
    return [p.data.copy() if lib is None else p.detach().numpy() for p in params]


ORACLE_CASES = [  # (our class, torch class name, keyword arguments)
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, weight_decay=0.1)),
    ("SGD", dict(lr=0.03, momentum=0.9)),
    ("SGD", dict(lr=0.03, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.03, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.03, momentum=0.8, nesterov=True, weight_decay=0.05)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=3e-2, betas=(0.85, 0.995), weight_decay=0.2)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, eps=1e-6)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, kwargs", ORACLE_CASES,
                         ids=[f"{n}-{'-'.join(k for k in kw if k != 'lr') or 'plain'}"
                              for n, kw in ORACLE_CASES])
def test_every_optimizer_matches_torch_over_several_steps(torch, name, kwargs, dtype):
    init, grads = setup(4, steps=10)
    ours = _run(lambda ps: getattr(optim, name)(ps, **kwargs), init, grads, dtype, None)
    theirs = _run(lambda ps: getattr(torch.optim, name)(ps, **kwargs), init, grads, dtype,
                  torch)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=3e-6, atol=1e-7)
    for a, b, start in zip(ours, theirs, init):
        assert a.dtype == dtype
        assert np.abs(a - start.astype(dtype)).max() > 1e-3  # the steps moved it
        np.testing.assert_allclose(a, b, **tol)


def test_adam_is_the_textbook_formula_written_out():
    """m, v, m_hat, v_hat as Kingma & Ba write them, in float64, for a few steps."""
    init, grads = setup(5, steps=7)
    b1, b2, eps, lr = 0.9, 0.99, 1e-7, 0.01
    ours, _ = run_ours(lambda ps: optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps), init, grads)
    for i, a in enumerate(init):
        p, m, v = a.copy(), 0.0, 0.0
        for t, gs in enumerate(grads, start=1):
            m = b1 * m + (1 - b1) * gs[i]
            v = b2 * v + (1 - b2) * gs[i] ** 2
            p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(ours[i], p, rtol=1e-13, atol=1e-15)


def test_adamw_decay_is_decoupled_from_the_gradient():
    """With a zero gradient Adam's update is 0, so AdamW only shrinks p by (1 - lr wd)."""
    p = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = np.zeros(2)
    opt.step()
    np.testing.assert_array_equal(p.data, np.array([1.0, -2.0]) * (1 - 0.1 * 0.5))
    q = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    adam = optim.Adam([q], lr=0.1, weight_decay=0.5)  # L2: wd p enters the moments
    q.grad = np.zeros(2)
    adam.step()
    np.testing.assert_allclose(q.data, [1.0 - 0.1, -2.0 + 0.1], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_clip_grad_norm_matches_torch(torch, dtype, max_norm):
    rng = np.random.RandomState(6)
    grads = [rng.normal(size=s).astype(dtype) for s in [(5, 4), (4,), (3, 2)]]
    ours = [Tensor(np.zeros(g.shape, dtype), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=getattr(torch, np.dtype(dtype).name),
                          requires_grad=True) for g in grads]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = g.copy(), torch.tensor(g)
    extra = Tensor(np.zeros(2, dtype), requires_grad=True)  # no gradient: skipped
    total = optim.clip_grad_norm(ours + [extra], max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert total == pytest.approx(float(expected), rel=tol)
    assert total == pytest.approx(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads)),
                                  rel=tol)
    for p, q in zip(ours, theirs):
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=tol, atol=tol)
    clipped = np.sqrt(sum(np.sum(p.grad.astype(np.float64) ** 2) for p in ours))
    assert clipped == pytest.approx(min(total, max_norm), rel=1e-5)
    assert extra.grad is None


ROUND_TRIP = [
    lambda ps: optim.SGD(ps, lr=0.05),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
    lambda ps: optim.AdamW(ps, lr=0.01),
    lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("make", ROUND_TRIP, ids=["sgd", "nesterov", "adam", "adamw", "rmsprop"])
def test_state_dict_round_trip_mid_training_continues_bit_identically(make, dtype):
    init, grads = setup(7, steps=9)
    init = [a.astype(dtype) for a in init]
    straight = [Tensor(a.copy(), requires_grad=True) for a in init]
    opt = make(straight)
    for gs in grads:
        for p, g in zip(straight, gs):
            p.grad = g.astype(dtype)
        opt.step()

    first = [Tensor(a.copy(), requires_grad=True) for a in init]
    opt1 = make(first)
    for gs in grads[:4]:
        for p, g in zip(first, gs):
            p.grad = g.astype(dtype)
        opt1.step()
    saved = opt1.state_dict()
    for gs in grads[4:6]:  # the old optimizer goes on: the saved state must not move with it
        for p, g in zip(first, gs):
            p.grad = g.astype(dtype)
        opt1.step()
    second = [Tensor(p.data.copy(), requires_grad=True) for p in first]
    opt2 = make(second)
    opt2.lr = 123.0  # overwritten by the load, as PyTorch's param_groups are
    opt2.load_state_dict(opt1.state_dict())
    assert opt2.steps == 6 and opt2.lr == opt1.lr
    for gs in grads[6:]:
        for p, g in zip(second, gs):
            p.grad = g.astype(dtype)
        opt2.step()
    for a, b in zip(straight, second):
        assert np.array_equal(a.data, b.data)
    assert saved["steps"] == 4
    for s in saved["state"]:
        for v in s.values():
            assert isinstance(v, np.ndarray)


def _stepped(make, shapes=((3, 2), (2,)), dtype=np.float64):
    params = [Tensor(np.ones(s, dtype), requires_grad=True) for s in shapes]
    opt = make(params)
    for p in params:
        p.grad = np.full(p.shape, 0.5, dtype)
    opt.step()
    return params, opt


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(optimizer="SGD"), "it is the state of SGD, not Adam"),
    (lambda s: s["state"].pop(), "state for 1 parameters, the optimizer has 2"),
    (lambda s: s["state"][0].update(exp_avg=np.zeros((2, 3))),
     "parameter 0: exp_avg is float64 (2, 3)"),
    (lambda s: s["state"][1].update(exp_avg_sq=np.zeros(2, np.float32)),
     "parameter 1: exp_avg_sq is float32 (2,)"),
    (lambda s: s["state"][1].update(velocity=np.zeros(2)), "unknown state 'velocity'"),
    (lambda s: s.pop("steps"), "not an optimizer state_dict"),
])
def test_load_state_dict_refuses_what_does_not_fit_and_changes_nothing(change, message):
    params, opt = _stepped(lambda ps: optim.Adam(ps, lr=0.01))
    state = opt.state_dict()
    change(state)
    before = opt.state_dict()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        opt.load_state_dict(state, source="ckpt.npz")
    after = opt.state_dict()
    assert after["steps"] == before["steps"]
    assert after["hyperparameters"] == before["hyperparameters"]
    for s, t in zip(before["state"], after["state"]):
        assert s.keys() == t.keys() and all(np.array_equal(s[k], t[k]) for k in s)
