"""Turn a Kernel (kernel.py) into OpenCL C source.  Pure string work: no pyopencl here,
so you can print the code a kernel becomes without any OpenCL installed.

Each kernel kind has one template:
  elementwise   one work item per output element; each Load turns its View into index
                arithmetic (offset + sum(index_k * stride_k), guarded by the padding mask)
  reduce        one work group per output element; work items stride over the reduced
                elements, then combine their partial results in local memory
  matmul        on a GPU: tiles of A and B staged in local memory, each work item
                accumulating a WPT_M x WPT_N block of C in registers; on a CPU: no local
                memory, a CPU_RM x CPU_RN register block per work item
  gather        one work item per output element: out[i, d] = table[index[i], d]
  scatter_add   one work item per table element (n, d): sum of rows i with index[i] == n
"""
import math
from typing import List, Tuple

import numpy as np

from ..kernel import KernelKind, Load, Op, find_reduce, rewrite, walk
from ..ops import OPS
from .c_like import MAXNAN, ExpressionRenderer, c_type, epilogue_view, identity, load_expr, unravel
from .. import rng

# matmul tile sizes: a work group of (TSN/WPTN) x (TSM/WPTM) = 16 x 16 items computes a 64 x 64 tile of C
TSM, TSN, TSK, WPTM, WPTN = 64, 64, 16, 4, 4


def _source(kernel, input_dtypes, scalars, name: str, body: List[str], attribute: str = "") -> str:
    """The complete kernel: pragma, signature, indented body."""
    return _kernel_source([("out", kernel.output.dtype)], input_dtypes, scalars, [kernel.ast], name, body, attribute)


def _kernel_source(outputs, input_dtypes, scalars, trees, name: str, body: List[str], attribute: str = "") -> str:
    """A kernel writing `outputs` [(name, dtype)]: the pragma line (doubles need an extension, if
    any buffer or node of the expression `trees` is one), the parameters (the output buffers, the
    input buffers, then the scalar arguments) and the indented body."""
    dtypes_used = [d for _, d in outputs] + list(input_dtypes) + [n.dtype for tree in trees for n in walk(tree)]
    pragma = "#pragma OPENCL EXTENSION cl_khr_fp64 : enable\n" if any(d == np.float64 for d in dtypes_used) else ""
    params = [f"__global {c_type(d)}* restrict {out}" for out, d in outputs]
    params += [f"__global const {c_type(d)}* restrict in{i}" for i, d in enumerate(input_dtypes)]
    params += [f"const {c_type(d)} c{i}" for i, (_, d) in enumerate(scalars)]
    return f"{pragma}{MAXNAN}__kernel {attribute}void {name}({', '.join(params)}) {{\n  " + "\n  ".join(body) + "\n}\n"


def _matmul_shapes(kernel):
    """(A load, B load, batch shape, M, N, K, C type, batch index names) of a matmul kernel."""
    a, b = kernel.ast.srcs
    out_shape = kernel.output.shape
    batch_shape, (M, N), K = out_shape[:-2], out_shape[-2:], a.view.shape[-1]
    return a, b, batch_shape, M, N, K, c_type(kernel.output.dtype), [f"b{k}" for k in range(len(batch_shape))]


def render_elementwise(kernel, input_dtypes, name: str) -> Tuple[str, tuple, tuple]:
    shape = kernel.output.shape
    n = max(1, math.prod(shape))
    idx = [f"i{k}" for k in range(len(shape))]
    scalars = []
    r = ExpressionRenderer(idx, scalars)
    result = r.render(kernel.ast)
    body = ["const int gid = get_global_id(0);", f"if (gid >= {n}) return;"]
    body += unravel("gid", shape, idx) + r.lines + [f"out[gid] = {result};"]
    return _source(kernel, input_dtypes, scalars, name, body), (n,), None, scalars


def render_group(members, input_dtypes, name: str):
    """Several elementwise kernels of one shape as one kernel with several outputs (a jit's run of
    them, see jit._launch_groups): `members` is [(kernel, sources, store)], sources[i] saying
    what the kernel's input i is, ("in", k) the group's input k or ("member", j) the value an
    earlier member computes (the same work item's, from a register), and store whether its value
    is written.  One work item per element, as render_elementwise.  (source, global size, None,
    scalar arguments)."""
    shape = members[0][0].output.shape
    n = max(1, math.prod(shape))
    roots = []
    for kernel, sources, _ in members:
        def load(node, sources=sources):
            where, k = sources[node.index]
            return roots[k] if where == "member" else Load(k, node.view, node.dtype)
        roots.append(rewrite(kernel.ast, {}, load))
    idx = [f"i{k}" for k in range(len(shape))]
    scalars = []
    r = ExpressionRenderer(idx, scalars)
    results = [r.render(root) for root in roots]
    stored = [(m, kernel.output.dtype) for m, (kernel, _, store) in enumerate(members) if store]
    body = ["const int gid = get_global_id(0);", f"if (gid >= {n}) return;"] + unravel("gid", shape, idx) + r.lines
    body += [f"out{o}[gid] = {results[m]};" for o, (m, _) in enumerate(stored)]
    outputs = [(f"out{o}", d) for o, (_, d) in enumerate(stored)]
    return _kernel_source(outputs, input_dtypes, scalars, roots, name, body), (n,), None, scalars


