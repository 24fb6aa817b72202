"""The Hopper prefill GEMM with the weights as the register operand (sm_90a): ``Y^T = W X^T`` on
``wgmma.mma_async`` with A = dequantized weights in registers, B = activations in shared memory, as TVMScript.

Two warpgroups per block, 64 weight rows each (the block's 128 rows, grid as every CUDA LUT kernel); the MMA's N is
the activation tile (MT = 64 or 128 rows). Nothing dequantized goes through shared memory: each thread turns the
code words of its two weight rows (``g`` and ``g + 8`` of its warp's 16) straight into the A fragments of the
``m64nMTk16`` steps (the mma.sync A layout: a half2 of K positions ``2c, 2c + 1`` and one of ``2c + 8, 2c + 9``,
c = lane % 4). The code layout pairs K positions ``(k, k + 16)`` in a word (``layout.py``), so a k16 step takes
the activation granules (8 K each) ``32 i + 8 j`` and ``32 i + 16 + 8 j`` of a 32-K piece ``i`` (j = 0, 1): the
activations are copied into the 128-byte swizzled K-major rows in that granule order, and a lane's two pairs
``(f, F + f)``, ``(f + 1, F + f + 1)`` (f = (8 j + 2 c) % F, word slot (8 j + 2 c) // F) become its two fragment
registers with one ``prmt`` each. Per 64-K unit and thread: 8 code words, 16 pairs (shift, mask, ``lea`` into
the 0x6400 exponent, ``hsub2``, ``hmul2``), 8 ``prmt``, four wgmma k16 steps.

Shared memory holds the activation stages (cp.async, ``stages - 2`` units ahead: a stage is refilled once both
warpgroups' MMAs of two units back are complete, which the unit's barrier guarantees) and the weight side of the
coming chunks (``gemm.copy_weights_macro``). Same arguments, grid and split-K protocol as every CUDA LUT kernel.
Numerics: those of mma.py (float16 weights ``s (q - z)`` and activations, float32 sums).
"""
from __future__ import annotations

from .layout import CHUNK, ROWS
from .tir import THREADS, KernelParams, kernel_func
from . import gemm, wgmma
from .mma import reduce_partials_macro

TILES = (64, 128)       # activation rows per block (the MMA's N)
UNIT = 64               # K per pipeline unit: one 128-byte swizzle row of float16
NT = 2 * THREADS        # two warpgroups
ARCHS = wgmma.ARCHS


def _rs_helper(n: int) -> str:
    acc = n // 2
    d = ", ".join(f"%{i}" for i in range(acc))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(acc))
    return (f"__device__ __forceinline__ void lutc_wgmma_rs{n}(float* d, int a0, int a1, int a2, int a3, int b) {{\n"
            f"  unsigned long long db = lutc_sw128_desc(b);\n"
            f'  asm volatile("{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{acc + 5}, 0;\\n"\n'
            f'               "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.f16.f16 {{{d}}}, '
            f'{{%{acc}, %{acc + 1}, %{acc + 2}, %{acc + 3}}}, %{acc + 4}, p, 1, 1, 0;\\n}}\\n"\n'
            f'               : {outs} : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db), "r"(1));\n}}\n')


PRELUDE = "// lutc Hopper GEMM, weights in registers (codegen/cuda/wgrs.py)\n" + "".join(_rs_helper(n) for n in TILES)


def supports(bits: int, layout: str, k: int, x_dtype: str, arch: str) -> bool:
    return wgmma.supports(bits, layout, k, x_dtype, arch)


def tile(m: int) -> int:
    return TILES[0] if m <= TILES[0] else TILES[-1]


def default_stages(mt: int) -> int:
    return 5 if mt == TILES[-1] else 6


