"""The non-LUT ops of an LLM on the GPU: tensor-expression definitions scheduled by TVM's GPU rules
(``tvm.s_tir.dlight``: RMSNorm, GEMV, reduction, general reduction, then the fallback that always works),
and attention, hand-scheduled in TVMScript (attention.py).

An op is named by its kind and its static sizes (``rms_norm`` over 576 features, ``attention`` with 9/3
heads of 64, ...); rows, sequence and cache lengths stay symbolic, so one function serves prefill and every
decode step. :func:`op_functions` turns the ops a program calls into one IRModule, compiled once per model
(``build.build_module``). Activations are float32 and compact (row-major, no strides).
"""
from __future__ import annotations

import hashlib
import json
from typing import Callable

ELEMENTWISE_UNARY = {"silu", "neg", "exp", "sqrt", "relu", "tanh", "sigmoid", "gelu", "cast"}
ELEMENTWISE_BINARY = {"add", "sub", "mul", "div"}


def op_name(kind: str, params: dict) -> str:
    """A readable, unique function name for ``kind`` at ``params`` (the kernel's static sizes)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{kind}_{digest}"


def _var(name: str):
    from tvm import tirx

    return tirx.Var(name, "int64")


def _i64(*sizes):
    """Static sizes as int64, like the symbolic ones: mixed int32/int64 axes leave casts in the block
    bindings, which dlight's reduction rules cannot analyse."""
    from tvm import tirx

    return [tirx.const(v, "int64") for v in sizes] if len(sizes) > 1 else tirx.const(sizes[0], "int64")


def _unary(params: dict):
    from tvm import te, tirx

    n = _var("n")
    x = te.placeholder((n,), "float32", name="x")
    op = params["op"]

    def f(v):
        if op == "silu":
            return v / (1 + te.exp(-v))
        if op == "sigmoid":
            return 1 / (1 + te.exp(-v))
        if op == "gelu":
            return 0.5 * v * (1 + te.erf(v * 0.7071067811865476))
        if op == "relu":
            return te.max(v, tirx.const(0, "float32"))
        if op == "cast":
            return v
        return {"neg": lambda: -v, "exp": lambda: te.exp(v), "sqrt": lambda: te.sqrt(v),
                "tanh": lambda: te.tanh(v)}[op]()
    y = te.compute((n,), lambda i: f(x[i]), name="y")
    return [x, y]


def _binary(params: dict):
    """``a op b`` over equal shapes (flattened), or ``a[rows, cols] op b[cols]`` (a bias)."""
    from tvm import te

    fn = {"add": lambda u, v: u + v, "sub": lambda u, v: u - v, "mul": lambda u, v: u * v,
          "div": lambda u, v: u / v}[params["op"]]
    if params.get("cols"):
        c = _i64(params["cols"])
        n = _var("n")
        a = te.placeholder((n, c), "float32", name="a")
        b = te.placeholder((c,), "float32", name="b")
        return [a, b, te.compute((n, c), lambda i, j: fn(a[i, j], b[j]), name="y")]
    n = _var("n")
    a = te.placeholder((n,), "float32", name="a")
    b = te.placeholder((n,), "float32", name="b")
    return [a, b, te.compute((n,), lambda i: fn(a[i], b[i]), name="y")]


def _swiglu(params: dict):
    from tvm import te

    n = _var("n")
    g = te.placeholder((n,), "float32", name="gate")
    u = te.placeholder((n,), "float32", name="up")
    return [g, u, te.compute((n,), lambda i: g[i] / (1 + te.exp(-g[i])) * u[i], name="y")]


def _rms_norm(params: dict):
    from tvm import te, tirx

    h, eps = _i64(params["features"]), params["eps"]
    n = _var("n")
    x = te.placeholder((n, h), "float32", name="x")
    w = te.placeholder((h,), "float32", name="w")
    k = te.reduce_axis((0, h), "k")
    ss = te.compute((n,), lambda i: te.sum(x[i, k] * x[i, k], axis=k), name="ss")
    y = te.compute((n, h), lambda i, j: x[i, j] * tirx.rsqrt(ss[i] / h + tirx.const(eps, "float32")) * w[j], name="y")
    return [x, w, y]


