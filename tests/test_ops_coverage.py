"""The ops a PyTorch or tinygrad user reaches for, against PyTorch (forward and every gradient),
on every backend; every unary op at extreme inputs; and the wrong answers found by running a
peer's op suite, each as a named regression test.  PyTorch is an oracle only."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from minigrad import Tensor
from test_torch_parity import parity, positive, randn

# ---- unary ops, each with its PyTorch twin ------------------------------------------------------
UNARY = {
    "exp": (lambda x: x.exp(), torch.exp),
    "log": (lambda x: x.log(), torch.log),
    "sqrt": (lambda x: x.sqrt(), torch.sqrt),
    "reciprocal": (lambda x: x.reciprocal(), torch.reciprocal),
    "erf": (lambda x: x.erf(), torch.erf),
    "relu": (lambda x: x.relu(), torch.relu),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid),
    "tanh": (lambda x: x.tanh(), torch.tanh),
    "abs": (lambda x: x.abs(), torch.abs),
    "sign": (lambda x: x.sign(), torch.sign),
    "square": (lambda x: x.square(), torch.square),
    "gelu": (lambda x: x.gelu(), TF.gelu),
    "gelu_tanh": (lambda x: x.gelu(approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "sin": (lambda x: x.sin(), torch.sin),
    "cos": (lambda x: x.cos(), torch.cos),
    "tan": (lambda x: x.tan(), torch.tan),
    "floor": (lambda x: x.floor(), torch.floor),
    "ceil": (lambda x: x.ceil(), torch.ceil),
    "trunc": (lambda x: x.trunc(), torch.trunc),
    "round": (lambda x: x.round(), torch.round),
    "exp2": (lambda x: x.exp2(), torch.exp2),
    "log2": (lambda x: x.log2(), torch.log2),
    "rsqrt": (lambda x: x.rsqrt(), torch.rsqrt),
    "leakyrelu": (lambda x: x.leakyrelu(0.05), lambda x: TF.leaky_relu(x, 0.05)),
    "elu": (lambda x: x.elu(0.7), lambda x: TF.elu(x, 0.7)),
    "celu": (lambda x: x.celu(1.3), lambda x: TF.celu(x, 1.3)),
    "relu6": (lambda x: x.relu6(), TF.relu6),
    "hardtanh": (lambda x: x.hardtanh(-0.5, 2.0), lambda x: TF.hardtanh(x, -0.5, 2.0)),
    "hardsigmoid": (lambda x: x.hardsigmoid(), TF.hardsigmoid),
    "hardswish": (lambda x: x.hardswish(), TF.hardswish),
    "mish": (lambda x: x.mish(), TF.mish),
    "silu": (lambda x: x.silu(), TF.silu),
    "softplus": (lambda x: x.softplus(), TF.softplus),
    "softplus_beta": (lambda x: x.softplus(beta=2.0), lambda x: TF.softplus(x, beta=2.0)),
    "softsign": (lambda x: x.softsign(), TF.softsign),
    "quick_gelu": (lambda x: x.quick_gelu(), lambda x: x * torch.sigmoid(1.702 * x)),
    "logsigmoid": (lambda x: x.logsigmoid(), TF.logsigmoid),
}
NEEDS_POSITIVE = {"log", "sqrt", "log2", "rsqrt"}
# Values where a piecewise op jumps: finite differences and float rounding disagree there.
STEP_OPS = {"sign", "floor", "ceil", "trunc", "round"}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_against_torch(name, device):
    ours, theirs = UNARY[name]
    x = positive(4, 5, seed=3) if name in NEEDS_POSITIVE else randn(4, 5, seed=3, scale=2.5)
    if name in STEP_OPS:
        x = np.round(x * 4) / 4 + 0.1            # away from the jumps (and .5 ties of round)
    parity(ours, x, device=device, torch_fn=theirs, rtol=2e-5, atol=2e-5)


EXTREMES = np.array([-1e4, -300.0, -88.8, -44.5, -10.25, 0.0, 10.25, 44.5, 88.8, 300.0, 1e4], np.float32)


def _same_with_nans(actual, desired, what, rtol, atol):
    """NaN only where PyTorch has NaN, infinities equal, finite values close (NaN never equals a number)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    nan_a, nan_d = np.isnan(actual), np.isnan(desired)
    assert (nan_a == nan_d).all(), f"{what}: NaN at {EXTREMES[nan_a != nan_d]} (minigrad {actual}, torch {desired})"
    np.testing.assert_allclose(actual[~nan_a], desired[~nan_d], rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_at_extremes(name, device):
    """Every unary op and its gradient at 0, +-10.25, +-44.5, +-88.8 (where exp overflows
    float32), +-300 and +-1e4: the values PyTorch gives, NaN and inf included, never a NaN
    where PyTorch has a number."""
    ours, theirs = UNARY[name]
    x = Tensor(EXTREMES, device=device, requires_grad=True)
    tx = torch.tensor(EXTREMES, requires_grad=True)
    out, ref = ours(x), theirs(tx)
    out.sum().backward()
    ref.sum().backward()
    # sin/cos/tan of 1e4 depend on how float32 arguments are reduced mod 2 pi: compare loosely
    rtol, atol = (5e-2, 5e-2) if name in ("sin", "cos", "tan") else (1e-5, 1e-6)
    _same_with_nans(out.numpy(), ref.detach().numpy(), f"{name} forward", rtol, atol)
    _same_with_nans(x.grad.numpy(), tx.grad.numpy(), f"{name} gradient", rtol, atol)


# ---- regression tests: the wrong answers a peer's op suite found -----------------------------------
def test_sigmoid_tanh_gelu_gradients_finite_far_left(device):
    """Were NaN below -88.7 (sigmoid), -44.4 (tanh) and at -10.25 (GPT-2's GELU)."""
    values = np.array([-300.0, -1e4, -10.25, -50.0, -90.0], np.float32)
    for ours, theirs in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
                         ("gelu_tanh", lambda t: TF.gelu(t, approximate="tanh"))):
        x = Tensor(values, device=device, requires_grad=True)
        tx = torch.tensor(values, requires_grad=True)
        UNARY[ours][0](x).sum().backward()
        theirs(tx).sum().backward()
        assert np.isfinite(x.grad.numpy()).all(), f"{ours}: gradient {x.grad.numpy()}"
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_cat_called_on_a_tensor_keeps_it(device):
    a, b = Tensor([1.0, 2.0], device=device), Tensor([3.0, 4.0], device=device)
    np.testing.assert_array_equal(a.cat(b).numpy(), [1, 2, 3, 4])
    np.testing.assert_array_equal(Tensor.cat(a, b).numpy(), [1, 2, 3, 4])
    np.testing.assert_array_equal(Tensor.cat([a, b], dim=0).numpy(), [1, 2, 3, 4])
    m = Tensor(np.arange(6.0).reshape(2, 3), device=device)
    np.testing.assert_array_equal(m.cat(m, m, axis=1).numpy(), np.concatenate([m.numpy()] * 3, 1))
    np.testing.assert_array_equal(a.stack(b, dim=1).numpy(), [[1, 3], [2, 4]])


