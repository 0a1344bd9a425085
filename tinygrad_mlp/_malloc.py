"""Keep glibc from returning freed gradient buffers to the OS after every step.

A training step frees and reallocates arrays of the same sizes (gradients, activations)
again and again. With glibc's default settings, a freed block of a few hundred KB at the
top of the heap is trimmed (given back to the kernel) and the next allocation of it
page-faults anew: this alone made a float64 step of the lecture's MLP twice as slow.
Raising the trim and mmap thresholds keeps those blocks in the heap for reuse. It changes
nothing but allocation speed, and only on glibc; but it changes it for the whole process,
so it is opt-in: call `tinygrad_mlp.tune_malloc()`, or set TINYGRAD_MLP_MALLOC_TUNE=1
before importing the package.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD = 256 * 1024 * 1024  # keep up to 256 MB of freed heap for reuse
MMAP_THRESHOLD = 32 * 1024 * 1024   # glibc's maximum; larger arrays still use mmap

tuned = False


def tune_malloc():
    """Keep freed heap blocks for reuse (glibc's M_TRIM_THRESHOLD 256 MB, M_MMAP_THRESHOLD
    32 MB) for the whole process; returns True when applied (Linux with glibc)."""
    global tuned
    if tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    tuned = ok
    return ok


def tune_if_asked():
    """At import: tune only when TINYGRAD_MLP_MALLOC_TUNE=1 is set."""
    if os.environ.get("TINYGRAD_MLP_MALLOC_TUNE", "0") == "1":
        tune_malloc()
