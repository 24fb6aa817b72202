"""Constant folding, including symbolic shape computations (Shape -> Gather -> Concat -> Reshape).

Shapes with symbolic dims fold to symbolic constants (``const {"value": ["batch", "seq", 9, 64]}``), so
Reshape/Expand targets become constants and the shape subgraphs disappear.
"""
from __future__ import annotations

import numpy as np
import sympy

from ..codegen.reference.kernels import KERNELS
from ..ir import dims as D
from ..ir.graph import Graph, Ref
from ..ir.ops import GroupOp, Op
from .manager import Pass

# Fold only when inputs plus outputs stay this small: large weights are left to layout passes.
FOLD_LIMIT = 1 << 16
_RELATION = {Op.EQUAL: sympy.Eq, Op.LESS: sympy.Lt, Op.GREATER: sympy.Gt, Op.LESS_EQUAL: sympy.Le,
             Op.GREATER_EQUAL: sympy.Ge}


def _symbolic(v: np.ndarray) -> np.ndarray:
    return np.vectorize(D.sym, otypes=[object])(v) if v.dtype == object and v.size else v


def _dims(v: np.ndarray) -> np.ndarray:
    """Object array of sympy values -> int array, or object array of int|str (symbolic)."""
    out = np.empty(v.shape, object)
    flat = out.reshape(-1)
    for i, x in enumerate(v.reshape(-1).tolist()):
        flat[i] = D.to_dim(x) if isinstance(x, sympy.Basic) else x
    if all(isinstance(x, (int, np.integer)) for x in flat):
        return out.astype(np.int64)
    return out


def _compare(op: Op, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape, bool)
    for i, (x, y) in enumerate(zip(a.reshape(-1).tolist(), b.reshape(-1).tolist())):
        r = _RELATION[op](D.sym(x) if isinstance(x, (str, sympy.Basic)) else x,
                          D.sym(y) if isinstance(y, (str, sympy.Basic)) else y)
        if r not in (sympy.true, sympy.false, True, False):
            return None  # undecidable until run time (e.g. seq == 1)
        out.reshape(-1)[i] = bool(r)
    return out


def _no_dim(d):
    if isinstance(d, (int, np.integer)):
        return int(d)
    raise ValueError("symbolic")


def fold_node(g: Graph, node) -> list[np.ndarray] | None:
    if node.op is Op.SHAPE:
        t = g.type_of(node.inputs[0])
        start, end = node.attrs.get("start", 0), node.attrs.get("end", t.rank)
        return [_dims(np.array([D.sym(d) for d in t.shape], object)[start:end])]
    if node.op in GroupOp.Source:
        return None
    ins = [g.const_value(r) for r in node.inputs]
    if any(v is None for v in ins):
        return None
    size = sum(v.size for v in ins) + sum(_static_size(t) for t in node.types)
    if size > FOLD_LIMIT:
        return None
    symbolic = any(v.dtype == object for v in ins)
    if symbolic and node.op in _RELATION:
        out = _compare(node.op, *ins)
        return None if out is None else [out]
    try:
        out = KERNELS[node.op](node.attrs, [_symbolic(v) for v in ins], _no_dim)
    except (ValueError, TypeError, IndexError):
        return None  # not decidable at compile time
    outs = out if isinstance(out, list) else [np.asarray(out)]
    result = []
    for o, t in zip(outs, node.types):
        o = np.asarray(o)
        if o.dtype == object:
            o = _dims(o)
            if o.dtype == object and t.dtype.is_float:
                return None
        result.append(o if o.dtype == object else o.astype(t.dtype.to_numpy()))
    return result


def _static_size(t) -> int:
    return int(np.prod(t.shape)) if t.is_static else FOLD_LIMIT + 1


def fold_constants(g: Graph) -> bool:
    changed = False
    for node in g.nodes():
        values = fold_node(g, node)
        if values is None:
            continue
        for i, (v, t) in enumerate(zip(values, node.types)):
            c = g.add_const(v, dtype=t.dtype if v.dtype != object else None, name=f"{node.name}_c")
            g.replace_uses(Ref(node.name, i), c.out)
        changed = True
    return changed


class ConstantFolding(Pass):
    name = "fold"

    def run(self, g: Graph) -> bool:
        from .dce import eliminate_dead_code

        changed = fold_constants(g)
        return eliminate_dead_code(g) or changed
