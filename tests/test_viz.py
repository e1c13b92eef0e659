"""minigrad.viz: the graphs hold the right nodes, counts and gradient norms; DOT text is valid;
both renderers write real images; without the `dot` program the matplotlib path is taken."""
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from gpt.model import GPT, GPTConfig
from minigrad import Tensor, create_schedule, viz

needs_dot = pytest.mark.skipif(shutil.which("dot") is None and not os.environ.get("CI"),
                               reason="Graphviz's dot is not installed (CI installs it)")


def micrograd_example():
    """A micrograd-sized expression, traced, after backward: loss = sum(relu(a * b + a)^2)."""
    a = Tensor([0.5, -1.0], requires_grad=True)
    b = Tensor([2.0, 0.25], requires_grad=True)
    with viz.trace():
        c = (a * b + a).relu()
        loss = (c * c).sum()
        loss.backward()
    return loss


def labels(g):
    return [node.label for node in g.nodes.values()]


def test_autograd_graph_has_every_op_and_the_gradients_backward_computed():
    loss = micrograd_example()
    g = viz.autograd_graph(loss)
    firsts = sorted(label.split("\n")[0] for label in labels(g))
    assert firsts == sorted(["leaf", "leaf", "Mul", "Add", "Relu", "Mul", "Sum", "Reshape"])
    a, b = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    c = np.maximum(a * b + a, 0)                                          # the chain rule by hand:
    dc = 2 * c                                                            # what reaches relu's output
    da, db = dc * (c > 0) * (b + 1), dc * (c > 0) * a
    relu = next(label for label in labels(g) if label.startswith("Relu"))
    assert f"|grad| {np.linalg.norm(dc):.3g}" in relu, relu
    leaf_norms = sorted(float(label.split("|grad| ")[1]) for label in labels(g) if label.startswith("leaf"))
    np.testing.assert_allclose(leaf_norms, sorted([np.linalg.norm(da), np.linalg.norm(db)]), rtol=1e-2)
    assert len(g.edges) == 8 and all(label == "(2,)" for _, _, label in g.edges[:-1])


def test_ops_outside_a_trace_record_nothing():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    assert y._ctx.scope is None
    y.backward()
    assert not hasattr(y._ctx, "out_grad")
    with pytest.raises(ValueError, match="trace"):
        viz.autograd_graph(y, collapse=1)


@pytest.fixture(scope="module")
def traced_gpt():
    Tensor.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8,
                          position_embedding="sinusoidal", tie_word_embeddings=False))
    idx = Tensor(np.random.default_rng(0).integers(0, 11, (2, 8)))
    with viz.trace(model):
        _, loss = model(idx, idx)
        loss.backward()
    return model, loss


def count_ops(loss, prefix):
    """The differentiable ops made inside module `prefix`, counted by walking _ctx directly."""
    seen, stack, n = set(), [loss], 0
    while stack:
        t = stack.pop()
        if id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        scope = t._ctx.scope
        n += scope == prefix or scope.startswith(prefix + ".")
        stack.extend(t._ctx.parents)
    return n


def test_collapsed_gpt_has_one_box_per_module_with_its_op_count(traced_gpt):
    model, loss = traced_gpt
    g = viz.autograd_graph(loss, model, collapse=2)
    boxes = {node.label.split("\n")[0]: node.label for node in g.nodes.values() if node.kind == "module"}
    assert {"wte", "h.0", "h.1", "ln_f"} <= set(boxes), sorted(boxes)
    for name in ("h.0", "h.1", "ln_f"):
        assert f"\n{count_ops(loss, name)} ops, " in boxes[name], boxes[name]
    block_params = sum(1 for n, _ in model.named_parameters() if n.startswith("h.0."))
    assert f"ops, {block_params} parameters" in boxes["h.0"]
    full = viz.autograd_graph(loss, model)
    assert len(g.nodes) < len(full.nodes) / 5                              # readable: far fewer boxes
    assert ("h.0" in boxes and any(a == "m:h.0" and b == "m:h.1" for a, b, _ in g.edges)), "h.0 feeds h.1"


