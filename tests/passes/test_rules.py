"""Each canonicalization rule: a small IR in (text form), the fused IR out, and the same numbers."""
import numpy as np
import pytest

from lutc.codegen.reference.executor import run
from lutc.ir import Op, parse_graph, verify
from lutc.passes.manager import PassManager
from lutc.passes.pipeline import canonicalize
from lutc.passes.rewrite import RewritePass, apply_rules
from lutc.passes.rules import CANONICAL_RULES

RNG = np.random.default_rng(0)

CASES = {
    "rms_norm_onnx": ("""
graph g(%x) {
  %x = input : f32[2,seq,10]
  %two = const {"value": 2.0} : f32[]
  %sq = pow(%x, %two) : f32[2,seq,10]
  %m = reduce_mean(%sq) {"axes": [-1], "keepdims": true} : f32[2,seq,1]
  %eps = const {"value": 1e-05} : f32[]
  %v = add(%m, %eps) : f32[2,seq,1]
  %s = sqrt(%v) : f32[2,seq,1]
  %r = reciprocal(%s) : f32[2,seq,1]
  %n = mul(%x, %r) : f32[2,seq,10]
  %w = const {"value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.5]} : f32[10]
  %y = mul(%w, %n) : f32[2,seq,10]
  return y=%y
}""", {Op.RMS_NORM: 1}, {Op.POW, Op.REDUCE_MEAN, Op.SQRT, Op.MUL}, [(2, 7, 10)]),
    "rms_norm_torch_cast_rsqrt": ("""
graph g(%x) {
  %x = input : f32[3,11]
  %c = cast(%x) {"dtype": "f32"} : f32[3,11]
  %sq = mul(%c, %c) : f32[3,11]
  %m = reduce_mean(%sq) {"axes": [1], "keepdims": true} : f32[3,1]
  %eps = const {"value": [1e-06]} : f32[1]
  %v = add(%eps, %m) : f32[3,1]
  %r = rsqrt(%v) : f32[3,1]
  %y = mul(%r, %c) : f32[3,11]
  return y=%y
}""", {Op.RMS_NORM: 1}, {Op.CAST, Op.RSQRT}, [(3, 11)]),
    "silu": ("""
graph g(%x) {
  %x = input : f32[3,5,7]
  %s = sigmoid(%x) : f32[3,5,7]
  %y = mul(%s, %x) : f32[3,5,7]
  return y=%y
}""", {Op.SILU: 1}, {Op.SIGMOID, Op.MUL}, [(3, 5, 7)]),
    "gelu_erf": ("""
graph g(%x) {
  %x = input : f32[3,5,7]
  %c = const {"value": 1.4142135381698608} : f32[]
  %d = div(%x, %c) : f32[3,5,7]
  %e = erf(%d) : f32[3,5,7]
  %one = const {"value": 1.0} : f32[]
  %a = add(%e, %one) : f32[3,5,7]
  %half = const {"value": 0.5} : f32[]
  %h = mul(%x, %half) : f32[3,5,7]
  %y = mul(%h, %a) : f32[3,5,7]
  return y=%y
}""", {Op.GELU: 1}, {Op.ERF, Op.DIV}, [(3, 5, 7)]),
    "gelu_tanh": ("""
graph g(%x) {
  %x = input : f32[3,5,7]
  %three = const {"value": 3.0} : f32[]
  %x3 = pow(%x, %three) : f32[3,5,7]
  %k = const {"value": 0.044715} : f32[]
  %kx3 = mul(%k, %x3) : f32[3,5,7]
  %in = add(%x, %kx3) : f32[3,5,7]
  %c = const {"value": 0.7978845608} : f32[]
  %ci = mul(%c, %in) : f32[3,5,7]
  %t = tanh(%ci) : f32[3,5,7]
  %one = const {"value": 1.0} : f32[]
  %a = add(%one, %t) : f32[3,5,7]
  %half = const {"value": 0.5} : f32[]
  %ha = mul(%half, %a) : f32[3,5,7]
  %y = mul(%x, %ha) : f32[3,5,7]
  return y=%y
}""", {Op.GELU: 1}, {Op.TANH, Op.POW}, [(3, 5, 7)]),
    "sdpa_onnx_dynamo": ("""
graph g(%q, %k, %v, %keep) {
  %q = input : f32[1,6,seq,8]
  %k = input : f32[1,6,seq,8]
  %v = input : f32[1,6,seq,8]
  %keep = input : bool[1,1,seq,seq]
  %kr = const {"value": [6, "seq", 8]} : i64[3]
  %k3 = reshape(%k, %kr) : f32[6,seq,8]
  %kt3 = transpose(%k3) {"perm": [0, 2, 1]} : f32[6,8,seq]
  %ktr = const {"value": [1, 6, 8, "seq"]} : i64[4]
  %kt = reshape(%kt3, %ktr) : f32[1,6,8,seq]
  %c = const {"value": 0.5946035575} : f32[]
  %qs = mul(%q, %c) : f32[1,6,seq,8]
  %ks = mul(%kt, %c) : f32[1,6,8,seq]
  %s = matmul(%qs, %ks) : f32[1,6,seq,seq]
  %zero = const {"value": 0.0} : f32[]
  %ninf = const {"value": -Infinity} : f32[]
  %bias = where(%keep, %zero, %ninf) : f32[1,1,seq,seq]
  %sb = add(%s, %bias) : f32[1,6,seq,seq]
  %p = softmax(%sb) {"axis": -1} : f32[1,6,seq,seq]
  %nan = is_nan(%p) : bool[1,6,seq,seq]
  %p0 = where(%nan, %zero, %p) : f32[1,6,seq,seq]
  %y = matmul(%p0, %v) : f32[1,6,seq,8]
  return y=%y
}""", {Op.SDPA: 1}, {Op.SOFTMAX, Op.MATMUL, Op.RESHAPE, Op.TRANSPOSE, Op.WHERE}, "sdpa"),
    "sdpa_gqa_repeat_kv": ("""
graph g(%q, %k, %v) {
  %q = input : f32[2,6,seq,4]
  %k = input : f32[2,2,seq,4]
  %v = input : f32[2,2,seq,4]
  %ku = unsqueeze(%k) {"axes": [2]} : f32[2,2,1,seq,4]
  %vu = unsqueeze(%v) {"axes": [2]} : f32[2,2,1,seq,4]
  %e = const {"value": [2, 2, 3, "seq", 4]} : i64[5]
  %ke = expand(%ku, %e) : f32[2,2,3,seq,4]
  %ve = expand(%vu, %e) : f32[2,2,3,seq,4]
  %r = const {"value": [2, 6, "seq", 4]} : i64[4]
  %kr = reshape(%ke, %r) : f32[2,6,seq,4]
  %vr = reshape(%ve, %r) : f32[2,6,seq,4]
  %y = sdpa(%q, %kr, %vr) {"causal": true, "scale": 0.3} : f32[2,6,seq,4]
  return y=%y
}""", {Op.SDPA: 1}, {Op.EXPAND, Op.RESHAPE, Op.UNSQUEEZE}, [(2, 6, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4)]),
    "linear_from_onnx_matmul_gemm": ("""
graph g(%x) {
  %x = input : f32[3,5]
  %w = const {"value": [[1.0, 2.0, 0.5], [0.0, 1.0, -1.0], [2.0, 2.0, 2.0], [1.5, -0.5, 0.0], [3.0, 1.0, 1.0]]} : f32[5,3]
  %y = matmul(%x, %w) : f32[3,3]
  %b = const {"value": [0.1, 0.2, 0.3]} : f32[3]
  %yb = add(%y, %b) : f32[3,3]
  %wt = transpose(%w) {"perm": [1, 0]} : f32[3,5]
  %b5 = const {"value": [0.1, 0.2, 0.3, 0.4, 0.5]} : f32[5]
  %z = gemm(%yb, %wt, %b5) {"transB": 0} : f32[3,5]
  return z=%z
}""", {Op.LINEAR: 2}, {Op.MATMUL, Op.GEMM, Op.ADD}, [(3, 5)]),
    "no_ops": ("""
graph g(%x) {
  %x = input : f32[4,6]
  %c = cast(%x) {"dtype": "f32"} : f32[4,6]
  %t = transpose(%c) {"perm": [0, 1]} : f32[4,6]
  %z = const {"value": 0.0} : f32[]
  %a = add(%t, %z) : f32[4,6]
  %one = const {"value": [1.0]} : f32[1]
  %m = mul(%one, %a) : f32[4,6]
  %s = slice(%m) {"starts": [0], "ends": [9223372036854775807], "axes": [1]} : f32[4,6]
  %y = neg(%s) : f32[4,6]
  return y=%y
}""", {Op.NEG: 1}, {Op.CAST, Op.TRANSPOSE, Op.ADD, Op.MUL, Op.SLICE}, [(4, 6)]),
}


