"""Graph building for frontends: types are inferred and constant subgraphs (including symbolic shape
computations) fold as they are built, so Reshape/Expand targets are known when their rule needs them."""
from __future__ import annotations

from ..ir.graph import Graph, Ref
from ..ir.ops import Op
from ..ir.shapes import build
from ..passes.fold import fold_node


def emit(g: Graph, op: Op, inputs, attrs: dict | None = None, name: str | None = None) -> list[Ref]:
    """Add ``op`` and return its output refs; a foldable node becomes constants right away."""
    node = build(g, op, inputs, attrs, name=name)
    values = fold_node(g, node)
    if values is None:
        return [Ref(node.name, i) for i in range(len(node.types))]
    g.remove(node.name)
    return [g.add_const(v, dtype=t.dtype if v.dtype != object else None, name=node.name).out
            for v, t in zip(values, node.types)]


def emit1(g: Graph, op: Op, inputs, attrs: dict | None = None, name: str | None = None) -> Ref:
    outs = emit(g, op, inputs, attrs, name)
    if len(outs) != 1:
        raise ValueError(f"{op.value} has {len(outs)} outputs")
    return outs[0]
