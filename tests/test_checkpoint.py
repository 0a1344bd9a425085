"""fit's checkpoints: exact resume after SIGKILL and Ctrl-C (in subprocesses), refusal of
corrupt and mismatched files (left as they were on disk), every optimizer's state, generators
restored in place, whole steps under Ctrl-C."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tinygrad_mlp import Tensor, nn, optim, train
from tinygrad_mlp.train import CheckpointError

# ----------------------------------------------------------------------------- the run

# A run with Adam, a one-cycle schedule, BatchNorm1d and Dropout: 240 rows, batches of 20
# (12 steps an epoch), 6 epochs. Run as a child process: `child.py OUT CKPT PLAN`; PLAN is
# "" (no stop) or "<signal>:<where>:<n>": at global step n ("step") or after epoch n
# ("epoch") the child writes OUT.ready and waits until the parent has signalled it (and
# written OUT.sent).
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    from tinygrad_mlp import nn, optim, train

    # Ctrl-C as in a terminal, even if pytest was started with SIGINT ignored (a background
    # job of a script), which its children inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)

    out, ckpt, plan = sys.argv[1], sys.argv[2], sys.argv[3]
    where, at = (plan.split(":")[1], int(plan.split(":")[2])) if plan else (None, None)
    EPOCHS, STEPS = 6, 12

    def wait_for_signal():
        open(out + ".ready", "w").close()
        for _ in range(400):  # until the parent has sent its signal (SIGINT inside a step
            if os.path.exists(out + ".sent"):  # waits for the step's end: go on)
                os.remove(out + ".sent")
                return
            time.sleep(0.025)
        sys.exit("no signal came")

    def schedule(step):
        if where == "step" and step == at:
            wait_for_signal()
        return optim.one_cycle(step, EPOCHS * STEPS, 0.02)

    def on_epoch_end(epoch, history):
        if where == "epoch" and epoch == at:
            wait_for_signal()

    data = np.random.RandomState(0)
    X = data.normal(size=(300, 6))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1)
    rng = np.random.RandomState(1)
    model = nn.Sequential(nn.Dense(6, 16, rng=rng, dtype=np.float64, init_std=0.5),
                          nn.BatchNorm1d(16, dtype=np.float64), nn.ReLU(),
                          nn.Dropout(0.3, seed=7),
                          nn.Dense(16, 3, rng=rng, dtype=np.float64, init_std=0.5))
    opt = optim.Adam(model.parameters(), lr=0.02)
    try:
        history = train.fit(model, nn.CrossEntropy(), opt, X[:240], y[:240], epochs=EPOCHS,
                            batch_size=20, rng=rng, X_valid=X[240:], y_valid=y[240:],
                            schedule=schedule, progress=False, on_epoch_end=on_epoch_end,
                            checkpoint=ckpt or None,
                            resume=ckpt if ckpt and os.path.exists(ckpt) else None)
    except KeyboardInterrupt:
        sys.exit(130)
    model.save(out + ".npz")
    history.save(out + ".json")
""")


def _start(tmp_path, out, ckpt, plan=""):
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(child), str(out), str(ckpt), plan], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_child(tmp_path, out, ckpt, plan=""):
    """Run the child; with a plan, signal it when it is ready. Returns its exit code."""
    proc = _start(tmp_path, out, ckpt, plan)
    if plan:
        ready = f"{out}.ready"
        deadline = time.monotonic() + 120
        while not os.path.exists(ready):
            assert proc.poll() is None, f"child ended early: {proc.communicate()}"
            assert time.monotonic() < deadline, "child never got ready"
            time.sleep(0.02)
        os.remove(ready)
        proc.send_signal(getattr(signal, plan.split(":")[0]))
        open(f"{out}.sent", "w").close()
    stdout, stderr = proc.communicate(timeout=120)
    if os.path.exists(f"{out}.sent"):  # a killed child never read it
        os.remove(f"{out}.sent")
    return proc.returncode, stderr


