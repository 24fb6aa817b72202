"""The lut_matmul accumulation of one block and one K group in TVM TIR, scheduled into lmma tiles.

``C[m, n] += sum_{r, t} 2^t * (sign ? -A[m, r, idx] : A[m, r, idx])`` (idx, sign from the symmetrized
nibble ``W[t, n, r]``) is written as a block-form PrimFunc, split into lmma-shaped tiles (elongated: the
lmma's M rows x N columns x one K-run of 4, the bit planes innermost, bit-serial), reordered so that a W
fragment is reused across the M tiles, the reduction's init is decomposed, and every tile is blockized.

An lmma tensor intrinsic (description + implementation that calls ``lmma``) is registered per shape,
dtype and bit width. ``Schedule.tensorize`` itself segfaults in apache-tvm 0.27.0.post1 (in
``tvm::ffi::ToJSONGraph`` called from ``tvm::s_tir::Tensorize`` -- also with TVM's own x86 VNNI intrinsic
on a plain int8 dot product), so the last step is done here: every blockized tile is checked against the
registered intrinsic's description (loop extents and iteration kinds of the inner block, shapes of its
read and write regions) and then read off as one lmma site. The sites, in the scheduled loop order, are
what the program emitter realizes with fragment loads and lmma instructions.
"""
from __future__ import annotations

from functools import lru_cache

import tvm
from tvm import s_tir
from ..tvmscript import T
from tvm.tirx import stmt as S

_REGISTERED: set = set()


def _acc(a_dtype: str) -> str:
    return "int32" if a_dtype == "int8" else "float32"


def block_func(BM: int, BN: int, R: int, B: int, dt: str):
    acc = _acc(dt)

    @T.prim_func(s_tir=True)
    def lut_block(a: T.handle, w: T.handle, c: T.handle):
        A = T.match_buffer(a, (BM, R, 8), dt)
        W = T.match_buffer(w, (B, BN, R), "uint8")
        C = T.match_buffer(c, (BM, BN), acc)
        for m, n, r, t in T.grid(BM, BN, R, B):
            with T.sblock("lut"):
                vm, vn, vr, vt = T.axis.remap("SSRR", [m, n, r, t])
                with T.init():
                    C[vm, vn] = T.Cast(acc, 0)
                C[vm, vn] = C[vm, vn] + T.if_then_else(
                    T.uint8(8) <= W[vt, vn, vr], T.Cast(acc, 0) - T.Cast(acc, A[vm, vr, W[vt, vn, vr] & T.uint8(7)]),
                    T.Cast(acc, A[vm, vr, W[vt, vn, vr] & T.uint8(7)])) * T.Cast(acc, T.shift_left(1, vt))

    return lut_block


def intrin_funcs(TM: int, TN: int, B: int, dt: str):
    acc = _acc(dt)

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, w: T.handle, c: T.handle):
        A = T.match_buffer(a, (TM, 1, 8), dt, offset_factor=1)
        W = T.match_buffer(w, (B, TN, 1), "uint8", offset_factor=1)
        C = T.match_buffer(c, (TM, TN), acc, offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:TM, 0:TN], A[0:TM, 0:1, 0:8], W[0:B, 0:TN, 0:1])
            T.writes(C[0:TM, 0:TN])
            for mi, ni, t in T.grid(TM, TN, B):
                with T.sblock("lut"):
                    vm, vn, vt = T.axis.remap("SSR", [mi, ni, t])
                    C[vm, vn] = C[vm, vn] + T.if_then_else(
                        T.uint8(8) <= W[vt, vn, 0], T.Cast(acc, 0) - T.Cast(acc, A[vm, 0, W[vt, vn, 0] & T.uint8(7)]),
                        T.Cast(acc, A[vm, 0, W[vt, vn, 0] & T.uint8(7)])) * T.Cast(acc, T.shift_left(1, vt))

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, w: T.handle, c: T.handle):
        A = T.match_buffer(a, (TM, 1, 8), dt, offset_factor=1)
        W = T.match_buffer(w, (B, TN, 1), "uint8", offset_factor=1)
        C = T.match_buffer(c, (TM, TN), acc, offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:TM, 0:TN], A[0:TM, 0:1, 0:8], W[0:B, 0:TN, 0:1])
            T.writes(C[0:TM, 0:TN])
            T.evaluate(T.call_extern("int32", f"lmma_m{TM}n{TN}k4_b{B}", C.data, C.elem_offset, A.data,
                                     A.elem_offset, W.data, W.elem_offset))

    return desc, impl


def intrin_name(TM: int, TN: int, B: int, dt: str) -> str:
    return f"lutsim.lmma.m{TM}n{TN}k4.{dt}.b{B}"


def register_intrin(TM: int, TN: int, B: int, dt: str) -> str:
    name = intrin_name(TM, TN, B, dt)
    if name not in _REGISTERED:
        desc, impl = intrin_funcs(TM, TN, B, dt)
        s_tir.TensorIntrin.register(name, desc, impl, override=True)
        _REGISTERED.add(name)
    return name


class TensorizeError(RuntimeError):
    pass


def _visit(node, f):
    """Pre-order walk over the statements this module produces (TVM 0.27 has no Python stmt visitor)."""
    f(node)
    if isinstance(node, S.SeqStmt):
        for s in node.seq:
            _visit(s, f)
    elif isinstance(node, S.For):
        _visit(node.body, f)
    elif isinstance(node, s_tir.SBlockRealize):
        _visit(node.block.body, f)
        if node.block.init is not None:
            _visit(node.block.init, f)