def test_reduce_over_an_expression_of_constants(device):
    np.testing.assert_array_equal((-Tensor.ones(3, 3, device=device)).sum(axis=1).numpy(), [-3, -3, -3])
    np.testing.assert_allclose(Tensor.ones(3, 3, device=device).exp().sum(axis=1).numpy(), [3 * np.e] * 3, rtol=1e-6)
    np.testing.assert_array_equal(Tensor.full((2, 4), 2.0, device=device).max(axis=0).numpy(), [2, 2, 2, 2])


def test_sign_keeps_the_graph_with_zero_gradient(device):
    x = Tensor([-2.0, 0.0, 3.0], device=device, requires_grad=True)
    (x.sign() * 5 + x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1, 1])


def test_pad_with_none_for_an_axis_and_cat_of_0d(device):
    x = Tensor(np.ones((2, 3), np.float32), device=device)
    np.testing.assert_array_equal(x.pad((None, (1, 2))).numpy(), np.pad(np.ones((2, 3)), ((0, 0), (1, 2))))
    with pytest.raises(ValueError, match="cannot join 0-d tensors"):
        Tensor.cat(Tensor(1.0, device=device), Tensor(2.0, device=device))
    with pytest.raises(ValueError, match="pad needs one .before, after. pair for each of the 2"):
        x.pad(((1, 1),))
    with pytest.raises(ValueError, match="at most the whole axis"):
        x.pad(((0, 0), (-2, -2)))


