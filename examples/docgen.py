"""Docs whose every number comes from running code: a page is a list of cells, Markdown text
and Python code; the code runs (in one namespace, in the page's folder) and the page shows
it with what it printed.  The same cells make a Jupyter notebook.

`same_page` is how CI checks a committed page is up to date: it regenerates the page and
compares it with the committed one: text exactly, numbers to the last digit printed (the
BLAS of another CPU may round the last bits of a float differently), times not at all.
"""
import contextlib
import io
import json
import os
import re
from typing import List, Tuple

Cell = Tuple[str, str]          # ("md", text) or ("code", source)

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?!\w)")   # not digits inside a name (k_93e5...)
TIME = re.compile(r"[ \t]*-?\d+(?:\.\d+)? ?(?:ms|s)\b")


def run_cells(cells: List[Cell], folder: str) -> str:
    """Run the code cells in order inside `folder`; the Markdown page with code and outputs."""
    os.makedirs(folder, exist_ok=True)
    namespace, parts, here = {"__name__": "__tour__"}, [], os.getcwd()
    os.chdir(folder)
    try:
        for kind, text in cells:
            if kind == "md":
                parts.append(text.strip() + "\n")
                continue
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(text, "<tour>", "exec"), namespace)
            parts.append("```python\n" + text.strip() + "\n```\n")
            if out.getvalue().strip():
                parts.append("```text\n" + out.getvalue().rstrip() + "\n```\n")
    finally:
        os.chdir(here)
    return "\n".join(parts)


def notebook(cells: List[Cell]) -> str:
    """The cells as a Jupyter notebook (nbformat 4), not executed: outputs come when it runs."""
    def source(text):
        lines = text.strip().split("\n")
        return [line + "\n" for line in lines[:-1]] + lines[-1:]
    nb_cells = [{"cell_type": "markdown", "metadata": {}, "source": source(text)} if kind == "md" else
                {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source(text)}
                for kind, text in cells]
    nb = {"cells": nb_cells, "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}}}
    return json.dumps(nb, indent=1) + "\n"


def _close(a: str, b: str) -> bool:
    """Two printed numbers agree to within one unit of the last digit printed (or 1e-5 of
    their size, for long ones); integers (shapes, counts) exactly."""
    if not any(c in a + b for c in ".e"):
        return a == b
    x, y = float(a), float(b)
    digits = max(len(s.split("e")[0].partition(".")[2]) for s in (a, b))
    exponent = max(int(s.split("e")[1]) if "e" in s else 0 for s in (a, b))
    return abs(x - y) <= max(1.01 * 10.0 ** (exponent - digits), 1e-5 * max(abs(x), abs(y)))


def same_page(new: str, old: str) -> str:
    """'' when the pages agree (see the module docstring), else the first line that differs."""
    new_lines, old_lines = TIME.sub("<time>", new).splitlines(), TIME.sub("<time>", old).splitlines()
    for i, (n, o) in enumerate(zip(new_lines, old_lines)):
        if NUMBER.sub("#", n) != NUMBER.sub("#", o) or \
                not all(_close(a, b) for a, b in zip(NUMBER.findall(n), NUMBER.findall(o))):
            return f"line {i + 1}: committed {o!r}, regenerated {n!r}"
    if len(new_lines) != len(old_lines):
        return f"the committed page has {len(old_lines)} lines, the regenerated one {len(new_lines)}"
    return ""
