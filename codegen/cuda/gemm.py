"""The prefill GEMM: LUT matmuls of many activation rows (M >= GEMM_MIN_M) on the tensor cores, as TVMScript.

Where the tensor-core kernel of mma.py is built for a few rows (tiles of 16-64, activations staged through
registers, weights loaded into registers a chunk ahead), this one takes a tile of MT = 64 or 128 activation
rows per block, so that each weight is dequantized once per MT rows and read from L2 once per MT rows, and feeds
its tensor cores from a pipeline of ``stages`` chunks (128 K each) in shared memory:

- every chunk's activations (float16, or float32 rounded to float16 on the way into the fragments), the block's
  weight words (the code layouts ``cuda-n{1,2,4}-c128-v1`` the dp4a GEMV reads: one copy of the weights serves
  decode and prefill) and the scale and zero-point rows of its groups are copied with ``cp.async`` (16 bytes per
  copy, no registers), ``stages - 1`` chunks ahead of the one being multiplied; activation rows are XOR-swizzled
  by 16-byte granule so that the fragment loads are conflict-free;
- the activations are the A operand of ``mma.sync.m16n8k16`` (16 rows per A tile, so the C fragments hold
  pairs of adjacent outputs), the weights the B operand (8 weight rows per B tile): a warp covers 32 weight
  rows and all MT activation rows, a block of 4 warps 128 weight rows;
- the weights are dequantized once per k16 step into float16 B fragments (one shift + mask + or into the
  ``0x6400`` exponent, one ``hsub2``, one ``hmul2``, as in mma.py), reused by all MT / 16 A tiles.

The layout's K order (a lane's half2 holds K positions ``(p, p + 16)``) is the one of mma.py; the A fragments
are built from the natural-order activation words with one ``prmt`` (or one ``cvt.rn.f16x2.f32`` for float32
activations) per register. Same arguments, grid and split-K protocol as every CUDA LUT kernel (tir.py).

On sm_90a float16 activations take wgmma.py instead (warpgroup MMAs); this kernel serves float32 activations (the
whole-model path) and sm_80-89. Measured (H200, M = 128, 96-call graphs, ``bench/cuda_proto/gemm/``): W2 27.0 /
59.6 / 64.7 us at N = 4096 / 11008 / 14336 (K = 4096), mma.py 27.9 / 73.1 / 92.7, cuBLAS fp16 13.3 / 25.9 / 33.4;
its profile: HMMA pipe 43% active, 6 instructions per HMMA, 2 warps per scheduler, a third of issue slots used.
The epilogue goes through the activation ring (epilogue.py): H100, float16 activations, W2 in graph 29.7 / 49.5 /
67.2 us, was 38.2 / 59.3 / 74.2 (run 10).

Numerics: those of the tensor-core kernel (mma.py): float16 weights ``s (q - z)`` and activations, float32 sums.
"""
from __future__ import annotations

from .layout import CHUNK, CODE_LAYOUTS, ROWS
from .tir import THREADS, KernelParams, kernel_func
from .mma import code_pair, dequant_h2, reduce_partials_macro
from .epilogue import staged_epilogue_macros

GEMM_TILES = (64, 128)   # activation rows per block
GEMM_MIN_M = 48          # from this many rows on (below, mma.py's smaller tiles waste less)
X_DTYPES = ("float16", "float32")
GRAN = 16                # bytes per cp.async copy

PRELUDE = r"""
// lutc prefill GEMM helpers (codegen/cuda/gemm.py): asynchronous global -> shared copies
__device__ __forceinline__ void lutc_cp16s(int dst, const void* gmem, int bytes) {   // dst: a shared address
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(gmem), "r"(bytes) : "memory");
}
__device__ __forceinline__ void lutc_cp16(void* smem, const void* gmem, int bytes) {
  lutc_cp16s((int)__cvta_generic_to_shared(smem), gmem, bytes);
}
__device__ __forceinline__ void lutc_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void lutc_cp_wait() {
  asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
}
__device__ __forceinline__ int lutc_f2h2(float lo, float hi) {
  half2 h = __floats2half2_rn(lo, hi); return *reinterpret_cast<int*>(&h);
}
"""


