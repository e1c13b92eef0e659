"""Writes docs/debug.md: what DEBUG=1, 2 and 3, NAN=1 and explain() print, by running a small
program under each and pasting its real output.

    python examples/debug_levels.py            # rewrite docs/debug.md
    python examples/debug_levels.py --check    # compare with the committed page (CI); times are not compared
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from docgen import same_page  # noqa: E402

PAGE = os.path.join(ROOT, "docs", "debug.md")

SOFTMAX = """
import numpy as np
from minigrad import Tensor

x = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
print(x.softmax(-1).numpy().round(3))
"""

EXPLAIN = """
import numpy as np
from minigrad import Tensor

x = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
print(x.softmax(-1).explain())
"""

NAN = """
import numpy as np
from minigrad import Tensor

x = Tensor(np.array([1.0, 0.0, -1.0], dtype=np.float32))
y = x.log() * 2        # log(-1) is NaN
print(y.sum().item())
"""

# (title, what it shows, environment, program)
RUNS = [
    ("DEBUG=1", "One line per realize: how many kernels ran and how long they took.", {"DEBUG": "1"}, SOFTMAX),
    ("DEBUG=2", "One line per kernel as it runs: its time, its kind (elementwise, reduce, matmul, "
     "gather, ...), the ops fused into it joined by `+`, its output shape and dtype, and the shapes "
     "it reads. Here a softmax is 3 kernels: the row max; the row sum of exp(x - max), computed inside "
     "the sum; the division, which computes exp(x - max) again rather than store it in between.", {"DEBUG": "2"}, SOFTMAX),
    ("DEBUG=3 (CPU)", "As DEBUG=2, plus the C of each compiled CPU kernel when the process first meets "
     "it: a function running the kernel's loops over a chunk [start, end) of its outer loop, and the "
     "entry point that runs every chunk (on the thread pool, when the kernel is big enough to share). "
     "Equal kernels share one function; float constants are arguments (`c0`), so new numbers need no "
     "new compile.", {"DEBUG": "3"}, SOFTMAX),
    ("DEBUG=3 (OpenCL)", "As DEBUG=2, plus the OpenCL C source of each kernel before it runs and the "
     "launch sizes. Run on PoCL here.", {"DEBUG": "3", "MINIGRAD_DEVICE": "cl"}, SOFTMAX),
    ("t.explain()", "The kernels a tensor would run, without running them, at any DEBUG level "
     "(`explain(source=True)` adds the OpenCL source).", {}, EXPLAIN),
    ("NAN=1", "Anomaly mode (also `with minigrad.detect_anomaly():`): every op runs as its own kernel "
     "and the first whose output holds a NaN, or an inf made from finite inputs, raises, naming the "
     "op, its shapes and the line that created it.", {"NAN": "1"}, NAN),
]


def run(env: dict, program: str) -> str:
    """The program's output (stdout, then the last line of stderr if it failed), run from the repo root."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "NAN", "MINIGRAD_DEVICE")}
    full_env.update(env, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])), PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-c", program], env=full_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    out = done.stdout.rstrip()
    if done.returncode:
        out = (out + "\n" + done.stderr.strip().splitlines()[-1]).strip()
    return out.replace(ROOT + os.sep, "").replace('File "<string>"', "<string>")


def page() -> str:
    parts = ["# What DEBUG prints\n",
             "Each section runs the program shown with one setting and pastes what it printed. "
             "`python examples/debug_levels.py` regenerates this page; CI checks it (times aside).\n"]
    for title, what, env, program in RUNS:
        setting = " ".join(f"{k}={v}" for k, v in env.items())
        parts.append(f"## {title}\n\n{what}\n")
        parts.append(f"```python\n# run as: {setting + ' ' if setting else ''}python program.py\n{program.strip()}\n```\n")
        parts.append(f"```text\n{run(env, program)}\n```\n")
    return "\n".join(parts)


def check() -> str:
    with open(PAGE) as f:
        return same_page(page(), f.read())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with docs/debug.md instead of writing it")
    args = parser.parse_args(argv)
    if args.check:
        problem = check()
        print(f"docs/debug.md is out of date: {problem}" if problem else "docs/debug.md is up to date")
        return 1 if problem else 0
    with open(PAGE, "w") as f:
        f.write(page())
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
