"""Rules that put every matmul with a constant weight into one form: ``linear(x, W[N, K], b?)``.

ONNX stores weights as ``[in, out]`` MatMul initializers (a new transposed weight is made once per key),
Gemm may carry ``transB``; a tied lm_head arrives as ``matmul(x, transpose(embedding))`` and keeps
sharing the embedding's weight.
"""
from __future__ import annotations

from ...ir.graph import Graph, Ref
from ...ir.ops import Op
from ...ir.shapes import build
from ..pattern import Any, Const, Pat, RuleSet, rule


def _transposed_const(g: Graph, ref: Ref) -> Ref:
    node = g.node(ref.node)
    if "ref" in node.attrs:
        key = node.attrs["ref"] + ".T"
        if key not in g.weights:
            g.weights[key] = g.weights[node.attrs["ref"]].T.copy()
        return g.add_const(None, weight_key=key, name=key).out
    return g.add_const(g.const_value(ref).T.copy(), name=node.name + "_T").out


def _is_2d(v) -> bool:
    return v.ndim == 2


@rule("matmul_transposed_weight", Pat(Op.MATMUL, Any("x"), Pat(Op.TRANSPOSE, Const("w", value_ok=_is_2d))))
def matmul_transposed_weight(g, m):
    if g.type_of(m["x"]).rank < 2:
        return None
    return build(g, Op.LINEAR, [m["x"], m["w"]], name="linear").out


@rule("matmul_const_weight", Pat(Op.MATMUL, Any("x"), Const("w", value_ok=_is_2d)))
def matmul_const_weight(g, m):
    if g.type_of(m["x"]).rank < 2:
        return None
    return build(g, Op.LINEAR, [m["x"], _transposed_const(g, m["w"])], name="linear").out


def _plain_gemm(node) -> bool:
    a = node.attrs
    return not a.get("transA") and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0


@rule("gemm_to_linear", Pat(Op.GEMM, Any("x"), Const("w"), name="gemm", where=_plain_gemm))
def gemm_to_linear(g, m):
    w = m["w"] if m.node("gemm").attrs.get("transB") else _transposed_const(g, m["w"])
    return build(g, Op.LINEAR, [m["x"], w], name="linear").out


@rule("gemm_bias_to_linear", Pat(Op.GEMM, Any("x"), Const("w"), Const("b"), name="gemm", where=_plain_gemm))
def gemm_bias_to_linear(g, m):
    if g.type_of(m["b"]).rank != 1:
        return None
    w = m["w"] if m.node("gemm").attrs.get("transB") else _transposed_const(g, m["w"])
    return build(g, Op.LINEAR, [m["x"], w, m["b"]], name="linear").out


@rule("linear_bias", Pat(Op.ADD, Pat(Op.LINEAR, Any("x"), Const("w"), name="lin"), Const("b")))
def linear_bias(g, m):
    b, w = g.type_of(m["b"]), g.type_of(m["w"])
    if b.rank != 1 or b.shape[0] != w.shape[0] or len(g.users(m["lin"].node)) != 1:
        return None
    return build(g, Op.LINEAR, [m["x"], m["w"], m["b"]], name="linear").out


LINEAR_RULES = RuleSet("linear", [matmul_transposed_weight, matmul_const_weight, gemm_to_linear,
                                  gemm_bias_to_linear, linear_bias])
