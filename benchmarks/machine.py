"""What the benchmarks ran on: CPU, cores, NumPy's BLAS (and the kernel it picked), torch.

Imports NumPy only inside its functions, so that run.py can read `BLAS_PINS` before NumPy
(and OpenBLAS, which reads them once) is loaded.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import subprocess
import sys

# Variables that pin OpenBLAS to one kernel and cache size instead of the ones it detects.
# Some machines set them because older OpenBLAS builds crash or miscompute on their CPU;
# a current one picks the right kernel itself, and the pin can make NumPy's matrix
# products much slower while PyTorch's own BLAS (MKL) is not pinned.
BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


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
    import numpy as np

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
    import numpy  # noqa: F401 (loads OpenBLAS, which both look-ups below read)

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


def kernel_name(line):
    """The kernel named in a line of `blas_info()` or `describe()` ('... kernel X, ...'), or
    None when the line names none."""
    return line.split("kernel ", 1)[1].split(",", 1)[0] if "kernel " in line else None


def blas_kernel():
    """The kernel NumPy's OpenBLAS uses in this process ('Haswell', 'SkylakeX', ...), or
    None when it cannot be read."""
    return kernel_name(blas_info())


def unpinned_environment(environ=None):
    """A copy of `environ` (default os.environ) without the variables of BLAS_PINS."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k not in BLAS_PINS}


def unpinned_kernel():
    """The kernel OpenBLAS picks on this CPU when nothing pins it (asked of a child
    process, since a loaded OpenBLAS keeps its kernel), or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path.insert(0, {here!r}); import machine; print(machine.blas_kernel())"
    try:
        done = subprocess.run([sys.executable, "-c", code], env=unpinned_environment(),
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    kernel = done.stdout.strip()
    return kernel if done.returncode == 0 and kernel not in ("", "None") else None


def pin_note():
    """A warning when BLAS_PINS hold NumPy to another kernel than OpenBLAS would pick on
    this CPU (None otherwise): the peers' BLAS is not pinned, so the comparison is uneven."""
    pins = {k: os.environ[k] for k in BLAS_PINS if k in os.environ}
    if not pins:
        return None
    pinned, native = blas_kernel(), unpinned_kernel()
    if native is None or native == pinned:
        return None
    set_ = ", ".join(f"{k}={v}" for k, v in pins.items())
    verb = "pin" if len(pins) > 1 else "pins"
    return (f"note: {set_} {verb} NumPy's OpenBLAS to the {pinned} kernel; on this CPU "
            f"it would pick {native}, and PyTorch's BLAS is not pinned. For like-for-like "
            f"kernels pass --native-blas (run.py then restarts itself without "
            f"{' and '.join(pins)})")


def torch_capability(torch):
    """The vector instructions PyTorch's CPU kernels use ('AVX512', 'AVX2', ...), or '?'."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # older or unusual builds
        return "?"


def describe(torch=None):
    """Lines describing the machine and the libraries."""
    import numpy as np

    env = {k: os.environ[k] for k in BLAS_PINS + ("OPENBLAS_THREAD_TIMEOUT",
                                                  "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                  "MKL_NUM_THREADS") if k in os.environ}
    lines = [
        f"CPU: {cpu_model()}, {os.cpu_count()} logical cores",
        f"Python {platform.python_version()}, NumPy {np.__version__}, BLAS: {blas_info()}",
        "BLAS environment: " + (", ".join(f"{k}={v}" for k, v in env.items()) or "none set"),
    ]
    if torch is not None:
        lines.append(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, CPU "
                     f"capability {torch_capability(torch)}")
    if hasattr(os, "getloadavg"):
        lines.append("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return lines


def report(torch=None):
    """`describe(torch)`, followed by `pin_note()` when there is one: what the suite prints
    before its results."""
    note = pin_note()
    return describe(torch) + ([note] if note else [])
