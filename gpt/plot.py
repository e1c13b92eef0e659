"""Loss curves from log.jsonl files.  Figures are drawn on matplotlib's Agg canvas directly,
so nothing here changes the backend of a program that imports it."""
import os
from typing import List, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .runlog import read_log_rows


def read_log(run_dir: str) -> List[dict]:
    path = os.path.join(run_dir, "log.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no log.jsonl in {os.path.abspath(run_dir)} (is it a training --out-dir?)")
    return read_log_rows(path)[0]          # a torn last line (a killed run) is left out


def _save(fig: Figure, out: str) -> None:
    """Write through a temporary file in the same folder, so a reader never sees half a PNG."""
    FigureCanvasAgg(fig)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    root, ext = os.path.splitext(out)
    tmp = f"{root}.tmp{ext}"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, out)


def plot_runs(run_dirs: Sequence[str], out: str, names: Sequence[str] = None, title: str = None) -> str:
    """Train (dashed) and val (solid) loss of each run in one figure; one colour per run."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    names = list(names) if names else [os.path.basename(os.path.normpath(d)) or d for d in run_dirs]
    for i, (run_dir, name) in enumerate(zip(run_dirs, names)):
        rows = read_log(run_dir)
        colour = f"C{i % 10}"
        iters = [r["iter"] for r in rows]
        ax.plot(iters, [r["val_loss"] for r in rows], "-", color=colour, marker=".", label=f"{name} val")
        ax.plot(iters, [r["train_loss"] for r in rows], "--", color=colour, alpha=0.7, label=f"{name} train")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title or ("loss" if len(run_dirs) == 1 else "loss: " + " vs ".join(names)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, out)
    return out
