"""torch frontend: ``torch.export`` programs and ``torch.fx`` graphs -> lutc IR.

An ``nn.Module`` is exported with ``torch.export`` (an aten-level graph); an ``ExportedProgram`` is read as
is; an ``fx.GraphModule`` (``torch.fx.symbolic_trace``) is translated directly, its torch-level calls
(``F.silu``, ``x.view(...)``, ``torch.matmul``, ``nn.Linear`` ...) resolved to the aten op of the same
name. Either way each aten op maps to a small handler in ``HANDLERS``: this file is the only place that
knows torch's op names.

Sizes are python values, never IR nodes: ``int`` or :class:`SymDim` (a symbolic dim such as ``"seq"``).
In exported graphs they come from the sympy expression torch recorded for each SymInt (its symbols renamed
to the user's ``dynamic_dims``), in fx graphs from the lutc types, so ``x.size(1) * 8`` is simply ``8*seq``.
"""
from __future__ import annotations

import functools
import inspect
import operator
import os
import re
from types import SimpleNamespace

import numpy as np
import sympy
import torch
import torch.nn.functional as F
from torch import nn
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.node import map_arg

from ..ir import dims as D
from ..ir.graph import INLINE_CONST_LIMIT, Graph, Ref
from ..ir.ops import Op
from ..ir.shapes import ShapeError
from ..ir.types import DType, TensorType
from ..passes.dce import eliminate_dead_code
from .builder import emit
from .errors import FrontendError, UnsupportedOpError

aten = torch.ops.aten
INT64_MAX = 2**63 - 1
_DTYPES = {torch.float16: DType.f16, torch.bfloat16: DType.bf16, torch.float32: DType.f32,
           torch.float64: DType.f64, torch.int8: DType.i8, torch.uint8: DType.u8, torch.int16: DType.i16,
           torch.int32: DType.i32, torch.int64: DType.i64, torch.bool: DType.bool}
_TORCH_DTYPES = {v: k for k, v in _DTYPES.items()}


class SymDim(str):
    """A symbolic size: a ``str`` for the IR, told apart from string arguments when binding overloads."""


def _dim(d):
    return SymDim(d) if isinstance(d, str) else int(d)


