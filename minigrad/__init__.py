"""minigrad: a small lazy deep-learning engine.

Tensor (tensor.py) -> differentiable primitives (function.py) -> lazy graph and views
(lazy.py, view.py) -> schedule with fusion (schedule.py, kernel.py) -> backends
(backends/numpy_backend.py, backends/opencl.py).
"""
from . import dtypes
from .debug import detect_anomaly, set_debug
from .dtypes import bool_, float32, float64, int32, int64
from .tensor import Tensor, no_grad, realize
from .schedule import create_schedule
from .doctor import doctor
from .jit import jit
from . import nn, optim  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "realize", "detect_anomaly", "set_debug", "create_schedule", "doctor", "jit", "nn", "optim",
           "dtypes", "float32", "float64", "int32", "int64", "bool_"]
