"""replay: fit's recorded-step fast path gives the ordinary engine's numbers, bit for bit.

`fit(..., replay=True)` records the first step of each epoch and replays its ops on the
other batches (replay.StepTape). These tests compare it with `replay=False` (a graph per
step) with np.array_equal, count the replayed steps to show the fast path really runs
(and does not run for graphs that are not provably static), compare a tape's gradients
with `loss.backward()` on branching graphs, and check errors and memory release.
"""

import weakref

import numpy as np
import pytest

from tinygrad_mlp import Tensor, detect_anomaly, nn, no_grad, optim, replay, train
from tinygrad_mlp.replay import StepTape
from tinygrad_mlp.tensor import Function

# ----------------------------------------------------------------------------- helpers


def lecture_data(n=310, n_in=784, n_classes=10, dtype=np.float32, seed=0):
    """Synthetic MNIST-like rows in [0, 1) with labels that depend on the pixels."""
    rng = np.random.RandomState(seed)
    X = rng.uniform(0.0, 1.0, (n, n_in)).astype(dtype)
    y = X[:, :n_classes].argmax(axis=1).astype(np.int64)
    return X, y


def blobs(n=230, n_in=5, n_classes=3, seed=1, dtype=np.float64):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, n_classes, n)
    centers = rng.normal(0.0, 2.0, (n_classes, n_in))
    return (centers[y] + rng.normal(size=(n, n_in))).astype(dtype), y


def lecture_net(dtype=np.float32, n_in=784, hidden=20, seed=1):
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Dense(n_in, hidden, rng=rng, dtype=dtype), nn.Sigmoid(),
                         nn.Dense(hidden, 10, rng=rng, dtype=dtype), nn.Sigmoid())


def small_net(act=nn.ReLU, n_in=5, hidden=12, n_out=3, dtype=np.float64, seed=2, bias=True):
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Dense(n_in, hidden, init_std="he", rng=rng, dtype=dtype, bias=bias),
                         act(), nn.Dense(hidden, n_out, init_std="he", rng=rng, dtype=dtype,
                                         bias=bias))


@pytest.fixture
def replays(monkeypatch):
    """The batch sizes of every StepTape.forward call (a replayed step) during the test."""
    calls = []
    original = StepTape.forward

    def counting(self, batch, targets):
        calls.append(len(batch))
        return original(self, batch, targets)

    monkeypatch.setattr(StepTape, "forward", counting)
    return calls


def train_once(make_model, make_loss, make_opt, X, y, *, replay_on, **kwargs):
    model = make_model()
    opt = make_opt(model.parameters())
    kwargs.setdefault("seed", 3)
    history = train.fit(model, make_loss(), opt, X, y, replay=replay_on, progress=False,
                        **kwargs)
    return model, history


def assert_same_run(a, b):
    """Two (model, history) pairs hold the same numbers, bit for bit."""
    (model_a, hist_a), (model_b, hist_b) = a, b
    names_a = [name for name, _ in model_a.named_parameters()]
    assert names_a == [name for name, _ in model_b.named_parameters()]
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        assert pa.dtype == pb.dtype, name
        assert np.array_equal(pa.data, pb.data), f"{name} differs"
    assert hist_a.cost == hist_b.cost
    assert hist_a.train_acc == hist_b.train_acc
    assert hist_a.valid_acc == hist_b.valid_acc


