"""Shape inference: re-derive every node's output types from its inputs, in topological order."""
from __future__ import annotations

from ..ir.graph import Graph
from ..ir.shapes import UnknownValueError, infer_node
from .manager import Pass


def infer_shapes(g: Graph) -> bool:
    changed = False
    for node in g.nodes():
        try:
            types = infer_node(g, node)
        except UnknownValueError:
            continue  # keeps the frontend's type until folding makes the value known
        if types != node.types:
            node.types = types
            changed = True
    return changed


class InferShapes(Pass):
    name = "infer_shapes"
    ensures = frozenset({"typed"})

    def run(self, g: Graph) -> bool:
        return infer_shapes(g)
