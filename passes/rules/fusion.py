"""Rules that recognize LLM building blocks as exported by torch.export and torch.onnx (dynamo), and fuse
them into single ops: RMSNorm, SiLU, GELU (erf and tanh), scaled dot-product attention with GQA."""
from __future__ import annotations

import math

import numpy as np

from ...ir import dims as D
from ...ir.graph import Ref
from ...ir.ops import Op
from ...ir.shapes import build
from ..pattern import Any, Const, OneOf, Pat, RuleSet, rule, scalar


def _last_axis(node) -> bool:
    axes = node.attrs.get("axes")
    rank = len(node.types[0].shape)
    return axes is not None and len(axes) == 1 and axes[0] % rank == rank - 1 and node.attrs.get("keepdims", True)


def _rsqrt_of(inner: Pat) -> Pat:
    return OneOf(Pat(Op.RSQRT, inner), Pat(Op.RECIPROCAL, Pat(Op.SQRT, inner)),
                 Pat(Op.DIV, Const(value_ok=scalar(1.0)), Pat(Op.SQRT, inner)))


_SQUARE = OneOf(Pat(Op.POW, Any("x"), Const(value_ok=scalar(2.0))), Pat(Op.MUL, Any("x"), Any("x")))
_MEAN_SQ_EPS = Pat(Op.ADD, Pat(Op.REDUCE_MEAN, _SQUARE, where=_last_axis), Const("eps", value_ok=lambda v: v.size == 1))


@rule("rms_norm", OneOf(Pat(Op.MUL, Any("x"), _rsqrt_of(_MEAN_SQ_EPS)),
                        Pat(Op.DIV, Any("x"), Pat(Op.SQRT, _MEAN_SQ_EPS))))
def rms_norm(g, m):
    return build(g, Op.RMS_NORM, [m["x"]], {"eps": float(m.const("eps").reshape(-1)[0])}, name="rms_norm").out


@rule("rms_norm_weight", Pat(Op.MUL, Pat(Op.RMS_NORM, Any("x"), name="n"), Const("w")))
def rms_norm_weight(g, m):
    w, x = g.type_of(m["w"]), g.type_of(m["x"])
    if w.rank != 1 or not D.equal(w.shape[0], x.shape[-1]):
        return None
    return build(g, Op.RMS_NORM, [m["x"], m["w"]], m.node("n").attrs, name="rms_norm").out


@rule("silu", Pat(Op.MUL, Any("x"), Pat(Op.SIGMOID, Any("x"))))
def silu(g, m):
    return build(g, Op.SILU, [m["x"]], name="silu").out


def _half_x_times(e: Pat) -> Pat:
    """0.5 * x * e, in the association orders exporters produce."""
    half = Const(value_ok=scalar(0.5))
    return OneOf(Pat(Op.MUL, Pat(Op.MUL, Any("x"), half), e), Pat(Op.MUL, Any("x"), Pat(Op.MUL, half, e)),
                 Pat(Op.MUL, half, Pat(Op.MUL, Any("x"), e)))


_ERF_TERM = Pat(Op.ADD, Pat(Op.ERF, OneOf(Pat(Op.DIV, Any("x"), Const(value_ok=scalar(math.sqrt(2), 1e-4))),
                                          Pat(Op.MUL, Any("x"), Const(value_ok=scalar(math.sqrt(0.5), 1e-4))))),
                Const(value_ok=scalar(1.0)))
_CUBE = OneOf(Pat(Op.POW, Any("x"), Const(value_ok=scalar(3.0))), Pat(Op.MUL, Any("x"), Pat(Op.MUL, Any("x"), Any("x"))))
_TANH_TERM = Pat(Op.ADD, Pat(Op.TANH, Pat(Op.MUL, Const(value_ok=scalar(math.sqrt(2 / math.pi), 1e-4)),
                                          Pat(Op.ADD, Any("x"), Pat(Op.MUL, Const(value_ok=scalar(0.044715, 1e-4)),
                                                                    _CUBE)))),
                 Const(value_ok=scalar(1.0)))


@rule("gelu_erf", _half_x_times(_ERF_TERM))
def gelu_erf(g, m):
    return build(g, Op.GELU, [m["x"]], {"approximate": "none"}, name="gelu").out


@rule("gelu_tanh", _half_x_times(_TANH_TERM))
def gelu_tanh(g, m):
    return build(g, Op.GELU, [m["x"]], {"approximate": "tanh"}, name="gelu").out


def _scalar_const(name: str) -> Const:
    return Const(name, value_ok=lambda v: v.size == 1)


_SCORES = Pat(Op.MATMUL, OneOf(Pat(Op.MUL, Any("q"), _scalar_const("cq")), Any("q")),
              OneOf(Pat(Op.MUL, Any("kt"), _scalar_const("ck")), Any("kt")), name="scores")
_SCALED = OneOf(Pat(Op.MUL, _SCORES, _scalar_const("cs")), Pat(Op.DIV, _SCORES, _scalar_const("ds")), _SCORES)
_SOFTMAX = Pat(Op.SOFTMAX, OneOf(Pat(Op.ADD, _SCALED, Any("mask")), _SCALED), name="softmax",
               where=lambda n: n.attrs.get("axis", -1) in (-1, len(n.types[0].shape) - 1))
