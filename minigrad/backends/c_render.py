"""Turn a Kernel into a plain C function for the compiled CPU path (elementwise, reduce,
scatter-add and random-number kernels; matmuls stay on BLAS).

The expression inside is the OpenCL renderer's (c_like.py: one place for each op's C and for a
View's index arithmetic); what differs is the loop around it.  A GPU launches one work item
per output element; here one function call runs loops over the kernel's shape, whose outer loop
the thread pool (c_runtime.py) splits across the cores, and whose inner loop the compiler vectorizes:

  elementwise   for i0 .. for ik:   out[flat index] = expression(i0..ik)
  reduce        for each kept index:  acc = identity;  for each reduced index: acc = acc (+|max) value
                (when the innermost axis is kept, as in a bias gradient's sum over rows, the kept
                axes after the last reduced one run innermost and accumulate in a row of `acc`)

Dims are merged first where every Load reads them as one (a (B, T, D) tensor read in order is
one loop of B*T*D), so loops are few and the innermost one is long.  Float sums accumulate in
double.  The function is named by a hash of its source, so equal kernels share one function.
render_group fuses several elementwise kernels into one loop with several outputs (a jit's
replay, see jit._launch_groups).
"""
import hashlib
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..kernel import Const, KernelKind, Load, Op, find_reduce, rewrite, walk
from ..ops import OPS, ReduceOps, UnaryOps
from ..view import View
from .. import rng
from .c_like import MAXNAN, ExpressionRenderer, c_type, epilogue_view, identity, load_expr

# A loop of fewer elements than this runs on one thread: waking the others costs more than they
# save (measured on the laptop recipe: 2 threads gained nothing below this size).  A bigger
# one is cut into a chunk per PARALLEL_FROM elements (at most MAX_CHUNKS), whatever the threads.
PARALLEL_FROM = 1 << 18
MAX_CHUNKS = 64

# mg_exp: exp, but 0 below the smallest normal result.  The vector exp of glibc's libmvec leaves
# its fast path for any lane below -87.3 (float): a causally masked softmax has half its scores at
# -inf, and took 8x longer.  So the argument is clamped at the floor and the result set to 0 there
# (a true result below 1.6e-38 becomes 0).  The floors are variables, not constants, else the
# compiler sees through the clamp (where the result is kept, the clamp changed nothing) and passes
# the raw argument after all.
PRELUDE = MAXNAN + """float mg_exp_floor_f = -87.0f;
double mg_exp_floor_d = -708.0;
static inline float mg_expf(float x) {
  float c = x < mg_exp_floor_f ? mg_exp_floor_f : x, e = exp(c);
  return c == mg_exp_floor_f ? 0.0f : e;
}
static inline double mg_expd(double x) {
  double c = x < mg_exp_floor_d ? mg_exp_floor_d : x, e = exp(c);
  return c == mg_exp_floor_d ? 0.0 : e;
}
#define mg_exp(x) _Generic((x), float: mg_expf, default: mg_expd)(x)
static inline """ + rng.LOWBIAS32_C


# ops whose vector version (libmvec) and scalar version (libm) may differ in the last bits
VECTOR_MATH_OPS = (UnaryOps.EXP, UnaryOps.LOG, UnaryOps.SIN, UnaryOps.ERF)


class CExpressionRenderer(ExpressionRenderer):
    overrides = {UnaryOps.EXP: "mg_exp({0})"}


def _mergeable(loads: Sequence[Load], shape, a: int, b: int) -> bool:
    """Can dims a and b = a+1 be one loop?  Yes when every Load reads them as one run of memory
    (stride[a] == stride[b] * shape[b]) and pads neither."""
    for load in loads:
        v = load.view
        if v.mask is not None and (v.mask[a] != (0, shape[a]) or v.mask[b] != (0, shape[b])):
            return False
        if v.strides[a] != v.strides[b] * shape[b]:
            return False
    return True


