"""Pictures of what the engine does: the autograd graph of a tensor and the schedule of
fused kernels that realizes it, as Graphviz DOT text and as PNG/SVG images.

    with viz.trace(model):                        # optional: remember which module made each op
        logits, loss = model(x, y)
        loss.backward()                           # ... and each op's output gradient
    viz.draw(viz.autograd_graph(loss, model, collapse=2, expand="h.1.attn"), "gpt.png")
    viz.draw(viz.schedule_graph(x.softmax(-1)), "softmax.png")

An autograd node is one differentiable op (its name, output shape and dtype, and after a
traced backward the norm of the gradient that reached it) or a leaf (a parameter, by its
name when the model is given, or an input).  A whole GPT has thousands of ops, so
`collapse=depth` folds every op made inside a module into one box per module at that
depth ("h.0" at depth 2, "h.0.attn" at 3) that counts its ops; `expand` keeps one module's
ops visible, in a frame.  A schedule node is one op inside a kernel, and each kernel is a
frame: the ops a frame holds were fused into one launch.

Images come from the `dot` program (through the `graphviz` package) when it is installed,
and otherwise from a small layered layout drawn with matplotlib (minigrad/viz_matplotlib.py),
so a picture always comes out.
"""
import contextlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import debug
from .function import Function
from .kernel import Load, Op, walk
from .ops import LoadOps
from .schedule import create_schedule, realize

ENGINES = ("auto", "dot", "matplotlib")
FORMATS = (".png", ".svg")


@dataclass
class Node:
    label: str                   # lines joined by "\n"
    kind: str                    # "op", "param", "input", "module", "buffer": picks the colour


@dataclass
class Graph:
    """Plain data that both renderers read: nodes by id, edges (src, dst, label), and
    clusters (frames) holding node ids under a title."""
    title: str = ""
    nodes: Dict[str, Node] = field(default_factory=dict)
    edges: List[Tuple[str, str, str]] = field(default_factory=list)
    clusters: Dict[str, Tuple[str, List[str]]] = field(default_factory=dict)

    def cluster_of(self) -> Dict[str, str]:
        return {n: key for key, (_, members) in self.clusters.items() for n in members}


COLORS = {"op": "#dbe9f6", "param": "#fde2c4", "input": "#e8e8e8", "module": "#d9f0d3", "buffer": "#e8e8e8"}


# ---- tracing ---------------------------------------------------------------------------------
@contextlib.contextmanager
def trace(model=None):
    """Inside this block every differentiable op records the module that made it (named as in
    model.named_modules(): "h.0.attn"), and backward keeps each op's output gradient."""
    names = {id(m): name for name, m in model.named_modules()} if model is not None else {}
    with debug.trace_modules(names):
        yield


def _shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _gradient_norms(tensors) -> Dict[int, float]:
    """id(tensor) -> the L2 norm of the gradient backward sent into it: a leaf's .grad, or an
    op's output gradient kept by trace().  All are computed in one schedule."""
    grads = {id(t): t.grad.lazydata if t._ctx is None and t.grad is not None else getattr(t._ctx, "out_grad", None)
             for t in tensors}
    grads = {k: g for k, g in grads.items() if g is not None}
    realize(*grads.values())
    return {k: float(np.linalg.norm(g.numpy().astype(np.float64))) for k, g in grads.items()}


# ---- the autograd graph ------------------------------------------------------------------------
def _inside(name: Optional[str], module: Optional[str]) -> bool:
    """Whether module path `name` is `module` or one of its sub-modules."""
    return bool(module) and bool(name) and (name == module or name.startswith(module + "."))


def _owner(name: str, depth: Optional[int], expand: Optional[str]) -> Optional[str]:
    """The module box a node made in module `name` folds into ("h.0.attn.c_attn" at depth 2:
    "h.0"), or None to show it alone: ops of the model itself, or inside `expand`.  Modules
    around `expand` ("h.0" around "h.0.attn") show their own ops and fold their other
    sub-modules at expand's depth ("h.0.mlp"), so no box holds both ends of an open one."""
    if depth is None or not name or _inside(name, expand):
        return None
    owner = ".".join(name.split(".")[:depth])
    if _inside(expand, owner):              # a module around the expanded one opens down to its level
        owner = ".".join(name.split(".")[:expand.count(".") + 1])
        return None if _inside(expand, owner) else owner
    return owner