def _plain(v):
    """Attribute values as plain JSON data: a SymDim is written as the str it is."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v) if isinstance(v, SymDim) else v


def _dtype(t) -> DType:
    if t not in _DTYPES:
        raise FrontendError(f"torch dtype {t} has no lutc equivalent")
    return _DTYPES[t]


# ------------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------------
def import_torch(model, example_inputs=None, dynamic_dims: dict | None = None) -> Graph:
    """An ``ExportedProgram``, an ``fx.GraphModule`` or an ``nn.Module`` (exported here) -> lutc Graph.

    ``dynamic_dims`` names symbolic axes: ``{"input_ids": {1: "seq"}}``; equal names are the same dim.
    """
    dynamic_dims = {k: dict(v) for k, v in (dynamic_dims or {}).items()}
    if isinstance(model, torch.export.ExportedProgram):
        return _Importer(dynamic_dims).exported(model)
    if isinstance(model, torch.fx.GraphModule):
        return _Importer(dynamic_dims).graph_module(model, example_inputs)
    if isinstance(model, nn.Module):
        return _Importer(dynamic_dims).exported(export(model, example_inputs, dynamic_dims))
    raise FrontendError(f"cannot import a {type(model).__name__}: expected an nn.Module, ExportedProgram "
                        "or fx.GraphModule")


def export(model: nn.Module, example_inputs, dynamic_dims: dict | None = None) -> torch.export.ExportedProgram:
    """``torch.export`` with ``dynamic_dims`` turned into ``dynamic_shapes`` (one ``Dim`` per name)."""
    if example_inputs is None:
        raise FrontendError("importing an nn.Module needs example_inputs (a tuple, or a dict of keyword inputs)")
    if isinstance(example_inputs, dict):
        args, kwargs = (), dict(example_inputs)
    else:
        args, kwargs = (tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)), {}
    dynamic_dims = dynamic_dims or {}
    names = list(inspect.signature(model.forward).bind(*args, **kwargs).arguments)
    kwargs = {n: kwargs[n] for n in names if n in kwargs}  # graph inputs in the order of forward's signature
    if set(dynamic_dims) - set(names):
        raise FrontendError(f"dynamic_dims names inputs {sorted(set(dynamic_dims) - set(names))}; "
                            f"the model takes {names}")
    # min=2: torch specializes sizes 0 and 1, so a dynamic dim must be at least 2
    dims = {n: torch.export.Dim(n, min=2) for axes in dynamic_dims.values() for n in axes.values()}
    shapes = {name: {ax: dims[n] for ax, n in dynamic_dims[name].items()} if name in dynamic_dims else None
              for name in names}
    try:
        with torch.no_grad():
            return torch.export.export(model, args, kwargs, dynamic_shapes=shapes if dynamic_dims else None)
    except Exception as e:  # torch's messages are pages long; the first line says what went wrong
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise FrontendError(f"torch.export failed: {first}") from e


# ------------------------------------------------------------------------------------------------------
# the importer: graph state shared by the handlers
# ------------------------------------------------------------------------------------------------------
class _Importer:
    def __init__(self, dynamic_dims: dict):
        self.g = Graph()
        self.dynamic_dims = dynamic_dims
        self.symbols: dict[sympy.Symbol, str] = {}  # torch's s0, s1 -> the user's dim names
        self.params: dict[tuple, str] = {}          # tensor identity -> weight key: tied weights stored once
        self.gm = None
        self.node = None                            # the fx node being translated, for error messages

    # -- sources ------------------------------------------------------------------------------------------
    def exported(self, ep: torch.export.ExportedProgram) -> Graph:
        specs = {s.arg.name: s for s in ep.graph_signature.input_specs}
        placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
        user = [n for n in placeholders if specs[n.name].kind == InputKind.USER_INPUT]
        self._name_symbols([(n.name, n.meta.get("val")) for n in user])
        env = {}
        for n in placeholders:
            spec = specs[n.name]
            if spec.kind == InputKind.USER_INPUT:
                val = n.meta.get("val")
                env[n] = self.input(n.name, val) if isinstance(val, torch.Tensor) else val
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                t = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
                env[n] = self.param(spec.target, t)
            else:
                raise FrontendError(f"exported input {n.name} is a {spec.kind.name}, which lutc does not import")
        outs = self.run(ep.graph_module, env)
        return self.finish([v for v, s in zip(outs, ep.graph_signature.output_specs)
                            if s.kind == OutputKind.USER_OUTPUT])

    def graph_module(self, gm: torch.fx.GraphModule, example_inputs) -> Graph:
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        examples = _examples(placeholders, example_inputs)
        self._name_symbols([(n.target, v) for n, v in zip(placeholders, examples)  # fake inputs of traced graphs
                            if any(isinstance(d, torch.SymInt) for d in getattr(v, "shape", ()))])
        env = {}
        for n, v in zip(placeholders, examples):
            env[n] = self.input(n.target, v) if isinstance(v, torch.Tensor) else v
        return self.finish(torch.utils._pytree.tree_leaves(self.run(gm, env)))

    def _name_symbols(self, inputs) -> None:
        asked = [(name, ax % val.dim(), dim_name, val.shape[ax % val.dim()])
                 for name, val in inputs if isinstance(val, torch.Tensor)
                 for ax, dim_name in self.dynamic_dims.get(name, {}).items()]
        for name, ax, dim_name, size in asked:
            if not isinstance(size, torch.SymInt) or not isinstance(size.node.expr, sympy.Symbol):
                raise FrontendError(f"dim {ax} of input {name!r} ({dim_name!r}) is static ({size}) in the "
                                    "exported program")
            self.symbols.setdefault(size.node.expr, dim_name)
        for name, val in inputs:  # dynamic dims the user did not name keep torch's names
            for size in getattr(val, "shape", ()):
                if isinstance(size, torch.SymInt) and isinstance(size.node.expr, sympy.Symbol):
                    self.symbols.setdefault(size.node.expr, str(size.node.expr))

    def input(self, name: str, t: torch.Tensor) -> Ref:
        asked = {ax % t.dim(): n for ax, n in self.dynamic_dims.get(name, {}).items()}
        shape = [asked.get(i, self.dim(d)) for i, d in enumerate(t.shape)]
        return self.g.add_input(name, TensorType(_dtype(t.dtype), shape)).out

    def param(self, fqn: str, t):
        """A parameter/buffer as a constant: inline when small, else a weight stored once per tensor."""
        if not isinstance(t, torch.Tensor):
            return t
        t = t.detach().cpu()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in self.params:
            return self.g.add_const(None, weight_key=self.params[key], name=fqn).out
        # an own copy: the graph must not change when the model is trained further; numpy has no bf16
        arr = np.array((t.float() if t.dtype == torch.bfloat16 else t).numpy(), order="C")
        if t.numel() <= INLINE_CONST_LIMIT:
            return self.g.add_const(arr, name=fqn).out
        self.params[key] = fqn
        return self.g.add_const(arr, weight_key=fqn).out

    def finish(self, outs) -> Graph:
        self.g.set_outputs([v if isinstance(v, Ref) else self.scalar(v) for v in outs if v is not None])
        eliminate_dead_code(self.g)  # parameters the graph does not use (e.g. the tied copy of a weight)
        return self.g

    # -- translation ----------------------------------------------------------------------------------------
    def run(self, gm: torch.fx.GraphModule, env: dict):
        self.gm = gm
        for node in gm.graph.nodes:
            self.node = node
            if node.op == "placeholder" or not node.users and node.op != "output":
                continue  # dead code: torch's runtime asserts and guard checks
            if node.op == "output":
                return map_arg(node.args[0], env.__getitem__)
            if node.op == "get_attr":
                env[node] = self.param(node.target, _fetch_attr(gm, node.target))
                continue
            val = node.meta.get("val")
            if not self.known(val):  # metadata about other inputs (e.g. the fake ones of an exported graph)
                val = None
            if isinstance(val, torch.SymInt):  # shape arithmetic: torch recorded the expression
                env[node] = self.dim(val)
                continue
            args, kwargs = map_arg(node.args, env.__getitem__), map_arg(node.kwargs, env.__getitem__)
            try:
                env[node] = out = self.dispatch(node, args, kwargs)
            except ShapeError as e:
                raise FrontendError(f"torch node {node.name} ({_op_name(node)}){_at(node)}: {e}") from None
            if isinstance(val, torch.Tensor) and isinstance(out, Ref):
                self.check(node, out, val)
        raise FrontendError("the fx graph has no output node")

    def dispatch(self, node, args, kwargs):
        t = node.target
        if node.op == "call_module":
            mod = self.gm.get_submodule(t)
            fn = MODULES.get(type(mod))
            if fn is None:
                self.unsupported(f"nn.{type(mod).__name__}")
            return fn(self, t, mod, *args, **kwargs)
        if node.op == "call_method":
            if t in METHODS:
                return METHODS[t](self, *args, **kwargs)
            return self.call(getattr(aten, t, None), args, kwargs, name=f"Tensor.{t}")
        if t in FUNCTIONS:
            return FUNCTIONS[t](self, *args, **kwargs)
        if isinstance(t, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            return self.call(t, args, kwargs)
        # torch.* / F.* functions share their aten op's name and argument order; these extras do not matter
        kwargs = {k: v for k, v in kwargs.items() if k not in ("inplace", "_stacklevel")}
        return self.call(getattr(aten, getattr(t, "__name__", "?"), None), args, kwargs, name=_op_name(node))

    def call(self, target, args, kwargs, name: str | None = None):
        """Run the handler of an aten overload, or of the first overload of a packet the arguments fit."""
        if target is None:
            self.unsupported(name)
        packet = getattr(target, "overloadpacket", target)
        overloads = [target] if packet is not target else [getattr(packet, o) for o in packet.overloads()]
        handled = [(o, h) for o in overloads if (h := HANDLERS.get(o) or HANDLERS.get(packet)) is not None]
        if not handled:
            self.unsupported(name or str(target))
        for o, h in handled:
            a = _bind(o._schema, args, kwargs, check=packet is target)
            if a is not None:
                return h(self, a)
        raise FrontendError(f"torch node {self.node.name}: no overload of {packet} takes {args} {kwargs}")

    def unsupported(self, name: str):
        raise UnsupportedOpError(name, self.node.name, SUPPORTED, _location(self.node), frontend="torch")

    def check(self, node, ref: Ref, val: torch.Tensor) -> None:
        """The type torch recorded must be the type lutc inferred: a wrong mapping fails here, loudly."""
        t, want = self.type(ref), [self.dim(d) for d in val.shape]
        same_dtype = _DTYPES.get(val.dtype) in (t.dtype, DType.bf16)  # bf16 constants are kept in f32
        if not same_dtype or t.rank != len(want) or not all(a == b or D.equal(a, b) for a, b in zip(t.shape, want)):
            raise FrontendError(f"torch node {node.name} ({_op_name(node)}): lutc computed {t}, torch recorded "
                                f"{_DTYPES.get(val.dtype, val.dtype)}{want}")

    # -- helpers for handlers ---------------------------------------------------------------------------
    def type(self, ref: Ref) -> TensorType:
        return self.g.type_of(ref)

    def emit(self, op: Op, inputs, attrs: dict | None = None):
        attrs = {k: _plain(v) for k, v in (attrs or {}).items()}
        outs = emit(self.g, op, inputs, attrs, name=self.node.name if self.node is not None else None)
        return outs[0] if len(outs) == 1 and op is not Op.SPLIT else outs

    def known(self, val) -> bool:
        """Whether torch's metadata ``val`` speaks only of symbols that this import knows."""
        sizes = [val] if isinstance(val, torch.SymInt) else val.shape if isinstance(val, torch.Tensor) else []
        return all(s.node.expr.free_symbols <= self.symbols.keys() for s in sizes if isinstance(s, torch.SymInt))

    def dim(self, d):
        """A torch size (int or SymInt) -> int or SymDim in the user's dim names."""
        if not isinstance(d, torch.SymInt):
            return int(d)
        expr = d.node.expr
        unknown = expr.free_symbols - self.symbols.keys()
        if unknown:
            raise FrontendError(f"size {expr} depends on {sorted(map(str, unknown))}, which no input dim defines "
                                "(data-dependent shapes are not supported)")
        expr = expr.xreplace({s: D.sym(n) for s, n in self.symbols.items()})
        expr = expr.replace(lambda e: type(e).__name__ == "FloorDiv", lambda e: sympy.floor(e.args[0] / e.args[1]))
        return _dim(D.to_dim(expr))

    def cast(self, x: Ref, dtype) -> Ref:
        return self.tensor(x, dtype if isinstance(dtype, DType) else _dtype(dtype))

    def tensor(self, v, dtype: DType) -> Ref:
        """A tensor of ``dtype``: a Ref (cast when needed), or a scalar made a constant."""
        if isinstance(v, SymDim):
            v = self.g.add_const(np.array(str(v), dtype=object)).out
        if isinstance(v, Ref):
            return v if self.type(v).dtype == dtype else self.emit(Op.CAST, [v], {"dtype": dtype.value})
        return self.g.add_const(np.array(v), dtype=dtype).out

    def scalar(self, v) -> Ref:
        return self.tensor(v, DType.bool if isinstance(v, bool) else DType.i64 if isinstance(v, (int, SymDim))
                           else DType.f32)

    def shape_const(self, dims) -> Ref:
        dims = [str(d) if isinstance(d, str) else int(d) for d in dims]
        arr = np.array(dims, dtype=object) if any(isinstance(d, str) for d in dims) else np.array(dims, np.int64)
        return self.g.add_const(arr).out

    def result_dtype(self, x, y) -> DType:
        """torch's type promotion (dimensioned tensors > 0-d tensors > python scalars), computed by torch."""
        def probe(v):
            if isinstance(v, Ref):
                t = self.type(v)
                return torch.empty((1,) if t.rank else (), dtype=_TORCH_DTYPES[t.dtype])
            return 1 if isinstance(v, SymDim) else v
        return _dtype(torch.result_type(probe(x), probe(y)))


