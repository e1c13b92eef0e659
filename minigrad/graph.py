"""The one graph walker: every node reachable from some roots, each after its sources.

Three graphs are walked with it: Tensors through the Functions that made them (backward),
LazyBuffers through their sources (the scheduler), and a Kernel's expression tree (renderers).
It is iterative, so a chain of 10,000 ops needs no recursion limit."""
from typing import Callable, Iterable, List


def postorder(roots: Iterable, sources: Callable) -> List:
    """Nodes reachable from `roots` (by sources(node), a sequence), each after its sources; the
    first root, and each node's first source, is explored first.  A node is visited once."""
    order, seen = [], set()
    stack = [(r, False) for r in reversed(list(roots))]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack += [(s, False) for s in reversed(sources(node)) if id(s) not in seen]
    return order
