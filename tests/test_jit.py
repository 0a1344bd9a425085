"""jit: a compiled function gives the ordinary engine's numbers, bit for bit, or runs on it.

Each test runs the same loop with and without `jit` and compares with np.array_equal (and
`==` on Python floats); `fn.stats` shows the compiled path really ran (or did not).
"""

import threading
import warnings

import numpy as np
import pytest

from tinygrad_mlp import (
    Function,
    Jit,
    JitFallbackWarning,
    Tensor,
    detect_anomaly,
    jit,
    nn,
    no_grad,
    optim,
)

# ----------------------------------------------------------------------------- helpers


def lecture_net(dtype, n_in=30, hidden=12, n_out=4, seed=1):
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Dense(n_in, hidden, rng=rng, dtype=dtype), nn.Sigmoid(),
                         nn.Dense(hidden, n_out, rng=rng, dtype=dtype), nn.Sigmoid())


def lecture_data(dtype, n=95, n_in=30, n_out=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, (n, n_in)).astype(dtype)
    Y = np.eye(n_out, dtype=dtype)[rng.randint(0, n_out, n)]
    return X, Y


def train_loop(use_jit, dtype=np.float64, make_opt=None, epochs=3, batch=20,
               zero_every=1, l2=0.01):
    """The lecture's loop: loss = cost(model(x), y) + l2_penalty; zero_grad (every
    `zero_every` steps: accumulation between), backward, step. A short last batch (95 rows).
    Returns (losses, weights, grads, the step function)."""
    model = lecture_net(dtype)
    cost = nn.BinaryCrossEntropy()
    opt = (make_opt or (lambda p: optim.SGD(p, lr=0.05, momentum=0.9)))(model.parameters())

    def loss_of(x, y):
        return cost(model(x), y) + nn.l2_penalty(model, l2)

    step = jit(loss_of) if use_jit else loss_of
    X, Y = lecture_data(dtype)
    losses, k = [], 0
    for _ in range(epochs):
        for start in range(0, len(X), batch):
            loss = step(Tensor(X[start:start + batch]), Tensor(Y[start:start + batch]))
            if k % zero_every == 0:
                opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            k += 1
    return (losses, [p.data.copy() for p in model.parameters()],
            [p.grad.copy() for p in model.parameters()], step)


def assert_same(a, b):
    losses_a, weights_a, grads_a = a[:3]
    losses_b, weights_b, grads_b = b[:3]
    assert losses_a == losses_b
    for x, y in zip(weights_a + grads_a, weights_b + grads_b):
        assert x.dtype == y.dtype and np.array_equal(x, y)


@pytest.fixture(autouse=True)
def no_fallback_warnings():
    """A test that expects a fallback says so with pytest.warns; any other is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", JitFallbackWarning)
        yield


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make_opt", [lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
                                      lambda p: optim.Adam(p, lr=0.01)],
                         ids=["sgd-momentum", "adam"])
def test_lecture_loop_under_jit_is_bit_identical(dtype, make_opt):
    eager = train_loop(False, dtype, make_opt)
    compiled = train_loop(True, dtype, make_opt)
    assert_same(eager, compiled)
    step = compiled[3]
    # 5 batches an epoch (the last of 15 rows): full batches record twice, the short one
    # twice (epochs 1 and 2); everything else replays
    assert step.stats == {"recorded": 4, "replayed": 11, "eager": 0}
    assert not np.array_equal(eager[1][0], lecture_net(dtype).parameters()[0].data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_accumulation_without_zero_grad_is_bit_identical(dtype):
    """The Dense weights get two gradients per step (dense backward and l2_penalty): they are
    summed into .grad one at a time, ((old + g1) + g2), as the engine does."""
    eager = train_loop(False, dtype, zero_every=3, epochs=4)
    compiled = train_loop(True, dtype, zero_every=3, epochs=4)
    assert_same(eager, compiled)
    assert compiled[3].stats["replayed"] > 10


def test_a_leaf_gradient_is_summed_in_the_engines_order():
    """old + g1 + g2 in float32 differs from old + (g1 + g2) for these numbers: only the
    engine's order gives its bits."""
    w0 = np.array([1.0, 3.0], dtype=np.float32)
    old = np.array([1e8, 0.5], dtype=np.float32)

    def run(fn):
        w = Tensor(w0.copy(), requires_grad=True)
        f = fn(lambda x: (w * x).sum() + (w * 3.0).sum() * 1.0 + (w * w).sum())
        out = []
        for x in ([4.0, 5.0], [6.0, 7.0], [8.0, 9.0]):
            w.grad = old.copy()
            f(Tensor(np.array(x, dtype=np.float32))).backward()
            out.append(w.grad.copy())
        return out, f

    eager, _ = run(lambda f: f)
    compiled, f = run(jit)
    assert f.stats["replayed"] == 1
    for a, b in zip(eager, compiled):
        assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- the outputs