def _final(out):
    with np.load(f"{out}.npz") as f:
        weights = {k: f[k] for k in f.files}
    history = train.History.load(f"{out}.json").as_dict()
    history.pop("time")
    return weights, history


def test_killed_and_interrupted_runs_resume_bit_identically(tmp_path):
    code, err = _run_child(tmp_path, tmp_path / "straight", "")
    assert code == 0, err
    expected_weights, expected_history = _final(tmp_path / "straight")
    assert len(expected_history["cost"]) == 6

    ckpt = tmp_path / "run.ckpt.npz"
    out = tmp_path / "stopped"
    plans = [  # each stop lies beyond the checkpoint the previous one left
        ("SIGKILL:step:17", -signal.SIGKILL),  # mid-epoch 2: resumes from epoch 1's
        ("SIGKILL:epoch:3", -signal.SIGKILL),  # between epochs
        ("SIGINT:step:44", 130),               # mid-epoch 4: a mid-epoch checkpoint
        ("SIGINT:step:45", 130),               # the very next step after resuming
        ("SIGINT:epoch:5", 130),               # in on_epoch_end, after epoch 5
    ]
    for plan, expected_code in plans:
        code, err = _run_child(tmp_path, out, ckpt, plan)
        assert code == expected_code, (plan, err)
        assert not (tmp_path / "stopped.npz").exists()
        assert ckpt.exists(), plan
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []
    code, err = _run_child(tmp_path, out, ckpt, "")
    assert code == 0, err
    weights, history = _final(out)
    assert history == expected_history
    assert weights.keys() == expected_weights.keys()
    for k in weights:
        assert np.array_equal(weights[k], expected_weights[k]), k


# ----------------------------------------------------------------------------- in process


def _data(n=160, seed=0):
    r = np.random.RandomState(seed)
    X = r.normal(size=(n, 4))
    return X, (X[:, 0] - X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.8)


def _model(hidden=8, dtype=np.float64, dropout=True, extra=False):
    rng = np.random.RandomState(3)
    layers = [nn.Dense(4, hidden, rng=rng, dtype=dtype, init_std=0.5), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(0.2, seed=11))
    layers.append(nn.Dense(hidden, 3, rng=rng, dtype=dtype, init_std=0.5))
    if extra:
        layers += [nn.Tanh(), nn.Dense(3, 3, rng=rng, dtype=dtype)]
    return nn.Sequential(*layers)


def _fit(model, opt, epochs, **kwargs):
    X, y = _data()
    kwargs.setdefault("seed", 5)
    return train.fit(model, nn.CrossEntropy(), opt, X[:120], y[:120], epochs=epochs,
                     batch_size=16, X_valid=X[120:], y_valid=y[120:], progress=False,
                     **kwargs)


