"""View against an np.arange twin: each movement op is replayed on a numpy array holding every
element's buffer index (+1, so that 0 marks padding), and reading the buffer through the View
by its definition (offset + sum(i_k * strides[k]), 0 outside the mask) must give the same array,
element by element.  Random chains of ops cover the combinations (a pad after a stride after a
permute, ...)."""
import numpy as np
import pytest

from minigrad.view import View, contiguous_strides


def read(view: View, buffer: np.ndarray) -> np.ndarray:
    """The View's definition, one element at a time."""
    out = np.zeros(view.shape, dtype=buffer.dtype)
    for idx in np.ndindex(*view.shape):
        if view.mask is not None and not all(lo <= i < hi for i, (lo, hi) in zip(idx, view.mask)):
            continue
        out[idx] = buffer[view.offset + sum(i * st for i, st in zip(idx, view.strides))]
    return out


def start(shape):
    twin = np.arange(1, int(np.prod(shape)) + 1).reshape(shape)
    return View.contiguous(shape), twin, twin.reshape(-1).copy()


def random_op(rng, view: View, twin: np.ndarray):
    """One random movement op applied to both: (name, new view, new twin); the view may be None
    for a reshape that needs a copy."""
    shape, ndim = twin.shape, twin.ndim
    kind = rng.choice(["permute", "expand", "pad", "shrink", "stride", "reshape", "reshape"])
    if kind == "permute":
        order = tuple(int(i) for i in rng.permutation(ndim))
        return f"permute{order}", view.permute(order), twin.transpose(order)
    if kind == "expand":
        ones = [i for i, n in enumerate(shape) if n == 1]
        if not ones:
            view, twin = view.reshape(shape + (1,)), twin.reshape(shape + (1,))
            shape, ones = twin.shape, [ndim]
        new = tuple(int(rng.integers(2, 4)) if i in ones else n for i, n in enumerate(shape))
        return f"expand{new}", view.expand(new), np.broadcast_to(twin, new)
    if kind == "pad":
        padding = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in shape)
        return f"pad{padding}", view.pad(padding), np.pad(twin, padding)
    if kind == "shrink":
        bounds = []
        for n in shape:
            lo = int(rng.integers(0, n))
            bounds.append((lo, int(rng.integers(lo + 1, n + 1))))
        bounds = tuple(bounds)
        return f"shrink{bounds}", view.shrink(bounds), twin[tuple(slice(lo, hi) for lo, hi in bounds)]
    if kind == "stride":
        steps = tuple(int(rng.integers(1, 4)) for _ in shape)
        return f"stride{steps}", view.stride(steps), twin[tuple(slice(None, None, s) for s in steps)]
    size = twin.size                                      # reshape: split or merge a random factorization
    dims, rest = [], size
    while rest > 1 and len(dims) < 4:
        divisors = [d for d in range(2, rest + 1) if rest % d == 0]
        d = int(rng.choice(divisors))
        dims.append(d)
        rest //= d
    new = tuple(dims) or (1,)
    if rng.random() < 0.3:
        new = new + (1,)
    return f"reshape{new}", view.reshape(new), twin.reshape(new)


@pytest.mark.parametrize("seed", range(40))
def test_random_chains_read_like_their_numpy_twin(seed):
    rng = np.random.default_rng(seed)
    view, twin, buffer = start(tuple(int(n) for n in rng.integers(1, 5, size=int(rng.integers(1, 4)))))
    history = []
    for _ in range(6):
        name, new_view, new_twin = random_op(rng, view, twin)
        history.append(name)
        if new_view is None:                  # needs a copy: the caller materializes, and so do we
            assert "reshape" in name, f"only reshape may refuse: {history}"
            view, twin, buffer = start(new_twin.shape)[0], new_twin, new_twin.reshape(-1).copy()
            continue
        view, twin = new_view, new_twin
        assert view.shape == twin.shape, f"{history}: shape {view.shape} vs numpy {twin.shape}"
        np.testing.assert_array_equal(read(view, buffer), twin, err_msg=f"after {history}: {view}")
        assert all(type(x) is int for x in (view.offset, *view.strides)), f"{history}: {view}"
        if view.mask is not None:
            assert all(type(b) is int for m in view.mask for b in m), f"{history}: non-integer mask {view.mask}"
            assert any(m != (0, n) for m, n in zip(view.mask, view.shape)), f"{history}: a mask that hides nothing"
            assert (twin == 0).any(), f"{history}: a mask but no padding"


def test_reshape_merging_permuted_dims_needs_a_copy():
    view = View.contiguous((2, 3, 4)).permute((0, 2, 1))
    assert view.reshape((2, 12)) is None, "a reshape across a permute cannot be one strided view"
    assert view.reshape((2, 4, 3, 1)) is not None, "adding a dim of size 1 is always a view"
    padded = View.contiguous((2, 3)).pad(((1, 0), (0, 0)))
    assert padded.reshape((9,)) is None, "merging padded dims needs a copy"
    assert padded.reshape((3, 1, 3)).mask == ((1, 3), (0, 1), (0, 3))
    row = View.contiguous((1, 3)).pad(((0, 0), (1, 0)))            # a size-1 dim that holds data
    assert row.reshape((4,)) == View((4,), (1,), -1, ((1, 4),)), "dropping a size-1 dim keeps the view"
    hidden = View.contiguous((1, 3)).pad(((1, 0), (0, 0))).shrink(((0, 1), (0, 3)))   # the size-1 dim is all padding
    assert hidden.mask == ((1, 1), (0, 3)) and hidden.reshape((3,)) is None, "that padding cannot be dropped"


def test_contiguity_and_sizes():
    base = View.contiguous((3, 4))
    assert base.is_contiguous and base.size == 12
    assert base.strides == contiguous_strides((3, 4)) == (4, 1)
    assert contiguous_strides((3, 1, 4)) == (4, 0, 1), "a dim of size 1 gets stride 0"
    assert not base.permute((1, 0)).is_contiguous
    assert not base.shrink(((1, 3), (0, 4))).is_contiguous, "an offset view is not the buffer in order"
    assert not base.pad(((0, 1), (0, 0))).is_contiguous
    assert base.reshape((1, 12)).is_contiguous and base.reshape((12,)).is_contiguous
    expanded = View.contiguous((3, 1)).expand((3, 5))
    assert not expanded.is_contiguous and expanded.strides == (1, 0) and expanded.size == 15


def test_padding_nothing_leaves_no_mask_and_unmasked_drops_the_padding():
    base = View.contiguous((2, 3))
    assert base.pad(((0, 0), (0, 0))).mask is None
    padded = base.pad(((1, 2), (0, 1)))
    assert padded.mask == ((1, 3), (0, 3)) and padded.shape == (5, 4)
    assert padded.unmasked() == base
    assert padded.shrink(((1, 3), (0, 3))).mask is None, "shrinking back to the data drops the mask"
    assert base.unmasked() is base


def test_views_compare_and_hash_by_value():
    a = View.contiguous((2, 3)).permute((1, 0))
    b = View((3, 2), (1, 3), 0, None)
    assert a == b and hash(a) == hash(b) and a != View((3, 2), (1, 3), 1, None)
    assert a != "View" and "shape=(3, 2)" in repr(a)
    others = [View.contiguous((2, 3)), View((3, 2), (1, 3), 1, None), View((3, 2), (1, 3), 0, ((0, 1), (0, 2)))]
    assert len({hash(v) for v in [a] + others}) == 4, "different views should hash apart (they key caches)"