# ------------------------------------------------------------------------------------------------------
# binding arguments to an aten schema
# ------------------------------------------------------------------------------------------------------
def _fits(t, v) -> bool:
    k = t.kind()
    if k == "OptionalType":
        return v is None or _fits(t.getElementType(), v)
    if k == "TensorType":
        return isinstance(v, Ref)
    if k == "ListType":
        return all(_fits(t.getElementType(), x) for x in (v if isinstance(v, (list, tuple)) else [v]))
    if k in ("IntType", "SymIntType"):  # ScalarType, Layout and MemoryFormat are ints in schemas
        return isinstance(v, (int, SymDim, torch.dtype, torch.layout, torch.memory_format)) and not isinstance(v, bool)
    if k == "FloatType":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if k == "NumberType":
        return isinstance(v, (int, float, bool, SymDim))
    if k == "BoolType":
        return isinstance(v, bool)
    if k == "StringType":
        return isinstance(v, str) and not isinstance(v, SymDim)
    if k == "DeviceObjType":
        return isinstance(v, (torch.device, str))
    return False


def _bind(schema, args, kwargs, check: bool) -> SimpleNamespace | None:
    """Arguments by schema name, defaults filled in; None when they do not fit (``check``: by type too)."""
    params = schema.arguments
    pos = [p for p in params if not p.kwarg_only]
    if len(args) > len(pos) and len(pos) > 1 and pos[1].type.kind() == "ListType":
        args = (args[0], tuple(args[1:]))  # x.view(1, s, -1), x.permute(0, 2, 1, 3): varargs sizes
    if len(args) > len(pos):
        return None
    out = {p.name: v for p, v in zip(pos, args)}
    kwargs = dict(kwargs)
    if "input" in kwargs and "self" in {p.name for p in params}:  # F.softmax(input=x) is aten's self
        kwargs["self"] = kwargs.pop("input")
    for p in params:
        if p.name in out:
            continue
        if p.name in kwargs:
            out[p.name] = kwargs.pop(p.name)
        elif p.has_default_value():
            out[p.name] = p.default_value
        else:
            return None
    if kwargs or (check and not all(_fits(p.type, out[p.name]) for p in params)):
        return None
    for p in params:  # int[1] arguments take a bare int: x.mean(-1)
        t = p.type.getElementType() if p.type.kind() == "OptionalType" else p.type
        if t.kind() == "ListType" and isinstance(out[p.name], (int, SymDim)) and not isinstance(out[p.name], bool):
            out[p.name] = [out[p.name]]
    return SimpleNamespace(**out)


