"""tinygrad_mlp.data: IDX read/write, bad files, load_mnist, downloads, one_hot.

Everything runs on small files the tests write; downloads go to an HTTP server on
127.0.0.1 started here. Real MNIST is read only through $TINYGRAD_MLP_DATA.
"""

import gzip
import hashlib
import http.server
import os
import struct
import threading

import numpy as np
import pytest

from tinygrad_mlp import data
from tinygrad_mlp.data import IDXFormatError

DTYPES = {  # dtype -> IDX type code
    np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
    np.float32: 0x0D, np.float64: 0x0E,
}


def sample(dtype, shape, seed=0):
    rng = np.random.RandomState(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        a = rng.standard_normal(shape).astype(dtype)
        if a.size >= 3:  # extremes survive the trip
            a.flat[:3] = [np.finfo(dtype).max, np.finfo(dtype).tiny, -0.0]
        return a
    info = np.iinfo(dtype)
    a = rng.randint(info.min, int(info.max) + 1, size=shape, dtype=np.int64).astype(dtype)
    if a.size >= 2:
        a.flat[:2] = [info.min, info.max]
    return a


def idx_bytes(code, shape, payload):
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def write_raw(path, raw, gz):
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if gz else raw)
    return str(path)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype(tmp_path, dtype, gz):
    for shape in [(7,), (3, 5), (2, 3, 4), (0,), (2, 0, 3)]:
        a = sample(dtype, shape)
        path = str(tmp_path / ("a.idx.gz" if gz else "a.idx"))
        assert data.write_idx(path, a) == path
        with open(path, "rb") as f:
            head = f.read(2)
        assert (head == b"\x1f\x8b") == gz
        b = data.read_idx(path)
        assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == shape
        np.testing.assert_array_equal(a, b)
        assert b.flags.writeable and b.flags.c_contiguous


def test_written_bytes_follow_the_format(tmp_path):
    a = np.array([[1, -2, 3], [256, 0, -32768]], dtype=np.int16)
    path = data.write_idx(str(tmp_path / "s.idx"), a)
    with open(path, "rb") as f:
        raw = f.read()
    assert raw == idx_bytes(0x0B, (2, 3), a.astype(">i2").tobytes())
    # gzip is chosen by the name on writing, recognised by the content on reading
    data.write_idx(str(tmp_path / "g"), a, compress=True)
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / "g")), a)
    data.write_idx(str(tmp_path / "p.gz"), a, compress=False)
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / "p.gz")), a)
    # byte order and layout of the input do not matter
    swapped = np.asfortranarray(a.astype(">i2"))
    data.write_idx(str(tmp_path / "f.idx"), swapped)
    with open(str(tmp_path / "f.idx"), "rb") as f:
        assert f.read() == raw


def test_write_idx_refuses_what_idx_cannot_hold_and_leaves_nothing(tmp_path):
    for bad, word in [(np.zeros(3, np.int64), "int64"), (np.zeros(3, bool), "bool"),
                      (np.zeros(3, np.complex64), "complex64"), (np.float32(1.0), "shape ()"),
                      (np.zeros(3, np.uint16), "uint16")]:
        with pytest.raises(ValueError, match=word):
            data.write_idx(str(tmp_path / "x.idx"), bad)
    assert os.listdir(tmp_path) == []


def test_write_idx_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "keep.idx")
    data.write_idx(path, np.arange(4, dtype=np.uint8))

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        data.write_idx(path, np.arange(9, dtype=np.uint8))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["keep.idx"]  # no temporary file left
    np.testing.assert_array_equal(data.read_idx(path), np.arange(4))
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # as open() makes, not 0o600


# ----------------------------------------------------------------------------- bad files

