"""The quantize pass: every ``linear(x, W const)`` chosen by the config becomes
``lut_matmul(lut_precompute(x), packed W)``. One precompute is built per distinct activation and table
format, so Q/K/V (and gate/up) share their tables."""
from __future__ import annotations

from dataclasses import replace

from ...ir.graph import Graph, Ref
from ...ir.ops import Op
from ...ir.shapes import build
from ..manager import Pass
from .calibrate import progress
from .config import QuantConfig
from .weight import QuantizedWeight, quantize_weight


def quantized_linears(g: Graph):
    """(node, weight key) for every linear whose weight is a stored constant."""
    for node in g.nodes():
        if node.op is Op.LINEAR:
            w = g.node(node.inputs[1].node)
            if w.op is Op.CONST and "ref" in w.attrs:
                yield node, w.attrs["ref"]


def lut_attrs(qw: QuantizedWeight) -> dict:
    c = qw.config
    return {"bits": qw.bits, "ternary": c.ternary, "group_size": qw.group_size, "k": qw.k, "k_pad": qw.k_pad,
            "n": qw.n, "g": c.g, "table_dtype": c.table_dtype, "acc_dtype": "i32" if c.table_dtype == "int8" else "f32",
            "symmetric_table": True, "scale_dtype": c.scale_dtype, "layout": qw.layout}


def add_quantized_weight(g: Graph, key: str, qw: QuantizedWeight) -> list[Ref]:
    """Store the packed planes, scales and zero points as weights named after the float weight."""
    refs = [g.add_const(qw.packed(), weight_key=key + ".qweight", name=key + ".qweight").out,
            g.add_const(qw.scales, weight_key=key + ".scales", name=key + ".scales").out]
    if qw.zeros is not None:
        refs.append(g.add_const(qw.zeros, weight_key=key + ".zeros", name=key + ".zeros").out)
    return refs


def emit_lut_matmul(g: Graph, x: Ref, qw: QuantizedWeight, wrefs: list[Ref], bias: Ref | None,
                    tables: dict, name: str) -> Ref:
    attrs = lut_attrs(qw)
    pre_attrs = {k: attrs[k] for k in ("k", "k_pad", "group_size", "g", "table_dtype", "symmetric_table")}
    pkey = (x, tuple(sorted(pre_attrs.items())))
    if pkey not in tables:
        tables[pkey] = build(g, Op.LUT_PRECOMPUTE, [x], pre_attrs, name=f"{x.node}_tables")
    pre = tables[pkey]
    ins = [Ref(pre.name, 0), Ref(pre.name, 1), Ref(pre.name, 2), *wrefs] + ([bias] if bias is not None else [])
    attrs.update(zero_point=qw.zeros is not None, has_bias=bias is not None)
    return build(g, Op.LUT_MATMUL, ins, attrs, name=f"{name}_lut").out


class Quantize(Pass):
    name = "quantize"
    requires = frozenset({"typed"})
    ensures = frozenset({"quantized"})

    def __init__(self, config: QuantConfig, hessians: dict | None = None, progress: bool = False,
                 cache: dict | None = None):
        """``cache`` (weight key, LayerQuant) -> QuantizedWeight lets callers reuse quantized weights across
        compiles that differ only in how tables are built."""
        self.config, self.hessians, self.progress = config, hessians or {}, progress
        self.cache = {} if cache is None else cache
        self.report: dict[str, dict] = {}

    def run(self, g: Graph) -> bool:
        linears = list(quantized_linears(g))
        self.config.check_patterns(sorted({k for _, k in linears}))
        self._calibrate(g, {k for _, k in linears})
        done: dict[str, tuple[QuantizedWeight, list[Ref]]] = {}
        tables: dict = {}
        for node, key in progress(linears, "quantizing", self.progress):
            cfg = self.config.resolve(key)
            if cfg is None:
                continue
            if key not in done:
                ckey = (key, replace(cfg, table_dtype="-"))
                if ckey not in self.cache:
                    self.cache[ckey] = quantize_weight(g.weights[key], cfg, hessian=self.hessians.get(key))
                qw = replace(self.cache[ckey], config=cfg)
                done[key] = (qw, add_quantized_weight(g, key, qw))
                self.report[key] = {"bits": cfg.bits, "group_size": qw.group_size, "method": cfg.method,
                                    "bytes": qw.nbytes}
            qw, wrefs = done[key]
            bias = node.inputs[2] if len(node.inputs) > 2 else None
            g.replace_uses(node.out, emit_lut_matmul(g, node.inputs[0], qw, wrefs, bias, tables, node.name))
        if done:
            from ..dce import eliminate_dead_code

            eliminate_dead_code(g)
        return bool(done)


    def _calibrate(self, g: Graph, keys: set[str]) -> None:
        need = {k for k in keys if (c := self.config.resolve(k)) is not None and c.method == "gptq"} - set(self.hessians)
        if not need:
            return
        if self.config.calibration is None:
            raise ValueError(f"method='gptq' needs calibration inputs (QuantConfig(calibration=[...])) for "
                             f"{len(need)} layers, e.g. {sorted(need)[0]}")
        from .calibrate import collect_hessians

        self.hessians.update(collect_hessians(g, self.config.calibration, need, self.progress))
