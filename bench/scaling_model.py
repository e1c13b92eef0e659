"""The paper model of docs/distributed.md: tokens/s of data-parallel training on N machines.

    python bench/scaling_model.py           # prints the markdown tables of the doc

Per step each rank computes its micro-batches, then the ranks allreduce the gradient
(4 bytes per parameter).  A ring allreduce sends and receives 2 (N-1)/N of the bytes on
each machine's link and pays the link latency 2 (N-1) times per bucket:

    t_allreduce(N) = 2 (N-1)/N * bytes / bandwidth + 2 (N-1) * buckets * latency
    t_step(N)      = t_compute + t_allreduce(N)          (no overlap: our step does not overlap)
    tokens/s(N)    = N * tokens per rank-step / t_step(N)

Weak scaling: every machine keeps the recipe's batch, so the global batch grows N-fold.
Strong scaling: the recipe's global batch is split over the machines (B/N sequences each),
so the compute per step shrinks N-fold and the allreduce does not.
"""
import math

# measured on one machine (README / docs/benchmarks.md), except where marked
MODELS = {
    # name: (parameters, tokens per rank-step = B x T x grad_accum, {machine: tokens/s on one})
    "laptop": (804_096, 12 * 64, {"2-core CPU": 14_000}),
    "shakespeare-char": (10_770_816, 64 * 256, {"2-core CPU": 1_000, "H100": 40_000}),
    # nanoGPT's GPT-2 recipe per GPU: B=12, T=1024, 5 micro-batches; speed estimated from the
    # baby GPT's 40,000 tokens/s on the H100 scaled by FLOPs per token (860M vs 71M)
    "GPT-2 small": (124_439_808, 12 * 1024 * 5, {"H100 (estimate)": 3_300}),
}
LINKS = {   # name: (bandwidth in bytes/s one way, latency in s)
    "1 GbE": (0.117e9, 50e-6),
    "10 GbE": (1.17e9, 20e-6),
    "100 Gb/s InfiniBand": (12e9, 2e-6),
}
BUCKET_BYTES = 25 * 2 ** 20


def allreduce_seconds(nbytes: float, n: int, bandwidth: float, latency: float) -> float:
    buckets = math.ceil(nbytes / BUCKET_BYTES)
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * buckets * latency


def main():
    print("| model | machine | link | MB per step | allreduce, 8 / 64 machines | tokens/s on 1 | on 8 | on 64 "
          "| efficiency at 64 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (params, tokens, speeds) in MODELS.items():
        nbytes = 4 * params
        for machine, speed in speeds.items():
            t_compute = tokens / speed
            for link, (bandwidth, latency) in LINKS.items():
                t8, t64 = (allreduce_seconds(nbytes, n, bandwidth, latency) for n in (8, 64))
                rate = {n: n * tokens / (t_compute + (t8 if n == 8 else t64)) for n in (8, 64)}
                print(f"| {name} | {machine} | {link} | {nbytes / 1e6:.1f} | {1000 * t8:,.0f} / {1000 * t64:,.0f} ms "
                      f"| {speed:,.0f} | {rate[8]:,.0f} | {rate[64]:,.0f} | {rate[64] / (64 * speed):.0%} |")

    print()
    print("| model (global batch fixed) | link | 1 machine | " + " | ".join(f"{n} machines" for n in STRONG_N) + " |")
    print("|---|---|---|" + "---|" * len(STRONG_N))
    for name, machine in (("laptop", "2-core CPU"), ("shakespeare-char", "H100")):
        params, tokens, speeds = MODELS[name]
        t_compute = tokens / speeds[machine]
        for link in ("1 GbE", "10 GbE"):
            cells = [f"{tokens / (t_compute / n + allreduce_seconds(4 * params, n, *LINKS[link])):,.0f}"
                     for n in STRONG_N]
            print(f"| {name}, {machine} | {link} | {speeds[machine]:,} | " + " | ".join(cells) + " |")


STRONG_N = (2, 4, 8, 12)

if __name__ == "__main__":
    main()
