"""Mistakes get clear errors that name the problem (the shapes, the axis, the key...)."""
import re

import numpy as np
import pytest

import minigrad
from minigrad import Tensor, nn


def zeros(*shape, device):
    return Tensor(np.zeros(shape, np.float32), device=device)


def raises_naming(exc, call, *needles):
    """call() raises exc and its message contains every needle (shown with the message if not)."""
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{exc.__name__} message does not name {needle!r}: {message!r}"
    return message


def test_broadcast_mismatch_names_both_shapes(device):
    a, b = zeros(3, 4, device=device), zeros(5, device=device)
    raises_naming(ValueError, lambda: a + b, "(3, 4)", "(5,)")
    raises_naming(ValueError, lambda: a * zeros(2, 3, 1, device=device).expand(2, 3, 3), "(3, 4)", "(2, 3, 3)")
    cond = Tensor(np.ones((2, 4), bool), device=device)
    raises_naming(ValueError, lambda: cond.where(a, 0.0), "(2, 4)", "(3, 4)")


def test_matmul_inner_dimension_mismatch(device):
    raises_naming(ValueError, lambda: zeros(3, 4, device=device) @ zeros(5, 2, device=device), "(3, 4)", "(5, 2)")
    raises_naming(ValueError, lambda: zeros(2, 3, 4, device=device) @ zeros(3, device=device), "(2, 3, 4)", "(3,)")
    with pytest.raises(ValueError, match="cannot be broadcast"):
        zeros(2, 3, 4, device=device) @ zeros(3, 4, 5, device=device)


def test_impossible_reshape(device):
    t = zeros(3, 4, device=device)
    raises_naming(ValueError, lambda: t.reshape(5, 3), "(3, 4)", "(5, 3)")
    raises_naming(ValueError, lambda: t.reshape(-1, 5), "(3, 4)")
    with pytest.raises(ValueError, match="only one dimension can be -1"):
        t.reshape(-1, -1)
    raises_naming(ValueError, lambda: t.expand(3, 5), "(3, 4)", "(3, 5)")


@pytest.mark.parametrize("op", ["sum", "max", "mean", "softmax", "log_softmax", "transpose", "unsqueeze", "argmax",
                                "cat"])
def test_axis_out_of_range(op, device):
    t = zeros(3, 4, device=device)
    calls = {
        "sum": lambda: t.sum(2), "max": lambda: t.max((0, -3)), "mean": lambda: t.mean(5),
        "softmax": lambda: t.softmax(2), "log_softmax": lambda: t.log_softmax(-3),
        "transpose": lambda: t.transpose(0, 2), "unsqueeze": lambda: t.unsqueeze(4), "argmax": lambda: t.argmax(3),
        "cat": lambda: Tensor.cat(t, t, axis=2),
    }
    with pytest.raises(IndexError, match=r"axis -?\d+ is out of range"):
        calls[op]()


def test_repeated_axis(device):
    with pytest.raises(ValueError, match="repeats"):
        zeros(3, 4, device=device).sum((1, -1))


def test_bad_permutation(device):
    raises_naming(ValueError, lambda: zeros(3, 4, device=device).permute(0, 0), "(0, 0)", "(3, 4)")


def test_backward_on_non_scalar_needs_gradient(device):
    x = Tensor(np.ones((3, 4), np.float32), device=device, requires_grad=True)
    raises_naming(RuntimeError, lambda: (x * 2).backward(), "(3, 4)", "gradient")
    raises_naming(ValueError, lambda: (x * 2).backward(Tensor(np.ones((4, 3), np.float32), device=device)),
                  "(4, 3)", "(3, 4)")


def test_backward_without_requires_grad(device):
    with pytest.raises(RuntimeError, match="does not require grad"):
        zeros(3, device=device).sum().backward()


def test_only_float_tensors_require_grad(device):
    with pytest.raises(TypeError, match="only float tensors"):
        Tensor(np.array([1, 2]), device=device, requires_grad=True)


def test_float_indices_for_gather(device):
    table = zeros(4, 3, device=device)
    index = Tensor(np.array([0.0, 1.0], np.float32), device=device)
    with pytest.raises(TypeError, match="integer index"):
        table[index]
    with pytest.raises(TypeError, match="integer index"):
        table.take(index, axis=1)
    with pytest.raises(TypeError, match="integer index"):
        table.gather(1, index)


def test_gather_index_out_of_range(device):
    table = zeros(4, 3, device=device)
    with pytest.raises(IndexError, match="index 7 is out of range for a table of 4 rows"):
        table[Tensor(np.array([1, 7]), device=device)].numpy()
    with pytest.raises(IndexError, match="out of range"):
        table.take(Tensor(np.array([0, 3]), device=device), axis=1).numpy()
    with pytest.raises(IndexError, match="out of range"):                     # -5 + 4 rows is still < 0
        table[Tensor(np.array([-5]), device=device)].numpy()