def merge_dims(shape, loads: Sequence[Load], reduced: Tuple[int, ...] = ()) -> List[List[int]]:
    """Groups of consecutive dims that can run as one loop: same kind (reduced or kept), and
    read as one by every load.  Dims of size 1 that no load pads are dropped."""
    def padded(d):
        return any(ld.view.mask is not None and ld.view.mask[d] != (0, shape[d]) for ld in loads)
    dims = [d for d in range(len(shape)) if shape[d] != 1 or padded(d)]
    groups: List[List[int]] = []
    for d in dims:
        if groups and (groups[-1][-1] in reduced) == (d in reduced) and _mergeable(loads, shape, groups[-1][-1], d):
            groups[-1].append(d)
        else:
            groups.append([d])
    return groups


def _merged_view(view: View, groups: List[List[int]]) -> View:
    shape = tuple(math.prod(view.shape[d] for d in g) for g in groups)
    strides = tuple(view.strides[g[-1]] for g in groups)
    mask = None
    if view.mask is not None:                      # a padded dim is always a group of its own
        mask = tuple(view.mask[g[0]] if len(g) == 1 else (0, n) for g, n in zip(groups, shape))
        if all(m == (0, n) for m, n in zip(mask, shape)):
            mask = None
    return View(shape, strides, view.offset, mask)


def _rewrite(node, groups, memo, load=None):
    """The expression tree with every Load's View (and every shape) over the merged dims.  `load`,
    if given, says what a Load becomes instead (a multi-output kernel's member reads another's
    value; with groups None, shapes stay as they are and `load` must be given)."""
    def merged(n):
        return Load(n.index, _merged_view(n.view, groups), n.dtype)

    def shape(old):
        return tuple(math.prod(old[d] for d in g) for g in groups)
    return rewrite(node, memo, load or merged, None if groups is None else shape)


def _parameters(output_dtypes, input_dtypes, scalars, numbered: bool = False) -> List[str]:
    """The output buffer (out, or out0, out1, ... for a group), the input buffers, then the scalars."""
    if numbered:
        params = [f"{c_type(d)}* out{i}" for i, d in enumerate(output_dtypes)]
    else:
        params = [f"{c_type(output_dtypes[0])}* out"]
    params += [f"const {c_type(d)}* in{i}" for i, d in enumerate(input_dtypes)]
    params += [f"{c_type(d)} c{i}" for i, (_, d) in enumerate(scalars)]
    return params


def _loops(names: Sequence[str], sizes: Sequence[int], split: bool = False) -> List[str]:
    """Nested for-loop headers.  With `split`, the outermost runs over [start, end): the chunk of
    it one thread of the pool was given."""
    lines = []
    for k, (name, n) in enumerate(zip(names, sizes)):
        start, end = ("start", "end") if split and k == 0 else ("0", n)
        lines.append(f"for (long {name} = {start}; {name} < {end}; {name}++)")
    return lines


def _flat(names: Sequence[str], sizes: Sequence[int]) -> str:
    """The row-major flat index of loop variables `names` over `sizes`."""
    expr = ""
    for name, n in zip(names, sizes):
        expr = f"({expr})*{n} + {name}" if expr else name
    return expr or "0"


def render_elementwise(kernel, input_dtypes) -> Tuple[str, list]:
    root = kernel.ast
    shape = kernel.output.shape
    loads = [n for n in walk(root) if isinstance(n, Load)]
    groups = merge_dims(shape, loads)
    root = _rewrite(root, groups, {})
    sizes = [math.prod(shape[d] for d in g) for g in groups]
    idx = [f"i{k}" for k in range(len(sizes))]
    scalars = []
    split = _split_dim(root, sizes)
    if split is None:
        r = CExpressionRenderer(idx, scalars)
        result = r.render(root)
        body = _loops(idx, sizes, split=True) + ["{"]
        body += ["  " + line for line in r.lines] + [f"  out[{_flat(idx, sizes)}] = {result};", "}"]
    else:
        body = _segmented_body(root, sizes, idx, split, scalars)
    return _function(kernel, input_dtypes, scalars, body, sizes[0] if sizes else 1, math.prod(sizes))