def test_gather_has_pytorchs_meaning_and_take_numpys(device):
    x = randn(3, 4, 5, seed=8)
    idx = np.random.default_rng(9).integers(0, 4, (2, 3, 5))
    parity(lambda t: t.gather(1, Tensor(idx, device=device)), x, device=device,
           torch_fn=lambda t: t.gather(1, torch.tensor(idx)))
    parity(lambda t: t.gather(dim=2, index=Tensor(idx[:, :, :2] % 5, device=device)), x, device=device,
           torch_fn=lambda t: t.gather(2, torch.tensor(idx[:, :, :2] % 5)))
    rows = np.array([[2, 0], [1, 1]])
    np.testing.assert_array_equal(Tensor(x, device=device).take(Tensor(rows, device=device)).numpy(), np.take(x, rows, 0))


# ---- the ops users reach for ----------------------------------------------------------------------
@pytest.mark.parametrize("case", ["tril", "triu_k1", "tril_k-1", "cumsum0", "cumsum_neg", "flip", "flip01",
                                  "repeat", "dot", "reshape_kw", "permute_kw", "expand_kw", "squeeze_kw",
                                  "unsqueeze_kw", "stack_kw", "cat_kw", "full_like"])
def test_shape_and_combining_ops(case, device):
    cases = {
        "tril": (lambda t: t.tril(), lambda t: t.tril()),
        "triu_k1": (lambda t: t.triu(1), lambda t: t.triu(1)),
        "tril_k-1": (lambda t: t.tril(-1), lambda t: t.tril(-1)),
        "cumsum0": (lambda t: t.cumsum(0), lambda t: t.cumsum(0)),
        "cumsum_neg": (lambda t: t.cumsum(dim=-1), lambda t: t.cumsum(-1)),
        "flip": (lambda t: t.flip(1), lambda t: t.flip(1)),
        "flip01": (lambda t: t.flip((0, 1)) * 2, lambda t: t.flip((0, 1)) * 2),
        "repeat": (lambda t: t.repeat(2, 1, 3), lambda t: t.repeat(2, 1, 3)),
        "dot": (lambda t: t.dot(t.T), lambda t: t @ t.T),
        "reshape_kw": (lambda t: t.reshape(shape=(5, 3)), lambda t: t.reshape(5, 3)),
        "permute_kw": (lambda t: t.permute(order=(1, 0)), lambda t: t.permute(1, 0)),
        "expand_kw": (lambda t: t.unsqueeze(0).expand(shape=(2, 3, 5)), lambda t: t.unsqueeze(0).expand(2, 3, 5)),
        "squeeze_kw": (lambda t: t.reshape(3, 1, 5).squeeze(dim=1), lambda t: t.reshape(3, 1, 5).squeeze(1)),
        "unsqueeze_kw": (lambda t: t.unsqueeze(dim=-1), lambda t: t.unsqueeze(-1)),
        "stack_kw": (lambda t: Tensor.stack([t, t * 2], dim=1), lambda t: torch.stack([t, t * 2], dim=1)),
        "cat_kw": (lambda t: Tensor.cat([t, t * 3], dim=1), lambda t: torch.cat([t, t * 3], dim=1)),
        "full_like": (lambda t: t + t.full_like(2.5), lambda t: t + torch.full_like(t, 2.5)),
    }
    ours, theirs = cases[case]
    parity(ours, randn(3, 5, seed=11), device=device, torch_fn=theirs)


