"""Matmul throughput of minigrad's backends against plain np.matmul, and the fixed cost of a realize.

    python bench/matmul.py                 # NumPy backend, and OpenCL if available
    python bench/matmul.py --devices numpy --sizes 256 512 1024

Prints a table and writes bench/results/matmul.json.  Figures are ratios against np.matmul
measured in the same run: the CPU under a machine changes from day to day, ratios less so.
"""
import argparse
import json
import os
import platform
import time

import numpy as np

from minigrad import Tensor
from minigrad.backends import available_devices, get_backend


def best_time(fn, repeat: int, min_time: float = 0.2) -> float:
    """The best of `repeat` timings, each of enough calls to last min_time seconds."""
    fn()
    calls, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t = time.perf_counter() - t0
        if t >= min_time / repeat or calls > 1000:
            break
        calls *= 2
    best = t / calls
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def bench_matmul(sizes, devices, repeat):
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        flops = 2 * n ** 3
        t_np = best_time(lambda: np.matmul(a, b), repeat)
        row = {"n": n, "np_matmul_gflops": flops / t_np / 1e9}
        for device in devices:
            ta, tb = Tensor(a, device=device), Tensor(b, device=device)
            backend = get_backend(device)

            def run():
                (ta @ tb).realize()
                backend.synchronize()
            t = best_time(run, repeat)
            row[f"{device}_gflops"] = flops / t / 1e9
            row[f"{device}_vs_numpy"] = t_np / t
            out = (ta @ tb).numpy()
            row[f"{device}_max_abs_err"] = float(np.abs(out - a @ b).max())
        rows.append(row)
    return rows


def bench_overhead(devices, repeat):
    """Cost of building and realizing a tiny graph: what every kernel launch pays in Python."""
    out = {}
    x = np.ones((4,), np.float32)
    for device in devices:
        t = Tensor(x, device=device)
        backend = get_backend(device)

        def one_op():
            (t + 1).realize()
            backend.synchronize()

        def ten_ops_fused():
            y = t
            for _ in range(10):
                y = y * 1.0001
            y.realize()
            backend.synchronize()
        out[device] = {"one_op_realize_us": best_time(one_op, repeat) * 1e6,
                       "ten_fused_ops_realize_us": best_time(ten_ops_fused, repeat) * 1e6}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--devices", nargs="+", default=None, help="numpy and/or cl (default: all that work)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "matmul.json"))
    args = parser.parse_args()
    devices = args.devices or available_devices()
    rows = bench_matmul(args.sizes, devices, args.repeat)
    overhead = bench_overhead(devices, args.repeat)
    print(f"{'n':>6} {'np.matmul GFLOP/s':>18} " + " ".join(f"{d + ' GFLOP/s':>14} {d + '/np':>8}" for d in devices))
    for r in rows:
        print(f"{r['n']:>6} {r['np_matmul_gflops']:>18.1f} " +
              " ".join(f"{r[d + '_gflops']:>14.1f} {r[d + '_vs_numpy']:>8.2f}" for d in devices))
    for d, o in overhead.items():
        print(f"{d}: realize of 1 op {o['one_op_realize_us']:.0f} us, of 10 fused ops {o['ten_fused_ops_realize_us']:.0f} us")
    info = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "devices": {d: (get_backend(d).describe() if d == "cl" else "numpy") for d in devices}}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"matmul": rows, "overhead": overhead, "info": info}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
