"""Counter-based random numbers: element i of a random tensor is a hash of (seed, i).

Nothing is drawn in sequence, so every element can be computed on its own, by numpy on the
CPU or by one OpenCL work item on a GPU, and both give the same bits. The hash is
"lowbias32" (two multiply-xorshift rounds on 32-bit words), applied twice with keys made
from the tensor's (seed, counter). Uniform numbers keep the top 24 bits: k / 2^24 in [0, 1).
"""
import numpy as np

MASK = 0xFFFFFFFF


def lowbias32(x):
    """The hash, for numpy uint32 arrays (wrapping arithmetic) or Python ints."""
    if isinstance(x, int):
        x &= MASK
        x ^= x >> 16
        x = (x * 0x7FEB352D) & MASK
        x ^= x >> 15
        x = (x * 0x846CA68B) & MASK
        return x ^ (x >> 16)
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def keys(seed: int, counter: int):
    """Two 32-bit keys for the tensor made by the counter-th random op after manual_seed(seed)."""
    k1 = lowbias32((seed * 0x9E3779B9) ^ lowbias32(counter))
    k2 = lowbias32(k1 ^ 0x85EBCA6B)
    return k1, k2


def uniform(size: int, seed: int, counter: int, dtype) -> np.ndarray:
    """`size` uniform numbers in [0, 1): what the OpenCL kernel computes, in numpy."""
    k1, k2 = keys(seed, counter)
    with np.errstate(over="ignore"):
        bits = lowbias32(lowbias32(np.arange(size, dtype=np.uint32) ^ np.uint32(k1)) + np.uint32(k2))
    return ((bits >> np.uint32(8)).astype(np.float64) * (1.0 / (1 << 24))).astype(dtype)


# The same, as OpenCL C (opencl_render.py builds the kernel around it).
LOWBIAS32_C = """uint lowbias32(uint x) {
  x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
  return x;
}
"""
