"""A viz.Graph drawn with matplotlib alone, for machines without Graphviz's `dot`.

The layout is the layered idea `dot` also starts from, kept small: each node goes one row
below its lowest input (so data flows down), nodes in a row are ordered by the mean
position of their neighbours for a few sweeps (fewer crossings), members of one frame are
kept side by side, and each row is centred.  Sizes are in inches of the final figure.
"""
from collections import defaultdict
from typing import Dict, List

CHAR_W, LINE_H, PAD = 0.068, 0.15, 0.12      # inches per character, per text line, around text
GAP_X, GAP_Y = 0.3, 0.55                     # between boxes in a row, between rows
FONT = 8
MAX_PIXELS = 16000                           # the longer side of a PNG, at most


def _rows(g) -> List[List[str]]:
    """Node ids by row: every node one row below its lowest input, an input just above its
    first use.  An edge that closes a cycle (possible between module boxes) is ignored here."""
    preds = defaultdict(list)
    for a, b, _ in g.edges:
        preds[b].append(a)
    row: Dict[str, int] = {}
    for nid in g.nodes:                                   # iterative depth-first: graphs can be deep
        if nid in row:
            continue
        stack, on_stack = [nid], {nid}
        while stack:
            n = stack[-1]
            todo = [p for p in preds[n] if p not in row and p not in on_stack]
            if todo:
                stack.append(todo[0])
                on_stack.add(todo[0])
                continue
            row[n] = 1 + max((row[p] for p in preds[n] if p in row), default=-1)
            on_stack.discard(stack.pop())
    succs = defaultdict(list)
    for a, b, _ in g.edges:
        succs[a].append(b)
    for n in g.nodes:                                     # an input sits just above its first use
        if not preds[n] and succs[n]:
            row[n] = max(0, min(row[m] for m in succs[n]) - 1)
    rows = [[] for _ in range(max(row.values(), default=-1) + 1)]
    for nid in g.nodes:
        rows[row[nid]].append(nid)
    return rows


def _order(g, rows: List[List[str]], sweeps: int = 4) -> None:
    """Reorder each row in place by the mean index of its neighbours in the row before
    (down sweeps) or after (up sweeps); a frame's members sort by their frame's mean."""
    neighbours = defaultdict(list)
    for a, b, _ in g.edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    frame = g.cluster_of()
    for sweep in range(sweeps):
        sequence = rows[1:] if sweep % 2 == 0 else rows[-2::-1]
        for r in sequence:
            position = {n: i for row in rows for i, n in enumerate(row)}
            centre = {}
            for i, n in enumerate(r):
                near = [position[m] for m in neighbours[n] if m not in r]
                centre[n] = sum(near) / len(near) if near else i
            frame_centre = defaultdict(list)
            for n in r:
                frame_centre[frame.get(n, n)].append(centre[n])
            key = {n: (sum(frame_centre[frame.get(n, n)]) / len(frame_centre[frame.get(n, n)]), centre[n]) for n in r}
            r.sort(key=key.get)


def _size(label: str):
    lines = label.split("\n")
    return max(len(s) for s in lines) * CHAR_W + 2 * PAD, len(lines) * LINE_H + PAD


def layout(g) -> Dict[str, tuple]:
    """Node id -> (x centre, y centre, width, height), in inches, y growing downwards."""
    rows = _rows(g)
    _order(g, rows)
    boxes, y = {}, 0.0
    widest = max((sum(_size(g.nodes[n].label)[0] for n in r) + GAP_X * (len(r) - 1) for r in rows), default=0)
    for r in rows:
        sizes = [_size(g.nodes[n].label) for n in r]
        total = sum(w for w, _ in sizes) + GAP_X * (len(r) - 1)
        x = (widest - total) / 2
        height = max(h for _, h in sizes)
        for n, (w, h) in zip(r, sizes):
            boxes[n] = (x + w / 2, y + height / 2, w, h)
            x += w + GAP_X
        y += height + GAP_Y
    return boxes


def _frames(g, boxes) -> list:
    """(title, left, top, right, bottom) of each frame around its members, wide enough for its title."""
    frames = []
    for title, members in g.clusters.values():
        inside = [boxes[n] for n in members if n in boxes]
        if inside:
            left = min(x - w / 2 for x, _, w, _ in inside) - 0.1
            right = max(max(x + w / 2 for x, _, w, _ in inside) + 0.1, left + len(title) * CHAR_W * 0.9 + 0.1)
            top = min(y - h / 2 for _, y, _, h in inside) - 0.25
            bottom = max(y + h / 2 for _, y, _, h in inside) + 0.1
            frames.append((title, left, top, right, bottom))
    return frames


def draw_layered(g, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    from .viz import COLORS

    boxes = layout(g)
    frames = _frames(g, boxes)
    margin, title_h = 0.3, 0.4
    right = max([x + w / 2 for x, _, w, _ in boxes.values()] + [f[3] for f in frames] + [len(g.title) * CHAR_W])
    bottom = max([y + h / 2 for _, y, _, h in boxes.values()] + [f[4] for f in frames] + [1.0])
    width, height = right + 2 * margin, bottom + 2 * margin + title_h
    dpi = min(100, MAX_PIXELS / max(width, height))
    fig = plt.figure(figsize=(width, height), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-margin, right + margin)
    ax.set_ylim(bottom + margin, -margin - title_h)
    ax.axis("off")
    ax.text(right / 2, -title_h / 2 - 0.1, g.title, ha="center", va="center", fontsize=FONT + 2)
    for title, left, top, r, b in frames:
        ax.add_patch(FancyBboxPatch((left, top), r - left, b - top, boxstyle="round,pad=0.02",
                                    fill=False, linestyle="--", edgecolor="#888888", zorder=0))
        ax.text(left + 0.05, top + 0.04, title, ha="left", va="top", fontsize=FONT - 1, color="#555555")
    for a, b, label in g.edges:
        (xa, ya, _, ha), (xb, yb, _, hb) = boxes[a], boxes[b]
        start, end = (xa, ya + ha / 2), (xb, yb - hb / 2)
        drop = end[1] - start[1]
        bend = min(0.6, 1.5 / drop) if drop > GAP_Y + 0.05 else 0.0   # passes other rows: bend it, not hidden
        ax.annotate("", xy=end, xytext=start, zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.7, shrinkA=0, shrinkB=0,
                                    connectionstyle=f"arc3,rad={-bend}"))
        if label:
            shift = bend * drop / 2 + 0.04
            ax.text((start[0] + end[0]) / 2 + shift, (start[1] + end[1]) / 2, label, fontsize=FONT - 2,
                    color="#444444", ha="left", va="center", zorder=3)
    for n, (x, y, w, h) in boxes.items():
        node = g.nodes[n]
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01,rounding_size=0.05",
                                    facecolor=COLORS[node.kind], edgecolor="#333333", lw=0.6, zorder=2))
        ax.text(x, y, node.label, ha="center", va="center", fontsize=FONT, zorder=3, linespacing=1.1)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