def small_model():
    rng = np.random.RandomState(4)
    return nn.Sequential(nn.Dense(3, 5, rng=rng, dtype=np.float64), nn.Tanh(),
                         nn.Dense(5, 2, rng=rng, dtype=np.float64))


def batches(n=5, rows=4, seed=5):
    rng = np.random.RandomState(seed)
    return [(rng.normal(size=(rows, 3)), rng.randint(0, 2, rows)) for _ in range(n)]


def test_returned_tensor_behaves_like_the_engines():
    """Tuple outputs used in further eager ops (a seed that is not 1), retain_graph, and a
    second backward raising as without jit."""
    def run(wrap):
        model, loss_fn = small_model(), nn.CrossEntropy()
        f = wrap(lambda x, y: (model(x), loss_fn(model(x), y)))
        grads = []
        for x, y in batches():
            out, loss = f(Tensor(x), y)
            assert loss.requires_grad and out.requires_grad and loss.op is not None
            total = loss * 3.0 + (out * out).sum() * 0.5
            total.backward(retain_graph=True)
            loss.backward()  # the graph was kept: a second backward through it works
            with pytest.raises(RuntimeError, match="second time"):
                loss.backward()
            grads.append([p.grad.copy() for p in model.parameters()] + [loss.item(),
                                                                       out.data.copy()])
            model.zero_grad()
        return grads, f

    results = {"eager": run(lambda f: f), "jit": run(jit)}
    assert results["jit"][1].stats["replayed"] == 3
    for a, b in zip(results["eager"][0], results["jit"][0]):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)


def test_backward_of_a_non_scalar_output_needs_a_grad_like_the_engine():
    model = small_model()
    f = jit(lambda x: model(x))
    for x, _ in batches(3):
        out = f(Tensor(x))
    assert f.stats["replayed"] == 1
    with pytest.raises(ValueError, match="grad can be implied only"):
        out.backward()
    seed = np.arange(8.0).reshape(4, 2)
    out.backward(seed)
    got = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model(Tensor(batches(3)[-1][0])).backward(seed)
    for a, p in zip(got, model.parameters()):
        assert np.array_equal(a, p.grad)


def test_no_grad_calls_are_compiled_on_their_own_and_build_no_graph():
    model = small_model()
    f = jit(lambda x: model(x).tanh())
    for x, _ in batches():
        with no_grad():
            out = f(Tensor(x))
        assert not out.requires_grad
        assert np.array_equal(out.data, model(Tensor(x)).tanh().data)
        out_grad = f(Tensor(x))  # grad mode on: another signature
        assert out_grad.requires_grad
    assert f.stats == {"recorded": 4, "replayed": 6, "eager": 0}


def test_source_is_the_generated_code_once_a_replay_exists():
    model = small_model()
    f = jit(lambda x, y: nn.CrossEntropy()(model(x), y))
    assert f.source is None and isinstance(f, Jit)
    for x, y in batches(2):
        f(Tensor(x), y)
    assert "def run(" in f.source and "# dense" in f.source and "# tanh" in f.source
    assert "def backward(" in f.source and "leaf_grad(" in f.source


# ----------------------------------------------------------------------------- weights change