def _same_run(m1, h1, m2, h2):
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert np.array_equal(a, b), k
    d1, d2 = h1.as_dict(), h2.as_dict()
    d1.pop("time"), d2.pop("time")
    assert d1 == d2


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.05),
    "sgd-nesterov": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                         weight_decay=1e-3),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=0.005, momentum=0.5),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_checkpoint_of_each_optimizer_round_trips(tmp_path, name):
    make = OPTIMIZERS[name]
    straight = _model()
    h_straight = _fit(straight, make(straight.parameters()), 4)
    ckpt = tmp_path / "c.npz"
    first = _model()
    _fit(first, make(first.parameters()), 2, checkpoint=ckpt)
    again = _model()  # a new process would build everything anew
    opt = make(again.parameters())
    h_again = _fit(again, opt, 4, checkpoint=ckpt, resume=ckpt)
    _same_run(straight, h_straight, again, h_again)
    assert opt.steps == 4 * (120 // 16)


def test_ctrl_c_inside_the_optimizer_step_finishes_the_step_and_writes_a_mid_epoch_checkpoint(
        tmp_path):
    class Interrupting(optim.Adam):
        """Sends itself SIGINT after updating the first parameter of step 10."""

        def update(self, p, g, state, scratch):
            super().update(p, g, state, scratch)
            if self.steps == 10 and p is self.params[0]:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)  # the handler runs here, between the parameters

    ckpt = tmp_path / "c.npz"
    model = _model()
    opt = Interrupting(model.parameters(), lr=0.01)
    # Ctrl-C as in a terminal, even if pytest was started with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _fit(model, opt, 3, checkpoint=ckpt)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert opt.steps == 11  # step 10 (0-based) ran to its end: every parameter updated
    reference = _model()
    ref_opt = optim.Adam(reference.parameters(), lr=0.01)
    X, y = _data()  # the same 11 steps by hand: batches of epoch 1, then 4 of epoch 2
    rng = np.random.RandomState(5)
    loss_fn = nn.CrossEntropy()
    done = 0
    for _ in range(2):
        for idx in train.minibatches(120, 16, rng):
            if done == 11:
                break
            ref_opt.zero_grad()
            loss_fn(reference(X[idx]), y[idx]).backward()
            ref_opt.step()
            done += 1
    for a, b in zip(model.parameters(), reference.parameters()):
        assert np.array_equal(a.data, b.data)
    meta, arrays = train._checkpoint.read(ckpt)
    assert meta["position"] == {"epochs_done": 1, "in_epoch": True, "next_batch": 4,
                                "stopped": False}
    assert meta["step"] == 11 and arrays["order"].shape == (120,)
    # ... and it resumes to the uninterrupted run
    straight = _model()
    h_straight = _fit(straight, optim.Adam(straight.parameters(), lr=0.01), 3)
    again = _model()  # (Interrupting goes on from step 11: it interrupts no more)
    h_again = _fit(again, Interrupting(again.parameters(), lr=0.01), 3, resume=ckpt)
    _same_run(straight, h_straight, again, h_again)


class Noisy(nn.Module):
    """Adds Gaussian noise from a np.random.Generator in training mode (not an op: jit
    cannot replay it, so the runs below build every graph, replay=False)."""

    def __init__(self):
        self.gen = np.random.default_rng(9)

    def forward(self, x):
        if not self.training:
            return x
        return x + Tensor(self.gen.normal(0.0, 0.1, x.shape))


def test_generators_are_found_in_modules_and_restored_in_place(tmp_path):
    def build():
        m = _model()
        m.layers.insert(2, Noisy())
        return m

    straight = build()
    h_straight = _fit(straight, optim.SGD(straight.parameters(), lr=0.05, momentum=0.9), 3,
                      replay=False)
    ckpt = tmp_path / "c.npz"
    first = build()
    _fit(first, optim.SGD(first.parameters(), lr=0.05, momentum=0.9), 2, checkpoint=ckpt,
         replay=False)
    again = build()
    gen, dropout_rng = again[2].gen, again[3].rng
    shuffle = np.random.RandomState(5)
    h_again = _fit(again, optim.SGD(again.parameters(), lr=0.05, momentum=0.9), 3,
                   checkpoint=ckpt, resume=ckpt, rng=shuffle, seed=None, replay=False)
    assert again[2].gen is gen and again[3].rng is dropout_rng  # the same objects
    _same_run(straight, h_straight, again, h_again)
    meta, _ = train._checkpoint.read(ckpt)
    assert sorted(meta["generators"]["states"]) == ["2.gen", "3.rng", "shuffle"]


def test_resume_after_the_last_epoch_trains_nothing_and_more_epochs_go_on(tmp_path):
    ckpt = tmp_path / "c.npz"
    straight = _model()
    h_straight = _fit(straight, optim.Adam(straight.parameters(), lr=0.01), 5)
    model = _model()
    _fit(model, optim.Adam(model.parameters(), lr=0.01), 3, checkpoint=ckpt)
    again = _model()
    opt = optim.Adam(again.parameters(), lr=0.01)
    h = _fit(again, opt, 3, resume=ckpt)
    assert len(h) == 3 and opt.steps == 3 * 7
    more = _fit(again, opt, 5, resume=ckpt)  # epochs counts the whole run
    _same_run(straight, h_straight, again, more)


