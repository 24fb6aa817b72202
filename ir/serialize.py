"""JSON (de)serialization and graphviz DOT export. Weight data never goes into either."""
from __future__ import annotations

import json

import numpy as np

from .graph import Graph, Node
from .ops import Op
from .parser import parse_ref
from .types import parse_type

FORMAT_VERSION = 1


def to_json(g: Graph) -> dict:
    return {
        "format": "lutc-ir", "version": FORMAT_VERSION, "name": g.name, "meta": g.meta,
        "inputs": list(g.inputs),
        "outputs": [{"name": n, "ref": str(r)} for n, r in zip(g.output_names, g.outputs)],
        "weights": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in sorted(g.weights.items())},
        "nodes": [{"name": n.name, "op": n.op.value, "inputs": [str(r) for r in n.inputs], "attrs": n.attrs,
                   "types": [str(t) for t in n.types]} for n in g.nodes()],
    }


def from_json(d: dict | str, weights: dict[str, np.ndarray] | None = None) -> Graph:
    if isinstance(d, str):
        d = json.loads(d)
    if d.get("format") != "lutc-ir" or d.get("version") != FORMAT_VERSION:
        raise ValueError(f"not a lutc IR v{FORMAT_VERSION} document (format={d.get('format')!r}, "
                         f"version={d.get('version')!r})")
    g = Graph(d["name"])
    g.weights = dict(weights or {})
    for i, nd in enumerate(d["nodes"]):
        inputs = [parse_ref(s, i) for s in nd["inputs"]]
        node = Node(nd["name"], Op(nd["op"]), inputs, dict(nd["attrs"]), [parse_type(t) for t in nd["types"]])
        g.nx.add_node(node.name, node=node, order=i)
        g.nx.add_edges_from((r.node, node.name) for r in inputs)
    g._order = len(d["nodes"])
    g.meta = dict(d.get("meta", {}))
    g.inputs = list(d["inputs"])
    g.set_outputs([parse_ref(o["ref"], 0) for o in d["outputs"]], [o["name"] for o in d["outputs"]])
    return g


def to_dot(g: Graph) -> str:
    lines = [f'digraph "{g.name}" {{', "  node [shape=box, fontname=monospace, fontsize=10];"]
    for n in g.nodes():
        color = {Op.INPUT: "lightblue", Op.CONST: "lightgray"}.get(n.op, "white")
        label = f"{n.name}\\n{n.op.value}\\n" + "\\n".join(str(t) for t in n.types)
        lines.append(f'  "{n.name}" [label="{label}", style=filled, fillcolor={color}];')
        for r in n.inputs:
            lines.append(f'  "{r.node}" -> "{n.name}";')
    for name, r in zip(g.output_names, g.outputs):
        lines.append(f'  "out:{name}" [shape=oval]; "{r.node}" -> "out:{name}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