_PROBS = OneOf(Pat(Op.WHERE, Pat(Op.IS_NAN, _SOFTMAX), Const(value_ok=scalar(0.0)), _SOFTMAX), _SOFTMAX)


def _swap_last(rank: int) -> list[int]:
    return list(range(rank - 2)) + [rank - 1, rank - 2]


@rule("sdpa", Pat(Op.MATMUL, _PROBS, Any("v")))
def sdpa(g, m):
    q, kt, v = (g.type_of(m[n]) for n in ("q", "kt", "v"))
    if q.rank < 3 or kt.rank != q.rank or v.rank != q.rank:
        return None
    scale = 1.0
    for name in ("cq", "ck", "cs"):
        if name in m:
            scale *= float(m.const(name).reshape(-1)[0])
    if "ds" in m:
        scale /= float(m.const("ds").reshape(-1)[0])
    k = build(g, Op.TRANSPOSE, [m["kt"]], {"perm": _swap_last(kt.rank)}, name="k").out
    inputs = [m["q"], k, m["v"]]
    if "mask" in m:
        inputs.append(_bool_mask(g, m["mask"]))
    return build(g, Op.SDPA, inputs, {"causal": False, "scale": scale}, name="sdpa").out


def _bool_mask(g, mask: Ref) -> Ref:
    """where(b, 0, -inf) added to the scores is the boolean mask b."""
    node = g.node(mask.node)
    if node.op is Op.WHERE:
        zero, neg = g.const_value(node.inputs[1]), g.const_value(node.inputs[2])
        if zero is not None and neg is not None and zero.dtype != object and neg.dtype != object \
                and np.all(zero == 0) and np.all(np.isneginf(neg)) and g.type_of(node.inputs[0]).dtype.value == "bool":
            return node.inputs[0]
    return mask


def _repeat_kv(name: str) -> Pat:
    """HF's repeat_kv: reshape(expand(unsqueeze(kv, 2), [b, hk, rep, s, d]), [b, hk*rep, s, d])."""
    return Pat(Op.RESHAPE, Pat(Op.EXPAND, Pat(Op.UNSQUEEZE, Any(name), where=lambda n: n.attrs["axes"] in ([2], [-3])),
                               Any()), Any())


@rule("sdpa_gqa", Pat(Op.SDPA, Any("q"), _repeat_kv("k0"), _repeat_kv("v0"), name="s"))
def sdpa_gqa(g, m):
    return _gqa(g, m, [])


@rule("sdpa_gqa_masked", Pat(Op.SDPA, Any("q"), _repeat_kv("k0"), _repeat_kv("v0"), Any("mask"), name="s"))
def sdpa_gqa_masked(g, m):
    return _gqa(g, m, [m["mask"]])


def _gqa(g, m, extra):
    q, k0, v0 = (g.type_of(m[n]) for n in ("q", "k0", "v0"))
    if k0.rank != 4 or q.rank != 4 or not isinstance(q.shape[1], int) or not isinstance(k0.shape[1], int) \
            or q.shape[1] % k0.shape[1] or not D.equal(k0.shape[2], v0.shape[2]):
        return None
    return build(g, Op.SDPA, [m["q"], m["k0"], m["v0"], *extra], m.node("s").attrs, name="sdpa").out


@rule("swap_last_via_3d", Pat(Op.RESHAPE, Pat(Op.TRANSPOSE, Pat(Op.RESHAPE, Any("x"), Any()),
                                                where=lambda n: n.attrs.get("perm") == [0, 2, 1]), Any(), name="y"))
def swap_last_via_3d(g, m):
    """reshape(transpose(reshape(x, [B, S, E]), [0, 2, 1]), [*b, E, S]) is a transpose of x's last dims."""
    x, y = g.type_of(m["x"]), g.type_of(m["y"])
    if x.rank < 3 or y.rank != x.rank:
        return None
    want = x.shape[:-2] + (x.shape[-1], x.shape[-2])
    if not all(D.equal(a, b) for a, b in zip(want, y.shape)):
        return None
    return build(g, Op.TRANSPOSE, [m["x"]], {"perm": _swap_last(x.rank)}, name="transpose").out


@rule("transpose_transpose", Pat(Op.TRANSPOSE, Pat(Op.TRANSPOSE, Any("x"), name="t1"), name="t2"))
def transpose_transpose(g, m):
    rank = g.type_of(m["x"]).rank
    p1 = m.node("t1").attrs.get("perm") or list(range(rank))[::-1]
    p2 = m.node("t2").attrs.get("perm") or list(range(rank))[::-1]
    return build(g, Op.TRANSPOSE, [m["x"]], {"perm": [p1[i] for i in p2]}, name="transpose").out


FUSION_RULES = RuleSet("fusion", [rms_norm, rms_norm_weight, silu, gelu_erf, gelu_tanh, sdpa, sdpa_gqa,
                                  sdpa_gqa_masked, swap_last_via_3d, transpose_transpose])