GOOD = idx_bytes(0x08, (2, 3), bytes(range(6)))
BAD_FILES = {  # name -> (raw bytes, words the message must contain)
    "empty": (b"", ["truncated header", "0 bytes"]),
    "short header": (b"\x00\x00", ["truncated header", "2 bytes"]),
    "bad magic": (b"\x12\x34" + GOOD[2:], ["bad magic", "0x1234", "byte 0"]),
    "unknown type code": (GOOD[:2] + b"\x0a" + GOOD[3:], ["unknown type code 0x0A", "byte 2"]),
    "zero dimensions": (GOOD[:3] + b"\x00" + GOOD[4:], ["number of dimensions is 0"]),
    "truncated sizes": (GOOD[:9], ["truncated header", "2 dimensions"]),
    "truncated data": (GOOD[:-1], ["truncated", "(2, 3)", "6 data bytes", "5"]),
    "no data": (GOOD[:12], ["truncated", "6 data bytes"]),
    "over-long": (GOOD + b"\x07\x07", ["over-long", "2 more byte", "byte 18"]),
    "size disagrees": (idx_bytes(0x0C, (2, 3), bytes(6 * 3)), ["truncated", "24 data bytes"]),
    "size too small": (idx_bytes(0x0C, (2,), bytes(24)), ["over-long", "16 more byte"]),
    "huge claimed size": (idx_bytes(0x0E, (2 ** 32 - 1,) * 3, bytes(8)), ["truncated"]),
}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_idx_format_error_naming_file_and_problem(tmp_path, case, gz):
    raw, words = BAD_FILES[case]
    path = write_raw(tmp_path / f"bad-{case.replace(' ', '_')}.idx", raw, gz)
    with pytest.raises(IDXFormatError) as info:
        data.read_idx(path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert path in msg
    for word in words:
        assert word in msg, (word, msg)
    assert ("gzip" in msg) == gz  # says which kind of file it read
    if gz and "byte " in msg:
        assert "decompressed" in msg  # offsets count decompressed bytes


def gz_bytes(raw):
    return gzip.compress(raw, mtime=0)


GZIP_DAMAGE = {
    "cut in the middle": lambda z: z[: len(z) // 2],
    "cut before the trailer": lambda z: z[:-8],
    "crc flipped": lambda z: z[:-8] + bytes([z[-8] ^ 0xFF]) + z[-7:],
    "length field wrong": lambda z: z[:-4] + struct.pack("<I", 1),
    "deflate garbage": lambda z: z[:10] + b"\xff" * 20 + z[30:],
    "header flags garbage": lambda z: z[:3] + b"\xff" + z[4:],
    "trailing garbage": lambda z: z + b"garbage!",
}


@pytest.mark.parametrize("case", list(GZIP_DAMAGE))
def test_corrupt_gzip_streams_raise_idx_format_error(tmp_path, case):
    raw = idx_bytes(0x0D, (50, 4), np.arange(200, dtype=">f4").tobytes())
    path = str(tmp_path / "damaged.idx.gz")
    with open(path, "wb") as f:
        f.write(GZIP_DAMAGE[case](gz_bytes(raw)))
    with pytest.raises(IDXFormatError) as info:
        data.read_idx(path)
    assert path in str(info.value) and "gzip" in str(info.value)


def test_gz_name_with_plain_content_is_read_and_garbage_is_named(tmp_path):
    path = write_raw(tmp_path / "plain.gz", GOOD, gz=False)
    np.testing.assert_array_equal(data.read_idx(path), np.arange(6).reshape(2, 3))
    path = write_raw(tmp_path / "text.gz", b"hello world, not an IDX file", gz=False)
    with pytest.raises(IDXFormatError, match="not gzip either"):
        data.read_idx(path)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_idx(str(tmp_path / "nothing.idx"))


# ----------------------------------------------------------------------------- load_mnist


def fake_mnist(folder, n_train=30, n_test=12, gz=(True, False), seed=0):
    """The four MNIST files in `folder`: random images with pixel 0, 51, 255 in row 0."""
    rng = np.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for kind, n, zipped in (("train", n_train, gz[0]), ("test", n_test, gz[1])):
        images = rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)
        images[0, 0, :3] = [0, 51, 255]
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        ext = ".gz" if zipped else ""
        img_name, lab_name = data.FILES[kind]
        data.write_idx(os.path.join(folder, img_name + ext), images)
        data.write_idx(os.path.join(folder, lab_name + ext), labels)
        out[kind] = (images, labels)
    return out


def test_load_mnist_scales_shapes_and_types(tmp_path):
    truth = fake_mnist(str(tmp_path / "mnist"))
    for kind, n in (("train", 30), ("test", 12)):
        X, y = data.load_mnist(str(tmp_path / "mnist"), kind=kind, download=False)
        images, labels = truth[kind]
        assert X.shape == (n, 784) and X.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        np.testing.assert_array_equal(y, labels)
        expected = ((images.reshape(n, 784) / 255.0) - 0.5) * 2
        np.testing.assert_array_equal(X, expected.astype(np.float32))
        np.testing.assert_allclose(X[0, :3], [-1.0, -0.6, 1.0], rtol=1e-6)
    X64, _ = data.load_mnist(str(tmp_path / "mnist"), download=False, dtype=np.float64)
    assert X64.dtype == np.float64  # exactly the lecture's float64 arithmetic
    np.testing.assert_array_equal(X64, ((truth["train"][0].reshape(30, 784) / 255.) - .5) * 2)


def test_load_mnist_root_resolution(tmp_path, monkeypatch):
    fake_mnist(str(tmp_path / "parent" / "mnist"), n_train=20)
    fake_mnist(str(tmp_path / "parent" / "fashion-mnist"), n_train=10)
    fake_mnist(str(tmp_path / "home" / ".cache" / "tinygrad_mlp" / "mnist"), n_train=40)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TINYGRAD_MLP_DATA", raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    kw = dict(download=False)
    # the folder of the files, or its parent
    assert data.load_mnist(str(tmp_path / "parent" / "mnist"), **kw)[0].shape[0] == 20
    assert data.load_mnist(str(tmp_path / "parent"), **kw)[0].shape[0] == 20
    assert data.load_mnist(str(tmp_path / "parent"), dataset="fashion-mnist",
                           **kw)[0].shape[0] == 10
    # no root, no variable: the cache under $HOME
    assert data.load_mnist(**kw)[0].shape[0] == 40
    # the variable names the parent of mnist/
    monkeypatch.setenv("TINYGRAD_MLP_DATA", str(tmp_path / "parent"))
    assert data.load_mnist(**kw)[0].shape[0] == 20
    assert data.default_root("mnist") == str(tmp_path / "parent" / "mnist")
    # fashion-mnist: the variable first, then Debian's folder, then the cache
    assert data.load_mnist(dataset="fashion-mnist", **kw)[0].shape[0] == 10
    monkeypatch.setenv("TINYGRAD_MLP_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        data.load_mnist(dataset="fashion-mnist", **kw)
    fake_mnist(str(tmp_path / "debian"), n_train=15)
    assert data.load_mnist(dataset="fashion-mnist", **kw)[0].shape[0] == 15
    assert data.find_folder(dataset="fashion-mnist") == str(tmp_path / "debian")


def test_load_mnist_missing_files_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYGRAD_MLP_DATA", raising=False)
    where = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist(where, kind="test", download=False)
    msg = str(info.value)
    for word in (where, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "Put the mnist",
                 "TINYGRAD_MLP_DATA", "download=False"):
        assert word in msg, word


def test_load_mnist_rejects_files_that_are_not_mnist(tmp_path):
    folder = str(tmp_path / "m")
    fake_mnist(folder, n_train=10)
    img, lab = data.FILES["train"]
    data.write_idx(os.path.join(folder, lab + ".gz"), np.arange(9, dtype=np.uint8))
    with pytest.raises(ValueError, match="10 images but .* holds 9 labels"):
        data.load_mnist(folder, download=False)
    data.write_idx(os.path.join(folder, lab + ".gz"), np.full(10, 12, dtype=np.uint8))
    with pytest.raises(ValueError, match="label 12 is outside 0..9"):
        data.load_mnist(folder, download=False)
    data.write_idx(os.path.join(folder, img + ".gz"), np.zeros((10, 28, 27), np.uint8))
    with pytest.raises(ValueError, match=r"\(n, 28, 28\), got uint8 \(10, 28, 27\)"):
        data.load_mnist(folder, download=False)
    with open(os.path.join(folder, img + ".gz"), "wb") as f:
        f.write(b"\x1f\x8b broken")
    with pytest.raises(IDXFormatError, match="train-images"):
        data.load_mnist(folder, download=False)
    for bad in (dict(kind="valid"), dict(dataset="cifar"), dict(dtype=np.int32)):
        with pytest.raises(ValueError, match=str(list(bad.values())[0].__name__
                                                 if bad.get("dtype") else
                                                 list(bad.values())[0])):
            data.load_mnist(folder, download=False, **bad)


# ----------------------------------------------------------------------------- downloads


def fake_contents():
    """name -> uncompressed IDX bytes of a tiny fake MNIST (train and test)."""
    rng = np.random.RandomState(1)
    out = {}
    for n, (img, lab) in zip((20, 10), (data.FILES["train"], data.FILES["test"])):
        out[img] = idx_bytes(0x08, (n, 28, 28), rng.randint(0, 256, n * 784).astype(
            np.uint8).tobytes())
        out[lab] = idx_bytes(0x08, (n,), (np.arange(n) % 10).astype(np.uint8).tobytes())
    return out


class Mirror(http.server.BaseHTTPRequestHandler):
    """Serves /<mode>/<name>.gz. Modes: good, recompressed, plain, corrupt, truncated;
    anything else is a 404."""

    contents = {}
    requests = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        Mirror.requests.append(self.path)
        mode, _, file = self.path.strip("/").partition("/")
        name = file[:-3] if file.endswith(".gz") else file
        if name not in self.contents or mode not in ("good", "recompressed", "plain",
                                                     "corrupt", "truncated"):
            self.send_error(404, "no such file")
            return
        raw = self.contents[name]
        if mode == "corrupt":
            raw = raw[:-1] + bytes([raw[-1] ^ 0x55])  # valid gzip, wrong content
        level = 1 if mode == "recompressed" else 9
        body = raw if mode == "plain" else gzip.compress(raw, compresslevel=level, mtime=0)
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncated":  # the connection closes early
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def mirror_server():
    Mirror.contents = fake_contents()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_checksums(monkeypatch):
    sums = {name: hashlib.sha256(raw).hexdigest() for name, raw in fake_contents().items()}
    monkeypatch.setitem(data.SHA256, "mnist", sums)
    Mirror.requests = []
    return sums


def fetch(url):
    return data.fetch_url(url, timeout=10)


def test_failed_downloads_leave_nothing_and_say_where_to_put_files(
        tmp_path, mirror_server, fake_checksums):
    target = str(tmp_path / "new" / "mnist")
    mirrors = [f"{mirror_server}/corrupt/", f"{mirror_server}/truncated/",
               f"{mirror_server}/missing/"]
    with pytest.raises(data.DownloadError) as info:
        data.download_mnist(target, kinds="test", mirrors=mirrors, fetch=fetch)
    msg = str(info.value)
    for name in data.FILES["test"]:
        for m in mirrors:
            assert f"{m}{name}.gz" in msg
    assert "checksum mismatch" in msg
    assert "connection closed after" in msg
    assert "404" in msg
    assert f"into {target} by hand" in msg and "TINYGRAD_MLP_DATA" in msg
    assert not os.path.exists(tmp_path / "new")  # the folders it made are gone too
    assert len(Mirror.requests) == 6  # each file from each mirror, in order
    assert Mirror.requests[:3] == [f"/{m}/t10k-images-idx3-ubyte.gz"
                                   for m in ("corrupt", "truncated", "missing")]


def test_failed_download_into_an_existing_folder_leaves_no_file(tmp_path, mirror_server,
                                                                fake_checksums):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(data.DownloadError):
        data.download_mnist(str(folder), kinds="train", fetch=fetch,
                            mirrors=[f"{mirror_server}/truncated/"])
    assert os.listdir(folder) == ["notes.txt"]


def test_good_mirror_after_bad_ones_lands_verified_files(tmp_path, mirror_server,
                                                         fake_checksums):
    target = str(tmp_path / "mnist")
    mirrors = [f"{mirror_server}/missing/", f"{mirror_server}/corrupt/",
               f"{mirror_server}/truncated/", f"{mirror_server}/recompressed/"]
    assert data.download_mnist(target, mirrors=mirrors, fetch=fetch) == target
    names = [n for k in ("train", "test") for n in data.FILES[k]]
    assert sorted(os.listdir(target)) == sorted(n + ".gz" for n in names)  # no temp files
    for name in names:
        assert data.content_sha256(os.path.join(target, name + ".gz")) == fake_checksums[name]
    # present files are not fetched again
    Mirror.requests = []
    data.download_mnist(target, mirrors=mirrors, fetch=fetch)
    assert Mirror.requests == []
    X, y = data.load_mnist(target, kind="test", download=False)
    assert X.shape == (10, 784) and list(y) == list(range(10))


def test_load_mnist_downloads_with_the_default_fetcher(tmp_path, monkeypatch, mirror_server,
                                                       fake_checksums):
    monkeypatch.setitem(data.MIRRORS, "mnist", [f"{mirror_server}/truncated/",
                                                f"{mirror_server}/plain/"])
    monkeypatch.setenv("TINYGRAD_MLP_DATA", str(tmp_path / "data"))
    X, y = data.load_mnist(kind="train")
    assert X.shape == (20, 784) and y.shape == (20,)
    folder = tmp_path / "data" / "mnist"
    assert sorted(os.listdir(folder)) == sorted(data.FILES["train"])  # plain body, plain name
    assert not os.path.exists(folder / "t10k-images-idx3-ubyte")  # only what was asked


def test_download_without_any_working_mirror_from_load_mnist(tmp_path, monkeypatch,
                                                             mirror_server, fake_checksums):
    monkeypatch.setitem(data.MIRRORS, "mnist", [f"{mirror_server}/corrupt/"])
    with pytest.raises(data.DownloadError, match="could not download 2 mnist file"):
        data.load_mnist(str(tmp_path / "m"), kind="test")
    assert os.listdir(tmp_path) == []


def test_real_mirror_checksums_are_the_published_ones():
    assert data.SHA256["mnist"]["train-images-idx3-ubyte"].startswith("ba891046")
    assert data.SHA256["fashion-mnist"]["t10k-labels-idx1-ubyte"].startswith("0402a96d")
    assert all(len(data.MIRRORS[d]) >= 2 for d in ("mnist", "fashion-mnist"))
    assert all(m.endswith("/") for d in data.MIRRORS for m in data.MIRRORS[d])


# ----------------------------------------------------------------------------- one_hot


def test_one_hot():
    y = np.array([2, 0, 9, 2])
    Y = data.one_hot(y, 10)
    assert Y.shape == (4, 10) and Y.dtype == np.float32
    np.testing.assert_array_equal(Y.argmax(axis=1), y)
    np.testing.assert_array_equal(Y.sum(axis=1), 1)
    assert data.one_hot(np.array([1.0, 0.0]), 2, dtype=np.float64).dtype == np.float64
    assert data.one_hot(np.array([], dtype=np.int64), 3).shape == (0, 3)
    for bad_y, n, word in [(np.array([0, 10]), 10, "label 10 at index 1 is outside"),
                           (np.array([-1]), 10, "label -1 at index 0"),
                           (np.array([0.5]), 10, "must be integers, got 0.5"),
                           (np.array(["a"]), 10, "must be integers, got dtype"),
                           (np.zeros((2, 2), int), 10, r"shape \(n,\), got shape \(2, 2\)"),
                           (np.array([0]), 0, "positive integer, got 0"),
                           (np.array([0]), True, "positive integer, got True")]:
        with pytest.raises(ValueError, match=word):
            data.one_hot(bad_y, n)


# ----------------------------------------------------------------------------- real data


REAL = os.environ.get("TINYGRAD_MLP_DATA")


@pytest.mark.skipif(not REAL, reason="TINYGRAD_MLP_DATA is not set (a folder with mnist/)")
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_real_data_shapes_and_checksums(dataset):
    folder = data.find_folder(REAL, dataset)
    if folder is None:
        pytest.skip(f"TINYGRAD_MLP_DATA={REAL} has no {dataset}/ with the four files")
    for kind, n in (("train", 60000), ("test", 10000)):
        for name in data.FILES[kind]:
            path = data._find_file(folder, name)
            assert data.content_sha256(path) == data.SHA256[dataset][name], path
        X, y = data.load_mnist(REAL, kind=kind, download=False, dataset=dataset)
        assert X.shape == (n, 784) and X.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert X.min() == -1.0 and X.max() == 1.0
        assert np.bincount(y, minlength=10).min() > n // 20
