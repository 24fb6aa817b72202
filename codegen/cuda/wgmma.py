"""The Hopper prefill GEMM (sm_90a): LUT matmuls of many activation rows on warpgroup MMAs, as TVMScript.

One warpgroup per 64 activation rows (MT = 64: 128 threads; MT = 128: two warpgroups, 256 threads, sharing one
dequantized weight tile, so each weight is dequantized and read from L2 once per 128 rows) multiplies with
``wgmma.mma_async.m64n128k16`` (float16 in, float32 accumulators), both operands in shared memory in the
canonical 128-byte-swizzled K-major layout:

- A = MT activation rows x 64 K per pipeline unit (half a 128-K chunk), copied with ``cp.async``
  ``stages - 1`` units ahead, each row's eight 16-byte granules at ``granule ^ (row % 8)``;
- B = the block's 128 weight rows x 64 K, dequantized by the threads themselves (thread = weight row, or with two
  warpgroups thread = a 32-K piece of a weight row: its code
  words become ``s (q - z)`` half2 pairs ``(k, k + 16)`` as in mma.py, and one ``prmt`` per register turns the
  pairs into natural-order 16-byte granules) into one of two buffers, while the tensor cores multiply the
  previous unit (one wgmma group in flight);
- the weight side of a chunk (code words, the scale and zero-point rows of its groups) rides in the same
  ``cp.async`` groups, ``stages // 2`` chunks ahead (weights come from HBM: with them loaded into registers one
  chunk ahead, the zero-point conversion waiting on its load held 11% of the stall samples).

Per unit: wait for the unit's copies, ``fence.proxy.async`` (the generic-proxy writes become visible to the
tensor cores' async proxy), one barrier, four wgmma k16 steps, commit, wait for the previous unit's group, issue
the copies of unit + stages - 1 into the stage that group read; with two warpgroups a second barrier after the
wait (a warpgroup's wait covers only its own MMAs, and both read every stage and B buffer). Accumulator
``d[4 j + i]`` of warp ``w`` of warpgroup ``wg``: row ``64 wg + 16 w + g + 8 (i // 2)`` (g = lane / 4), column ``8 j + 2 (lane % 4) + i % 2``. Same arguments, grid and split-K
protocol as every CUDA LUT kernel (tir.py); float16 activations with whole 16-byte rows (others: gemm.py).

Measured (H200, M = 128, 96-call graphs, ``bench/cuda_proto/gemm/``): W2 25.2 / 57.2 / 54.7 us at N = 4096 /
11008 / 14336 (K = 4096) against mma.py's 27.9 / 73.1 / 92.7 and cuBLAS fp16's 13.2 / 26.1 / 34.3: faster than
the kernels it replaces, still half cuBLAS's speed. Not the tensor cores (mma.sync and wgmma versions ran the same
within 10-20%) nor dequantization (W2 = W4 within 5%) nor the copy pipeline's depth (2-6 stages alike); the
profiles show about 2 warps per scheduler stalled on barriers and dependent waits, a third of issue slots used.
The 128-row tile (run 6): 26.2 / 50.6 / 51.3 us against the 64-row tile's 25.9 / 54.9 / 55.1 in the same run.
Tried and dropped (run 6, commit 1c89d07): the weights as the register operand of wgmma (``m64n128k16`` RS, no
dequantized tile in shared memory): 23.8 / 52.0 / 52.9 us; ncu: tensor pipe 26% busy, shared-memory pipe 29%:
neither kernel is bound by shared memory, both by ~300 instructions per warp and unit at 2 warps per scheduler
(5.4 cycles per issued instruction).

Warp-specialized (``producers`` = 1 or 2, the default for 128 rows: ``default_producers``): 128 or 256 more threads
that only copy (activations ``lookahead(stages)`` units ahead, the weight side half as many chunks) and dequantize,
into a ring of ``stages`` units, each its A and its B tile; the two consumer warpgroups only wait on the stage's
``full`` mbarrier, multiply, and arrive on its ``empty`` one when their MMAs of it are done (no block barrier in the
loop). H100, M = 128: 1-12% faster than the cooperative kernel above (more for W4), still 0.6x cuBLAS fp16 at N =
4096 and 0.85x at 11008 / 14336. Ablations (a temporary patch, ``bench/cuda_proto/gemm/README.md``, 14336 W2):
without activation copies 47 us, without dequantization 38-40, without either 32-33 (the MMAs alone, ~800 cycles per
unit against 512 of tensor work), the producers alone 37-39 (with one producer warpgroup or two alike): the
activations read from L2 by every block (1 MB per 128 weight rows: 112 MB per call) and the dequantization into
shared memory each bound it about as much, and overlap only partly. A deeper lookahead (6 stages: 4 units) ran 2-5%
slower, so the producers do not wait on their copies' latency; timed over K at one split (run 9), a block costs 0.62
us per 64-K unit (cuBLAS's slope) plus ~10 us fixed, the gap to cuBLAS at N = 14336.

Epilogue: a per-block timeline (globaltimer stamps, run 10) put 4-7 us of that fixed cost in the output stores, where
a warp's store instruction in the accumulator layout touches eight rows with 4 bytes each. Where the ring holds the
float32 tile (``STAGED``) it goes through shared memory and out a warp per row, 4 columns per thread: H100, M = 128,
W2 in graph 19.9 / 44.9 / 45.2 us at N = 4096 / 11008 / 14336 (was 24.5 / 51.1 / 51.9; cuBLAS 14.3 / 35.8 / 43.9).

Stream-K (``KernelParams.stream``, streamk.py; warp-specialized only): a grid of one block per SM, each an equal
share of the (row block, chunk) work, segment by segment (the ring's stages and mbarrier phases count on across a
block's segments; a block barrier between them), every segment's tile into partial sums that the row block's last
segment to finish sums. Meant for N = 11008 / 14336 at M = 128, where 86 / 112 row blocks leave SMs idle and two
K splits cost a second wave (32 chunks per block -> 21 / 28). Compiled and checked here; not run on a GPU yet, so
off by default (``choose_stream``: the rule to switch on once timed).

Numerics: those of mma.py and gemm.py (float16 weights and activations, float32 sums).
"""
from __future__ import annotations

