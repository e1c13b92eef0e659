"""Dtypes are numpy's dtypes; this file says which ones minigrad accepts and how they mix."""
import numpy as np

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)

SUPPORTED = (float32, float64, int32, int64, bool_)
default_float = float32
default_int = int64


def as_dtype(dtype) -> np.dtype:
    """Accept np.float32, "float32", float, ... and return a supported np.dtype, or raise."""
    if dtype is None:
        return None
    if dtype is float:
        return default_float
    if dtype is int:
        return default_int
    if dtype is bool:
        return bool_
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"unknown dtype {dtype!r}; minigrad supports {[str(d) for d in SUPPORTED]}") from e
    if dt == np.float16:
        raise TypeError("float16 is not supported; use float32 or float64")
    if dt not in SUPPORTED:
        raise TypeError(f"dtype {dt} is not supported; minigrad supports {[str(d) for d in SUPPORTED]}")
    return dt


def is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def promote(a: np.dtype, b: np.dtype) -> np.dtype:
    """numpy's promotion rule for two tensors' dtypes (bool < int32 < int64 < float32 < float64),
    except that int64 with float32 stays float32: no silent upcast of float32 work to float64."""
    if is_float(a) != is_float(b):
        return a if is_float(a) else b
    return np.promote_types(a, b)


def scalar_dtype(value, other: np.dtype) -> np.dtype:
    """A Python scalar adopts the tensor's dtype ("weak" scalar), unless it needs a float
    and the tensor holds ints or bools, in which case the result is the default float."""
    if isinstance(value, bool):
        return other
    if isinstance(value, int):
        return other if other != bool_ else default_int
    if isinstance(value, float):
        return other if is_float(other) else default_float
    raise TypeError(f"cannot mix a Tensor with {type(value).__name__} {value!r}")