# ------------------------------------------------------------------------------------------------------
# handlers: fn(importer, args) -> Ref | [Ref] | python value
# ------------------------------------------------------------------------------------------------------
def _arith(cx: _Importer, op: Op, x, y, true_div: bool = False) -> Ref:
    dt = cx.result_dtype(x, y)
    if true_div and not dt.is_float:  # torch's / on integers is true division
        dt = DType.f32
    return cx.emit(op, [cx.tensor(x, dt), cx.tensor(y, dt)])


def _binary(op: Op):
    def handler(cx, a):
        y = a.other
        if getattr(a, "alpha", 1) != 1:
            y = _arith(cx, Op.MUL, y, a.alpha) if isinstance(y, Ref) else y * a.alpha
        mode = getattr(a, "rounding_mode", None)
        if mode is not None:  # the IR's integer division truncates; floor rounding has no op (yet)
            if mode != "trunc" or cx.result_dtype(a.self, y).is_float:
                raise FrontendError(f"torch node {cx.node.name}: division with rounding_mode={mode!r} "
                                    "is only supported as 'trunc' on integers")
            return _arith(cx, op, a.self, y)
        return _arith(cx, op, a.self, y, true_div=op is Op.DIV)
    return handler


def _rsub(cx, a):
    return _arith(cx, Op.SUB, a.other, a.self if a.alpha == 1 else _arith(cx, Op.MUL, a.self, a.alpha))


def _pow(cx, a):
    return _arith(cx, Op.POW, a.self, a.exponent)


def _compare(op: Op, negate: bool = False):
    def handler(cx, a):
        out = _arith(cx, op, a.self, a.other)
        return cx.emit(Op.NOT, [out]) if negate else out
    return handler


def _logical(op: Op, bitwise: bool):
    def handler(cx, a):
        if bitwise and cx.result_dtype(a.self, a.other) is not DType.bool:
            raise FrontendError(f"torch node {cx.node.name}: bitwise ops on integers are not supported")
        return cx.emit(op, [cx.tensor(a.self, DType.bool), cx.tensor(a.other, DType.bool)])
    return handler


def _not(bitwise: bool):
    def handler(cx, a):
        if bitwise and cx.type(a.self).dtype is not DType.bool:
            raise FrontendError(f"torch node {cx.node.name}: bitwise ops on integers are not supported")
        return cx.emit(Op.NOT, [cx.tensor(a.self, DType.bool)])
    return handler


def _unary(op: Op, floats: bool = True):
    def handler(cx, a):
        x = a.self
        if floats and not cx.type(x).dtype.is_float:  # torch.exp(int) is float
            x = cx.tensor(x, DType.f32)
        return cx.emit(op, [x], {"approximate": a.approximate} if op is Op.GELU else None)
    return handler


def _relu(cx, a):
    return _arith(cx, Op.MAX, a.self, 0)


def _where(cx, a):
    dt = cx.result_dtype(a.self, a.other)
    return cx.emit(Op.WHERE, [cx.tensor(a.condition, DType.bool), cx.tensor(a.self, dt), cx.tensor(a.other, dt)])


def _masked_fill(cx, a):
    x = a.self
    return cx.emit(Op.WHERE, [cx.tensor(a.mask, DType.bool), cx.tensor(a.value, cx.type(x).dtype), x])


def _reduce(op: Op):
    def handler(cx, a):
        x = a.self
        if getattr(a, "dtype", None) is not None:
            x = cx.cast(x, a.dtype)
        elif op is Op.REDUCE_SUM and not cx.type(x).dtype.is_float:  # torch sums integers and bools in i64
            x = cx.tensor(x, DType.i64)
        dim = getattr(a, "dim", None)
        attrs = {"keepdims": bool(getattr(a, "keepdim", False))}
        if dim:  # None or [] reduce everything
            attrs["axes"] = list(dim)
        return cx.emit(op, [x], attrs)
    return handler


def _softmax(cx, a):
    x = a.self
    if getattr(a, "dtype", None) is not None:
        x = cx.cast(x, a.dtype)
    if getattr(a, "half_to_float", False):
        x = cx.tensor(x, DType.f32)
    return cx.emit(Op.SOFTMAX, [x], {"axis": a.dim})


def _layer_norm(cx, a):
    n = len(a.normalized_shape)
    w, b = a.weight, a.bias
    if w is None and b is not None:
        w = cx.tensor(np.ones(list(a.normalized_shape)), cx.type(a.input).dtype)
    return cx.emit(Op.LAYER_NORM, [x for x in (a.input, w, b) if x is not None], {"axis": -n, "eps": float(a.eps)})