def _rope(params: dict):
    """``x * cos + rotate_half(x) * sin`` for x [rows, seq, d] (rows = batch x heads), cos/sin [seq, d]."""
    from tvm import te, tirx

    d, half = _i64(params["head_dim"], params["head_dim"] // 2)
    r, s = _var("r"), _var("s")
    x = te.placeholder((r, s, d), "float32", name="x")
    cos = te.placeholder((s, d), "float32", name="cos")
    sin = te.placeholder((s, d), "float32", name="sin")

    def rot(i, t, j):
        return tirx.if_then_else(j < half, -x[i, t, tirx.min(j + half, d - 1)], x[i, t, tirx.max(j - half, 0)])
    y = te.compute((r, s, d), lambda i, t, j: x[i, t, j] * cos[t, j] + rot(i, t, j) * sin[t, j], name="y")
    return [x, cos, sin, y]


def _embedding(params: dict):
    from tvm import te

    vocab, h = _i64(params["vocab"], params["features"])
    n = _var("n")
    table = te.placeholder((vocab, h), "float32", name="table")
    ids = te.placeholder((n,), "int64", name="ids")
    return [table, ids, te.compute((n, h), lambda i, j: table[ids[i], j], name="y")]


def _linear(params: dict):
    """``x @ W.T`` for a float weight (an lm_head left unquantized)."""
    from tvm import te

    out_f, in_f = _i64(params["out_features"], params["in_features"])
    n = _var("n")
    x = te.placeholder((n, in_f), "float32", name="x")
    w = te.placeholder((out_f, in_f), "float32", name="w")
    k = te.reduce_axis((0, in_f), "k")
    return [x, w, te.compute((n, out_f), lambda i, j: te.sum(x[i, k] * w[j, k], axis=k), name="y")]


BUILDERS: dict[str, Callable[[dict], list]] = {
    "unary": _unary, "binary": _binary, "swiglu": _swiglu, "rms_norm": _rms_norm, "rope": _rope,
    "embedding": _embedding, "linear": _linear,
}


def prim_func(kind: str, params: dict, name: str):
    """The op's PrimFunc: hand-scheduled TVMScript where dlight's rules fall short (attention), else the
    tensor expression, scheduled by dlight."""
    from tvm import te

    from .attention import attention_func

    scripted = {"attention": attention_func}
    if kind in scripted:
        return scripted[kind](params).with_attr("global_symbol", name)
    return te.create_prim_func(BUILDERS[kind](params)).with_attr("global_symbol", name)


def schedule(mod, target):
    """dlight's GPU rules, in the order TVM's own default GPU pipeline tries them."""
    from tvm.s_tir import dlight as dl

    with target:
        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(4), dl.gpu.RMSNorm(),
                                       dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)


def op_module(ops: dict[str, tuple[str, dict]], arch: str, pdl: bool = True):
    """The compiled TVM executable holding every op of ``ops`` (function name -> (kind, params)); ``pdl``: launched
    with programmatic dependent launch where the GPU has it."""
    import tvm

    from .build import pdl_pipeline
    from .dq import PDL_ARCHS

    target = tvm.target.Target({"kind": "cuda", "arch": arch}, host={"kind": "llvm"})
    mod = tvm.IRModule({name: prim_func(kind, params, name) for name, (kind, params) in sorted(ops.items())})
    # on sm_90 every op kernel is launched early (programmatic dependent launch) and waits for its predecessor at
    # entry: the launch latency between the kernels of a decode step overlaps the predecessor's end
    pipeline = pdl_pipeline(wait_at_entry=True) if pdl and arch in PDL_ARCHS else "default"
    return tvm.compile(schedule(mod, target), target=target, tir_pipeline=pipeline)