# A padded dim is cut into at most this many stretches (a cat of as many tensors), each its own loop.
MAX_SEGMENTS = 128


def _split_dim(root, sizes) -> Optional[int]:
    """The one dim (of the merged loops) that loads pad, if there is exactly one: a cat, or a pad.
    Its loop is then cut where a mask starts or ends, so inside each stretch every load is known to
    be valid or not, and the loop is plain loads the compiler vectorizes, not a branch per load."""
    dims = {d for n in walk(root) if isinstance(n, Load) and n.view.mask is not None
            for d, (lo, hi) in enumerate(n.view.mask) if (lo, hi) != (0, sizes[d])}
    if len(dims) != 1:
        return None
    d = dims.pop()
    return d if len(_cuts(root, d, sizes[d])) - 1 <= MAX_SEGMENTS else None


def _cuts(root, d: int, n: int) -> List[int]:
    cuts = {0, n}
    for load in (x for x in walk(root) if isinstance(x, Load) and x.view.mask is not None):
        cuts.update(min(max(c, 0), n) for c in load.view.mask[d])
    return sorted(cuts)


def _within(root, d: int, a: int, b: int):
    """The expression for indices a <= i_d < b of dim d: a load padded there reads 0 (a literal),
    one valid there reads without a condition."""
    def load(node):
        lo, hi = node.view.mask[d] if node.view.mask is not None else (0, b)
        if lo <= a and b <= hi:
            v = node.view
            mask = None if v.mask is None else tuple((0, n) if k == d else m for k, (m, n) in enumerate(zip(v.mask, v.shape)))
            if mask is not None and all(m == (0, n) for m, n in zip(mask, v.shape)):
                mask = None
            return Load(node.index, View(v.shape, v.strides, v.offset, mask), node.dtype)
        return Const(0, node.dtype)
    return _rewrite(root, None, {}, load)


def _segmented_body(root, sizes, idx, d: int, scalars) -> List[str]:
    """Elementwise loops with dim d's loop cut at the mask edges (see _split_dim): one loop per
    stretch, each with its own expression.  The same arithmetic per element as one loop with
    conditions, so the same bits."""
    body = _loops(idx[:d], sizes[:d], split=True) + ["{"]
    cuts = _cuts(root, d, sizes[d])
    for a, b in zip(cuts, cuts[1:]):
        r = CExpressionRenderer(idx, scalars)
        result = r.render(_within(root, d, a, b))
        lo, hi = (f"(start > {a} ? start : {a})", f"(end < {b} ? end : {b})") if d == 0 else (a, b)
        body += ["  {", f"  for (long {idx[d]} = {lo}; {idx[d]} < {hi}; {idx[d]}++)"]
        body += ["  " + line for line in _loops(idx[d + 1:], sizes[d + 1:])] + ["  {"]
        body += ["    " + line for line in r.lines] + [f"    out[{_flat(idx, sizes)}] = {result};", "  }", "  }"]
    return body + ["}"]


