"""train: fit's History and progress output, predict/accuracy under no_grad, real learning."""

import builtins
import sys

import numpy as np
import pytest

from tinygrad_mlp import Tensor, is_grad_enabled, nn, optim, train


def small_model(seed=0, n_in=2, hidden=8, n_out=2, act=nn.Tanh, head=()):
    rng = np.random.RandomState(seed)
    return nn.Sequential(nn.Dense(n_in, hidden, init_std=1.0, rng=rng, dtype=np.float64),
                         act(), nn.Dense(hidden, n_out, init_std=1.0, rng=rng,
                                         dtype=np.float64), *head)


def blobs(n=120, seed=0):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, n)
    centers = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    return centers[y] + 0.5 * rng.normal(size=(n, 2)), y


def moons(n, noise=0.1, seed=0):
    """Two interleaved half circles (class 0 above, class 1 below), standardized."""
    rng = np.random.RandomState(seed)
    half = n // 2
    t0, t1 = rng.uniform(0, np.pi, half), rng.uniform(0, np.pi, n - half)
    upper = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    lower = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    X = np.concatenate([upper, lower]) + noise * rng.normal(size=(n, 2))
    y = np.concatenate([np.zeros(half, np.int64), np.ones(n - half, np.int64)])
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    order = rng.permutation(n)
    return X[order], y[order]


def fit_blobs(epochs=3, progress=False, **kwargs):
    X, y = blobs()
    model = small_model(n_out=3)
    history = train.fit(model, nn.CrossEntropy(), optim.Adam(model.parameters(), lr=0.05),
                        X, y, epochs=epochs, batch_size=16, seed=0, progress=progress,
                        **kwargs)
    return model, history, X, y


# ----------------------------------------------------------------------------- History


def test_history_has_one_entry_per_epoch():
    X_valid, y_valid = blobs(40, seed=1)
    model, history, X, y = fit_blobs(epochs=4, X_valid=X_valid, y_valid=y_valid)
    assert len(history) == len(history.cost) == len(history.train_acc) == 4
    assert len(history.valid_acc) == len(history.time) == 4
    accs = history.train_acc + history.valid_acc
    assert all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in accs)
    assert history.train_acc[-1] == train.accuracy(model, X, y)  # scored after the epoch
    assert history.valid_acc[-1] == train.accuracy(model, X_valid, y_valid)
    _, without_valid, _, _ = fit_blobs(epochs=2)
    assert without_valid.valid_acc == [] and len(without_valid.cost) == 2
    _, none, _, _ = fit_blobs(epochs=0)
    assert len(none) == 0


def test_history_cost_includes_the_l2_penalty():
    X, y = blobs()
    model = small_model(n_out=3, head=(nn.Sigmoid(),))
    loss_fn = nn.BinaryCrossEntropy()
    history = train.fit(model, loss_fn, optim.SGD(model.parameters(), lr=0.01), X, y,
                        epochs=2, batch_size=20, seed=0, l2=0.5, progress=False)
    expected = float(loss_fn(model(Tensor(X)), y).data) + float(nn.l2_penalty(model, 0.5).data)
    assert history.cost[-1] == pytest.approx(expected, rel=1e-10)


def test_history_save_and_load_round_trip(tmp_path):
    _, history, _, _ = fit_blobs(epochs=2)
    history.save(tmp_path / "h.json")
    again = train.History.load(tmp_path / "h.json")
    assert again.as_dict() == history.as_dict()


# ----------------------------------------------------------------------------- progress


