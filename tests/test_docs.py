"""The generated docs: docs/tour.md and examples/tour.ipynb are what examples/autodiff_tour.py
makes now, docs/debug.md is what examples/debug_levels.py prints now, the pictures they
draw are real images, and the page comparison itself catches a changed number or word."""
import importlib
import os
import sys

import pytest

from test_viz import assert_real_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
docgen = importlib.import_module("docgen")


def test_tour_is_up_to_date_and_draws_its_pictures(tmp_path):
    tour = importlib.import_module("autodiff_tour")
    problem = tour.check(str(tmp_path))
    assert not problem, f"{problem}: run python examples/autodiff_tour.py and commit the result"
    pictures = sorted(os.listdir(tmp_path / "tour"))
    assert pictures == ["gpt_attention.png", "gpt_modules.png", "readme_example.png", "softmax_kernels.png"]
    for name in pictures:
        assert_real_image(str(tmp_path / "tour" / name))
        assert_real_image(os.path.join(ROOT, "docs", "tour", name))       # the committed ones too
    page = open(os.path.join(ROOT, "docs", "tour.md")).read()
    assert all(f"(tour/{name})" in page for name in pictures)


def test_notebook_runs_cell_by_cell(tmp_path):
    """examples/tour.ipynb, read back from its JSON and executed in order (what Jupyter does)."""
    import json
    with open(os.path.join(ROOT, "examples", "tour.ipynb")) as f:
        nb = json.load(f)
    cells = [("code" if c["cell_type"] == "code" else "md", "".join(c["source"])) for c in nb["cells"]]
    assert sum(kind == "code" for kind, _ in cells) >= 10
    page = docgen.run_cells(cells, str(tmp_path))
    assert "loss on this batch" in page
    assert_real_image(str(tmp_path / "tour" / "gpt_modules.png"))


def test_debug_page_is_up_to_date(cl):                # its DEBUG=3 section runs on OpenCL
    debug_levels = importlib.import_module("debug_levels")
    problem = debug_levels.check()
    assert not problem, f"{problem}: run python examples/debug_levels.py and commit the result"


@pytest.mark.parametrize("old, new, same", [
    ("loss 3.3131 after", "loss 3.3131 after", True),
    ("loss 3.3131 after", "loss 3.3132 after", True),         # the last printed digit may move by one
    ("loss 3.3131 after", "loss 3.3151 after", False),
    ("loss 3.3131 after", "loss 3.3131 before", False),
    ("0.248 and 1e-05", "0.249 and 1.1e-05", True),
    ("shape (2, 8, 16)", "shape (2, 8, 17)", False),
    ("  12.345 ms  reduce", "  0.987 ms  reduce", True),      # times are never compared
    ("a\nb", "a", False),
])
def test_page_comparison(old, new, same):
    assert (docgen.same_page(new, old) == "") == same