def compare_fits(replays, make_model, make_loss, make_opt, X, y, *, expect_replays, **kwargs):
    """fit with replay=True and False; same numbers; `expect_replays` replayed steps,
    spread evenly over the epochs (the tape is recorded anew at each epoch's first step)."""
    per_epoch = []
    fast = train_once(make_model, make_loss, make_opt, X, y, replay_on=True,
                      on_epoch_end=lambda epoch, history: per_epoch.append(len(replays)),
                      **kwargs)
    assert len(replays) == expect_replays
    epochs = kwargs["epochs"]
    assert per_epoch == [expect_replays // epochs * e for e in range(1, epochs + 1)]
    del replays[:]
    slow = train_once(make_model, make_loss, make_opt, X, y, replay_on=False, **kwargs)
    assert replays == []  # replay=False never replays
    assert_same_run(fast, slow)
    # the runs trained: a wrong comparison of two untouched models would also be "equal"
    assert not np.array_equal(fast[0].parameters()[0].data, make_model().parameters()[0].data)
    return fast, slow


def replayed(n, batch_size, epochs):
    """Replayed steps of a static model: all but the first full batch of each epoch."""
    return epochs * (n // batch_size - 1)


# ----------------------------------------------------------------------------- 1 + 2: fit


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eval_train", [False, True])
def test_lecture_net_replay_is_bit_identical(replays, dtype, eval_train):
    X, y = lecture_data(dtype=dtype)
    X_valid, y_valid = lecture_data(n=40, dtype=dtype, seed=5)
    compare_fits(replays, lambda: lecture_net(dtype), lambda: nn.BinaryCrossEntropy("sum"),
                 lambda ps: optim.SGD(ps, lr=0.001), X, y, epochs=3, batch_size=50, l2=0.01,
                 eval_train=eval_train, X_valid=X_valid, y_valid=y_valid,
                 expect_replays=replayed(310, 50, 3))


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_cross_entropy_adam_one_cycle_is_bit_identical(replays, act):
    X, y = blobs()
    epochs, batch = 3, 32
    total = epochs * (len(X) // batch)
    compare_fits(replays, lambda: small_net(act), lambda: nn.CrossEntropy(),
                 lambda ps: optim.Adam(ps, lr=0.01), X, y, epochs=epochs, batch_size=batch,
                 schedule=lambda step: optim.one_cycle(step, total, 0.05), l2=1e-3,
                 eval_train=False, expect_replays=replayed(len(X), batch, epochs))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_momentum_sgd_is_bit_identical(replays, dtype):
    X, y = blobs(dtype=dtype)
    compare_fits(replays, lambda: small_net(nn.Tanh, dtype=dtype), lambda: nn.CrossEntropy(),
                 lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9), X, y, epochs=2,
                 batch_size=20, expect_replays=replayed(len(X), 20, 2))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_regression_with_2d_targets_is_bit_identical(replays, reduction):
    rng = np.random.RandomState(4)
    X = rng.normal(size=(200, 5))
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)  # float64 (n, 2) targets
    compare_fits(replays, lambda: small_net(nn.Tanh, n_out=2), lambda: nn.MSE(reduction),
                 lambda ps: optim.SGD(ps, lr=0.01, momentum=0.5), X, Y, epochs=3,
                 batch_size=25, eval_train=False, expect_replays=replayed(200, 25, 3))


def test_dense_without_bias_is_bit_identical(replays):
    X, y = blobs()
    fast, _ = compare_fits(replays, lambda: small_net(nn.ReLU, bias=False),
                           lambda: nn.CrossEntropy(), lambda ps: optim.Adam(ps, lr=0.01), X, y,
                           epochs=2, batch_size=30, expect_replays=replayed(len(X), 30, 2))
    assert [name for name, _ in fast[0].named_parameters()] == ["0.weight", "2.weight"]


def test_a_layer_used_twice_is_bit_identical(replays):
    # the same Dense twice in a Sequential: its weight and bias feed two ops each
    def shared_net():
        rng = np.random.RandomState(5)
        first, square = nn.Dense(5, 6, rng=rng, dtype=np.float64), nn.Dense(6, 6, rng=rng,
                                                                             dtype=np.float64)
        return nn.Sequential(first, nn.Tanh(), square, nn.Tanh(), square)

    X, y = blobs()
    compare_fits(replays, shared_net, lambda: nn.CrossEntropy(),
                 lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9), X, y, epochs=2,
                 batch_size=20, l2=0.01, expect_replays=replayed(len(X), 20, 2))


def test_float64_batch_on_float32_model_replays(replays):
    # fit builds the BCE one-hot targets in X's dtype (float64); float64 X @ float32 W gives
    # float64 outputs, so BinaryCrossEntropy._targets finds targets of the output's shape
    # and dtype and wraps the targets array itself: no conversion outside an op, so the
    # step is recorded and replayed (the gradients are cast back to float32 as usual).
    X, y = lecture_data(n=120, n_in=30, dtype=np.float64)
    fast, _ = compare_fits(replays, lambda: lecture_net(np.float32, n_in=30),
                           lambda: nn.BinaryCrossEntropy(), lambda ps: optim.SGD(ps, lr=0.01),
                           X, y, epochs=2, batch_size=20, l2=0.01,
                           expect_replays=replayed(120, 20, 2))
    assert all(p.dtype == np.float32 for p in fast[0].parameters())


# ----------------------------------------------------------------------------- 2: fallbacks


class TwoLayer(nn.Module):
    """A custom module that does not declare static_graph (the base class says False)."""

    def __init__(self, seed=2):
        rng = np.random.RandomState(seed)
        self.first = nn.Dense(5, 12, init_std="he", rng=rng, dtype=np.float64)
        self.second = nn.Dense(12, 3, init_std="he", rng=rng, dtype=np.float64)

    def forward(self, x):
        return self.second(self.first(x).tanh())


class ScaledDense(nn.Dense):
    """Overrides Dense.forward without declaring static_graph again."""

    def forward(self, x):
        return super().forward(x) * 0.5


def scaled_net():
    rng = np.random.RandomState(2)
    return nn.Sequential(ScaledDense(5, 12, init_std="he", rng=rng, dtype=np.float64),
                         nn.Tanh(), nn.Dense(12, 3, init_std="he", rng=rng, dtype=np.float64))


def instance_patched_net():
    model = small_net(nn.Tanh)
    dense = model[0]
    dense.forward = lambda x: nn.Dense.forward(dense, x) * 0.5  # set on the instance
    return model


@pytest.mark.parametrize("make_model", [TwoLayer, scaled_net, instance_patched_net],
                         ids=["no-static_graph", "subclass-overrides-forward",
                              "forward-on-instance"])
