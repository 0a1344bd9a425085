"""Data: the IDX file format, MNIST / Fashion-MNIST loading and downloading, one-hot labels.

IDX (LeCun's format for MNIST), all numbers big-endian:

    byte 0-1   0x00 0x00                 magic
    byte 2     type code                 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                                         0x0D float32, 0x0E float64
    byte 3     ndim                      number of dimensions (>= 1)
    byte 4..   ndim uint32 sizes         the shape
    then       prod(shape) items         row-major (C order)

`read_idx` accepts plain and gzip files (told apart by content) and checks the header
against the data: anything wrong raises `IDXFormatError` (a ValueError) naming the file, the
byte offset and the problem. `write_idx` writes atomically, gzip when the name ends in .gz.

`load_mnist` finds the four files (plain or .gz) in the first place that has them and, when
allowed, downloads what is missing from public mirrors, verifying the SHA-256 of each file's
uncompressed content and renaming it into place only when whole.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib

import numpy as np

from ._files import atomic_write

__all__ = [
    "IDXFormatError",
    "DownloadError",
    "read_idx",
    "write_idx",
    "load_mnist",
    "download_mnist",
    "default_root",
    "find_folder",
    "content_sha256",
    "one_hot",
    "MIRRORS",
    "FILES",
    "SHA256",
]


class IDXFormatError(ValueError):
    """A file is not a valid IDX file (bad header, wrong size, corrupt gzip stream)."""


class DownloadError(RuntimeError):
    """Every mirror failed for a file; the message lists the URLs and where to put files."""


# ----------------------------------------------------------------------------- IDX

#: IDX type code -> NumPy dtype (big-endian, as stored in the file).
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float",
               0x0E: "double"}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_TYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 22  # bytes read at a time from a gzip stream
# gzip.BadGzipFile is an OSError (CRC, bad header); a cut stream raises EOFError; a damaged
# deflate stream raises zlib.error.
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


class _Reader:
    """Reads the (decompressed) bytes of a file, turning gzip damage into IDXFormatError."""

    def __init__(self, path):
        self.path = path
        self.gz = _is_gzip(path)
        self.where = " of the decompressed content" if self.gz else ""
        self.raw = open(path, "rb")
        self.f = gzip.GzipFile(fileobj=self.raw, mode="rb") if self.gz else self.raw
        self.pos = 0

    def fail(self, offset, problem):
        kind = "gzip IDX file" if self.gz else "IDX file"
        at = f" at byte {offset}{self.where}" if offset is not None else ""
        raise IDXFormatError(f"{self.path}: {kind}{at}: {problem}")

    def read(self, n):
        """Up to n bytes (fewer only at the end of the content)."""
        if not self.gz:  # plain: callers check the file size before a large read
            out = bytearray(n)
            got = self.f.readinto(out)
            del out[got:]
            self.pos += got
            return out
        out = bytearray()
        try:
            while len(out) < n:
                chunk = self.f.read(min(_CHUNK, n - len(out)))
                if not chunk:
                    break
                out += chunk
        except _GZIP_ERRORS as e:
            self.fail(None, f"corrupt gzip stream, found while reading from decompressed "
                            f"byte {self.pos + len(out)} ({type(e).__name__}: {e})")
        self.pos += len(out)
        return out

    def count_rest(self):
        """Number of bytes left to the end of the content."""
        if not self.gz:
            return max(0, os.fstat(self.raw.fileno()).st_size - self.pos)
        n = 0
        while True:
            chunk = self.read(_CHUNK)
            if not chunk:
                return n
            n += len(chunk)

    def close(self):
        if self.f is not self.raw:
            self.f.close()
        self.raw.close()


def read_idx(path):
    """Read an IDX file (plain or gzip) into a NumPy array of the header's shape.

    Returns an array in native byte order: uint8, int8, int16, int32, float32 or float64.
    Raises IDXFormatError naming the file, the byte offset and the problem when the magic,
    the type code or the number of dimensions is invalid, when the data is shorter or longer
    than the header says, or when a gzip stream is corrupt.
    """
    path = os.fspath(path)
    r = _Reader(path)
    try:
        head = r.read(4)
        if len(head) < 4:
            r.fail(0, f"truncated header: {len(head)} bytes, an IDX header needs at least 4 "
                      f"(magic 0x0000, type code, number of dimensions)")
        if head[0] != 0 or head[1] != 0:
            hint = "" if r.gz or not path.endswith(".gz") else \
                " (the name ends in .gz but the content is not gzip either)"
            r.fail(0, f"bad magic 0x{head[0]:02X}{head[1]:02X}{head[2]:02X}{head[3]:02X}: "
                      f"an IDX file starts with two zero bytes, then a type code and the "
                      f"number of dimensions{hint}")
        code, ndim = head[2], head[3]
        if code not in IDX_TYPES:
            known = ", ".join(f"0x{c:02X} ({n})" for c, n in _TYPE_NAMES.items())
            r.fail(2, f"unknown type code 0x{code:02X}; known codes: {known}")
        if ndim == 0:
            r.fail(3, "number of dimensions is 0; an IDX file has at least one")
        dims_raw = r.read(4 * ndim)
        if len(dims_raw) < 4 * ndim:
            r.fail(4 + len(dims_raw), f"truncated header: {ndim} dimensions need "
                                      f"{4 * ndim} bytes of sizes after byte 4, found only "
                                      f"{len(dims_raw)}")
        shape = tuple(int(d) for d in np.frombuffer(bytes(dims_raw), dtype=">u4"))
        dtype = IDX_TYPES[code]
        n_items = 1
        for d in shape:
            n_items *= d
        n_bytes = n_items * dtype.itemsize
        start = 4 + 4 * ndim
        what = f"header says shape {shape} of {_TYPE_NAMES[code]} = {n_bytes} data bytes " \
               f"from byte {start}"
        if not r.gz:  # the size is known: no read of a huge claimed size
            size = os.fstat(r.raw.fileno()).st_size
            if size - start < n_bytes:
                r.fail(size, f"truncated: {what}, but the file ends after "
                             f"{size - start} data bytes")
        body = r.read(n_bytes)
        if len(body) < n_bytes:
            r.fail(start + len(body), f"truncated: {what}, but the data ends after "
                                      f"{len(body)} bytes")
        extra = r.count_rest()
        if extra:
            r.fail(start + n_bytes, f"over-long: {what}, but {extra} more byte(s) follow "
                                    f"the data")
    finally:
        r.close()
    array = np.frombuffer(body, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=dtype.itemsize > 1)


def write_idx(path, array, *, compress=None):
    """Write `array` as an IDX file, atomically (a temporary file, then a rename).

    array: any shape with at least one dimension, each size < 2**32; dtype uint8, int8,
    int16, int32, float32 or float64. compress: gzip or not; default: when the name ends
    in .gz. Returns the path.
    """
    path = os.fspath(path)
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None or array.dtype.kind not in "uif":
        raise ValueError(f"write_idx {path}: dtype {array.dtype} has no IDX type code; use "
                         f"uint8, int8, int16, int32, float32 or float64")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"write_idx {path}: IDX needs 1 to 255 dimensions, got shape "
                         f"{array.shape}")
    if any(d >= 2 ** 32 for d in array.shape):
        raise ValueError(f"write_idx {path}: every size must be < 2**32, got {array.shape}")
    if compress is None:
        compress = path.endswith(".gz")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=IDX_TYPES[code])

    def write(f):
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(body.tobytes())
        else:
            f.write(header)
            f.write(body.tobytes())

    return atomic_write(path, write)


def content_sha256(path):
    """SHA-256 (hex) of a file's content, decompressed first when it is gzip."""
    h = hashlib.sha256()
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- MNIST files

