"""The tensor-core kernel for LUT matmuls with several activation rows (prefill, batched decode), as TVMScript.

Same weights (layout ``cuda-g4-c128-v1``, or the code layouts ``cuda-n{1,2,4}-c128-v1`` it shares with the
dp4a GEMV: one shift + mask per weight pair instead of the plane bits below), same arguments and split-K protocol
as the LUT kernel (tir.py);
where the LUT kernel's lookups grow with M on CUDA cores, this one dequantizes each weight once to float16 in
registers and multiplies on the tensor cores (``mma.sync.m16n8k16``, float32 accumulation):
``Y^T[N, M] = W[N, K] . X^T[K, M]`` with the weights as the A operand (16 rows per mma) and the activations
as B (8 rows per mma), so a block of 4 warps covers 128 weight rows (a warp: 2 A tiles of 16) and MT
activation rows.

The k16 steps take a chunk's K positions in the order of the weight words: at step ``st`` the lane with index
``i`` in its quad holds, in its two slot pairs ``jj``, the K positions ``32 i + 2 st + jj`` and 16 more, i.e.
bits ``2 st + jj`` and ``2 st + jj + 16`` of word ``i`` of each plane. So a lane loads one 32-bit word per row
and plane per chunk, and two 32-bit ops per plane move the two bits, masked, into the float16 mantissas of a half2
``1024 + 2q`` (``0x6400`` exponent trick); one ``hsub2`` with ``1024 + 2z`` and one ``hmul2`` with ``s / 2``
give the weights ``s (q - z)``. The activations are staged in shared memory in the same order, as half2 pairs
(word ``i``'s pair ``p`` at ``17 i + p``, rows of 68 words: conflict-free fragment loads). The next chunk's
weights and scales (and, for tiles of up to 32 rows, activations) are loaded while the current one is
multiplied.

Numerics: weights and activations are float16 on the tensor cores (as in cuBLAS fp16 and torch's int4
matmul); the dequantized weight ``s (q - z)`` is rounded once to float16 (relative 2^-11), the products are
exact in float32 and summed in float32. bfloat16 and float32 activations are rounded to float16 when staged
(bfloat16 has 8 significant bits, float16 11: exact within the float16 range, except below 2^-14 where float16
goes subnormal). Activations beyond the float16 range (|x| > 65504) would overflow: weights quantized with
``table_dtype="f32"`` keep the float32 LUT kernel for every row count.
"""
from __future__ import annotations

from .layout import CHUNK, CODE_LAYOUTS, ROWS
from .tir import PRELUDE as HANDOFF_PRELUDE
from .tir import THREADS, KernelParams, kernel_func, last_block_macro

RSW = CHUNK // 2 + 4       # 32-bit words per staged activation row: 64 + 4 of padding (bank-conflict free)
MMA_TILES = (16, 32, 64)   # activation rows per block
PREFETCH_X_MAX = 32        # tiles up to this many rows keep the next chunk's activations in flight (registers:
                           # 64 rows would hold 206-255 and spill); larger tiles load them at staging time

PRELUDE = r"""
#include <cuda_fp16.h>
""" + HANDOFF_PRELUDE + r"""
// lutc tensor-core helpers (codegen/cuda/mma.py): half2 values travel as 32-bit ints through TIR
__device__ __forceinline__ int lutc_h2(float a) {
  half2 h = __float2half2_rn(a); return *reinterpret_cast<int*>(&h);
}
__device__ __forceinline__ int lutc_pack_h2(float lo, float hi) {
  half2 h = __floats2half2_rn(lo, hi); return *reinterpret_cast<int*>(&h);
}
__device__ __forceinline__ int lutc_dq_h2(int v, int kz, int s) {
  half2 r = __hmul2(__hsub2(*reinterpret_cast<half2*>(&v), *reinterpret_cast<half2*>(&kz)),
                    *reinterpret_cast<half2*>(&s));
  return *reinterpret_cast<int*>(&r);
}
__device__ __forceinline__ int lutc_dq_h2o(int v, int kz, int s, int o) {   // (v - kz) s + o: real zero points
  half2 r = __hfma2(__hsub2(*reinterpret_cast<half2*>(&v), *reinterpret_cast<half2*>(&kz)),
                    *reinterpret_cast<half2*>(&s), *reinterpret_cast<half2*>(&o));
  return *reinterpret_cast<int*>(&r);
}
"""


def dequant_h2(v, kz, sc, off=None):
    """TIR call: the half2 weights ``s (q - z)`` from ``v`` = half2 ``1024 + 2q``, ``kz`` = ``1024 + z' + 2^b - 1``
    (integer z'), ``sc`` = ``s / 2``; ``off`` = ``-e s / 2`` for real zero points (z' + e, layout.py)."""
    from ..tvmscript import T

    if off is None:
        return T.call_pure_extern("int32", "lutc_dq_h2", v, kz, sc)
    return T.call_pure_extern("int32", "lutc_dq_h2o", v, kz, sc, off)