def _is_constant(t) -> bool:
    """A number broadcast by a view (the 2 in x * 2): drawn as part of the op that uses it."""
    return t._ctx is None and not t.requires_grad and t.lazydata.base.op is LoadOps.CONST


def autograd_graph(tensor, model=None, collapse: Optional[int] = None, expand: Optional[str] = None,
                   title: Optional[str] = None) -> Graph:
    """The graph backward() walks from `tensor`: one node per op or leaf (constants left out),
    edges along the data flow labelled with shapes.  `model` names the parameters; `collapse`
    and `expand` need the graph built under trace(model) (see the module docstring)."""
    params = {id(p): name for name, p in model.named_parameters()} if model is not None else {}
    tensors = [t for t in tensor._toposort(every_input=True) if not _is_constant(t)]
    if any(t._ctx is not None and not isinstance(t._ctx, Function) for t in tensors):
        raise ValueError("this graph was freed by backward(): build it inside `with minigrad.viz.trace():`, "
                         "which keeps it, or call backward(retain_graph=True)")
    if collapse is not None and not any(t._ctx is not None and t._ctx.scope is not None for t in tensors):
        raise ValueError("collapse needs to know which module made each op: build the graph inside "
                         "`with minigrad.viz.trace(model):`")
    module = {}                             # id(tensor) -> the module that made it ("" if none known)
    for t in reversed(tensors):             # consumers first: an input belongs where it is used
        if t._ctx is not None:
            module[id(t)] = t._ctx.scope or ""
            for p in t._ctx.parents:
                if p._ctx is None and id(p) not in params:
                    module.setdefault(id(p), module[id(t)])
        elif id(t) in params:
            module[id(t)] = params[id(t)].rpartition(".")[0]
    if expand and not any(_inside(name, expand) for name in module.values()):
        known = sorted({name for name in module.values() if name})
        raise ValueError(f"expand={expand!r} names no module of this graph; its modules: {', '.join(known[:12])}"
                         f"{' ...' if len(known) > 12 else ''}")
    norms = _gradient_norms(t for t in tensors if _owner(module.get(id(t), ""), collapse, expand) is None)
    g = Graph(title=title or f"autograd graph of a {_shape(tensor.shape)} tensor")
    node_of: Dict[int, str] = {}            # id(tensor) -> its graph node: its own, or its module's box
    counts: Dict[str, Counter] = {}
    for i, t in enumerate(tensors):
        ctx, name = t._ctx, module.get(id(t), "")
        what = ctx.name() if ctx is not None else params.get(id(t), "leaf" if t.requires_grad else "input")
        owner = _owner(name, collapse, expand)
        if owner is not None:
            node_of[id(t)] = "m:" + owner
            counts.setdefault(owner, Counter())["parameter" if id(t) in params else what] += 1
            continue
        node_of[id(t)] = f"t{i}"
        lines = [what, f"{_shape(t.shape)} {t.dtype}"]
        if id(t) in norms:
            lines.append(f"|grad| {norms[id(t)]:.3g}")
        kind = "op" if ctx is not None else "param" if t.requires_grad else "input"
        g.nodes[f"t{i}"] = Node("\n".join(lines), kind)
        if _inside(name, expand):
            g.clusters.setdefault(expand, (expand, []))[1].append(f"t{i}")
    for owner, count in counts.items():
        ops = Counter({k: n for k, n in count.items() if k not in ("parameter", "input")})
        common = ", ".join(f"{k} x{n}" for k, n in ops.most_common(4))
        lines = [owner, f"{sum(ops.values())} ops, {count['parameter']} parameters"] + ([common] if common else [])
        g.nodes["m:" + owner] = Node("\n".join(lines), "module")
    seen_edges = set()
    for t in tensors:
        for p in t._ctx.parents if t._ctx is not None else ():
            if _is_constant(p):
                continue
            edge = (node_of[id(p)], node_of[id(t)])
            if edge[0] != edge[1] and edge not in seen_edges:
                seen_edges.add(edge)
                g.edges.append((*edge, _shape(p.shape)))
    return g


