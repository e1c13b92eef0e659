"""A View says how to read an N-d tensor out of a flat buffer: shape, strides, offset, mask.

    element [i0, i1, ...] lives at  buffer[offset + i0*strides[0] + i1*strides[1] + ...]
    and reads as 0 where some i_k falls outside mask[k] = (start, end)   (padding)

Every movement op (reshape, permute, expand, pad, shrink, stride) is a new View over the same
buffer, so none of them copies data.  Strides count elements, not bytes.
"""
from functools import lru_cache
from math import prod
from typing import Optional, Tuple

Shape = Tuple[int, ...]


@lru_cache(maxsize=4096)
def contiguous_strides(shape: Shape) -> Tuple[int, ...]:
    strides, running = [], 1
    for size in reversed(shape):
        strides.append(running if size != 1 else 0)
        running *= size
    return tuple(reversed(strides))


def _useful_mask(mask, shape: Shape) -> Optional[Tuple[Tuple[int, int], ...]]:
    """Drop a mask that lets everything through, so unpadded views stay mask-free."""
    if mask is None or all(m == (0, n) for m, n in zip(mask, shape)):
        return None
    return tuple(mask)


class View:
    """Immutable by convention: every movement op returns a new View."""
    __slots__ = ("shape", "strides", "offset", "mask")

    def __init__(self, shape: Shape, strides: Tuple[int, ...], offset: int = 0,
                 mask: Optional[Tuple[Tuple[int, int], ...]] = None):
        self.shape, self.strides, self.offset, self.mask = shape, strides, offset, mask

    def __repr__(self):
        return f"View(shape={self.shape}, strides={self.strides}, offset={self.offset}, mask={self.mask})"

    def __eq__(self, other):
        return isinstance(other, View) and (self.shape, self.strides, self.offset, self.mask) == \
            (other.shape, other.strides, other.offset, other.mask)

    def __hash__(self):
        return hash((self.shape, self.strides, self.offset, self.mask))

    @staticmethod
    def contiguous(shape: Shape) -> "View":
        return View(tuple(shape), contiguous_strides(shape))

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def is_run(self) -> bool:
        """True when this view reads one stretch of the buffer in order, from its offset on."""
        return self.mask is None and all(
            st == cs for st, cs, n in zip(self.strides, contiguous_strides(self.shape), self.shape) if n != 1)

    @property
    def is_contiguous(self) -> bool:
        """True when reading through this view is the same as reading the buffer in order."""
        return self.offset == 0 and self.mask is None and all(
            st == cs for st, cs, n in zip(self.strides, contiguous_strides(self.shape), self.shape) if n != 1)

    # ---- the movement ops ------------------------------------------------------
    def permute(self, order: Tuple[int, ...]) -> "View":
        mask = tuple(self.mask[i] for i in order) if self.mask else None
        return View(tuple(self.shape[i] for i in order), tuple(self.strides[i] for i in order), self.offset, mask)

    def expand(self, new_shape: Shape) -> "View":
        strides, mask = [], []
        for i, (old, new) in enumerate(zip(self.shape, new_shape)):
            strides.append(self.strides[i] if old == new else 0)
            m = self.mask[i] if self.mask else (0, old)
            mask.append(m if old == new else ((0, new) if m == (0, 1) else (0, 0)))
        return View(tuple(new_shape), tuple(strides), self.offset, _useful_mask(mask, new_shape))

    def shrink(self, bounds: Tuple[Tuple[int, int], ...]) -> "View":
        offset = self.offset + sum(start * st for (start, _), st in zip(bounds, self.strides))
        shape = tuple(end - start for start, end in bounds)
        mask = None
        if self.mask:
            mask = tuple((min(max(m0 - start, 0), n), min(max(m1 - start, 0), n))
                         for (m0, m1), (start, _), n in zip(self.mask, bounds, shape))
        return View(shape, self.strides, offset, _useful_mask(mask, shape))

    def pad(self, padding: Tuple[Tuple[int, int], ...]) -> "View":
        offset = self.offset - sum(before * st for (before, _), st in zip(padding, self.strides))
        shape = tuple(n + before + after for n, (before, after) in zip(self.shape, padding))
        old_mask = self.mask or tuple((0, n) for n in self.shape)
        mask = tuple((m0 + before, m1 + before) for (m0, m1), (before, _) in zip(old_mask, padding))
        return View(shape, self.strides, offset, _useful_mask(mask, shape))

    def flip(self, axes: Tuple[int, ...]) -> "View":
        """Read the given axes backwards: start at the last element, step by -stride."""
        offset = self.offset + sum((self.shape[a] - 1) * self.strides[a] for a in axes if self.shape[a] > 0)
        strides = tuple(-st if i in axes else st for i, st in enumerate(self.strides))
        mask = None
        if self.mask:
            mask = tuple((n - hi, n - lo) if i in axes else (lo, hi)
                         for i, ((lo, hi), n) in enumerate(zip(self.mask, self.shape)))
        return View(self.shape, strides, offset, mask)

    def stride(self, steps: Tuple[int, ...]) -> "View":
        """Every steps[k]-th element along axis k, starting at the first; a negative step
        starts at the last element and walks backwards (numpy's x[::-k])."""
        flipped = tuple(i for i, s in enumerate(steps) if s < 0)
        if flipped:
            return self.flip(flipped).stride(tuple(abs(s) for s in steps))
        shape = tuple(-(-n // s) for n, s in zip(self.shape, steps))
        strides = tuple(st * s for st, s in zip(self.strides, steps))
        mask = None
        if self.mask:
            mask = tuple((-(-lo // s), -(-hi // s)) for (lo, hi), s in zip(self.mask, steps))
        return View(shape, strides, self.offset, _useful_mask(mask, shape))

    def reshape(self, new_shape: Shape) -> Optional["View"]:
        """The view of new_shape reading the same elements in the same order, or None when
        no single strided view can do that (then the caller must copy first)."""
        new_shape = tuple(new_shape)
        if new_shape == self.shape:
            return self
        if prod(new_shape) == 0:
            return View.contiguous(new_shape)
        if self.mask is not None:
            return self._reshape_masked(new_shape)
        # Group old and new dims into runs of equal element count (dims of size 1 dropped);
        # a run of old dims can merge only if it is contiguous within itself.
        old = [(n, st) for n, st in zip(self.shape, self.strides) if n != 1]
        new = [n for n in new_shape if n != 1]
        new_strides, oi, ni = [], 0, 0
        while ni < len(new):
            oj, nj = oi + 1, ni + 1
            old_count, new_count = old[oi][0], new[ni]
            while old_count != new_count:
                if new_count < old_count:
                    new_count *= new[nj]; nj += 1
                else:
                    old_count *= old[oj][0]; oj += 1
            for k in range(oi, oj - 1):
                if old[k][1] != old[k + 1][0] * old[k + 1][1]:
                    return None
            stride = old[oj - 1][1]
            run = []
            for k in range(nj - 1, ni - 1, -1):
                run.append(stride)
                stride *= new[k]
            new_strides.extend(reversed(run))
            oi, ni = oj, nj
        it = iter(new_strides)
        return View(new_shape, tuple(0 if n == 1 else next(it) for n in new_shape), self.offset)

    def _reshape_masked(self, new_shape: Shape) -> Optional["View"]:
        """With padding, only adding or removing dims of size 1 keeps a single view."""
        if [n for n in self.shape if n != 1] != [n for n in new_shape if n != 1]:
            return None
        if any(n == 1 and m != (0, 1) for n, m in zip(self.shape, self.mask)):
            return None
        kept = [(n, st, m) for n, st, m in zip(self.shape, self.strides, self.mask) if n != 1]
        it = iter(kept)
        strides, mask = [], []
        for n in new_shape:
            if n == 1:
                strides.append(0); mask.append((0, 1))
            else:
                _, st, m = next(it)
                strides.append(st); mask.append(m)
        return View(new_shape, tuple(strides), self.offset, tuple(mask))

    def unmasked(self) -> "View":
        """The part of this view inside its mask, as a plain strided view."""
        return self.shrink(self.mask) if self.mask else self
