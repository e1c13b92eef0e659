"""Forward values and gradients of minigrad ops against PyTorch (CPU, float32), and optimizer
trajectories against torch.optim.  PyTorch is only an oracle here: minigrad never imports it."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from minigrad import Tensor, nn, optim
from op_cases import BINARY

RTOL, ATOL = 1e-5, 1e-5


def _close(actual, desired, what, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol,
                               err_msg=f"{what}: minigrad (actual) vs torch (desired)")


def parity(fn, *arrays, device, torch_fn=None, rtol=RTOL, atol=ATOL, grad_rtol=None, grad_atol=None, seed=0,
           dtypes=None):
    """fn(*minigrad tensors) vs torch_fn(*torch tensors) (torch_fn defaults to fn: most ops are
    spelled the same), forward values and the gradients of sum(out * W) for random W.  Inputs
    are float32 unless `dtypes` says otherwise; integer inputs get no gradient."""
    torch_fn = torch_fn or fn
    arrays = [np.asarray(a, dtype=dtype) for a, dtype in zip(arrays, dtypes or [np.float32] * len(arrays))]
    ours = [Tensor(a, device=device, requires_grad=a.dtype.kind == "f") for a in arrays]
    theirs = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    out, ref = fn(*ours), torch_fn(*theirs)
    assert tuple(out.shape) == tuple(ref.shape), f"shape: minigrad {out.shape} vs torch {tuple(ref.shape)}"
    ref_dtype = ref.detach().numpy().dtype
    assert out.dtype == ref_dtype, f"minigrad output dtype {out.dtype}, torch {ref_dtype}"
    _close(out.numpy(), ref.detach().numpy(), "forward", rtol, atol)
    weights = np.random.default_rng(seed).standard_normal(tuple(ref.shape)).astype(ref_dtype)
    (out * Tensor(weights, device=device)).sum().backward()
    (ref * torch.tensor(weights)).sum().backward()
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if not b.requires_grad:
            assert a.grad is None, f"integer input {k}: minigrad gave it a gradient"
            continue
        assert a.grad is not None, f"input {k}: minigrad gave no gradient"
        assert a.grad.dtype == b.grad.numpy().dtype, f"input {k}: gradient dtype {a.grad.dtype} vs torch {b.grad.dtype}"
        _close(a.grad.numpy(), b.grad.numpy(), f"gradient of input {k} (shape {a.shape})",
               grad_rtol or rtol, grad_atol or atol)


def randn(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * scale


def positive(*shape, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape).astype(np.float32)


def away_from_zero(*shape, seed=0, margin=0.1):
    rng = np.random.default_rng(seed)
    return (rng.choice([-1.0, 1.0], shape) * rng.uniform(margin, 2.0, shape)).astype(np.float32)


# ---- elementwise -----------------------------------------------------------------------------------
UNARY = {
    "exp": (lambda x: x.exp(), None, randn),
    "log": (lambda x: x.log(), None, positive),
    "sqrt": (lambda x: x.sqrt(), None, positive),
    "reciprocal": (lambda x: x.reciprocal(), None, away_from_zero),
    "erf": (lambda x: x.erf(), None, randn),
    "relu": (lambda x: x.relu(), None, away_from_zero),
    "sigmoid": (lambda x: x.sigmoid(), None, randn),
    "tanh": (lambda x: x.tanh(), None, randn),
    "abs": (lambda x: x.abs(), None, away_from_zero),
    "square": (lambda x: x.square(), None, randn),
    "neg": (lambda x: -x, None, randn),
    "gelu_none": (lambda x: x.gelu(), lambda x: TF.gelu(x), randn),
    "gelu_tanh": (lambda x: x.gelu(approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), randn),
    "pow3": (lambda x: x ** 3, None, randn),
    "pow_neg2": (lambda x: x ** -2, None, away_from_zero),
    "pow_1_5": (lambda x: x ** 1.5, None, positive),
    "rpow": (lambda x: 2.0 ** x, None, randn),
    "rsub_rdiv": (lambda x: 1.0 - 3.0 / x, None, away_from_zero),
    "clip": (lambda x: x.clip(-0.5, 0.5), None, away_from_zero),
    "sign_times": (lambda x: x.sign() * x, lambda x: x.sign() * x, away_from_zero),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, device):
    fn, torch_fn, make = UNARY[name]
    parity(fn, make(4, 5, seed=1), device=device, torch_fn=torch_fn)


def test_gelu_wide_range(device):
    x = np.linspace(-6, 6, 61, dtype=np.float32)
    parity(lambda t: t.gelu(), x, device=device, torch_fn=lambda t: TF.gelu(t))
    parity(lambda t: t.gelu(approximate="tanh"), x, device=device, torch_fn=lambda t: TF.gelu(t, approximate="tanh"))




@pytest.mark.parametrize("shapes", [((3, 4), (4,)), ((2, 1, 4), (3, 1))], ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary(name, shapes, device):
    x = positive(*shapes[0], seed=2) if name == "pow" else randn(*shapes[0], seed=2)
    y = away_from_zero(*shapes[1], seed=3, margin=0.3) if name == "div" else randn(*shapes[1], seed=3)
    parity(BINARY[name], x, y, device=device)


def test_maximum_ties_split_the_gradient(device):
    x = np.array([1.0, 2.0, 3.0, -1.0], np.float32)
    y = np.array([1.0, 0.0, 3.0, 2.0], np.float32)
    parity(lambda a, b: a.maximum(b), x, y, device=device)
    parity(lambda a, b: a.minimum(b), x, y, device=device)


def test_where_and_masked_fill(device):
    cond = np.random.default_rng(4).random((3, 4)) > 0.5
    parity(lambda x, y: Tensor(cond, device=device).where(x, y), randn(3, 4, seed=5), randn(4, seed=6),
           device=device, torch_fn=lambda x, y: torch.where(torch.tensor(cond), x, y))
    parity(lambda x: x.masked_fill(Tensor(cond, device=device), -2.5), randn(3, 4, seed=7), device=device,
           torch_fn=lambda x: x.masked_fill(torch.tensor(cond), -2.5))


def test_comparisons_forward(device):
    a, b = randn(3, 4, seed=8), randn(4, seed=9)
    a[0, :] = b                              # some equal elements
    ta, tb = Tensor(a, device=device), Tensor(b, device=device)
    xa, xb = torch.tensor(a), torch.tensor(b)
    for name, ours, theirs in [("<", ta < tb, xa < xb), (">", ta > tb, xa > xb), ("<=", ta <= tb, xa <= xb),
                               (">=", ta >= tb, xa >= xb), ("==", ta == tb, xa == xb), ("!=", ta != tb, xa != xb)]:
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=f"comparison {name}")


# ---- reductions ---------------------------------------------------------------------------------
def _dims(axis, ndim):
    return tuple(range(ndim)) if axis is None else axis


REDUCTIONS = {
    "sum": (lambda x, a, k: x.sum(a, keepdim=k), lambda x, a, k: x.sum(_dims(a, x.ndim), keepdim=k)),
    "mean": (lambda x, a, k: x.mean(a, keepdim=k), lambda x, a, k: x.mean(_dims(a, x.ndim), keepdim=k)),
    "max": (lambda x, a, k: x.max(a, keepdim=k), lambda x, a, k: x.amax(_dims(a, x.ndim), keepdim=k)),
    "min": (lambda x, a, k: x.min(a, keepdim=k), lambda x, a, k: x.amin(_dims(a, x.ndim), keepdim=k)),
    "var": (lambda x, a, k: x.var(a, keepdim=k), lambda x, a, k: x.var(_dims(a, x.ndim), keepdim=k)),
    "std": (lambda x, a, k: x.std(a, keepdim=k), lambda x, a, k: x.std(_dims(a, x.ndim), keepdim=k)),
}


@pytest.mark.parametrize("axis,keepdim", [(None, False), (1, True), (-1, False), ((0, 2), False), ((-1, 0), True)],
                         ids=str)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction(name, axis, keepdim, device):
    ours, theirs = REDUCTIONS[name]
    parity(lambda x: ours(x, axis, keepdim), randn(2, 3, 4, seed=10), device=device,
           torch_fn=lambda x: theirs(x, axis, keepdim))


def test_max_ties_share_the_gradient(device):
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]], np.float32)
    parity(lambda t: t.max(1), x, device=device, torch_fn=lambda t: t.amax(1))
    parity(lambda t: t.min(), x, device=device, torch_fn=lambda t: t.amin())


@pytest.mark.parametrize("correction", [0, 1, 2])
def test_var_std_correction(correction, device):
    x = randn(4, 6, seed=11)
    parity(lambda t: t.var(1, correction=correction), x, device=device,
           torch_fn=lambda t: t.var(1, correction=correction))
    parity(lambda t: t.std(0, correction=correction), x, device=device,
           torch_fn=lambda t: t.std(0, correction=correction))


def test_long_reductions(device):
    x = randn(3, 20000, seed=12)
    loose = dict(rtol=1e-4, atol=1e-3, grad_rtol=1e-5, grad_atol=1e-6)
    parity(lambda t: t.sum(1), x, device=device, **loose)
    parity(lambda t: t.sum(), x, device=device, **loose)
    parity(lambda t: t.mean(1), x, device=device, **loose)
    parity(lambda t: t.var(1), x, device=device, torch_fn=lambda t: t.var(1), rtol=1e-4, atol=1e-4,
           grad_atol=1e-6)
    parity(lambda t: t.max(1), x, device=device, torch_fn=lambda t: t.amax(1))
    parity(lambda t: t.softmax(-1), x, device=device, rtol=1e-4, atol=1e-7)


# ---- softmax family, layernorm, cross-entropy ---------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_family(axis, device):
    x = randn(2, 3, 4, seed=13)
    parity(lambda t: t.softmax(axis), x, device=device)
    parity(lambda t: t.log_softmax(axis), x, device=device)
    parity(lambda t: t.logsumexp(axis), x, device=device, torch_fn=lambda t: torch.logsumexp(t, axis))
    parity(lambda t: t.logsumexp(axis, keepdim=True), x, device=device,
           torch_fn=lambda t: torch.logsumexp(t, axis, keepdim=True))


def test_softmax_large_logits_are_stable(device):
    x = np.array([[1000.0, 999.0, -1000.0, 0.0], [-1000.0, -1001.0, -999.5, -1000.0], [88.0, 89.0, 90.0, 1e4]],
                 np.float32)
    for name, ours, theirs in [("softmax", lambda t: t.softmax(-1), None),
                               ("log_softmax", lambda t: t.log_softmax(-1), None),
                               ("logsumexp", lambda t: t.logsumexp(-1), lambda t: torch.logsumexp(t, -1))]:
        got = ours(Tensor(x, device=device)).numpy()
        assert np.isfinite(got).all(), f"{name} of large logits is not finite: {got}"
        parity(ours, x, device=device, torch_fn=theirs)


def test_softmax_with_causal_mask(device):
    causal = np.triu(np.ones((5, 5), dtype=bool), k=1)
    parity(lambda t: t.masked_fill(Tensor(causal, device=device), float("-inf")).softmax(-1), randn(2, 5, 5, seed=14),
           device=device, torch_fn=lambda t: t.masked_fill(torch.tensor(causal), float("-inf")).softmax(-1))


def test_layernorm_function(device):
    parity(lambda t: t.layernorm(), randn(4, 8, seed=15), device=device,
           torch_fn=lambda t: TF.layer_norm(t, (8,)), atol=1e-5, rtol=1e-4)
    parity(lambda t: t.layernorm(eps=1e-3), randn(2, 3, 8, seed=16, scale=0.05), device=device,
           torch_fn=lambda t: TF.layer_norm(t, (8,), eps=1e-3), atol=1e-5, rtol=1e-4)
    parity(lambda t, w, b: t.layernorm(weight=w, bias=b), randn(2, 3, 8, seed=17), randn(8, seed=18),
           randn(8, seed=19), device=device, torch_fn=lambda t, w, b: TF.layer_norm(t, (8,), w, b),
           atol=1e-5, rtol=1e-4)
    parity(lambda t, w: t.layernorm(weight=w), randn(2, 3, 8, seed=17), randn(8, seed=18), device=device,
           torch_fn=lambda t, w: TF.layer_norm(t, (8,), w), atol=1e-5, rtol=1e-4)


def test_layernorm_module(device):
    rng = np.random.default_rng(17)
    weight, bias = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    ours, theirs = nn.LayerNorm(6), torch.nn.LayerNorm(6)
    ours.weight = Tensor(weight, device=device, requires_grad=True)
    ours.bias = Tensor(bias, device=device, requires_grad=True)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(weight))
        theirs.bias.copy_(torch.tensor(bias))
    x = randn(3, 4, 6, seed=18)
    parity(lambda t: ours(t), x, device=device, torch_fn=lambda t: theirs(t), rtol=1e-4)
    _close(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), "LayerNorm weight grad", rtol=1e-4)
    _close(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), "LayerNorm bias grad", rtol=1e-4)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(reduction, device):
    logits, targets = randn(6, 5, seed=19, scale=3.0), np.array([0, 4, 2, 2, 1, 3])
    parity(lambda t: t.cross_entropy(Tensor(targets, device=device), reduction=reduction), logits, device=device,
           torch_fn=lambda t: TF.cross_entropy(t, torch.tensor(targets), reduction=reduction))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_ignore_index(reduction, device):
    logits, targets = randn(6, 5, seed=20), np.array([0, -100, 2, -100, 1, 4])
    parity(lambda t: t.cross_entropy(Tensor(targets, device=device), ignore_index=-100, reduction=reduction),
           logits, device=device,
           torch_fn=lambda t: TF.cross_entropy(t, torch.tensor(targets), ignore_index=-100, reduction=reduction))
    targets = np.array([3, -1, -1, 0, 1, 2])     # minigrad's default ignore_index is -1
    parity(lambda t: t.cross_entropy(Tensor(targets, device=device), reduction=reduction), logits, device=device,
           torch_fn=lambda t: TF.cross_entropy(t, torch.tensor(targets), ignore_index=-1, reduction=reduction))
    targets = np.array([3, 2, 2, 0, 1, 2])      # an ignored class that is also a column: its logits still count
    parity(lambda t: t.cross_entropy(Tensor(targets, device=device), ignore_index=2, reduction=reduction), logits,
           device=device, torch_fn=lambda t: TF.cross_entropy(t, torch.tensor(targets), ignore_index=2, reduction=reduction))


def test_cross_entropy_large_logits(device):
    logits = randn(4, 3, seed=21, scale=1000.0)
    targets = np.array([0, 1, 2, 1])
    parity(lambda t: t.cross_entropy(Tensor(targets, device=device)), logits, device=device,
           torch_fn=lambda t: TF.cross_entropy(t, torch.tensor(targets)), rtol=1e-5, atol=1e-3)


# ---- argmax, one_hot -----------------------------------------------------------------------------
@pytest.mark.parametrize("axis,keepdim", [(None, False), (0, False), (1, False), (-1, True)], ids=str)
def test_argmax_argmin(axis, keepdim, device):
    x = np.random.default_rng(22).integers(0, 4, (5, 6)).astype(np.float32)   # many ties: first index wins
    t, ref = Tensor(x, device=device), torch.tensor(x)
    for name, ours, theirs in [("argmax", t.argmax(axis, keepdim=keepdim), ref.argmax(axis, keepdim=keepdim)),
                               ("argmin", t.argmin(axis, keepdim=keepdim), ref.argmin(axis, keepdim=keepdim))]:
        got = ours.numpy()
        assert got.dtype.kind in "iu", f"{name} returned dtype {got.dtype}"
        np.testing.assert_array_equal(got, theirs.numpy(), err_msg=f"{name}(axis={axis}, keepdim={keepdim})")


def test_one_hot(device):
    idx = np.array([[0, 3], [2, 2], [4, 1]])
    got = Tensor(idx, device=device).one_hot(5).numpy()
    ref = TF.one_hot(torch.tensor(idx), 5).numpy()
    np.testing.assert_array_equal(got, ref, err_msg="one_hot: minigrad vs torch")


# ---- linear algebra, indexing, combining ------------------------------------------------------------
@pytest.mark.parametrize("shapes", [((5,), (5,)), ((3, 5), (5,)), ((3, 5), (5, 4)), ((2, 3, 5), (5, 4)),
                                    ((2, 3, 5), (2, 5, 4)), ((2, 1, 3, 5), (3, 5, 2))], ids=str)
def test_matmul(shapes, device):
    parity(lambda a, b: a @ b, randn(*shapes[0], seed=23), randn(*shapes[1], seed=24), device=device, rtol=1e-4)


def test_matmul_views_and_linear(device):
    parity(lambda a, b: a.T @ b.permute(0, 2, 1), randn(5, 3, seed=25), randn(2, 4, 5, seed=26), device=device,
           torch_fn=lambda a, b: a.T @ b.permute(0, 2, 1), rtol=1e-4)
    parity(lambda x, w, b: x.linear(w, b), randn(2, 3, 5, seed=27), randn(4, 5, seed=28), randn(4, seed=29),
           device=device, torch_fn=lambda x, w, b: TF.linear(x, w, b), rtol=1e-4)


def test_larger_matmul(device):
    parity(lambda a, b: a @ b, randn(33, 70, seed=30), randn(70, 17, seed=31), device=device, rtol=1e-4, atol=1e-4)


def test_embedding_lookup(device):
    idx = np.array([[1, 4, 1], [0, 0, 3]])
    parity(lambda t: t[Tensor(idx, device=device)], randn(5, 4, seed=32), device=device,
           torch_fn=lambda t: TF.embedding(torch.tensor(idx), t))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_take_axis(axis, device):
    idx = np.array([[1, 0], [1, 1], [2, 0]])
    x = randn(3, 4, 3, seed=33)

    def take(t):
        picked = torch.index_select(t, axis, torch.tensor(idx.reshape(-1)))
        return picked.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])
    parity(lambda t: t.take(Tensor(idx, device=device), axis), x, device=device, torch_fn=take)


def test_movement(device):
    x = randn(2, 3, 4, seed=34)
    cases = [
        (lambda t: t.reshape(-1, 6), None),
        (lambda t: t.permute(2, 0, 1), None),
        (lambda t: t.transpose(0, 2), None),
        (lambda t: t[1:, ::2, None, -3:], None),
        (lambda t: t[1, :, 2], None),
        (lambda t: t.flatten(1), None),
        (lambda t: t.unsqueeze(0).expand(3, 2, 3, 4), None),
        (lambda t: t.pad(((0, 1), (2, 0), (1, 1))), lambda t: TF.pad(t, (1, 1, 2, 0, 0, 1))),
        (lambda t: t.shrink(((0, 1), (1, 3), (0, 4))), lambda t: t[0:1, 1:3, 0:4]),
    ]
    for fn, torch_fn in cases:
        parity(fn, x, device=device, torch_fn=torch_fn)


def test_cat_stack(device):
    a, b = randn(2, 3, seed=35), randn(2, 5, seed=36)
    parity(lambda x, y: Tensor.cat(x, y, x, axis=1), a, b, device=device,
           torch_fn=lambda x, y: torch.cat([x, y, x], 1))
    parity(lambda x, y: Tensor.stack([x, y[:, :3]], axis=-1), a, b, device=device,
           torch_fn=lambda x, y: torch.stack([x, y[:, :3]], -1))


# ---- nn layers ---------------------------------------------------------------------------------
def test_linear_layout_and_forward(device):
    ours, theirs = nn.Linear(5, 3), torch.nn.Linear(5, 3)
    assert ours.weight.shape == tuple(theirs.weight.shape), \
        f"Linear weight shape: minigrad {ours.weight.shape} vs torch {tuple(theirs.weight.shape)}"
    assert ours.bias.shape == tuple(theirs.bias.shape), \
        f"Linear bias shape: minigrad {ours.bias.shape} vs torch {tuple(theirs.bias.shape)}"
    bound = 1 / math.sqrt(5)
    assert np.abs(ours.weight.numpy()).max() <= bound, "Linear init outside torch's +-1/sqrt(in_features)"
    w, b = ours.weight.numpy(), ours.bias.numpy()
    ours.weight = Tensor(w, device=device, requires_grad=True)
    ours.bias = Tensor(b, device=device, requires_grad=True)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(w))
        theirs.bias.copy_(torch.tensor(b))
    parity(lambda x: ours(x), randn(4, 5, seed=37), device=device, torch_fn=lambda x: theirs(x))
    _close(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), "Linear weight grad")
    _close(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), "Linear bias grad")


# ---- optimizers ---------------------------------------------------------------------------------
def _init_mlp(seed=0):
    rng = np.random.default_rng(seed)
    return {"l1.weight": rng.uniform(-0.5, 0.5, (16, 4)), "l1.bias": rng.uniform(-0.5, 0.5, 16),
            "l2.weight": rng.uniform(-0.25, 0.25, (3, 16)), "l2.bias": rng.uniform(-0.25, 0.25, 3)}


class OurMLP(nn.Module):
    def __init__(self, init, device):
        self.l1, self.l2 = nn.Linear(4, 16), nn.Linear(16, 3)
        for name, value in init.items():
            layer, attr = name.split(".")
            setattr(getattr(self, layer), attr, Tensor(value.astype(np.float32), device=device, requires_grad=True))

    def forward(self, x):
        return self.l2(self.l1(x).relu())


def _torch_mlp(init):
    model = torch.nn.Sequential()
    model.l1, model.act, model.l2 = torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.tensor(init[name].astype(np.float32)))
    return model


def _data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((12, 4)).astype(np.float32), rng.integers(0, 3, 12)


OPTIMIZERS = {
    "AdamW": (lambda p: optim.AdamW(p, lr=1e-2, weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1)),
    "Adam": (lambda p: optim.Adam(p, lr=1e-2, weight_decay=0.01),
             lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.01)),
    "Adam_betas": (lambda p: optim.Adam(p, lr=3e-2, betas=(0.8, 0.95), eps=1e-6),
                   lambda p: torch.optim.Adam(p, lr=3e-2, betas=(0.8, 0.95), eps=1e-6)),
    "SGD_momentum_wd": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
                        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
    "SGD_nesterov": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)),
    "SGD_plain": (lambda p: optim.SGD(p, lr=0.2), lambda p: torch.optim.SGD(p, lr=0.2)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_trajectory(name, device):
    make_ours, make_theirs = OPTIMIZERS[name]
    init = _init_mlp()
    ours, theirs = OurMLP(init, device), _torch_mlp(init)
    opt_ours, opt_theirs = make_ours(ours.parameters()), make_theirs(theirs.parameters())
    x, y = _data()
    xt, yt = Tensor(x, device=device), Tensor(y, device=device)
    for step in range(10):
        loss = ours(xt).cross_entropy(yt)
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad()
        ref = TF.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
        ref.backward()
        opt_theirs.step()
        opt_theirs.zero_grad()
        _close(loss.item(), ref.item(), f"{name} loss at step {step}", rtol=1e-4, atol=1e-5)
    ours_params = dict(ours.named_parameters())
    for pname, p in theirs.named_parameters():
        _close(ours_params[pname].numpy(), p.detach().numpy(), f"{name}: {pname} after 10 steps",
               rtol=1e-4, atol=1e-5)
    assert opt_ours.step_count == 10, f"step_count {opt_ours.step_count} after 10 steps"


def test_optimizer_defaults_match_torch_optim():
    p = Tensor(np.zeros(3, np.float32), requires_grad=True)
    for ours, theirs in [(optim.Adam(p), torch.optim.Adam([torch.zeros(3)])),
                         (optim.AdamW(p), torch.optim.AdamW([torch.zeros(3)]))]:
        d = theirs.defaults
        assert (ours.lr, (ours.b1, ours.b2), ours.eps, ours.weight_decay) == \
            (d["lr"], d["betas"], d["eps"], d["weight_decay"]), f"{type(ours).__name__} defaults differ from torch's"
    sgd, d = optim.SGD(p), torch.optim.SGD([torch.zeros(3)]).defaults
    assert (sgd.momentum, sgd.weight_decay, sgd.nesterov) == (d["momentum"], d["weight_decay"], d["nesterov"])
    with pytest.raises(ValueError, match="^optimizer got no parameters that require grad$"):
        optim.SGD([Tensor(np.zeros(3, np.float32))])


def test_adam_state_keeps_the_parameters_dtype(device):
    p = Tensor(np.ones(4), device=device, requires_grad=True)                  # float64
    opt = optim.AdamW([p], lr=0.1)
    (p * Tensor(np.arange(4.0), device=device)).sum().backward()
    opt.step()
    assert p.dtype == np.float64 and all(a.dtype == np.float64 for a in opt.state_dict()["state"].values())


def test_clip_grad_norm_without_gradients_is_zero():
    assert optim.clip_grad_norm_([Tensor(np.ones(3, np.float32), requires_grad=True)], 1.0).item() == 0.0


@pytest.mark.parametrize("name", ["AdamW", "SGD_momentum_wd"])
def test_optimizer_state_dict_resumes_the_trajectory(name, device):
    """3 steps, state_dict(), a fresh optimizer loads it, 2 more steps: the weights of 5 steps in one go."""
    make_ours = OPTIMIZERS[name][0]
    x, y = _data(6)
    xt, yt = Tensor(x, device=device), Tensor(y, device=device)

    def steps(model, opt, n):
        for _ in range(n):
            model(xt).cross_entropy(yt).backward()
            opt.step()
            opt.zero_grad()

    straight = OurMLP(_init_mlp(6), device)
    steps(straight, make_ours(straight.parameters()), 5)
    resumed = OurMLP(_init_mlp(6), device)
    first = make_ours(resumed.parameters())
    fresh_state = first.state_dict()["state"]
    shapes = [p.shape for p in first.params]
    assert all(v.shape in shapes for v in fresh_state.values()), "state arrays have their parameter's shape"
    steps(resumed, first, 3)
    saved = first.state_dict()
    assert saved["step_count"] == 3 and len(saved["state"]) >= len(first.params)
    second = make_ours(resumed.parameters())
    second.load_state_dict(saved)
    steps(resumed, second, 2)
    assert second.step_count == 5
    mine = dict(resumed.named_parameters())
    for pname, p in straight.named_parameters():
        np.testing.assert_allclose(mine[pname].numpy(), p.numpy(), rtol=1e-6, atol=1e-7,
                                   err_msg=f"{name}: {pname} after 3 + 2 steps vs 5 steps")


def test_optimizer_lr_change_is_seen(device):
    init = _init_mlp(2)
    ours, theirs = OurMLP(init, device), _torch_mlp(init)
    opt_ours = optim.AdamW(ours.parameters(), lr=1e-2, weight_decay=0.1)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1)
    x, y = _data(3)
    for step in range(5):
        lr = optim.cosine_lr(step, 1e-2, 1e-3, warmup_iters=2, decay_iters=4)
        opt_ours.lr = lr
        for group in opt_theirs.param_groups:
            group["lr"] = lr
        ours(Tensor(x, device=device)).cross_entropy(Tensor(y, device=device)).backward()
        opt_ours.step()
        opt_ours.zero_grad()
        TF.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        opt_theirs.step()
        opt_theirs.zero_grad()
    ours_params = dict(ours.named_parameters())
    for pname, p in theirs.named_parameters():
        _close(ours_params[pname].numpy(), p.detach().numpy(), f"{pname} after 5 steps with changing lr",
               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("max_norm", [0.1, 1e3])
def test_clip_grad_norm(max_norm, device):
    init = _init_mlp(4)
    ours, theirs = OurMLP(init, device), _torch_mlp(init)
    x, y = _data(5)
    ours(Tensor(x, device=device)).cross_entropy(Tensor(y, device=device)).backward()
    TF.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
    norm = optim.clip_grad_norm_(ours.parameters(), max_norm)
    ref = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    _close(norm.item(), ref.item(), "clip_grad_norm_ returned norm", rtol=1e-5)
    ours_params = dict(ours.named_parameters())
    for pname, p in theirs.named_parameters():
        _close(ours_params[pname].grad.numpy(), p.grad.numpy(), f"clipped grad of {pname} (max_norm={max_norm})",
               rtol=1e-5, atol=1e-7)


def _cosine_reference(step, lr, min_lr, warmup, decay):
    """nanoGPT's schedule, written out: linear warmup, cosine decay, then the floor."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay:
        return min_lr
    progress = (step - warmup) / (decay - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("lr,min_lr,warmup,decay", [(6e-4, 6e-5, 10, 100), (1.0, 0.0, 0, 7), (3e-3, 1e-4, 5, 6)])
def test_cosine_lr(lr, min_lr, warmup, decay):
    for step in range(decay + 5):
        got, want = optim.cosine_lr(step, lr, min_lr, warmup, decay), _cosine_reference(step, lr, min_lr, warmup, decay)
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15), \
            f"cosine_lr(step={step}) = {got}, formula gives {want}"
    assert math.isclose(optim.cosine_lr(warmup, lr, min_lr, warmup, decay), lr, rel_tol=1e-12), \
        "the schedule peaks at lr when warmup ends"
    assert math.isclose(optim.cosine_lr(decay, lr, min_lr, warmup, decay), min_lr, abs_tol=1e-15), \
        "the schedule reaches min_lr at decay_iters"
    values = [optim.cosine_lr(s, lr, min_lr, warmup, decay) for s in range(warmup, decay + 5)]
    assert all(a >= b for a, b in zip(values, values[1:])), f"not decreasing after warmup: {values}"


