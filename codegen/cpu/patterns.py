"""The op groups the CPU lowering runs as one step (lower.py's group rules), as patterns over the graph."""
from __future__ import annotations

from ...ir.graph import Node
from ...ir.ops import Op
from ...passes.pattern import Any, Pat


def _halves(first: bool):
    def ok(n: Node) -> bool:
        a = n.attrs
        return a.get("axes") in ([-1], [3]) and not a.get("steps") and (a["starts"] == [0]) == first
    return ok


def rope(x: str) -> Pat:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x[..., d/2:], x[..., :d/2])."""
    return Pat(Op.ADD, Pat(Op.MUL, Any(x), Any("cos")),
               Pat(Op.MUL, Pat(Op.CONCAT, Pat(Op.NEG, Pat(Op.SLICE, Any(x), where=_halves(False))),
                               Pat(Op.SLICE, Any(x), where=_halves(True)), where=lambda n: n.attrs["axis"] in (-1, 3)),
                   Any("sin")))


def _perm(*perm: int):
    return lambda n: list(n.attrs.get("perm") or []) == list(perm)


def _axis2(n: Node) -> bool:
    return n.attrs.get("axis") in (2, -2)


ROPE = rope("x")
SWIGLU = Pat(Op.MUL, Pat(Op.SILU, Any("gate")), Any("up"))

# out [b, L, hq*d] = merge_heads(sdpa(rope(q'), concat(past_k, rope(k')), concat(past_v, v'))), where q', k', v'
# are the projections' rows split into heads (HEADS) and the concats are the model's present KV outputs
ATTENTION_BLOCK = Pat(Op.RESHAPE, Pat(Op.TRANSPOSE, Pat(
    Op.SDPA, rope("xq"), Pat(Op.CONCAT, Any("past_k"), rope("xk"), name="present_k", where=_axis2),
    Pat(Op.CONCAT, Any("past_v"), Any("xv"), name="present_v", where=_axis2), name="sdpa"), where=_perm(0, 2, 1, 3)),
    Any())
# [b, L, h*d] rows -> [b, h, L, d] heads
HEADS = {f"x{p}": Pat(Op.TRANSPOSE, Pat(Op.RESHAPE, Any(p), Any()), where=_perm(0, 2, 1, 3)) for p in "qkv"}
