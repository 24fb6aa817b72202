"""Functional simulator of the lmma core: a static verifier and an interpreter.

``verify(program)`` checks every instruction before anything runs (opcodes, lmma shape and dtypes against
the program's ``.lmma`` and the core, register classes and numbers, reads of unwritten registers, address
ranges of every access, shared capacity, buffer dtypes). ``execute(program, buffers)`` binds host arrays to
the global buffers by name and runs the instructions; integer lookups accumulate exactly (int64, checked
against the int32 range), float lookups accumulate in float32 plane by plane.
"""
from __future__ import annotations

import numpy as np

from ..codegen.lutsim.isa import (A_DTYPES, ACC_DTYPES, MEM_DTYPES, OUT_DTYPES, Addr, Box, Instr, Program,
                                   ProgramError, Reg)
from .cost import CoreConfig

# operand kinds per opcode: r<cls> register, s shared addr, g global addr, S shared name, B box
SIGNATURES = {
    "fill": ("S",), "ld.g2s": ("s", "g", "B"), "ldf.a": ("ra", "s"), "ldf.w.lo": ("rw", "s"),
    "ldf.w.hi": ("rw", "s"), "zero": ("r",), "lmma": ("rc", "ra", "rw", "rc"),
    "gscale": ("ry", "rc", "g", "g", "B"), "zcorr": ("ry", "g", "g", "g", "B"), "bias": ("ry", "g", "B"),
    "st.r2g": ("g", "ry", "B"), "tbuild": ("g", "g", "g", "g", "B"),
}


def _err(i: int, ins: Instr, msg: str) -> ProgramError:
    return ProgramError(f"instruction {i} `{ins}`: {msg}")


def _region(decl, idx, ext, i, ins, what):
    if len(idx) != len(decl.shape) or len(ext) != len(decl.shape):
        raise _err(i, ins, f"{what} {decl.name} has rank {len(decl.shape)} {list(decl.shape)}, "
                           f"got index {list(idx)} and extent {list(ext)}")
    for d, (o, e, s) in enumerate(zip(idx, ext, decl.shape)):
        if o < 0 or e < 0 or o + e > s:
            raise _err(i, ins, f"out-of-bounds access to {decl.name}{list(decl.shape)}: dim {d} "
                               f"[{o}, {o + e}) exceeds [0, {s})")
    return tuple(slice(o, o + e) for o, e in zip(idx, ext))