def supports(group_size: int, groups: int) -> bool:
    """Whether the tensor-core kernel takes this grouping: each lane's 32-K word must lie in one group."""
    return groups == 1 or group_size % 32 == 0


def mma_tile(m: int, bits: int) -> int:
    """Activation rows per block for ``m`` rows of ``bits``-plane weights. Past 32 rows, 3-4 planes take the
    64-row tile (half the dequantization per row: at M = 128 on an H200 W4 ran 13-23% faster than with 32-row
    tiles) and 1-2 planes keep the 32-row one, whose activations stay in flight (W2: 4-9% faster)."""
    if m > 32 and bits <= 2:
        return 32
    return next((t for t in MMA_TILES if m <= t), MMA_TILES[-1])


def choose_split(chunks: int, m: int, mt: int) -> int:
    """Chunks per block (K split = chunks / this): 4 for one activation-row tile, 8 for more. Measured on an
    H200 over 2/4/8/32 chunks per block at N = 4096/11008/14336, K = 4096, M = 4/16/128: within 8% of the best
    everywhere; how many waves the grid makes mattered less than the depth of each block's chunk pipeline."""
    return min(chunks, 4 if m <= mt else 8)


def code_pair(u, f, bits: int):
    """Codes ``f`` and ``F + f`` of ``u`` (a code layout, F = 16 / bits: the pair K, K + 16) as ``2q`` in the
    mantissa bits 1..bits and 17..16 + bits: the same ``1024 + 2q`` half2 as the plane bits make (the shift folds
    to one direction once the unrolled loops make ``f`` a constant). Shared by the tensor-core kernels."""
    from ..tvmscript import T

    moved = T.Select(f == 0, T.shift_left(u, 1), T.shift_right(u, T.max(bits * f - 1, 0)))
    return T.bitwise_and(moved, T.int32(((1 << bits) - 1) * 2 * 0x10001))