def test_models_not_provably_static_use_the_engine(replays, make_model):
    assert not replay.is_static(make_model())
    X, y = blobs()
    compare_fits(replays, make_model, lambda: nn.CrossEntropy(),
                 lambda ps: optim.SGD(ps, lr=0.05), X, y, epochs=2, batch_size=20,
                 expect_replays=0)


def test_is_static_accepts_the_library_modules():
    assert replay.is_static(lecture_net())
    assert replay.is_static(small_net(bias=False))
    for loss in (nn.BinaryCrossEntropy(), nn.CrossEntropy(), nn.MSE()):
        assert replay.is_static(loss)
    assert not replay.is_static(lambda out, y: out)
    assert not replay.is_static(nn.Sequential(nn.Dense(2, 2), TwoLayer()))  # one bad child


def test_plain_function_loss_uses_the_engine(replays):
    X, y = blobs()
    cross_entropy = nn.CrossEntropy()
    compare_fits(replays, lambda: small_net(nn.ReLU), lambda: lambda out, t: cross_entropy(out, t),
                 lambda ps: optim.SGD(ps, lr=0.05), X, y, epochs=2, batch_size=20,
                 expect_replays=0)


def test_detect_anomaly_uses_the_engine(replays):
    X, y = blobs(n=100)
    with detect_anomaly():
        compare_fits(replays, lambda: small_net(nn.Tanh), lambda: nn.CrossEntropy(),
                     lambda ps: optim.SGD(ps, lr=0.05), X, y, epochs=2, batch_size=20,
                     expect_replays=0)


def test_targets_converted_outside_an_op_use_the_engine(replays):
    # float64 2-D targets on a float32 model: BinaryCrossEntropy._targets and MSE.forward
    # both convert the batch's targets with astype / asarray(dtype=...), a new non-0-d
    # array made outside the ops, so record gives no tape and every step is ordinary.
    X, y = lecture_data(n=120, n_in=30, dtype=np.float32)
    onehot = np.eye(10)[y]  # float64
    for loss in (nn.BinaryCrossEntropy, nn.MSE):
        compare_fits(replays, lambda: lecture_net(np.float32, n_in=30), loss,
                     lambda ps: optim.SGD(ps, lr=0.01), X, onehot, epochs=2, batch_size=20,
                     expect_replays=0)


def test_one_hot_rows_for_cross_entropy_use_the_engine(replays):
    # CrossEntropy turns one-hot rows into labels with argmax outside the op: no tape
    X, y = blobs()
    compare_fits(replays, lambda: small_net(nn.ReLU), lambda: nn.CrossEntropy(),
                 lambda ps: optim.SGD(ps, lr=0.05), X, np.eye(3)[y], epochs=2, batch_size=20,
                 expect_replays=0)


# ----------------------------------------------------------------------------- 3: branching


class Branchy(nn.Module):
    """A static module whose graph branches: values used by several ops, one weight used
    by two ops and twice by one op, a (1, k) parameter and a (1, k) op output broadcast
    against (n, k), a 0-d constant, a 0-d op output broadcast, and a residual with x."""

    static_graph = True

    def __init__(self, k=6, dtype=np.float64, seed=7):
        rng = np.random.RandomState(seed)
        self.dense = nn.Dense(k, k, init_std=0.5, rng=rng, dtype=dtype)
        self.scale = Tensor(rng.normal(1.0, 0.3, (1, k)).astype(dtype), requires_grad=True)
        self.w2 = Tensor(rng.normal(0.0, 0.4, (k, k)).astype(dtype), requires_grad=True)

    def forward(self, x):
        h = self.dense(x)
        s = h * h.sigmoid() + h                 # h feeds three ops
        s = s * self.scale                      # leaf (1, k) broadcast: unbroadcast to a leaf
        s = s - s.mean(axis=0, keepdims=True)   # node (1, k) broadcast: unbroadcast to a node
        penalty = (self.w2 * self.w2).sum() * 1e-2  # w2 twice in one op, a 0-d constant
        return s @ self.w2 + (s @ self.dense.weight) * 0.5 + penalty + x  # + 0-d node, x


def batches(k, n_batches, batch_size=8, seed=11, dtype=np.float64):
    rng = np.random.RandomState(seed)
    for _ in range(n_batches):
        yield (rng.normal(size=(batch_size, k)).astype(dtype),
               rng.randint(0, k, batch_size), rng.normal(size=(batch_size, k)).astype(dtype))


def engine_step(model, loss_fn, xb, yb):
    """out, loss and the parameters' gradients from the ordinary engine."""
    model.zero_grad()
    out = model(xb)
    loss = loss_fn(out, yb)
    loss.backward()
    return out.data, loss.data, [p.grad.copy() for p in model.parameters()]


def tape_step(tape, model, xb, yb):
    model.zero_grad()
    out, loss = tape.forward(xb, yb)
    out, loss = out.copy(), loss.copy()
    tape.backward()
    return out, loss, [p.grad.copy() for p in model.parameters()]


