"""The prefill GEMMs' epilogue through shared memory (wgmma.py, gemm.py): the float32 accumulator tile of a block
(MT activation rows x 128 weight rows) goes into shared memory the pipeline no longer needs, then out to y (or to
the split-K partial sums) a warp per tile row, four columns per thread.

Why: in the tensor cores' accumulator layout a lane holds pairs of adjacent columns of rows ``g`` and ``g + 8``
(g = lane / 4), so a warp's store instruction straight from the accumulators touches eight output rows with 4 (or
2) bytes each: 32 partial sectors per instruction. A per-block timeline of the Hopper GEMM (globaltimer stamps,
``bench/cuda_proto/gemm/`` run 10, H100, M = 128) put 4-7 us of a block's ~10 us of fixed cost there; half2 pairs
only halved it. Staged, a warp writes one whole 512-byte row of the tile.

Tile row ``r`` (512 bytes) holds its 16-byte granule ``c`` (columns 4c .. 4c + 3) at ``c ^ (r % 8)``: the
accumulator pairs of a warp's store (8 rows x 4 lanes of one granule pair) fall on distinct bank groups, the two
wavefronts 256 bytes need; the read-out takes whole rows.
"""
from __future__ import annotations

from .layout import ROWS
from .tir import KernelParams

ROW_BYTES = ROWS * 4     # one float32 tile row in shared memory
PIECES_PER_ROW = ROWS // 4

PRELUDE = r"""
// lutc prefill GEMM epilogue (codegen/cuda/epilogue.py): the float32 tile in shared memory, then out in 4-column
// pieces (one vector store where the address is aligned and the 4 columns are inside the output, else scalars)
__device__ __forceinline__ int lutc_smem_addr(const void* p) { return (int)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void lutc_sts64f(int dst, float a, float b) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};" :: "r"(dst), "f"(a), "f"(b) : "memory");
}
__device__ __forceinline__ void lutc_lds128f(int src, float* v) {
  asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3])
               : "r"(src) : "memory");
}
__device__ __forceinline__ void lutc_st4(float* p, int n, const float* v) {   // the first n (<= 4) of v
  if (n >= 4 && ((size_t)p & 15) == 0) { *(float4*)p = make_float4(v[0], v[1], v[2], v[3]); return; }
  for (int e = 0; e < 4; ++e) if (e < n) p[e] = v[e];
}
__device__ __forceinline__ void lutc_st4(half* p, int n, const float* v) {
  if (n >= 4 && ((size_t)p & 7) == 0) {
    half2 lo = __floats2half2_rn(v[0], v[1]), hi = __floats2half2_rn(v[2], v[3]);
    *(uint2*)p = make_uint2(*reinterpret_cast<unsigned*>(&lo), *reinterpret_cast<unsigned*>(&hi)); return;
  }
  for (int e = 0; e < 4; ++e) if (e < n) p[e] = __float2half_rn(v[e]);
}
"""


def tile_bytes(mt: int) -> int:
    """Shared memory the staged tile takes."""
    return mt * ROW_BYTES


def staged_epilogue_macros(p: KernelParams, threads: int):
    """TVMScript macros ``(stage_pair, write_tile)`` for a block of ``threads`` threads:

    - ``stage_pair(base, r, c, a, b)``: accumulators ``a, b`` of tile row ``r``, columns ``c, c + 1`` (c even) into
      the tile at shared address ``base``;
    - ``write_tile(P, Y, R, base, m, bz, by, bx, tid)``: after a block barrier, the tile out by every thread, into
      ``Y`` (with the residual ``R`` where ``p.residual``; rows past ``m`` and columns past N skipped) at one K
      split, else into the partial sums ``P[by]``."""
    from ..tvmscript import T

    MT, N, DIRECT, RES = p.mt, p.n, p.direct, p.residual
    PIECES = MT * PIECES_PER_ROW
    EVEN = PIECES % threads == 0     # (three warpgroups, 384 threads: 10 2/3 pieces per thread)

    @T.macro
    def stage_pair(base, r, c, a, b):
        T.evaluate(T.call_extern("void", "lutc_sts64f",
                                 base + r * ROW_BYTES + T.bitwise_xor(c // 4, r % 8) * 16 + (c % 4) * 4, a, b))

    @T.macro
    def write_tile(P, Y, R, base, m, bz, by, bx, tid):
        ov = T.alloc_buffer((4,), "float32", scope="local")
        for e in T.unroll(-(-PIECES // threads)):
            r: T.let = (e * threads + tid) // PIECES_PER_ROW
            c: T.let = (e * threads + tid) % PIECES_PER_ROW
            tok: T.let = bz * MT + r
            nn: T.let = bx * ROWS + 4 * c
            if EVEN or r < MT:
                T.evaluate(T.call_extern("void", "lutc_lds128f",
                                         base + r * ROW_BYTES + T.bitwise_xor(c, r % 8) * 16, ov.data))
            if tok < m and (EVEN or r < MT):
                if DIRECT:
                    if RES:
                        for q in T.unroll(4):
                            ov[q] = ov[q] + T.if_then_else(nn + q < N, R[tok, T.min(nn + q, N - 1)],
                                                           T.float32(0))
                    T.evaluate(T.call_extern("void", "lutc_st4", T.address_of(Y[tok, nn]), N - nn, ov.data))
                else:
                    T.evaluate(T.call_extern("void", "lutc_st4", T.address_of(P[by, tok, nn]), 4, ov.data))

    return stage_pair, write_tile
