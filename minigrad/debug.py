"""Switches for looking inside the engine: DEBUG levels and anomaly mode.

DEBUG=1  one line per realize: how many kernels ran and how long they took
DEBUG=2  one line per kernel: the ops it fused, its shapes and its time
DEBUG=3  as 2, plus each generated kernel's source (OpenCL C, or the C of a compiled CPU kernel)
NAN=1    anomaly mode from the start (or use `with minigrad.detect_anomaly():`)
POISON=1 a jit replay fills each intermediate buffer with NaN after its planned last use, so a
         wrong memory plan shows up as a NaN loss instead of a subtly wrong one

Tracing (`with minigrad.viz.trace(model):`) labels each differentiable op with the module
whose forward made it ("h.0.attn") and keeps each op's output gradient from backward, so
that minigrad.viz can draw the graph module by module.  Off, it costs one check per op.
"""
import contextlib
import os
import traceback

DEBUG = int(os.environ.get("DEBUG", "0") or 0)
_anomaly = [os.environ.get("NAN", "0") not in ("", "0")]
POISON_FREED = os.environ.get("POISON", "0") not in ("", "0")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def set_debug(level: int) -> None:
    global DEBUG
    DEBUG = int(level)


def anomaly_enabled() -> bool:
    return _anomaly[0]


@contextlib.contextmanager
def detect_anomaly(enabled: bool = True):
    """Inside this block every op runs as its own kernel, and the first one whose output
    holds a NaN (or an inf made from finite inputs) raises, naming the op, its shapes and
    the line of your code that created it.  Slow: meant for hunting a NaN, not training."""
    previous = _anomaly[0]
    _anomaly[0] = enabled
    try:
        yield
    finally:
        _anomaly[0] = previous


# ---- host reads ---------------------------------------------------------------------------
# Counted always (an integer add): every time a tensor's values are copied back to Python
# (.numpy(), .item(), bool(t), printing).  The total lets a test assert that a training step
# reads back only its loss; a jit uses watch_host_reads() to refuse a function whose graph
# depends on a value read back.  (Backends may still read internally: OpenCL checks gather
# indices on the host.)
_host_reads = [0]
_read_watchers: list = []          # lists that collect the user line of each read


def note_host_read() -> None:
    """Called wherever device values are copied into Python."""
    _host_reads[0] += 1
    if _read_watchers:
        where = user_frame()
        for watcher in _read_watchers:
            watcher.append(where)


def host_reads() -> int:
    """How many times tensor values were copied back to Python so far."""
    return _host_reads[0]


@contextlib.contextmanager
def watch_host_reads():
    """Yields a list that collects 'file:line in function' for each host read in the block."""
    found = []
    _read_watchers.append(found)
    try:
        yield found
    finally:
        _read_watchers.remove(found)


def user_frame() -> str:
    """'file:line in function' of the innermost caller outside the minigrad package."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "<unknown>"


# ---- tracing for minigrad.viz ------------------------------------------------------------
_trace = [None]       # while tracing: {id(module): its dotted name}; None when off
_scopes = []          # dotted names of the modules whose __call__ is running, innermost last


def tracing() -> bool:
    return _trace[0] is not None


@contextlib.contextmanager
def trace_modules(names: dict):
    """Turn tracing on; `names` maps id(module) -> dotted name (a module not in it goes by its
    class name)."""
    previous = _trace[0]
    _trace[0] = names
    try:
        yield
    finally:
        _trace[0] = previous


@contextlib.contextmanager
def module_scope(module):
    """Mark the ops made inside `module`'s forward as made by it (Module.__call__ uses this)."""
    _scopes.append(_trace[0].get(id(module), type(module).__name__))
    try:
        yield
    finally:
        _scopes.pop()


def current_scope() -> str:
    """The innermost running module's dotted name, "" outside every module."""
    return _scopes[-1] if _scopes else ""