#: kind -> (images file, labels file), without .gz; the same names for both datasets.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: dataset -> file -> SHA-256 of the uncompressed content.
SHA256 = {
    "mnist": {
        "t10k-images-idx3-ubyte":
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte":
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "train-images-idx3-ubyte":
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte":
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    "fashion-mnist": {
        "t10k-images-idx3-ubyte":
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte":
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        "train-images-idx3-ubyte":
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte":
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    },
}

#: dataset -> base URLs tried in order; each serves `<name>.gz`.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
}

#: Where Debian's package dataset-fashion-mnist installs the files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

N_CLASSES = 10
_KINDS = tuple(FILES)


def _check_dataset(dataset):
    if dataset not in SHA256:
        raise ValueError(f"unknown dataset {dataset!r}; choose 'mnist' or 'fashion-mnist'")


def _check_kind(kind):
    if kind not in FILES:
        raise ValueError(f"kind must be 'train' or 'test', got {kind!r}")


def _find_file(folder, name):
    """The path of `name` in folder as plain, .gz, or with a dot before 'idx'; else None."""
    dotted = name.replace("-idx", ".idx")
    for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
        p = os.path.join(folder, candidate)
        if os.path.isfile(p):
            return p
    return None


def _has_files(folder, kinds):
    return all(_find_file(folder, n) for k in kinds for n in FILES[k])