def assert_same_step(a, b):
    out_a, loss_a, grads_a = a
    out_b, loss_b, grads_b = b
    assert np.array_equal(out_a, out_b) and out_a.dtype == out_b.dtype
    assert np.array_equal(loss_a, loss_b) and loss_a.dtype == loss_b.dtype
    assert len(grads_a) == len(grads_b)
    for ga, gb in zip(grads_a, grads_b):
        assert ga.dtype == gb.dtype and np.array_equal(ga, gb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss_kind", ["cross_entropy", "mse_sum"])
def test_branching_graph_tape_gradients_equal_backward(dtype, loss_kind):
    k = 6
    model = Branchy(k, dtype)
    loss_fn = nn.CrossEntropy() if loss_kind == "cross_entropy" else nn.MSE("sum")
    data = list(batches(k, 5, dtype=dtype))
    rng = np.random.RandomState(12)

    def target(batch):
        return batch[1] if loss_kind == "cross_entropy" else batch[2]

    x0 = data[0][0]
    tape, out, loss = StepTape.record(model, loss_fn, x0, target(data[0]))
    assert tape is not None
    model.zero_grad()
    loss.backward()  # the recorded step is an ordinary graph
    recorded = (out.data, loss.data, [p.grad.copy() for p in model.parameters()])
    assert_same_step(recorded, engine_step(model, loss_fn, x0, target(data[0])))
    assert_same_step(tape_step(tape, model, x0, target(data[0])), recorded)
    for batch in data[1:]:
        xb, yb = batch[0], target(batch)
        fast = tape_step(tape, model, xb, yb)
        assert_same_step(fast, engine_step(model, loss_fn, xb, yb))
        for p in model.parameters():  # move the weights in place, as an optimizer does
            p.data += rng.normal(0.0, 0.05, p.shape).astype(dtype)
    # the shared leaves really got summed gradients from several ops: not trivially zero
    assert all(np.abs(g).sum() > 0 for g in fast[2])


def test_gradient_summed_into_a_leaf_and_a_node_in_reverse_creation_order():
    # a node used by many consumers and a leaf used by many ops: the order of the sums is
    # the engine's (float32 sums in another order would differ in the last bits)
    class Fan(nn.Module):
        static_graph = True

        def __init__(self):
            rng = np.random.RandomState(0)
            self.w = Tensor(rng.normal(size=(1, 4)).astype(np.float32), requires_grad=True)

        def forward(self, x):
            h = x * self.w
            terms = [h * self.w * (1.0 + 0.37 * i) for i in range(6)]
            total = terms[0]
            for t in terms[1:]:
                total = total + t.tanh() * h
            return total

    model, loss_fn = Fan(), nn.MSE("sum")
    rng = np.random.RandomState(1)
    X = rng.normal(size=(4, 16, 4)).astype(np.float32) * 30
    Y = rng.normal(size=(4, 16, 4)).astype(np.float32)
    tape, _, _ = StepTape.record(model, loss_fn, X[0], Y[0])
    assert tape is not None
    for xb, yb in zip(X[1:], Y[1:]):
        assert_same_step(tape_step(tape, model, xb, yb), engine_step(model, loss_fn, xb, yb))


class SharedGrad(nn.Module):
    """(a + b) * x: Add's backward hands the same array to both leaves."""

    static_graph = True

    def __init__(self):
        rng = np.random.RandomState(3)
        self.a = Tensor(rng.normal(size=(4,)), requires_grad=True)
        self.b = Tensor(rng.normal(size=(4,)), requires_grad=True)

    def forward(self, x):
        return (self.a + self.b) * x


def test_each_leaf_owns_its_gradient_array():
    # an optimizer or fit's l2 term updates .grad in place: two leaves must never share one
    model, loss_fn = SharedGrad(), nn.MSE("sum")
    rng = np.random.RandomState(0)
    X, Y = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 5, 4))
    tape, _, _ = StepTape.record(model, loss_fn, X[0], Y[0])
    assert tape is not None
    for xb, yb in zip(X[1:], Y[1:]):
        fast = tape_step(tape, model, xb, yb)
        assert not np.shares_memory(model.a.grad, model.b.grad)
        assert_same_step(fast, engine_step(model, loss_fn, xb, yb))


# ----------------------------------------------------------------------------- 4: changes