# ----------------------------------------------------------------------------- refusals


def _saved(tmp_path, **kwargs):
    ckpt = tmp_path / "c.npz"
    model = _model(**kwargs)
    _fit(model, optim.Adam(model.parameters(), lr=0.01), 2, checkpoint=ckpt)
    return ckpt


def _refused(ckpt, message, model=None, make_opt=None, **fit_kwargs):
    """Resuming from ckpt raises CheckpointError naming it and `message`; the file's bytes,
    the model and the optimizer stay as they were."""
    before = ckpt.read_bytes()
    model = model if model is not None else _model()
    opt = (make_opt or (lambda ps: optim.Adam(ps, lr=0.01)))(model.parameters())
    weights, opt_state = model.state_dict(), opt.state_dict()
    with pytest.raises(CheckpointError) as info:
        _fit(model, opt, 4, checkpoint=ckpt, resume=ckpt, **fit_kwargs)
    text = str(info.value)
    assert str(ckpt) in text and message in text, text
    assert ckpt.read_bytes() == before
    for (k, a), b in zip(weights.items(), model.state_dict().values()):
        assert np.array_equal(a, b), k
    assert opt.state_dict()["steps"] == opt_state["steps"] == 0
    return text


def test_corrupt_and_truncated_checkpoints_are_refused_and_left_on_disk(tmp_path):
    ckpt = _saved(tmp_path)
    good = ckpt.read_bytes()
    model = _model()
    _fit(model, optim.Adam(model.parameters(), lr=0.01), 2)
    weight = model[0].weight.data.tobytes()
    at = good.find(weight)
    assert at > 0
    flipped = bytearray(good)
    flipped[at + 100] ^= 0x40  # inside the stored weights: the zip's CRC catches it
    for broken, message in [(good[:len(good) // 2], "not a readable checkpoint"),
                            (good[:-1], "not a readable checkpoint"),
                            (bytes(flipped), "not a readable checkpoint"),
                            (b"", "not a readable checkpoint"),
                            (b"hello, not a zip file\n", "not a readable checkpoint")]:
        ckpt.write_bytes(broken)
        _refused(ckpt, message)
    other = tmp_path / "weights.npz"
    model.save(other)  # an npz, but Module.save's, not fit's
    _refused(other, "not a checkpoint of fit")


@pytest.mark.parametrize("case, message", [
    ("hidden", "0.weight is float64 (4, 8) in the checkpoint, float64 (4, 9) in the model"),
    ("dtype", "0.weight is float64 (4, 8) in the checkpoint, float32 (4, 8) in the model"),
    ("layers", "the model has ['5.weight', '5.bias'], the checkpoint does not"),
    ("optimizer", "the checkpoint holds the state of Adam, the optimizer is RMSprop"),
    ("betas", "hyperparameters is {'lr': 0.01, 'betas': [0.9, 0.999], 'eps': 1e-08, "
              "'weight_decay': 0.0} in the checkpoint"),
    ("batch_size", "batch_size is 16 in the checkpoint, 8 now"),
    ("l2", "l2 is 0.0 in the checkpoint, 0.01 now"),
    ("data", "data is"),
    ("dropout", "random generators"),
    ("schedule", "schedule is False in the checkpoint, True now"),
])
def test_mismatched_checkpoints_are_refused_naming_what_differs(tmp_path, case, message):
    ckpt = _saved(tmp_path)
    model = {"hidden": lambda: _model(hidden=9), "dtype": lambda: _model(dtype=np.float32),
             "layers": lambda: _model(extra=True),
             "dropout": lambda: _model(dropout=False)}.get(case, _model)()
    make_opt = {"optimizer": lambda ps: optim.RMSprop(ps, lr=0.01),
                "betas": lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.999))}.get(case)
    fit_kwargs = {"batch_size": {"batch_size": 8}, "l2": {"l2": 0.01},
                  "schedule": {"schedule": lambda s: 0.01}}.get(case, {})
    if case == "data":
        X, y = _data(seed=1)
        before = ckpt.read_bytes()
        opt = optim.Adam(model.parameters(), lr=0.01)
        with pytest.raises(CheckpointError, match="data is"):
            train.fit(model, nn.CrossEntropy(), opt, X[:120], y[:120], epochs=3, batch_size=16,
                      seed=5, X_valid=X[120:], y_valid=y[120:], progress=False,
                      checkpoint=ckpt, resume=ckpt)
        assert ckpt.read_bytes() == before
        return
    if case == "batch_size":
        X, y = _data()
        before = ckpt.read_bytes()
        with pytest.raises(CheckpointError, match=message):
            train.fit(model, nn.CrossEntropy(), optim.Adam(model.parameters(), lr=0.01),
                      X[:120], y[:120], epochs=3, batch_size=8, seed=5, X_valid=X[120:],
                      y_valid=y[120:], progress=False, checkpoint=ckpt, resume=ckpt)
        assert ckpt.read_bytes() == before
        return
    _refused(ckpt, message, model, make_opt, **fit_kwargs)


