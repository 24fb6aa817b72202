"""The op kinds of the lutc IR. Frontends map ONNX/aten names to these at the border; passes use only these."""
from __future__ import annotations

from enum import Enum


class Op(Enum):
    # graph structure
    INPUT = "input"
    CONST = "const"
    # linear algebra
    MATMUL = "matmul"            # numpy matmul semantics (batched, broadcasting)
    GEMM = "gemm"                # alpha*A'@B' + beta*C with transA/transB
    LINEAR = "linear"            # x @ W.T + b, W[N, K] (torch layout)
    # elementwise binary
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    MAX = "max"
    MIN = "min"
    EQUAL = "equal"
    LESS = "less"
    GREATER = "greater"
    LESS_EQUAL = "less_equal"
    GREATER_EQUAL = "greater_equal"
    AND = "and"
    OR = "or"
    # elementwise unary
    SQRT = "sqrt"
    RSQRT = "rsqrt"
    RECIPROCAL = "reciprocal"
    NEG = "neg"
    ABS = "abs"
    EXP = "exp"
    LOG = "log"
    TANH = "tanh"
    ERF = "erf"
    SIGMOID = "sigmoid"
    SILU = "silu"
    GELU = "gelu"                # attr approximate: "none" | "tanh"
    COS = "cos"
    SIN = "sin"
    NOT = "not"
    IS_NAN = "is_nan"
    CAST = "cast"                # attr dtype
    # ternary
    WHERE = "where"
    # reductions and normalizations
    REDUCE_MEAN = "reduce_mean"  # attrs axes, keepdims
    REDUCE_SUM = "reduce_sum"
    REDUCE_MAX = "reduce_max"
    SOFTMAX = "softmax"          # attr axis
    LAYER_NORM = "layer_norm"    # inputs x, weight[, bias]; attrs axis, eps
    RMS_NORM = "rms_norm"        # inputs x[, weight]; attrs eps
    # data movement
    GATHER = "gather"            # inputs data, indices; attr axis
    GATHER_ND = "gather_nd"      # inputs data, indices[..., r]; attr batch_dims (ONNX GatherND)
    RESHAPE = "reshape"          # inputs data, shape (1-D i64, may be a symbolic const)
    TRANSPOSE = "transpose"      # attr perm
    CONCAT = "concat"            # attr axis
    SLICE = "slice"              # inputs data; attrs starts, ends, axes, steps
    SPLIT = "split"              # attr axis, sizes; one output per piece
    SQUEEZE = "squeeze"          # attr axes
    UNSQUEEZE = "unsqueeze"      # attr axes
    EXPAND = "expand"            # inputs data, shape
    TRILU = "trilu"              # inputs x; attrs upper, k
    # shape computation (folded away when shapes are known symbolically)
    SHAPE = "shape"
    RANGE = "range"              # inputs start, limit, delta
    CONSTANT_OF_SHAPE = "constant_of_shape"  # input shape; attr value
    # fused
    SDPA = "sdpa"                # q, k, v[, mask]; attrs causal, scale; GQA when k/v have fewer heads
    # lookup-table matmul (passes/quantize): tables of activation sums, then lookups by packed weight bits
    LUT_PRECOMPUTE = "lut_precompute"  # x[..., K] -> tables[..., K_pad/g, 2^(g-1)], table_scales, xsum
    LUT_MATMUL = "lut_matmul"    # tables, table_scales, xsum, qweight, scales[, zeros][, bias] -> [..., N]


# Groups of ops that passes and backends treat alike (tinygrad's GroupOp).
class GroupOp:
    Binary = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MAX, Op.MIN, Op.EQUAL, Op.LESS,
                        Op.GREATER, Op.LESS_EQUAL, Op.GREATER_EQUAL, Op.AND, Op.OR})
    Compare = frozenset({Op.EQUAL, Op.LESS, Op.GREATER, Op.LESS_EQUAL, Op.GREATER_EQUAL, Op.AND, Op.OR,
                         Op.NOT, Op.IS_NAN})
    Unary = frozenset({Op.SQRT, Op.RSQRT, Op.RECIPROCAL, Op.NEG, Op.ABS, Op.EXP, Op.LOG, Op.TANH, Op.ERF,
                       Op.SIGMOID, Op.SILU, Op.GELU, Op.COS, Op.SIN, Op.NOT, Op.IS_NAN, Op.CAST})
    Elementwise = Binary | Unary | {Op.WHERE}
    Reduce = frozenset({Op.REDUCE_MEAN, Op.REDUCE_SUM, Op.REDUCE_MAX})
    MatMul = frozenset({Op.MATMUL, Op.GEMM, Op.LINEAR})
    Lut = frozenset({Op.LUT_PRECOMPUTE, Op.LUT_MATMUL})
    Movement = frozenset({Op.RESHAPE, Op.TRANSPOSE, Op.CONCAT, Op.SLICE, Op.SPLIT, Op.SQUEEZE,
                          Op.UNSQUEEZE, Op.EXPAND, Op.GATHER, Op.GATHER_ND})
    Source = frozenset({Op.INPUT, Op.CONST})


# Number of inputs each op accepts: (min, max); None = any.
ARITY: dict[Op, tuple[int, int | None]] = {
    Op.INPUT: (0, 0), Op.CONST: (0, 0),
    Op.MATMUL: (2, 2), Op.GEMM: (2, 3), Op.LINEAR: (2, 3),
    **{o: (2, 2) for o in GroupOp.Binary},
    **{o: (1, 1) for o in GroupOp.Unary},
    Op.WHERE: (3, 3),
    **{o: (1, 1) for o in GroupOp.Reduce},
    Op.SOFTMAX: (1, 1), Op.LAYER_NORM: (1, 3), Op.RMS_NORM: (1, 2),
    Op.GATHER: (2, 2), Op.GATHER_ND: (2, 2), Op.RESHAPE: (2, 2), Op.TRANSPOSE: (1, 1), Op.CONCAT: (1, None),
    Op.SLICE: (1, 1), Op.SPLIT: (1, 1), Op.SQUEEZE: (1, 1), Op.UNSQUEEZE: (1, 1), Op.EXPAND: (2, 2),
    Op.TRILU: (1, 1),
    Op.SHAPE: (1, 1), Op.RANGE: (3, 3), Op.CONSTANT_OF_SHAPE: (1, 1),
    Op.SDPA: (3, 4),
    Op.LUT_PRECOMPUTE: (1, 1), Op.LUT_MATMUL: (5, 7),
}

assert set(ARITY) == set(Op), set(Op) - set(ARITY)