def choose_split(chunks: int, row_blocks: int, m: int, mt: int, sms: int = 132) -> int:
    """wgmma.py's rule with one block per SM per wave."""
    tiles = -(-m // mt)

    def cost(split):
        cps = -(-chunks // split)
        return -(-row_blocks * tiles * split // sms) * cps + 3 * split, split

    best = min((s for s in (1, 2, 4, 8, 16) if s == 1 or chunks // s >= 4), key=cost)
    return -(-chunks // best)


def wgrs_func(p: KernelParams):
    from ..tvmscript import T

    if p.mt not in TILES:
        raise ValueError(f"the register-operand Hopper GEMM takes activation tiles of {TILES} rows, got {p.mt}")
    if not supports(p.bits, p.layout, p.k, p.x_dtype, p.arch):
        raise ValueError(f"the register-operand Hopper GEMM takes {'/'.join(ARCHS)}, b-bit code layouts and float16 "
                         f"activations with whole 16-byte rows; got {p.arch}, layout {p.layout}, K = {p.k}, "
                         f"{p.x_dtype}")

    N, K, C, B, MT, CPS = p.n, p.k, p.chunks, p.bits, p.mt, p.cps
    RAGGED = C % CPS != 0
    DIRECT = p.split == 1
    HZ, RES, YDT = p.has_zero, p.residual, p.y_dtype
    NS = p.stages or default_stages(MT)
    NSC = (NS + 1) // 2                  # weight-side chunk stages: chunk c + NSC - 1 rides in unit 2c's group,
                                         # complete at unit 2c + NS - 2 <= 2 (c + NSC - 1)
    SSW, ZSW = gemm.SCALE_SLOT, gemm.ZERO_SLOT
    CB = (1 << B) - 1
    F = 16 // B
    ACC = MT // 2                        # float32 accumulators per thread
    A_BYTES = MT * UNIT * 2              # per activation stage
    CPT = MT * (UNIT // 8) // NT         # activation copies per thread and unit
    SA = NS * A_BYTES + 1024
    M2 = CB * 0x10001
    f32 = "float32"
    reduce_partials = reduce_partials_macro(p, NT)
    copy_weights = gemm.copy_weights_macro(p)

    @T.macro
    def copy_a(X, abase, u, c0, bz, tid, m):
        """cp.async of unit ``u``'s activations: smem granule q of a row holds K = 64 h + 32 (q // 4)
        + 8 ((q // 2) % 2) + 16 (q % 2) of the unit's chunk (the k16 step q // 2 takes granules 2s, 2s + 1)."""
        for e in T.unroll(CPT):
            r: T.let = (e * NT + tid) // 8
            q: T.let = (e * NT + tid) % 8
            kk: T.let = c0 * CHUNK + u * UNIT + (q // 4) * 32 + ((q // 2) % 2) * 8 + (q % 2) * 16
            ok: T.let = bz * MT + r < m and kk < K
            T.evaluate(T.call_extern(
                "void", "lutc_cp16s", abase + (u % NS) * A_BYTES + r * 128 + T.bitwise_xor(q, r % 8) * 16,
                T.address_of(X[T.if_then_else(ok, bz * MT + r, 0), T.if_then_else(ok, kk, 0)]),
                T.if_then_else(ok, 16, 0)))

    @T.macro
    def take_w(WSB, SSB, ZSB, wr, sc, kz, c, h, rows, slots):
        """Unit h of chunk c: the code words (rows r, steps (il, j)) and per-piece scales and zero points."""
        cs: T.let = c % NSC
        for r in T.unroll(2):
            for j in T.unroll(2):
                for il in T.unroll(2):
                    wr[(r * 2 + j) * 2 + il] = WSB[cs * B * ROWS * 4 + (slots[j] * ROWS + rows[r]) * 4 + 2 * h + il]
            for il in T.unroll(2):
                sc[r * 2 + il] = T.call_pure_extern(
                    "int32", "lutc_h2", T.Cast(f32, SSB[(cs * 4 + 2 * h + il) * SSW + rows[r]]) * T.float32(0.5))
                if HZ:
                    kz[r * 2 + il] = T.call_pure_extern(
                        "int32", "lutc_h2", T.Cast(f32, ZSB[(cs * 4 + 2 * h + il) * ZSW + rows[r]])
                        + T.float32(1024 + CB))
                else:
                    kz[r * 2 + il] = T.call_pure_extern("int32", "lutc_h2", T.float32(1024 + CB))

    @T.macro
    def dequant(wr, sc, kz, hv, av, buf, shifts):
        """The unit's A fragments into register buffer ``buf``: step ks = 2 il + j, register 4 ks + 2 g2 + r
        (g2: the granule 32 i + 8 j or the one 16 further; r: row g or g + 8)."""
        for r in T.unroll(2):
            for il in T.unroll(2):
                for j in T.unroll(2):
                    for e in T.unroll(2):        # pairs f + e: 2q in bits 1..B of each half, into 1024 + 2q
                        hv[e] = T.call_pure_extern("int32", "lutc_dq_h2", T.bitwise_and(
                            T.shift_right(wr[(r * 2 + j) * 2 + il], shifts[j] + B * e), T.int32(M2)) * 2
                            + T.int32(0x64006400), kz[r * 2 + il], sc[r * 2 + il])
                    av[buf * 16 + (2 * il + j) * 4 + r] = T.call_pure_extern(
                        "int32", "__byte_perm", hv[0], hv[1], T.int32(0x5410))
                    av[buf * 16 + (2 * il + j) * 4 + 2 + r] = T.call_pure_extern(
                        "int32", "__byte_perm", hv[0], hv[1], T.int32(0x7632))

    @T.macro
    def body(X, W, S, Z, P, CNT, Y, R, m, bz, by, bx, tid):
        SMA = T.alloc_buffer((SA,), "uint8", scope="shared.dyn")
        WSB = T.alloc_buffer((NSC * B * ROWS * 4,), "int32", scope="shared.dyn")
        SSB = T.alloc_buffer((NSC * 4 * SSW,), "float16", scope="shared.dyn")
        ZSB = T.alloc_buffer((NSC * 4 * ZSW if HZ else 16,), "int8", scope="shared.dyn")
        wr = T.alloc_buffer((8,), "int32", scope="local")
        sc = T.alloc_buffer((4,), "int32", scope="local")
        kz = T.alloc_buffer((4,), "int32", scope="local")
        hv = T.alloc_buffer((2,), "int32", scope="local")
        av = T.alloc_buffer((32,), "int32", scope="local")           # two units' A fragments
        acc = T.alloc_buffer((ACC,), f32, scope="local")
        rows = T.alloc_buffer((2,), "int32", scope="local")
        slots = T.alloc_buffer((2,), "int32", scope="local")
        shifts = T.alloc_buffer((2,), "int32", scope="local")
        abase: T.let = T.call_pure_extern("int32", "lutc_smem_base", T.address_of(SMA[0]))
        if tid == 0:        # see wgmma.py: the swizzled region is used by address only
            SMA[SA - 1] = T.uint8(0)
        lane: T.let = tid % 32
        cl: T.let = lane % 4
        row0: T.let = (tid // 32) * 16 + lane // 4        # block row of the thread's first weight row
        rows[0] = row0
        rows[1] = row0 + 8
        for j in T.unroll(2):
            slots[j] = (8 * j + 2 * cl) // F
            shifts[j] = B * ((8 * j + 2 * cl) % F)
        c0: T.let = by * CPS
        nc: T.let = T.min(CPS, C - c0) if RAGGED else CPS
        for i in T.unroll(ACC):
            acc[i] = T.float32(0)
        for u0 in T.unroll(NS - 2):
            if u0 < 2 * nc:
                copy_a(X, abase, u0, c0, bz, tid, m)
            if u0 < NSC - 1 and u0 < nc and tid < THREADS:
                copy_weights(W, S, Z, WSB, SSB, ZSB, c0 + u0, (c0 + u0) % NSC, bx, tid)
            T.evaluate(T.call_extern("void", "lutc_cp_commit"))
        for u in T.serial(2 * nc):
            T.evaluate(T.call_extern("void", f"lutc_cp_wait<{NS - 3}>"))
            T.evaluate(T.call_extern("void", "lutc_fence_async"))
            # every thread's copies of unit u are in, and both warpgroups' MMAs of unit u - 2 are done
            T.tvm_storage_sync("shared")
            if u + NS - 2 < 2 * nc:
                copy_a(X, abase, u + NS - 2, c0, bz, tid, m)
            if u % 2 == 0 and u // 2 + NSC - 1 < nc and tid < THREADS:
                copy_weights(W, S, Z, WSB, SSB, ZSB, c0 + u // 2 + NSC - 1, (c0 + u // 2 + NSC - 1) % NSC, bx,
                             tid)
            T.evaluate(T.call_extern("void", "lutc_cp_commit"))
            for h in T.unroll(2):
                if u % 2 == h:
                    take_w(WSB, SSB, ZSB, wr, sc, kz, c0 + u // 2, h, rows, slots)
                    dequant(wr, sc, kz, hv, av, h, shifts)
                    T.evaluate(T.call_extern("void", "lutc_wgmma_fence"))
                    for ks in T.unroll(UNIT // 16):
                        T.evaluate(T.call_extern(
                            "void", f"lutc_wgmma_rs{MT}", acc.data, av[h * 16 + ks * 4], av[h * 16 + ks * 4 + 1],
                            av[h * 16 + ks * 4 + 2], av[h * 16 + ks * 4 + 3],
                            abase + (u % NS) * A_BYTES + ks * 32))
            T.evaluate(T.call_extern("void", "lutc_wgmma_commit"))
            T.evaluate(T.call_extern("void", "lutc_wgmma_wait<1>"))
        T.evaluate(T.call_extern("void", "lutc_wgmma_wait<0>"))
        if tid == 0:
            SMA[SA - 1] = T.uint8(0)
        # accumulator 4 j + i: weight row row0 + 8 (i // 2), activation row 8 j + 2 (lane % 4) + i % 2
        for j in T.unroll(MT // 8):
            for i in T.unroll(4):
                tok: T.let = bz * MT + 8 * j + 2 * cl + i % 2
                nn: T.let = bx * ROWS + row0 + 8 * (i // 2)
                if tok < m:
                    if DIRECT:
                        if nn < N:
                            if RES:
                                Y[tok, nn] = T.Cast(YDT, acc[4 * j + i] + R[tok, nn])
                            else:
                                Y[tok, nn] = T.Cast(YDT, acc[4 * j + i])
                    else:
                        P[by, tok, nn] = acc[4 * j + i]
        if not DIRECT:
            reduce_partials(P, CNT, Y, R, m, bz, bx, tid)

    return kernel_func(p, body, NT)