def default_root(dataset="mnist"):
    """Where files are downloaded when no root is given: $TINYGRAD_MLP_DATA/<dataset> when
    that variable is set, else ~/.cache/tinygrad_mlp/<dataset>."""
    env = os.environ.get("TINYGRAD_MLP_DATA")
    if env:
        return os.path.join(os.path.expanduser(env), dataset)
    return os.path.join(os.path.expanduser("~"), ".cache", "tinygrad_mlp", dataset)


def _candidates(root, dataset):
    """(folders searched for the files, in order; the folder a download goes to)."""
    if root is not None:
        root = os.path.expanduser(os.fspath(root))
        sub = os.path.join(root, dataset)
        # a root holding <dataset>/ is a parent folder: look and download there first
        folders = [sub, root] if os.path.isdir(sub) else [root, sub]
        return folders, folders[0]
    target = default_root(dataset)
    folders = [target] if os.environ.get("TINYGRAD_MLP_DATA") else []
    if dataset == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    cache = os.path.join(os.path.expanduser("~"), ".cache", "tinygrad_mlp", dataset)
    folders.append(cache)
    return folders, target


def find_folder(root=None, dataset="mnist", kinds=_KINDS):
    """The first folder of the search order that holds the files of `kinds`, else None.

    Order: `root` itself, then `root/<dataset>` (the other way round when root/<dataset>
    exists); without root: $TINYGRAD_MLP_DATA/<dataset>, Debian's
    /usr/share/datasets/fashion-mnist (fashion-mnist only), ~/.cache/tinygrad_mlp/<dataset>.
    """
    _check_dataset(dataset)
    for folder in _candidates(root, dataset)[0]:
        if _has_files(folder, kinds):
            return folder
    return None


def _where_to_put(dataset, target, kinds, looked=None):
    names = ", ".join(f"{n}[.gz]" for k in kinds for n in FILES[k])
    looked = f" Looked in: {', '.join(looked)}." if looked else ""
    return (f"Put the {dataset} files ({names}) into {target} by hand, or set "
            f"TINYGRAD_MLP_DATA to a folder containing {dataset}/, or pass root= "
            f"(examples/mnist.py: --data DIR).{looked}")


# ----------------------------------------------------------------------------- download


def fetch_url(url, timeout=60.0):
    """The bytes at `url` (urllib). Raises OSError on HTTP errors and incomplete bodies."""
    import http.client
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "tinygrad_mlp"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            body = resp.read()
    except http.client.IncompleteRead as e:
        raise OSError(f"connection closed after {len(e.partial)} bytes "
                      f"({e.expected} more expected)") from None
    except http.client.HTTPException as e:
        raise OSError(f"{type(e).__name__}: {e}") from None
    if expected is not None and expected.isdigit() and len(body) != int(expected):
        raise OSError(f"received {len(body)} bytes, Content-Length said {expected}")
    return body


def _decompressed(blob):
    if blob[:2] != _GZIP_MAGIC:
        return blob
    try:
        return gzip.decompress(blob)
    except _GZIP_ERRORS as e:
        raise ValueError(f"corrupt gzip data ({type(e).__name__}: {e})") from None


def _download_one(name, dataset, folder, mirrors, fetch):
    """Try each mirror for `name`; on success the verified file is renamed into folder."""
    expected = SHA256[dataset][name]
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name + ".gz"
        try:
            blob = bytes(fetch(url))
            digest = hashlib.sha256(_decompressed(blob)).hexdigest()
        except (OSError, ValueError) as e:  # urllib's URLError/HTTPError are OSErrors
            failures.append(f"{url}: {e}")
            continue
        if digest != expected:
            failures.append(f"{url}: checksum mismatch: SHA-256 of the content is {digest}, "
                            f"expected {expected} ({len(blob)} bytes received)")
            continue
        target = os.path.join(folder, name + (".gz" if blob[:2] == _GZIP_MAGIC else ""))
        atomic_write(target, lambda f, blob=blob: f.write(blob))
        return target, failures
    return None, failures


