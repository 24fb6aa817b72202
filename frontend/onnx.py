"""ONNX (default domain, opsets 17-21) -> lutc IR.

Every ONNX op maps to IR ops through one small handler in ``HANDLERS``; ONNX conventions that the IR does not
share (Reshape 0, negative Gather indices, attribute-vs-input axes, [in, out] MatMul weights) are converted
here, at the border. Large initializers become weights, stored once: the exporter's transposed copy of a tied
embedding is recognised by content, and torch.onnx (dynamo) metadata names MatMul weights after their module.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..ir import dims as D
from ..ir.graph import INLINE_CONST_LIMIT, Graph, Ref
from ..ir.ops import Op
from ..ir.shapes import ShapeError, build
from ..ir.types import DType, TensorType
from .builder import emit
from .errors import FrontendError, UnsupportedOpError

OPSETS = range(17, 22)
_DEFAULT_DOMAINS = ("", "ai.onnx")
_DTYPES = {TensorProto.FLOAT: DType.f32, TensorProto.FLOAT16: DType.f16, TensorProto.BFLOAT16: DType.bf16,
           TensorProto.DOUBLE: DType.f64, TensorProto.INT8: DType.i8, TensorProto.UINT8: DType.u8,
           TensorProto.INT16: DType.i16, TensorProto.INT32: DType.i32, TensorProto.INT64: DType.i64,
           TensorProto.BOOL: DType.bool}


@dataclass
class OnnxNode:
    """What a handler sees of an ONNX node: inputs resolved to refs (None where an optional one is absent)."""
    op_type: str
    name: str
    inputs: list
    input_names: list[str]
    attrs: dict
    outputs: list[str]

    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None


class Context:
    def __init__(self, g: Graph, opset: int):
        self.g, self.opset = g, opset
        self.name = "v"                       # base name of the nodes the current handler emits
        self.values: dict[str, Ref] = {}      # ONNX value name -> ref
        self.inits: dict[str, tuple] = {}     # initializer name -> (weight key or None, array)
        self.transposed: set[str] = set()     # initializers stored as W[out, in]: only MatMul reads them
        self._weights: dict[str, Ref] = {}    # weight key -> its const
        self.lut_tables: dict = {}            # shared lut_precompute per activation (MatMulNBits)
        self.table_dtype = "int8"

    def value(self, name: str, user: str) -> Ref:
        if name in self.values:
            return self.values[name]
        if name not in self.inits:
            raise FrontendError(f"ONNX node {user!r} uses value {name!r}, which no earlier node, graph input or "
                                "initializer defines")
        key, arr = self.inits[name]
        if key is None:
            ref = self.g.add_const(arr, name=name).out
        else:
            if key not in self._weights:
                self._weights[key] = self.g.add_const(arr, weight_key=key, name=key).out
            ref = self._weights[key]
        self.values[name] = ref
        return ref

    def emit(self, op: Op, inputs, attrs: dict | None = None) -> list[Ref]:
        if any(self.g.node(r.node).op is Op.CONST and "ref" in self.g.node(r.node).attrs for r in inputs):
            # never fold ops on stored weights: a folded Transpose would be a second copy of the weight
            node = build(self.g, op, inputs, attrs, name=self.name)
            return [Ref(node.name, i) for i in range(len(node.types))]
        return emit(self.g, op, inputs, attrs, name=self.name)

    def const(self, value, dtype: DType | None = None) -> Ref:
        value = np.asarray(value, dtype=object if any(isinstance(v, str) for v in np.ravel(value)) else None)
        return self.g.add_const(value, dtype=dtype, name=self.name + "_c").out

    def ints(self, n: OnnxNode, i: int) -> list:
        """Input ``i`` as python ints (and str for symbolic dims); it must be constant once shapes fold."""
        v = self.g.const_value(n.inputs[i])
        if v is None:
            raise FrontendError(f"ONNX {n.op_type} node {n.name!r}: input {i} ({n.input_names[i]!r}) must be a "
                                "constant or a computation on shapes that folds to one")
        return [int(x) if isinstance(x, (int, np.integer)) else str(x) for x in v.reshape(-1).tolist()]

    def type(self, ref: Ref) -> TensorType:
        return self.g.type_of(ref)


# -- handlers: (ctx, node) -> output refs -------------------------------------------------------------------
def _same(op: Op):
    return lambda ctx, n: ctx.emit(op, n.inputs)


def _variadic(op: Op):  # Max/Min/Sum take any number of inputs in ONNX
    def handler(ctx, n):
        out = n.inputs[0]
        for x in n.inputs[1:]:
            out = ctx.emit(op, [out, x])[0]
        return [out]
    return handler


def _identity(ctx, n):
    return [n.inputs[0]]


def _pow(ctx, n):  # ONNX Pow keeps the base's dtype, whatever the exponent's
    out = ctx.emit(Op.POW, n.inputs)[0]
    base = ctx.type(n.inputs[0]).dtype
    return ctx.emit(Op.CAST, [out], {"dtype": base.value}) if ctx.type(out).dtype != base else [out]


def _relu(ctx, n):
    return ctx.emit(Op.MAX, [n.inputs[0], ctx.const(0, ctx.type(n.inputs[0]).dtype)])


def _cast(ctx, n):
    return ctx.emit(Op.CAST, [n.inputs[0]], {"dtype": _dtype(n.attrs["to"], f"ONNX Cast node {n.name!r}").value})


def _cast_like(ctx, n):
    return ctx.emit(Op.CAST, [n.inputs[0]], {"dtype": ctx.type(n.inputs[1]).dtype.value})


def _matmul(ctx, n):
    a, b = n.inputs
    if n.input_names[1] in ctx.transposed:  # the initializer was stored as torch's W[out, in]
        return ctx.emit(Op.LINEAR, [a, b])
    src = ctx.g.node(b.node)
    if src.op is Op.TRANSPOSE and src.attrs["perm"] == [1, 0] and ctx.g.const_value(src.inputs[0]) is not None:
        return ctx.emit(Op.LINEAR, [a, src.inputs[0]])  # x @ W.T of an unoptimized export
    return ctx.emit(Op.MATMUL, [a, b])


def _gemm(ctx, n):
    defaults = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
    attrs = {k: n.attrs[k] for k in defaults if n.attrs.get(k, defaults[k]) != defaults[k]}
    return ctx.emit(Op.GEMM, [x for x in n.inputs if x is not None], attrs)


def _unpack_bits(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """uint8 [..., bytes] -> [..., count] values of ``bits`` bits, low bits first (MatMulNBits packing)."""
    per = 8 // bits
    vals = (data[..., None] >> (np.arange(per, dtype=np.uint8) * bits)) & ((1 << bits) - 1)
    return vals.reshape(data.shape[:-1] + (-1,))[..., :count]


def _matmul_nbits(ctx, n):
    """com.microsoft::MatMulNBits: the blocks' codes, scales and zero points become a LUT weight as they are."""
    from ..passes.quantize.config import LayerQuant
    from ..passes.quantize.rewrite import add_quantized_weight, emit_lut_matmul
    from ..passes.quantize.weight import QuantizedWeight

    k, nout, bits, bs = (n.attrs[a] for a in ("K", "N", "bits", "block_size"))
    if bits not in (2, 4, 8):
        raise FrontendError(f"MatMulNBits node {n.name!r}: bits={bits} is not supported (2, 4, 8 are)")
    if n.has(4) or any(n.has(i) and ctx.g.const_value(n.inputs[i]) is None for i in (1, 2, 3)):
        raise FrontendError(f"MatMulNBits node {n.name!r}: weights, scales and zero points must be initializers, "
                            "and g_idx (act-order) is not supported")
    blocks = -(-k // bs)
    codes = _unpack_bits(ctx.g.const_value(n.inputs[1]).reshape(nout, blocks, -1), bits, bs).reshape(nout, -1)
    scales = ctx.g.const_value(n.inputs[2]).reshape(nout, blocks)
    if not n.has(3):
        zeros = np.full((nout, blocks), 1 << (bits - 1), np.float32)
    else:
        zp = ctx.g.const_value(n.inputs[3])
        zeros = (zp.reshape(nout, blocks) if zp.dtype != np.uint8
                 else _unpack_bits(zp.reshape(nout, -1), bits, blocks)).astype(np.float32)
    dtype = "f16" if scales.dtype == np.float16 else "f32"
    qw = QuantizedWeight(codes.astype(np.uint8), scales, zeros.astype(scales.dtype),
                         LayerQuant(bits=bits, group_size=bs, scale_dtype=dtype, table_dtype=ctx.table_dtype), k)
    key = ctx.g.fresh_weight_key(n.input_names[1])
    bias = n.inputs[5] if n.has(5) else None
    return [emit_lut_matmul(ctx.g, n.inputs[0], qw, add_quantized_weight(ctx.g, key, qw), bias, ctx.lut_tables,
                            ctx.name)]


def _reduce(op: Op):
    def handler(ctx, n):
        axes = ctx.ints(n, 1) if n.has(1) else n.attrs.get("axes")  # an input from opset 18 (ReduceSum: 13)
        if not axes and n.attrs.get("noop_with_empty_axes"):
            return [n.inputs[0]]
        attrs = {"keepdims": bool(n.attrs.get("keepdims", 1))}
        if axes:  # no axes: reduce over all of them, as the IR does when "axes" is absent
            attrs["axes"] = list(axes)
        return ctx.emit(op, [n.inputs[0]], attrs)
    return handler


def _softmax(ctx, n):
    return ctx.emit(Op.SOFTMAX, n.inputs, {"axis": n.attrs.get("axis", -1)})


def _layer_norm(ctx, n):
    return ctx.emit(Op.LAYER_NORM, [x for x in n.inputs if x is not None],
                    {"axis": n.attrs.get("axis", -1), "eps": n.attrs.get("epsilon", 1e-5)})


def _gelu(ctx, n):
    return ctx.emit(Op.GELU, n.inputs, {"approximate": n.attrs.get("approximate", "none")})


def _gather(ctx, n):
    data, idx = n.inputs
    axis = n.attrs.get("axis", 0)
    v, dim = ctx.g.const_value(idx), ctx.type(data).shape[axis]
    if v is not None and v.dtype != object and isinstance(dim, int) and (v < 0).any():
        idx = ctx.const(np.where(v < 0, v + dim, v))  # ONNX counts negative indices from the end
    return ctx.emit(Op.GATHER, [data, idx], {"axis": axis})


def _gather_nd(ctx, n):
    return ctx.emit(Op.GATHER_ND, n.inputs, {"batch_dims": n.attrs.get("batch_dims", 0)})


def _reshape(ctx, n):
    x, shape = n.inputs
    target = ctx.ints(n, 1)
    if n.attrs.get("allowzero"):
        return ctx.emit(Op.RESHAPE, [x, shape], {"allowzero": True} if 0 in target else None)
    if 0 in target:  # ONNX: 0 copies the input's dim; the IR reshape gets the dim itself
        dims = ctx.type(x).shape
        shape = ctx.const([dims[i] if d == 0 else d for i, d in enumerate(target)], DType.i64)
    return ctx.emit(Op.RESHAPE, [x, shape])


def _transpose(ctx, n):
    rank = ctx.type(n.inputs[0]).rank
    return ctx.emit(Op.TRANSPOSE, n.inputs, {"perm": list(n.attrs.get("perm", range(rank - 1, -1, -1)))})


def _concat(ctx, n):
    return ctx.emit(Op.CONCAT, n.inputs, {"axis": n.attrs["axis"]})


def _slice(ctx, n):
    starts, ends = ctx.ints(n, 1), ctx.ints(n, 2)
    axes = ctx.ints(n, 3) if n.has(3) else list(range(len(starts)))
    steps = ctx.ints(n, 4) if n.has(4) else [1] * len(starts)
    return ctx.emit(Op.SLICE, [n.inputs[0]], {"starts": starts, "ends": ends, "axes": axes, "steps": steps})


def _split(ctx, n):
    x = n.inputs[0]
    t = ctx.type(x)
    axis = n.attrs.get("axis", 0) % t.rank
    if n.has(1):
        sizes = ctx.ints(n, 1)
    else:  # opset 18 num_outputs (or one piece per output): equal pieces, the last one smaller
        k, d = n.attrs.get("num_outputs", len(n.outputs)), t.shape[axis]
        chunk = -(-d // k) if isinstance(d, int) else D.floordiv(d, k)
        sizes = [chunk] * (k - 1) + [D.sub(d, D.mul(chunk, k - 1))]
    return ctx.emit(Op.SPLIT, [x], {"axis": axis, "sizes": sizes})


def _squeeze(ctx, n):
    return ctx.emit(Op.SQUEEZE, [n.inputs[0]], {"axes": ctx.ints(n, 1)} if n.has(1) else None)


def _unsqueeze(ctx, n):
    return ctx.emit(Op.UNSQUEEZE, [n.inputs[0]], {"axes": ctx.ints(n, 1)})


def _expand(ctx, n):
    return ctx.emit(Op.EXPAND, n.inputs)


def _trilu(ctx, n):
    k = ctx.ints(n, 1)[0] if n.has(1) else 0
    return ctx.emit(Op.TRILU, [n.inputs[0]], {"upper": bool(n.attrs.get("upper", 1)), "k": k})


def _shape(ctx, n):
    attrs = {k: n.attrs[k] for k in ("start", "end") if k in n.attrs}
    return ctx.emit(Op.SHAPE, n.inputs, attrs)


def _constant_of_shape(ctx, n):
    value = n.attrs.get("value")
    arr = _tensor(value, f"ONNX node {n.name!r}") if value is not None else np.zeros(1, np.float32)
    return ctx.emit(Op.CONSTANT_OF_SHAPE, n.inputs, {"value": arr.reshape(-1)[0].item(),
                                                      "dtype": DType.from_numpy(arr.dtype).value})


def _constant(ctx, n):
    (kind, v), = n.attrs.items()
    if kind == "value":
        arr = _tensor(v, f"ONNX node {n.name!r}")
    elif kind == "sparse_value":
        vals, idx = numpy_helper.to_array(v.values), numpy_helper.to_array(v.indices)
        arr = np.zeros(tuple(v.dims), vals.dtype)
        if idx.ndim == 1:  # linearized indices
            arr.reshape(-1)[idx] = vals
        else:
            arr[tuple(idx.T)] = vals
    elif kind in ("value_float", "value_floats"):
        arr = np.asarray(v, np.float32)
    elif kind in ("value_int", "value_ints"):
        arr = np.asarray(v, np.int64)
    else:
        raise FrontendError(f"ONNX Constant node {n.name!r}: {kind} constants are not supported")
    return [ctx.g.add_const(arr, name=ctx.name).out]


# ONNX op type -> handler; other domains are keyed "domain::OpType".
HANDLERS = {
    "com.microsoft::MatMulNBits": _matmul_nbits,
    "MatMul": _matmul, "Gemm": _gemm,
    "Add": _same(Op.ADD), "Sub": _same(Op.SUB), "Mul": _same(Op.MUL), "Div": _same(Op.DIV), "Pow": _pow,
    "Max": _variadic(Op.MAX), "Min": _variadic(Op.MIN), "Sum": _variadic(Op.ADD),
    "Equal": _same(Op.EQUAL), "Less": _same(Op.LESS), "Greater": _same(Op.GREATER),
    "LessOrEqual": _same(Op.LESS_EQUAL), "GreaterOrEqual": _same(Op.GREATER_EQUAL),
    "And": _same(Op.AND), "Or": _same(Op.OR), "Not": _same(Op.NOT),
    "Sqrt": _same(Op.SQRT), "Reciprocal": _same(Op.RECIPROCAL), "Neg": _same(Op.NEG), "Abs": _same(Op.ABS),
    "Exp": _same(Op.EXP), "Log": _same(Op.LOG), "Tanh": _same(Op.TANH), "Erf": _same(Op.ERF),
    "Sigmoid": _same(Op.SIGMOID), "Cos": _same(Op.COS), "Sin": _same(Op.SIN), "IsNaN": _same(Op.IS_NAN),
    "Relu": _relu, "Gelu": _gelu, "Cast": _cast, "CastLike": _cast_like, "Identity": _identity,
    "Dropout": _identity, "Where": _same(Op.WHERE),
    "ReduceMean": _reduce(Op.REDUCE_MEAN), "ReduceSum": _reduce(Op.REDUCE_SUM), "ReduceMax": _reduce(Op.REDUCE_MAX),
    "Softmax": _softmax, "LayerNormalization": _layer_norm,
    "Gather": _gather, "GatherND": _gather_nd, "Reshape": _reshape, "Transpose": _transpose, "Concat": _concat,
    "Slice": _slice, "Split": _split, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Expand": _expand,
    "Trilu": _trilu, "Shape": _shape, "Range": _same(Op.RANGE), "ConstantOfShape": _constant_of_shape,
    "Constant": _constant,
}


# -- import -------------------------------------------------------------------------------------------------
def import_onnx(model, table_dtype: str = "int8") -> Graph:
    """Import an ONNX model (a path or a ``ModelProto``) into a lutc graph.

    ``table_dtype`` is the table format of LUT ops made from already-quantized weights (MatMulNBits)."""
    model, path = _load(model)
    opset = _check(model, path)
    base_dir = str(path.parent) if path else ""
    graph = model.graph
    g = Graph(_NAME.sub("_", graph.name) or "main")
    ctx = Context(g, opset)
    ctx.table_dtype = table_dtype
    ctx.inits, ctx.transposed = _plan_initializers(graph, base_dir)
    for vi in graph.input:
        if vi.name not in ctx.inits:  # an input with an initializer is a constant with a default
            ctx.values[vi.name] = g.add_input(vi.name, _input_type(vi)).out
    for i, node in enumerate(graph.node):
        _import_node(ctx, node, i)
    g.set_outputs([ctx.value(o.name, "graph output") for o in graph.output], [o.name for o in graph.output])
    from ..passes.dce import eliminate_dead_code

    eliminate_dead_code(g)  # what folded away (shape computations, consumed initializers)
    return g


def _import_node(ctx: Context, node, index: int) -> None:
    label = node.name or (node.output[0] if node.output else f"#{index}")
    n = OnnxNode(node.op_type, label, [ctx.value(x, label) if x else None for x in node.input], list(node.input),
                 {a.name: _attr(a) for a in node.attribute}, list(node.output))
    ctx.name = next((o for o in node.output if o), label)
    try:
        outs = HANDLERS[_key(node)](ctx, n)
    except FrontendError:
        raise
    except (ShapeError, ValueError, TypeError, KeyError, IndexError, ArithmeticError) as e:
        raise FrontendError(f"ONNX {node.op_type} node {label!r}: {e}") from e
    for i, name in enumerate(node.output):
        if name and i >= len(outs):
            raise FrontendError(f"ONNX {node.op_type} node {label!r}: output {i} ({name!r}) is not supported")
        if name:
            ctx.values[name] = outs[i]


def _load(model) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(model, onnx.ModelProto):
        return model, None
    path = Path(model)
    if not path.is_file():
        raise FrontendError(f"cannot read ONNX model {str(path)!r}: no such file")
    try:  # external data is read per initializer, relative to the model's folder
        return onnx.load(str(path), load_external_data=False), path
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning, ... on garbage
        raise FrontendError(f"{str(path)!r} is not a readable ONNX model ({type(e).__name__}: {e})") from None


def _check(model: onnx.ModelProto, path: Path | None) -> int:
    if not model.HasField("graph"):
        raise FrontendError("not an ONNX model: it has no graph")
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    if opset not in OPSETS:
        raise FrontendError(f"the model uses opset {opset} of the default ONNX domain; lutc reads opsets "
                            f"{OPSETS.start}-{OPSETS.stop - 1} (onnx.version_converter can convert it)")
    for i, node in enumerate(model.graph.node):  # before the checker, which rejects unknown ops without a list
        if _key(node) not in HANDLERS:
            raise UnsupportedOpError(_key(node), node.name or (node.output[0] if node.output else f"#{i}"),
                                     HANDLERS, _location(node, i, model.graph.name), frontend="ONNX")
    try:  # given the path, the checker reads the file itself instead of a Python copy of the weights
        onnx.checker.check_model(str(path) if path else model)
    except Exception as e:
        raise FrontendError(f"invalid ONNX model: {str(e).splitlines()[0]}") from None
    return opset


def _key(node) -> str:
    return node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"


def _location(node, index: int, graph_name: str) -> str:
    """Where the node came from: the torch source line the exporter recorded, else its place in the graph."""
    meta = {p.key: p.value for p in node.metadata_props}
    lines = re.findall(r'File "([^"]+)", line (\d+)', meta.get("pkg.torch.onnx.stack_trace", ""))
    return f"{lines[-1][0]}:{lines[-1][1]}" if lines else f"node #{index} of graph {graph_name!r}"


def _attr(a):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode() for s in v]
    return v


def _dtype(code: int, what: str) -> DType:
    if code not in _DTYPES:
        name = TensorProto.DataType.Name(code) if code in TensorProto.DataType.values() else code
        raise FrontendError(f"{what}: ONNX dtype {name} is not supported")
    return _DTYPES[code]


def _tensor(t: TensorProto, what: str, base_dir: str = "") -> np.ndarray:
    dtype = _dtype(t.data_type, what)
    try:
        arr = numpy_helper.to_array(t, base_dir=base_dir)
    except Exception as e:  # missing external data file, bad sizes
        raise FrontendError(f"cannot read tensor {t.name!r}: {e}") from None
    return arr.astype(np.float32) if dtype is DType.bf16 else arr  # numpy has no bf16: computed in f32


_NAME = re.compile(r"\W")


def _sym(name: str) -> str:
    s = _NAME.sub("_", name.strip())
    return s if s[:1].isalpha() or s[:1] == "_" else "d_" + s


def _input_type(vi) -> TensorType:
    t = vi.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        raise FrontendError(f"graph input {vi.name!r} must be a tensor of known rank")
    dims = [d.dim_value if d.HasField("dim_value") else _sym(d.dim_param) if d.dim_param else f"{_sym(vi.name)}_{i}"
            for i, d in enumerate(t.tensor_type.shape.dim)]
    return TensorType(_dtype(t.tensor_type.elem_type, f"graph input {vi.name!r}"), dims)


def _plan_initializers(graph, base_dir: str) -> tuple[dict[str, tuple], set[str]]:
    """initializer -> (weight key or None when inline, array); and the initializers stored transposed.

    A 2-D initializer read only as MatMul's B is torch's ``W.T`` (the exporter folded the transpose): it is
    stored as ``W[out, in]`` and imported as ``linear``. Equal arrays share one key, so a tied embedding and its
    exported transposed lm_head copy are one weight.
    """
    uses = defaultdict(list)
    for node in graph.node:
        for i, x in enumerate(node.input):
            uses[x].append((node, i))
    outputs = {o.name for o in graph.output}
    arrays = {t.name: _tensor(t, f"initializer {t.name!r}", base_dir) for t in graph.initializer}
    linear = {name for name, a in arrays.items()
              if a.ndim == 2 and a.size > INLINE_CONST_LIMIT and uses[name] and name not in outputs
              and all(_key(n) == "MatMul" and i == 1 for n, i in uses[name])}
    plan, stored, taken = {}, defaultdict(list), set()  # stored: fingerprint -> [(key, array)]
    for name in sorted(arrays, key=lambda k: k in linear):  # real names claim their keys first
        a = arrays[name]
        if a.size <= INLINE_CONST_LIMIT:
            plan[name] = (None, a)
            continue
        key = name
        if name in linear:
            a = np.ascontiguousarray(a.T)
            key = _module_weight(uses[name]) or name
        # a few sampled elements find the candidates; only those are compared in full
        fp = (a.dtype.str, a.shape, a.flat[np.linspace(0, a.size - 1, 64).astype(np.int64)].tobytes())
        match = next((kb for kb in stored[fp] if np.array_equal(a, kb[1])), None)
        if match is None:
            k, i = key, 1
            while k in taken:
                k, i = f"{key}_{i}", i + 1
            match = (k, a)
            stored[fp].append(match)
            taken.add(k)
        plan[name] = match
    return plan, linear


def _module_weight(uses) -> str | None:
    """``<module>.weight`` when torch.onnx's metadata says every use is that nn.Linear's aten.linear."""
    names = set()
    for node, _ in uses:
        meta = {p.key: p.value for p in node.metadata_props}
        try:
            scopes = ast.literal_eval(meta["pkg.torch.onnx.name_scopes"])
            classes = ast.literal_eval(meta["pkg.torch.onnx.class_hierarchy"])
        except (KeyError, ValueError, SyntaxError):
            return None
        if len(scopes) < 2 or not scopes[-2] or not classes or not str(classes[-1]).startswith("aten.linear"):
            return None
        names.add(scopes[-2] + ".weight")
    return names.pop() if len(names) == 1 else None


__all__ = ["import_onnx", "HANDLERS", "OPSETS"]