# ----------------------------------------------------------------------------- early stopping


def test_early_stopping_restores_the_best_epochs_weights_exactly(tmp_path):
    snapshots = {}

    def keep(epoch, history):
        snapshots[epoch] = model.state_dict()

    model = _model()
    X, y = _data()
    h = train.fit(model, nn.CrossEntropy(), optim.Adam(model.parameters(), lr=0.2), X[:120],
                  y[:120], epochs=60, batch_size=16, seed=5, X_valid=X[120:128],
                  y_valid=y[120:128], progress=False, early_stopping=3, on_epoch_end=keep)
    best = h.best_epoch
    assert len(h) < 60, "the run should have stopped early"
    assert best == 1 + int(np.argmax(h.valid_acc))  # the first epoch of the highest accuracy
    assert len(h) == best + 3  # three epochs without a higher accuracy, then stop
    assert all(a <= h.valid_acc[best - 1] for a in h.valid_acc)
    final = model.state_dict()
    assert any(not np.array_equal(a, b) for a, b in zip(final.values(),
                                                        snapshots[len(h)].values()))
    for k, a in snapshots[best].items():
        assert np.array_equal(final[k], a), k

    # restore_best=False keeps the last epoch's weights; a checkpoint of the stopped run
    # resumes to the same end without training more
    model = _model()
    ckpt = tmp_path / "c.npz"
    h2 = train.fit(model, nn.CrossEntropy(), optim.Adam(model.parameters(), lr=0.2), X[:120],
                   y[:120], epochs=60, batch_size=16, seed=5, X_valid=X[120:128],
                   y_valid=y[120:128], progress=False, early_stopping=3, restore_best=False,
                   checkpoint=ckpt)
    assert h2.valid_acc == h.valid_acc and h2.best_epoch == best
    for k, a in snapshots[len(h)].items():
        assert np.array_equal(model.state_dict()[k], a), k
    again = _model()
    opt = optim.Adam(again.parameters(), lr=0.2)
    h3 = train.fit(again, nn.CrossEntropy(), opt, X[:120], y[:120], epochs=60, batch_size=16,
                   seed=5, X_valid=X[120:128], y_valid=y[120:128], progress=False,
                   early_stopping=3, restore_best=False, resume=ckpt)
    assert len(h3) == len(h2) and opt.steps == len(h2) * 7