def test_load_state_dict_between_epochs_is_seen(replays):
    X, y = blobs()
    other = small_net(nn.Tanh, seed=9).state_dict()

    def make_hook(model_box):
        def on_epoch_end(epoch, history):
            if epoch == 1:
                model_box[0].load_state_dict(other)
        return on_epoch_end

    runs = []
    for replay_on in (True, False):
        box = [small_net(nn.Tanh)]
        opt = optim.SGD(box[0].parameters(), lr=0.05, momentum=0.9)
        hist = train.fit(box[0], nn.CrossEntropy(), opt, X, y, epochs=3, batch_size=20,
                         seed=3, progress=False, replay=replay_on,
                         on_epoch_end=make_hook(box))
        runs.append((box[0], hist))
    assert len(replays) == replayed(len(X), 20, 3)
    assert_same_run(*runs)


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_freezing_a_weight_between_epochs_is_seen(replays, l2):
    X, y = blobs()
    runs, frozen_at = [], []
    for replay_on in (True, False):
        model = small_net(nn.Tanh)
        opt = optim.SGD(model.parameters(), lr=0.05)

        def on_epoch_end(epoch, history, model=model):
            if epoch == 1:
                model[0].weight.requires_grad = False
                frozen_at.append(model[0].weight.data.copy())

        hist = train.fit(model, nn.CrossEntropy(), opt, X, y, epochs=3, batch_size=20,
                         seed=3, progress=False, replay=replay_on, l2=l2,
                         on_epoch_end=on_epoch_end)
        runs.append((model, hist))
    assert len(replays) == replayed(len(X), 20, 3)
    for (model, _), before in zip(runs, frozen_at):
        assert model[0].weight.requires_grad is False
        # a stale tape would keep writing a gradient into the frozen weight, and fit's l2
        # term must skip it (it once gave it a gradient l2 W, which SGD applied)
        assert np.array_equal(model[0].weight.data, before)
        assert model[0].weight.grad is None
    assert np.array_equal(runs[0][0][0].weight.data, runs[1][0][0].weight.data)
    assert runs[0][1].cost == runs[1][1].cost
    assert np.array_equal(runs[0][0][2].weight.data, runs[1][0][2].weight.data)
    assert np.array_equal(runs[0][0][0].bias.data, runs[1][0][0].bias.data)


def test_new_parameter_array_between_replayed_steps_is_read(replays):
    # a schedule runs before every step: at step 3 (a replayed one) it gives the first
    # weight a new array. Were the tape holding the old array, the runs would differ.
    X, y = blobs()
    runs = []
    for replay_on in (True, False):
        model = small_net(nn.Tanh)

        def schedule(step, model=model):
            if step == 3:
                model[0].weight.data = model[0].weight.data * 0.5
            return 0.05

        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        hist = train.fit(model, nn.CrossEntropy(), opt, X, y, epochs=2, batch_size=20,
                         seed=3, progress=False, replay=replay_on, schedule=schedule)
        runs.append((model, hist))
    assert len(replays) == replayed(len(X), 20, 2)
    assert_same_run(*runs)


def test_tape_reads_leaf_data_every_step():
    X, y = blobs(n=40)
    model, loss_fn = small_net(nn.ReLU), nn.CrossEntropy()
    tape, _, _ = StepTape.record(model, loss_fn, X[:20], y[:20])
    assert tape is not None
    for p in model.parameters():
        p.data = p.data * 1.5 + 0.01  # a new array, not an in-place write
    fast = tape_step(tape, model, X[20:], y[20:])
    assert_same_step(fast, engine_step(model, loss_fn, X[20:], y[20:]))
    with no_grad():
        stale = small_net(nn.ReLU)(X[20:]).data
    assert not np.array_equal(fast[0], stale)  # the output used the new weights


# ----------------------------------------------------------------------------- 5: no tape


class OnesMask(nn.Module):
    """Static by declaration, but multiplies by a (k,) array made in forward."""

    static_graph = True

    def __init__(self):
        self.dense = nn.Dense(5, 3, rng=np.random.RandomState(0), dtype=np.float64)

    def forward(self, x):
        return self.dense(x * Tensor(np.ones(5)))


class BatchMask(nn.Module):
    """Static by declaration, but uses a NumPy array computed from the batch."""

    static_graph = True

    def __init__(self):
        self.dense = nn.Dense(5, 3, rng=np.random.RandomState(0), dtype=np.float64)

    def forward(self, x):
        x_arr = x.data if isinstance(x, Tensor) else x
        return self.dense(x * (x_arr > 0))


@pytest.mark.parametrize("make_model", [OnesMask, BatchMask])
def test_arrays_made_outside_the_ops_give_no_tape(make_model):
    X, y = blobs(n=20)
    model, loss_fn = make_model(), nn.CrossEntropy()
    tape, out, loss = StepTape.record(model, loss_fn, X, y)
    assert tape is None
    recorded = (out.data, loss.data)
    model.zero_grad()
    loss.backward()
    grads = [p.grad.copy() for p in model.parameters()]
    assert_same_step((*recorded, grads), engine_step(model, loss_fn, X, y))


def test_batch_mask_module_in_fit_falls_back_and_matches(replays):
    X, y = blobs()
    compare_fits(replays, BatchMask, lambda: nn.CrossEntropy(),
                 lambda ps: optim.SGD(ps, lr=0.05), X, y, epochs=2, batch_size=20,
                 expect_replays=0)


class HiddenScalar(nn.Module):
    """Static by declaration, but its scalar parameter sits in a dict, where neither
    `parameters()` nor the tape's search of the modules' attributes looks."""

    static_graph = True

    def __init__(self):
        self.dense = nn.Dense(5, 3, rng=np.random.RandomState(0), dtype=np.float64)
        self.extra = {"gain": Tensor(np.array(1.5), requires_grad=True)}

    def forward(self, x):
        return self.dense(x) * self.extra["gain"]


