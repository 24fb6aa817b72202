"""Graph verifier: structure (dangling edges, cycles, arity), constants, and types re-inferred per node."""
from __future__ import annotations

import networkx as nx

from . import dims as D
from .graph import Graph
from .ops import ARITY, Op
from .shapes import ShapeError, UnknownValueError, infer_node
from .types import DType


class VerificationError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__("invalid graph:\n  " + "\n  ".join(problems[:20]) + more)


def verify(g: Graph, check_types: bool = True) -> None:
    problems: list[str] = []
    if not nx.is_directed_acyclic_graph(g.nx):
        problems.append(f"cycle: {' -> '.join(str(u) for u, _ in nx.find_cycle(g.nx))}")
        raise VerificationError(problems)
    for name, data in g.nx.nodes(data=True):
        node = data.get("node")
        if node is None or node.name != name:
            problems.append(f"node {name}: missing or misnamed payload")
            continue
        lo, hi = ARITY[node.op]
        if len(node.inputs) < lo or (hi is not None and len(node.inputs) > hi):
            problems.append(f"{node.op.value} {name}: {len(node.inputs)} inputs, expects {lo}..{hi or 'any'}")
        deps = set()
        for r in node.inputs:
            if r.node not in g.nx:
                problems.append(f"{name}: input {r} does not exist")
            elif r.index >= len(g.node(r.node).types):
                problems.append(f"{name}: input {r} has no output {r.index}")
            deps.add(r.node)
        preds = set(g.nx.predecessors(name))
        if preds != deps:
            problems.append(f"{name}: edges {sorted(preds)} do not match inputs {sorted(deps)}")
        if not node.types:
            problems.append(f"{name}: no type")
        if node.op is Op.CONST:
            problems += _check_const(g, node)
        if node.op is Op.INPUT and name not in g.inputs:
            problems.append(f"input node {name} is not listed among the graph inputs")
    for n in g.inputs:
        if n not in g.nx or g.node(n).op is not Op.INPUT:
            problems.append(f"graph input {n} is not an input node")
    for r in g.outputs:
        if r.node not in g.nx or r.index >= len(g.node(r.node).types):
            problems.append(f"graph output {r} does not exist")
    if len(g.output_names) != len(g.outputs):
        problems.append("output names and outputs differ in number")
    if problems:
        raise VerificationError(problems)
    if check_types:
        problems += _check_types(g)
    if problems:
        raise VerificationError(problems)


def _check_const(g: Graph, node) -> list[str]:
    a = node.attrs
    if ("ref" in a) == ("value" in a):
        return [f"const {node.name}: needs exactly one of 'ref' or 'value'"]
    if "ref" in a:
        w = g.weights.get(a["ref"])
        if w is None:
            return [f"const {node.name}: weight {a['ref']!r} is not in the weight store"]
        if tuple(w.shape) != node.type.shape or DType.from_numpy(w.dtype) != node.type.dtype:
            return [f"const {node.name}: weight {a['ref']!r} is {w.dtype}{list(w.shape)}, type says {node.type}"]
    return []


def _check_types(g: Graph) -> list[str]:
    problems = []
    for node in g.nodes():
        try:
            inferred = infer_node(g, node)
        except UnknownValueError:
            continue  # e.g. a reshape whose target shape is computed: trusted until folding makes it constant
        except ShapeError as e:
            problems.append(f"{node.op.value} {node.name}: {e}")
            continue
        if len(inferred) != len(node.types) or any(
                a.dtype != b.dtype or a.rank != b.rank or not all(D.equal(x, y) for x, y in zip(a.shape, b.shape))
                for a, b in zip(inferred, node.types)):
            problems.append(f"{node.op.value} {node.name}: type {[str(t) for t in node.types]} but inputs give "
                            f"{[str(t) for t in inferred]}")
    return problems