def download_mnist(root=None, dataset="mnist", kinds=_KINDS, *, mirrors=None, fetch=None):
    """Download the missing files of `kinds` into `root` (default: `default_root(dataset)`).

    Each mirror of `mirrors` (default MIRRORS[dataset]) is tried in order with
    `fetch(url) -> bytes` (default `fetch_url`); a file is kept only when the SHA-256 of its
    uncompressed content matches SHA256, written to a temporary name and renamed when whole.
    Raises DownloadError listing every URL that failed and where to put the files by hand;
    nothing of a failed file is left behind. Returns the folder.
    """
    _check_dataset(dataset)
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    for k in kinds:
        _check_kind(k)
    folder = os.path.expanduser(os.fspath(root)) if root is not None else default_root(dataset)
    mirrors = list(MIRRORS[dataset] if mirrors is None else mirrors)
    fetch = fetch_url if fetch is None else fetch
    made = []
    d = os.path.abspath(folder)
    while not os.path.isdir(d):
        made.append(d)
        d = os.path.dirname(d)
    os.makedirs(folder, exist_ok=True)
    failed = {}
    for k in kinds:
        for name in FILES[k]:
            if _find_file(folder, name):
                continue
            target, failures = _download_one(name, dataset, folder, mirrors, fetch)
            if target is None:
                failed[name] = failures or ["no mirror given"]
    if failed:
        for d in made:  # folders this call created and left empty
            try:
                os.rmdir(d)
            except OSError:
                break
        lines = [f"could not download {len(failed)} {dataset} file(s):"]
        for name, failures in failed.items():
            lines.append(f"  {name}.gz:")
            lines.extend(f"    {f}" for f in failures)
        lines.append(_where_to_put(dataset, folder, kinds))
        raise DownloadError("\n".join(lines))
    return folder


# ----------------------------------------------------------------------------- load_mnist


def _scale_table(dtype):
    """Pixel value 0..255 -> ((x / 255) - 0.5) * 2, computed in float64, then cast."""
    return (((np.arange(256, dtype=np.float64) / 255.0) - 0.5) * 2).astype(dtype)


def load_mnist(root=None, kind="train", download=True, dataset="mnist", dtype=np.float32):
    """Load MNIST or Fashion-MNIST: returns (X, y).

    X: (n, 784) of `dtype`, pixels scaled to [-1, 1] as ((x / 255) - 0.5) * 2, the lecture's
    scaling; y: (n,) int64 labels 0..9. n is 60,000 for kind="train", 10,000 for "test".
    root: the folder holding the four files (plain or .gz) or its parent; default
    $TINYGRAD_MLP_DATA/<dataset>, then (fashion-mnist) /usr/share/datasets/fashion-mnist,
    then ~/.cache/tinygrad_mlp/<dataset>. Missing files are downloaded into the first of
    these when `download` (see `download_mnist`), else FileNotFoundError says where to put them.
    """
    _check_dataset(dataset)
    _check_kind(kind)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"load_mnist: dtype must be a floating type, got {dtype}")
    folder = find_folder(root, dataset, (kind,))
    if folder is None:
        folders, target = _candidates(root, dataset)
        if not download:
            raise FileNotFoundError(f"{dataset} {kind} files not found and download=False. "
                                    + _where_to_put(dataset, target, (kind,), folders))
        folder = download_mnist(target, dataset, (kind,))
    images_name, labels_name = FILES[kind]
    images_path, labels_path = _find_file(folder, images_name), _find_file(folder, labels_name)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected uint8 images of shape (n, 28, 28), got "
                         f"{images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected uint8 labels of shape (n,), got "
                         f"{labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images_path} holds {images.shape[0]} images but {labels_path} "
                         f"holds {labels.shape[0]} labels")
    if labels.size and labels.max() >= N_CLASSES:
        raise ValueError(f"{labels_path}: label {int(labels.max())} is outside 0..9")
    X = _scale_table(dtype)[images.reshape(images.shape[0], 28 * 28)]
    return X, labels.astype(np.int64)


# ----------------------------------------------------------------------------- one_hot


def one_hot(y, n_classes, dtype=np.float32):
    """(n,) integer labels in [0, n_classes) -> (n, n_classes) array with one 1 per row."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) \
            or n_classes < 1:
        raise ValueError(f"one_hot: n_classes must be a positive integer, got {n_classes!r}")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"one_hot: labels must have shape (n,), got shape {y.shape}")
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            raise ValueError(f"one_hot: labels must be integers, got {y[bad[0]].item()!r} at "
                             f"index {bad[0]}")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"one_hot: labels must be integers, got dtype {y.dtype}")
    labels = y.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise ValueError(f"one_hot: label {labels[bad[0]]} at index {bad[0]} is outside "
                         f"[0, {n_classes}) ({bad.size} bad label(s))")
    out = np.zeros((y.shape[0], n_classes), dtype=dtype)
    out[np.arange(y.shape[0]), labels] = 1
    return out
