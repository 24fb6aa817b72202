"""The text form of the IR: stable, diffable, and parsed back by :mod:`lutc.ir.parser`.

    graph main(%input_ids) {
      %input_ids = input : i64[batch,seq]
      %embed = const {"ref": "model.embed_tokens.weight"} : f32[49152,576]
      %x = gather(%embed, %input_ids) {"axis": 0} : f32[batch,seq,576]
      return logits=%x
    }
"""
from __future__ import annotations

import json

from .graph import Graph, Node


def format_attrs(attrs: dict) -> str:
    return json.dumps(attrs, sort_keys=True, separators=(", ", ": "))


def format_node(node: Node) -> str:
    args = f"({', '.join(str(r) for r in node.inputs)})" if node.inputs else ""
    attrs = f" {format_attrs(node.attrs)}" if node.attrs else ""
    types = ", ".join(str(t) for t in node.types)
    if len(node.types) != 1:
        types = f"({types})"
    return f"%{node.name} = {node.op.value}{args}{attrs} : {types}"


def print_graph(g: Graph) -> str:
    lines = [f"graph {g.name}({', '.join('%' + n for n in g.inputs)}) {{"]
    if g.meta:
        lines.append(f"  meta {json.dumps(g.meta, sort_keys=True)}")
    lines += ["  " + format_node(n) for n in g.nodes()]
    outs = ", ".join(f"{name}={ref}" for name, ref in zip(g.output_names, g.outputs))
    lines += [f"  return {outs}", "}"]
    return "\n".join(lines) + "\n"


def summary(g: Graph) -> str:
    """Op statistics and weight bytes: what ``lutc inspect`` prints."""
    counts = sorted(g.op_counts().items(), key=lambda kv: (-kv[1], kv[0].value))
    nbytes = sum(w.nbytes for w in g.weights.values())
    ins = ", ".join(f"{n}: {g.node(n).type}" for n in g.inputs)
    outs = ", ".join(f"{name}: {g.type_of(r)}" for name, r in zip(g.output_names, g.outputs))
    lines = [f"graph {g.name}: {len(g)} nodes, {len(g.weights)} weights ({nbytes / 2**20:.1f} MiB)",
             f"  inputs:  {ins}", f"  outputs: {outs}", "  ops:"]
    lines += [f"    {op.value:<18} {c}" for op, c in counts]
    return "\n".join(lines)
