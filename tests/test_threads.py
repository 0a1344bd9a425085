"""Engine modes are per thread: no_grad(), detect_anomaly(), the running module, forward mode
and a recording in progress in one thread never change what another thread builds.

The main test trains a small net in one thread for thousands of steps while a second
thread evaluates under no_grad() and a third computes under detect_anomaly(); every step
must succeed and give the numbers of the same training run alone.
"""

import threading
import time

import numpy as np

from tinygrad_mlp import Tensor, detect_anomaly, enable_grad, is_grad_enabled, nn, no_grad, optim
from tinygrad_mlp import tensor as engine
from tinygrad_mlp.forward import jvp

STEPS = 1500


def make_net():
    rng = np.random.RandomState(0)
    return nn.Sequential(nn.Dense(4, 6, rng=rng, dtype=np.float64), nn.Tanh(),
                         nn.Dense(6, 3, rng=rng, dtype=np.float64))


def data(seed=1, n=16):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, 4)), rng.randint(0, 3, n)


def train(steps):
    """Train make_net() for `steps` steps; the losses and the final weights."""
    model = make_net()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropy()
    X, y = data()
    losses = []
    for _ in range(steps):
        loss = loss_fn(model(Tensor(X)), y)  # raises if grad mode were off here
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.data.copy() for p in model.parameters()]


def run_threads(*targets):
    errors = []

    def guarded(target):
        try:
            target()
        except BaseException as e:  # noqa: BLE001 (reported below, with its thread)
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_training_beside_no_grad_and_anomaly_threads_matches_a_lone_run():
    alone_losses, alone_weights = train(STEPS)
    stop = threading.Event()
    result = {}
    evaluated = [0]
    anomaly_checked = [0]
    model_eval = make_net()
    X, _ = data(seed=2)

    def trainer():
        try:
            result["losses"], result["weights"] = train(STEPS)
        finally:
            stop.set()  # also when a step fails: the other threads must end

    def evaluator():
        with no_grad():
            while not stop.is_set():
                out = model_eval(Tensor(X))
                assert not out.requires_grad and not is_grad_enabled()
                evaluated[0] += 1
                time.sleep(0.001)  # stays inside no_grad() meanwhile: only the GIL is given up

    def anomaly_watcher():
        with detect_anomaly():
            while not stop.is_set():
                x = Tensor(np.array([1.0, -1.0]), requires_grad=True)
                with np.errstate(invalid="ignore"):
                    try:
                        x.sqrt().sum().backward()
                    except FloatingPointError:
                        anomaly_checked[0] += 1  # this thread's mode is on ...
                        time.sleep(0.001)
                    else:
                        raise AssertionError("detect_anomaly() was off in its own thread")

    run_threads(trainer, evaluator, anomaly_watcher)
    assert evaluated[0] > 0 and anomaly_checked[0] > 0  # the threads really ran beside it
    assert result["losses"] == alone_losses  # ... and never reached the trainer
    for a, b in zip(result["weights"], alone_weights):
        assert np.array_equal(a, b)


def test_no_grad_in_one_thread_leaves_another_thread_building_graphs():
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def other():
        with no_grad():
            entered.set()
            release.wait(5)
            seen["other"] = is_grad_enabled()

    t = threading.Thread(target=other)
    t.start()
    entered.wait(5)
    try:
        assert is_grad_enabled()
        y = Tensor(np.ones(3), requires_grad=True) * 2.0
        assert y.requires_grad
    finally:
        release.set()
        t.join()
    assert seen["other"] is False
    assert is_grad_enabled()


def test_a_new_thread_starts_with_the_default_modes_whatever_its_parent_is_in():
    seen = {}

    def child():
        seen["grad"] = is_grad_enabled()
        seen["anomaly"] = engine.is_anomaly_enabled()
        seen["module"] = engine.current_module()
        seen["forward"] = engine.forward_mode_depth()
        seen["recording"] = engine.current_recording()

    class Spawner(nn.Module):
        def forward(self, x):
            t = threading.Thread(target=child)
            t.start()
            t.join()
            return x

    with no_grad(), detect_anomaly():
        jvp(lambda x: Spawner()(x), (np.ones(2),), (np.ones(2),))
    assert seen == {"grad": True, "anomaly": False, "module": None, "forward": 0,
                    "recording": None}


def test_one_no_grad_object_used_by_two_threads_restores_each_threads_mode():
    off = no_grad()
    barrier = threading.Barrier(2)
    seen = []

    def worker(outer_grad):
        with (enable_grad() if outer_grad else no_grad()):
            with off:
                barrier.wait(5)
                seen.append(is_grad_enabled())
            barrier.wait(5)
            seen.append((outer_grad, is_grad_enabled()))

    run_threads(lambda: worker(True), lambda: worker(False))
    assert seen.count(False) == 2
    assert sorted(x for x in seen if isinstance(x, tuple)) == [(False, False), (True, True)]


def test_the_running_module_is_per_thread():
    """ctx.module (what drawings show) names the module that ran in the op's own thread."""
    inner = threading.Event()
    made = {"slow_done": threading.Event()}

    class Slow(nn.Module):
        def forward(self, x):
            inner.set()
            made["slow_done"].wait(5)
            return x.tanh()

    slow = Slow()

    def in_other_thread():
        made["slow_out"] = slow(Tensor(np.ones(2), requires_grad=True))

    t = threading.Thread(target=in_other_thread)
    t.start()
    inner.wait(5)
    try:
        out = Tensor(np.ones(2), requires_grad=True).sigmoid()  # no module in this thread
    finally:
        made["slow_done"].set()
        t.join()
    assert out._ctx.module is None
    assert made["slow_out"]._ctx.module is slow