def test_progress_off_writes_nothing(capsys):
    fit_blobs(epochs=2, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_uses_tqdm_when_installed(capsys):
    pytest.importorskip("tqdm", reason="tqdm is not installed: its progress bar cannot run")
    fit_blobs(epochs=3, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "cost" in err


def test_progress_falls_back_to_plain_lines_without_tqdm(capsys, monkeypatch):
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm" or name.startswith("tqdm."):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    for name in [m for m in sys.modules if m == "tqdm" or m.startswith("tqdm.")]:
        monkeypatch.delitem(sys.modules, name)
    fit_blobs(epochs=3, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" |")[0] for line in lines] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert all("cost" in line and "train" in line for line in lines)


# ----------------------------------------------------------------------------- predict


class Recorder(nn.Module):
    """Wraps a model; records each call's batch size, grad mode and output."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def forward(self, x):
        out = self.inner(x)
        self.calls.append((x.shape[0], is_grad_enabled(), out))
        return out


def test_predict_runs_in_batches_without_building_a_graph():
    X, _ = blobs(23)
    model = Recorder(small_model(n_out=3))
    labels = train.predict(model, X, batch_size=10)
    assert [n for n, _, _ in model.calls] == [10, 10, 3]
    assert not any(grad for _, grad, _ in model.calls)
    assert all(out._ctx is None and not out.requires_grad for _, _, out in model.calls)
    assert labels.dtype == np.int64 and labels.shape == (23,)
    np.testing.assert_array_equal(labels, model.inner(Tensor(X)).data.argmax(axis=1))
    assert is_grad_enabled()  # restored afterwards


def test_predict_defaults_to_smaller_batches_for_a_model_with_a_convolution(monkeypatch):
    """None: EVAL_ROWS rows a batch, EVAL_ROWS_CONV when the model holds a Conv2d (its
    im2col would hold kh kw times a batch's images); the labels do not depend on it."""
    monkeypatch.setattr(train, "EVAL_ROWS", 7)
    monkeypatch.setattr(train, "EVAL_ROWS_CONV", 3)
    X, _ = blobs(10)
    mlp = Recorder(small_model(n_out=3))
    train.predict(mlp, X)
    assert [n for n, _, _ in mlp.calls] == [7, 3]
    rng = np.random.RandomState(0)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng), nn.ReLU(), nn.Flatten(),
                        nn.Dense(2 * 3 * 3, 3, rng=rng))
    images = rng.normal(size=(8, 1, 5, 5))
    cnn_calls = Recorder(cnn)
    labels = train.predict(cnn_calls, images)
    assert [n for n, _, _ in cnn_calls.calls] == [3, 3, 2]
    np.testing.assert_array_equal(labels, train.predict(cnn, images, batch_size=8))
    assert train.accuracy(cnn, images, labels) == 1.0
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        train.predict(cnn, images, batch_size=0)


def test_predict_takes_the_argmax_before_a_final_sigmoid():
    model = nn.Sequential(nn.Dense(1, 2, dtype=np.float64), nn.Sigmoid())
    model[0].weight.data[:] = [[40.0, 50.0]]
    X = np.ones((1, 1))
    assert np.all(model(Tensor(X)).data == 1.0)  # both outputs saturate to exactly 1
    assert train.predict(model, X).tolist() == [1]


def test_accuracy_is_the_fraction_of_correct_predictions():
    X, y = blobs(50)
    model = small_model(n_out=3)
    pred = train.predict(model, X)
    assert train.accuracy(model, X, y) == np.mean(pred == y)
    assert train.accuracy(model, X, np.eye(3)[y]) == np.mean(pred == y)  # one-hot targets
    assert train.accuracy(model, X, pred) == 1.0
    with pytest.raises(ValueError, match="rows"):
        train.accuracy(model, X, y[:-1])


# ----------------------------------------------------------------------------- learning


def test_a_two_layer_net_learns_xor():
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    model = small_model(seed=1, hidden=8, n_out=2)
    history = train.fit(model, nn.CrossEntropy(), optim.Adam(model.parameters(), lr=0.05),
                        X, y, epochs=300, batch_size=4, seed=0, progress=False)
    assert history.train_acc[0] < 1.0
    assert train.accuracy(model, X, y) == 1.0
    assert history.cost[-1] < 0.05


def test_the_lecture_style_net_learns_xor():
    """Sigmoid hidden and output layers, summed logistic cost, plain SGD."""
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    model = small_model(seed=2, hidden=6, n_out=2, act=nn.Sigmoid, head=(nn.Sigmoid(),))
    train.fit(model, nn.BinaryCrossEntropy(), optim.SGD(model.parameters(), lr=2.0,
                                                         momentum=0.5),
              X, y, epochs=1000, batch_size=4, seed=0, progress=False)
    assert train.accuracy(model, X, y) == 1.0


def test_a_two_layer_net_separates_two_moons():
    X, y = moons(1000, seed=0)
    X_test, y_test = moons(1000, seed=1)
    model = small_model(seed=0, hidden=32, n_out=2, act=nn.Tanh)
    history = train.fit(model, nn.CrossEntropy(), optim.Adam(model.parameters(), lr=0.02),
                        X, y, epochs=25, batch_size=50, seed=0, progress=False,
                        X_valid=X_test, y_valid=y_test)
    assert history.train_acc[-1] > 0.97
    assert history.valid_acc[-1] > 0.97
    assert history.train_acc[0] < history.train_acc[-1]
