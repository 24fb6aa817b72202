"""The numpy reference kernels against torch (float64), on awkward shapes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lutc.codegen.reference.executor import InputError, run
from lutc.ir import DType, Graph, Op, TensorType
from lutc.ir.shapes import build

RNG = np.random.default_rng(7)


def one_op(op, arrays, attrs=None, extra_consts=()):
    g = Graph("t")
    refs = [g.add_input(f"x{i}", TensorType(DType.from_numpy(a.dtype), a.shape)).out for i, a in enumerate(arrays)]
    refs += [g.add_const(c).out for c in extra_consts]
    node = build(g, op, refs, attrs)
    g.set_outputs([node.out])
    return run(g, list(arrays))[0]


def r(*shape, positive=False):
    x = RNG.standard_normal(shape)
    return np.abs(x) + 0.1 if positive else x


T = torch.from_numpy
UNARY = [
    (Op.SQRT, torch.sqrt, True), (Op.RSQRT, torch.rsqrt, True), (Op.RECIPROCAL, torch.reciprocal, True),
    (Op.NEG, torch.neg, False), (Op.ABS, torch.abs, False), (Op.EXP, torch.exp, False), (Op.LOG, torch.log, True),
    (Op.TANH, torch.tanh, False), (Op.ERF, torch.erf, False), (Op.SIGMOID, torch.sigmoid, False),
    (Op.SILU, F.silu, False), (Op.GELU, F.gelu, False), (Op.COS, torch.cos, False), (Op.SIN, torch.sin, False),
]


@pytest.mark.parametrize("op, fn, positive", UNARY, ids=[u[0].value for u in UNARY])
def test_unary(op, fn, positive):
    x = r(3, 5, 7, positive=positive)
    np.testing.assert_allclose(one_op(op, [x]), fn(T(x)).numpy(), rtol=1e-12, atol=1e-12)


BINARY = [(Op.ADD, torch.add), (Op.SUB, torch.sub), (Op.MUL, torch.mul), (Op.DIV, torch.div),
          (Op.MAX, torch.maximum), (Op.MIN, torch.minimum), (Op.LESS, torch.lt), (Op.GREATER_EQUAL, torch.ge)]


@pytest.mark.parametrize("op, fn", BINARY, ids=[b[0].value for b in BINARY])
def test_binary_broadcasting(op, fn):
    a, b = r(3, 1, 7), r(5, 1)
    np.testing.assert_allclose(one_op(op, [a, b]), fn(T(a), T(b)).numpy(), rtol=1e-12)


def test_integer_division_truncates_like_onnx():
    a, b = np.array([7, -7, 7, -7]), np.array([2, 2, -2, -2])
    assert one_op(Op.DIV, [a, b]).tolist() == [3, -3, -3, 3]


def test_gelu_tanh_pow_gather_where():
    x = r(3, 5, 7)
    np.testing.assert_allclose(one_op(Op.GELU, [x], {"approximate": "tanh"}), F.gelu(T(x), approximate="tanh").numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(one_op(Op.POW, [np.abs(x), np.array(1.7)]), np.abs(x) ** 1.7)
    idx = RNG.integers(-7, 7, (2, 4))
    np.testing.assert_array_equal(one_op(Op.GATHER, [x, idx], {"axis": 2}), np.take(x, idx, axis=2))
    c = x > 0
    np.testing.assert_array_equal(one_op(Op.WHERE, [c, x, -x]), np.abs(x))
    with pytest.raises(IndexError, match="out of range"):
        one_op(Op.GATHER, [x, np.array([5])], {"axis": 0})


def test_reductions_softmax_norms():
    x = r(3, 5, 7)
    np.testing.assert_allclose(one_op(Op.REDUCE_MEAN, [x], {"axes": [0, 2], "keepdims": False}),
                               T(x).mean((0, 2)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(one_op(Op.REDUCE_SUM, [x], {"axes": [1]}), T(x).sum(1, keepdim=True).numpy(), rtol=1e-12)
    np.testing.assert_allclose(one_op(Op.REDUCE_MAX, [x], {"axes": None, "keepdims": False}), x.max())
    np.testing.assert_allclose(one_op(Op.SOFTMAX, [x], {"axis": 1}), torch.softmax(T(x), 1).numpy(), rtol=1e-12)
    w, b = r(7), r(7)
    np.testing.assert_allclose(one_op(Op.LAYER_NORM, [x, w, b], {"axis": -1, "eps": 1e-5}),
                               F.layer_norm(T(x), (7,), T(w), T(b), 1e-5).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(one_op(Op.RMS_NORM, [x, w], {"eps": 1e-6}),
                               F.rms_norm(T(x), (7,), T(w), 1e-6).numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hq, hk, causal, mask", [(6, 6, False, False), (6, 2, True, False), (4, 1, False, True)])
def test_sdpa_matches_torch(hq, hk, causal, mask):
    q, k, v = r(2, hq, 5, 8), r(2, hk, 9, 8), r(2, hk, 9, 3)
    m = RNG.random((2, 1, 5, 9)) > 0.3 if mask else None
    ins = [q, k, v] + ([m] if mask else [])
    got = one_op(Op.SDPA, ins, {"causal": causal, "scale": 0.37})
    want = F.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=None if m is None else T(m),
                                          is_causal=causal, scale=0.37, enable_gqa=hq != hk).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_movement_ops():
    x = r(3, 5, 7)
    np.testing.assert_array_equal(one_op(Op.TRANSPOSE, [x], {"perm": [2, 0, 1]}), x.transpose(2, 0, 1))
    np.testing.assert_array_equal(one_op(Op.SLICE, [x], {"starts": [-1, 1], "ends": [-9, 5], "axes": [2, 1],
                                                         "steps": [-2, 3]}), x[:, 1:5:3, -1::-2])
    parts = [one_op(Op.SPLIT, [x], {"axis": 2, "sizes": [2, 5]})]
    np.testing.assert_array_equal(parts[0], x[:, :, :2])
    np.testing.assert_array_equal(one_op(Op.UNSQUEEZE, [x], {"axes": [0, -1]}), x[None, ..., None])
    np.testing.assert_array_equal(one_op(Op.TRILU, [x], {"upper": False, "k": 1}), np.tril(x, 1))
    np.testing.assert_array_equal(one_op(Op.CONCAT, [x, x[:, :2]], {"axis": 1}), np.concatenate([x, x[:, :2]], 1))
    y = one_op(Op.EXPAND, [r(3, 1, 7)], extra_consts=[np.array([2, 3, 5, 7])])
    assert y.shape == (2, 3, 5, 7)


def test_executor_rejects_bad_inputs():
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.f32, ("seq", 4)))
    y = g.add_input("y", TensorType(DType.f32, ("seq", 4)))
    g.set_outputs([build(g, Op.ADD, [x.out, y.out]).out])
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(InputError, match="dim 1 must be 4"):
        run(g, [a, np.zeros((3, 5), np.float32)])
    with pytest.raises(InputError, match=r"\(seq\) is 2 but seq = 3"):
        run(g, [a, np.zeros((2, 4), np.float32)])
    with pytest.raises(InputError, match="expected f32"):
        run(g, [a, np.zeros((3, 4), np.int32)])
    with pytest.raises(InputError, match="takes 2 inputs"):
        run(g, [a])
    with pytest.raises(InputError, match="missing"):
        run(g, {"x": a})
