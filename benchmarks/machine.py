"""What the benchmarks ran on: CPU, cores, NumPy's BLAS (and the kernel it picked), torch."""

from __future__ import annotations

import ctypes
import glob
import os
import platform

import numpy as np


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _openblas_library():
    """The OpenBLAS shared library NumPy loaded, found next to the numpy package."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    patterns = [os.path.join(root, "numpy.libs", "*openblas*"),
                os.path.join(root, "scipy_openblas*", "lib", "*openblas*.so*")]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def blas_info():
    """A short description of NumPy's BLAS: name, version, the kernel in use, threads."""
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            p = pools[0]
            return (f"{p.get('internal_api')} {p.get('version')}, kernel "
                    f"{p.get('architecture')}, {p.get('num_threads')} threads")
    except ImportError:
        pass
    lib = _openblas_library()
    if lib is not None:
        fields = {}
        for key, names in (("config", ("scipy_openblas_get_config64_", "openblas_get_config64_",
                                       "scipy_openblas_get_config", "openblas_get_config")),
                           ("core", ("scipy_openblas_get_corename64_",
                                     "openblas_get_corename64_",
                                     "scipy_openblas_get_corename", "openblas_get_corename")),
                           ("threads", ("scipy_openblas_get_num_threads64_",
                                        "openblas_get_num_threads64_",
                                        "scipy_openblas_get_num_threads",
                                        "openblas_get_num_threads"))):
            for name in names:
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_int if key == "threads" else ctypes.c_char_p
                    value = fn()
                    fields[key] = value.decode() if isinstance(value, bytes) else value
                    break
        if fields:
            config = fields.get("config", "OpenBLAS").split()
            return (f"{' '.join(config[:2])}, kernel {fields.get('core', '?')}, "
                    f"{fields.get('threads', '?')} threads")
    return "unknown BLAS (see numpy.show_config())"


def describe(torch=None):
    """Lines describing the machine and the libraries."""
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                      "OPENBLAS_THREAD_TIMEOUT",
                                      "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                      "MKL_NUM_THREADS") if k in os.environ}
    lines = [
        f"CPU: {cpu_model()}, {os.cpu_count()} logical cores",
        f"Python {platform.python_version()}, NumPy {np.__version__}, BLAS: {blas_info()}",
        "BLAS environment: " + (", ".join(f"{k}={v}" for k, v in env.items()) or "none set"),
    ]
    if torch is not None:
        lines.append(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    if hasattr(os, "getloadavg"):
        lines.append("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return lines