# each case: (the index, built by a function that makes index arrays), and the same selection
# written for torch, which has no negative slice steps and treats an int beside a tensor index
# as a basic index (numpy, and minigrad, count it as advanced: the picked dims then come first)
T = torch.tensor
INDICES = {
    "two_tensors": (lambda i: (i([0, 2, 2]), i([1, 0, 3])), lambda t: t[T([0, 2, 2]), T([1, 0, 3])]),
    "slice_then_tensor": (lambda i: (slice(None), i([[3, 1], [0, 0]])), lambda t: t[:, T([[3, 1], [0, 0]])]),
    "apart": (lambda i: (i([1, 0]), slice(1, 3), i([4, 2])), lambda t: t[T([1, 0]), 1:3, T([4, 2])]),
    "int_and_tensor": (lambda i: (2, slice(None), i([0, -1])), lambda t: t[2, :, T([0, -1])].T),
    "negative_step": (lambda i: (slice(None, None, -1), slice(3, 0, -2)), lambda t: t.flip(0)[:, T([3, 1])]),
    "negative_step_tensor": (lambda i: (slice(None, None, -2), i([1, 1]), None),
                             lambda t: t[T([2, 0])][:, T([1, 1]), None]),
}


@pytest.mark.parametrize("case", sorted(INDICES))
def test_advanced_indexing_against_numpy_and_torch(case, device):
    make, torch_fn = INDICES[case]
    x = randn(3, 4, 5, seed=12)
    index = make(lambda v: Tensor(np.array(v), device=device))
    np.testing.assert_array_equal(Tensor(x, device=device)[index].numpy(), x[make(np.array)])
    parity(lambda t: t[index], x, device=device, torch_fn=torch_fn)


def test_multinomial_follows_the_weights(device):
    Tensor.manual_seed(3)
    weights = Tensor([[0.1, 0.0, 0.6, 0.3], [0.0, 1.0, 0.0, 0.0]], device=device)
    draws = weights.multinomial(4000, replacement=True).numpy()
    assert draws.shape == (2, 4000)
    freq = np.bincount(draws[0], minlength=4) / 4000
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.6, 0.3], atol=0.03)
    assert (draws[1] == 1).all()
    assert weights.multinomial().shape == (2, 1)
    with pytest.raises(ValueError, match="replacement=True"):
        weights.multinomial(2)


# ---- attention, losses, convolution, pooling -------------------------------------------------------
def test_scaled_dot_product_attention(device):
    q, k, v = randn(2, 3, 5, 4, seed=13), randn(2, 3, 6, 4, seed=14), randn(2, 3, 6, 3, seed=15)
    parity(lambda a, b, c: a.scaled_dot_product_attention(b, c), q, k, v, device=device,
           torch_fn=TF.scaled_dot_product_attention)
    parity(lambda a, b, c: a.scaled_dot_product_attention(b, c, is_causal=True), q, k[:, :, :5], v[:, :, :5],
           device=device, torch_fn=lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, is_causal=True))
    mask = np.random.default_rng(16).random((5, 6)) > 0.3
    mask[:, 0] = True
    parity(lambda a, b, c: a.scaled_dot_product_attention(b, c, attn_mask=Tensor(mask, device=device), scale=0.3),
           q, k, v, device=device,
           torch_fn=lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, attn_mask=torch.tensor(mask), scale=0.3))


def test_binary_crossentropy(device):
    p = np.random.default_rng(17).uniform(0.02, 0.98, (6, 3)).astype(np.float32)
    y = (np.random.default_rng(18).random((6, 3)) > 0.5).astype(np.float32)
    parity(lambda t: t.binary_crossentropy(Tensor(y, device=device)), p, device=device,
           torch_fn=lambda t: TF.binary_cross_entropy(t, torch.tensor(y)))
    parity(lambda t: (t * 40 - 20).binary_crossentropy_logits(Tensor(y, device=device)), p, device=device,
           torch_fn=lambda t: TF.binary_cross_entropy_with_logits(t * 40 - 20, torch.tensor(y)))


CONV = {
    "plain": dict(),
    "stride_pad": dict(stride=2, padding=1),
    "dilation_groups": dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
}


@pytest.mark.parametrize("case", sorted(CONV))
def test_conv2d(case, device):
    kw = CONV[case]
    x, w, b = randn(2, 4, 9, 8, seed=19), randn(6, 4 // kw.get("groups", 1), 3, 2, seed=20), randn(6, seed=21)
    parity(lambda a, c, d: a.conv2d(c, d, **kw), x, w, b, device=device,
           torch_fn=lambda a, c, d: TF.conv2d(a, c, d, **kw), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, output_padding=1),
                                dict(stride=(1, 2), padding=(2, 0), dilation=2, groups=2)])