# ---- dtypes and edge cases ------------------------------------------------------------------------
PROMOTIONS = {
    "int / 2": (lambda i, f: i / 2, lambda i, f: i / 2),
    "int + 1.5": (lambda i, f: i + 1.5, lambda i, f: i + 1.5),
    "2.5 - int": (lambda i, f: 2.5 - i, lambda i, f: 2.5 - i),
    "int + float": (lambda i, f: i + f, lambda i, f: i + f),
    "int * 2": (lambda i, f: i * 2, lambda i, f: i * 2),
    "int ** 2": (lambda i, f: i ** 2, lambda i, f: i ** 2),
    "(int > 1).sum()": (lambda i, f: (i > 1).sum(), lambda i, f: (i > 1).sum()),
    "int.max()": (lambda i, f: i.max(), lambda i, f: i.max()),
    "-int": (lambda i, f: -i, lambda i, f: -i),
    "int.exp()": (lambda i, f: i.exp(), lambda i, f: i.exp()),
    "int.sqrt()": (lambda i, f: i.sqrt(), lambda i, f: i.sqrt()),
    "(int - 2).relu()": (lambda i, f: (i - 2).relu(), lambda i, f: (i - 2).relu()),
    "(int - 2).abs()": (lambda i, f: (i - 2).abs(), lambda i, f: (i - 2).abs()),
    "int < 2.5": (lambda i, f: i < 2.5, lambda i, f: i < 2.5),
    "int == 2.0": (lambda i, f: i == 2.0, lambda i, f: i == 2.0),
    "where(int)": (lambda i, f: (i > 1).where(i, 0), lambda i, f: torch.where(i > 1, i, 0)),
    "float.sign()": (lambda i, f: f.sign(), lambda i, f: f.sign()),
    "any/all": (lambda i, f: (i > 2).any().cast(np.int64) + (i > 0).all().cast(np.int64),
                lambda i, f: (i > 2).any().long() + (i > 0).all().long()),
    "arange": (lambda i, f: Tensor.arange(0, 1, 0.25, device=f.device), lambda i, f: torch.arange(0, 1, 0.25)),
}