def reduce_group_size(reduced: int) -> int:
    size = 1
    while size < reduced and size < 128:
        size *= 2
    return size


def render_reduce(kernel, input_dtypes, name: str) -> Tuple[str, tuple, tuple]:
    """One work group per output element; with an epilogue (elementwise ops above the reduce, see
    kernel.py), work item 0 applies it to the reduced value before storing it."""
    reduce = find_reduce(kernel.ast)
    op, axes = reduce.op, reduce.arg
    in_shape = reduce.srcs[0].shape if isinstance(reduce.srcs[0], Op) else reduce.srcs[0].view.shape
    out_shape = kernel.output.shape
    kept = [k for k in range(len(in_shape)) if k not in axes]
    reduced_shape = [in_shape[k] for k in axes]
    total = math.prod(reduced_shape)          # 0 for an empty axis: the loop never runs
    group = reduce_group_size(total)
    n_out = max(1, math.prod(out_shape))
    t = c_type(reduce.dtype)
    idx = [f"i{k}" for k in range(len(in_shape))]
    body = ["const int out_index = get_group_id(0);", "const int lid = get_local_id(0);"]
    body += unravel("out_index", [in_shape[k] for k in kept], [idx[k] for k in kept])
    init = identity(op, reduce.dtype)
    body.append(f"{t} acc = ({t}){init};")
    scalars = []
    if total:
        body.append(f"for (int r = lid; r < {total}; r += {group}) {{")
        inner = unravel("r", reduced_shape, [idx[k] for k in axes])
        er = ExpressionRenderer(idx, scalars)
        value = er.render(reduce.srcs[0])
        inner += er.lines + [f"acc = {OPS[op].c.format('acc', value)};"]
        body += ["  " + line for line in inner] + ["}"]
    body += [f"__local {t} partial[{group}];", "partial[lid] = acc;", "barrier(CLK_LOCAL_MEM_FENCE);",
             f"for (int s = {group // 2}; s > 0; s >>= 1) {{",
             f"  if (lid < s) {{ {t} other = partial[lid + s]; partial[lid] = {OPS[op].c.format('partial[lid]', 'other')}; }}",
             "  barrier(CLK_LOCAL_MEM_FENCE);", "}"]
    if kernel.ast is reduce:
        body.append("if (lid == 0) out[out_index] = partial[0];")
    else:                                     # the epilogue's loads read the output index: stride 0 on reduced axes
        er = ExpressionRenderer(idx, scalars)
        er.names[id(reduce)] = "reduced"
        epilogue = rewrite(kernel.ast, {id(reduce): reduce}, lambda n: Load(n.index, epilogue_view(n.view, reduce.shape, in_shape), n.dtype))
        result = er.render(epilogue)
        body += ["if (lid == 0) {", f"  const {t} reduced = partial[0];"] + ["  " + line for line in er.lines]
        body += [f"  out[out_index] = {result};", "}"]
    return _source(kernel, input_dtypes, scalars, name, body), (n_out * group,), (group,), scalars


