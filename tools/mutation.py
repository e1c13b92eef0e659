"""Mutation testing helpers around mutmut (docs/testing.md has the commands).

    python tools/mutation.py sample 10     every 10th mutant of each file: names to pass to `mutmut run`
    python tools/mutation.py report        per-file table of what mutmut has checked so far, and the survivors

Reads mutmut's own bookkeeping (mutants/<file>.meta), so it reports exactly what was run."""
import json
import os
import sys
from collections import Counter

from mutmut.stats import status_by_exit_code

FILES = ["minigrad/function.py", "minigrad/optim.py", "minigrad/schedule.py", "minigrad/view.py",
         "gpt/model.py", "gpt/checkpoint.py"]


def exit_codes(path: str) -> dict:
    with open(os.path.join("mutants", path + ".meta")) as f:
        return json.load(f)["exit_code_by_key"]


def sample(every: int) -> None:
    for path in FILES:
        names = sorted(exit_codes(path))
        print("\n".join(names[::every]))


def report() -> None:
    print("| file | mutants | checked | killed | timeout | survived | score (killed + timeout) / checked |")
    print("|---|---|---|---|---|---|---|")
    survivors = []
    for path in FILES:
        codes = exit_codes(path)
        status = Counter(status_by_exit_code[c] for c in codes.values())
        checked = sum(n for s, n in status.items() if s != "not checked")
        caught = status["killed"] + status["timeout"]
        score = f"{100 * caught / checked:.1f}%" if checked else "-"
        print(f"| {path} | {len(codes)} | {checked} | {status['killed']} | {status['timeout']} "
              f"| {status['survived']} | {score} |")
        survivors += [name for name, c in codes.items() if status_by_exit_code[c] not in ("killed", "timeout", "not checked")]
    print("\nnot killed:", *survivors, sep="\n  ")


if __name__ == "__main__":
    if sys.argv[1:2] == ["sample"]:
        sample(int(sys.argv[2]))
    else:
        report()