def _rms_norm(cx, a):
    if len(a.normalized_shape) != 1:
        raise FrontendError(f"torch node {cx.node.name}: rms_norm over several dims is not supported")
    eps = a.eps if a.eps is not None else torch.finfo(_TORCH_DTYPES[cx.type(a.input).dtype]).eps
    return cx.emit(Op.RMS_NORM, [a.input] + ([a.weight] if a.weight is not None else []), {"eps": float(eps)})


def _matmul(cx, a):
    return cx.emit(Op.MATMUL, [a.self, a.other if hasattr(a, "other") else a.mat2])


def _addmm(cx, a):
    if a.beta != 1 or a.alpha != 1:
        raise FrontendError(f"torch node {cx.node.name}: addmm with alpha/beta is not supported")
    return cx.emit(Op.ADD, [cx.emit(Op.MATMUL, [a.mat1, a.mat2]), a.self])


def _linear(cx, a):
    return cx.emit(Op.LINEAR, [a.input, a.weight] + ([a.bias] if a.bias is not None else []))


def _t(cx, a):
    return cx.emit(Op.TRANSPOSE, [a.self], {"perm": [1, 0]}) if cx.type(a.self).rank == 2 else a.self


def _embedding(cx, a):
    return cx.emit(Op.GATHER, [a.weight, a.indices], {"axis": 0})


def _reshape(cx, a):
    size = a.size if hasattr(a, "size") else a.shape
    return cx.emit(Op.RESHAPE, [a.self, cx.shape_const(size)])


def _reshape_as(cx, a):
    return cx.emit(Op.RESHAPE, [a.self, cx.shape_const(cx.type(a.other).shape)])


def _expand(cx, a):
    shape, size = cx.type(a.self).shape, list(a.size)
    off = len(size) - len(shape)
    size = [shape[i - off] if isinstance(d, int) and d == -1 else d for i, d in enumerate(size)]
    return cx.emit(Op.EXPAND, [a.self, cx.shape_const(size)])


def _expand_as(cx, a):
    return cx.emit(Op.EXPAND, [a.self, cx.shape_const(cx.type(a.other).shape)])


def _unsqueeze(cx, a):
    return cx.emit(Op.UNSQUEEZE, [a.self], {"axes": [a.dim % (cx.type(a.self).rank + 1)]})


def _squeeze(cx, a):
    shape = cx.type(a.self).shape
    dims = getattr(a, "dim", None)
    dims = [dims] if isinstance(dims, int) else dims
    if dims is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    else:  # torch leaves dims that are not 1 alone; a symbolic dim is taken to be > 1
        axes = [d % len(shape) for d in dims if shape[d % len(shape)] == 1]
    return cx.emit(Op.SQUEEZE, [a.self], {"axes": axes}) if axes else a.self


def _transpose(cx, a):
    rank = cx.type(a.self).rank
    perm = list(range(rank))
    i, j = a.dim0 % rank, a.dim1 % rank
    perm[i], perm[j] = j, i
    return cx.emit(Op.TRANSPOSE, [a.self], {"perm": perm})


def _permute(cx, a):
    rank = cx.type(a.self).rank
    return cx.emit(Op.TRANSPOSE, [a.self], {"perm": [d % rank for d in a.dims]})


def _cat(cx, a):
    dt = functools.reduce(torch.promote_types, (_TORCH_DTYPES[cx.type(t).dtype] for t in a.tensors))
    return cx.emit(Op.CONCAT, [cx.cast(t, dt) for t in a.tensors], {"axis": a.dim})


def _slice(cx, x: Ref, axis: int, start, end, step) -> Ref:
    start = 0 if start is None else start
    end = INT64_MAX if end is None else end
    step = 1 if step is None else step
    return cx.emit(Op.SLICE, [x], {"starts": [start], "ends": [end], "axes": [axis % cx.type(x).rank],
                                   "steps": [step]})


def _slice_tensor(cx, a):
    return _slice(cx, a.self, a.dim, a.start, a.end, a.step)


def _narrow(cx, a):
    return _slice(cx, a.self, a.dim, a.start, D.add(a.start, a.length), 1)


def _select(cx, a):
    return cx.emit(Op.GATHER, [a.self, cx.tensor(a.index, DType.i64)], {"axis": a.dim % cx.type(a.self).rank})


