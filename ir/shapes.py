"""Shape and dtype rules, one per op: ``rule(node, in_types, const) -> [TensorType, ...]``.

``const(i)`` returns the value of input ``i`` when it is a constant (an object array when symbolic), else
None. Rules raise :class:`ShapeError` when the inputs do not fit the op.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import dims as D
from .graph import Graph, Node
from .ops import GroupOp, Op
from .types import DType, TensorType

INT64_MAX = 2**63 - 1


class ShapeError(ValueError):
    pass


class UnknownValueError(ShapeError):
    """The rule needs the value of an input that is not a constant (yet): the type cannot be re-derived."""


Rule = Callable[[Node, list[TensorType], Callable[[int], "np.ndarray | None"]], list[TensorType]]
RULES: dict[Op, Rule] = {}


def rule(*ops: Op):
    def deco(fn):
        for op in ops:
            RULES[op] = fn
        return fn
    return deco


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def as_dims(value: np.ndarray) -> list:
    return [D.to_dim(v) if not isinstance(v, (int, np.integer)) else int(v) for v in np.asarray(value).reshape(-1)]


def _need_const(node: Node, const, i: int, what: str) -> list:
    v = const(i)
    if v is None:
        raise UnknownValueError(f"{node.op.value} {node.name}: {what} (input {i}) must be a constant or a "
                                "folded shape computation")
    return as_dims(v)


@rule(Op.INPUT, Op.CONST)
def _source(node, ts, const):
    return node.types


@rule(Op.MATMUL)
def _matmul(node, ts, const):
    a, b = ts
    sa, sb = list(a.shape), list(b.shape)
    if not sa or not sb:
        raise ShapeError("matmul of a scalar")
    va, vb = len(sa) == 1, len(sb) == 1
    if va:
        sa = [1] + sa
    if vb:
        sb = sb + [1]
    if not D.equal(sa[-1], sb[-2]):
        raise ShapeError(f"matmul {node.name}: inner dims differ: {a} @ {b}")
    batch = D.broadcast(tuple(sa[:-2]), tuple(sb[:-2]))
    out = list(batch) + ([] if va else [sa[-2]]) + ([] if vb else [sb[-1]])
    return [TensorType(a.dtype, out)]


@rule(Op.GEMM)
def _gemm(node, ts, const):
    a, b = ts[0].shape, ts[1].shape
    if len(a) != 2 or len(b) != 2:
        raise ShapeError(f"gemm {node.name}: inputs must be 2-D, got {ts[0]} and {ts[1]}")
    m, k = (a[1], a[0]) if node.attrs.get("transA") else a
    k2, n = (b[1], b[0]) if node.attrs.get("transB") else b
    if not D.equal(k, k2):
        raise ShapeError(f"gemm {node.name}: inner dims differ: {k} vs {k2}")
    return [TensorType(ts[0].dtype, (m, n))]


@rule(Op.LINEAR)
def _linear(node, ts, const):
    x, w = ts[0], ts[1]
    if w.rank != 2 or not x.rank or not D.equal(x.shape[-1], w.shape[1]):
        raise ShapeError(f"linear {node.name}: x {x} does not fit weight {w} (weight is [out, in])")
    return [TensorType(x.dtype, x.shape[:-1] + (w.shape[0],))]


def _result_dtype(ts: list[TensorType]) -> DType:
    for t in ts:
        if t.dtype.is_float:
            return t.dtype
    return ts[0].dtype


@rule(*GroupOp.Binary)
def _binary(node, ts, const):
    try:
        shape = D.broadcast(ts[0].shape, ts[1].shape)
    except ValueError as e:
        raise ShapeError(f"{node.op.value} {node.name}: {e}") from None
    dtype = DType.bool if node.op in GroupOp.Compare else _result_dtype(ts)
    return [TensorType(dtype, shape)]


@rule(*GroupOp.Unary)
def _unary(node, ts, const):
    if node.op is Op.CAST:
        return [ts[0].with_dtype(DType(node.attrs["dtype"]))]
    if node.op in (Op.NOT, Op.IS_NAN):
        return [ts[0].with_dtype(DType.bool)]
    return [ts[0]]


@rule(Op.WHERE)
def _where(node, ts, const):
    shape = D.broadcast(D.broadcast(ts[0].shape, ts[1].shape), ts[2].shape)
    return [TensorType(_result_dtype(ts[1:]), shape)]


@rule(*GroupOp.Reduce)
def _reduce(node, ts, const):
    x = ts[0]
    axes = node.attrs.get("axes")
    axes = set(range(x.rank)) if axes is None else {norm_axis(a, x.rank) for a in axes}
    keep = node.attrs.get("keepdims", True)
    shape = [1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes]
    return [x.with_shape(shape)]


@rule(Op.SOFTMAX, Op.LAYER_NORM, Op.RMS_NORM, Op.TRILU)
def _same(node, ts, const):
    return [ts[0]]


@rule(Op.GATHER)
def _gather(node, ts, const):
    data, idx = ts
    axis = norm_axis(node.attrs.get("axis", 0), data.rank)
    return [data.with_shape(data.shape[:axis] + idx.shape + data.shape[axis + 1:])]


@rule(Op.GATHER_ND)
def _gather_nd(node, ts, const):
    data, idx = ts
    b = node.attrs.get("batch_dims", 0)
    r = idx.shape[-1]
    if not isinstance(r, int) or b + r > data.rank:
        raise ShapeError(f"gather_nd {node.name}: index depth {r} does not fit {data}")
    return [data.with_shape(idx.shape[:-1] + data.shape[b + r:])]


@rule(Op.RESHAPE)
def _reshape(node, ts, const):
    x = ts[0]
    target = _need_const(node, const, 1, "the target shape")
    out = [x.shape[i] if d == 0 and not node.attrs.get("allowzero") else d for i, d in enumerate(target)]
    if sum(1 for d in out if d == -1) > 1:
        raise ShapeError(f"reshape {node.name}: more than one -1 in {target}")
    if -1 in out:
        known = D.prod(d for d in out if d != -1)
        out[out.index(-1)] = D.floordiv(D.prod(x.shape), known)
    if not D.equal(D.prod(out), D.prod(x.shape)):
        raise ShapeError(f"reshape {node.name}: cannot reshape {x} to {target}")
    return [x.with_shape(out)]


@rule(Op.TRANSPOSE)
def _transpose(node, ts, const):
    x = ts[0]
    perm = node.attrs.get("perm") or list(range(x.rank))[::-1]
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"transpose {node.name}: perm {perm} does not fit rank {x.rank}")
    return [x.with_shape([x.shape[p] for p in perm])]


@rule(Op.CONCAT)
def _concat(node, ts, const):
    axis = norm_axis(node.attrs["axis"], ts[0].rank)
    for t in ts[1:]:
        if t.rank != ts[0].rank:
            raise ShapeError(f"concat {node.name}: ranks differ: {[str(t) for t in ts]}")
    total = 0
    for t in ts:
        total = D.add(total, t.shape[axis])
    shape = list(ts[0].shape)
    shape[axis] = total
    return [ts[0].with_shape(shape)]


def slice_len(dim, start, end, step):
    """Length of ``range(start, end, step)`` clamped to ``dim`` as numpy slicing does; symbolic-aware."""
    if isinstance(dim, int) and all(isinstance(v, int) for v in (start, end)):
        return len(range(*slice(start, end, step).indices(dim)))
    if step != 1:
        raise ShapeError("symbolic slices need step 1")

    def clamp(v, default):
        if isinstance(v, int):
            if v >= INT64_MAX // 2:
                return dim
            if v < 0:
                return D.add(dim, v) if v > -INT64_MAX // 2 else default
        return v
    return D.sub(clamp(end, dim), clamp(start, 0))


@rule(Op.SLICE)
def _slice(node, ts, const):
    x = ts[0]
    a = node.attrs
    axes = a.get("axes") or list(range(len(a["starts"])))
    steps = a.get("steps") or [1] * len(axes)
    shape = list(x.shape)
    for ax, s, e, st in zip(axes, a["starts"], a["ends"], steps):
        ax = norm_axis(ax, x.rank)
        shape[ax] = slice_len(shape[ax], s, e, st)
    return [x.with_shape(shape)]


@rule(Op.SPLIT)
def _split(node, ts, const):
    x = ts[0]
    axis = norm_axis(node.attrs["axis"], x.rank)
    sizes = node.attrs["sizes"]
    total = 0
    for s in sizes:
        total = D.add(total, s)
    if not D.equal(total, x.shape[axis]):
        raise ShapeError(f"split {node.name}: sizes {sizes} do not add up to {x.shape[axis]}")
    return [x.with_shape(x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]


@rule(Op.SQUEEZE)
def _squeeze(node, ts, const):
    x = ts[0]
    axes = node.attrs.get("axes")
    axes = {i for i, d in enumerate(x.shape) if d == 1} if axes is None else {norm_axis(a, x.rank) for a in axes}
    for a in axes:
        if x.shape[a] != 1 and isinstance(x.shape[a], int):
            raise ShapeError(f"squeeze {node.name}: dim {a} of {x} is not 1")
    return [x.with_shape([d for i, d in enumerate(x.shape) if i not in axes])]


@rule(Op.UNSQUEEZE)
def _unsqueeze(node, ts, const):
    x = ts[0]
    rank = x.rank + len(node.attrs["axes"])
    axes = sorted(norm_axis(a, rank) for a in node.attrs["axes"])
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [x.with_shape(shape)]


@rule(Op.EXPAND)
def _expand(node, ts, const):
    target = _need_const(node, const, 1, "the target shape")
    return [ts[0].with_shape(D.broadcast(ts[0].shape, tuple(target)))]


@rule(Op.SHAPE)
def _shape(node, ts, const):
    rank = ts[0].rank
    start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
    return [TensorType(DType.i64, (len(range(*slice(start, end).indices(rank))),))]


@rule(Op.RANGE)
def _range(node, ts, const):
    start, limit, delta = (_need_const(node, const, i, n)[0] for i, n in enumerate(("start", "limit", "delta")))
    if ts[0].dtype.is_float:  # as_dims would truncate 0.5 to 0: use the float values themselves
        start, limit, delta = (float(const(i).reshape(-1)[0]) for i in range(3))
        return [TensorType(ts[0].dtype, (max(0, math.ceil((limit - start) / delta)),))]
    if isinstance(delta, int) and delta == 1:
        n = D.sub(limit, start)
    elif all(isinstance(v, int) for v in (start, limit, delta)):
        n = max(0, -(-(limit - start) // delta))
    else:
        raise ShapeError(f"range {node.name}: symbolic range needs delta 1")
    return [TensorType(ts[0].dtype, (n,))]


@rule(Op.CONSTANT_OF_SHAPE)
def _constant_of_shape(node, ts, const):
    shape = _need_const(node, const, 0, "the shape")
    return [TensorType(DType(node.attrs.get("dtype", "f32")), shape)]


@rule(Op.SDPA)
def _sdpa(node, ts, const):
    q, k, v = ts[:3]
    if q.rank < 2 or k.rank != q.rank or v.rank != q.rank:
        raise ShapeError(f"sdpa {node.name}: q/k/v ranks differ: {q}, {k}, {v}")
    if not D.equal(q.shape[-1], k.shape[-1]):
        raise ShapeError(f"sdpa {node.name}: q and k head dims differ: {q} vs {k}")
    return [q.with_shape(q.shape[:-1] + (v.shape[-1],))]


@rule(Op.LUT_PRECOMPUTE)
def _lut_precompute(node, ts, const):
    x, a = ts[0], node.attrs
    if not D.equal(x.shape[-1], a["k"]):
        raise ShapeError(f"lut_precompute {node.name}: x {x} does not have K={a['k']}")
    entries = 1 << (a["g"] - 1) if a.get("symmetric_table", True) else 1 << a["g"]
    groups = a["k_pad"] // a["group_size"]
    table = DType.i8 if a["table_dtype"] == "int8" else DType.f32
    lead = x.shape[:-1]
    return [TensorType(table, lead + (a["k_pad"] // a["g"], entries)), TensorType(DType.f32, lead + (groups,)),
            TensorType(DType.f32, lead + (groups,))]


@rule(Op.LUT_MATMUL)
def _lut_matmul(node, ts, const):
    t, a = ts[0], node.attrs
    if t.rank < 2 or t.shape[-2] != a["k_pad"] // a["g"]:
        raise ShapeError(f"lut_matmul {node.name}: tables {t} do not fit K_pad={a['k_pad']}")
    q = ts[3]
    if q.shape != (a["bits"], a["n"], a["k_pad"] // 8):
        raise ShapeError(f"lut_matmul {node.name}: packed weight {q} is not [{a['bits']}, {a['n']}, {a['k_pad'] // 8}]")
    return [TensorType(DType.f32, t.shape[:-2] + (a["n"],))]


assert set(RULES) == set(Op), set(Op) - set(RULES)


def infer_node(g: Graph, node: Node) -> list[TensorType]:
    ts = [g.type_of(r) for r in node.inputs]
    return RULES[node.op](node, ts, lambda i: g.const_value(node.inputs[i]))


def build(g: Graph, op: Op, inputs, attrs: dict | None = None, name: str | None = None) -> Node:
    """Add a node whose output types are inferred from its inputs."""
    probe = Node("?", op, list(inputs), dict(attrs or {}), [])
    return g.add(op, probe.inputs, probe.attrs, infer_node(g, probe), name=name)