def test_early_stopping_needs_validation_data_and_a_positive_count():
    model = _model()
    X, y = _data()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="early_stopping must be a positive integer"):
            train.fit(model, nn.CrossEntropy(), optim.SGD(model.parameters(), lr=0.1), X, y,
                      epochs=2, batch_size=16, X_valid=X, y_valid=y, early_stopping=bad,
                      progress=False)
    with pytest.raises(ValueError, match="early_stopping needs validation data"):
        train.fit(model, nn.CrossEntropy(), optim.SGD(model.parameters(), lr=0.1), X, y,
                  epochs=2, batch_size=16, early_stopping=2, progress=False)


# ----------------------------------------------------------------------------- modes


class Spy(nn.Module):
    """The identity; notes the training flag of every call (and whether grad was on)."""

    def __init__(self):
        self.calls = []

    def forward(self, x):
        from tinygrad_mlp import is_grad_enabled
        self.calls.append((self.training, is_grad_enabled()))
        return x if isinstance(x, Tensor) else Tensor(x)


def test_fit_steps_in_training_mode_evaluates_in_eval_mode_and_restores_the_modes():
    spy = Spy()
    model = nn.Sequential(nn.Dense(4, 3, seed=0, dtype=np.float64), spy)
    model.eval()
    X, y = _data()
    train.fit(model, nn.CrossEntropy(), optim.SGD(model.parameters(), lr=0.1), X[:120],
              y[:120], epochs=2, batch_size=40, X_valid=X[120:], y_valid=y[120:],
              progress=False, replay=False)
    steps = [c for c in spy.calls if c[1]]
    passes = [c for c in spy.calls if not c[1]]
    assert len(steps) == 2 * 3 and all(training for training, _ in steps)
    assert passes and not any(training for training, _ in passes)
    assert not model.training and not spy.training  # as before fit
    spy.calls.clear()
    train.predict(model.train(), X)
    assert spy.calls == [(False, False)] and spy.training


# ----------------------------------------------------------------------------- diagnostics


def _diag_model():
    rng = np.random.RandomState(2)
    return nn.Sequential(nn.Dense(4, 6, rng=rng, dtype=np.float64, init_std=1.5), nn.ReLU(),
                         nn.Dense(6, 5, rng=rng, dtype=np.float64, init_std=1.5), nn.Sigmoid(),
                         nn.Dense(5, 3, rng=rng, dtype=np.float64, init_std=1.5), nn.Tanh())


def test_diagnostics_equal_a_direct_computation():
    X, y = _data(96)
    model = _diag_model()
    h = train.fit(model, nn.MSE(), optim.SGD(model.parameters(), lr=0.3), X, np.eye(3)[y],
                  epochs=3, batch_size=32, shuffle=False, progress=False, diagnostics=True,
                  l2=0.01)
    # the same three epochs by hand: SGD steps on batches 0-31, 32-63, 64-95
    ref = _diag_model()
    names = [n for n, _ in ref.named_parameters()]
    expect = {n: {"grad_norm": [], "weight_norm": [], "update_ratio": []} for n in names}
    acts = {"1": [], "3": [], "5": []}
    for _ in range(3):
        g_norms, ratios = {n: [] for n in names}, {n: [] for n in names}
        for start in range(0, 96, 32):
            ref.zero_grad()
            xb, yb = X[start:start + 32], np.eye(3)[y[start:start + 32]]
            nn.MSE()(ref(Tensor(xb)), yb).backward()
            for n, p in ref.named_parameters():
                g = p.grad + (0.01 * p.data if n.endswith("weight") else 0)
                g_norms[n].append(np.linalg.norm(g))
                new = p.data - 0.3 * g
                if np.linalg.norm(p.data) > 0:
                    ratios[n].append(np.linalg.norm(new - p.data) / np.linalg.norm(p.data))
                p.data = new
        for n, p in ref.named_parameters():
            expect[n]["grad_norm"].append(np.mean(g_norms[n]))
            expect[n]["weight_norm"].append(np.linalg.norm(p.data))
            expect[n]["update_ratio"].append(np.mean(ratios[n]) if ratios[n] else np.nan)
        h1 = np.maximum(X @ ref[0].weight.data + ref[0].bias.data, 0)
        s3 = 1 / (1 + np.exp(-(h1 @ ref[2].weight.data + ref[2].bias.data)))
        t5 = np.tanh(s3 @ ref[4].weight.data + ref[4].bias.data)
        acts["1"].append(float(np.mean(~(h1 > 0).any(axis=0))))
        acts["3"].append(float(np.mean((s3 <= 0.01) | (s3 >= 0.99))))
        acts["5"].append(float(np.mean((t5 <= -0.99) | (t5 >= 0.99))))
    assert sorted(h.diagnostics) == sorted(names + list(acts))
    for n in names:
        for key, values in expect[n].items():
            np.testing.assert_allclose(h.diagnostics[n][key], values, rtol=1e-10, err_msg=n)
    for n, values in acts.items():
        key = "dead" if n == "1" else "saturated"
        assert list(h.diagnostics[n]) == [key]
        np.testing.assert_allclose(h.diagnostics[n][key], values, rtol=1e-12, err_msg=n)
    assert np.isfinite(h.diagnostics["0.bias"]["update_ratio"][0])  # steps 2, 3 (0 at step 1)
    assert any(v > 0 for v in acts["1"] + acts["3"]), "the check should see dead/saturated units"