def _inputs(shapes, g):
    if shapes == "sdpa":
        keep = np.tril(np.ones((5, 5), bool))[None, None]
        keep[..., 0] = False  # fully masked row 0 too: the IsNaN->0 guard must survive the fusion
        return [RNG.standard_normal((1, 6, 5, 8)).astype(np.float32) for _ in range(3)] + [keep]
    return [RNG.standard_normal(s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule(name):
    text, expect, gone, shapes = CASES[name]
    g = parse_graph(text)
    verify(g)
    inputs = _inputs(shapes, g)
    before = run(g, inputs, float_dtype=np.float64)[0]
    passes = canonicalize()  # folding first, as in compile(): transpose(const) becomes a const
    g = PassManager(passes).run(g)
    fired = next(p for p in passes if isinstance(p, RewritePass)).fired
    assert fired, "no rule fired"
    counts = g.op_counts()
    for op, n in expect.items():
        assert counts.get(op, 0) == n, (fired, str(g))
    assert not gone & set(counts), (fired, str(g))
    after = run(g, inputs, float_dtype=np.float64)[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-9)


def test_rule_does_not_fire_on_lookalikes():
    # mean over the wrong axis is not an RMSNorm; sigmoid of another value is not a SiLU
    g = parse_graph("""
graph g(%x, %z) {
  %x = input : f32[3,4]
  %z = input : f32[3,4]
  %sq = mul(%x, %x) : f32[3,4]
  %m = reduce_mean(%sq) {"axes": [0], "keepdims": true} : f32[1,4]
  %eps = const {"value": 1e-06} : f32[]
  %v = add(%m, %eps) : f32[1,4]
  %r = rsqrt(%v) : f32[1,4]
  %y = mul(%x, %r) : f32[3,4]
  %s = sigmoid(%z) : f32[3,4]
  %w = mul(%x, %s) : f32[3,4]
  return y=%y, w=%w
}""")
    assert apply_rules(g, CANONICAL_RULES) == {}
