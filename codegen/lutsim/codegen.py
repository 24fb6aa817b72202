"""lut_precompute / lut_matmul ops -> lmma programs.

A lut_matmul of M rows is cut into blocks of BM x BN (whole lmma tiles; at most 16 accumulator tiles per
block, the core's c registers). For every block and K group the tables [BM, runs, 8] and the packed weight
planes [bits, BN, runs/2] are copied to shared memory, then the lmma tiles run in the order TVM's schedule
gives (``tir.lmma_sites``: W fragment reused across the M tiles) -- or, with ``use_tvm=False``, the same
order from a plain Python tiler -- and each tile's integer (or fp32) sums are scaled into float64
accumulators once per group. The epilogue applies the zero point, the bias and stores the block.

The weights stay in the offline-remapped layout the quantizer produced (bitplane-g4-sym-v1: symmetrized
indices, the inversion done offline, the sign in the top bit of each nibble): an lmma W fragment is one
nibble column of it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .isa import Addr, Box, BufferDecl, Instr, LmmaShape, Program, Reg

# graph table dtype -> default lmma A dtype
A_FOR_TABLE = {"int8": "s8", "f32": "f32"}
MEM_FOR_A = {"s8": "s8", "f16": "f16", "f8": "f16", "f32": "f32"}   # f8 tables live in f16 containers
DT_FOR_A = {"s8": "int8", "f16": "float16", "f8": "float16", "f32": "float32"}  # TIR dtype of the tables
TBUILD_ROWS = 16


@dataclass(frozen=True)
class Tiling:
    tm: int = 2
    tn: int = 64
    tk: int = 4


def w_dtype(attrs) -> str:
    return "t2" if attrs.get("ternary") else f"u{attrs['bits']}"


def lmma_for(attrs, a: str, tiling: Tiling) -> LmmaShape:
    acc = "s32" if a == "s8" else "f32"
    return LmmaShape(tiling.tm, tiling.tn, tiling.tk, a, w_dtype(attrs), acc, acc)


def python_sites(BM, BN, R, TM, TN) -> tuple:
    """The same tile order as the TVM schedule (r, n tile, m tile), without TVM."""
    sites = [("init", m, n) for n in range(0, BN, TN) for m in range(0, BM, TM)]
    sites += [("lmma", m, n, r) for r in range(R) for n in range(0, BN, TN) for m in range(0, BM, TM)]
    return tuple(sites)


def _sites(BM, BN, R, B, TM, TN, a, use_tvm):
    if use_tvm:
        from .tir import lmma_sites

        return lmma_sites(BM, BN, R, B, TM, TN, DT_FOR_A[a])
    return python_sites(BM, BN, R, TM, TN)


class MatmulCodegen:
    """Emits the lmma program of one lut_matmul for M rows (``program()``), or its parts per block
    kind (``block_parts``) for the cost estimate of large layers."""

    def __init__(self, attrs: dict, m: int, a: str | None = None, tiling: Tiling = Tiling(), use_tvm: bool = True,
                 scale_dtype: str | None = None, name: str = "lut_matmul"):
        self.attrs, self.m, self.name = attrs, m, name
        self.a = a or A_FOR_TABLE[attrs.get("table_dtype", "int8")]
        self.lm = lmma_for(attrs, self.a, tiling)
        self.bits = self.lm.planes
        self.n, self.k, self.kp, self.gs = attrs["n"], attrs["k"], attrs["k_pad"], attrs["group_size"]
        self.G, self.R = self.kp // self.gs, self.gs // 4
        self.zp, self.has_bias = bool(attrs.get("zero_point")), bool(attrs.get("has_bias"))
        TM, TN = tiling.tm, tiling.tn
        n_n = min(2, -(-self.n // TN))
        n_m = max(1, min(8, 16 // n_n, -(-m // TM)))
        self.BM, self.BN = TM * n_m, TN * n_n
        self.sdt = scale_dtype or ("f16" if attrs.get("scale_dtype", "f16") == "f16" else "f32")
        self.sites = _sites(self.BM, self.BN, self.R, self.bits, TM, TN, self.a, use_tvm)

    def decls(self) -> list[BufferDecl]:
        m, n, G = self.m, self.n, self.G
        d = [BufferDecl("tables", MEM_FOR_A[self.a], (m, self.kp // 4, 8), "global"),
             BufferDecl("tscale", "f32", (m, G), "global"), BufferDecl("xsum", "f32", (m, G), "global"),
             BufferDecl("wq", "u8", (self.bits, n, self.kp // 8), "global"),
             BufferDecl("scales", self.sdt, (n, G), "global")]
        if self.zp:
            d.append(BufferDecl("zeros", self.sdt, (n, G), "global"))
        if self.has_bias:
            d.append(BufferDecl("bias", "f32", (n,), "global"))
        d += [BufferDecl("out", "f32", (m, n), "global", "out"),
              BufferDecl("sT", MEM_FOR_A[self.a], (self.BM, self.R, 8), "shared"),
              BufferDecl("sW", "u8", (self.bits, self.BN, self.R // 2), "shared")]
        return d

    def params(self) -> dict:
        return {"m": self.m, "n": self.n, "k": self.k, "k_pad": self.kp, "group_size": self.gs,
                "groups": self.G, "bits": self.bits, "block": [self.BM, self.BN]}

    def _program(self, code) -> Program:
        return Program("lut_matmul", self.name, self.lm, self.params(), self.decls(), list(code))

    def block_parts(self, m0: int, n0: int, groups=None):
        """(prologue, [per-group code], epilogue) of the block at rows m0, columns n0."""
        lm, R, TM, TN = self.lm, self.R, self.lm.m, self.lm.n
        mvb, nvb = min(self.BM, self.m - m0), min(self.BN, self.n - n0)
        n_n = self.BN // TN
        tiles = [(mt, nt) for mt in range(0, mvb, TM) for nt in range(0, nvb, TN)]

        def ci(mt, nt):
            return (mt // TM) * n_n + nt // TN

        pro = [Instr("zero", (Reg("y", ci(*t)),)) for t in tiles]
        if mvb < self.BM:
            pro.append(Instr("fill", ("sT",)))
        if nvb < self.BN:
            pro.append(Instr("fill", ("sW",)))
        per_group = []
        for g in (range(self.G) if groups is None else groups):
            code = [Instr("ld.g2s", (Addr("sT", (0, 0, 0)), Addr("tables", (m0, g * R, 0)), Box((mvb, R, 8)))),
                    Instr("ld.g2s", (Addr("sW", (0, 0, 0)), Addr("wq", (0, n0, g * R // 2)),
                                     Box((self.bits, nvb, R // 2))))]
            a_in, w_in = {}, {}
            for s in self.sites:
                if s[1] >= mvb or s[2] >= nvb:
                    continue  # a tile wholly outside the matrix is not issued
                if s[0] == "init":
                    code.append(Instr("zero", (Reg("c", ci(s[1], s[2])),)))
                    continue
                _, mt, nt, r = s
                ar, wr = Reg("a", mt // TM), Reg("w", nt // TN)
                if a_in.get(ar) != (mt, r):
                    code.append(Instr("ldf.a", (ar, Addr("sT", (mt, r, 0)))))
                    a_in[ar] = (mt, r)
                if w_in.get(wr) != (nt, r):
                    code.append(Instr("ldf.w." + ("lo" if r % 2 == 0 else "hi"), (wr, Addr("sW", (0, nt, r // 2)))))
                    w_in[wr] = (nt, r)
                c = Reg("c", ci(mt, nt))
                code.append(Instr(lm.mnemonic, (c, ar, wr, c)))
            for mt, nt in tiles:
                ext = Box((min(TM, mvb - mt), min(TN, nvb - nt)))
                code.append(Instr("gscale", (Reg("y", ci(mt, nt)), Reg("c", ci(mt, nt)),
                                             Addr("tscale", (m0 + mt, g)), Addr("scales", (n0 + nt, g)), ext)))
            per_group.append(code)
        epi = []
        for mt, nt in tiles:
            y, ext = Reg("y", ci(mt, nt)), Box((min(TM, mvb - mt), min(TN, nvb - nt)))
            if self.zp:
                epi.append(Instr("zcorr", (y, Addr("xsum", (m0 + mt, 0)), Addr("scales", (n0 + nt, 0)),
                                           Addr("zeros", (n0 + nt, 0)), ext)))
            if self.has_bias:
                epi.append(Instr("bias", (y, Addr("bias", (n0 + nt,)), ext)))
            epi.append(Instr("st.r2g", (Addr("out", (m0 + mt, n0 + nt)), y, ext)))
        return pro, per_group, epi

    def program(self) -> Program:
        code = []
        for m0 in range(0, self.m, self.BM):
            for n0 in range(0, self.n, self.BN):
                pro, groups, epi = self.block_parts(m0, n0)
                code += pro
                for gcode in groups:
                    code += gcode
                code += epi
        return self._program(code)

    def estimate(self, cfg=None):
        """The cost of ``program()`` without emitting it: one block of each kind (full, M tail, N tail,
        corner), one K group of each, multiplied out."""
        from ...sim.cost import CoreConfig, Cost, program_cost

        cfg = cfg or CoreConfig()
        total = Cost()
        fm, fn = self.m // self.BM, self.n // self.BN
        kinds = [(0, 0, fm * fn)]
        if self.m % self.BM:
            kinds.append((fm * self.BM, 0, fn))
        if self.n % self.BN:
            kinds.append((0, fn * self.BN, fm))
        if self.m % self.BM and self.n % self.BN:
            kinds.append((fm * self.BM, fn * self.BN, 1))
        for m0, n0, count in kinds:
            if not count:
                continue
            pro, groups, epi = self.block_parts(m0, n0, groups=[0])
            total.add(program_cost(self._program(pro + epi), cfg, launch=False), count)
            total.add(program_cost(self._program(groups[0]), cfg, launch=False), count * self.G)
        p = self._program([])
        base = program_cost(p, cfg)
        total.launch = base.launch
        total.useful_lookups = base.useful_lookups
        total.peak_lookups_per_cycle = base.peak_lookups_per_cycle
        return total


def precompute_program(attrs: dict, m: int, a: str | None = None, name: str = "lut_precompute") -> Program:
    a = a or A_FOR_TABLE[attrs.get("table_dtype", "int8")]
    k, kp, gs = attrs["k"], attrs["k_pad"], attrs["group_size"]
    G = kp // gs
    decls = [BufferDecl("x", "f32", (m, k), "global"),
             BufferDecl("tables", MEM_FOR_A[a], (m, kp // 4, 8), "global", "out"),
             BufferDecl("tscale", "f32", (m, G), "global", "out"),
             BufferDecl("xsum", "f32", (m, G), "global", "out")]
    code = [Instr(f"tbuild.{a}", (Addr("tables", (r, 0, 0)), Addr("tscale", (r, 0)), Addr("xsum", (r, 0)),
                                  Addr("x", (r, 0)), Box((min(TBUILD_ROWS, m - r),))))
            for r in range(0, m, TBUILD_ROWS)]
    return Program("lut_precompute", name, None, {"m": m, "k": k, "k_pad": kp, "group_size": gs, "groups": G},
                   decls, code)
