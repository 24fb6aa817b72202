"""The ``lut-sim`` target: LUT ops run as lmma programs on the functional simulator, every other op on the
numpy reference kernels; each call leaves a report (per-layer cycles, utilization, table-build share,
energy) on ``executable.report``."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ...ir.graph import Graph
from ...ir.ops import Op
from ..reference.executor import Executor, bind_inputs
from ..reference.kernels import KERNELS
from ...ir import dims as D
from .codegen import A_FOR_TABLE, MatmulCodegen, Tiling, precompute_program

# producers a table precompute fuses into (its activations are still in registers there)
FUSABLE = {"rms_norm", "layer_norm", "mul", "add", "sub", "div", "silu", "gelu", "sigmoid", "relu", "tanh",
           "cast", "neg", "sdpa", "reshape", "transpose"}


@dataclass
class LayerRecord:
    name: str
    m: int
    n: int
    k: int
    bits: int
    lmma: str
    cycles: float
    bound: str
    utilization: float
    table_cycles: float          # this layer's share of its table precompute (fused or not)
    table_fused: bool
    energy_nj: float
    instructions: int
    pipes: dict = field(default_factory=dict)

    @property
    def table_share(self) -> float:
        return self.table_cycles / (self.cycles + self.table_cycles) if self.cycles + self.table_cycles else 0.0


class Report:
    """Per-layer costs of the last call. ``print(report)`` shows a table; ``report.save(path)`` writes JSON."""

    def __init__(self, target_info: dict):
        self.info = target_info
        self.layers: list[LayerRecord] = []

    @property
    def total_cycles(self) -> float:
        return sum(r.cycles + r.table_cycles for r in self.layers)

    @property
    def total_energy_nj(self) -> float:
        return sum(r.energy_nj for r in self.layers)

    def to_dict(self) -> dict:
        return {"target": self.info, "total_cycles": self.total_cycles, "total_energy_nj": self.total_energy_nj,
                "layers": [{**r.__dict__, "table_share": r.table_share} for r in self.layers]}

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    def table(self) -> str:
        head = f"{'layer':<34} {'M':>5} {'N':>6} {'K':>6} {'b':>2} {'cycles':>10} {'bound':>7} {'util':>6} " \
               f"{'tables':>7} {'energy nJ':>10}"
        lines = [head, "-" * len(head)]
        for r in self.layers:
            lines.append(f"{r.name[-34:]:<34} {r.m:>5} {r.n:>6} {r.k:>6} {r.bits:>2} {r.cycles:>10.0f} "
                         f"{r.bound:>7} {r.utilization:>6.1%} {r.table_share:>7.1%} {r.energy_nj:>10.1f}")
        lines.append(f"total: {self.total_cycles:.0f} cycles ({self.total_cycles / self.info['freq_ghz'] / 1e3:.1f} "
                     f"us at {self.info['freq_ghz']} GHz), {self.total_energy_nj:.1f} nJ; tables = table build "
                     f"(fused into the producer where it is elementwise/norm) / (layer + table build)")
        return "\n".join(lines)

    __str__ = table


class LutSimExecutor(Executor):
    def __init__(self, g: Graph, target: "LutSimTarget"):
        super().__init__(g)
        self.t = target
        self.report = Report(target.info())
        self._programs: dict = {}
        consumers: dict[str, list[str]] = {}
        for n in g.nodes():
            for r in n.inputs:
                consumers.setdefault(r.node, []).append(n.name)
        self.consumers = consumers

    def program(self, node, m: int):
        """The lmma programs of a LUT node for m rows (cached per shape)."""
        key = (node.name, m)
        if key not in self._programs:
            if node.op is Op.LUT_PRECOMPUTE:
                self._programs[key] = precompute_program(node.attrs, m, self.t.a_for(node.attrs), name=node.name)
            else:
                cg = MatmulCodegen(node.attrs, m, self.t.a_for(node.attrs), self.t.tiling, self.t.use_tvm,
                                   name=node.name)
                self._programs[key] = cg.program()
        return self._programs[key]

    def __call__(self, inputs) -> list[np.ndarray]:
        from ...sim.cost import program_cost
        from ...sim.machine import Machine

        arrays, env = bind_inputs(self.g, inputs)
        values = {n: [a] for n, a in zip(self.g.inputs, arrays)}
        self.report = Report(self.t.info())
        pre_cost: dict[str, tuple[float, bool, int]] = {}

        def dim(d):
            return D.evaluate(d, env) if isinstance(d, str) else (int(d) if not isinstance(d, (int, float)) else d)

        for i, node in enumerate(self.order):
            if node.op is Op.CONST:
                values[node.name] = [self.const(node.out, dim)]
            else:
                ins = [values[r.node][r.index] for r in node.inputs]
                try:
                    if node.op is Op.LUT_PRECOMPUTE:
                        out = self._precompute(node, ins, pre_cost)
                    elif node.op is Op.LUT_MATMUL:
                        out = self._matmul(node, ins, pre_cost)
                    else:
                        out = KERNELS[node.op](node.attrs, ins, dim)
                except Exception as e:
                    raise type(e)(f"{node.op.value} {node.name}: {e}") from e
                values[node.name] = out if isinstance(out, list) else [np.asarray(out)]
            for name in self.free_after[i]:
                del values[name]
        return [values[r.node][r.index] for r in self.g.outputs]

    def _precompute(self, node, ins, pre_cost):
        from ...sim.cost import program_cost
        from ...sim.machine import Machine

        x = ins[0]
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = np.ascontiguousarray(x.reshape(-1, k), np.float32)
        p = self.program(node, x2.shape[0])
        o = Machine(p, self.t.cfg).run({"x": x2})
        producer = self.g.node(node.inputs[0].node)
        fused = self.t.fuse and producer.op.value in FUSABLE
        c = program_cost(p, self.t.cfg, fused=fused)
        pre_cost[node.name] = (c.cycles, fused, len(self.consumers.get(node.name, [])) or 1)
        return [o["tables"].reshape(lead + o["tables"].shape[1:]), o["tscale"].reshape(lead + o["tscale"].shape[1:]),
                o["xsum"].reshape(lead + o["xsum"].shape[1:])]

    def _matmul(self, node, ins, pre_cost):
        from ...sim.cost import program_cost
        from ...sim.machine import Machine

        a = node.attrs
        tables, tscale, xsum, packed, scales = ins[:5]
        rest = list(ins[5:])
        zeros = rest.pop(0) if a.get("zero_point") else None
        bias = rest.pop(0) if a.get("has_bias") else None
        lead = tables.shape[:-2]
        m = int(np.prod(lead, dtype=np.int64))
        p = self.program(node, m)
        bufs = {"tables": tables.reshape((m,) + tables.shape[-2:]), "tscale": tscale.reshape(m, -1),
                "xsum": xsum.reshape(m, -1), "wq": packed, "scales": scales}
        if zeros is not None:
            bufs["zeros"] = zeros
        if bias is not None:
            bufs["bias"] = np.asarray(bias, np.float32)
        y = Machine(p, self.t.cfg).run(bufs)["out"]
        c = program_cost(p, self.t.cfg)
        pc, fused, share = pre_cost.get(node.inputs[0].node, (0.0, False, 1))
        self.report.layers.append(LayerRecord(
            node.name, m, a["n"], a["k"], p.lmma.planes, p.lmma.mnemonic, c.cycles, c.bound, c.utilization,
            pc / share, fused, c.energy_nj, len(p.code), dict(c.pipes)))
        return y.reshape(lead + (a["n"],))


class LutSimTarget:
    """``a_dtype``: table dtype of the lmma A operand ("s8", "f16", "f8", "f32"; default: the graph's
    table_dtype, int8 -> s8, f32 -> f32). ``tiling``: the lmma shape (default M2N64K4). ``use_tvm``: schedule
    the tiles with TVM (else the same order from a Python tiler). ``fuse``: cost table precompute as fused
    into an elementwise/norm producer."""
    name = "lut-sim"

    def __init__(self, a_dtype: str | None = None, tiling: Tiling = Tiling(), use_tvm: bool = True, fuse: bool = True,
                 cfg=None):
        from ...sim.cost import CoreConfig

        self.a_dtype, self.tiling, self.use_tvm, self.fuse = a_dtype, tiling, use_tvm, fuse
        self.cfg = cfg or CoreConfig()

    def a_for(self, attrs) -> str:
        return self.a_dtype or A_FOR_TABLE[attrs.get("table_dtype", "int8")]

    def info(self) -> dict:
        return {"name": self.name, "lmma": f"m{self.tiling.tm}n{self.tiling.tn}k{self.tiling.tk}",
                "a_dtype": self.a_dtype or "from table_dtype", "freq_ghz": self.cfg.freq_ghz,
                "fuse": self.fuse, "tvm_schedule": self.use_tvm}

    def build(self, g: Graph) -> LutSimExecutor:
        return LutSimExecutor(g, self)