def test_a_parameter_the_modules_do_not_hold_gives_no_tape(replays):
    # a 0-d leaf with requires_grad is not a constant: replaying it as one would lose its
    # gradient, so record must refuse
    X, y = blobs()
    model = HiddenScalar()
    tape, _, loss = StepTape.record(model, nn.CrossEntropy(), X[:20], y[:20])
    assert tape is None
    loss.backward()
    assert model.extra["gain"].grad is not None

    runs = []
    for replay_on in (True, False):
        model = HiddenScalar()
        opt = optim.SGD(model.parameters() + [model.extra["gain"]], lr=0.05)
        hist = train.fit(model, nn.CrossEntropy(), opt, X, y, epochs=2, batch_size=20,
                         seed=3, progress=False, replay=replay_on)
        runs.append((model, hist))
    assert replays == []
    assert_same_run(*runs)
    assert runs[0][0].extra["gain"].data == runs[1][0].extra["gain"].data != 1.5


def test_a_loss_of_several_elements_gives_no_tape():
    X, y = blobs(n=20)
    model, loss_fn = small_net(nn.ReLU), nn.CrossEntropy(reduction="none")
    tape, out, loss = StepTape.record(model, loss_fn, X, y)
    assert tape is None
    assert loss.shape == (20,)
    model.zero_grad()
    loss.backward(np.ones(20))
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    ref_loss = loss_fn(model(X), y)
    ref_loss.backward(np.ones(20))
    assert np.array_equal(loss.data, ref_loss.data)
    for g, p in zip(grads, model.parameters()):
        assert np.array_equal(g, p.grad)


def test_no_grad_gives_no_tape_but_the_engine_values():
    X, y = blobs(n=20)
    model, loss_fn = small_net(nn.ReLU), nn.CrossEntropy()
    with no_grad():
        tape, out, loss = StepTape.record(model, loss_fn, X, y)
    assert tape is None
    assert not loss.requires_grad
    ref_out = model(X)
    ref_loss = loss_fn(ref_out, y)
    assert np.array_equal(out.data, ref_out.data)
    assert np.array_equal(loss.data, ref_loss.data)


def test_record_inside_detect_anomaly_gives_no_tape():
    X, y = blobs(n=20)
    model, loss_fn = small_net(nn.ReLU), nn.CrossEntropy()
    with detect_anomaly():
        tape, _, loss = StepTape.record(model, loss_fn, X, y)
    assert tape is None and loss.requires_grad


class ScaledByBatch(nn.Module):
    """Declares static_graph, but scales by a number computed from the batch's values."""

    static_graph = True

    def __init__(self):
        self.dense = nn.Dense(5, 3, rng=np.random.RandomState(0), dtype=np.float64)

    def forward(self, x):
        return self.dense(x) * (1.0 / float(np.std(x)))


def test_a_0d_constant_is_recorded_once():
    # What the tape does with a 0-d constant: it keeps the recorded value for every step.
    # So a Python number computed from the data must not reach an op in a module that
    # declares static_graph (the tape cannot tell it from a fixed constant like 0.5).
    X, y = blobs(n=40)
    X[20:] *= 3.0
    model, loss_fn = ScaledByBatch(), nn.CrossEntropy()
    tape, first_out, _ = StepTape.record(model, loss_fn, X[:20], y[:20])
    assert tape is not None
    out, _ = tape.forward(X[20:], y[20:])
    with no_grad():
        recorded_scale = model.dense(X[20:]) * (1.0 / float(np.std(X[:20])))
        engine = model(X[20:])
    assert np.array_equal(out, recorded_scale.data)
    assert not np.allclose(out, engine.data)


def test_record_with_a_plain_function_loss():
    X, y = blobs(n=40)
    model, cross_entropy = small_net(nn.ReLU), nn.CrossEntropy()
    tape, out, loss = StepTape.record(model, lambda o, t: cross_entropy(o, t), X[:20], y[:20])
    assert np.array_equal(loss.data, cross_entropy(model(X[:20]), y[:20]).data)
    if tape is not None:
        assert_same_step(tape_step(tape, model, X[20:], y[20:]),
                         engine_step(model, cross_entropy, X[20:], y[20:]))


# ----------------------------------------------------------------------------- 6: errors


def test_wrong_width_in_a_replayed_step_raises_the_engines_error():
    X, y = lecture_data(n=40, n_in=30)
    model, loss_fn = lecture_net(n_in=30), nn.BinaryCrossEntropy()
    targets = np.eye(10, dtype=np.float32)[y]
    tape, _, _ = StepTape.record(model, loss_fn, X[:20], targets[:20])
    assert tape is not None
    bad = X[20:, :29]
    with pytest.raises(ValueError) as engine_error:
        model(bad)
    with pytest.raises(ValueError) as tape_error:
        tape.forward(bad, targets[20:])
    assert "does not match weight of shape (30, 20)" in str(engine_error.value)
    assert str(tape_error.value) == str(engine_error.value)
    # the tape still works after the failed step
    assert_same_step(tape_step(tape, model, X[20:], targets[20:]),
                     engine_step(model, loss_fn, X[20:], targets[20:]))


