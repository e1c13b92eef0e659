"""Freed CPU buffers kept for the next allocation of the same size.

An eager training step allocates its intermediates afresh and frees each after its last reader
(schedule.run_schedule).  Big ones (numpy maps anything over 32 MB straight from the system)
went back to the system when freed, and the next step's buffers of the same sizes came back as
new pages, each one zeroed by the kernel on first touch: on the shakespeare-char model that was
over 7 GB of page faults a step, 4-8 s of system time.  The pool keeps a freed buffer and hands it
to the next allocation of the same number of bytes.

It never holds more than the busiest moment needed: before a buffer of a size it lacks is made,
it lets go of at least as many bytes of others, so buffers in use plus buffers kept never exceed
the most that were ever in use at once.  A kept buffer is handed out again only when nothing else
refers to its memory (a numpy view of it that outlived the tensor keeps it out of use: numpy
views point at the memory's owner, the block, whose reference count says so).
"""
import mmap
import sys
import threading
import weakref
from collections import OrderedDict

import numpy as np

MIN_POOLED = 1 << 20          # smaller buffers come from malloc's heap, which reuses them already


class BufferPool:
    def __init__(self):
        self.kept = OrderedDict()      # id(block) -> block, oldest first
        self.kept_bytes = 0
        self.in_use = self.peak = 0    # bytes of the blocks handed out now, and at most so far
        self.lock = threading.RLock()  # a tensor freed in another thread returns its block there
        probe = {0: np.empty(1)}       # how many references this interpreter counts for a block only
        self.idle_references = _references(probe, 0)      # the pool holds (they differ by version)

    def allocate(self, size: int, dtype) -> np.ndarray:
        """An uninitialized 1-D array of `size` elements of `dtype`."""
        dtype = np.dtype(dtype)
        nbytes = size * dtype.itemsize
        if nbytes < MIN_POOLED:
            return np.empty(size, dtype)
        with self.lock:
            block = self._take(nbytes)
            if block is None:
                self._let_go(nbytes)
                block = np.frombuffer(mmap.mmap(-1, nbytes), np.uint8)    # its own mapping: dropped,
                                                                          # it goes back at once
            self.in_use += block.nbytes
            self.peak = max(self.peak, self.in_use)
        array = block[:nbytes].view(dtype)
        weakref.finalize(array, self._keep, block).atexit = False
        return array

    def _take(self, nbytes: int):
        """The smallest kept block that holds `nbytes` and is at most twice that, if any."""
        best = None
        for key in list(self.kept):
            if _references(self.kept, key) > self.idle_references:
                continue                               # a view of it is alive
            block = self.kept[key]
            if nbytes <= block.nbytes <= 2 * nbytes and (best is None or block.nbytes < best[1].nbytes):
                best = key, block
        if best is None:
            return None
        del self.kept[best[0]]
        self.kept_bytes -= best[1].nbytes
        return best[1]

    def _let_go(self, nbytes: int) -> None:
        """Drop kept blocks, oldest first, until `nbytes` more would not exceed the peak so far
        (or the blocks in use plus `nbytes`, if that is higher: a new peak)."""
        limit = max(self.peak, self.in_use + nbytes)
        while self.kept and self.in_use + self.kept_bytes + nbytes > limit:
            _, block = self.kept.popitem(last=False)
            self.kept_bytes -= block.nbytes

    def _keep(self, block: np.ndarray) -> None:
        with self.lock:
            self.in_use -= block.nbytes
            self.kept[id(block)] = block
            self.kept_bytes += block.nbytes

    def clear(self) -> None:
        """Give every kept buffer back (the jit does before it plans a replay's memory)."""
        with self.lock:
            self.kept.clear()
            self.kept_bytes = 0


def _references(kept: dict, key) -> int:
    """sys.getrefcount of kept[key], counted the same way for the probe and for every check."""
    return sys.getrefcount(kept[key])
