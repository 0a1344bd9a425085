"""tinygrad_mlp: a small, fast, honest reverse-mode autodiff library on NumPy."""

from . import _malloc, data, nn, ops, optim, reference, testing, train, viz
from ._kernels import get_num_threads, set_num_threads
from ._malloc import tune_malloc
from .forward import jvp
from .gradcheck import GradcheckError, OpCheck, check_ops, gradcheck, numerical_gradient
from .jit import Jit, JitFallbackWarning, jit
from .tensor import (
    Context,
    Function,
    Tensor,
    concatenate,
    detect_anomaly,
    enable_grad,
    is_grad_enabled,
    no_grad,
    stack,
    unbroadcast,
)

__version__ = "0.1.0"

_malloc.tune_if_asked()  # opt-in: TINYGRAD_MLP_MALLOC_TUNE=1, or call tune_malloc()

__all__ = [
    "Tensor",
    "Function",
    "Context",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "detect_anomaly",
    "concatenate",
    "stack",
    "unbroadcast",
    "gradcheck",
    "numerical_gradient",
    "GradcheckError",
    "check_ops",
    "OpCheck",
    "jvp",
    "jit",
    "Jit",
    "JitFallbackWarning",
    "tune_malloc",
    "set_num_threads",
    "get_num_threads",
    "ops",
    "nn",
    "optim",
    "reference",
    "testing",
    "train",
    "data",
    "viz",
]
