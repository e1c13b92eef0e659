"""Every differentiable op's gradient against central finite differences in float64.

`check_grad(fn, *arrays, device=...)` builds the scalar  L = sum(fn(*inputs) * W)  with fixed
random weights W (so every output element matters, each with a different weight), runs
L.backward(), and compares each input's .grad with (L(x + h e_i) - L(x - h e_i)) / 2h computed
element by element, all in float64.  Inputs include non-contiguous views (permuted, sliced with
steps, expanded) fed into the ops, since a view's gradient is a different code path.
"""
import numpy as np
import pytest

import minigrad
from minigrad import Tensor
from op_cases import BINARY

F64 = np.float64


def _inputs(arrays, device, requires_grad):
    return [Tensor(a, dtype=a.dtype, device=device, requires_grad=requires_grad and a.dtype.kind == "f")
            for a in arrays]


def check_grad(fn, *arrays, device, dtypes=None, h=1e-5, rtol=1e-5, atol=1e-7, seed=1234):
    """Assert that minigrad's gradient of sum(fn(*arrays) * W) matches central differences.
    Inputs are float64 unless `dtypes` says otherwise (mixed-dtype cases); integer inputs get
    no gradient, and each float input's gradient must have that input's dtype."""
    dtypes = dtypes or [F64] * len(arrays)
    arrays = [np.array(a, dtype=dtype) for a, dtype in zip(arrays, dtypes)]
    with minigrad.no_grad():
        out = fn(*_inputs(arrays, device, False))      # lazy: only its shape and dtype are read
    if all(a.dtype == F64 for a in arrays):
        assert out.dtype == F64, f"fn returned {out.dtype}, expected float64 (inputs are float64)"
    weights = np.random.default_rng(seed).standard_normal(out.shape)

    def loss(tensors):
        return (fn(*tensors).cast(F64) * Tensor(weights, dtype=F64, device=device)).sum()

    tensors = _inputs(arrays, device, True)
    total = loss(tensors)
    total.backward()
    for k, (array, tensor) in enumerate(zip(arrays, tensors)):
        if array.dtype.kind != "f":
            assert tensor.grad is None, f"integer input {k} got a gradient"
            continue
        assert tensor.grad is not None, f"input {k} (shape {array.shape}) got no gradient"
        analytic = tensor.grad.numpy()
        assert analytic.shape == array.shape, f"input {k}: grad shape {analytic.shape} != input shape {array.shape}"
        assert analytic.dtype == array.dtype, f"input {k}: grad dtype {analytic.dtype} != input dtype {array.dtype}"
        assert tensor.grad.device == tensor.device, f"input {k}: gradient on {tensor.grad.device}, input on {tensor.device}"
        numeric = np.zeros(array.shape)
        for idx in np.ndindex(*array.shape):
            values, points = [], []
            for step in (h, -h):
                shifted = [a.copy() for a in arrays]
                shifted[k][idx] += step                    # rounded to the input's dtype:
                points.append(float(shifted[k][idx]))      # divide by the step actually taken
                with minigrad.no_grad():
                    values.append(loss(_inputs(shifted, device, False)).item())
            numeric[idx] = (values[0] - values[1]) / (points[0] - points[1])
        np.testing.assert_allclose(
            analytic, numeric, rtol=rtol, atol=atol,
            err_msg=f"input {k} of shape {array.shape}: analytic gradient (actual) vs central differences (desired)")


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def positive(*shape, seed=0, low=0.5, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def away_from_zero(*shape, seed=0, margin=0.1):
    """Values with |x| >= margin: where relu/abs/maximum have a derivative."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(margin, 2.0, shape)


# ---- unary ---------------------------------------------------------------------------------
UNARY = {
    "exp": (lambda x: x.exp(), randn),
    "log": (lambda x: x.log(), positive),
    "sqrt": (lambda x: x.sqrt(), positive),
    "reciprocal": (lambda x: x.reciprocal(), away_from_zero),
    "erf": (lambda x: x.erf(), randn),
    "relu": (lambda x: x.relu(), away_from_zero),
    "sigmoid": (lambda x: x.sigmoid(), randn),
    "tanh": (lambda x: x.tanh(), randn),
    "abs": (lambda x: x.abs(), away_from_zero),
    "square": (lambda x: x.square(), randn),
    "neg": (lambda x: -x, randn),
    "gelu_none": (lambda x: x.gelu(), randn),
    "gelu_tanh": (lambda x: x.gelu(approximate="tanh"), randn),
    "pow2": (lambda x: x ** 2, randn),
    "pow3": (lambda x: x ** 3, randn),
    "pow_neg2": (lambda x: x ** -2, away_from_zero),
    "pow_half": (lambda x: x ** 0.5, positive),
    "pow_1_7": (lambda x: x ** 1.7, positive),
    "rpow": (lambda x: 2.0 ** x, randn),
    "clip": (lambda x: x.clip(-0.05, 0.05), away_from_zero),
    "sigmoid_of_exp": (lambda x: x.exp().sigmoid() * x, randn),
    "sin": (lambda x: x.sin(), randn),
    "cos_tan": (lambda x: x.cos() + (x * 0.3).tan(), randn),
    "sign_floor_round": (lambda x: (x.sign() + x.floor() + (x * 3).round()) * x, away_from_zero),
    "softplus_mish": (lambda x: x.softplus() + x.mish(), randn),
    "elu_leaky_hardswish": (lambda x: x.elu() + x.leakyrelu(0.1) + x.hardswish(), away_from_zero),
}
# erf is the Abramowitz-Stegun approximation (abs error < 1.5e-7): its finite differences
# differ from the exact derivative by ~1e-6
LOOSE = {"erf", "gelu_none"}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, device):
    fn, make = UNARY[name]
    tol = dict(rtol=1e-5, atol=1e-5) if name in LOOSE else {}
    check_grad(fn, make(3, 4, seed=1), device=device, **tol)


VIEWS = {
    "permuted": (lambda x: x.permute(2, 0, 1), (2, 3, 4)),
    "transposed": (lambda x: x.T, (4, 3)),
    "sliced_step": (lambda x: x[1:, ::2], (4, 7)),
    "expanded": (lambda x: x.expand(3, 4), (3, 1)),
    "expanded_front": (lambda x: x.reshape(1, 4).expand(3, 4), (4,)),
    "padded": (lambda x: x.pad(((1, 0), (0, 2))), (2, 3)),
}


@pytest.mark.parametrize("view", sorted(VIEWS))
@pytest.mark.parametrize("name", ["sigmoid", "square", "log"])
def test_unary_on_views(name, view, device):
    fn, make = UNARY[name]
    to_view, shape = VIEWS[view]
    if name == "log":
        if view == "padded":   # padding makes zeros: log of a padded view is -inf there
            to_view = VIEWS["sliced_step"][0]
            shape = VIEWS["sliced_step"][1]
        check_grad(lambda x: fn(to_view(x)), positive(*shape, seed=2), device=device)
    else:
        check_grad(lambda x: fn(to_view(x)), make(*shape, seed=2), device=device)


# ---- binary with broadcasting ----------------------------------------------------------------
SHAPES = [((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3))]


@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcast(name, shapes, device):
    sx, sy = shapes
    if name in ("div", "pow"):
        x = positive(*sx, seed=3) if name == "pow" else randn(*sx, seed=3)
        y = away_from_zero(*sy, seed=4, margin=0.3) if name == "div" else randn(*sy, seed=4)
    else:
        x, y = randn(*sx, seed=3), randn(*sy, seed=4)
    check_grad(BINARY[name], x, y, device=device)


SCALAR_FORMS = {
    "radd": lambda x: 1.5 + x,
    "rsub": lambda x: 2.0 - x,
    "rmul": lambda x: 2.5 * x,
    "rdiv": lambda x: 3.0 / x,
    "rpow": lambda x: 1.7 ** x,
    "add_scalar": lambda x: x + 2,
    "sub_scalar": lambda x: x - 0.5,
    "mul_scalar": lambda x: x * -3,
    "div_scalar": lambda x: x / 4,
    "maximum_scalar": lambda x: x.maximum(0.3),
    "minimum_scalar": lambda x: x.minimum(-0.3),
}


@pytest.mark.parametrize("name", sorted(SCALAR_FORMS))
def test_scalar_forms(name, device):
    x = away_from_zero(3, 4, seed=5, margin=0.35)   # away from the 0.3 of maximum/minimum too
    check_grad(SCALAR_FORMS[name], x, device=device)


def test_same_input_twice(device):
    check_grad(lambda x: x * x + x.exp() * x - x / (x.square() + 1), randn(3, 4, seed=6), device=device)


def test_binary_on_views(device):
    check_grad(lambda x, y: x.permute(1, 0) * y[::2] + y[1::2].maximum(x.T), randn(4, 3, seed=7), randn(6, 4, seed=8),
               device=device)
    check_grad(lambda x, y: x.expand(3, 4) / y.T, randn(3, 1, seed=9), away_from_zero(4, 3, seed=10, margin=0.3),
               device=device)


# ---- where and masked_fill ---------------------------------------------------------------------
def test_where(device):
    cond = np.random.default_rng(11).random((3, 4)) > 0.5
    check_grad(lambda x, y: Tensor(cond, device=x.device).where(x, y), randn(3, 4, seed=12), randn(4, seed=13),
               device=device)
    check_grad(lambda x: Tensor(cond, device=x.device).where(x.exp(), 0.0), randn(3, 4, seed=14), device=device)
    check_grad(lambda y: Tensor(cond[:, :1], device=y.device).where(2.0, y * 3), randn(1, 4, seed=15), device=device)
    check_grad(lambda x: (x > 0).where(x, x * 0.1), away_from_zero(3, 4, seed=16), device=device)


def test_masked_fill(device):
    mask = np.random.default_rng(17).random((3, 4)) > 0.6
    check_grad(lambda x: x.masked_fill(Tensor(mask, device=x.device), -5.0).softmax(-1), randn(3, 4, seed=18),
               device=device)
    causal = np.triu(np.ones((4, 4), dtype=bool), k=1)
    check_grad(lambda x: x.masked_fill(Tensor(causal, device=x.device), float("-inf")).softmax(-1),
               randn(2, 4, 4, seed=19), device=device)


# ---- reductions ---------------------------------------------------------------------------------
REDUCTIONS = {
    "sum": lambda x, axis, keepdim: x.sum(axis, keepdim=keepdim),
    "mean": lambda x, axis, keepdim: x.mean(axis, keepdim=keepdim),
    "max": lambda x, axis, keepdim: x.max(axis, keepdim=keepdim),
    "min": lambda x, axis, keepdim: x.min(axis, keepdim=keepdim),
    "var": lambda x, axis, keepdim: x.var(axis, keepdim=keepdim),
    "std": lambda x, axis, keepdim: x.std(axis, keepdim=keepdim),
}


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("axis", [None, 1, -1, (0, 2), (-1, 0), (0, 1, 2)], ids=str)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction(name, axis, keepdim, device):
    check_grad(lambda x: REDUCTIONS[name](x, axis, keepdim), randn(2, 3, 4, seed=20), device=device)


def test_var_std_correction(device):
    x = randn(3, 5, seed=21)
    check_grad(lambda t: t.var(1, correction=0), x, device=device)
    check_grad(lambda t: t.std(0, keepdim=True, correction=0), x, device=device)


@pytest.mark.parametrize("name", ["sum", "max", "var"])
@pytest.mark.parametrize("view", ["permuted", "sliced_step", "expanded"])
def test_reduction_on_views(name, view, device):
    to_view, shape = VIEWS[view]
    check_grad(lambda x: REDUCTIONS[name](to_view(x), -1, False), randn(*shape, seed=22), device=device)


# ---- softmax family, layernorm, cross-entropy ------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_softmax_family(name, axis, device):
    check_grad(lambda x: getattr(x, name)(axis), randn(2, 3, 4, seed=23), device=device)


def test_logsumexp_keepdim(device):
    check_grad(lambda x: x.logsumexp(1, keepdim=True), randn(3, 4, seed=24), device=device)


@pytest.mark.parametrize("view", ["permuted", "sliced_step", "expanded"])
def test_softmax_on_views(view, device):
    to_view, shape = VIEWS[view]
    check_grad(lambda x: to_view(x).softmax(-1), randn(*shape, seed=25), device=device)


def test_layernorm(device):
    check_grad(lambda x: x.layernorm(), randn(3, 5, seed=26), device=device)
    check_grad(lambda x: x.layernorm(axis=0), randn(4, 3, seed=27), device=device)
    check_grad(lambda x: x.permute(1, 0).layernorm(), randn(5, 3, seed=28), device=device)
    check_grad(lambda x, w, b: x.layernorm() * w + b, randn(3, 5, seed=29), randn(5, seed=30), randn(5, seed=31),
               device=device)
    check_grad(lambda x, w, b: x.layernorm(weight=w, bias=b), randn(3, 5, seed=29), randn(5, seed=30),
               randn(5, seed=31), device=device)


@pytest.mark.parametrize("recompute", [False, True], ids=["kept", "recomputed"])
def test_gelu_and_layernorm_kept_or_recomputed(recompute, device, monkeypatch):
    """Large tensors go through F.Recompute (backward keeps only the inputs); both paths must
    give the same gradients."""
    monkeypatch.setattr(Tensor, "RECOMPUTE_FROM", 1 if recompute else 1 << 40)
    check_grad(lambda x, w, b: x.layernorm(weight=w, bias=b), randn(3, 5, seed=29), randn(5, seed=30),
               randn(5, seed=31), device=device)
    check_grad(lambda x, w: x.layernorm(axis=0, weight=w), randn(4, 3, seed=34), randn(3, seed=35), device=device)
    check_grad(lambda x, w: x.gelu(approximate="tanh") * x.gelu() * w, randn(3, 5, seed=32), randn(5, seed=33),
               device=device)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(reduction, device):
    targets = np.array([2, 0, 3, 3, 1])
    check_grad(lambda x: x.cross_entropy(Tensor(targets, device=x.device), reduction=reduction), randn(5, 4, seed=32),
               device=device)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_ignore_index(reduction, device):
    targets = np.array([2, -100, 3, 1, -100, 0])
    check_grad(lambda x: x.cross_entropy(Tensor(targets, device=x.device), ignore_index=-100, reduction=reduction),
               randn(6, 4, seed=33), device=device)
    targets = np.array([1, -1, 0])               # the default ignore_index is -1
    check_grad(lambda x: x.cross_entropy(Tensor(targets, device=x.device)), randn(3, 5, seed=34), device=device)


def test_cross_entropy_on_view(device):
    targets = np.array([1, 0, 2, 2])
    check_grad(lambda x: x.T.cross_entropy(Tensor(targets, device=x.device)), randn(3, 4, seed=35), device=device)


# ---- matmul -----------------------------------------------------------------------------------
MATMUL_SHAPES = [
    ((4,), (4,)), ((3, 4), (4,)), ((4,), (4, 5)), ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((3, 4), (2, 4, 5)),
    ((2, 3, 4), (4,)), ((4,), (2, 4, 3)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=lambda s: f"{s[0]}@{s[1]}")
def test_matmul(shapes, device):
    check_grad(lambda a, b: a @ b, randn(*shapes[0], seed=36), randn(*shapes[1], seed=37), device=device)


def test_matmul_on_views(device):
    check_grad(lambda a, b: a.T @ b[:, ::2], randn(4, 3, seed=38), randn(4, 6, seed=39), device=device)
    check_grad(lambda a, b: a.expand(2, 3, 4) @ b.permute(0, 2, 1), randn(3, 4, seed=40), randn(2, 5, 4, seed=41),
               device=device)
    check_grad(lambda a, b: a.permute(1, 0, 2) @ b, randn(3, 2, 4, seed=42), randn(4, 2, seed=43), device=device)
    check_grad(lambda x, w, b: x.linear(w, b), randn(2, 3, 4, seed=44), randn(5, 4, seed=45), randn(5, seed=46),
               device=device)


# ---- movement ---------------------------------------------------------------------------------
MOVEMENT = {
    "reshape_minus1": (lambda x: x.reshape(-1, 2) * 1.0, (2, 3, 4)),
    "reshape_flat": (lambda x: x.reshape(24), (2, 3, 4)),
    "reshape_of_permute": (lambda x: x.permute(2, 0, 1).reshape(4, 6), (2, 3, 4)),
    "permute": (lambda x: x.permute(1, 2, 0), (2, 3, 4)),
    "permute_negative": (lambda x: x.permute(-1, 0, -2), (2, 3, 4)),
    "transpose": (lambda x: x.transpose(0, 2), (2, 3, 4)),
    "transpose_default": (lambda x: x.transpose(), (2, 3, 4)),
    "T": (lambda x: x.T, (3, 4)),
    "expand": (lambda x: x.expand(2, 3, 4), (3, 1)),
    "expand_minus1": (lambda x: x.expand(-1, 5), (3, 1)),
    "pad": (lambda x: x.pad(((1, 2), (0, 1))), (2, 3)),
    "pad_value": (lambda x: x.pad(((0, 1), (2, 0)), value=1.5), (2, 3)),
    "shrink": (lambda x: x.shrink(((1, 3), (0, 2))), (4, 3)),
    "flatten": (lambda x: x.flatten(), (2, 3, 4)),
    "flatten_range": (lambda x: x.flatten(1, 2), (2, 3, 4)),
    "squeeze": (lambda x: x.squeeze(), (3, 1, 4, 1)),
    "squeeze_axis": (lambda x: x.squeeze(1), (3, 1, 4, 1)),
    "unsqueeze": (lambda x: x.unsqueeze(1), (3, 4)),
    "unsqueeze_negative": (lambda x: x.unsqueeze(-1), (3, 4)),
    "slice": (lambda x: x[1:3], (4, 3)),
    "slice_steps": (lambda x: x[::2, 1::3], (5, 7)),
    "slice_steps_uneven": (lambda x: x[1:7:4, ::3], (8, 7)),
    "slice_negative_bounds": (lambda x: x[-3:-1, :-1], (4, 3)),
    "slice_none": (lambda x: x[:, None, 1:], (3, 4)),
    "slice_ellipsis": (lambda x: x[..., ::2], (2, 3, 5)),
    "int_index": (lambda x: x[1], (3, 4)),
    "int_index_negative": (lambda x: x[-1, 2], (3, 4)),
    "int_and_slice": (lambda x: x[:, 2, ::2], (3, 4, 5)),
    "chain": (lambda x: x.permute(1, 0)[1:, ::2].reshape(-1).unsqueeze(0).expand(2, 6), (5, 3)),
    "contiguous": (lambda x: x.T.contiguous(), (3, 4)),
}


@pytest.mark.parametrize("name", sorted(MOVEMENT))
def test_movement(name, device):
    fn, shape = MOVEMENT[name]
    check_grad(fn, randn(*shape, seed=47), device=device)


def test_movement_then_compute(device):
    # a view read inside a fused elementwise kernel and inside a reduction
    check_grad(lambda x: (x.T[1:, ::2] * 2).exp().sum(0), randn(5, 4, seed=48), device=device)
    check_grad(lambda x: x.pad(((1, 1), (0, 0))).reshape(2, 6).max(1), randn(2, 3, seed=49), device=device)


# ---- gather (embedding lookup), cat, stack ------------------------------------------------------
def test_take_getitem(device):
    idx = np.array([[0, 2, 2], [4, 0, 2]])        # repeated rows: their gradients must add up
    check_grad(lambda t: t[Tensor(idx, device=t.device)], randn(5, 3, seed=50), device=device)
    check_grad(lambda t: t[Tensor(np.array([3, 3, 1]), device=t.device)], randn(4, seed=51), device=device)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_take_axis(axis, device):
    idx = np.array([[1, 0], [1, 1], [2, 0]])
    check_grad(lambda t: t.take(Tensor(idx, device=t.device), axis), randn(3, 4, 3, seed=52), device=device)


def test_take_on_views(device):
    idx = np.array([2, 0, 2, 1])
    check_grad(lambda t: t.T[Tensor(idx, device=t.device)], randn(4, 3, seed=53), device=device)
    check_grad(lambda t: t[::2].take(Tensor(idx, device=t.device), 1), randn(6, 3, seed=54), device=device)
    check_grad(lambda t: t.expand(3, 4)[Tensor(idx[:2], device=t.device)], randn(3, 1, seed=55), device=device)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cat(axis, device):
    shapes = {0: [(1, 3, 2), (2, 3, 2), (3, 3, 2)], 1: [(2, 1, 2), (2, 3, 2), (2, 2, 2)],
              -1: [(2, 3, 1), (2, 3, 2), (2, 3, 3)]}[axis]
    arrays = [randn(*s, seed=56 + i) for i, s in enumerate(shapes)]
    check_grad(lambda a, b, c: Tensor.cat(a, b, c, axis=axis), *arrays, device=device)


def test_cat_views_and_same_tensor(device):
    check_grad(lambda a, b: Tensor.cat([a.T, b[:, ::2], a.T], axis=1), randn(2, 3, seed=59), randn(3, 4, seed=60),
               device=device)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_stack(axis, device):
    arrays = [randn(2, 3, seed=61 + i) for i in range(3)]
    check_grad(lambda a, b, c: Tensor.stack([a, b, c], axis=axis), *arrays, device=device)


def test_stack_views(device):
    check_grad(lambda a: Tensor.stack([a, a.T.T * 2, a[:, :] - 1], axis=1), randn(2, 3, seed=64),
               device=device)


# ---- a small network end to end -----------------------------------------------------------------
def test_mlp_block(device):
    targets = np.array([1, 0, 2])

    def net(x, w1, b1, w2):
        h = x.linear(w1, b1).layernorm().gelu(approximate="tanh")
        return (h @ w2.T).cross_entropy(Tensor(targets, device=x.device))
    check_grad(net, randn(3, 4, seed=65), randn(5, 4, seed=66), randn(5, seed=67), randn(3, 5, seed=68),
               device=device)


# ---- dtypes: Cast and mixed-dtype arithmetic -----------------------------------------------------
# A float32 input's step is rounded to float32, so the difference divides by the step actually
# taken.  Where the function itself computes in float32, its rounding (~1e-7) swamps a small step:
# those cases take h = 1e-2 and are at most quadratic in each input, where central differences
# are exact; the float64 computations keep a small step.
F32, I64 = np.float32, np.int64
MIXED = {
    "f32 * f64": (lambda x, y: x * y, (F32, F64), 1e-2),
    "f64 / f32": (lambda x, y: x / y, (F64, F32), 1e-4),
    "f32 - f64 broadcast": (lambda x, y: x - y.exp(), (F32, F64), 1e-4),
    "cast f32 up": (lambda x, y: x.cast(F64).exp() * y, (F32, F64), 1e-4),
    "cast f64 down": (lambda x, y: x.cast(F32) * y, (F64, F32), 1e-2),
    "round trip": (lambda x, y: x.cast(F32).cast(F64) * y, (F64, F64), 1e-2),
    "int * f64": (lambda i, y: i * y.exp(), (I64, F64), 1e-4),
    "f32 + int": (lambda x, i: x * x + i, (F32, I64), 1e-2),
    "f32 / int": (lambda x, i: x / i, (F32, I64), 1e-2),
}


@pytest.mark.parametrize("name", sorted(MIXED))
def test_mixed_dtypes(name, device):
    fn, dtypes, h = MIXED[name]
    x = np.random.default_rng(70).integers(1, 4, (3, 4)) if dtypes[0] == I64 else away_from_zero(3, 4, seed=70)
    y = np.random.default_rng(71).integers(1, 4, (4,)) if dtypes[1] == I64 else away_from_zero(4, seed=71, margin=0.5)
    check_grad(fn, x, y, device=device, dtypes=dtypes, h=h, rtol=1e-4, atol=1e-5)


def test_float32_times_float64_gradient_values(device):
    """The issue's example, spelled out: d(sum x*y)/dx = y, in x's own dtype."""
    x = Tensor(np.array([1.0, 2.0], np.float32), device=device, requires_grad=True)
    y = Tensor(np.array([3.0, 4.0]), device=device, requires_grad=True)
    (x * y).sum().backward()
    assert (x * y).dtype == np.float64
    np.testing.assert_array_equal(x.grad.numpy(), np.array([3.0, 4.0], np.float32))
    np.testing.assert_array_equal(y.grad.numpy(), [1.0, 2.0])
    assert x.grad.dtype == np.float32 and y.grad.dtype == np.float64


def test_copy_between_devices(device):
    # Tensor.to() is differentiable: the gradient travels back to the tensor's own device
    check_grad(lambda x: (x.to("numpy").exp() * 2).to(x.device).sum(0), randn(3, 4, seed=69), device=device)


# ---- the primitives and composites added for PyTorch users ----------------------------------------
def test_convolution_pooling_and_attention(device):
    check_grad(lambda x, w, b: x.conv2d(w, b, stride=2, padding=1), randn(2, 3, 5, 4, seed=60),
               randn(4, 3, 3, 2, seed=61), randn(4, seed=62), device=device)
    check_grad(lambda x, w: x.conv_transpose2d(w, stride=2, padding=1), randn(1, 2, 3, 3, seed=63),
               randn(2, 3, 3, 3, seed=64), device=device)
    check_grad(lambda x: x.max_pool2d(2) + x.avg_pool2d(2), randn(1, 2, 4, 4, seed=65), device=device)
    check_grad(lambda q, k, v: q.scaled_dot_product_attention(k, v, is_causal=True), randn(2, 3, 4, seed=66),
               randn(2, 3, 4, seed=67), randn(2, 3, 5, seed=68), device=device)


def test_indexing_gather_cumsum_flip(device):
    index = np.array([[0, 2], [1, 1]])
    check_grad(lambda x: x[Tensor(index, device=x.device), Tensor(index.T, device=x.device)], randn(3, 4, seed=69),
               device=device)
    check_grad(lambda x: x.gather(1, Tensor(index, device=x.device)), randn(2, 3, seed=70), device=device)
    check_grad(lambda x: x.cumsum(1) + x.flip(0) + x[::-2].repeat(2, 1).sum(0), randn(3, 4, seed=71),
               device=device)
