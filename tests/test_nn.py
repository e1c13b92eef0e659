"""nn.Module bookkeeping (parameter names, state dicts, train/eval) and the basic layers."""
import numpy as np
import pytest

from minigrad import Tensor, nn


def to_device(module, device):
    """Move every parameter of a module onto `device` (it stays a leaf that requires grad)."""
    for _, p in module.named_parameters():
        p.lazydata = p.to(device).realize().lazydata
    return module


class Block(nn.Module):
    def __init__(self, dim):
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.fc(self.ln(x)).relu()) + x


class Model(nn.Module):
    def __init__(self, vocab=7, dim=4):
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = [Block(dim), Block(dim)]
        self.heads = {"out": nn.Linear(dim, vocab, bias=False)}
        self.scale = Tensor(np.ones(dim, np.float32), requires_grad=True)
        self.constant = Tensor(np.ones(dim, np.float32))          # no grad: not a parameter
        self.note = "not a tensor"

    def forward(self, idx):
        x = self.embed(idx) * self.scale
        for block in self.blocks:
            x = block(x)
        return self.heads["out"](x)


def test_named_parameters_dotted_names():
    model = Model()
    names = [name for name, _ in model.named_parameters()]
    expected = {"embed.weight", "scale", "heads.out.weight"}
    for i in range(2):
        expected |= {f"blocks.{i}.ln.weight", f"blocks.{i}.ln.bias", f"blocks.{i}.fc.weight", f"blocks.{i}.fc.bias"}
    assert set(names) == expected, f"names {sorted(names)} != expected {sorted(expected)}"
    assert len(names) == len(set(names)), f"repeated names: {names}"
    params = dict(model.named_parameters())
    assert params["blocks.1.fc.weight"] is model.blocks[1].fc.weight
    assert params["heads.out.weight"] is model.heads["out"].weight
    assert len(model.parameters()) == len(expected)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


def test_shared_parameter_listed_once():
    model = Model()
    model.tied = model.embed.weight                        # weight tying: one tensor, two attributes
    params = model.parameters()
    assert sum(p is model.embed.weight for p in params) == 1, "a tied parameter is listed twice"


def test_state_dict_round_trip(device):
    source, target = to_device(Model(), device), to_device(Model(), device)
    state = source.state_dict()
    assert list(state) == [name for name, _ in source.named_parameters()]
    for name, p in source.named_parameters():
        assert isinstance(state[name], np.ndarray), f"{name}: state_dict holds {type(state[name])}"
        np.testing.assert_array_equal(state[name], p.numpy(), err_msg=f"state_dict[{name}] vs the parameter")
    differs = [n for n, v in target.state_dict().items() if not np.array_equal(v, state[n])]
    assert differs, "two fresh models are identical: the round trip would prove nothing"
    target.load_state_dict(state)
    for name, p in target.named_parameters():
        np.testing.assert_array_equal(p.numpy(), state[name], err_msg=f"{name} after load_state_dict")
        assert p.requires_grad, f"{name} no longer requires grad after load_state_dict"
        assert p.device == device, f"{name} moved to {p.device} by load_state_dict"
    state["scale"][:] = 123.0                               # the model must hold copies, not the arrays
    assert not np.any(target.scale.numpy() == 123.0), "load_state_dict kept a reference to the caller's array"
    idx = Tensor(np.array([[1, 2, 3]]), device=device)
    source.eval(), target.eval()
    np.testing.assert_allclose(target(idx).numpy(), source(idx).numpy(), rtol=1e-6,
                               err_msg="outputs after the round trip (loaded model vs source)")


def test_train_eval_toggles_every_module():
    model = Model()
    assert all(m.training for m in model.modules()), "modules start in training mode"
    assert model.eval() is model
    assert not any(m.training for m in model.modules()), "eval() missed a sub-module"
    model.train()
    assert all(m.training for m in model.modules()), "train() missed a sub-module"
    model.train(False)
    assert not model.blocks[1].drop.training


def test_dropout_eval_is_identity(device, rng):
    drop = nn.Dropout(0.3).eval()
    x = rng.standard_normal((20, 30)).astype(np.float32)
    np.testing.assert_array_equal(drop(Tensor(x, device=device)).numpy(), x, err_msg="Dropout in eval mode")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.75])       # asymmetric p: 1/p and 1/(1-p) differ
def test_dropout_train_zeros_a_fraction_and_rescales(p, device, rng):
    drop = nn.Dropout(p)
    x = rng.uniform(1.0, 2.0, (100, 100)).astype(np.float32)     # no zeros of its own
    out = drop(Tensor(x, device=device)).numpy()
    dropped = out == 0
    fraction = dropped.mean()
    sigma = np.sqrt(p * (1 - p) / x.size)
    assert abs(fraction - p) < 5 * sigma, f"dropped fraction {fraction:.4f}, expected {p} +- {5 * sigma:.4f}"
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - p), rtol=1e-6,
                               err_msg="kept values (actual) vs x / (1 - p) (desired)")


@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
def test_dropout_gradient_follows_the_mask(p, device, rng):
    x = Tensor(rng.standard_normal((16, 16)).astype(np.float32), device=device, requires_grad=True)
    out = x.dropout(p)
    out.sum().backward()
    kept = out.numpy() != 0
    assert 0 < kept.mean() < 1, f"p={p}: kept fraction {kept.mean()}"
    expected = np.where(kept, 1 / (1 - p), 0.0).astype(np.float32)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6,
                               err_msg=f"dropout gradient (actual) vs mask / (1 - p) (desired), p={p}")


def test_embedding_lookup_equals_numpy_indexing(device, rng):
    emb = to_device(nn.Embedding(10, 3), device)
    table = emb.weight.numpy()
    for idx in (np.array([3, 3, 0, 9]), np.array([[1, 2], [2, 8], [0, 0]]), np.array(5)):
        got = emb(Tensor(idx, device=device)).numpy()
        np.testing.assert_array_equal(got, table[idx], err_msg=f"Embedding({idx.tolist()}) vs numpy table[idx]")


def test_embedding_gradient_adds_repeated_rows(device):
    emb = to_device(nn.Embedding(5, 2), device)
    idx = np.array([[1, 3], [1, 1]])
    emb(Tensor(idx, device=device)).sum().backward()
    expected = np.zeros((5, 2), np.float32)
    np.add.at(expected, idx.reshape(-1), 1.0)
    np.testing.assert_array_equal(emb.weight.grad.numpy(), expected, err_msg="Embedding grad vs numpy np.add.at")


def test_linear_matches_numpy(device, rng):
    lin = to_device(nn.Linear(4, 3), device)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    expected = x @ lin.weight.numpy().T + lin.bias.numpy()
    np.testing.assert_allclose(lin(Tensor(x, device=device)).numpy(), expected, rtol=1e-5, atol=1e-6,
                               err_msg="Linear (actual) vs x @ W.T + b (desired)")
    no_bias = to_device(nn.Linear(4, 3, bias=False), device)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight"]


def test_layernorm_module_matches_numpy(device, rng):
    ln = to_device(nn.LayerNorm(6), device)
    x = rng.standard_normal((3, 6)).astype(np.float32) * 4 + 1
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(ln(Tensor(x, device=device)).numpy(), (x - mu) / np.sqrt(var + 1e-5), rtol=1e-5,
                               atol=1e-5, err_msg="LayerNorm (actual) vs numpy (desired)")


def test_model_forward_backward_fills_every_grad(device):
    model = to_device(Model(), device)
    model(Tensor(np.array([[1, 2, 3], [4, 5, 6]]), device=device)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
