"""Backends run kernels.  The contract is small (see Backend below), so a new device is one file.

Device names: "numpy" (alias "cpu"), the default; "cl" (aliases "opencl", "gpu").
MINIGRAD_DEVICE picks the default device for new tensors.
"""
import functools
import os

ALIASES = {"numpy": "numpy", "cpu": "numpy", "np": "numpy", "cl": "cl", "opencl": "cl", "gpu": "cl"}
_backends = {}


class Backend:
    """What a device must provide.  Buffers are flat arrays of one dtype; a View says how to read them."""
    name = "?"

    def allocate(self, size: int, dtype):            # an uninitialized buffer of `size` elements
        raise NotImplementedError

    def copy_in(self, array):                        # a new buffer holding a numpy array's values
        raise NotImplementedError

    def write(self, buffer, array, offset=0):        # overwrite a buffer (from element `offset` on) with an array's values
        raise NotImplementedError

    def copy_out(self, buffer, view, dtype):         # a numpy array of view.shape read through the view
        raise NotImplementedError

    alignment = 64                                   # bytes: where a typed view into a byte buffer may start
    updates_in_place = False                         # may an elementwise kernel's output be one of its inputs?

    def as_typed(self, buffer, offset: int, size: int, dtype):   # `size` elements of dtype at byte offset
        raise NotImplementedError                                  # of a uint8 buffer (a jit's arena)

    def run(self, kernel, out, inputs):              # compute kernel.ast into `out`
        raise NotImplementedError

    def prepare(self, kernels):                      # compile a schedule's kernels before the first runs
        pass                                         # (one compiler run for all, where that is cheaper)

    def release_kept(self):                          # give back freed buffers kept for reuse (the jit
        pass                                         # does before it makes a replay's arena)

    def bind(self, kernel, out, inputs):             # a call running kernel on these buffers (a jit's replay;
        return functools.partial(self.run, kernel, out, inputs)   # the caller keeps the buffers alive)

    def groups_kernel(self, kernel) -> bool:         # may kernel join a multi-output kernel?
        return False                                 # (then prepare_groups and bind_group are needed)

    def synchronize(self):                           # wait for queued work (for timing)
        pass


def canonical_device(device) -> str:
    if device is None:
        device = os.environ.get("MINIGRAD_DEVICE", "numpy")
    name = str(device).lower().split(":")[0]
    if name not in ALIASES:
        raise ValueError(f"unknown device {device!r}; choose 'numpy' (the CPU) or 'cl' (OpenCL)")
    return ALIASES[name]


def available_devices(report=print) -> list:
    """The devices that work here: "numpy" always, "cl" when an OpenCL device starts
    (otherwise `report` is told why)."""
    devices = ["numpy"]
    try:
        get_backend("cl")
        devices.append("cl")
    except Exception as e:  # OpenCLUnavailable, or a driver that fails to start
        report(f"(OpenCL unavailable: {e})")
    return devices


def get_backend(device: str) -> Backend:
    device = canonical_device(device)
    if device not in _backends:
        if device == "numpy":
            from .numpy_backend import NumpyBackend
            _backends[device] = NumpyBackend()
        else:
            from .opencl import OpenCLBackend
            _backends[device] = OpenCLBackend()
    return _backends[device]