def _split(cx, a):
    x = a.self
    axis = a.dim % cx.type(x).rank
    n = cx.type(x).shape[axis]
    if hasattr(a, "split_sizes") or isinstance(a.split_size, (list, tuple)):
        sizes = list(a.split_sizes if hasattr(a, "split_sizes") else a.split_size)
    else:
        if not isinstance(n, int):
            raise FrontendError(f"torch node {cx.node.name}: splitting symbolic dim {n} into equal pieces")
        s = a.split_size
        sizes = [s] * (n // s) + ([n % s] if n % s else [])
    return cx.emit(Op.SPLIT, [x], {"axis": axis, "sizes": sizes})


def _chunk(cx, a):
    n = cx.type(a.self).shape[a.dim]
    if not isinstance(n, int):
        raise FrontendError(f"torch node {cx.node.name}: chunking symbolic dim {n}")
    return _split(cx, SimpleNamespace(self=a.self, split_size=-(-n // a.chunks), dim=a.dim))


def _index(cx, a):
    """x[i0, i1, ...] with index tensors: gather for one, gather_nd over the broadcast indices for several."""
    x, idx = a.self, list(a.indices)
    pos = [i for i, t in enumerate(idx) if t is not None]
    if any(cx.type(idx[i]).dtype is DType.bool for i in pos):
        raise FrontendError(f"torch node {cx.node.name}: boolean-mask indexing (data-dependent shape)")
    if pos != list(range(pos[0], pos[-1] + 1)):
        raise FrontendError(f"torch node {cx.node.name}: index tensors on non-adjacent dims")
    if len(pos) == 1:
        return cx.emit(Op.GATHER, [x, idx[pos[0]]], {"axis": pos[0]})
    rank, p0 = cx.type(x).rank, pos[0]
    if p0:  # indexed dims first
        x = cx.emit(Op.TRANSPOSE, [x], {"perm": pos + [i for i in range(rank) if i not in pos]})
    ts = [cx.tensor(idx[i], DType.i64) for i in pos]
    shape = functools.reduce(D.broadcast, (cx.type(t).shape for t in ts))
    cols = [cx.emit(Op.UNSQUEEZE, [cx.emit(Op.EXPAND, [t, cx.shape_const(shape)])], {"axes": [-1]}) for t in ts]
    y = cx.emit(Op.GATHER_ND, [x, cx.emit(Op.CONCAT, cols, {"axis": -1})])
    if p0:  # torch puts the broadcast index dims where the first index was
        nb, yr = len(shape), cx.type(y).rank
        y = cx.emit(Op.TRANSPOSE, [y], {"perm": [*range(nb, nb + p0), *range(nb), *range(nb + p0, yr)]})
    return y


def _arange(cx, a):
    vals = (getattr(a, "start", 0), a.end, getattr(a, "step", 1))
    if a.dtype is not None:
        dt = _dtype(a.dtype)
    else:
        dt = DType.i64 if all(isinstance(v, (int, SymDim)) for v in vals) else DType.f32
    # symbolic bounds stay i64 constants: RANGE needs them constant, and takes its dtype from start
    out = cx.emit(Op.RANGE, [cx.tensor(v, DType.i64 if isinstance(v, SymDim) else dt) for v in vals])
    return cx.cast(out, dt)


def _fill(value=None, like: bool = False):
    """full/ones/zeros (size), new_* (self, size) and *_like (self): a constant_of_shape."""
    def handler(cx, a):
        v = a.fill_value if value is None else value
        src = getattr(a, "self", None)
        if a.dtype is not None:
            dt = _dtype(a.dtype)
        elif src is not None:
            dt = cx.type(src).dtype
        else:  # torch.full infers from the fill value; ones/zeros use the default float
            dt = DType.bool if isinstance(v, bool) else DType.i64 if isinstance(v, int) and value is None else DType.f32
        shape = cx.type(src).shape if like else a.size
        v = bool(v) if dt is DType.bool else float(v) if dt.is_float else int(v)
        return cx.emit(Op.CONSTANT_OF_SHAPE, [cx.shape_const(shape)], {"value": v, "dtype": dt.value})
    return handler


def _scalar_tensor(cx, a):
    return cx.tensor(a.s, _dtype(a.dtype) if a.dtype is not None else DType.f32)


def _trilu(upper: bool):
    return lambda cx, a: cx.emit(Op.TRILU, [a.self], {"upper": upper, "k": a.diagonal})


def _sdpa(cx, a):
    if a.dropout_p:
        raise FrontendError(f"torch node {cx.node.name}: scaled_dot_product_attention with dropout_p > 0")
    ins = [a.query, a.key, a.value] + ([a.attn_mask] if a.attn_mask is not None else [])
    return cx.emit(Op.SDPA, ins, {"causal": bool(a.is_causal), "scale": None if a.scale is None else float(a.scale)})


def _to(cx, a):
    """to/_to_copy/type_as: a cast when the dtype changes, else nothing (devices and layouts do not matter)."""
    other = getattr(a, "other", None)
    dtype = cx.type(other).dtype if isinstance(other, Ref) else getattr(a, "dtype", None)
    return a.self if dtype is None else cx.cast(a.self, dtype)


def _dropout(cx, a):
    if a.train and a.p:
        raise FrontendError(f"torch node {cx.node.name}: dropout in training mode (call model.eval())")
    return a.input


def _identity(cx, a):
    return a.self


def _sym_size(cx, a):
    return _dim(cx.type(a.self).shape[a.dim])


HANDLERS = {
    # elementwise
    aten.add: _binary(Op.ADD), aten.sub: _binary(Op.SUB), aten.mul: _binary(Op.MUL), aten.div: _binary(Op.DIV),
    aten.rsub: _rsub, aten.pow: _pow, aten.maximum: _binary(Op.MAX), aten.minimum: _binary(Op.MIN),
    aten.eq: _compare(Op.EQUAL), aten.ne: _compare(Op.EQUAL, negate=True), aten.lt: _compare(Op.LESS),
    aten.le: _compare(Op.LESS_EQUAL), aten.gt: _compare(Op.GREATER), aten.ge: _compare(Op.GREATER_EQUAL),
    aten.__and__: _logical(Op.AND, True), aten.bitwise_and: _logical(Op.AND, True),
    aten.logical_and: _logical(Op.AND, False), aten.__or__: _logical(Op.OR, True),
    aten.bitwise_or: _logical(Op.OR, True), aten.logical_or: _logical(Op.OR, False),
    aten.logical_not: _not(False), aten.bitwise_not: _not(True),
    aten.rsqrt: _unary(Op.RSQRT), aten.sqrt: _unary(Op.SQRT), aten.reciprocal: _unary(Op.RECIPROCAL),
    aten.exp: _unary(Op.EXP), aten.log: _unary(Op.LOG), aten.tanh: _unary(Op.TANH), aten.erf: _unary(Op.ERF),
    aten.sigmoid: _unary(Op.SIGMOID), aten.silu: _unary(Op.SILU), aten.gelu: _unary(Op.GELU),
    aten.cos: _unary(Op.COS), aten.sin: _unary(Op.SIN), aten.neg: _unary(Op.NEG, floats=False),
    aten.abs: _unary(Op.ABS, floats=False), aten.isnan: _unary(Op.IS_NAN, floats=False), aten.relu: _relu,
    aten.where.self: _where, aten.where.ScalarOther: _where, aten.where.ScalarSelf: _where,
    aten.where.Scalar: _where, aten.masked_fill: _masked_fill,
    # reductions and normalizations
    aten.mean: _reduce(Op.REDUCE_MEAN), aten.sum: _reduce(Op.REDUCE_SUM), aten.amax: _reduce(Op.REDUCE_MAX),
    aten.softmax: _softmax, aten._softmax: _softmax, aten.layer_norm: _layer_norm, aten.rms_norm: _rms_norm,
    # linear algebra
    aten.matmul: _matmul, aten.mm: _matmul, aten.bmm: _matmul, aten.addmm: _addmm, aten.linear: _linear,
    aten.t: _t, aten.embedding: _embedding, aten.scaled_dot_product_attention: _sdpa,
    # data movement
    aten.view.default: _reshape, aten.reshape: _reshape, aten._unsafe_view: _reshape,
    aten.view_as: _reshape_as, aten.reshape_as: _reshape_as, aten.expand: _expand, aten.expand_as: _expand_as,
    aten.unsqueeze: _unsqueeze, aten.squeeze: _squeeze, aten.transpose.int: _transpose, aten.permute: _permute,
    aten.cat: _cat, aten.slice.Tensor: _slice_tensor, aten.narrow.default: _narrow, aten.select.int: _select,
    aten.split: _split, aten.split_with_sizes: _split, aten.chunk: _chunk, aten.index.Tensor: _index,
    aten.tril: _trilu(False), aten.triu: _trilu(True),
    # creation
    aten.arange: _arange, aten.full.default: _fill(), aten.ones.default: _fill(1), aten.zeros.default: _fill(0),
    aten.new_full: _fill(), aten.new_ones: _fill(1), aten.new_zeros: _fill(0),
    aten.full_like: _fill(like=True), aten.ones_like: _fill(1, like=True), aten.zeros_like: _fill(0, like=True),
    aten.scalar_tensor: _scalar_tensor,
    # casts; copies and aliases change nothing here
    aten.to: _to, aten._to_copy: _to, aten.type_as: _to, aten.contiguous: _identity, aten.clone: _identity,
    aten.alias: _identity, aten.detach: _identity, aten.lift_fresh_copy: _identity, aten.dropout: _dropout,
    aten.sym_size.int: _sym_size,
}


# ------------------------------------------------------------------------------------------------------
# torch.fx (symbolic_trace) level: python operators, Tensor methods without an aten twin, nn modules
# ------------------------------------------------------------------------------------------------------
def _py(op: Op | None, py, sym=None):
    """A python operator: on tensors the IR op, on sizes dim arithmetic, on plain numbers python's."""
    def fn(cx, x, y):
        if isinstance(x, Ref) or isinstance(y, Ref):
            if op is None:
                raise FrontendError(f"torch node {cx.node.name}: {py.__name__} on tensors is not supported")
            return _arith(cx, op, x, y, true_div=op is Op.DIV)
        if isinstance(x, SymDim) or isinstance(y, SymDim):
            if sym is None:
                raise FrontendError(f"torch node {cx.node.name}: {py.__name__} on symbolic size {x}, {y}")
            return _dim(sym(x, y))
        return py(x, y)
    return fn


def _py_compare(op: Op, py, negate: bool = False):
    handler = _compare(op, negate)
    return lambda cx, x, y: handler(cx, SimpleNamespace(self=x, other=y)) \
        if isinstance(x, Ref) or isinstance(y, Ref) else py(x, y)


def _getattr(cx, obj, name):
    if not isinstance(obj, Ref):
        return getattr(obj, name)
    t = cx.type(obj)
    attrs = {"shape": lambda: tuple(_dim(d) for d in t.shape), "ndim": lambda: t.rank,
             "dtype": lambda: _TORCH_DTYPES[t.dtype], "device": lambda: torch.device("cpu"),
             "T": lambda: cx.emit(Op.TRANSPOSE, [obj], {"perm": list(range(t.rank))[::-1]}),
             "mT": lambda: _transpose(cx, SimpleNamespace(self=obj, dim0=-1, dim1=-2))}
    if name not in attrs:
        cx.unsupported(f"Tensor.{name}")
    return attrs[name]()


def _getitem(cx, obj, idx):
    """Python indexing: of tuples and sizes, or of a tensor (ints, slices, None, ..., one index tensor)."""
    if not isinstance(obj, Ref):
        return obj[idx]
    idx = idx if isinstance(idx, tuple) else (idx,)
    rank = cx.type(obj).rank
    if any(i is Ellipsis for i in idx):
        k = next(j for j, i in enumerate(idx) if i is Ellipsis)
        used = sum(1 for i in idx if i is not None and i is not Ellipsis)
        idx = idx[:k] + (slice(None),) * (rank - used) + idx[k + 1:]
    if any(isinstance(i, Ref) for i in idx):  # advanced indexing: the index tensors act together
        if not all(isinstance(i, Ref) or i == slice(None) for i in idx):
            raise FrontendError(f"torch node {cx.node.name}: index tensors mixed with ints, slices or None")
        return _index(cx, SimpleNamespace(self=obj, indices=[i if isinstance(i, Ref) else None for i in idx]))
    x, axis = obj, 0
    for i in idx:
        if i is None:
            x = cx.emit(Op.UNSQUEEZE, [x], {"axes": [axis]})
            axis += 1
        elif isinstance(i, slice):
            if i != slice(None):
                x = _slice(cx, x, axis, i.start, i.stop, i.step)
            axis += 1
        else:  # an int: select, the dim goes away
            x = cx.emit(Op.GATHER, [x, cx.tensor(i, DType.i64)], {"axis": axis})
    return x


def _size(cx, x, dim=None):
    shape = tuple(_dim(d) for d in cx.type(x).shape)
    return shape if dim is None else shape[dim]


def _cast_method(dtype):
    return lambda cx, x, *args, **kwargs: cx.cast(x, dtype)


FUNCTIONS = {
    operator.getitem: _getitem, getattr: _getattr,
    operator.add: _py(Op.ADD, operator.add, D.add), operator.sub: _py(Op.SUB, operator.sub, D.sub),
    operator.mul: _py(Op.MUL, operator.mul, D.mul), operator.truediv: _py(Op.DIV, operator.truediv),
    operator.floordiv: _py(None, operator.floordiv, D.floordiv), operator.pow: _py(Op.POW, operator.pow),
    operator.matmul: lambda cx, x, y: cx.emit(Op.MATMUL, [x, y]),
    operator.neg: lambda cx, x: cx.emit(Op.NEG, [x]) if isinstance(x, Ref) else _py(None, operator.mul, D.mul)(
        cx, -1, x),
    operator.and_: lambda cx, x, y: HANDLERS[aten.__and__](cx, SimpleNamespace(self=x, other=y)),
    operator.or_: lambda cx, x, y: HANDLERS[aten.__or__](cx, SimpleNamespace(self=x, other=y)),
    operator.invert: lambda cx, x: HANDLERS[aten.bitwise_not](cx, SimpleNamespace(self=x)),
    operator.eq: _py_compare(Op.EQUAL, operator.eq), operator.ne: _py_compare(Op.EQUAL, operator.ne, True),
    operator.lt: _py_compare(Op.LESS, operator.lt), operator.le: _py_compare(Op.LESS_EQUAL, operator.le),
    operator.gt: _py_compare(Op.GREATER, operator.gt), operator.ge: _py_compare(Op.GREATER_EQUAL, operator.ge),
    # F.embedding takes (input, weight), aten.embedding (weight, indices)
    F.embedding: lambda cx, input, weight, *args, **kwargs: _embedding(cx, SimpleNamespace(weight=weight,
                                                                                            indices=input)),
    F.dropout: lambda cx, input, p=0.5, training=False, inplace=False: _dropout(
        cx, SimpleNamespace(input=input, p=p, train=training)),
}

METHODS = {
    "size": _size, "dim": lambda cx, x: cx.type(x).rank,
    "float": _cast_method(torch.float32), "half": _cast_method(torch.float16), "double": _cast_method(torch.float64),
    "bfloat16": _cast_method(torch.bfloat16), "long": _cast_method(torch.int64), "int": _cast_method(torch.int32),
    "bool": _cast_method(torch.bool),
}


def _module(target, *extra):
    """A leaf nn.Module as the aten op it computes; ``extra(m)`` are its arguments after the input."""
    return lambda cx, name, m, x: cx.call(target, (x, *[cx.param(f"{name}.{a}", getattr(m, a)) if isinstance(a, str)
                                                        else a(m) for a in extra]), {})


MODULES = {
    nn.Linear: _module(aten.linear.default, "weight", "bias"),
    nn.Embedding: lambda cx, name, m, x: _embedding(cx, SimpleNamespace(weight=cx.param(f"{name}.weight", m.weight),
                                                                          indices=x)),
    nn.LayerNorm: _module(aten.layer_norm.default, lambda m: list(m.normalized_shape), "weight", "bias",
                          lambda m: m.eps),
    nn.RMSNorm: _module(aten.rms_norm.default, lambda m: list(m.normalized_shape), "weight", lambda m: m.eps),
    nn.SiLU: _module(aten.silu.default), nn.ReLU: _module(aten.relu.default), nn.Tanh: _module(aten.tanh.default),
    nn.Sigmoid: _module(aten.sigmoid.default), nn.GELU: lambda cx, name, m, x: cx.call(
        aten.gelu.default, (x,), {"approximate": m.approximate}),
    nn.Softmax: _module(aten.softmax.int, lambda m: m.dim if m.dim is not None else -1),
    nn.Dropout: lambda cx, name, m, x: x, nn.Identity: lambda cx, name, m, x: x,
}

SUPPORTED = sorted({str(k) for k in HANDLERS} | {f"nn.{m.__name__}" for m in MODULES})


# ------------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------------
def _examples(placeholders, example_inputs) -> list:
    """Example values for an fx graph's placeholders: given, or from ShapeProp/export metadata."""
    if example_inputs is None:
        out = []
        for n in placeholders:
            meta = n.meta.get("val", n.meta.get("tensor_meta"))
            if meta is None:
                raise FrontendError(f"fx graph input {n.target!r} has no shape: pass example_inputs (or run "
                                    "torch.fx.passes.shape_prop.ShapeProp first)")
            out.append(meta if isinstance(meta, torch.Tensor) else torch.empty(meta.shape, dtype=meta.dtype,
                                                                               device="meta"))
        return out
    if isinstance(example_inputs, dict):
        missing = [n.target for n in placeholders if n.target not in example_inputs and not n.args]
        if missing:
            raise FrontendError(f"example_inputs lacks {missing}")
        return [example_inputs[n.target] if n.target in example_inputs else n.args[0] for n in placeholders]
    example_inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if len(example_inputs) > len(placeholders) or any(not n.args for n in placeholders[len(example_inputs):]):
        raise FrontendError(f"the fx graph takes {[n.target for n in placeholders]}, got {len(example_inputs)} "
                            "example inputs")
    return list(example_inputs) + [n.args[0] for n in placeholders[len(example_inputs):]]


def _fetch_attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _op_name(node) -> str:
    t = node.target
    if node.op == "call_method":
        return f"Tensor.{t}"
    if isinstance(t, str):
        return t
    return str(t) if isinstance(t, torch._ops.OperatorBase) else torch.fx.node._get_qualified_name(t)


def _location(node) -> str | None:
    """The source line of an fx node: the last frame of its stack trace outside torch itself."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', (node.meta.get("stack_trace") or "") if node else "")
    if not frames:
        return None
    user = [f for f in frames if f"{os.sep}torch{os.sep}" not in f[0]]
    return "{}:{}".format(*(user or frames)[-1])


def _at(node) -> str:
    loc = _location(node)
    return f" at {loc}" if loc else ""


__all__ = ["import_torch", "export", "HANDLERS", "SUPPORTED"]