from .layout import CHUNK, ROWS
from .tir import THREADS, KernelParams, kernel_func
from . import epilogue, gemm, streamk
from .mma import code_pair, dequant_h2, reduce_partials_macro

WG_ROWS = 64            # activation rows per warpgroup (the wgmma's M)
TILES = gemm.GEMM_TILES  # activation rows per block: one or two warpgroups on the same dequantized weights
UNIT = 64               # K per pipeline unit: one 128-byte swizzle row of float16
B_BYTES = ROWS * UNIT * 2        # per dequantized weight buffer
ACC = WG_ROWS * ROWS // THREADS  # float32 accumulators per thread
ARCHS = ("sm_90a",)
PRODUCERS = (0, 1, 2)   # warpgroups that copy and dequantize only (0: every warpgroup does both)

_D = ", ".join(f"%{i}" for i in range(ACC))
_OUTS = ", ".join(f'"+f"(d[{i}])' for i in range(ACC))

PRELUDE = r"""
// lutc Hopper GEMM helpers (codegen/cuda/wgmma.py): shared-memory addresses as 32-bit ints, wgmma
__device__ __forceinline__ int lutc_smem_base(const void* p) {   // the first 1024-byte aligned shared address
  unsigned a = (unsigned)__cvta_generic_to_shared(p); return (int)((a + 1023u) & ~1023u);
}
__device__ __forceinline__ void lutc_sts128(int dst, int a, int b, int c, int d) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" :: "r"(dst), "r"(a), "r"(b), "r"(c), "r"(d) : "memory");
}
__device__ __forceinline__ void lutc_fence_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void lutc_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void lutc_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void lutc_wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory");
}
__device__ __forceinline__ unsigned long long lutc_sw128_desc(int addr) {   // K-major, 128-byte swizzle atoms
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}
__device__ __forceinline__ void lutc_wgmma_k16(float* d, int a, int b) {   // d[ACC] += A[a] . B[b]^T
  unsigned long long da = lutc_sw128_desc(a), db = lutc_sw128_desc(b);
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %""" + str(ACC + 2) + r""", 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {""" + _D + r"""}, %""" + str(ACC) + r""", %""" \
    + str(ACC + 1) + r""", p, 1, 1, 0, 0;\n}\n"
               : """ + _OUTS + r""" : "l"(da), "l"(db), "r"(1));
}
// the warp-specialized kernel's handoffs: mbarriers (arrive = release, wait = acquire, CTA scope), named barriers
__device__ __forceinline__ void lutc_mbar_init(int bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void lutc_mbar_arrive(int bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void lutc_mbar_wait(int bar, int parity) {
  asm volatile("{\n.reg .pred p;\nLUTC_WAIT:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
               "@!p bra LUTC_WAIT;\n}\n" :: "r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void lutc_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" :: "r"(id), "r"(threads) : "memory");
}
"""