def _desc_contract(name: str):
    """(inner loop extents, iter kinds, region extents per buffer) of a registered intrinsic."""
    desc = s_tir.TensorIntrin.get(name).desc
    loops, kinds, regions = [], [], {}

    def visit(node):
        if isinstance(node, S.For):
            loops.append(int(node.extent))
        elif isinstance(node, s_tir.SBlockRealize) and node.block.name_hint in ("lut", "lut_update"):
            kinds.extend(int(iv.iter_type) for iv in node.block.iter_vars)
        elif isinstance(node, s_tir.SBlockRealize) and node.block.name_hint == "root":
            for r in node.block.reads:
                regions[r.source.dtype + ":" + str(len(r.region))] = [int(x.extent) for x in r.region]

    _visit(desc.body, visit)
    return loops, kinds, regions


def _eval(e, env):
    if isinstance(e, tvm.tirx.IntImm):
        return int(e.value)
    if isinstance(e, tvm.tirx.Var):
        return env[e.name]
    op = type(e).__name__
    f = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
         "FloorDiv": lambda a, b: a // b, "FloorMod": lambda a, b: a % b}.get(op)
    if f is None:
        raise TensorizeError(f"cannot evaluate {op} in a tile index: {e}")
    return f(_eval(e.a, env), _eval(e.b, env))


@lru_cache(maxsize=256)
def lmma_sites(BM: int, BN: int, R: int, B: int, TM: int, TN: int, dt: str) -> tuple:
    """Schedule one (block, K group) with TVM and return its lmma tiles in execution order:
    ("init", m0, n0) where a tile's accumulator is cleared, ("lmma", m0, n0, r) per lmma instruction."""
    if BM % TM or BN % TN:
        raise TensorizeError(f"block {BM}x{BN} is not a multiple of the lmma tile {TM}x{TN}")
    name = register_intrin(TM, TN, B, dt)
    want_loops, want_kinds, want_regions = _desc_contract(name)
    sch = s_tir.Schedule(block_func(BM, BN, R, B, dt))
    blk = sch.get_sblock("lut")
    m, n, r, t = sch.get_loops(blk)
    mo, mi = sch.split(m, [None, TM])
    no, ni = sch.split(n, [None, TN])
    sch.reorder(r, no, mo, mi, ni, t)      # W fragment (r, no) reused across the M tiles
    sch.decompose_reduction(blk, r)
    sch.blockize(mi)
    func = sch.mod["main"]
    sites = []

    def walk(node, env):
        if isinstance(node, S.SeqStmt):
            for s in node.seq:
                walk(s, env)
        elif isinstance(node, S.For):
            for v in range(int(node.min), int(node.min) + int(node.extent)):
                walk(node.body, {**env, node.loop_var.name: v})
        elif isinstance(node, s_tir.SBlockRealize):
            blk = node.block
            vals = {iv.var.name: _eval(x, env) for iv, x in zip(blk.iter_vars, node.iter_values)}
            if blk.name_hint == "root":
                walk(blk.body, env)
            elif blk.name_hint == "lut_init":
                if vals["vm"] % TM == 0 and vals["vn"] % TN == 0:
                    sites.append(("init", vals["vm"], vals["vn"]))
            elif blk.name_hint == "lut_update_o":
                _check_tile(blk, want_loops, want_kinds, want_regions)
                sites.append(("lmma", vals["vm_o"] * TM, vals["vn_o"] * TN, vals["vr_o"]))
            else:
                raise TensorizeError(f"unexpected block {blk.name_hint} in the scheduled lut_matmul")
        elif isinstance(node, S.BlockRealize if hasattr(S, "BlockRealize") else ()):
            walk(node.block.body, env)
        else:
            raise TensorizeError(f"unexpected statement {type(node).__name__} in the scheduled lut_matmul")

    walk(func.body, {})
    return tuple(sites)


def _check_tile(blk, want_loops, want_kinds, want_regions):
    """The manual tensorize: the blockized tile must be exactly the intrinsic's description."""
    loops, kinds = [], []

    def visit(node):
        if isinstance(node, S.For):
            loops.append(int(node.extent))
        elif isinstance(node, s_tir.SBlockRealize) and node.block.name_hint in ("lut", "lut_update"):
            kinds.extend(int(iv.iter_type) for iv in node.block.iter_vars)

    _visit(blk.body, visit)
    # a unit loop (1-bit weights: one plane) is simplified away together with its iteration variable
    if sorted(x for x in loops if x > 1) != sorted(x for x in want_loops if x > 1) or \
            (kinds != want_kinds and not (1 in want_loops and kinds == [k for k in want_kinds if k != 2])):
        raise TensorizeError(f"tile loops {loops} / iter kinds {kinds} do not match the lmma intrinsic "
                             f"({want_loops} / {want_kinds})")
    for rg in blk.reads:
        key = rg.source.dtype + ":" + str(len(rg.region))
        ext = [int(x.extent) for x in rg.region]
        if key in want_regions and ext != want_regions[key]:
            raise TensorizeError(f"tile reads {rg.source.name}{ext}, the lmma intrinsic {want_regions[key]}")