def test_conv_transpose2d(kw, device):
    x, w = randn(2, 4, 5, 4, seed=22), randn(4, 3, 3, 3, seed=23)
    parity(lambda a, c: a.conv_transpose2d(c, **kw), x, w, device=device,
           torch_fn=lambda a, c: TF.conv_transpose2d(a, c, **kw), rtol=1e-4, atol=1e-4)


def test_pooling(device):
    x = randn(2, 3, 9, 8, seed=24)
    parity(lambda t: t.max_pool2d(3, 2, 1), x, device=device, torch_fn=lambda t: TF.max_pool2d(t, 3, 2, 1))
    parity(lambda t: t.max_pool2d(2), x, device=device, torch_fn=lambda t: TF.max_pool2d(t, 2))
    parity(lambda t: t.avg_pool2d(2), x, device=device, torch_fn=lambda t: TF.avg_pool2d(t, 2))
    parity(lambda t: t.avg_pool2d(3, 2, 1), x, device=device, torch_fn=lambda t: TF.avg_pool2d(t, 3, 2, 1))


@pytest.mark.parametrize("case", ["conv1d", "conv3d", "asymmetric_2d", "negative_2d", "transpose1d"])
def test_convolution_in_any_number_of_dims(case, device):
    """conv2d and conv_transpose2d take any number of spatial dims and PyTorch's padding forms:
    one per dim, F.pad's (left, right, top, bottom) edges, negative widths that crop."""
    def padded(t, edges):
        return TF.pad(t, edges)
    cases = {
        "conv1d": ((2, 3, 9), (4, 3, 3), lambda a, w: a.conv2d(w, stride=2, padding=1),
                   lambda a, w: TF.conv1d(a, w, stride=2, padding=1)),
        "conv3d": ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), lambda a, w: a.conv2d(w, padding=(1, 0, 1)),
                   lambda a, w: TF.conv3d(a, w, padding=(1, 0, 1))),
        "asymmetric_2d": ((1, 3, 5, 6), (2, 3, 3, 3), lambda a, w: a.conv2d(w, padding=(1, 2, 0, 1)),
                          lambda a, w: TF.conv2d(padded(a, (1, 2, 0, 1)), w)),
        "negative_2d": ((1, 3, 7, 6), (2, 3, 3, 2), lambda a, w: a.conv2d(w, padding=(-1, 0, -1, 1)),
                        lambda a, w: TF.conv2d(padded(a, (-1, 0, -1, 1)), w)),
        "transpose1d": ((2, 4, 5), (4, 3, 3), lambda a, w: a.conv_transpose2d(w, stride=2, padding=1),
                        lambda a, w: TF.conv_transpose1d(a, w, stride=2, padding=1)),
    }
    x_shape, w_shape, ours, theirs = cases[case]
    parity(ours, randn(*x_shape, seed=25), randn(*w_shape, seed=26), device=device, torch_fn=theirs,
           rtol=1e-4, atol=1e-4)


def test_split_chunk_and_pad2d(device):
    x = randn(7, 4, seed=27)
    for ours, theirs in ((lambda t: t.chunk(3)[2], lambda t: t.chunk(3)[2]),
                         (lambda t: t.split(3, dim=0)[1] * 2, lambda t: t.split(3, dim=0)[1] * 2),
                         (lambda t: t.split([1, 3], dim=1)[1], lambda t: t.split([1, 3], dim=1)[1]),
                         (lambda t: t.pad2d((1, -1, 2, 0)), lambda t: TF.pad(t, (1, -1, 2, 0))),
                         (lambda t: t.pad(((-2, 1), (0, -3))), lambda t: TF.pad(t, (0, -3, -2, 1)))):
        parity(ours, x, device=device, torch_fn=theirs)
    assert [c.shape for c in Tensor(x, device=device).chunk(3)] == [(3, 4), (3, 4), (1, 4)]
    with pytest.raises(ValueError, match="do not add up to 7"):
        Tensor(x, device=device).split([3, 3])
