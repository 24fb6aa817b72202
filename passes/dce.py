"""Dead-code elimination: drop nodes no output depends on, and weights no constant references."""
from __future__ import annotations

import networkx as nx

from ..ir.graph import Graph
from ..ir.ops import Op
from .manager import Pass


def eliminate_dead_code(g: Graph) -> bool:
    live = {r.node for r in g.outputs}
    for r in list(live):
        live |= nx.ancestors(g.nx, r)
    live |= set(g.inputs)  # inputs are the graph's signature, used or not
    dead = [n for n in g.nx.nodes if n not in live]
    g.nx.remove_nodes_from(dead)
    used = {n.attrs["ref"] for n in g.nodes() if n.op is Op.CONST and "ref" in n.attrs}
    unused = [k for k in g.weights if k not in used]
    for k in unused:
        del g.weights[k]
    return bool(dead or unused)


class DeadCodeElimination(Pass):
    name = "dce"

    def run(self, g: Graph) -> bool:
        return eliminate_dead_code(g)