@pytest.mark.parametrize("nan_epoch", [1, 2])
def test_nan_in_a_replayed_step_stops_fit_before_updating(replays, nan_epoch):
    # shuffle=False and batch_size 10: row 35 lands in batch 3, a replayed step. For
    # epoch 2 the NaN is written into X by on_epoch_end after epoch 1.
    X0, y = lecture_data(n=60, n_in=30, dtype=np.float64)
    outcomes = []
    for replay_on in (True, False):
        X = X0.copy()
        if nan_epoch == 1:
            X[35, 4] = np.nan

        def on_epoch_end(epoch, history, X=X):
            if epoch == 1:
                X[35, 4] = np.nan

        model = lecture_net(np.float64, n_in=30)
        opt = optim.SGD(model.parameters(), lr=0.01)
        # (np.logaddexp warns "invalid value" on a NaN: not what is tested here)
        with pytest.raises(train.NonFiniteError) as err, np.errstate(invalid="ignore"):
            train.fit(model, nn.BinaryCrossEntropy(), opt, X, y, epochs=3, batch_size=10,
                      shuffle=False, l2=0.01, progress=False, replay=replay_on,
                      on_epoch_end=on_epoch_end)
        outcomes.append((str(err.value), model.state_dict()))
    (msg_fast, state_fast), (msg_slow, state_slow) = outcomes
    assert f"the loss became nan at epoch {nan_epoch}, batch 3 (rows 30, 31, 32, 33" in msg_fast
    assert msg_fast == msg_slow
    assert len(replays) == 5 * (nan_epoch - 1) + 3  # batches 1-3 of the NaN epoch replayed
    for name in state_fast:
        assert np.array_equal(state_fast[name], state_slow[name]), name
    # not updated by the NaN step: the same as training on the clean rows before it
    clean = lecture_net(np.float64, n_in=30)
    train.fit(clean, nn.BinaryCrossEntropy(), optim.SGD(clean.parameters(), lr=0.01),
              np.concatenate([X0] * (nan_epoch - 1) + [X0[:30]]),
              np.concatenate([y] * (nan_epoch - 1) + [y[:30]]), epochs=1, batch_size=10,
              shuffle=False, l2=0.01, progress=False, replay=False)
    for name, value in clean.state_dict().items():
        assert np.array_equal(state_fast[name], value), name


# ----------------------------------------------------------------------------- 7: memory


def test_backward_releases_the_steps_arrays():
    X, y = lecture_data(n=60, n_in=30)
    targets = np.eye(10, dtype=np.float32)[y]
    model, loss_fn = lecture_net(n_in=30), nn.BinaryCrossEntropy()
    tape, _, _ = StepTape.record(model, loss_fn, X[:20], targets[:20])
    assert tape is not None
    n_fixed = tape.n_fixed
    assert n_fixed == 2 + len(model.parameters())  # batch, targets, 4 leaves, no constants
    for start in (20, 40):
        xb, yb = X[start:start + 20].copy(), targets[start:start + 20].copy()
        out, loss = tape.forward(xb, yb)
        # during the step the slots and the contexts hold the activations
        assert all(s is not None for s in tape.slots)
        assert all(op.ctx.saved != () for op in tape.ops)
        hidden = weakref.ref(tape.slots[n_fixed])  # the first Dense's output
        batch_ref = weakref.ref(xb)
        del out, loss, xb
        tape.backward()
        assert all(op.ctx.saved == () for op in tape.ops)
        assert tape.slots[:2] == [None, None]
        assert all(s is None for s in tape.slots[n_fixed:])
        # no constants here: the other slots hold only the parameters' own arrays
        assert all(s is p.data for s, p in zip(tape.slots[2:n_fixed], model.parameters()))
        assert hidden() is None and batch_ref() is None  # nothing else kept them alive
        assert all(p.grad is not None for p in model.parameters())


class MaxShift(nn.Module):
    """h - max(h) per row: the Max op keeps a mask of h's shape in a ctx attribute."""

    static_graph = True

    def __init__(self):
        self.dense = nn.Dense(5, 4, rng=np.random.RandomState(0), dtype=np.float64)

    def forward(self, x):
        h = self.dense(x)
        return h - h.max(axis=1, keepdims=True)


def test_backward_releases_arrays_ops_keep_on_their_context():
    X, y = blobs(n=200)
    model, loss_fn = MaxShift(), nn.CrossEntropy()
    tape, _, _ = StepTape.record(model, loss_fn, X[:100], y[:100])
    assert tape is not None
    tape.forward(X[100:], y[100:])
    assert any(isinstance(v, np.ndarray) and v.shape[:1] == (100,)
               for op in tape.ops for v in vars(op.ctx).values())  # held during the step
    tape.backward()
    for op in tape.ops:
        for name, value in vars(op.ctx).items():
            assert not (isinstance(value, np.ndarray) and value.shape[:1] == (100,)), \
                f"{op.function.name}: ctx.{name} keeps a batch-sized array"