# ---- the schedule --------------------------------------------------------------------------------
def schedule_graph(*tensors) -> Graph:
    """The kernels that realizing `tensors` would run, without running them: one frame per
    kernel around the ops fused into it; edges carry buffers between kernels."""
    kernels = create_schedule([t.lazydata for t in tensors])
    g = Graph(title=f"{len(kernels)} kernels")
    producer: Dict[int, str] = {}           # id(buffer) -> node id of the op that writes it
    for k, kernel in enumerate(kernels):
        ops = [n for n in walk(kernel.ast) if isinstance(n, Op)]
        ids = {}
        for j, op in enumerate(ops):
            nid = f"k{k}o{j}"
            ids[id(op)] = nid
            g.nodes[nid] = Node(f"{op.op.name.lower()}\n{_shape(op.shape)}", "op")
        title = f"kernel {k}: {kernel.kind}" + (f", {len(ops)} ops fused" if len(ops) > 1 else "")
        g.clusters[f"kernel{k}"] = (title, list(ids.values()))
        root = ids.get(id(kernel.ast))
        if root is None:                                   # a plain copy: one node for the kernel
            root = f"k{k}copy"
            g.nodes[root] = Node(f"copy\n{_shape(kernel.output.shape)}", "op")
            g.clusters[f"kernel{k}"][1].append(root)
        for op in ops:
            for src in op.srcs:
                if isinstance(src, Load):
                    g.edges.append((_buffer_node(g, kernel.inputs[src.index], producer), ids[id(op)],
                                    _shape(src.view.shape)))
                elif isinstance(src, Op):
                    g.edges.append((ids[id(src)], ids[id(op)], ""))
        if root.endswith("copy") and isinstance(kernel.ast, Load):
            g.edges.append((_buffer_node(g, kernel.inputs[kernel.ast.index], producer), root, ""))
        producer[id(kernel.output)] = root
    return g


def _buffer_node(g: Graph, buffer, producer: Dict[int, str]) -> str:
    """The node a kernel input comes from: the op of an earlier kernel, or a buffer already in memory."""
    if id(buffer) in producer:
        return producer[id(buffer)]
    nid = f"b{id(buffer)}"
    if nid not in g.nodes:
        what = "constant" if buffer.op is LoadOps.CONST else "buffer"
        g.nodes[nid] = Node(f"{what}\n{_shape(buffer.shape)} {buffer.dtype}", "buffer")
    return nid


# ---- output --------------------------------------------------------------------------------------
def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(g: Graph) -> str:
    """Graphviz DOT text: data flows from top to bottom, frames are DOT clusters."""
    lines = ["digraph minigrad {", "  rankdir=TB;", f"  label={_quote(g.title)}; labelloc=t;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8, color="#555555"];']
    clustered = g.cluster_of()

    def node_line(nid):
        node = g.nodes[nid]
        return f"  {_quote(nid)} [label={_quote(node.label)}, fillcolor={_quote(COLORS[node.kind])}];"

    for i, (key, (title, members)) in enumerate(g.clusters.items()):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label={_quote(title)}; style="rounded,dashed"; color="#888888";')
        lines.extend("  " + node_line(n) for n in members)
        lines.append("  }")
    lines.extend(node_line(n) for n in g.nodes if n not in clustered)
    lines.extend(f"  {_quote(a)} -> {_quote(b)}" + (f" [label={_quote(label)}];" if label else ";")
                 for a, b, label in g.edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_available() -> bool:
    return shutil.which("dot") is not None


def draw(g: Graph, path: str, engine: str = "auto") -> str:
    """Write `g` as an image to `path` (.png or .svg) and return the engine used: "dot" when
    the dot program is installed (or asked for), else "matplotlib"."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"draw writes .png or .svg files, got {path!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "dot" and not dot_available():
        raise RuntimeError("engine='dot' needs Graphviz's dot program (apt-get install graphviz, "
                           "brew install graphviz); engine='auto' falls back to matplotlib")
    use_dot = engine == "dot" or (engine == "auto" and dot_available())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if use_dot:
        import graphviz
        data = graphviz.Source(to_dot(g)).pipe(format=ext[1:])
        with open(path, "wb") as f:
            f.write(data)
        return "dot"
    from .viz_matplotlib import draw_layered
    draw_layered(g, path)
    return "matplotlib"