@pytest.mark.parametrize("name", sorted(PROMOTIONS))
def test_dtype_promotion(name, device):
    ours, theirs = PROMOTIONS[name]
    ints = Tensor(np.array([1, 2, 3]), device=device)
    got = ours(ints, Tensor(np.array([1.5, -2.0, 3.0], np.float32), device=device))
    ref = theirs(torch.tensor([1, 2, 3]), torch.tensor([1.5, -2.0, 3.0]))
    got_np, ref_np = got.numpy(), ref.numpy()
    assert got_np.dtype == ref_np.dtype, f"{name}: minigrad dtype {got_np.dtype}, torch {ref_np.dtype}"
    np.testing.assert_allclose(got_np, ref_np, rtol=1e-6, err_msg=f"{name}: minigrad (actual) vs torch (desired)")


F32, F64, I64 = np.float32, np.float64, np.int64
MIXED = {   # name: (fn, input dtypes); torch promotes (and differentiates through the casts) the same way
    "f32 * f64": (lambda x, y: x * y, (F32, F64)),
    "f64 / f32": (lambda x, y: x / y, (F64, F32)),
    "f32 - f64": (lambda x, y: (x - y).exp(), (F32, F64)),
    "int * f32": (lambda i, y: i * y, (I64, F32)),
    "f64 + int": (lambda x, i: (x + i).square(), (F64, I64)),
    "int / f64": (lambda i, y: i / y, (I64, F64)),
}


