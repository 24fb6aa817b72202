"""Graph -> CUDA :class:`~lutc.runtime.program.Program`: the CPU lowering's rules (op groups, KV appends,
views) with the GPU's own kernels: a LUT rule calling the nvcc-built LUT libraries, and one rule per op the
TVM ops library provides (codegen/cuda/ops.py). An op no rule takes is a clear error naming it, its node and
what the GPU supports: there is no host fallback in a device program."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir.graph import Graph, Node
from ...ir.ops import Op
from ...runtime.program import Program, Step
from ..cpu.lower import (GROUP_RULES, Lowering, Rule, _absorbed_node, _const, _input, _kv_append, _numpy,
                         _quantized_weight, apply_rules, claim_residual, residual_add)
from .build import build_library
from .kernel import CudaLutMatmul
from .ops import ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, op_name

ROW_TILES = (1, 16, 64)   # row counts a library is built for: 1 (decode GEMV, LUT kernel), 16 and 64 (prefill:
                          # the tensor-core kernel's tiles, or the LUT kernel's 8-row tile where it cannot)


@dataclass(frozen=True)
class CudaOptions:
    """``arch``: the GPU the kernels are compiled for ("sm_90a": H100/H200, "sm_80": A100, ...); ``graphs``:
    replay decode steps from CUDA graphs when the compiled model runs (runtime/cuda_graphs.py);
    ``fuse_residual``: a residual add after a LUT matmul runs in the LUT kernel's epilogue; ``pdl``: on sm_90 the
    decode GEMV and the other ops' kernels are launched with programmatic dependent launch (each may start while
    its predecessor ends: dq.py, build.pdl_pipeline)."""
    arch: str = "sm_90a"
    progress: bool = False
    graphs: bool = True
    fuse_residual: bool = True
    pdl: bool = True


@dataclass
class CudaLowering(Lowering):
    ops: dict[str, tuple[str, dict]] = field(default_factory=dict)   # ops library: function -> (kind, params)

    def function(self, kind: str, params: dict) -> dict:
        """The ops-library function for ``kind`` at ``params`` (added to the library), as a step attribute."""
        name = op_name(kind, params)
        self.ops[name] = (kind, params)
        return {"fn": name, "kind": kind, "params": params}

    def tvm_op(self, node: Node, kind: str, params: dict) -> list[Step]:
        attrs = dict(node.attrs, tvm=self.function(kind, params))
        return [Step(node.op.value, [self.value(r) for r in node.inputs], [node.name], attrs, node.name)]


def _precompute(low: CudaLowering, node: Node) -> list[Step] | None:
    """The LUT kernels build their tables from the activations themselves (in shared memory)."""
    return [] if node.op is Op.LUT_PRECOMPUTE else None


def _lut_matmul(low: CudaLowering, mm: Node) -> list[Step] | None:
    if mm.op is not Op.LUT_MATMUL:
        return None
    lut = CudaLutMatmul(_quantized_weight(low, mm), out_dtype="float32", arch=low.options.arch)
    if not low.options.pdl:
        lut._pdl = ""
    cw = lut.cw
    residual = residual_add(low, mm)
    libraries, kernels = {}, {}
    for m in ROW_TILES:
        p = lut.params(m, "float32", residual=residual is not None)
        lib = build_library(p)
        low.libraries[lib.name] = str(lib)
        libraries[str(p.mt)] = [lib.name, p.split]   # keyed by the kernel's row tile: the runtime sizes by it
        kernels[str(p.mt)] = p.kind                  # "lut", "dq", "mma", "gemm" or "wgmma" (for lutc inspect)
    lid = f"lut{len(low.luts)}"
    keys = [f"{mm.name}.cuda.{part}" for part in ("w", "scales", "zeros")]
    low.weights.update(zip(keys, (cw.w.view(np.int32), cw.scale_rows(), cw.zero_rows())))
    low.luts[lid] = {"libraries": libraries, "kernels": kernels, "weights": keys, "node": mm.name, "layout": cw.layout, "kernel_args": 8,
                     "params": {"n": cw.n, "k": cw.k, "n_pad": cw.n_pad, "bits": cw.bits,
                                "group_size": cw.group_size, "real_zero": cw.real_zero}}
    x = low.value(low.g.node(mm.inputs[0].node).inputs[0])   # the precompute's input: tables built inside
    if residual is not None:
        other, out = claim_residual(low, residual)
        low.luts[lid]["residual"] = True
        return [Step("lut", [x, other], [out], {"lut": lid}, mm.name)]
    out = low.value(mm.out)
    if not mm.attrs.get("has_bias"):
        return [Step("lut", [x], [out], {"lut": lid}, mm.name)]
    add = low.function("binary", {"op": "add", "cols": cw.n})
    return [Step("lut", [x], [out + ".nobias"], {"lut": lid}, mm.name),
            Step(Op.ADD.value, [out + ".nobias", low.value(mm.inputs[-1])], [out], {"tvm": add}, mm.name + "_bias")]


def _elementwise(low: CudaLowering, node: Node) -> list[Step] | None:
    op = node.op.value
    if op in ELEMENTWISE_UNARY and len(node.inputs) == 1:
        return low.tvm_op(node, "unary", {"op": op})
    if op not in ELEMENTWISE_BINARY or len(node.inputs) != 2:
        return None
    a, b = (low.shape(r) for r in node.inputs)
    if a == b:
        return low.tvm_op(node, "binary", {"op": op})
    if len(b) == 1 and a and a[-1] == b[0] and isinstance(b[0], int):
        return low.tvm_op(node, "binary", {"op": op, "cols": b[0]})
    raise NotImplementedError(f"{op} {node.name}: the GPU kernels broadcast only a trailing vector "
                              f"(shapes {list(a)} and {list(b)})")


def _rms_norm(low: CudaLowering, node: Node) -> list[Step] | None:
    if node.op is not Op.RMS_NORM or len(node.inputs) != 2:
        return None
    h = low.shape(node.out)[-1]
    if not isinstance(h, int) or low.shape(node.inputs[1]) != (h,):
        return None
    return low.tvm_op(node, "rms_norm", {"features": h, "eps": float(node.attrs.get("eps", 1e-6))})


def _attention(low: CudaLowering, node: Node) -> list[Step] | None:
    if node.op is not Op.SDPA or len(node.inputs) != 3 or node.type.rank != 4:
        return None
    (_, hq, _, d), (_, hk, _, _) = low.shape(node.inputs[0]), low.shape(node.inputs[1])
    if not all(isinstance(v, int) for v in (hq, hk, d)) or hq % hk:
        return None
    a = node.attrs
    return low.tvm_op(node, "attention", {"heads": hq, "kv_heads": hk, "head_dim": d,
                                          "scale": float(a.get("scale") or d ** -0.5), "causal": bool(a.get("causal")),
                                          "align": a.get("causal_align", "top_left")})


def _embedding(low: CudaLowering, node: Node) -> list[Step] | None:
    if node.op is not Op.GATHER or node.attrs.get("axis", 0) != 0:
        return None
    table = low.g.node(node.inputs[0].node)
    shape = low.shape(node.inputs[0])
    if table.op is not Op.CONST or len(shape) != 2 or low.g.type_of(node.inputs[1]).dtype.value != "i64":
        return None
    return low.tvm_op(node, "embedding", {"vocab": shape[0], "features": shape[1]})


def _linear(low: CudaLowering, node: Node) -> list[Step] | None:
    if node.op is not Op.LINEAR or len(node.inputs) != 2:
        return None
    out_f, in_f = low.shape(node.inputs[1])
    return low.tvm_op(node, "linear", {"out_features": out_f, "in_features": in_f})


def _data_movement(low: CudaLowering, node: Node) -> list[Step] | None:
    """Slices and splits are views of device tensors."""
    return _numpy(low, node) if node.op in (Op.SLICE, Op.SPLIT) else None


def _group_step(low: CudaLowering, steps: list[Step]) -> list[Step]:
    """A CPU group step (rope, swiglu, views) with the ops-library function that runs it on the GPU."""
    (step,) = steps
    if step.kernel == "rope":
        d = low.shape(low.g.node(step.name).out)[-1]
        params = {"head_dim": d}
    elif step.kernel == "swiglu":
        params = {}
    else:
        return steps
    step.attrs = dict(step.attrs, tvm=low.function(step.kernel, params))
    return steps


RULES: tuple[Rule, ...] = (_absorbed_node, _input, _const, _precompute, _lut_matmul, _kv_append, _attention, _rms_norm,
                           _elementwise, _embedding, _linear, _data_movement)
SUPPORTED = sorted({"lut_matmul", "concat (KV cache)", "sdpa", "rms_norm", "gather (embedding)", "linear",
                    "slice", "split", "reshape", "transpose", "squeeze", "unsqueeze", "rope", "swiglu"}
                   | ELEMENTWISE_UNARY | ELEMENTWISE_BINARY)


def _unsupported(low: CudaLowering, node: Node) -> list[Step]:
    raise NotImplementedError(f"{node.op.value} {node.name} has no GPU kernel; the cuda target runs: "
                              f"{', '.join(SUPPORTED)}")


def _with_function(rule: Rule) -> Rule:
    """A CPU group rule whose step runs as an ops-library function on the GPU."""
    def apply(low: CudaLowering, node: Node) -> list[Step] | None:
        steps = rule(low, node)
        return None if steps is None else _group_step(low, steps)
    return apply


def lower(g: Graph, options: CudaOptions) -> tuple[Program, dict, dict, dict]:
    """The program, its arrays (by key), the LUT libraries it calls and the ops library's functions."""
    low = CudaLowering(g, options, 1, options.arch)
    program = apply_rules(low, [_with_function(r) for r in GROUP_RULES], RULES, _unsupported,
                          "building CUDA kernels")
    return program, low.weights, low.libraries, low.ops
