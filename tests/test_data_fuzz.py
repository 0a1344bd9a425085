"""Fuzz read_idx: thousands of mutated and truncated IDX files, plain and gzip.

Whatever the bytes, read_idx either returns an array that agrees with its header or raises
IDXFormatError: never struct.error, MemoryError, EOFError, zlib.error or a NumPy error.
"""

import gzip
import os
import zlib

import numpy as np
import pytest

from tinygrad_mlp import data
from tinygrad_mlp.data import IDXFormatError

N_CASES = 3000
SHAPES = [(5,), (3, 4), (2, 3, 2), (0,), (1, 1, 1, 1)]
DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def valid_files(rng):
    out = []
    for dtype in DTYPES:
        for shape in SHAPES:
            a = (rng.standard_normal(shape) * 50).astype(dtype)
            code = data._CODE_OF_KIND[(np.dtype(dtype).kind, np.dtype(dtype).itemsize)]
            header = bytes([0, 0, code, len(shape)]) + np.asarray(shape, ">u4").tobytes()
            out.append(header + a.astype(np.dtype(dtype).newbyteorder(">")).tobytes())
    return out


def mutate(raw, rng):
    """One random damage: flips, truncation, insertion, deletion, appended bytes, or a
    random header field."""
    b = bytearray(raw)
    how = rng.randint(7)
    if how == 0 and b:  # flip bytes, mostly in the header
        for _ in range(rng.randint(1, 4)):
            i = rng.randint(min(len(b), 24)) if rng.rand() < 0.7 else rng.randint(len(b))
            b[i] ^= rng.randint(1, 256)
    elif how == 1:  # truncate
        del b[rng.randint(len(b) + 1):]
    elif how == 2:  # insert bytes
        i = rng.randint(len(b) + 1)
        b[i:i] = rng.bytes(rng.randint(1, 9))
    elif how == 3 and b:  # delete bytes
        i = rng.randint(len(b))
        del b[i:i + rng.randint(1, 9)]
    elif how == 4:  # append
        b += rng.bytes(rng.randint(1, 40))
    elif how == 5 and len(b) >= 8:  # a random size field (possibly huge)
        ndim = max(1, min(b[3], (len(b) - 4) // 4))
        i = 4 + 4 * rng.randint(ndim)
        b[i:i + 4] = rng.bytes(4)
    elif len(b) >= 4:  # random type code or number of dimensions
        b[rng.randint(2, 4)] = rng.randint(256)
    return bytes(b)


def overwrite(path, body):
    """Replace the file's bytes without truncating it to zero first (on ext4 that forces a
    flush each time, 100 times slower)."""
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:
        f.write(body)
        f.truncate()


def check_read(path, content):
    """read_idx(path) is an array matching `content` (the decompressed bytes) or raises
    IDXFormatError. Returns True when it was read."""
    try:
        a = data.read_idx(path)
    except IDXFormatError as e:
        assert path in str(e)
        return False
    except Exception as e:  # anything else is a bug
        raise AssertionError(f"read_idx raised {type(e).__name__}: {e} on {content[:40]!r} "
                             f"({len(content)} bytes)") from e
    ndim = content[3]
    shape = tuple(int(d) for d in np.frombuffer(content[4:4 + 4 * ndim], ">u4"))
    assert a.shape == shape
    assert a.dtype == data.IDX_TYPES[content[2]].newbyteorder("=")
    assert len(content) == 4 + 4 * ndim + a.nbytes
    return True


def test_fuzz_read_idx_only_raises_idx_format_error(tmp_path):
    rng = np.random.RandomState(2024)
    bases = valid_files(rng)
    plain, zipped = str(tmp_path / "f.idx"), str(tmp_path / "f.idx.gz")
    read = rejected = 0
    for case in range(N_CASES):
        raw = bases[rng.randint(len(bases))]
        for _ in range(rng.randint(1, 3)):
            raw = mutate(raw, rng)
        kind = case % 3
        if kind == 0:  # damaged plain file
            path, body, content = plain, raw, raw
        elif kind == 1:  # damaged content, intact gzip
            path, body, content = zipped, gzip.compress(raw, compresslevel=1, mtime=0), raw
        else:  # intact content, damaged gzip stream
            raw = bases[rng.randint(len(bases))]
            path, body = zipped, mutate(gzip.compress(raw, compresslevel=1, mtime=0), rng)
            try:
                content = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                content = None
        overwrite(path, body)
        if content is None:  # a broken stream can never be read
            with pytest.raises(IDXFormatError):
                data.read_idx(path)
            rejected += 1
        elif check_read(path, content):
            read += 1
        else:
            rejected += 1
    assert read + rejected == N_CASES
    assert rejected > N_CASES // 2 and read > 20  # both paths were exercised
    assert sorted(os.listdir(tmp_path)) == ["f.idx", "f.idx.gz"]


def test_fuzz_random_bytes_and_huge_headers(tmp_path):
    rng = np.random.RandomState(7)
    path = str(tmp_path / "r.idx")
    for _ in range(300):
        n = rng.randint(0, 64)
        raw = bytes([0, 0]) + rng.bytes(n) if rng.rand() < 0.5 else rng.bytes(n)
        overwrite(path, raw)
        check_read(path, raw)
    # every size 0xFFFFFFFF: the claim (2**96 items and more) is refused without allocating
    for ndim in (1, 3, 255):
        raw = bytes([0, 0, 0x0E, ndim]) + b"\xff" * (4 * ndim) + b"\x00" * 64
        for gz in (False, True):
            overwrite(path, gzip.compress(raw) if gz else raw)
            with pytest.raises(IDXFormatError, match="truncated"):
                data.read_idx(path)