def supports(bits: int, layout: str, k: int, x_dtype: str) -> bool:
    """Whether the GEMM takes these weights and activations: b-bit codes, and activation rows that split into
    whole 16-byte copies (K a multiple of 8 float16 / 4 float32 values)."""
    if x_dtype not in X_DTYPES or layout != CODE_LAYOUTS.get(bits):
        return False
    return k % (GRAN // (2 if x_dtype == "float16" else 4)) == 0


SCALE_SLOT = ROWS + 8    # float16 per staged scale row (one per 32-K piece): padded, conflict-free lane reads
ZERO_SLOT = ROWS + 16    # int8 per staged zero-point row
SMEM_PER_BLOCK = 110 * 1024   # two blocks per SM (228 KB) with the registers of one


def scale_pieces(real_zero: bool) -> int:
    """Staged scale rows per chunk: one per 32-K piece, and as many zero-point fraction rows (layout.py)."""
    return 8 if real_zero else 4


def stage_bytes(mt: int, x_dtype: str, bits: int, real_zero: bool = False) -> int:
    """Shared memory per pipeline stage: activations, weight words, scale (and fraction) and zero-point rows."""
    return (mt * CHUNK * (2 if x_dtype == "float16" else 4) + bits * ROWS * 16
            + 2 * scale_pieces(real_zero) * SCALE_SLOT + 4 * ZERO_SLOT)


def default_stages(mt: int, x_dtype: str, bits: int, real_zero: bool = False) -> int:
    """The deepest pipeline (up to 4 chunks) whose stages fit two blocks on an SM; at least 2."""
    return max(2, min(4, SMEM_PER_BLOCK // stage_bytes(mt, x_dtype, bits, real_zero)))


def copy_weights_macro(p: KernelParams):
    """TVMScript macro issuing the cp.async copies of chunk ``c``'s weight side into ``stage`` of three rings
    (shared by gemm.py and wgmma.py): the block's code words ``WS[stage, slot t, row, 4]`` (one 16-byte copy per
    thread and slot), the scale rows ``SS[stage, piece, SCALE_SLOT]`` and zero-point rows
    ``ZS[stage, piece, ZERO_SLOT]`` of the groups of the chunk's four 32-K pieces (threads 0-63: 4 pieces x 16
    granules of 8 scales; threads 64-95: 4 x 8 granules of 16 zero points); real zero points' fraction rows
    follow the scale rows (``SS[stage, 4 + piece]``, threads 0-63 again)."""
    from ..tvmscript import T

    B, GS, HZ, G = p.bits, p.group_size, p.has_zero, p.groups
    WW, SSW, ZSW, SP = B * ROWS * 4, SCALE_SLOT, ZERO_SLOT, scale_pieces(p.real_zero)

    @T.macro
    def copy_weights(W, S, Z, WS, SS, ZS, c, stage, bx, tid):
        for t in T.unroll(B):
            T.evaluate(T.call_extern("void", "lutc_cp16", T.address_of(WS[stage * WW + (t * ROWS + tid) * 4]),
                                     T.address_of(W[c, t, bx * ROWS + tid, 0]), GRAN))
        if tid < 4 * (ROWS // 8):
            for fr in T.unroll(SP // 4):   # the scale rows, then the fraction rows G on
                T.evaluate(T.call_extern(
                    "void", "lutc_cp16",
                    T.address_of(SS[stage * SP * SSW + (4 * fr + tid // 16) * SSW + (tid % 16) * 8]),
                    T.address_of(S[G * fr + (c * CHUNK + (tid // 16) * 32) // GS, bx * ROWS + (tid % 16) * 8]), GRAN))
        if HZ and tid >= 64 and tid < 64 + 4 * (ROWS // 16):
            T.evaluate(T.call_extern(
                "void", "lutc_cp16", T.address_of(ZS[stage * 4 * ZSW + ((tid - 64) // 8) * ZSW + ((tid - 64) % 8) * 16]),
                T.address_of(Z[(c * CHUNK + ((tid - 64) // 8) * 32) // GS, bx * ROWS + ((tid - 64) % 8) * 16]), GRAN))

    return copy_weights


def gemm_tile(m: int) -> int:
    return GEMM_TILES[0] if m <= GEMM_TILES[0] else GEMM_TILES[-1]


def choose_split(chunks: int, row_blocks: int, m: int, mt: int, sms: int = 132) -> int:
    """Chunks per block: split K until the grid has about two blocks per SM (two fit by registers and
    shared memory), keeping at least 4 chunks per block (the pipeline's depth)."""
    tiles = -(-m // mt)
    split = max(1, min(chunks // 4, round(2 * sms / (row_blocks * tiles))))
    return -(-chunks // split)


def gemm_func(p: KernelParams):
    from ..tvmscript import T

    if p.mt not in GEMM_TILES:
        raise ValueError(f"the prefill GEMM takes activation tiles of {GEMM_TILES} rows, got {p.mt}")
    if not supports(p.bits, p.layout, p.k, p.x_dtype):
        raise ValueError(f"the prefill GEMM takes b-bit code layouts {sorted(CODE_LAYOUTS.values())} and "
                         f"{'/'.join(X_DTYPES)} activations with whole 16-byte rows; got layout {p.layout}, "
                         f"{p.bits} bits, K = {p.k}, {p.x_dtype}")

    N, K, C, B, MT, CPS = p.n, p.k, p.chunks, p.bits, p.mt, p.cps
    SPLIT = p.split
    RAGGED = C % CPS != 0
    DIRECT = SPLIT == 1
    HZ, REAL = p.has_zero, p.real_zero
    SP = scale_pieces(REAL)
    F16 = p.x_dtype == "float16"
    EPG = GRAN // (2 if F16 else 4)      # activations per 16-byte granule
    GR = CHUNK // EPG                    # granules per row and chunk: 16 (float16) or 32 (float32)
    RW = CHUNK // (2 if F16 else 1)      # 32-bit words per staged row: 64 (float16) or 128 (float32)
    XW = MT * RW                         # activation words per stage
    WW = B * ROWS * 4                    # weight words per stage: [slot t, row, word]
    NS = p.stages or default_stages(MT, p.x_dtype, B, REAL)
    if NS < 2:
        raise ValueError(f"the prefill GEMM's pipeline takes at least 2 stages, got {NS}")
    WPR = 8 if F16 else 16               # words of one row a lane reads per 4 k16 steps
    SSW, ZSW = SCALE_SLOT, ZERO_SLOT
    GPL = GR // 4                        # granules of a lane's 32 K positions
    CPT = MT * GR // THREADS             # copies per thread and chunk
    TT = MT // 16                        # A tiles
    CB = (1 << B) - 1
    F = 16 // B                          # code fields per half word
    f32 = "float32"
    reduce_partials = reduce_partials_macro(p)
    copy_weights = copy_weights_macro(p)
    stage_pair, write_tile = staged_epilogue_macros(p, THREADS)

    def slot(gi, r):
        """Where granule ``gi`` of staged row ``r`` lies: bits 3-4 of the granule (from the lane's index in
        its quad, for the fragment loads) flip bits 1-2, and odd rows flip bit 0, so the 8 lanes of each
        quarter warp (2 rows x 4 lanes of a quad) read 8 different 16-byte bank groups."""
        return T.bitwise_xor(T.bitwise_xor(gi, T.shift_left(T.bitwise_and(T.shift_right(gi, 3), 3), 1)),
                             T.bitwise_and(r, 1))

    @T.macro
    def copy_stage(X, W, S, Z, XS, WS, SS, ZS, c, stage, bz, bx, tid, m):
        """Issue the cp.async copies of chunk ``c`` into ``stage``: the MT activation rows, the block's weight
        words (one 16-byte row slot per thread and slot t), and the scale and zero-point rows of the groups
        of the chunk's four 32-K pieces (a lane reads those of its piece ``tig``)."""
        for e in T.unroll(CPT):
            r: T.let = (e * THREADS + tid) // GR
            gi: T.let = (e * THREADS + tid) % GR
            ok: T.let = bz * MT + r < m and c * CHUNK + gi * EPG < K
            T.evaluate(T.call_extern(
                "void", "lutc_cp16", T.address_of(XS[stage * XW + r * RW + slot(gi, r) * 4]),
                T.address_of(X[T.if_then_else(ok, bz * MT + r, 0), T.if_then_else(ok, c * CHUNK + gi * EPG, 0)]),
                T.if_then_else(ok, GRAN, 0)))
        copy_weights(W, S, Z, WS, SS, ZS, c, stage, bx, tid)

    @T.macro
    def a_words(XS, xr, o, base, r, h4, tig):
        """Row ``r``'s words for 4 k16 steps (``h4``: steps 0-3 or 4-7) into ``xr[o ..]``: K positions
        ``32 tig + 8 h4 + 0..7`` (the pair members p), then the same + 16; 2 granules each (float32: 4)."""
        for hh in T.unroll(2):
            for q in T.unroll(WPR // 8):
                xr[T.Ramp(o + hh * (WPR // 2) + q * 4, 1, 4)] = XS[T.Ramp(
                    base + r * RW + slot(GPL * tig + (GPL // 2) * hh + (GPL // 4) * h4 + q, r) * 4, 1, 4)]

    @T.macro
    def a_pair(xr, o, s, jj, out, oi):
        """One A-fragment register: the half2 of activations (p, p + 16) at step ``s`` of the group, slot ``jj``."""
        if F16:   # words hold (p, p + 1): the low (jj = 0) or high halves of the p and the p + 16 words
            out[oi] = T.call_pure_extern("int32", "__byte_perm", xr[o + s], xr[o + 4 + s],
                                         T.int32(0x5410) + T.int32(0x2222) * jj)
        else:
            out[oi] = T.call_pure_extern("int32", "lutc_f2h2", T.reinterpret(f32, xr[o + 2 * s + jj]),
                                         T.reinterpret(f32, xr[o + 8 + 2 * s + jj]))

    @T.macro
    def body(X, W, S, Z, P, CNT, Y, R, m, bz, by, bx, tid):
        XS = T.alloc_buffer((NS * XW,), "int32", scope="shared.dyn")
        WS = T.alloc_buffer((NS * WW,), "int32", scope="shared.dyn")
        SS = T.alloc_buffer((NS * SP * SSW,), "float16", scope="shared.dyn")
        ZS = T.alloc_buffer((NS * 4 * ZSW if HZ else 16,), "int8", scope="shared.dyn")
        wr = T.alloc_buffer((4 * B,), "int32", scope="local")
        kz = T.alloc_buffer((4,), "int32", scope="local")            # half2 1024 + 2z
        sc = T.alloc_buffer((4,), "int32", scope="local")            # half2 s / 2
        ofs = T.alloc_buffer((4,), "int32", scope="local")           # half2 -e s / 2 (real zero points)
        bq = T.alloc_buffer((4 * 4 * 2,), "int32", scope="local")    # B fragments of 4 steps: [step, rs, jj]
        xr = T.alloc_buffer((2 * WPR,), "int32", scope="local")      # [row half, words of 4 steps]
        af = T.alloc_buffer((4,), "int32", scope="local")
        acc = T.alloc_buffer((TT * 4 * 4,), f32, scope="local")
        vv = T.alloc_buffer((1,), "int32", scope="local")
        lane: T.let = tid % 32
        g: T.let = lane // 4
        tig: T.let = lane % 4
        wl: T.let = (tid // 32) * 32 + g              # B tile rs: weight row bx * 128 + wl + 8 rs
        for i in T.unroll(TT * 16):
            acc[i] = T.float32(0)
        for st0 in T.unroll(NS - 1):   # the pipeline's first NS - 1 chunks; one commit group each
            if st0 < CPS and (not RAGGED or by * CPS + st0 < C):
                copy_stage(X, W, S, Z, XS, WS, SS, ZS, by * CPS + st0, st0, bz, bx, tid, m)
            T.evaluate(T.call_extern("void", "lutc_cp_commit"))
        for cc in T.serial(CPS):
            c: T.let = by * CPS + cc
            if not RAGGED or c < C:
                # chunk c has landed (this thread's copies: groups complete in order) and every thread is
                # past chunk c - 1, whose stage the copy issued next overwrites
                T.evaluate(T.call_extern("void", f"lutc_cp_wait<{NS - 2}>"))
                T.tvm_storage_sync("shared")
                if cc + NS - 1 < CPS and (not RAGGED or c + NS - 1 < C):
                    copy_stage(X, W, S, Z, XS, WS, SS, ZS, c + NS - 1, (cc + NS - 1) % NS, bz, bx, tid, m)
                T.evaluate(T.call_extern("void", "lutc_cp_commit"))
                stg: T.let = cc % NS
                for rs in T.unroll(4):
                    for t in T.unroll(B):
                        wr[rs * B + t] = WS[stg * WW + (t * ROWS + wl + 8 * rs) * 4 + tig]
                    sc[rs] = T.call_pure_extern("int32", "lutc_h2", T.Cast(
                        f32, SS[stg * SP * SSW + tig * SSW + wl + 8 * rs]) * T.float32(0.5))
                    if REAL:
                        ofs[rs] = T.call_pure_extern("int32", "lutc_h2", T.Cast(
                            f32, SS[stg * SP * SSW + (4 + tig) * SSW + wl + 8 * rs]) * T.Cast(
                            f32, SS[stg * SP * SSW + tig * SSW + wl + 8 * rs]) * T.float32(-0.5))
                    if HZ:
                        kz[rs] = T.call_pure_extern("int32", "lutc_h2", T.Cast(
                            f32, ZS[stg * 4 * ZSW + tig * ZSW + wl + 8 * rs]) + T.float32(1024 + CB))
                    else:
                        kz[rs] = T.call_pure_extern("int32", "lutc_h2", T.float32(1024 + CB))
                for h4 in T.unroll(2):     # steps 4 h4 .. 4 h4 + 3
                    for s in T.unroll(4):
                        for rs in T.unroll(4):
                            for jj in T.unroll(2):
                                vv[0] = T.bitwise_or(T.int32(0x64006400), code_pair(
                                    wr[rs * B + (8 * h4 + 2 * s + jj) // F], (8 * h4 + 2 * s + jj) % F, B))
                                bq[(s * 4 + rs) * 2 + jj] = dequant_h2(vv[0], kz[rs], sc[rs],
                                                                       ofs[rs] if REAL else None)
                    for tt in T.unroll(TT):
                        for hr in T.unroll(2):   # rows g and g + 8 of the A tile
                            a_words(XS, xr, hr * WPR, stg * XW, tt * 16 + g + 8 * hr, h4, tig)
                        for s in T.unroll(4):
                            for hr in T.unroll(2):
                                for jj in T.unroll(2):
                                    a_pair(xr, hr * WPR, s, jj, af, jj * 2 + hr)
                            for rs in T.unroll(4):
                                T.ptx_legacy.mma("m16n8k16", "row", "col", "fp16", "fp16", "fp32",
                                                 af.data, 0, bq.data, (s * 4 + rs) * 2, acc.data,
                                                 (tt * 4 + rs) * 4, False, dtype=f32)
        # accumulator i of tile (tt, rs): activation row tt * 16 + g + 8 (i // 2), weight row
        # bx * 128 + warp * 32 + 8 rs + 2 tig + i % 2; staged in the activation ring (NS x MT x 256 bytes or more)
        xbase: T.let = T.call_pure_extern("int32", "lutc_smem_addr", T.address_of(XS[0]))
        # a plain access keeps XS's memory XS's up to here in TVM's plan; a read, as other warps may still read
        # that word in their last chunk (a write here raced with them)
        vv[0] = XS[NS * XW - 1]
        T.tvm_storage_sync("shared")     # every warp is done with its last stage
        for tt in T.unroll(TT):
            for rs in T.unroll(4):
                for h in T.unroll(2):
                    stage_pair(xbase, tt * 16 + g + 8 * h, (tid // 32) * 32 + 8 * rs + 2 * tig,
                               acc[(tt * 4 + rs) * 4 + 2 * h], acc[(tt * 4 + rs) * 4 + 2 * h + 1])
        T.tvm_storage_sync("shared")
        write_tile(P, Y, R, xbase, m, bz, by, bx, tid)
        if not DIRECT:
            reduce_partials(P, CNT, Y, R, m, bz, bx, tid, SPLIT)

    return kernel_func(p, body)