def reduce_partials_macro(p: KernelParams, threads: int = THREADS, rows_in_flight: int = 8):
    """TVMScript macro for the split-K end of the tensor-core kernels (here, gemm.py, wgmma.py): the last block
    to finish a (row tile, 128-row block) sums the partials of every split, thread ``tid`` (< ``threads``; every
    thread of the block takes part in its barriers) for weight row ``bx * 128 + tid % 128`` and the activation
    rows of its ``tid // 128``-th share of the tile, ``rows_in_flight`` rows at a time so that their partial-sum
    loads (that many per split) are in flight together. ``count``: the row block's partials (``p.split``, or with
    stream-K its segments, at most ``p.split``)."""
    from ..tvmscript import T

    MT, SPLIT, N, YDT, RES = p.mt, p.split, p.n, p.y_dtype, p.residual
    SHARE = MT // (threads // ROWS)      # activation rows per thread
    RU = min(rows_in_flight, SHARE)
    if SHARE * (threads // ROWS) != MT or SHARE % RU:
        raise ValueError(f"{threads} threads do not share {MT} activation rows {RU} at a time")
    f32 = "float32"
    last_block = last_block_macro()

    @T.macro
    def reduce_partials(P, CNT, Y, R, m, bz, bx, tid, count):
        red = T.alloc_buffer((RU,), f32, scope="local")
        last = T.alloc_buffer((1,), "int32", scope="shared")
        lastl = T.alloc_buffer((1,), "int32", scope="local")
        last_block(CNT, bz, bx, tid, last, lastl, count)
        if lastl[0] == 1 and tid < threads:
            nr: T.let = bx * ROWS + tid % ROWS
            r0: T.let = bz * MT + (tid // ROWS) * SHARE
            for mo in T.serial(SHARE // RU):
                for u in T.unroll(RU):
                    red[u] = T.float32(0)
                for sp in T.unroll(SPLIT):
                    for u in T.unroll(RU):
                        if r0 + mo * RU + u < m and sp < count:
                            red[u] = red[u] + T.call_extern(
                                f32, "__ldcg", T.address_of(P[sp, r0 + mo * RU + u, nr]))
                for u in T.unroll(RU):
                    if r0 + mo * RU + u < m and nr < N:
                        if RES:
                            Y[r0 + mo * RU + u, nr] = T.Cast(YDT, red[u] + R[r0 + mo * RU + u, nr])
                        else:
                            Y[r0 + mo * RU + u, nr] = T.Cast(YDT, red[u])
            if tid == 0:
                CNT[bz, bx] = 0

    return reduce_partials


def mma_matmul_func(p: KernelParams):
    from ..tvmscript import T

    if p.mt not in MMA_TILES:
        raise ValueError(f"the tensor-core kernel takes activation tiles of {MMA_TILES} rows, got {p.mt}")
    if not supports(p.group_size, p.groups):
        raise ValueError(f"the tensor-core kernel needs groups of a multiple of 32 (or one per row), got {p.group_size}")

    N, K, C, B, GS, MT, CPS = p.n, p.k, p.chunks, p.bits, p.group_size, p.mt, p.cps
    SPLIT = p.split
    RAGGED = C % CPS != 0
    DIRECT = SPLIT == 1
    HZ, REAL, G = p.has_zero, p.real_zero, p.groups
    RES = p.residual
    NT = MT // 8                         # mma n8 tiles of activation rows
    PAIRS = MT * (CHUNK // 2) // THREADS  # staged activation pairs per thread and chunk
    PFX = MT <= PREFETCH_X_MAX
    CB = (1 << B) - 1
    CODES = p.layout in CODE_LAYOUTS.values()
    if CODES and p.layout != CODE_LAYOUTS.get(B):
        raise ValueError(f"layout {p.layout} does not hold {B}-bit codes")
    F = 16 // B if CODES else 0          # code fields per half word
    YDT = p.y_dtype
    f32 = "float32"
    reduce_partials = reduce_partials_macro(p)

    def plane_bits(u, t, cbit):
        """Bits ``cbit`` and ``cbit + 16`` of ``u`` moved to the mantissa bits ``t + 1`` and ``t + 17`` (the
        shift folds to one direction once the unrolled loops make ``cbit`` and ``t`` constants)."""
        sh = cbit - (t + 1)
        moved = T.Select(sh >= 0, T.shift_right(u, T.max(sh, 0)), T.shift_left(u, T.max(-sh, 0)))
        return T.bitwise_and(moved, T.shift_left(T.int32(0x10001), t + 1))

    @T.macro
    def fetch_w(c, W, S, Z, wn, sn, zn, en, n0, tig):
        """Issue the loads of chunk ``c``'s weights (the lane's word of 4 rows x planes), scales and zero
        points (and their fractions); consumed one chunk later (registers in flight)."""
        for rs in T.unroll(4):
            for t in T.unroll(B):
                wn[rs * B + t] = W[c, t, n0 + 8 * rs, tig]
            sn[rs] = T.Cast(f32, S[(c * CHUNK + tig * 32) // GS, n0 + 8 * rs])
            if HZ:
                zn[rs] = T.Cast(f32, Z[(c * CHUNK + tig * 32) // GS, n0 + 8 * rs])
            if REAL:
                en[rs] = T.Cast(f32, S[G + (c * CHUNK + tig * 32) // GS, n0 + 8 * rs])

    @T.macro
    def fetch_x(c, X, xn, bz, tid, m):
        """Issue the loads of this thread's activation pairs of chunk ``c``."""
        for e in T.unroll(PAIRS):
            row: T.let = bz * MT + (e * THREADS + tid) // (CHUNK // 2)
            wd: T.let = (e * THREADS + tid) % (CHUNK // 2)
            kk: T.let = c * CHUNK + (wd // 16) * 32 + wd % 16
            xn[2 * e] = T.if_then_else(row < m and kk < K, T.Cast(f32, X[row, kk]), T.float32(0))
            xn[2 * e + 1] = T.if_then_else(row < m and kk + 16 < K, T.Cast(f32, X[row, kk + 16]), T.float32(0))

    @T.macro
    def body(X, W, S, Z, P, CNT, Y, R, m, bz, by, bx, tid):
        XS = T.alloc_buffer((MT * RSW,), "int32", scope="shared")
        wn = T.alloc_buffer((4 * B,), "int32", scope="local")       # next chunk, in flight
        sn = T.alloc_buffer((4,), f32, scope="local")
        zn = T.alloc_buffer((4,), f32, scope="local")
        en = T.alloc_buffer((4,), f32, scope="local")
        xn = T.alloc_buffer((2 * PAIRS,), f32, scope="local")
        wr = T.alloc_buffer((4 * B,), "int32", scope="local")       # [row slot, plane]
        kz = T.alloc_buffer((4,), "int32", scope="local")           # half2 1024 + 2z
        sc = T.alloc_buffer((4,), "int32", scope="local")           # half2 s / 2
        ofs = T.alloc_buffer((4,), "int32", scope="local")          # half2 -e s / 2 (real zero points)
        af = T.alloc_buffer((8,), "int32", scope="local")           # A fragments, 2 tiles
        bf = T.alloc_buffer((2,), "int32", scope="local")
        acc = T.alloc_buffer((2 * NT * 4,), f32, scope="local")
        vv = T.alloc_buffer((1,), "int32", scope="local")
        lane: T.let = tid % 32
        g: T.let = lane // 4
        tig: T.let = lane % 4
        n0: T.let = bx * ROWS + (tid // 32) * 32 + g    # row slot rs: n0 + 8 rs
        for i in T.unroll(2 * NT * 4):
            acc[i] = T.float32(0)
        for i in T.unroll(4):
            zn[i] = T.float32(0)
        fetch_w(by * CPS, W, S, Z, wn, sn, zn, en, n0, tig)
        if PFX:
            fetch_x(by * CPS, X, xn, bz, tid, m)
        for cc in T.serial(CPS):
            c: T.let = by * CPS + cc
            if not RAGGED or c < C:
                # take chunk c out of flight: scales as half2, activations as half2 pairs
                # (p, p + 16) of word i at 17 i + p in shared memory
                for i in T.unroll(4 * B):
                    wr[i] = wn[i]
                for i in T.unroll(4):
                    sc[i] = T.call_pure_extern("int32", "lutc_h2", sn[i] * T.float32(0.5))
                    kz[i] = T.call_pure_extern("int32", "lutc_h2", zn[i] + T.float32(1024 + CB))
                    if REAL:
                        ofs[i] = T.call_pure_extern("int32", "lutc_h2", en[i] * sn[i] * T.float32(-0.5))
                T.tvm_storage_sync("shared")
                if not PFX:
                    fetch_x(c, X, xn, bz, tid, m)
                for e in T.unroll(PAIRS):
                    XS[((e * THREADS + tid) // (CHUNK // 2)) * RSW
                       + ((e * THREADS + tid) % (CHUNK // 2)) // 16 * 17 + (e * THREADS + tid) % 16] = (
                        T.call_pure_extern("int32", "lutc_pack_h2", xn[2 * e], xn[2 * e + 1]))
                T.tvm_storage_sync("shared")
                if cc + 1 < CPS and (not RAGGED or c + 1 < C):
                    fetch_w(c + 1, W, S, Z, wn, sn, zn, en, n0, tig)
                    if PFX:
                        fetch_x(c + 1, X, xn, bz, tid, m)
                for st in T.unroll(CHUNK // 16):   # k16 steps: bits 2 st + jj (+ 16) of each word
                    for a in T.unroll(2):
                        for jj in T.unroll(2):
                            for hr in T.unroll(2):
                                rs2: T.let = a * 2 + hr
                                vv[0] = T.int32(0x64006400)
                                if CODES:   # word (2 st + jj) // F, codes (2 st + jj) % F and + F
                                    vv[0] = vv[0] | code_pair(wr[rs2 * B + (2 * st + jj) // F], (2 * st + jj) % F, B)
                                else:
                                    for t in T.unroll(B):
                                        vv[0] = vv[0] | plane_bits(wr[rs2 * B + t], t, 2 * st + jj)
                                af[a * 4 + jj * 2 + hr] = dequant_h2(vv[0], kz[rs2], sc[rs2],
                                                                     ofs[rs2] if REAL else None)
                    for j8 in T.unroll(NT):
                        bf[0] = XS[(j8 * 8 + g) * RSW + tig * 17 + 2 * st]
                        bf[1] = XS[(j8 * 8 + g) * RSW + tig * 17 + 2 * st + 1]
                        for a in T.unroll(2):
                            T.ptx_legacy.mma("m16n8k16", "row", "col", "fp16", "fp16", "fp32",
                                             af.data, a * 4, bf.data, 0, acc.data,
                                             (a * NT + j8) * 4, False, dtype=f32)
        # accumulator i of tile (a, j8): weight row n0 + 16 a + 8 (i // 2), activation row
        # j8 * 8 + 2 tig + i % 2
        for a in T.unroll(2):
            for j8 in T.unroll(NT):
                for i in T.unroll(4):
                    tok: T.let = bz * MT + j8 * 8 + tig * 2 + i % 2
                    nn: T.let = n0 + 16 * a + 8 * (i // 2)
                    if tok < m:
                        if DIRECT:
                            if nn < N:
                                if RES:
                                    Y[tok, nn] = T.Cast(YDT, acc[(a * NT + j8) * 4 + i] + R[tok, nn])
                                else:
                                    Y[tok, nn] = T.Cast(YDT, acc[(a * NT + j8) * 4 + i])
                        else:
                            P[by, tok, nn] = acc[(a * NT + j8) * 4 + i]
        if not DIRECT:
            reduce_partials(P, CNT, Y, R, m, bz, bx, tid, SPLIT)

    return kernel_func(p, body)