def test_expanding_one_module_shows_its_ops_in_a_frame(traced_gpt):
    model, loss = traced_gpt
    g = viz.autograd_graph(loss, model, collapse=2, expand="h.1.attn")
    boxes = {node.label.split("\n")[0] for node in g.nodes.values() if node.kind == "module"}
    assert "h.1" not in boxes and {"h.0", "h.1.mlp", "h.1.ln_1"} <= boxes, sorted(boxes)
    title, members = g.clusters["h.1.attn"]
    ops_inside = [g.nodes[m] for m in members if g.nodes[m].kind == "op"]
    assert len(ops_inside) == count_ops(loss, "h.1.attn")
    assert any(g.nodes[m].label.startswith("h.1.attn.c_attn.weight") for m in members)
    with pytest.raises(ValueError, match=r"expand='h\.9\.attn' names no module.*h\.0\.attn"):
        viz.autograd_graph(loss, model, collapse=2, expand="h.9.attn")


def test_schedule_graph_frames_each_kernel_around_its_fused_ops():
    x = Tensor(np.random.default_rng(0).random((4, 5)).astype(np.float32))
    probs = x.softmax(-1)
    kernels = create_schedule([probs.lazydata])
    g = viz.schedule_graph(probs)
    assert len(g.clusters) == len(kernels) and g.title == f"{len(kernels)} kernels"
    for kernel, (title, members) in zip(kernels, g.clusters.values()):
        assert [g.nodes[m].label.split("\n")[0] for m in members] == kernel.fused_ops()
    titles = [title for title, _ in g.clusters.values()]
    assert titles == ["kernel 0: reduce", "kernel 1: reduce, 3 ops fused", "kernel 2: elementwise, 3 ops fused"], \
        titles          # max; exp(x - max) summed; and recomputed for the quotient, not stored in between
    assert probs.lazydata.base.realized is None                                  # drawing ran nothing


def assert_real_image(path, min_side=100):
    if path.endswith(".png"):
        import matplotlib.image
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) >= min_side, pixels.shape
        assert pixels[..., :3].std() > 0.02, "a blank image"
    else:
        root = ET.parse(path).getroot()
        assert root.tag.endswith("svg")
        assert sum(1 for el in root.iter() if el.tag.endswith(("path", "text", "polygon", "g"))) > 10


@pytest.mark.parametrize("ext", [".png", ".svg"])
def test_matplotlib_draws_real_images(traced_gpt, tmp_path, ext):
    model, loss = traced_gpt
    path = str(tmp_path / f"gpt{ext}")
    assert viz.draw(viz.autograd_graph(loss, model, collapse=1), path, engine="matplotlib") == "matplotlib"
    assert_real_image(path)


@needs_dot
@pytest.mark.parametrize("ext", [".png", ".svg"])
def test_dot_draws_real_images(traced_gpt, tmp_path, ext):
    model, loss = traced_gpt
    path = str(tmp_path / f"gpt{ext}")
    assert viz.draw(viz.autograd_graph(loss, model, collapse=2, expand="h.0.attn"), path) == "dot"
    assert_real_image(path)


@needs_dot
def test_dot_text_is_read_by_graphviz_with_every_node_and_edge(traced_gpt):
    import graphviz
    model, loss = traced_gpt
    g = viz.autograd_graph(loss, model, collapse=2, expand="h.0.attn")
    plain = graphviz.Source(viz.to_dot(g)).pipe(format="plain").decode()
    assert sum(line.startswith("node ") for line in plain.splitlines()) == len(g.nodes)
    assert sum(line.startswith("edge ") for line in plain.splitlines()) == len(g.edges)


def test_without_dot_the_matplotlib_path_is_taken(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    g = viz.autograd_graph(micrograd_example())
    path = str(tmp_path / "graph.png")
    assert viz.draw(g, path) == "matplotlib"
    assert_real_image(path)
    with pytest.raises(RuntimeError, match="dot program"):
        viz.draw(g, str(tmp_path / "other.png"), engine="dot")
    assert not os.path.exists(tmp_path / "other.png")


def test_draw_names_bad_arguments(tmp_path):
    g = viz.autograd_graph(micrograd_example())
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        viz.draw(g, str(tmp_path / "graph.jpg"))
    with pytest.raises(ValueError, match="engine must be one of"):
        viz.draw(g, str(tmp_path / "graph.png"), engine="tikz")