def test_weights_changed_in_place_by_load_state_dict_and_by_assignment_are_seen():
    model = small_model()
    f = jit(lambda x: model(x).sum())
    data = batches(8)
    for i, (x, _) in enumerate(data):
        if i == 3:
            model.parameters()[0].data *= 2.0  # in place
        if i == 4:
            state = {k: v + 1.0 for k, v in model.state_dict().items()}
            model.load_state_dict(state)
        if i == 5:
            model.parameters()[2].data = model.parameters()[2].data - 0.5  # a new array
        got = f(Tensor(x))
        assert got.item() == model(Tensor(x)).sum().item()
    assert f.stats["replayed"] == 6


def test_freezing_a_weight_and_a_new_shape_record_anew():
    model = small_model()
    f = jit(lambda x: model(x).sum())
    w = model.parameters()[0]
    for i, (x, _) in enumerate(batches(6)):
        if i == 3:
            w.requires_grad = False
            w.grad = None
        if i == 5:
            model.layers[2].bias.data = np.zeros((2,), dtype=np.float32)  # another dtype
        f(Tensor(x)).backward()
        if i >= 3:
            assert w.grad is None
    assert f.stats == {"recorded": 5, "replayed": 1, "eager": 0}


def test_a_module_switched_to_eval_mode_records_anew():
    model = small_model()
    f = jit(lambda x: model(x).sum())
    for i, (x, _) in enumerate(batches(6)):
        if i == 3:
            model.training = False  # (Module.eval() once the layers have modes)
        f(Tensor(x))
    assert f.stats == {"recorded": 4, "replayed": 2, "eager": 0}


# ----------------------------------------------------------------------------- side effects


class NoisyScale(Function):
    """x * (a fresh draw from the rng passed as a parameter): a side effect in forward."""

    @staticmethod
    def forward(ctx, x, rng):
        ctx.scale = rng.uniform(0.5, 1.5, x.shape)
        return x * ctx.scale

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale


class RunningMean(Function):
    """Identity that updates a buffer in place with the batch mean (a BatchNorm-like op)."""

    @staticmethod
    def forward(ctx, x, buffer):
        buffer *= 0.9
        buffer += 0.1 * x.mean(axis=0)
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return g, None


def test_ops_with_side_effects_run_their_forward_on_every_call():
    def run(wrap):
        model = small_model()
        rng = np.random.RandomState(7)
        running = Tensor(np.zeros(5))

        def fn(x):
            h = model.layers[1](model.layers[0](x))
            h = RunningMean.apply(h, running)
            return NoisyScale.apply(h, rng=rng).sum()

        f = wrap(fn)
        outs = [f(Tensor(x)).item() for x, _ in batches(6)]
        return outs, running.data.copy(), f

    results = [run(lambda f: f), run(jit)]
    assert results[1][2].stats["replayed"] == 4
    assert results[0][0] == results[1][0]
    assert np.array_equal(results[0][1], results[1][1])


# ----------------------------------------------------------------------------- fallbacks


def test_a_branch_on_the_data_falls_back_warns_once_and_stays_correct():
    model = small_model()

    def branchy(x):
        out = model(x)
        if x.data.sum() > 0:  # a branch on a value jit cannot see, but the ops differ
            return out.tanh().sum()
        return out.sum()

    f = jit(branchy)
    xs = [x * (1 if i % 2 else -1) for i, (x, _) in enumerate(batches(10, rows=40))]
    with pytest.warns(JitFallbackWarning, match="ops differ") as caught:
        for x in xs:
            assert f(Tensor(x)).item() == branchy(Tensor(x)).item()
    assert len(caught) == 1
    assert f.stats["replayed"] == 0 and f.stats["eager"] > 0


def test_a_constant_computed_from_the_data_falls_back():
    model = small_model()

    def normalised(x):
        return (model(x) * float(1.0 / np.std(x.data))).sum()

    f = jit(normalised)
    with pytest.warns(JitFallbackWarning, match="constant differs") as caught:
        for x, _ in batches(6):
            assert f(Tensor(x)).item() == normalised(Tensor(x)).item()
    assert len(caught) == 1 and f.stats["replayed"] == 0