class _OpsInAnotherThread(nn.Module):
    """Static; while it runs another thread applies an op (recordings are per thread)."""

    static_graph = True

    def __init__(self):
        self.dense = nn.Dense(5, 3, seed=0, dtype=np.float64)

    def forward(self, x):
        import threading

        worker = threading.Thread(target=lambda: Tensor(np.ones(3)) * 2.0)
        worker.start()
        worker.join()
        return self.dense(x)


def test_an_op_of_another_thread_during_recording_is_not_recorded():
    X, y = blobs(n=40)
    model, loss_fn = _OpsInAnotherThread(), nn.CrossEntropy()
    tape, out, loss = StepTape.record(model, loss_fn, X[:20], y[:20])
    assert tape is not None
    assert [op.function.name for op in tape.ops] == ["dense", "softmax_cross_entropy"]
    assert np.array_equal(loss.data, loss_fn(model.dense(X[:20]), y[:20]).data)
    assert np.array_equal(tape.forward(X[20:], y[20:])[1],
                          loss_fn(model.dense(X[20:]), y[20:]).data)


# ----------------------------------------------------------------------------- compiled code


def interpreted_step(tape, model, xb, yb):
    """A step through the tape's interpreter (the loops the compiled code unrolls)."""
    model.zero_grad()
    tape.load(xb, yb)
    tape.run_forward(tape.ops)
    out, loss = tape.slots[tape.out_slot].copy(), tape.slots[tape.loss_slot].copy()
    tape.run_backward(tape.order, tape.seed())
    tape.release()
    return out, loss, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("make", [
    lambda: (lecture_net(n_in=30), nn.BinaryCrossEntropy(), "lecture"),
    lambda: (Branchy(6, np.float32), nn.CrossEntropy(), "branchy"),
    lambda: (Branchy(6, np.float64), nn.MSE("sum"), "branchy"),
])
def test_compiled_step_equals_the_interpreter(make):
    model, loss_fn, kind = make()
    rng = np.random.RandomState(5)
    dtype = model.parameters()[0].dtype
    if kind == "lecture":
        data = [(rng.uniform(0, 1, (20, 30)).astype(dtype),
                 np.eye(10, dtype=dtype)[rng.randint(0, 10, 20)]) for _ in range(4)]
    else:
        data = [(b[0], b[1] if isinstance(loss_fn, nn.CrossEntropy) else b[2])
                for b in batches(6, 4, dtype=dtype)]
    tape, _, _ = StepTape.record(model, loss_fn, *data[0])
    assert tape is not None
    for xb, yb in data[1:]:
        compiled = tape_step(tape, model, xb, yb)
        assert_same_step(compiled, interpreted_step(tape, model, xb, yb))
        assert_same_step(compiled, engine_step(model, loss_fn, xb, yb))
        for p in model.parameters():
            p.data -= 0.01 * p.grad  # a step: the next batch meets new weights
    assert all(s is None for s in tape.slots[tape.n_fixed:])  # released, as the loop does


def test_tape_source_is_the_step_written_out():
    model, loss_fn = lecture_net(n_in=30), nn.BinaryCrossEntropy()
    X, y = lecture_data(n=20, n_in=30)
    tape, _, _ = StepTape.record(model, loss_fn, X, np.eye(10, dtype=np.float32)[y])
    forward, backward = tape.source.split("\ndef backward")
    calls = [line.split("# ")[-1] for line in forward.splitlines() if "= fwd" in line]
    assert calls == ["dense", "sigmoid", "dense", "sigmoid", "sigmoid_binary_cross_entropy"]
    assert forward.count("fwd") == len(tape.ops)
    # backward visits the tracked ops last to first; the leaves get their gradients there
    visits = [line.split("# ")[-1] for line in backward.splitlines() if "is not None:  #" in line]
    assert visits == [op.function.name for op in tape.order]
    assert backward.count("add_leaf_grad(") == len(model.parameters())
    compile(tape.source, "<source>", "exec")  # it is the code that runs: valid Python


class _TooManyGrads(Function):
    name = "too_many_grads"

    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, g):
        return g * 2.0, g


class _DoublesBadly(nn.Module):
    static_graph = True

    def __init__(self):
        self.w = Tensor(np.ones(3), requires_grad=True)

    def forward(self, x):
        return _TooManyGrads.apply(x * self.w)


def test_compiled_backward_names_an_op_with_the_wrong_number_of_gradients():
    model, loss_fn = _DoublesBadly(), nn.MSE("sum")
    X, Y = np.ones((3, 4, 3)), np.zeros((3, 4, 3))
    tape, out, loss = StepTape.record(model, loss_fn, X[0], Y[0])
    assert tape is not None
    with pytest.raises(RuntimeError) as engine_error:
        loss.backward()
    tape.forward(X[1], Y[1])
    with pytest.raises(RuntimeError) as tape_error:
        tape.backward()
    tape.load(X[2], Y[2])
    tape.run_forward(tape.ops)
    with pytest.raises(RuntimeError) as loop_error:
        tape.run_backward(tape.order, tape.seed())
    message = "too_many_grads: backward returned 2 gradient(s) for 1 input(s)"
    assert message in str(engine_error.value)
    assert str(tape_error.value) == str(loop_error.value) == message
