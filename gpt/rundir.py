"""The run folder (--out-dir): what makes it hold a run, and the checks made before training
writes anything there, so that a run is never clobbered unasked and training never starts
in a folder it could not save into (the steps before the first save would be lost)."""
import json
import os
import shutil

RUN_FILES = ("log.jsonl", "best", "last", "best.old", "last.old")     # what makes a folder hold a run


def describe_run(out_dir: str) -> str:
    """'runs/x (iteration 200, best val loss 1.8512)' from its last checkpoint, as far as readable."""
    try:
        with open(os.path.join(out_dir, "last", "state.json"), encoding="utf-8") as f:
            state = json.load(f)
        return f"{out_dir} (iteration {int(state['iter'])}, best val loss {float(state['best_val_loss']):.4f})"
    except Exception:  # a damaged or partial run: name what is there instead
        found = [name for name in RUN_FILES if os.path.exists(os.path.join(out_dir, name))]
        return f"{out_dir} ({', '.join(found)})"


def _may_write(path: str, mode: int) -> bool:
    """os.access for the effective user (the one whose writes would fail), where the OS can tell."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def check_out_dir(out_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is read or written, an --out-dir that training could not write
    (it would lose the steps done before the first save) or that holds a run not to clobber."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out-dir and --overwrite deletes it: choose one")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out-dir {out_dir} is a file, not a folder: choose another --out-dir")
    existing = out_dir
    while not os.path.exists(existing):                 # the folder that creating --out-dir would write in
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing):
        raise ValueError(f"cannot create --out-dir {out_dir}: {existing} is a file, not a folder")
    if not _may_write(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == out_dir else f"cannot be created (no permission to write in {existing})"
        raise ValueError(f"--out-dir {out_dir} {what}: a run could not save there; fix the permissions or "
                         f"choose another --out-dir")
    for name in ("log.jsonl", "loss.png"):
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) or (os.path.exists(path) and not _may_write(path, os.W_OK)):
            raise ValueError(f"cannot write {path}: move it away or fix its permissions")
    holds_run = any(os.path.exists(os.path.join(out_dir, name)) for name in RUN_FILES)
    if holds_run and not resume and not overwrite:
        raise ValueError(f"--out-dir {describe_run(out_dir)} already holds a run: continue it with --resume, "
                         f"or start over with --overwrite (deletes its log and checkpoints)")


def remove_run(out_dir: str) -> None:
    """--overwrite: delete the log and checkpoints of the run in out_dir."""
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