def test_reading_a_value_inside_the_function_falls_back():
    model = small_model()

    def reads(x):
        out = model(x).sum()
        return out * 2.0 if out.item() > 0 else out

    f = jit(reads)
    with pytest.warns(JitFallbackWarning, match="reads the value") as caught:
        for x, _ in batches(4):
            assert f(Tensor(x)).item() == reads(Tensor(x)).item()
    assert len(caught) == 1 and f.stats["replayed"] == 0


def test_detect_anomaly_runs_on_the_engine_and_names_the_op():
    f = jit(lambda x: x.log().sum())
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    f(x)
    f(x)
    with pytest.warns(JitFallbackWarning, match="detect_anomaly"):
        with detect_anomaly(), np.errstate(divide="ignore", invalid="ignore"):
            with pytest.raises(FloatingPointError, match="log"):
                f(Tensor(np.array([-1.0, 2.0])))
    assert f.stats["replayed"] == 0


def test_an_input_made_by_ops_outside_falls_back_with_the_right_gradient():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    f = jit(lambda h: (h * h).sum())
    with pytest.warns(JitFallbackWarning, match="made by ops outside"):
        for _ in range(3):
            f(w * 3.0).backward()
    assert np.array_equal(w.grad, 3 * (2 * 3.0 * w.data * 3.0))


# ----------------------------------------------------------------------------- threads


def test_threads_calling_one_jit_function_get_their_own_numbers():
    models = [small_model() for _ in range(3)]
    f = jit(lambda m, x: m(x).sum())  # the module is a value argument: one signature each
    expected = {}
    for i, m in enumerate(models):
        expected[i] = [m(Tensor(x)).sum().item() for x, _ in batches(40, seed=i)]
    got, errors = {}, []

    def worker(i):
        try:
            got[i] = [f(models[i], Tensor(x)).item() for x, _ in batches(40, seed=i)]
            if i == 2:
                with no_grad():  # a thread without grad mode beside the others
                    assert not f(models[i], Tensor(batches(1)[0][0])).requires_grad
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert got == expected
    assert f.stats["replayed"] >= 3 * 30


# ----------------------------------------------------------------------------- fit


@pytest.fixture
def fit_jits(monkeypatch):
    """Every Jit that train.fit makes during the test (their stats show what ran)."""
    from tinygrad_mlp import train

    made = []

    def recording_jit(fn):
        made.append(jit(fn))
        return made[-1]

    monkeypatch.setattr(train, "jit", recording_jit)
    return made


def replayed_steps(jits):
    return sum(j.stats["replayed"] for j in jits)


def blobs(n=230, n_in=5, n_classes=3, seed=1, dtype=np.float64):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, n_classes, n)
    centers = rng.normal(0.0, 2.0, (n_classes, n_in))
    return (centers[y] + rng.normal(size=(n, n_in))).astype(dtype), y


def small_net(act=nn.Tanh, n_in=5, hidden=12, n_out=3, dtype=np.float64, seed=2):
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Dense(n_in, hidden, init_std="he", rng=rng, dtype=dtype), act(),
                         nn.Dense(hidden, n_out, init_std="he", rng=rng, dtype=dtype))


def fit_both(fit_jits, make_model, make_loss, make_opt, X, y, **kwargs):
    """fit with replay=True (jit) and replay=False; asserts the same numbers, bit for bit;
    returns (models, histories, replayed steps)."""
    from tinygrad_mlp import train

    runs = []
    for replay_on in (True, False):
        model = make_model()
        kwargs.setdefault("seed", 3)
        hist = train.fit(model, make_loss(), make_opt(model.parameters()), X, y,
                         replay=replay_on, progress=False, **kwargs)
        runs.append((model, hist))
    (a, ha), (b, hb) = runs
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert pa.dtype == pb.dtype and np.array_equal(pa.data, pb.data), name
    assert ha.cost == hb.cost and ha.train_acc == hb.train_acc
    assert ha.valid_acc == hb.valid_acc
    assert not np.array_equal(a.parameters()[0].data, make_model().parameters()[0].data)
    return (a, b), (ha, hb), replayed_steps(fit_jits)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eval_train", [False, True])
