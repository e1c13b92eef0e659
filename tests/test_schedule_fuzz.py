"""Random lazy graphs against numpy: pads, shrinks, cats, expands, permutes, reshapes, where,
comparisons, casts and constants (inf and -0 among them) mixed at random, a few outputs realized
together.  The fusion rules of schedule.py decide per graph what gets a buffer and how views move
down through inlined nodes; a wrong decision shows here as a wrong number (it found a padded read
judged before a later reader gave one of its sources a buffer).

Comparisons and casts read only the graph's inputs, so no near-tie of rounded values (an exp
computed by the C library here and numpy there) can flip them."""
import random

import numpy as np
import pytest

from minigrad import Tensor, realize

CONSTANTS = [0.0, 1.0, -0.0, 2.5, -1.0, float("inf"), float("-inf")]
SHAPE = (4, 4)
GRAPHS = 200


def _grow(r, pool, inputs, device):
    """A new node from random earlier ones (and the graph's inputs): (tensor, numpy value)."""
    (t, a), (u, b) = r.choice(pool), r.choice(pool)
    (ti, ai), (ui, bi) = r.choice(inputs), r.choice(inputs)
    c = r.choice(CONSTANTS)
    full = Tensor.full(SHAPE, c, device=device)
    k = r.randrange(17)
    if k == 0:
        return t.exp(), np.exp(a)
    if k == 15:                      # exp(t) - 1 is 0 in padding only while exp(t), kept for later
        e = t.exp()                  # readers too, has no buffer
        pool.append((e, np.exp(a)))
        return e - 1, np.exp(a) - 1
    if k == 1:
        return -t, -a
    if k == 2:
        return t + u, a + b
    if k == 3:
        return t - u, a - b
    if k == 4:
        return t * u, a * b
    if k == 5:
        return t.maximum(u), np.maximum(a, b)
    if k == 6:
        return [(t + full, a + np.float32(c)), (t * full, a * np.float32(c)), (full - t, np.float32(c) - a)][r.randrange(3)]
    if k == 7:
        if r.random() < 0.5:
            return (ti < ui).where(t, u), np.where(ai < bi, a, b)
        return (ti == ui).where(c, u), np.where(ai == bi, np.float32(c), b)
    if k == 8:
        return (ti < ui).float() * t, (ai < bi).astype(np.float32) * a
    if k == 9:                                     # a shift: pad, then shrink
        p, axis = r.randrange(1, 3), r.randrange(2)
        padding = [(0, 0), (0, 0)]
        padding[axis] = (p, p)
        start = r.randrange(0, 2 * p + 1)
        bounds = [(0, 4), (0, 4)]
        bounds[axis] = (start, start + 4)
        return t.pad(tuple(padding)).shrink(tuple(bounds)), np.pad(a, padding)[tuple(slice(*x) for x in bounds)]
    if k == 10:
        if r.random() < 0.5:
            return Tensor.cat(t[:2], u[2:], dim=0), np.concatenate([a[:2], b[2:]], 0)
        return Tensor.cat(t[:, 1:], u[:, :1], dim=1), np.concatenate([a[:, 1:], b[:, :1]], 1)
    if k == 11:
        return t.permute(1, 0), a.T
    if k == 12:
        if r.random() < 0.5:
            return t[1:2].expand(*SHAPE), np.broadcast_to(a[1:2], SHAPE)
        return t[:, 2:3].expand(*SHAPE), np.broadcast_to(a[:, 2:3], SHAPE)
    if k == 13:
        return t.reshape(2, 8).permute(1, 0).reshape(*SHAPE), a.reshape(2, 8).T.reshape(SHAPE)
    if k == 14:
        return (ti * 3).cast("int32").float(), (ai * 3).astype(np.int32).astype(np.float32)
    if k == 16:                      # one piece padded, the other transposed: often the same nodes
        return Tensor.cat(t[:2], u.permute(1, 0)[2:], dim=0), np.concatenate([a[:2], b.T[2:]], 0)


@pytest.mark.parametrize("seed", range(0, GRAPHS, 20))
def test_random_graphs_give_what_numpy_gives(device, seed):
    for s in range(seed, seed + 20):
        r, rng = random.Random(s), np.random.default_rng(s)
        values = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(3)]
        if r.random() < 0.3:
            values[1] = np.round(values[1])            # ties for ==
        inputs = [(Tensor(x, device=device), x) for x in values]
        pool = list(inputs)
        with np.errstate(all="ignore"):
            for _ in range(r.randrange(3, 12)):
                t, a = _grow(r, pool, inputs, device)
                pool.append((t, np.ascontiguousarray(a, dtype=np.float32)))
            outputs = pool[-3:]
            realize(*[t for t, _ in outputs])
            for k, (t, a) in enumerate(outputs):
                np.testing.assert_allclose(t.numpy(), a, rtol=1e-4, atol=1e-5, equal_nan=True,
                                           err_msg=f"graph {s}, output {k}")