def test_diagnostics_change_no_training_number():
    runs = []
    for diagnostics in (False, True):
        model = _model()
        h = _fit(model, optim.Adam(model.parameters(), lr=0.02), 3, diagnostics=diagnostics,
                 schedule=lambda s: optim.one_cycle(s, 21, 0.05))
        runs.append((model, h))
    (m1, h1), (m2, h2) = runs
    assert h1.diagnostics == {} and set(h2.diagnostics) == {"0.weight", "0.bias", "3.weight",
                                                             "3.bias", "1"}
    h2.diagnostics = {}
    _same_run(m1, h1, m2, h2)


def _bn_model():
    rng = np.random.RandomState(3)
    return nn.Sequential(nn.Dense(4, 8, rng=rng, dtype=np.float64, init_std=0.5),
                         nn.BatchNorm1d(8, dtype=np.float64), nn.Tanh(),
                         nn.Dropout(0.2, seed=11),
                         nn.Dense(8, 3, rng=rng, dtype=np.float64, init_std=0.5))


def test_buffers_are_checkpointed_and_restored_with_the_best_epoch(tmp_path):
    snapshots = {}
    kwargs = dict(early_stopping=2, on_epoch_end=lambda e, h: snapshots.update(
        {e: model.state_dict()}))
    model = _bn_model()
    h = _fit(model, optim.Adam(model.parameters(), lr=0.05), 30, **kwargs)
    assert "1.running_mean" in snapshots[1] and len(h) < 30
    for k, a in snapshots[h.best_epoch].items():
        assert np.array_equal(model.state_dict()[k], a), k
    assert not np.array_equal(snapshots[h.best_epoch]["1.running_var"],
                              snapshots[len(h)]["1.running_var"])
    # interrupted after 3 epochs and resumed: the same best epoch, weights and buffers
    ckpt = tmp_path / "c.npz"
    first = _bn_model()
    _fit(first, optim.Adam(first.parameters(), lr=0.05), 3, checkpoint=ckpt,
         early_stopping=2)
    model = _bn_model()  # (the name the on_epoch_end above reads)
    again = _fit(model, optim.Adam(model.parameters(), lr=0.05), 30, resume=ckpt, **kwargs)
    assert again.best_epoch == h.best_epoch and again.valid_acc == h.valid_acc
    for k, a in snapshots[h.best_epoch].items():
        assert np.array_equal(model.state_dict()[k], a), k