def test_fit_lecture_net_is_bit_identical_and_replays(fit_jits, dtype, eval_train):
    X, Y = lecture_data(dtype, n=200)
    y = Y.argmax(axis=1)
    Xv, Yv = lecture_data(dtype, n=40, seed=5)
    *_, replayed = fit_both(fit_jits, lambda: lecture_net(dtype),
                            lambda: nn.BinaryCrossEntropy("sum"),
                            lambda ps: optim.SGD(ps, lr=0.01), X, y, epochs=3, batch_size=50,
                            l2=0.01, eval_train=eval_train, X_valid=Xv, y_valid=Yv.argmax(1))
    assert replayed == 3 * 4 - 2  # all but the two recorded steps


@pytest.mark.parametrize("case", ["adam-one-cycle", "momentum-f32", "mse-sum", "shared-layer",
                                  "custom-module", "plain-function-loss"])
def test_fit_models_and_losses_are_bit_identical_and_replay(fit_jits, case):
    X, y = blobs()
    make_model, make_loss = small_net, nn.CrossEntropy
    make_opt = lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9)  # noqa: E731
    kwargs = {"epochs": 2, "batch_size": 20}
    if case == "adam-one-cycle":
        make_opt = lambda ps: optim.Adam(ps, lr=0.01)  # noqa: E731
        kwargs.update(schedule=lambda step: optim.one_cycle(step, 22, 0.05), l2=1e-3,
                      eval_train=False)
    elif case == "momentum-f32":
        X = X.astype(np.float32)
        make_model = lambda: small_net(dtype=np.float32)  # noqa: E731
    elif case == "mse-sum":
        y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
        make_model = lambda: small_net(n_out=2)  # noqa: E731
        make_loss = lambda: nn.MSE("sum")  # noqa: E731
    elif case == "shared-layer":
        def make_model():
            rng = np.random.RandomState(5)
            first = nn.Dense(5, 6, rng=rng, dtype=np.float64)
            square = nn.Dense(6, 3, rng=rng, dtype=np.float64)
            back = nn.Dense(3, 6, rng=rng, dtype=np.float64)
            return nn.Sequential(first, nn.Tanh(), square, nn.Tanh(), back, nn.Tanh(), square)
        kwargs["l2"] = 0.01
    elif case == "custom-module":
        class TwoLayer(nn.Module):
            def __init__(self):
                rng = np.random.RandomState(2)
                self.first = nn.Dense(5, 12, init_std="he", rng=rng, dtype=np.float64)
                self.second = nn.Dense(12, 3, init_std="he", rng=rng, dtype=np.float64)

            def forward(self, x):
                return self.second(self.first(x).tanh() * 0.5)
        make_model = TwoLayer
    else:
        cross_entropy = nn.CrossEntropy()
        make_loss = lambda: lambda out, t: cross_entropy(out, t)  # noqa: E731
    *_, replayed = fit_both(fit_jits, make_model, make_loss, make_opt, X, y, **kwargs)
    assert replayed == 2 * (len(X) // 20) - 2


class BatchScaled(nn.Module):
    """Multiplies by a number computed from the batch's values: a data-dependent constant."""

    def __init__(self):
        self.dense = nn.Dense(5, 3, rng=np.random.RandomState(0), dtype=np.float64)

    def forward(self, x):
        return self.dense(x) * (1.0 / float(np.std(np.asarray(x))))


class BatchMask(nn.Module):
    """Multiplies by a mask computed from the batch outside the ops."""

    def __init__(self):
        self.dense = nn.Dense(5, 3, rng=np.random.RandomState(0), dtype=np.float64)

    def forward(self, x):
        return self.dense(x * (np.asarray(x) > 0))


@pytest.mark.parametrize("case", ["batch-scaled", "batch-mask", "one-hot-cross-entropy",
                                  "float64-targets-float32-model"])
def test_fit_data_dependent_steps_fall_back_warn_once_and_match(fit_jits, case):
    X, y = blobs()
    make_model, targets = small_net, y
    if case == "batch-scaled":
        make_model = BatchScaled
    elif case == "batch-mask":
        make_model = BatchMask
    elif case == "one-hot-cross-entropy":
        targets = np.eye(3)[y]
    else:
        X = X.astype(np.float32)
        make_model = lambda: small_net(dtype=np.float32)  # noqa: E731
        targets = np.eye(3)[y]  # float64, converted by MSE to the output's dtype
    loss = nn.MSE if case.startswith("float64") else nn.CrossEntropy
    with pytest.warns(JitFallbackWarning) as caught:
        *_, replayed = fit_both(fit_jits, make_model, loss,
                                lambda ps: optim.SGD(ps, lr=0.05), X, targets, epochs=2,
                                batch_size=20)
    assert replayed == 0 and len(caught) == 1


def test_fit_under_detect_anomaly_runs_on_the_engine(fit_jits):
    X, y = blobs(n=100)
    with detect_anomaly(), pytest.warns(JitFallbackWarning, match="detect_anomaly"):
        *_, replayed = fit_both(fit_jits, small_net, nn.CrossEntropy,
                                lambda ps: optim.SGD(ps, lr=0.05), X, y, epochs=2,
                                batch_size=20)
    assert replayed == 0


def test_fit_sees_load_state_dict_freezing_and_new_arrays_between_steps(fit_jits):
    from tinygrad_mlp import train

    X, y = blobs()
    other = small_net(seed=9).state_dict()
    runs = []
    for replay_on in (True, False):
        model = small_net()

        def on_epoch_end(epoch, history, model=model):
            if epoch == 1:
                model.load_state_dict(other)
            if epoch == 2:
                model[0].weight.requires_grad = False
                model[0].weight.grad = None

        def schedule(step, model=model):
            if step == 3:
                model[2].weight.data = model[2].weight.data * 0.5
            return 0.05

        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        hist = train.fit(model, nn.CrossEntropy(), opt, X, y, epochs=4, batch_size=20,
                         seed=3, progress=False, replay=replay_on, l2=0.01,
                         schedule=schedule, on_epoch_end=on_epoch_end)
        runs.append((model, hist, model[0].weight.data.copy()))
    assert replayed_steps(fit_jits) == 4 * 11 - 4  # recorded twice, again after freezing
    (a, ha, _), (b, hb, _) = runs
    assert ha.cost == hb.cost
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert np.array_equal(pa.data, pb.data)
    assert a[0].weight.grad is None and a[0].weight.requires_grad is False


class HiddenGain(nn.Module):
    """A parameter in a dict, where parameters() does not look: jit still reads it."""

    def __init__(self):
        self.dense = nn.Dense(5, 3, rng=np.random.RandomState(0), dtype=np.float64)
        self.extra = {"gain": Tensor(np.array(1.5), requires_grad=True)}

    def forward(self, x):
        return self.dense(x) * self.extra["gain"]


def test_fit_a_captured_parameter_outside_the_modules_gets_its_gradient(fit_jits):
    X, y = blobs()
    *_, replayed = fit_both(fit_jits, HiddenGain, nn.CrossEntropy,
                            lambda ps: optim.SGD(ps, lr=0.05), X, y, epochs=2, batch_size=20)
    assert replayed == 20


@pytest.mark.parametrize("nan_epoch", [1, 2])
def test_fit_nan_in_a_replayed_step_stops_before_updating(fit_jits, nan_epoch):
    from tinygrad_mlp import train

    X0, Y = lecture_data(np.float64, n=60)
    y = Y.argmax(axis=1)
    outcomes = []
    for replay_on in (True, False):
        X = X0.copy()
        if nan_epoch == 1:
            X[35, 4] = np.nan

        def on_epoch_end(epoch, history, X=X):
            if epoch == 1:
                X[35, 4] = np.nan

        model = lecture_net(np.float64)
        opt = optim.SGD(model.parameters(), lr=0.01)
        with pytest.raises(train.NonFiniteError) as err, np.errstate(invalid="ignore"):
            train.fit(model, nn.BinaryCrossEntropy(), opt, X, y, epochs=3, batch_size=10,
                      shuffle=False, l2=0.01, progress=False, replay=replay_on,
                      on_epoch_end=on_epoch_end)
        outcomes.append((str(err.value), model.state_dict()))
    (msg_fast, state_fast), (msg_slow, state_slow) = outcomes
    assert f"the loss became nan at epoch {nan_epoch}, batch 3 (rows 30, 31, 32, 33" in msg_fast
    assert msg_fast == msg_slow
    assert replayed_steps(fit_jits) == 6 * (nan_epoch - 1) + 4 - 2
    for name in state_fast:
        assert np.array_equal(state_fast[name], state_slow[name]), name


def test_a_replayed_call_keeps_nothing_after_backward():
    import gc
    import weakref

    model = lecture_net(np.float64)
    cost = nn.BinaryCrossEntropy()
    f = jit(lambda x, y: cost(model(x), y))
    X, Y = lecture_data(np.float64, n=80)
    refs = []
    for start in range(0, 80, 20):
        xb, yb = Tensor(X[start:start + 20].copy()), Tensor(Y[start:start + 20])
        loss = f(xb, yb)
        refs.append((weakref.ref(xb.data), weakref.ref(loss)))
        loss.backward()
        del xb, yb, loss
    gc.collect()
    assert f.stats["replayed"] == 2
    assert all(a() is None and b() is None for a, b in refs)


def test_a_wrong_width_in_a_replayed_call_raises_the_engines_error():
    model = lecture_net(np.float64)
    f = jit(lambda x: model(x).sum())
    X, _ = lecture_data(np.float64, n=40)
    f(Tensor(X[:20]))
    f(Tensor(X[20:]))
    with pytest.raises(ValueError) as engine_error:
        model(Tensor(X[:, :29]))
    with pytest.raises(ValueError) as jit_error:
        f(Tensor(X[:, :29]))
    assert str(jit_error.value) == str(engine_error.value)


def test_gradient_arrays_the_user_holds_are_never_written():
    """The compiled backward adds a leaf's later gradients in place only into an array it
    made itself in that backward: a .grad the user kept (no zero_grad) stays as it was."""
    model = lecture_net(np.float64)
    f = jit(lambda x, y: nn.BinaryCrossEntropy()(model(x), y) + nn.l2_penalty(model, 0.1))
    X, Y = lecture_data(np.float64, n=100)
    kept = []
    for start in range(0, 100, 20):
        f(Tensor(X[start:start + 20]), Tensor(Y[start:start + 20])).backward()
        w = model.parameters()[0]
        kept.append((w.grad, w.grad.copy()))
        if start == 40:
            model.zero_grad()
    assert f.stats["replayed"] == 3
    for held, value in kept:
        assert np.array_equal(held, value)
    assert len({id(g) for g, _ in kept}) == len(kept)  # a new array each step


def test_dropout_and_batchnorm_with_train_eval_switches_are_bit_identical():
    """Dropout draws its mask and BatchNorm1d updates its running statistics inside their
    ops' forward, so every replayed call does both; eval() calls are compiled on their own
    (the modules' .training is part of the recording)."""
    def run(wrap):
        rng = np.random.RandomState(0)
        model = nn.Sequential(nn.Dense(6, 8, rng=rng, dtype=np.float64),
                              nn.BatchNorm1d(8, dtype=np.float64), nn.ReLU(),
                              nn.Dropout(0.3, seed=1), nn.Dense(8, 3, rng=rng, dtype=np.float64))
        opt = optim.Adam(model.parameters(), lr=0.01)
        step = wrap(lambda x, y: nn.CrossEntropy()(model(x), y))
        X, y = blobs(n=200, n_in=6)
        losses = []
        for _ in range(3):
            model.train()
            for i in range(0, 200, 25):
                loss = step(Tensor(X[i:i + 25]), y[i:i + 25])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            model.eval()
            losses.append(step(Tensor(X[:25]), y[:25]).item())
        state = [a.copy() for a in model.state_dict().values()]
        return losses, state, step

    eager, compiled = run(lambda f: f), run(jit)
    assert eager[0] == compiled[0]
    assert all(np.array_equal(a, b) for a, b in zip(eager[1], compiled[1]))
    assert compiled[2].stats == {"recorded": 4, "replayed": 23, "eager": 0}