class Machine:
    def __init__(self, program: Program, cfg: CoreConfig = CoreConfig()):
        self.p, self.cfg = program, cfg
        self.decl = {b.name: b for b in program.buffers}
        if len(self.decl) != len(program.buffers):
            raise ProgramError("duplicate buffer names")
        self.lm = program.lmma
        self.plan = self._verify()

    # ------------------------------------------------------------------ static checks
    def _verify(self) -> list:
        p, cfg, lm = self.p, self.cfg, self.lm
        if p.kernel not in ("lut_matmul", "lut_precompute"):
            raise ProgramError(f"unknown kernel kind {p.kernel!r}")
        if lm is not None:
            lm.check(cfg.shapes)
            if lm.k != 4:
                raise ProgramError(f"lmma k{lm.k}: the executable weight layout packs K = 4 per index")
        shared = sum(b.nbytes for b in p.buffers if b.space == "shared")
        if shared > cfg.shared_bytes:
            raise ProgramError(f"shared buffers need {shared} bytes; the core has {cfg.shared_bytes}")
        for b in p.buffers:
            if b.space not in ("global", "shared"):
                raise ProgramError(f"buffer {b.name}: unknown space {b.space!r}")
            if b.dtype not in MEM_DTYPES:
                raise ProgramError(f"buffer {b.name}: unknown dtype {b.dtype!r}")
        defined: set = set()
        plan = []
        for i, ins in enumerate(p.code):
            base = ins.base
            if base not in SIGNATURES:
                raise _err(i, ins, f"unknown opcode {ins.op!r}; known: {sorted(SIGNATURES)}")
            sig = SIGNATURES[base]
            if len(ins.args) != len(sig):
                raise _err(i, ins, f"{base} takes {len(sig)} operands, got {len(ins.args)}")
            if base == "lmma":
                if lm is None or ins.op != lm.mnemonic:
                    raise _err(i, ins, f"the program declares .lmma {lm.mnemonic if lm else None}")
            if base == "tbuild" and ins.op.split(".", 1)[1] not in A_DTYPES:
                raise _err(i, ins, f"tbuild dtype must be one of {list(A_DTYPES)}")
            if base in ("ldf.a", "ldf.w.lo", "ldf.w.hi", "gscale") and lm is None:
                raise _err(i, ins, "needs a .lmma declaration")
            for j, (kind, a) in enumerate(zip(sig, ins.args)):
                if kind.startswith("r"):
                    if not isinstance(a, Reg):
                        raise _err(i, ins, f"operand {j} must be a register")
                    if len(kind) == 2 and a.cls != kind[1]:
                        raise _err(i, ins, f"operand {j} must be a {kind[1]} register, got {a}")
                    if a.idx >= cfg.reg_count(a.cls):
                        raise _err(i, ins, f"register {a} does not exist (the core has "
                                           f"{cfg.reg_count(a.cls)} {a.cls} registers)")
                elif kind in ("s", "g"):
                    if not isinstance(a, Addr):
                        raise _err(i, ins, f"operand {j} must be an address buf[...]")
                    if a.buf not in self.decl:
                        raise _err(i, ins, f"unknown buffer {a.buf!r}")
                    want = "shared" if kind == "s" else "global"
                    if self.decl[a.buf].space != want:
                        raise _err(i, ins, f"operand {j} must be a {want} buffer, {a.buf} is "
                                           f"{self.decl[a.buf].space}")
                elif kind == "S":
                    if not isinstance(a, str) or a not in self.decl or self.decl[a].space != "shared":
                        raise _err(i, ins, f"operand {j} must name a shared buffer")
                elif kind == "B" and not isinstance(a, Box):
                    raise _err(i, ins, f"operand {j} must be a box [..]")
            plan.append(self._check_instr(i, ins, base, defined))
        return plan

    def _check_instr(self, i, ins, base, defined):
        a, lm, d = ins.args, self.lm, self.decl

        def need(r):
            if r not in defined:
                raise _err(i, ins, f"reads register {r} before anything wrote it")

        if base == "ld.g2s":
            if len(a[0].idx) != len(a[2].ext):
                raise _err(i, ins, "box rank differs from the shared buffer's")
            if d[a[0].buf].dtype != d[a[1].buf].dtype:
                raise _err(i, ins, f"dtype mismatch: {a[0].buf} is {d[a[0].buf].dtype}, "
                                   f"{a[1].buf} is {d[a[1].buf].dtype}")
            return (_region(d[a[0].buf], a[0].idx, a[2].ext, i, ins, "shared"),
                    _region(d[a[1].buf], a[1].idx, a[2].ext, i, ins, "global"))
        if base == "ldf.a":
            defined.add(a[0])
            m, j, e0 = a[1].idx if len(a[1].idx) == 3 else (None, None, None)
            if e0 is None:
                raise _err(i, ins, "A fragments load from a rank-3 [rows, runs, entries] buffer")
            return _region(d[a[1].buf], (m, j, e0), (lm.m, 1, lm.entries), i, ins, "shared")
        if base in ("ldf.w.lo", "ldf.w.hi"):
            defined.add(a[0])
            if d[a[1].buf].dtype != "u8":
                raise _err(i, ins, "W fragments load from a u8 buffer of packed nibbles")
            return _region(d[a[1].buf], a[1].idx, (lm.planes, lm.n, 1), i, ins, "shared")
        if base == "zero":
            defined.add(a[0])
            return None
        if base == "lmma":
            need(a[1]), need(a[2]), need(a[3])
            defined.add(a[0])
            return None
        if base == "gscale":
            need(a[1]), need(a[0])
            mv, nv = a[4].ext
            if mv > lm.m or nv > lm.n:
                raise _err(i, ins, f"extent {[mv, nv]} exceeds the tile {[lm.m, lm.n]}")
            return (_region(d[a[2].buf], a[2].idx, (mv, 1), i, ins, "global"),
                    _region(d[a[3].buf], a[3].idx, (nv, 1), i, ins, "global"))
        if base == "zcorr":
            need(a[0])
            mv, nv = a[4].ext
            g = d[a[1].buf].shape[1]
            return (_region(d[a[1].buf], a[1].idx, (mv, g), i, ins, "global"),
                    _region(d[a[2].buf], a[2].idx, (nv, g), i, ins, "global"),
                    _region(d[a[3].buf], a[3].idx, (nv, g), i, ins, "global"))
        if base == "bias":
            need(a[0])
            return _region(d[a[1].buf], a[1].idx, a[2].ext[1:], i, ins, "global")
        if base == "st.r2g":
            need(a[1])
            if d[a[0].buf].role != "out":
                raise _err(i, ins, f"stores to {a[0].buf}, which is not an output buffer")
            return _region(d[a[0].buf], a[0].idx, a[2].ext, i, ins, "global")
        if base == "tbuild":
            rows = a[4].ext[0]
            kp, g, k = self.p.params["k_pad"], self.p.params["groups"], self.p.params["k"]
            for j in (0, 1, 2):
                if d[a[j].buf].role != "out":
                    raise _err(i, ins, f"tbuild writes {a[j].buf}, which is not an output buffer")
            return (_region(d[a[0].buf], a[0].idx, (rows, kp // 4, 8), i, ins, "global"),
                    _region(d[a[1].buf], a[1].idx, (rows, g), i, ins, "global"),
                    _region(d[a[2].buf], a[2].idx, (rows, g), i, ins, "global"),
                    _region(d[a[3].buf], a[3].idx, (rows, k), i, ins, "global"))
        return None

    # ------------------------------------------------------------------ execution
    def run(self, buffers: dict) -> dict:
        """Run on host arrays (global 'in' buffers by name); returns the 'out' buffers."""
        mem = {}
        for b in self.p.buffers:
            want = np.dtype(MEM_DTYPES[b.dtype])
            if b.space == "shared":
                mem[b.name] = np.zeros(b.shape, want)
            elif b.role == "out" and b.name not in buffers:
                mem[b.name] = np.zeros(b.shape, want)
            else:
                if b.name not in buffers:
                    raise ProgramError(f"global buffer {b.name!r} is not bound")
                x = np.asarray(buffers[b.name])
                if x.dtype != want or tuple(x.shape) != tuple(b.shape):
                    raise ProgramError(f"buffer {b.name}: declared {b.dtype}{list(b.shape)}, bound "
                                       f"{x.dtype}{list(x.shape)}")
                mem[b.name] = x
        lm = self.lm
        regs: dict = {}
        acc_np = np.dtype(ACC_DTYPES[lm.acc]) if lm else None
        for ins, pl in zip(self.p.code, self.plan):
            b, a = ins.base, ins.args
            if b == "ld.g2s":
                mem[a[0].buf][pl[0]] = mem[a[1].buf][pl[1]]
            elif b == "fill":
                mem[a[0]][...] = 0
            elif b == "ldf.a":
                regs[a[0]] = mem[a[1].buf][pl][:, 0, :].copy()
            elif b in ("ldf.w.lo", "ldf.w.hi"):
                v = mem[a[1].buf][pl][:, :, 0]
                regs[a[0]] = (v & 15) if b.endswith("lo") else (v >> 4)
            elif b == "zero":
                regs[a[0]] = np.zeros((lm.m, lm.n), np.float64 if a[0].cls == "y" else acc_np)
            elif b == "lmma":
                regs[a[0]] = self._lmma(regs[a[1]], regs[a[2]], regs[a[3]], acc_np)
            elif b == "gscale":
                mv, nv = a[4].ext
                c = regs[a[1]][:mv, :nv].astype(np.float64)
                ts = mem[a[2].buf][pl[0]].astype(np.float64)            # [mv, 1]
                s = mem[a[3].buf][pl[1]][:, 0].astype(np.float64)       # [nv]
                regs[a[0]][:mv, :nv] += c * ts * (0.5 * s)
            elif b == "zcorr":
                mv, nv = a[4].ext
                bits = self.p.params["bits"]
                xs = mem[a[1].buf][pl[0]].astype(np.float64)
                s = mem[a[2].buf][pl[1]].astype(np.float64)
                z = mem[a[3].buf][pl[2]].astype(np.float64)
                regs[a[0]][:mv, :nv] -= xs @ (0.5 * s * (2 * z + 1 - (1 << bits))).T
            elif b == "bias":
                mv, nv = a[2].ext
                regs[a[0]][:mv, :nv] = regs[a[0]][:mv, :nv] + mem[a[1].buf][pl]
            elif b == "st.r2g":
                mv, nv = a[2].ext
                mem[a[0].buf][pl] = regs[a[1]][:mv, :nv]
            elif b == "tbuild":
                self._tbuild(ins, pl, mem)
        return {b.name: mem[b.name] for b in self.p.buffers if b.space == "global" and b.role == "out"}

    def _lmma(self, a, w, c, acc_np):
        idx = (w & 7).astype(np.intp)                                 # [planes, N]
        neg = w >= 8
        if acc_np.kind == "i":
            vals = a.astype(np.int64)[:, idx]                          # [M, planes, N]
            vals = np.where(neg[None], -vals, vals)
            out = c.astype(np.int64) + (vals << np.arange(w.shape[0])[None, :, None]).sum(1)
            if out.size and (out.max() > np.iinfo(np.int32).max or out.min() < np.iinfo(np.int32).min):
                raise OverflowError("lmma int32 accumulator overflow")
            return out.astype(np.int32)
        out = c.astype(np.float32)
        af = a.astype(np.float32)
        for t in range(w.shape[0]):                                    # bit-serial: one plane per cycle
            v = af[:, idx[t]]
            out = out + np.where(neg[t][None], -v, v) * np.float32(1 << t)
        return out

    def _tbuild(self, ins, pl, mem):
        from ..codegen.reference.lut import group_sums, precompute

        a_dt = ins.op.split(".", 1)[1]
        p = self.p.params
        x = mem[ins.args[3].buf][pl[3]]
        t, ts, xs = precompute(x, p["k_pad"], p["group_size"], "int8" if a_dt == "s8" else "f32")
        if a_dt in ("f16", "f8"):
            t = round_to(t, a_dt)
            xs = group_sums(t.astype(np.float32), ts)
        mem[ins.args[0].buf][pl[0]] = t
        mem[ins.args[1].buf][pl[1]] = ts
        mem[ins.args[2].buf][pl[2]] = xs


def round_to(x: np.ndarray, a: str) -> np.ndarray:
    """Round float tables to the A dtype; f8 (e4m3) values are held in float16 containers (exact)."""
    if a == "f16":
        return x.astype(np.float16)
    if a == "f8":
        import ml_dtypes

        if np.abs(x).max(initial=0) > 448:
            raise OverflowError("f8 (e4m3) tables overflow: |entry| > 448; use f16 or int8 tables")
        return x.astype(ml_dtypes.float8_e4m3fn).astype(np.float16)
    return x


def execute(program: Program, buffers: dict, cfg: CoreConfig = CoreConfig()) -> dict:
    return Machine(program, cfg).run(buffers)


def verify(program: Program, cfg: CoreConfig = CoreConfig()) -> None:
    Machine(program, cfg)