def render_reduce(kernel, input_dtypes) -> Tuple[str, list]:
    """A reduce; with an epilogue (elementwise ops above the reduce, see kernel.py) those run on
    each accumulated value before it is stored, reading their other inputs at the output index."""
    reduce = find_reduce(kernel.ast)
    op, axes = reduce.op, tuple(reduce.arg)
    src = reduce.srcs[0]
    in_shape = src.shape if isinstance(src, Op) else src.view.shape
    def over_input(view):
        return epilogue_view(view, reduce.shape, in_shape)
    epilogue_loads = [Load(n.index, over_input(n.view), n.dtype)
                      for n in walk(kernel.ast, stop={id(reduce)}) if isinstance(n, Load)]
    loads = [n for n in walk(src) if isinstance(n, Load)]
    groups = merge_dims(in_shape, loads + epilogue_loads, axes)
    src = _rewrite(src, groups, {})
    sizes = [math.prod(in_shape[d] for d in g) for g in groups]
    is_reduced = [g[0] in axes for g in groups]
    idx = [f"i{k}" for k in range(len(sizes))]
    last_reduced = max((k for k, r in enumerate(is_reduced) if r), default=-1)
    lead = [k for k in range(len(sizes)) if not is_reduced[k] and k < last_reduced]
    red = [k for k in range(len(sizes)) if is_reduced[k]]
    trail = list(range(last_reduced + 1, len(sizes)))        # kept dims inside the last reduced one
    n_lead, n_red, n_trail = (math.prod(sizes[k] for k in ks) for ks in (lead, red, trail))

    t = c_type(reduce.dtype)
    acc_t = "double" if op is ReduceOps.SUM and reduce.dtype.kind == "f" else t
    init = identity(op, reduce.dtype)
    scalars = []
    r = CExpressionRenderer(idx, scalars)
    value = r.render(src)
    lead_names, red_names, trail_names = ([idx[k] for k in ks] for ks in (lead, red, trail))
    out_index = _flat(lead_names + trail_names, [sizes[k] for k in lead + trail])

    def fold(a: str) -> str:
        return f"{a} = {OPS[op].c.format(a, f'({acc_t}){value}')};"

    def store(reduced: str, indent: str) -> List[str]:
        """out[out_index] = the reduced value, through the epilogue if there is one."""
        if kernel.ast is reduce:
            return [f"{indent}out[{out_index}] = {reduced};"]
        e = CExpressionRenderer(idx, scalars)
        e.names[id(reduce)] = "reduced"
        memo = {id(reduce): reduce}
        result = e.render(rewrite(kernel.ast, memo, lambda n: Load(n.index, _merged_view(over_input(n.view), groups),
                                                                   n.dtype)))
        return ([f"{indent}{{", f"{indent}  const {t} reduced = {reduced};"] + [f"{indent}  {line}" for line in e.lines]
                + [f"{indent}  out[{out_index}] = {result};", f"{indent}}}"])

    body = _loops(lead_names, [sizes[k] for k in lead], split=True) + ["{"]
    if not trail and op is ReduceOps.MAX and t in ("float", "double"):
        # a plain max the compiler vectorizes, and NaN noted on the side (numpy's max returns NaN)
        body += [f"  {acc_t} acc = ({acc_t}){init};", "  int nan = 0;",
                 "  #pragma omp simd reduction(max:acc) reduction(|:nan)" if len(red_names) == 1 else ""]
        body += ["  " + line for line in _loops(red_names, [sizes[k] for k in red])]
        body += ["  {"] + ["    " + line for line in r.lines]
        body += [f"    acc = {value} > acc ? {value} : acc;", f"    nan |= {value} != {value};", "  }"]
        body += store(f"nan ? ({t})NAN : ({t})acc", "  ")
    elif not trail:                                # one accumulator per output element
        body.append(f"  {acc_t} acc = ({acc_t}){init};")
        if op is ReduceOps.SUM and n_red > 1:
            body.append("  #pragma omp simd reduction(+:acc)" if len(red_names) == 1 else "")
        body += ["  " + line for line in _loops(red_names, [sizes[k] for k in red])]
        body += ["  {"] + ["    " + line for line in r.lines] + [f"    {fold('acc')}", "  }"]
        body += store(f"({t})acc", "  ")
    else:                                          # a row of accumulators, the kept dims innermost
        # With no kept dims outside the reduced ones (a bias gradient: a sum over every row), the
        # threads share the kept dims inside instead, each its own columns of every row.
        split_trail = not lead
        trail_sizes = [sizes[k] for k in trail]
        body.append(f"  {acc_t}* acc = ({acc_t}*)malloc(sizeof({acc_t}) * {n_trail});")
        body.append(f"  for (long j = 0; j < {n_trail}; j++) acc[j] = ({acc_t}){init};")
        body += ["  " + line for line in _loops(red_names, [sizes[k] for k in red])
                 + _loops(trail_names, trail_sizes, split=split_trail)]
        j = _flat(trail_names, trail_sizes)
        body += ["  {"] + ["    " + line for line in r.lines] + [f"    {fold(f'acc[{j}]')}", "  }"]
        body += ["  " + line for line in _loops(trail_names, trail_sizes, split=split_trail)]
        body += store(f"({t})acc[{j}]", "  ")
        body.append("  free(acc);")
    body.append("}")
    outer = sizes[lead[0]] if lead else (sizes[trail[0]] if trail else 1)
    work = n_lead * n_red * n_trail
    if not lead and trail:        # threads sharing columns: each takes at least 128 of every row
        work = min(work, n_trail // 128 * PARALLEL_FROM)
    return _function(kernel, input_dtypes, scalars, body, outer, work)


def _function(kernel, input_dtypes, scalars, body: List[str], outer: int, work: int,
              output_dtypes=()) -> Tuple[str, str, list]:
    """(name, source, scalars): the kernel's loops as a function of a chunk [start, end) of its
    outer loop, and the entry point that runs all `outer` iterations, on the thread pool when
    the kernel has `work` enough to share.  Named by a hash of everything but the name."""
    params = (_parameters([kernel.output.dtype], input_dtypes, scalars) if kernel is not None
              else _parameters(output_dtypes, input_dtypes, scalars, numbered=True))
    names = [p.rsplit(" ", 1)[1] for p in params]
    unpack = [f"{p} = a->{n};" for p, n in zip(params, names)]
    text = "\n  ".join(line for line in unpack + body if line)
    chunks = min(outer, MAX_CHUNKS, work // PARALLEL_FROM)
    call = f"mg_parallel(NAME_chunk, &a, {outer}, {chunks});" if chunks > 1 else f"NAME_chunk(&a, 0, {outer});"
    source = (f"struct NAME_args {{ {' '.join(p + ';' for p in params)} }};\n"
              f"static void NAME_chunk(void* args, long start, long end) {{\n"
              f"  const struct NAME_args* a = args;\n  {text}\n}}\n"
              f"void NAME({', '.join(params)}) {{\n"
              f"  struct NAME_args a = {{ {', '.join(names)} }};\n  {call}\n}}\n")
    name = "k_" + hashlib.sha1(source.encode()).hexdigest()[:20]
    return name, source.replace("NAME", name), scalars


def render_scatter_add(kernel, input_dtypes) -> Tuple[str, str, list]:
    """The embedding's gradient: out (N, D) = 0, then out[index[i], :] += rows[i, :] for each i in
    order (numpy's np.add.at order, so the same sums).  One thread: rows may share an index.  The
    caller checks the indices first (a bad one must not write wild memory)."""
    rows, index = kernel.ast.srcs
    N, D = kernel.output.shape
    idx = [f"j{k}" for k in range(len(index.view.shape))]
    row = load_expr(f"in{index.index}", index.view, idx, index.dtype)
    value = load_expr(f"in{rows.index}", rows.view, idx + ["d"], rows.dtype)
    body = [f"for (long e = 0; e < {N * D}; e++) out[e] = 0;"] + _loops(idx, index.view.shape) + [
        "{", f"  const long n = (long){row};", f"  for (long d = 0; d < {D}; d++) out[n * {D} + d] += {value};", "}"]
    return _function(kernel, input_dtypes, [], body, 1, 0)


def render_group(members, input_dtypes) -> Optional[Tuple[str, str, list]]:
    """Several elementwise kernels of one shape as one loop: a multi-output kernel.

    `members` is [(kernel, sources, store)] in order: `sources[i]` says what the kernel's input i
    is, ("in", k) the group's input k or ("member", j) the value an earlier member computes (read
    element for element, so it is used from a register instead of memory); `store` whether its
    value is written (a value no one reads after the group is not).  AdamW's m, v and the
    parameter become one pass reading g once.  The loop runs over the dims that every member's
    loads let merge.  None when that is not each member's own loop and a member calls a vector
    math function: the vector and scalar versions of exp differ in the last bits, so moving where a
    loop's vector part ends would make a replay differ from the eager step.  None too when a
    member reads through padding (a cat): alone, its loop is cut where the padding starts and ends."""
    shape = members[0][0].output.shape
    loads = [[n for n in walk(kernel.ast) if isinstance(n, Load)] for kernel, _, _ in members]
    if any(load.view.mask is not None for own in loads for load in own):
        return None                   # a padded read runs best alone, its loop cut at the mask (_split_dim)
    groups = merge_dims(shape, [load for own in loads for load in own])
    if any(merge_dims(shape, own) != groups for own in loads) and \
            any(isinstance(n, Op) and n.op in VECTOR_MATH_OPS for kernel, _, _ in members for n in walk(kernel.ast)):
        return None
    roots = []
    for kernel, sources, _ in members:
        def load(node, sources=sources):
            where, k = sources[node.index]
            return roots[k] if where == "member" else Load(k, _merged_view(node.view, groups), node.dtype)
        roots.append(_rewrite(kernel.ast, groups, {}, load))
    sizes = [math.prod(shape[d] for d in g) for g in groups]
    idx = [f"i{k}" for k in range(len(sizes))]
    scalars = []
    r = CExpressionRenderer(idx, scalars)
    results = [r.render(root) for root in roots]
    stored = [(m, kernel) for m, (kernel, _, store) in enumerate(members) if store]
    flat = _flat(idx, sizes)
    loops = _loops(idx, sizes, split=True)
    body = loops[:-1] + ["#pragma GCC ivdep"] * bool(loops) + loops[-1:] + ["{"] + ["  " + line for line in r.lines]
    body += [f"  out{o}[{flat}] = {results[m]};" for o, (m, _) in enumerate(stored)] + ["}"]
    return _function(None, input_dtypes, scalars, body, sizes[0] if sizes else 1, math.prod(sizes),
                     output_dtypes=[kernel.output.dtype for _, kernel in stored])


def render_rand(kernel, input_dtypes) -> Tuple[str, str, list]:
    """Uniform numbers from the counter-based hash (rng.py): element i is a hash of i and the two
    keys, which are the scalar arguments c0, c1 (new each call, the same function).  The same bits
    as numpy's and OpenCL's: (bits >> 8) * 2^-24 is exact in float32.  Dropout's masks, which
    numpy made at a few ns a number (230 M a step on the shakespeare-char model)."""
    n = max(1, math.prod(kernel.output.shape))
    t = c_type(kernel.output.dtype)
    keys = [(0, np.dtype(np.uint32)), (0, np.dtype(np.uint32))]          # values: rng.keys(seed, counter)
    body = ["for (long i = start; i < end; i++) {",
            "  const uint bits = lowbias32(lowbias32((uint)i ^ c0) + c1);",
            f"  out[i] = ({t})(bits >> 8) * ({t})(1.0 / 16777216.0);", "}"]
    return _function(kernel, input_dtypes, keys, body, n, n)


RENDERERS = {KernelKind.ELEMENTWISE: render_elementwise, KernelKind.REDUCE: render_reduce,
             KernelKind.SCATTER_ADD: render_scatter_add, KernelKind.RAND: render_rand}


def render(kernel, input_dtypes) -> Tuple[str, str, list]:
    """(function name, C source, scalar arguments) for an elementwise, reduce, scatter-add or rand kernel."""
    return RENDERERS[kernel.kind](kernel, input_dtypes)