def supports(bits: int, layout: str, k: int, x_dtype: str, arch: str) -> bool:
    """sm_90a, b-bit codes, float16 activations whose rows are whole 16-byte copies."""
    return arch in ARCHS and x_dtype == "float16" and gemm.supports(bits, layout, k, x_dtype)


def default_stages(mt: int = TILES[0], producers: int = 0) -> int:
    """Ring stages: 4 for one warpgroup; 3 for two (16 KB stages: two blocks per SM); warp-specialized, 4
    stages of a unit's A and B tiles."""
    return 4 if mt == TILES[0] or producers else 3


def lookahead(stages: int) -> int:
    """Units the producers' activation copies run ahead of the unit they dequantize: an even number (their
    weight-side copies run half as many chunks ahead, in the same commit groups), leaving the consumers two stages
    of the ring: 2 for 4 or 5 stages, 4 for 6 or 7."""
    return 2 * max(1, (stages - 2) // 2)


def default_producers(mt: int) -> int:
    """Producer warpgroups: two for the 128-row tile (four warpgroups), none for 64 rows. H100, M = 128, K = 4096,
    96-call graphs, us for N = 4096 / 11008 / 14336: W2 26.8 / 51.2 / 51.8 without, 25.7 / 50.9 / 51.9 with two,
    25.3 / 52.0 / 52.9 with one; W4 28.4 / 53.7 / 56.9, 26.0 / 50.8 / 53.2, 25.0 / 53.1 / 52.6. The 64-row tile
    with one ran 2-35% slower except W2 at 4096 (``bench/cuda_proto/gemm/run7_warp_specialized.json``)."""
    return 2 if mt == TILES[-1] else 0


def choose_split(chunks: int, row_blocks: int, m: int, mt: int = TILES[0], sms: int = 132) -> int:
    """Chunks per block: the K split with the least waves x chunks per block + 3 chunks' worth per split (the
    last block sums the partials one split after another), at least 4 chunks per block. A wave is two blocks
    per SM of one warpgroup, one of two (two of them fit an SM too, but ran no faster than one: H200, M = 128,
    N = 11008 / 14336, split 2 vs 1: 51.8 vs 49.8, 54.6 vs 50.5 us). H200, M = 128, one warpgroup: split 4 at
    N = 4096 (8: 1.5x slower), 1 at 14336 (2: 1.2x slower); two: 4 at 4096, 1 at 11008 and 14336."""
    tiles = -(-m // mt)
    per_sm = 2 if mt == TILES[0] else 1

    def cost(split):
        cps = -(-chunks // split)
        return -(-row_blocks * tiles * split // (sms * per_sm)) * cps + 3 * split, split

    best = min((s for s in (1, 2, 4, 8, 16) if s == 1 or chunks // s >= 4), key=cost)
    return -(-chunks // best)


def choose_stream(chunks: int, row_blocks: int, m: int, mt: int, producers: int, sms: int = 132) -> int:
    """Blocks of a stream-K grid (streamk.py), or 0 for the uniform K split (``choose_split``): stream-K where one
    activation tile's row blocks leave SMs idle and the uniform split's cost (``choose_split``'s units: waves x
    chunks per block + 3 per split) exceeds stream-K's (``ceil(work / sms)`` chunks per block + 3 per segment a row
    block is cut into). Warp-specialized 128-row tiles only, one activation tile. Not the default yet: the stream-K
    kernel compiles (CI) but has not run on a GPU (``bench/cuda_proto/gemm/run.py`` checks and times it), so
    ``CudaLutMatmul`` takes it only where forced (``_stream``)."""
    if mt != TILES[-1] or not producers or m > mt or row_blocks >= sms:
        return 0
    cps = choose_split(chunks, row_blocks, m, mt, sms)
    split = -(-chunks // cps)
    uniform = -(-row_blocks * split // sms) * cps + 3 * split
    total = row_blocks * chunks
    blocks = min(sms, total)
    stream = -(-total // blocks) + 3 * streamk.slots(row_blocks, chunks, blocks)
    return blocks if stream < uniform else 0


def wgmma_func(p: KernelParams):
    from ..tvmscript import T

    if p.mt not in TILES:
        raise ValueError(f"the Hopper GEMM takes activation tiles of {TILES} rows, got {p.mt}")
    if not supports(p.bits, p.layout, p.k, p.x_dtype, p.arch):
        raise ValueError(f"the Hopper GEMM takes {'/'.join(ARCHS)}, b-bit code layouts and float16 activations with "
                         f"whole 16-byte rows; got {p.arch}, layout {p.layout}, K = {p.k}, {p.x_dtype}")
    if p.producers not in PRODUCERS:
        raise ValueError(f"the Hopper GEMM takes {PRODUCERS} producer warpgroups, got {p.producers}")

    N, K, C, B, MT, CPS = p.n, p.k, p.chunks, p.bits, p.mt, p.cps
    SPLIT = p.split
    RAGGED = C % CPS != 0
    DIRECT = p.direct
    STREAM, GS = p.stream > 0, p.stream      # stream-K: GS blocks, each TOT / GS chunks of the work
    TOT = p.n_pad // ROWS * C
    MAXSEG = streamk.max_segments(p.n_pad // ROWS, C, GS) if STREAM else 0
    HZ, REAL, RES, YDT = p.has_zero, p.real_zero, p.residual, p.y_dtype
    SP = gemm.scale_pieces(REAL)
    WG = MT // WG_ROWS                   # warpgroups multiplying: each its 64 activation rows by the whole B tile
    WS = p.producers > 0                 # warp-specialized: p.producers more warpgroups copy and dequantize
    DW = p.producers or WG               # warpgroups dequantizing; thread d of them: row d % 128 of B, 32-K pieces
    NT = (WG + p.producers) * THREADS    # threads
    PP = 2 // DW                         # ip = d // 128 + i (i < PP) of each unit (two per unit)
    A_BYTES = MT * UNIT * 2              # per activation stage
    NS = p.stages or default_stages(MT, p.producers)
    LA = lookahead(NS)                   # warp-specialized: units the producers' activation copies run ahead
    LW = LA // 2                         # and chunks their weight-side copies run ahead
    NSC = NS // 2 + 1 if not WS else LW + 1   # chunk stages of the weight side (see the loops)
    SSW, ZSW = gemm.SCALE_SLOT, gemm.ZERO_SLOT   # the weight-side rings of gemm.copy_weights_macro
    CB = (1 << B) - 1
    F = 16 // B
    CPT = MT * (UNIT // 8) // (DW * THREADS)   # activation copies per copying thread and unit
    STAGE = A_BYTES + B_BYTES if WS else A_BYTES   # warp-specialized: a unit's A and B tiles in one ring stage
    SA = NS * STAGE + 1024 + (16 * NS if WS else 0)    # (+ room to align to 1024 bytes, + the stages' mbarriers)
    SB = 2 * B_BYTES + 1024
    STAGED = epilogue.tile_bytes(MT) <= NS * STAGE   # the ring holds the epilogue's tile (not: 128 rows cooperative)
    if STREAM and GS > TOT:
        raise ValueError(f"{p.n_pad // ROWS} row blocks x {C} chunks take at most {TOT} stream-K blocks, got {GS}")
    if STREAM and not (WS and STAGED):
        raise ValueError("stream-K takes the warp-specialized Hopper GEMM (producers > 0) with its tile staged in the "
                         "ring")
    f32 = "float32"
    # the split-K sums by every thread (a power of two of them), 16 rows' partials in flight per thread
    reduce_partials = reduce_partials_macro(p, 1 << (NT.bit_length() - 1), 16)
    copy_weights = gemm.copy_weights_macro(p)
    stage_pair, write_tile = epilogue.staged_epilogue_macros(p, NT)

    @T.macro
    def copy_a(X, abase, u, su, c0, bz, d, m):
        """Issue copier ``d``'s cp.async copies of unit ``u``'s activations (MT rows x 64 K) into ring stage
        ``su % NS`` (``su``: the unit's index among all the block's units)."""
        for e in T.unroll(CPT):
            r: T.let = (e * DW * THREADS + d) // 8
            j: T.let = (e * DW * THREADS + d) % 8
            kk: T.let = c0 * CHUNK + u * UNIT + j * 8
            ok: T.let = bz * MT + r < m and kk < K
            T.evaluate(T.call_extern(
                "void", "lutc_cp16s", abase + (su % NS) * STAGE + r * 128 + T.bitwise_xor(j, r % 8) * 16,
                T.address_of(X[T.if_then_else(ok, bz * MT + r, 0), T.if_then_else(ok, kk, 0)]),
                T.if_then_else(ok, 16, 0)))

    @T.macro
    def take_w(WSB, SSB, ZSB, wr, sc, kz, ofs, c, row, ip0):
        """Chunk ``c``'s code words, scales and zero points (and fractions) of the thread's row and pieces
        ``2 h + ip0 + i`` (unit h, i < PP) out of shared memory: word ``(t, h, i)`` at ``wr[(2 t + h) PP + i]``."""
        cs: T.let = c % NSC
        for t in T.unroll(B):
            if PP == 2:
                wr[T.Ramp(t * 4, 1, 4)] = WSB[T.Ramp(cs * B * ROWS * 4 + (t * ROWS + row) * 4, 1, 4)]
            else:
                for h in T.unroll(2):
                    wr[2 * t + h] = WSB[cs * B * ROWS * 4 + (t * ROWS + row) * 4 + 2 * h + ip0]
        for h in T.unroll(2):
            for i in T.unroll(PP):
                sc[h * PP + i] = T.call_pure_extern(
                    "int32", "lutc_h2", T.Cast(f32, SSB[(cs * SP + 2 * h + ip0 + i) * SSW + row]) * T.float32(0.5))
                if REAL:
                    ofs[h * PP + i] = T.call_pure_extern(
                        "int32", "lutc_h2", T.Cast(f32, SSB[(cs * SP + 4 + 2 * h + ip0 + i) * SSW + row])
                        * T.Cast(f32, SSB[(cs * SP + 2 * h + ip0 + i) * SSW + row]) * T.float32(-0.5))
                if HZ:
                    kz[h * PP + i] = T.call_pure_extern(
                        "int32", "lutc_h2", T.Cast(f32, ZSB[(cs * 4 + 2 * h + ip0 + i) * ZSW + row])
                        + T.float32(1024 + CB))
                else:
                    kz[h * PP + i] = T.call_pure_extern("int32", "lutc_h2", T.float32(1024 + CB))

    @T.macro
    def dequant(wr, sc, kz, ofs, hv, gq, bdst, h, row, ip0):
        """Unit ``h`` (pieces 2h + ip0 + i of the chunk) of the thread's weight row, as float16 in natural K
        order, into the B tile at ``bdst``: row ``row``, granule ``j`` at ``j ^ (row % 8)``."""
        for i in T.unroll(PP):
            for pp in T.unroll(16):          # pair (K = 32 ip + pp, + 16): word (ip, pp // F), field pp % F
                hv[pp] = dequant_h2(T.bitwise_or(
                    T.int32(0x64006400), code_pair(wr[((pp // F) * 2 + h) * PP + i], pp % F, B)),
                    kz[h * PP + i], sc[h * PP + i], ofs[h * PP + i] if REAL else None)
            for q in T.unroll(2):            # granules q (K 8q .. 8q + 7) and q + 2 (the same + 16)
                for e in T.unroll(4):
                    gq[e] = T.call_pure_extern("int32", "__byte_perm", hv[8 * q + 2 * e], hv[8 * q + 2 * e + 1],
                                               T.int32(0x5410))
                    gq[4 + e] = T.call_pure_extern("int32", "__byte_perm", hv[8 * q + 2 * e],
                                                   hv[8 * q + 2 * e + 1], T.int32(0x7632))
                for hh in T.unroll(2):
                    T.evaluate(T.call_extern(
                        "void", "lutc_sts128",
                        bdst + row * 128 + T.bitwise_xor(4 * (ip0 + i) + q + 2 * hh, row % 8) * 16,
                        gq[4 * hh], gq[4 * hh + 1], gq[4 * hh + 2], gq[4 * hh + 3]))

    @T.macro
    def multiply(acc, a, b, wg):
        """The four k16 steps of a unit: this warpgroup's 64 rows of the A tile at ``a`` by the B tile at ``b``."""
        T.evaluate(T.call_extern("void", "lutc_wgmma_fence"))
        for ks in T.unroll(UNIT // 16):
            T.evaluate(T.call_extern("void", "lutc_wgmma_k16", acc.data, a + wg * (WG_ROWS * 128) + ks * 32,
                                     b + ks * 32))
        T.evaluate(T.call_extern("void", "lutc_wgmma_commit"))

    @T.macro
    def cooperative(X, W, S, Z, WSB, SSB, ZSB, wr, sc, kz, ofs, hv, gq, acc, abase, m, bz, c0, nc, bx, tid):
        """Every warpgroup copies, dequantizes its share of B and multiplies; block barriers hand over."""
        SMB = T.alloc_buffer((SB,), "uint8", scope="shared.dyn")
        bbase: T.let = T.call_pure_extern("int32", "lutc_smem_base", T.address_of(SMB[0]))
        if tid == 0:
            SMB[SB - 1] = T.uint8(0)
        row: T.let = tid % ROWS              # the B row this thread dequantizes
        wg: T.let = tid // THREADS           # its warpgroup: activation rows 64 wg .. 64 wg + 63 of the tile
        ip0: T.let = wg * (2 - PP)           # its first 32-K piece of a unit
        # the pipeline's first NS - 1 units' activations, one commit group each; the weight side of chunk
        # h (< NSC - 1) rides in unit h's group (copied by the first warpgroup)
        for u0 in T.unroll(NS - 1):
            if u0 < 2 * nc:
                copy_a(X, abase, u0, u0, c0, bz, tid, m)
            if u0 < NSC - 1 and u0 < nc and tid < THREADS:
                copy_weights(W, S, Z, WSB, SSB, ZSB, c0 + u0, (c0 + u0) % NSC, bx, tid)
            T.evaluate(T.call_extern("void", "lutc_cp_commit"))
        for u in T.serial(2 * nc):
            # this thread's copies of unit u (and of chunk u // 2's weight side) have landed
            T.evaluate(T.call_extern("void", f"lutc_cp_wait<{NS - 2}>"))
            if u % 2 == 0:
                T.tvm_storage_sync("shared")     # the other threads' code, scale and zero-point copies
                take_w(WSB, SSB, ZSB, wr, sc, kz, ofs, c0 + u // 2, row, ip0)
            # B buffer u % 2 was last read by the groups of unit u - 2, complete since unit u - 1
            for h in T.unroll(2):
                if u % 2 == h:
                    dequant(wr, sc, kz, ofs, hv, gq, bbase + h * B_BYTES, h, row, ip0)
            T.evaluate(T.call_extern("void", "lutc_fence_async"))
            T.tvm_storage_sync("shared")
            multiply(acc, abase + (u % NS) * STAGE, bbase + (u % 2) * B_BYTES, wg)
            T.evaluate(T.call_extern("void", "lutc_wgmma_wait<1>"))
            if WG > 1:
                T.tvm_storage_sync("shared")     # both warpgroups' groups of unit u - 1 are done
            # the groups of unit u - 1 are done: its activation stage takes unit u + NS - 1, its B buffer unit
            # u + 1; at a chunk's first unit (every thread is past the previous chunk's take_w), the weight side
            # of chunk + NSC - 1
            if u + NS - 1 < 2 * nc:
                copy_a(X, abase, u + NS - 1, u + NS - 1, c0, bz, tid, m)
            if u % 2 == 0 and u // 2 + NSC - 1 < nc and tid < THREADS:
                copy_weights(W, S, Z, WSB, SSB, ZSB, c0 + u // 2 + NSC - 1, (c0 + u // 2 + NSC - 1) % NSC, bx,
                             tid)
            T.evaluate(T.call_extern("void", "lutc_cp_commit"))
        T.evaluate(T.call_extern("void", "lutc_wgmma_wait<0>"))
        if tid == 0:
            SMB[SB - 1] = T.uint8(0)

    @T.macro
    def init_bars(abase, tid):
        """The ring's ``full`` and ``empty`` mbarriers (warp-specialized), once per block."""
        bars: T.let = abase + NS * STAGE
        if tid == 0:
            for s in T.unroll(NS):
                T.evaluate(T.call_extern("void", "lutc_mbar_init", bars + 8 * s, DW * THREADS))
                T.evaluate(T.call_extern("void", "lutc_mbar_init", bars + 8 * (NS + s), WG * THREADS))
        T.tvm_storage_sync("shared")

    @T.macro
    def specialized(X, W, S, Z, WSB, SSB, ZSB, wr, sc, kz, ofs, hv, gq, acc, abase, m, bz, c0, nc, bx, tid, ub):
        """Producer warpgroups (thread d = tid - 128 WG) copy and dequantize unit u into ring stage u % NS (A then
        B) and arrive on its ``full`` mbarrier; the WG consumer warpgroups wait on it, multiply, and once their
        MMAs of unit u - 1 are done arrive on that stage's ``empty`` mbarrier, which the producers wait on before
        refilling it. Producers copy activations LA = ``lookahead(NS)`` units ahead, after dequantizing the unit (whose
        stage is free since that copy) so that a producer waits on the consumers only once its unit is ready; a
        chunk's weight side is copied LW = LA / 2 chunks ahead into a ring of LW + 1, in the group of the unit LA
        ahead (so chunk c's weight side is in the group of unit 2 c, or of the prologue's unit 2 c). ``ub``: the
        block's units before these (stream-K's earlier segments), which the ring's stages and phases count on from;
        their MMAs are done (a block barrier after each segment), so the prologue refills stages without waiting."""
        bars: T.let = abase + NS * STAGE                     # full[s] at bars + 8 s, empty[s] at bars + 8 (NS + s)
        if tid >= WG * THREADS:
            d: T.let = tid - WG * THREADS
            row: T.let = d % ROWS
            ip0: T.let = (d // THREADS) * (2 - PP)
            for u0 in T.unroll(LA):
                if u0 < 2 * nc:
                    copy_a(X, abase, u0, ub + u0, c0, bz, d, m)
                if u0 % 2 == 0 and u0 // 2 < nc and d < THREADS:     # chunks 0 .. LW - 1
                    copy_weights(W, S, Z, WSB, SSB, ZSB, c0 + u0 // 2, (c0 + u0 // 2) % NSC, bx, d)
                T.evaluate(T.call_extern("void", "lutc_cp_commit"))
            for u in T.serial(2 * nc):
                if u % 2 == 0:
                    # chunk u // 2's weight side (in unit u's group) landed for every producer, and every producer
                    # is past the previous chunk's take_w: its slot takes the next chunk's weight side
                    T.evaluate(T.call_extern("void", f"lutc_cp_wait<{LA - 1}>"))
                    T.evaluate(T.call_extern("void", "lutc_bar_sync", 1, DW * THREADS))
                    take_w(WSB, SSB, ZSB, wr, sc, kz, ofs, c0 + u // 2, row, ip0)
                    if u // 2 + LW < nc and d < THREADS:
                        copy_weights(W, S, Z, WSB, SSB, ZSB, c0 + u // 2 + LW, (c0 + u // 2 + LW) % NSC, bx, d)
                # B of unit u into its stage (free since the wait before unit u's activation copies)
                for h in T.unroll(2):
                    if u % 2 == h:
                        dequant(wr, sc, kz, ofs, hv, gq, abase + ((ub + u) % NS) * STAGE + A_BYTES, h, row, ip0)
                if u + LA < 2 * nc:
                    if ub + u + LA >= NS:     # the consumers are done with unit u + LA - NS
                        T.evaluate(T.call_extern("void", "lutc_mbar_wait", bars + 8 * (NS + (ub + u + LA) % NS),
                                                 ((ub + u + LA) // NS + 1) % 2))
                    copy_a(X, abase, u + LA, ub + u + LA, c0, bz, d, m)
                T.evaluate(T.call_extern("void", "lutc_cp_commit"))
                T.evaluate(T.call_extern("void", f"lutc_cp_wait<{LA}>"))       # unit u's activations landed
                T.evaluate(T.call_extern("void", "lutc_fence_async"))
                T.evaluate(T.call_extern("void", "lutc_mbar_arrive", bars + 8 * ((ub + u) % NS)))
        else:
            wg: T.let = tid // THREADS
            for u in T.serial(2 * nc):
                T.evaluate(T.call_extern("void", "lutc_mbar_wait", bars + 8 * ((ub + u) % NS), ((ub + u) // NS) % 2))
                multiply(acc, abase + ((ub + u) % NS) * STAGE, abase + ((ub + u) % NS) * STAGE + A_BYTES, wg)
                T.evaluate(T.call_extern("void", "lutc_wgmma_wait<1>"))
                if u > 0:
                    T.evaluate(T.call_extern("void", "lutc_mbar_arrive", bars + 8 * (NS + (ub + u - 1) % NS)))
            T.evaluate(T.call_extern("void", "lutc_wgmma_wait<0>"))
            if STREAM:   # the last unit's stage is free too: the next segment's producers count on its phase
                T.evaluate(T.call_extern("void", "lutc_mbar_arrive", bars + 8 * (NS + (ub + 2 * nc - 1) % NS)))

    @T.macro
    def stage_tile(acc, abase, tid):
        """Consumer ``tid``'s accumulators into the staged tile: accumulator 4 j + i is activation row
        64 wg + 16 w + g + 8 (i // 2), weight row 8 j + 2 (lane % 4) + i % 2."""
        lane: T.let = tid % 32
        for j in T.unroll(ROWS // 8):
            for h in T.unroll(2):
                stage_pair(abase, (tid // THREADS) * WG_ROWS + (tid % ROWS // 32) * 16 + lane // 4 + 8 * h,
                           8 * j + 2 * (lane % 4), acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1])

    @T.macro
    def finish(P, CNT, Y, R, acc, abase, m, bz, by, bx, tid, count):
        """The block's tile (row block ``bx``) out: into y at one K split, else into partials ``by``, and the last
        of the row block's ``count`` partials sums them."""
        if STAGED:
            T.tvm_storage_sync("shared")     # every warpgroup's MMAs are done with the ring
            if tid < WG * THREADS:
                stage_tile(acc, abase, tid)
            T.tvm_storage_sync("shared")
            write_tile(P, Y, R, abase, m, bz, by, bx, tid)
        elif tid < WG * THREADS:
            # accumulator 4 j + i: activation row 64 wg + 16 w + g + 8 (i // 2), weight row 8 j + 2 (lane % 4) + i % 2
            lane: T.let = tid % 32
            for j in T.unroll(ROWS // 8):
                for i in T.unroll(4):
                    tok: T.let = (bz * MT + (tid // THREADS) * WG_ROWS + (tid % ROWS // 32) * 16 + lane // 4
                                  + 8 * (i // 2))
                    nn: T.let = bx * ROWS + 8 * j + 2 * (lane % 4) + i % 2
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
            reduce_partials(P, CNT, Y, R, m, bz, bx, tid, count)

    @T.macro
    def body(X, W, S, Z, P, CNT, Y, R, m, bz, by, bx, tid):
        SMA = T.alloc_buffer((SA,), "uint8", scope="shared.dyn")
        WSB = T.alloc_buffer((NSC * B * ROWS * 4,), "int32", scope="shared.dyn")
        SSB = T.alloc_buffer((NSC * SP * SSW,), "float16", scope="shared.dyn")
        ZSB = T.alloc_buffer((NSC * 4 * ZSW if HZ else 16,), "int8", scope="shared.dyn")
        wr = T.alloc_buffer((4 * B,), "int32", scope="local")
        sc = T.alloc_buffer((4,), "int32", scope="local")            # half2 s / 2 per 32-K piece
        kz = T.alloc_buffer((4,), "int32", scope="local")            # half2 1024 + 2z
        ofs = T.alloc_buffer((4,), "int32", scope="local")           # half2 -e s / 2 (real zero points)
        hv = T.alloc_buffer((16,), "int32", scope="local")
        gq = T.alloc_buffer((8,), "int32", scope="local")
        acc = T.alloc_buffer((ACC,), f32, scope="local")
        abase: T.let = T.call_pure_extern("int32", "lutc_smem_base", T.address_of(SMA[0]))
        # plain stores into the swizzled regions' unused last bytes, here and after the loop: TVM sizes the
        # launch's dynamic shared memory by the buffers it sees accessed, and lets buffers share memory outside
        # their accessed range (the helpers that use these regions take addresses only)
        if tid == 0:
            SMA[SA - 1] = T.uint8(0)
        if WS:
            init_bars(abase, tid)
        if STREAM:
            # block bx takes chunks [lo, hi) of the row-block-major work, segment by segment (streamk.py)
            lo: T.let = bx * TOT // GS
            hi: T.let = (bx + 1) * TOT // GS
            for sg in T.serial(MAXSEG):
                t: T.let = lo // C + sg
                a0: T.let = T.max(lo, t * C)                         # the segment: chunks [a0, e0) of the work
                e0: T.let = T.min(hi, t * C + C)
                if a0 < e0:      # (an empty span, more blocks than chunks, has none)
                    first: T.let = ((t * C + 1) * GS - 1) // TOT      # the block holding the row block's chunk 0
                    for i in T.unroll(ACC):
                        acc[i] = T.float32(0)
                    specialized(X, W, S, Z, WSB, SSB, ZSB, wr, sc, kz, ofs, hv, gq, acc, abase, m, bz, a0 - t * C,
                                e0 - a0, t, tid, 2 * (a0 - lo))
                    finish(P, CNT, Y, R, acc, abase, m, bz, bx - first, t, tid,
                           ((t * C + C) * GS - 1) // TOT - first + 1)
                    T.tvm_storage_sync("shared")    # every thread is past the tile before the ring refills
        else:
            c0: T.let = by * CPS
            nc: T.let = T.min(CPS, C - c0) if RAGGED else CPS       # chunks of this block
            for i in T.unroll(ACC):
                acc[i] = T.float32(0)
            if WS:
                specialized(X, W, S, Z, WSB, SSB, ZSB, wr, sc, kz, ofs, hv, gq, acc, abase, m, bz, c0, nc, bx, tid, 0)
            else:
                cooperative(X, W, S, Z, WSB, SSB, ZSB, wr, sc, kz, ofs, hv, gq, acc, abase, m, bz, c0, nc, bx, tid)
            finish(P, CNT, Y, R, acc, abase, m, bz, by, bx, tid, SPLIT)
        if tid == 0:
            SMA[SA - 1] = T.uint8(0)

    return kernel_func(p, body, NT)
