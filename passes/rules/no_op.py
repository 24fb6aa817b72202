"""Rules that remove ops which do nothing (onnxscript's _no_op.py)."""
from __future__ import annotations

from ...ir.ops import Op
from ..pattern import Any, Const, Pat, RuleSet, rule, same_type, scalar


@rule("cast_to_same_dtype", Pat(Op.CAST, Any("x"), name="y"))
def cast_same(g, m):
    return m["x"] if g.type_of(m["x"]).dtype == g.type_of(m["y"]).dtype else None


@rule("reshape_to_same_shape", Pat({Op.RESHAPE, Op.EXPAND}, Any("x"), Any(), name="y"))
def reshape_same(g, m):
    return m["x"] if same_type(g, m["x"], m["y"]) else None


@rule("transpose_identity", Pat(Op.TRANSPOSE, Any("x"), name="y"))
def transpose_identity(g, m):
    perm = m.node("y").attrs.get("perm")
    return m["x"] if perm is not None and perm == sorted(perm) else None


@rule("add_zero", Pat({Op.ADD, Op.SUB}, Any("x"), Const(value_ok=scalar(0.0)), name="y"))
def add_zero(g, m):
    return m["x"] if same_type(g, m["x"], m["y"]) else None


@rule("mul_one", Pat({Op.MUL, Op.DIV}, Any("x"), Const(value_ok=scalar(1.0)), name="y"))
def mul_one(g, m):
    return m["x"] if same_type(g, m["x"], m["y"]) else None


@rule("slice_everything", Pat(Op.SLICE, Any("x"), name="y"))
def slice_everything(g, m):
    return m["x"] if same_type(g, m["x"], m["y"]) and all(s in (1, None) for s in
                                                            m.node("y").attrs.get("steps") or [1]) else None


@rule("concat_single", Pat(Op.CONCAT, Any("x")))
def concat_single(g, m):
    return m["x"]


NO_OP_RULES = RuleSet("no_op", [cast_same, reshape_same, transpose_identity, add_zero, mul_one,
                                slice_everything, concat_single])