def test_basic_index_out_of_range(device):
    t = zeros(3, 4, device=device)
    raises_naming(IndexError, lambda: t[5], "5", "size 3")
    raises_naming(IndexError, lambda: t[:, -5], "-5", "size 4")
    raises_naming(IndexError, lambda: t[0, 0, 0], "too many indices", "(3, 4)")


def test_cross_entropy_target_out_of_range(device):
    logits = zeros(3, 4, device=device)
    # building the graph reads nothing back: a bad target makes the loss NaN, never a silent number
    assert np.isnan(logits.cross_entropy(Tensor(np.array([0, 1, 4]), device=device)).item())
    assert np.isnan(logits.cross_entropy(Tensor(np.array([-3, 1, -1]), device=device)).item())
    with minigrad.detect_anomaly():                # where reads are allowed, the target is named
        with pytest.raises(IndexError, match="target 4 is out of range for 4 classes"):
            logits.cross_entropy(Tensor(np.array([0, 1, 4]), device=device))
        with pytest.raises(IndexError, match="target -3 is out of range"):
            logits.cross_entropy(Tensor(np.array([-3, 1, 2]), device=device))
    with pytest.raises(TypeError, match="integers"):
        logits.cross_entropy(Tensor(np.array([0.0, 1.0, 2.0], np.float32), device=device))
    raises_naming(ValueError, lambda: logits.cross_entropy(Tensor(np.array([0, 1]), device=device)), "(3, 4)", "(2,)")


def test_unknown_dtype(device):
    with pytest.raises(TypeError, match="unknown dtype 'bogus'"):
        Tensor([1.0, 2.0], dtype="bogus", device=device)
    with pytest.raises(TypeError, match="complex64 is not supported"):
        Tensor([1.0, 2.0], dtype=np.complex64, device=device)
    with pytest.raises(TypeError, match="float16"):
        Tensor.zeros(2, dtype=np.float16, device=device)
    with pytest.raises(TypeError, match="cannot make a tensor"):
        Tensor(np.array(["a", "b"]), device=device)


def test_unknown_device():
    for bad in ("tpu", "cuda:0"):
        with pytest.raises(ValueError, match=re.escape(f"unknown device {bad!r}")):
            Tensor([1.0], device=bad)
    with pytest.raises(ValueError, match="unknown device 'metal'"):
        Tensor.zeros(3, device="metal")


def test_combining_with_unsupported_type(device):
    with pytest.raises(TypeError, match="str"):
        zeros(2, device=device) + "x"


def test_item_and_bool_need_one_element(device):
    t = zeros(3, 4, device=device)
    raises_naming(ValueError, lambda: t.item(), "(3, 4)")
    raises_naming(ValueError, lambda: bool(t), "(3, 4)", "ambiguous")


def test_cat_and_stack_shape_mismatch(device):
    raises_naming(ValueError, lambda: Tensor.cat(zeros(3, 4, device=device), zeros(3, 5, device=device)),
                  "(3, 4)", "(3, 5)")
    raises_naming(ValueError, lambda: Tensor.stack([zeros(3, 4, device=device), zeros(4, 3, device=device)]),
                  "(3, 4)", "(4, 3)")


def test_pad_needs_a_pair_per_dimension(device):
    raises_naming(ValueError, lambda: zeros(3, 4, device=device).pad(((1, 1),)), "(3, 4)")
    raises_naming(ValueError, lambda: zeros(3, 4, device=device).pad(((1, 1), (-3, -2))), "at most the whole axis")


def test_bad_argument_values(device):
    t = zeros(3, 4, device=device)
    with pytest.raises(ValueError, match="approximate"):
        t.gelu(approximate="sigmoid")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        t.dropout(1.5)
    with pytest.raises(ValueError, match="reduction"):
        t.cross_entropy(Tensor(np.array([0, 1, 2]), device=device), reduction="avg")


class Net(nn.Module):
    def __init__(self):
        self.fc = nn.Linear(3, 2)
        self.blocks = [nn.Linear(2, 2)]


def test_load_state_dict_missing_key():
    net = Net()
    state = net.state_dict()
    del state["blocks.0.bias"]
    with pytest.raises(KeyError, match=re.escape("blocks.0.bias")):
        net.load_state_dict(state)


def test_load_state_dict_unexpected_key():
    net = Net()
    state = net.state_dict()
    state["fc.extra"] = np.zeros(2, np.float32)
    with pytest.raises(KeyError, match="fc.extra"):
        net.load_state_dict(state)


def test_load_state_dict_wrong_shape_changes_nothing():
    net = Net()
    before = net.state_dict()
    state = net.state_dict()
    state["fc.bias"] = np.ones(2, np.float32) * 7      # valid, but must not be applied
    state["fc.weight"] = np.zeros((3, 2), np.float32)
    raises_naming(ValueError, lambda: net.load_state_dict(state), "fc.weight", "(3, 2)", "(2, 3)")
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"{name} changed by a failed load_state_dict")


def test_index_on_another_device_is_named(cl):
    table = Tensor(np.zeros((4, 3), np.float32), device="cl")
    with pytest.raises(RuntimeError, match="the index is on numpy and the tensor it picks from on cl"):
        table[Tensor(np.array([0, 1]))]
