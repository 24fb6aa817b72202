"""The CUDA LUT kernels, written as TVMScript (lowered TIR with explicit thread bindings).

One ``main`` PrimFunc, one kernel launch, per LUT matmul ``y[m, n] = sum_k x[m, k] W[n, k]``:

1. ``lut_matmul`` (grid: 128-row blocks x K splits x tiles of MT activation rows, 128 threads). Its prologue
   is the fused ``lut_precompute``: the block builds, in shared memory, the 16-entry signed tables
   ``T[j][idx] = sum_i (2 bit_i(idx) - 1) x[4j + i]`` (float32) for its K range and MT rows, and the
   per-group activation sums for the zero points (warp shuffles). Then every thread owns one weight row:
   it streams the row's packed bit planes (16-byte loads, coalesced over the warp), looks every 4-bit plane
   index up in the shared table (``acc_t += T[j][idx_t]``, one chain per plane), and rescales once per K group by s/2 and the
   zero point. Weights are read exactly once from HBM; tables are reused by the 128 rows of the block.
   When K is split over blocks, each block writes float32 partials and the last block to finish for its
   rows (an atomic counter per row block with release/acquire ordering; the counter resets itself) sums them and
   casts to the output dtype: one launch per call. With ``residual``, the output adds ``r[m, n]`` (a decoder
   layer's residual connection: one launch less per projection that feeds it).

``kernel_func`` holds what every CUDA LUT matmul kernel shares (the 8 arguments the runtime passes and the
grid); a kernel is a TVMScript macro for one thread's work (``lut_matmul_func`` here, the tensor-core kernel in
mma.py, the dp4a GEMV over 1-, 2- and 4-bit codes in dq.py), ``last_block_macro`` is their common split-K handoff and
``store_macro`` the one-row-per-thread kernels' epilogue.

The table build exists only fused into the matmul (no standalone ``lut_precompute`` kernel yet): a block
rebuilds the tables of its K range, which costs about 35 instructions per thread and chunk of 128 K against
about 128 * bits for the lookups.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from . import streamk
from .layout import CHUNK, LAYOUT, ROWS

THREADS = 128  # = ROWS: one weight row per thread


@dataclass(frozen=True)
class KernelParams:
    n: int              # output features (real)
    n_pad: int          # padded to ROWS
    k: int              # input features (real)
    chunks: int         # K_pad / 128
    bits: int           # bit planes
    group_size: int
    groups: int         # rows of the scales array
    has_zero: bool      # zero points present (else symmetric grid)
    mt: int             # activation rows per block (1: GEMV)
    cps: int            # chunks per block (K split = ceil(chunks / cps))
    x_dtype: str = "float16"
    y_dtype: str = "float32"
    arch: str = "sm_90a"
    maxreg: int = 0     # nvcc -maxrregcount (0: nvcc's choice); fewer registers, more resident warps
    residual: bool = False  # y = x @ W.T + r (r float32 [m, N], the fused residual add); else r is a [1] dummy
    kind: str = "lut"   # "lut": table lookups on CUDA cores (this file); "mma": dequantize + tensor cores (mma.py);
                        # "dq": the dp4a GEMV over b-bit codes (dq.py)
    layout: str = LAYOUT  # of the weight words: bit planes, or b-bit codes (layout.CODE_LAYOUTS: "dq" and "mma")
    stages: int = 0     # the prefill GEMM's shared-memory pipeline depth (0: its default for the tile, gemm.py)
    slices: int = 0     # the dp4a GEMV: K split over this many warps of the block (blocks of 32 rows, dq.py);
                        # 0: over blocks (128 rows each, ``cps`` chunks per block, the last block reduces)
    real_zero: bool = False  # zero points with fractions: the scales argument holds them after the scales
                             # (layout.py; [2G, N_pad]), each kernel adds them to its zero-point term
    producers: int = 0  # the Hopper GEMM (wgmma.py): warpgroups that only copy and dequantize, for warpgroups that
                        # only multiply (0: every warpgroup does both)
    pdl: str = ""       # the dp4a GEMV's programmatic dependent launch (sm_90, dq.choose_pdl): "wait" (it may start
                        # before its predecessor ends and waits for it only to read the activations), "trigger"
                        # (also lets its successor start at its entry); "": launched after its predecessor
    stream: int = 0     # the Hopper GEMM (wgmma.py): blocks of a stream-K grid (streamk.py), each an equal share of the
                        # (row block, chunk) work that may cross row blocks; 0: the uniform K split (``cps``)

    @property
    def scale_rows(self) -> int:
        """Rows of the scales argument: the groups' scales, then (real zero points) their fractions."""
        return 2 * self.groups if self.real_zero else self.groups

    @property
    def split(self) -> int:
        """Partial sums per (row tile, row block): the K splits, or with stream-K the most segments a row block is
        cut into."""
        if self.stream:
            return streamk.slots(self.n_pad // ROWS, self.chunks, self.stream)
        return -(-self.chunks // self.cps)

    @property
    def direct(self) -> bool:
        """Whether blocks write y themselves (one K split), not partial sums that the last block reduces."""
        return self.split == 1 and not self.stream

    def as_dict(self) -> dict:
        return asdict(self)


def choose_cps(chunks: int, n_pad: int, mt: int, sms: int = 132, waves: int = 6) -> int:
    """Chunks per block: enough blocks to fill the GPU ``waves`` times over, shared memory <= 48 KB.
    (waves = 6 picked the fastest of the swept K splits for M = 1 at N = 4096, 11008, 14336, K = 4096 on an H100.)"""
    row_blocks = n_pad // ROWS
    split = max(1, min(chunks, -(-sms * waves // row_blocks)))
    cps = -(-chunks // split)
    cap = max(1, (48 * 1024) // (mt * 32 * 16 * 4 + mt * 32 * 4))
    return max(1, min(cps, cap))


# the split-K handoff's counter increment (a helper TVM's call_extern names; build.py prepends it to the source).
# acq_rel at GPU scope, after a block barrier: it publishes the block's partials (release is cumulative over what
# the barrier ordered) and, in the last block, makes the others' visible to the threads the next barrier releases
# (CUTLASS's GenericBarrier protocol). Two __threadfence() (full membar.gl: wait for every outstanding access) cost
# 0.3-0.4 us more per call (H200, W2/W4 GEMV at N = 4096-14336 in a 200-launch graph: 4.56 -> 4.23 us at 4096 x 4096).
PRELUDE = r"""
__device__ __forceinline__ int lutc_arrive(int* counter) {
  int old;
  asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;" : "=r"(old) : "l"(counter) : "memory");
  return old;
}
"""


def last_block_macro():
    """TVMScript macro for the split-K handoff: once a block's partials are written, ``lastl[0]`` is 1 in the
    block that finished its (row tile, row block) last, which may then read the others' partials (with
    ``__ldcg``: L1 is not coherent). Shared by the LUT and the tensor-core kernels."""
    from ..tvmscript import T

    @T.macro
    def last_block(CNT, bz, bx, tid, last, lastl, split):
        T.tvm_storage_sync("shared")
        if tid == 0:
            last[0] = T.Cast("int32", T.call_extern(
                "int32", "lutc_arrive", T.address_of(CNT[bz, bx])) == split - 1)
        T.tvm_storage_sync("shared")
        lastl[0] = last[0]

    return last_block


def store_macro(p: KernelParams):
    """TVMScript macro for the end of a one-row-per-thread kernel (the LUT kernel, the dequantizing GEMV):
    ``yacc[mm]`` (row ``n``, activation row ``bz * MT + mm``) goes to ``y`` (+ the residual) when K is not
    split, else to the partial sums, and the last block of the (row tile, row block) reduces them."""
    from ..tvmscript import T

    MT, SPLIT, N, YDT, RES = p.mt, p.split, p.n, p.y_dtype, p.residual
    DIRECT = SPLIT == 1
    f32 = "float32"
    last_block = last_block_macro()

    @T.macro
    def store(yacc, P, CNT, Y, R, m, bz, by, bx, tid, n):
        racc = T.alloc_buffer((1,), f32, scope="local")
        last = T.alloc_buffer((1,), "int32", scope="shared")
        lastl = T.alloc_buffer((1,), "int32", scope="local")
        for mm in T.unroll(MT):
            if bz * MT + mm < m:
                if DIRECT:
                    if n < N:
                        if RES:
                            Y[bz * MT + mm, n] = T.Cast(YDT, yacc[mm] + R[bz * MT + mm, n])
                        else:
                            Y[bz * MT + mm, n] = T.Cast(YDT, yacc[mm])
                else:
                    P[by, bz * MT + mm, n] = yacc[mm]
        if not DIRECT:
            # split-K reduction by the last block of each (row block, row tile) to finish
            # (the counter resets itself for the next call)
            last_block(CNT, bz, bx, tid, last, lastl, SPLIT)
            if lastl[0] == 1:
                for mm in T.unroll(MT):
                    if bz * MT + mm < m and n < N:
                        racc[0] = T.float32(0)
                        for sp in T.unroll(SPLIT):
                            racc[0] = racc[0] + T.call_extern(
                                f32, "__ldcg", T.address_of(P[sp, bz * MT + mm, n]))
                        if RES:
                            racc[0] = racc[0] + R[bz * MT + mm, n]
                        Y[bz * MT + mm, n] = T.Cast(YDT, racc[0])
                if tid == 0:
                    CNT[bz, bx] = 0

    return store


def scale_segments(group_size: int) -> tuple[int, int]:
    """(K per scale segment inside a 128-K chunk, segments per chunk) for groups of ``group_size``."""
    segk = min(group_size, CHUNK)
    return segk, CHUNK // segk


def load_chunk_macro(p: KernelParams, zero_dtype: str, zero_fill: bool = False):
    """TVMScript macro for a one-row-per-thread kernel's loads of chunk ``c`` into register slot ``slot``: the
    row's weight words (one 16-byte load per plane or code slot), its scales and (asymmetric) zero points per
    scale segment of the chunk, real-valued ones with their fractions added (float ``zero_dtype``: layout.py);
    ``zero_fill``: symmetric weights get zero points 0 in the slot."""
    from ..tvmscript import T

    B, GS, HZ, G = p.bits, p.group_size, p.has_zero, p.groups
    SEGK, SEGS = scale_segments(GS)
    if p.real_zero and not zero_dtype.startswith("float"):
        raise ValueError(f"real-valued zero points need a float zero-point dtype, got {zero_dtype}")

    @T.macro
    def load_chunk(W, S, Z, wr, sl, zl, slot, c, n):
        for t in T.unroll(B):
            wr[T.Ramp((slot * B + t) * 4, 1, 4)] = W[c, t, n, T.Ramp(0, 1, 4)]
        for sg in T.unroll(SEGS):
            sl[slot * SEGS + sg] = T.Cast("float32", S[(c * CHUNK + sg * SEGK) // GS, n])
            if p.real_zero:
                zl[slot * SEGS + sg] = T.Cast(zero_dtype, Z[(c * CHUNK + sg * SEGK) // GS, n]) + T.Cast(
                    zero_dtype, S[G + (c * CHUNK + sg * SEGK) // GS, n])
            elif HZ:
                zl[slot * SEGS + sg] = T.Cast(zero_dtype, Z[(c * CHUNK + sg * SEGK) // GS, n])
            elif zero_fill:
                zl[slot * SEGS + sg] = 0

    return load_chunk


def kernel_func(p: KernelParams, body, threads: int = THREADS):
    """The PrimFunc of a CUDA LUT matmul kernel: the 8 arguments every kernel takes (the runtime's ABI:
    x, w, scales, zeros, partials, counters, y, r) and the grid (activation-row tiles x K splits x 128-row
    blocks, ``threads`` threads); ``body``, a TVMScript macro, is one thread's work."""
    from ..tvmscript import T

    N, NP, K, C, B, G, MT, SPLIT = p.n, p.n_pad, p.k, p.chunks, p.bits, p.groups, p.mt, p.split
    NB = NP // ROWS
    GY, GX = (1, p.stream) if p.stream else (SPLIT, NB)   # stream-K: blockIdx.x is the block's share of the work
    XDT, YDT, RES = p.x_dtype, p.y_dtype, p.residual

    @T.prim_func
    def main(x: T.handle, w: T.handle, s: T.handle, z: T.handle, part: T.handle, cnt: T.handle, y: T.handle,
             r: T.handle):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        m = T.int32()
        X = T.match_buffer(x, (m, K), XDT)
        W = T.match_buffer(w, (C, B, NP, 4), "int32")
        S = T.match_buffer(s, (p.scale_rows, NP), "float16")
        Z = T.match_buffer(z, (G, NP), "int8")
        P = T.match_buffer(part, (SPLIT, m, NP), "float32")
        CNT = T.match_buffer(cnt, ((m + MT - 1) // MT, NB), "int32")
        Y = T.match_buffer(y, (m, N), YDT)
        R = T.match_buffer(r, (m, N) if RES else (1,), "float32")
        for bz in T.thread_binding((m + MT - 1) // MT, thread="blockIdx.z"):
            for by in T.thread_binding(GY, thread="blockIdx.y"):
                for bx in T.thread_binding(GX, thread="blockIdx.x"):
                    for tid in T.thread_binding(threads, thread="threadIdx.x"):
                        body(X, W, S, Z, P, CNT, Y, R, m, bz, by, bx, tid)

    return main


def lut_matmul_func(p: KernelParams):
    from ..tvmscript import T

    N, K, C, B, GS, MT, CPS = p.n, p.k, p.chunks, p.bits, p.group_size, p.mt, p.cps
    SPLIT = p.split
    SEGK, SEGS = scale_segments(GS)  # K per scale segment inside a chunk, segments per chunk
    SR = SEGK // 4                   # runs per segment
    U = min(SR, 8)                   # runs per stored activation-sum partial
    XPC = 32 // U                    # partials per chunk
    RAGGED = C % CPS != 0
    HZ = p.has_zero
    TAB = MT * CPS * 32 * 16         # floats of table in shared memory
    XPN = MT * CPS * XPC
    LOGU = U.bit_length() - 1
    PRE = max(1, min(CPS, 72 // (B * 4 + 2 * SEGS)))   # chunks whose weights are loaded before the table build
    f32 = "float32"
    store = store_macro(p)
    load_chunk = load_chunk_macro(p, f32)

    @T.macro
    def body(X, W, S, Z, P, CNT, Y, R, m, bz, by, bx, tid):
        TS = T.alloc_buffer((TAB,), f32, scope="shared")
        XP = T.alloc_buffer((XPN,), f32, scope="shared")
        xv = T.alloc_buffer((4,), f32, scope="local")
        wr = T.alloc_buffer((PRE * B * 4,), "int32", scope="local")
        sl = T.alloc_buffer((PRE * SEGS,), f32, scope="local")
        zl = T.alloc_buffer((PRE * SEGS,), f32, scope="local")
        yacc = T.alloc_buffer((MT,), f32, scope="local")
        acc = T.alloc_buffer((B,), f32, scope="local")    # one chain per bit plane
        rs = T.alloc_buffer((1,), f32, scope="local")
        xsb = T.alloc_buffer((1,), f32, scope="local")
        n: T.let = bx * ROWS + tid
        # the first PRE chunks' weights and scales are loaded before the table build, so
        # their HBM latency overlaps it (loads do not move across the barrier)
        for cc in T.unroll(PRE):
            if not RAGGED or by * CPS + cc < C:
                load_chunk(W, S, Z, wr, sl, zl, cc, by * CPS + cc, n)
        # ---- lut_precompute (fused): tables of this block's K range, MT rows ----
        j: T.let = tid // 4          # run inside the chunk
        q: T.let = tid % 4           # which 4 of the 16 entries (index bits 2, 3)
        for it in T.unroll(MT * CPS):
            row: T.let = bz * MT + it // CPS
            c: T.let = by * CPS + it % CPS
            for i in T.unroll(4):
                xv[i] = T.if_then_else(
                    row < m and c < C and c * CHUNK + j * 4 + i < K,
                    T.Cast(f32, X[row, c * CHUNK + j * 4 + i]), T.float32(0))
            base: T.let = (T.if_then_else(q % 2 == 1, xv[2], -xv[2])
                           + T.if_then_else(q // 2 == 1, xv[3], -xv[3]))
            o: T.let = (it * 32 + j) * 16 + q * 4
            TS[o] = base - xv[0] - xv[1]
            TS[o + 1] = base + xv[0] - xv[1]
            TS[o + 2] = base - xv[0] + xv[1]
            TS[o + 3] = base + xv[0] + xv[1]
            if HZ:
                rs[0] = xv[0] + xv[1] + xv[2] + xv[3]
                for sh in T.unroll(LOGU):
                    rs[0] = rs[0] + T.call_pure_extern(
                        f32, "__shfl_xor_sync", T.uint32(0xFFFFFFFF), rs[0], 4 << sh, 32)
                if q == 0 and j % U == 0:
                    XP[it * XPC + j // U] = rs[0]
        T.tvm_storage_sync("shared")
        # ---- lut_matmul: one weight row per thread ----
        for mm in T.unroll(MT):
            yacc[mm] = T.float32(0)
        for cc in T.unroll(CPS):
            if not RAGGED or by * CPS + cc < C:
                if cc >= PRE:  # slot cc % PRE was used by chunk cc - PRE
                    load_chunk(W, S, Z, wr, sl, zl, cc % PRE, by * CPS + cc, n)
                for sg in T.unroll(SEGS):
                    sc: T.let = sl[(cc % PRE) * SEGS + sg] * T.float32(0.5)
                    zf: T.let = zl[(cc % PRE) * SEGS + sg]
                    for mm in T.unroll(MT):
                        for t in T.unroll(B):
                            acc[t] = T.float32(0)
                        for r in T.unroll(SR):
                            for t in T.unroll(B):
                                acc[t] = acc[t] + TS[
                                    ((mm * CPS + cc) * 32 + sg * SR + r) * 16
                                    + T.bitwise_and(T.shift_right(wr[((cc % PRE) * B + t) * 4 + (sg * SR + r) // 8],
                                                                  4 * ((sg * SR + r) % 8)),
                                                    15)]
                        for t in T.unroll(B - 1):
                            acc[0] = acc[0] + T.float32(2 << t) * acc[t + 1]
                        if HZ:
                            xsb[0] = XP[(mm * CPS + cc) * XPC + (sg * SR) // U]
                            for u in T.unroll(SR // U - 1):
                                xsb[0] = xsb[0] + XP[(mm * CPS + cc) * XPC + (sg * SR) // U + u + 1]
                            yacc[mm] = yacc[mm] + sc * (acc[0] - zf * xsb[0])
                        else:
                            yacc[mm] = yacc[mm] + sc * acc[0]
        store(yacc, P, CNT, Y, R, m, bz, by, bx, tid, n)

    return kernel_func(p, body)
