"""Cycle, traffic and energy model of one lmma core, evaluated on programs instruction by instruction.

Pipes run concurrently (double-buffered loads overlap the lookups), so a program takes as long as its
busiest pipe plus the kernel launch: ``tensor`` (lmma: one cycle per weight bit plane, bit-serial),
``vector`` (table building, per-group scaling, zero point, bias), ``global`` (device-memory port: global ->
shared loads, epilogue operand reads, stores) and ``shared`` (shared -> register fragment loads).
Energy: lmma cycles at the LUT array's energy per cycle (sim/hw.py) plus bytes moved at each level plus
vector operations.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..codegen.lutsim.isa import A_DTYPES, LMMA_SHAPES, MEM_DTYPES, Addr, Box, Program
from . import hw

# vector operations per table-building step
TBUILD_OPS_PER_RUN = 12          # 8 signed sums of 4 activations from 4 pair sums
TBUILD_QUANT_OPS_PER_RUN = 32    # int8 tables: max-abs (8), scale, round, clip (3 per entry)


@dataclass(frozen=True)
class CoreConfig:
    shapes: tuple = LMMA_SHAPES
    regs: tuple = (("a", 8), ("w", 8), ("c", 16), ("y", 16))
    shared_bytes: int = 192 * 1024
    freq_ghz: float = hw.FREQ_GHZ
    global_bytes_per_cycle: float = 32.0     # device memory share of one core
    shared_bytes_per_cycle: float = 128.0
    vec_ops_per_cycle: float = 64.0
    launch_cycles: int = 1500                # kernel launch + prologue of a standalone kernel
    e_global_pj_per_byte: float = 40.0       # DRAM/HBM access incl. I/O (~5 pJ/bit)
    e_shared_pj_per_byte: float = 1.5        # SRAM scratchpad
    e_reg_pj_per_byte: float = 0.4           # register file
    e_vec_op_pj: float = 0.6                 # one fp16/int vector op at 28 nm

    def reg_count(self, cls: str) -> int:
        return dict(self.regs)[cls]


@dataclass
class Cost:
    pipes: dict = field(default_factory=lambda: {"tensor": 0.0, "vector": 0.0, "global": 0.0, "shared": 0.0})
    bytes: dict = field(default_factory=lambda: {"global": 0.0, "shared": 0.0, "reg": 0.0})
    energy_pj: dict = field(default_factory=lambda: {"lmma": 0.0, "global": 0.0, "shared": 0.0, "reg": 0.0,
                                                      "vector": 0.0})
    counts: dict = field(default_factory=dict)
    launch: float = 0.0
    useful_lookups: float = 0.0       # lookups of real (unpadded) data x bit planes
    peak_lookups_per_cycle: float = 0.0

    @property
    def cycles(self) -> float:
        return max(self.pipes.values()) + self.launch

    @property
    def energy_nj(self) -> float:
        return sum(self.energy_pj.values()) / 1e3

    @property
    def utilization(self) -> float:
        if not self.peak_lookups_per_cycle or not self.cycles:
            return 0.0
        return self.useful_lookups / (self.peak_lookups_per_cycle * self.cycles)

    @property
    def bound(self) -> str:
        """The busiest pipe, or "launch" when the kernel launch outweighs all of them."""
        top = max(self.pipes, key=self.pipes.get)
        return "launch" if self.launch > self.pipes[top] else top

    def add(self, other: "Cost", times: float = 1.0) -> "Cost":
        for d in ("pipes", "bytes", "energy_pj"):
            for k, v in getattr(other, d).items():
                getattr(self, d)[k] = getattr(self, d).get(k, 0.0) + v * times
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v * times
        self.launch += other.launch * times
        self.useful_lookups += other.useful_lookups * times
        self.peak_lookups_per_cycle = max(self.peak_lookups_per_cycle, other.peak_lookups_per_cycle)
        return self

    def to_dict(self) -> dict:
        return {"cycles": self.cycles, "pipes": dict(self.pipes), "bound": self.bound,
                "utilization": self.utilization, "bytes": dict(self.bytes), "energy_nj": self.energy_nj,
                "energy_pj": dict(self.energy_pj), "counts": dict(self.counts), "launch": self.launch}


def _nbytes(prog: Program, buf: str, elems: int) -> float:
    return elems * np.dtype(MEM_DTYPES[prog.buffer(buf).dtype]).itemsize


def _a_bytes(a: str) -> int:
    return A_DTYPES[a][1]


def program_cost(prog: Program, cfg: CoreConfig = CoreConfig(), fused: bool = False,
                 launch: bool = True) -> Cost:
    """Cost of one program. ``fused``: a precompute program runs inside its producer's kernel (the
    activations are already in registers, the tables are written instead of the activations, no launch)."""
    c = Cost()
    lm = prog.lmma
    arr = None
    if lm is not None:
        arr = hw.lut_array(lm.m, lm.n, lm.k, lm.a if lm.a in hw.A_BITS else "f16", lm.planes)
        c.peak_lookups_per_cycle = lm.m * lm.n
    vec = cfg.vec_ops_per_cycle
    for ins in prog.code:
        b = ins.base
        c.counts[b] = c.counts.get(b, 0) + 1
        a = ins.args
        if b == "ld.g2s":
            n = _nbytes(prog, a[1].buf, int(np.prod(a[2].ext)))
            c.pipes["global"] += n / cfg.global_bytes_per_cycle
            c.bytes["global"] += n
            c.bytes["shared"] += n
        elif b in ("ldf.a", "ldf.w.lo", "ldf.w.hi"):
            n = lm.m * lm.entries * _a_bytes(lm.a) if b == "ldf.a" else lm.planes * lm.n / 2
            c.pipes["shared"] += n / cfg.shared_bytes_per_cycle
            c.bytes["shared"] += n
            c.bytes["reg"] += n
        elif b == "lmma":
            c.pipes["tensor"] += lm.planes
            c.energy_pj["lmma"] += lm.planes * arr.energy_pj_per_cycle
            acc_b = 4
            c.bytes["reg"] += 2 * lm.m * lm.n * acc_b
        elif b == "zero":
            c.pipes["vector"] += 1
        elif b in ("gscale", "zcorr", "bias", "st.r2g"):
            mv, nv = a[-1].ext
            groups = prog.params.get("groups", 1)
            ops = {"gscale": 3 * mv * nv, "zcorr": 2 * mv * nv * groups, "bias": mv * nv, "st.r2g": 0}[b]
            c.pipes["vector"] += ops / vec
            c.energy_pj["vector"] += ops * cfg.e_vec_op_pj
            if b == "gscale":
                n = _nbytes(prog, a[2].buf, mv) + _nbytes(prog, a[3].buf, nv)
            elif b == "zcorr":
                n = _nbytes(prog, a[1].buf, mv * groups) + 2 * _nbytes(prog, a[2].buf, nv * groups)
            elif b == "bias":
                n = _nbytes(prog, a[1].buf, nv)
            else:
                n = _nbytes(prog, a[0].buf, mv * nv)
            c.pipes["global"] += n / cfg.global_bytes_per_cycle
            c.bytes["global"] += n
        elif b == "tbuild":
            rows = a[4].ext[0]
            k, kp, groups = prog.params["k"], prog.params["k_pad"], prog.params["groups"]
            runs = kp // 4
            a_dt = ins.op.split(".", 1)[1]
            ops = rows * runs * (TBUILD_OPS_PER_RUN + (TBUILD_QUANT_OPS_PER_RUN if a_dt == "s8" else 4) + 1)
            c.pipes["vector"] += ops / vec
            c.energy_pj["vector"] += ops * cfg.e_vec_op_pj
            tbytes = rows * runs * 8 * _a_bytes(a_dt) + 2 * _nbytes(prog, a[1].buf, rows * groups)
            xbytes = _nbytes(prog, a[3].buf, rows * k)
            n = max(tbytes - xbytes, 0.0) if fused else tbytes + xbytes
            c.pipes["global"] += n / cfg.global_bytes_per_cycle
            c.bytes["global"] += n
        elif b == "fill":
            n = prog.buffer(a[0]).nbytes
            c.pipes["shared"] += n / cfg.shared_bytes_per_cycle
        else:
            raise ValueError(f"no cost for opcode {ins.op}")
    for lvl, e in (("global", cfg.e_global_pj_per_byte), ("shared", cfg.e_shared_pj_per_byte),
                   ("reg", cfg.e_reg_pj_per_byte)):
        c.energy_pj[lvl] += c.bytes[lvl] * e
    if lm is not None:
        p = prog.params
        c.useful_lookups = p["m"] * p["n"] * -(-p["k"] // 4) * lm.planes
    c.launch = cfg.launch_cycles if (launch and not fused) else 0.0
    return c
