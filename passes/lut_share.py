"""Table sharing: the LUT matmuls that read one precompute (Q/K/V of a layer, gate/up of an MLP) become one
matmul over their weights stacked along N, followed by a split. The tables are then built once, where a
backend whose kernels build tables in the matmul call would otherwise build them once per consumer, and one
call replaces several."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node, Ref
from ..ir.ops import Op
from ..ir.shapes import build
from .dce import eliminate_dead_code
from .manager import Pass

# attrs that may differ between merged matmuls: their own N (summed), and bias (merged ones have none)
_PER_MATMUL = {"n", "has_bias"}


def _mergeable(g: Graph, pre: Node) -> list[Node]:
    users = [u for u in g.users(pre.name) if u.op is Op.LUT_MATMUL and not u.attrs.get("has_bias")]
    if len(users) < 2 or len({id(u) for u in users}) != len(users):
        return []
    first = {k: v for k, v in users[0].attrs.items() if k not in _PER_MATMUL}
    if any({k: v for k, v in u.attrs.items() if k not in _PER_MATMUL} != first for u in users[1:]):
        return []
    if not all(g.node(r.node).op is Op.CONST and "ref" in g.node(r.node).attrs for u in users for r in u.inputs[3:]):
        return []
    return users


def _stack(g: Graph, users: list[Node], slot: int, axis: int) -> "Node":
    keys = [g.node(u.inputs[slot].node).attrs["ref"] for u in users]
    key = "+".join(keys)
    if key not in g.weights:
        g.weights[key] = np.concatenate([g.weights[k] for k in keys], axis=axis)
    return g.add_const(None, weight_key=key, name=key)


def share_tables(g: Graph) -> bool:
    changed = False
    for pre in [n for n in g.nodes() if n.op is Op.LUT_PRECOMPUTE]:
        users = _mergeable(g, pre)
        if not users:
            continue
        weights = [_stack(g, users, 3, axis=1), _stack(g, users, 4, axis=0)]  # packed [bits, N, K/8]; scales [N, G]
        if users[0].attrs.get("zero_point"):
            weights.append(_stack(g, users, 5, axis=0))
        sizes = [u.attrs["n"] for u in users]
        attrs = dict(users[0].attrs, n=sum(sizes))
        name = "_".join(u.name.removesuffix("_lut") for u in users)
        merged = build(g, Op.LUT_MATMUL, list(users[0].inputs[:3]) + [w.out for w in weights], attrs, name=name)
        split = build(g, Op.SPLIT, [merged.out], {"axis": -1, "sizes": sizes}, name=name + "_split")
        for i, u in enumerate(users):
            g.replace_uses(u.out, Ref(split.name, i))
        changed = True
    if changed:
        eliminate_dead_code(g)
    return changed


class ShareTables(Pass):
    name = "share_tables"
    requires = frozenset({"typed"})  # a graph without LUT ops passes through unchanged
    ensures = frozenset({"tables_shared"})

    def run(self, g: Graph) -> bool:
        return share_tables(g)
