"""numpy implementations of every IR op, keyed by op name: the ground truth every backend is tested
against, and the kernels the thin runtime runs for ops without a compiled kernel (numpy only: no compiler).

Each kernel is ``fn(attrs, inputs, dim) -> array | list[array]``; ``dim(d)`` evaluates a (possibly
symbolic) dim attribute with the sizes bound at run time. Kernels also accept object arrays of sympy
values where that makes sense, which is how constant folding evaluates symbolic shape computations.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

# numpy dtypes of the IR's dtype names (bf16 is computed in f32: numpy has none)
DTYPES = {"f16": np.float16, "bf16": np.float32, "f32": np.float32, "f64": np.float64, "i8": np.int8, "u8": np.uint8,
          "i16": np.int16, "i32": np.int32, "i64": np.int64, "bool": np.bool_}

Kernel = Callable[[dict, list, Callable], "np.ndarray | list[np.ndarray]"]
KERNELS: dict[str, Kernel] = {}


def kernel(*ops: str):
    def deco(fn):
        for op in ops:
            KERNELS[op] = fn
        return fn
    return deco


def _is_int(a) -> bool:
    return np.asarray(a).dtype.kind in "iub"


def _div(a, b):
    if np.asarray(a).dtype == object or np.asarray(b).dtype == object:
        return np.asarray(a) // np.asarray(b)
    if _is_int(a) and _is_int(b):  # ONNX integer division truncates toward zero
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.result_type(a, b))
    return np.divide(a, b)


_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": _div, "pow": np.power,
    "max": np.maximum, "min": np.minimum, "equal": np.equal, "less": np.less, "greater": np.greater,
    "less_equal": np.less_equal, "greater_equal": np.greater_equal, "and": np.logical_and,
    "or": np.logical_or,
}

_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    return _erf(x).astype(x.dtype)


def sigmoid(x):
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype)


def gelu(x, approximate="none"):
    if approximate == "tanh":
        return (0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))).astype(x.dtype)
    return (0.5 * x * (1 + erf(x / np.sqrt(2).astype(x.dtype)))).astype(x.dtype)


_UNARY = {
    "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "reciprocal": lambda x: 1 / x, "neg": np.negative,
    "abs": np.abs, "exp": np.exp, "log": np.log, "tanh": np.tanh, "erf": erf, "sigmoid": sigmoid,
    "silu": lambda x: x * sigmoid(x), "cos": np.cos, "sin": np.sin, "not": np.logical_not, "is_nan": np.isnan,
}


def _elementwise(fn):
    return lambda attrs, ins, dim: fn(*ins)


KERNELS.update({op: _elementwise(fn) for op, fn in {**_BINARY, **_UNARY}.items()})


@kernel("gelu")
def _gelu(attrs, ins, dim):
    return gelu(ins[0], attrs.get("approximate", "none"))


@kernel("cast")
def _cast(attrs, ins, dim):
    to = np.dtype(DTYPES[attrs["dtype"]])
    if ins[0].dtype == object and to.kind != "f":
        return ins[0]
    return ins[0].astype(to)


@kernel("matmul")
def _matmul(attrs, ins, dim):
    return np.matmul(ins[0], ins[1])


@kernel("gemm")
def _gemm(attrs, ins, dim):
    a = ins[0].T if attrs.get("transA") else ins[0]
    b = ins[1].T if attrs.get("transB") else ins[1]
    y = attrs.get("alpha", 1.0) * (a @ b)
    if len(ins) > 2:
        y = y + attrs.get("beta", 1.0) * ins[2]
    return y.astype(ins[0].dtype)


@kernel("linear")
def _linear(attrs, ins, dim):
    x = ins[0]
    y = (x.reshape(-1, x.shape[-1]) @ ins[1].T).reshape(x.shape[:-1] + (ins[1].shape[0],))  # 2-D: one BLAS call
    return y + ins[2] if len(ins) > 2 else y


@kernel("linear_f16")
def _linear_f16(attrs, ins, dim):
    """``linear`` over a float16-stored weight (codegen/cpu/lower.py ``_half_weight``), float32 in and out."""
    return _linear(attrs, [ins[0], ins[1].astype(np.float32), *ins[2:]], dim)


@kernel("gather_f16")
def _gather_f16(attrs, ins, dim):
    """Rows of a float16-stored embedding table, as float32."""
    return _gather(attrs, ins, dim).astype(np.float32)


@kernel("where")
def _where(attrs, ins, dim):
    return np.where(ins[0], ins[1], ins[2])


def _axes(attrs):
    axes = attrs.get("axes")
    return None if axes is None else tuple(axes)


@kernel("reduce_mean")
def _rmean(attrs, ins, dim):
    return np.mean(ins[0], axis=_axes(attrs), keepdims=attrs.get("keepdims", True)).astype(ins[0].dtype)


@kernel("reduce_sum")
def _rsum(attrs, ins, dim):
    return np.sum(ins[0], axis=_axes(attrs), keepdims=attrs.get("keepdims", True)).astype(ins[0].dtype)


@kernel("reduce_max")
def _rmax(attrs, ins, dim):
    return np.max(ins[0], axis=_axes(attrs), keepdims=attrs.get("keepdims", True))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0))
    with np.errstate(invalid="ignore"):  # a fully masked row is 0/0 = nan, as in ONNX and torch
        return e / np.sum(e, axis=axis, keepdims=True)


@kernel("softmax")
def _softmax(attrs, ins, dim):
    return softmax(ins[0], attrs.get("axis", -1))


@kernel("layer_norm")
def _layer_norm(attrs, ins, dim):
    x = ins[0]
    axis = attrs.get("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + np.asarray(attrs.get("eps", 1e-5), x.dtype))
    if len(ins) > 1:
        y = y * ins[1]
    if len(ins) > 2:
        y = y + ins[2]
    return y.astype(x.dtype)


@kernel("rms_norm")
def _rms_norm(attrs, ins, dim):
    x = ins[0]
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.asarray(attrs.get("eps", 1e-6), x.dtype))
    return (y * ins[1] if len(ins) > 1 else y).astype(x.dtype)


@kernel("gather")
def _gather(attrs, ins, dim):
    data, idx = ins
    axis = attrs.get("axis", 0)
    n = data.shape[axis]
    if idx.size and (idx.max() >= n or idx.min() < -n):
        raise IndexError(f"gather: index out of range [{-n}, {n}) (got {idx.min()}..{idx.max()})")
    return np.take(data, idx, axis=axis)


@kernel("gather_nd")
def _gather_nd(attrs, ins, dim):
    data, idx = ins
    b = attrs.get("batch_dims", 0)
    if b:
        raise NotImplementedError("gather_nd with batch_dims > 0")
    r = idx.shape[-1]
    for axis in range(r):
        n = data.shape[axis]
        if idx[..., axis].size and (idx[..., axis].max() >= n or idx[..., axis].min() < -n):
            raise IndexError(f"gather_nd: index out of range on axis {axis}")
    return data[tuple(np.moveaxis(idx, -1, 0))]


@kernel("reshape")
def _reshape(attrs, ins, dim):
    spec = ins[1] if isinstance(ins[1], list) else np.asarray(ins[1]).reshape(-1).tolist()
    x, shape = ins[0], [dim(d) if isinstance(d, str) else int(d) for d in spec]
    if not attrs.get("allowzero"):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@kernel("transpose")
def _transpose(attrs, ins, dim):
    return np.transpose(ins[0], attrs.get("perm"))


@kernel("concat")
def _concat(attrs, ins, dim):
    return np.concatenate(ins, axis=attrs["axis"])


@kernel("slice")
def _slice(attrs, ins, dim):
    x = ins[0]
    axes = attrs.get("axes") or list(range(len(attrs["starts"])))
    steps = attrs.get("steps") or [1] * len(axes)
    idx = [slice(None)] * x.ndim
    for ax, s, e, st in zip(axes, attrs["starts"], attrs["ends"], steps):
        s, e = dim(s), dim(e)
        if st < 0 and e < -x.shape[ax]:
            e = None  # ONNX: an end below -dim with a negative step means "through index 0"
        idx[ax] = slice(s, e, st)
    return x[tuple(idx)]


@kernel("split")
def _split(attrs, ins, dim):
    x, axis = ins[0], attrs["axis"] % ins[0].ndim
    out, start = [], 0
    for size in (dim(s) for s in attrs["sizes"]):
        out.append(x[(slice(None),) * axis + (slice(start, start + size),)])
        start += size
    return out


@kernel("squeeze")
def _squeeze(attrs, ins, dim):
    axes = attrs.get("axes")
    return np.squeeze(ins[0], axis=None if axes is None else tuple(axes))


@kernel("unsqueeze")
def _unsqueeze(attrs, ins, dim):
    return np.expand_dims(ins[0], tuple(attrs["axes"]))


@kernel("expand")
def _expand(attrs, ins, dim):
    x = ins[0]
    target = [int(dim(d)) for d in np.asarray(ins[1]).reshape(-1).tolist()]
    shape = np.broadcast_shapes(x.shape, tuple(target))
    return np.array(np.broadcast_to(x, shape))


@kernel("trilu")
def _trilu(attrs, ins, dim):
    k = attrs.get("k", 0)
    return np.triu(ins[0], k) if attrs.get("upper", True) else np.tril(ins[0], k)


@kernel("shape")
def _shape(attrs, ins, dim):
    rank = ins[0].ndim
    return np.array(ins[0].shape[attrs.get("start", 0):attrs.get("end", rank)], dtype=np.int64)


@kernel("range")
def _range(attrs, ins, dim):
    start, limit, delta = (np.asarray(a).reshape(-1)[0] for a in ins)
    if isinstance(start, np.floating):  # dim() would truncate np.float32 values to ints
        return np.arange(start, limit, delta, dtype=start.dtype)
    return np.arange(dim(start), dim(limit), dim(delta), dtype=np.asarray(ins[0]).dtype)


@kernel("constant_of_shape")
def _constant_of_shape(attrs, ins, dim):
    shape = [int(dim(d)) for d in np.asarray(ins[0]).reshape(-1).tolist()]
    return np.full(shape, attrs.get("value", 0.0), dtype=DTYPES[attrs.get("dtype", "f32")])


def sdpa(q, k, v, mask=None, causal=False, scale=None, align="top_left"):
    """Scaled dot-product attention with torch's semantics; GQA when k/v have fewer heads than q.

    ``align="bottom_right"`` places the L queries at the end of the S keys (query i sees keys up to
    S - L + i): the queries of a decode step after S - L cached positions. torch's ``is_causal`` is top-left."""
    if q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, rep, axis=-3), np.repeat(v, rep, axis=-3)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ np.swapaxes(k, -1, -2)) * np.asarray(scale, q.dtype)
    L, S = q.shape[-2], k.shape[-2]
    if causal:
        s = np.where(np.tril(np.ones((L, S), bool), S - L if align == "bottom_right" else 0), s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
    p = softmax(s, -1)
    p = np.where(np.isnan(p), 0, p)  # fully masked rows give 0, as torch's safe softmax does
    return (p @ v).astype(q.dtype)


@kernel("sdpa")
def _sdpa(attrs, ins, dim):
    return sdpa(*ins[:3], mask=ins[3] if len(ins) > 3 else None, causal=attrs.get("causal", False),
                scale=attrs.get("scale"), align=attrs.get("causal_align", "top_left"))