@pytest.mark.parametrize("name", sorted(MIXED))
def test_mixed_dtype_gradients(name, device):
    fn, dtypes = MIXED[name]
    x = np.random.default_rng(30).integers(1, 4, (3, 4)) if dtypes[0] == I64 else away_from_zero(3, 4, seed=30)
    y = np.random.default_rng(31).integers(1, 4, (4,)) if dtypes[1] == I64 else away_from_zero(4, seed=31, margin=0.5)
    parity(fn, x, y, device=device, dtypes=dtypes)


@pytest.mark.parametrize("to", [F64, F32])
def test_cast_gradient(to, device):
    """Tensor.cast against torch's .to(dtype): the gradient comes back in the input's dtype."""
    start = F32 if to == F64 else F64
    parity(lambda x: x.cast(to).exp() * 2, away_from_zero(3, 4, seed=32), device=device, dtypes=(start,),
           torch_fn=lambda x: x.to(torch.float64 if to == F64 else torch.float32).exp() * 2)


def test_sum_over_empty_axis(device):
    for shape, axis in [((2, 0), 1), ((0, 3), 0), ((0,), None)]:
        got = Tensor(np.zeros(shape, np.float32), device=device).sum(axis).numpy()
        ref = torch.zeros(shape).sum(axis if axis is not None else tuple(range(len(shape)))).numpy()
        np.testing.assert_array_equal(got, ref, err_msg=f"sum over an empty axis of {shape}: minigrad vs torch")