def render_matmul(kernel, input_dtypes, name: str) -> Tuple[str, tuple, tuple]:
    a, b, batch_shape, M, N, K, t, bidx = _matmul_shapes(kernel)
    rtsm, rtsn = TSM // WPTM, TSN // WPTN
    loads_per_item = (TSM * TSK) // (rtsm * rtsn)
    a_load = load_expr(f"in{a.index}", a.view, bidx + ["gm", "gk"], a.dtype)
    b_load = load_expr(f"in{b.index}", b.view, bidx + ["gk", "gn"], b.dtype)
    body = [
        "const int tn = get_local_id(0), tm = get_local_id(1);",
        f"const int n0 = get_group_id(0) * {TSN}, m0 = get_group_id(1) * {TSM};",
        "const int batch = get_global_id(2);",
        *unravel("batch", batch_shape, bidx),
        f"__local {t} As[{TSK}][{TSM}];",
        f"__local {t} Bs[{TSK}][{TSN}];",
        f"{t} acc[{WPTM}][{WPTN}];",
        f"for (int wm = 0; wm < {WPTM}; wm++) for (int wn = 0; wn < {WPTN}; wn++) acc[wm][wn] = 0;",
        f"const int tid = tm * {rtsn} + tn;",
        f"for (int k0 = 0; k0 < {K}; k0 += {TSK}) {{",
        f"  for (int l = 0; l < {loads_per_item}; l++) {{",
        f"    const int e = tid + l * {rtsm * rtsn};",
        f"    {{ const int gm = m0 + e / {TSK}, gk = k0 + e % {TSK};",
        f"      As[e % {TSK}][e / {TSK}] = (gm < {M} && gk < {K}) ? {a_load} : ({t})0; }}",
        f"    {{ const int gk = k0 + e / {TSN}, gn = n0 + e % {TSN};",
        f"      Bs[e / {TSN}][e % {TSN}] = (gk < {K} && gn < {N}) ? {b_load} : ({t})0; }}",
        "  }",
        "  barrier(CLK_LOCAL_MEM_FENCE);",
        f"  for (int kk = 0; kk < {TSK}; kk++) {{",
        f"    {t} breg[{WPTN}];",
        f"    for (int wn = 0; wn < {WPTN}; wn++) breg[wn] = Bs[kk][tn + wn * {rtsn}];",
        f"    for (int wm = 0; wm < {WPTM}; wm++) {{",
        f"      const {t} areg = As[kk][tm + wm * {rtsm}];",
        f"      for (int wn = 0; wn < {WPTN}; wn++) acc[wm][wn] += areg * breg[wn];",
        "    }",
        "  }",
        "  barrier(CLK_LOCAL_MEM_FENCE);",
        "}",
        f"for (int wm = 0; wm < {WPTM}; wm++) for (int wn = 0; wn < {WPTN}; wn++) {{",
        f"  const int gm = m0 + tm + wm * {rtsm}, gn = n0 + tn + wn * {rtsn};",
        f"  if (gm < {M} && gn < {N}) out[batch * {M * N} + gm * {N} + gn] = acc[wm][wn];",
        "}",
    ]
    src = _source(kernel, input_dtypes, [], name, body, f"__attribute__((reqd_work_group_size({rtsn}, {rtsm}, 1)))\n")
    global_size = (-(-N // TSN) * rtsn, -(-M // TSM) * rtsm, max(1, math.prod(batch_shape)))
    return src, global_size, (rtsn, rtsm, 1), []


# matmul on CPU devices (PoCL): each work item owns a CPU_RM x CPU_RN block of C in registers and
# reads A and B straight from memory (caches do what local memory does on a GPU); the CPU_RN
# columns are contiguous, so the compiler turns the inner loop into SIMD instructions.
CPU_RM, CPU_RN = 4, 32


def render_matmul_cpu(kernel, input_dtypes, name: str) -> Tuple[str, tuple, tuple]:
    a, b, batch_shape, M, N, K, t, bidx = _matmul_shapes(kernel)

    def block(guarded: bool):
        """The k loop over one block; the guarded copy serves the ragged edges of C."""
        a_load = load_expr(f"in{a.index}", a.view, bidx + ["m0+i", "k"], a.dtype)
        b_load = load_expr(f"in{b.index}", b.view, bidx + ["k", "n0+j"], b.dtype)
        if guarded:
            a_load = f"((m0+i) < {M} ? {a_load} : ({t})0)"
            b_load = f"((n0+j) < {N} ? {b_load} : ({t})0)"
        return [
            f"for (int k = 0; k < {K}; k++) {{",
            f"  {t} bv[{CPU_RN}];",
            "  #pragma unroll",
            f"  for (int j = 0; j < {CPU_RN}; j++) bv[j] = {b_load};",
            "  #pragma unroll",
            f"  for (int i = 0; i < {CPU_RM}; i++) {{",
            f"    const {t} av = {a_load};",
            "    #pragma unroll",
            f"    for (int j = 0; j < {CPU_RN}; j++) acc[i][j] += av * bv[j];",
            "  }",
            "}",
        ]
    body = [
        f"const int n0 = get_global_id(0) * {CPU_RN}, m0 = get_global_id(1) * {CPU_RM};",
        "const int batch = get_global_id(2);",
        *unravel("batch", batch_shape, bidx),
        f"{t} acc[{CPU_RM}][{CPU_RN}];",
        "#pragma unroll",
        f"for (int i = 0; i < {CPU_RM}; i++)",
        "  #pragma unroll",
        f"  for (int j = 0; j < {CPU_RN}; j++) acc[i][j] = 0;",
        f"if (m0 + {CPU_RM} <= {M} && n0 + {CPU_RN} <= {N}) {{",
        *["  " + line for line in block(False)],
        "} else {",
        *["  " + line for line in block(True)],
        "}",
        f"for (int i = 0; i < {CPU_RM}; i++) for (int j = 0; j < {CPU_RN}; j++)",
        f"  if (m0 + i < {M} && n0 + j < {N}) out[batch * {M * N} + (m0 + i) * {N} + n0 + j] = acc[i][j];",
    ]
    src = _source(kernel, input_dtypes, [], name, body, "__attribute__((reqd_work_group_size(1, 1, 1)))\n")
    return src, (-(-N // CPU_RN), -(-M // CPU_RM), max(1, math.prod(batch_shape))), (1, 1, 1), []


def render_gather(kernel, input_dtypes, name: str) -> Tuple[str, tuple, tuple]:
    table, index = kernel.ast.srcs
    out_shape = kernel.output.shape                 # index.shape + (D,)
    n = max(1, math.prod(out_shape))
    idx = [f"i{k}" for k in range(len(out_shape))]
    row = load_expr(f"in{index.index}", index.view, idx[:-1], index.dtype)
    value = load_expr(f"in{table.index}", table.view, ["row", idx[-1]], table.dtype)
    body = ["const int gid = get_global_id(0);", f"if (gid >= {n}) return;", *unravel("gid", out_shape, idx),
            f"const int row = (int){row};", f"out[gid] = {value};"]
    return _source(kernel, input_dtypes, [], name, body), (n,), None, []


def render_scatter_add(kernel, input_dtypes, name: str) -> Tuple[str, tuple, tuple]:
    rows, index = kernel.ast.srcs
    N, D = kernel.output.shape
    index_shape = index.view.shape
    count = max(1, math.prod(index_shape))
    t = c_type(kernel.output.dtype)
    idx = [f"j{k}" for k in range(len(index_shape))]
    body = ["const int gid = get_global_id(0);", f"if (gid >= {N * D}) return;",
            f"const int n = gid / {D}, d = gid % {D};", f"{t} acc = 0;",
            f"for (int i = 0; i < {count}; i++) {{",
            *["  " + line for line in unravel("i", index_shape, idx)],
            f"  if ((int){load_expr(f'in{index.index}', index.view, idx, index.dtype)} == n) "
            f"acc += {load_expr(f'in{rows.index}', rows.view, idx + ['d'], rows.dtype)};",
            "}", "out[gid] = acc;"]
    return _source(kernel, input_dtypes, [], name, body), (N * D,), None, []


def render_rand(kernel, input_dtypes, name: str) -> Tuple[str, tuple, tuple]:
    """Uniform numbers on the device: element i is a hash of (i, the tensor's keys), as in rng.py."""
    n = max(1, math.prod(kernel.output.shape))
    t = c_type(kernel.output.dtype)
    seed, counter = kernel.ast.arg.seed, kernel.ast.arg.counter
    keys = [(k, np.dtype(np.uint32)) for k in rng.keys(seed, counter)]     # the arguments c0, c1
    body = ["const uint gid = get_global_id(0);", f"if (gid >= {n}) return;",
            "const uint bits = lowbias32(lowbias32(gid ^ c0) + c1);",
            f"out[gid] = ({t})(bits >> 8) * ({t})(1.0 / 16777216.0);"]
    return rng.LOWBIAS32_C + _source(kernel, input_dtypes, keys, name, body), (n,), None, keys


RENDERERS = {KernelKind.ELEMENTWISE: render_elementwise, KernelKind.RAND: render_rand, KernelKind.REDUCE: render_reduce,
             KernelKind.MATMUL: render_matmul, KernelKind.GATHER: render_gather,
             KernelKind.SCATTER_ADD: render_scatter_add}


def render(kernel, input_dtypes, name: str = "k", cpu_device: bool = False):
    """(source, global size, local size or None, scalar arguments) for one kernel.  `cpu_device` picks the
    matmul template that suits a CPU (register blocks, no local memory)."""
    kind = kernel.kind
    if kind is KernelKind.MATMUL and cpu_device:
        return render_matmul_cpu(kernel, input_dtypes, name)
    if kind not in RENDERERS:
        raise NotImplementedError(f"OpenCL renderer: no template for {kind} kernels")
    return RENDERERS[kind](kernel, input_dtypes, name)
