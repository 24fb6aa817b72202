"""The dequantizing GEMV for 1-, 2- and 4-bit weights (and ternary) in the code layouts (``cuda-n{b}-c128-v1``),
as TVMScript: ``dp4a`` on int8 activations.

Why not table lookups: the LUT kernel looks each 4-bit plane index up once per plane, so a b-bit weight costs b/4
lookups (SHF + LOP3 + LDS + FADD each): at 4 bits the W4 GEMV was issue-bound (H200: 0.97-1.17x torch's int4
kernel), and the float tables it builds per block cost a shared-memory phase of their own. Here a weight is one
b-bit field: ``(w >> b h) & (2^b - 1) * 0x01010101`` (h < 8 / b) turns a 32-bit word of 32 / b codes into 8 / b
words of 4 bytes, and a ``dp4a`` each multiplies them by 4 int8 activations (4 bits: 5 instructions per 8 weights;
2 bits: 9 per 16, with one shift per two fields, see ``code_bytes``). The activations are what the int8 table
mode quantizes (``table_dtype="int8"``, the default: ~1e-2 relative, as the CPU's int8 tables): each block rounds
its K range to int8 per 32 K (scale = absmax / 127, round to nearest even, as llama.cpp's Q8_0 activation blocks)
while it stages them in shared memory, in the byte order of the weight words, with the integer sums that the zero
points need. Per row, 32 K and chunk:
``y += s / 2 * xs * (2 dot - (z' + 2^b - 1) sum x)`` (z' = 2z + 1 - 2^b: the layout's zero-point encoding), float32
from there.

Grid and epilogue are the LUT kernel's (tir.py): 128 rows per block, one per thread, K split over blocks, the
last block sums the partials; or, when the GPU holds every 32-row block at once, blocks of 32 rows whose warps
split K and add their sums in shared memory (``slices``, below). Each activation row is its own ``blockIdx.z``
(up to 3 rows use this kernel; 4+ the tensor-core kernel, which reads the same words). Float tables
(``table_dtype="f32"``) keep bit planes and the float32 LUT kernel.
"""
from __future__ import annotations

from .layout import CHUNK, CODE_LAYOUTS, ROWS
from .tir import THREADS, KernelParams, kernel_func, load_chunk_macro, scale_segments, store_macro

SUB = 32            # K per int8 activation scale (a lane quad's word of the tensor-core layout)
SUBS = CHUNK // SUB  # sub-blocks per chunk
WORDS = 8           # int8 activation words per sub-block: (slot t, byte field h) for t < b, h < 8 / b


def supports(bits: int, group_size: int, groups: int) -> bool:
    """1-, 2- and 4-bit weights whose groups hold whole 32-K sub-blocks (or one group per row)."""
    return bits in CODE_LAYOUTS and (groups == 1 or group_size % SUB == 0)


def byte_offsets(bits: int, r: int) -> list[int]:
    """K offsets (inside a 32-K sub-block) of the 4 activations in int8 word ``r`` = (slot t, field h): byte e
    meets code field h + e * 8 / b of the slot's words, i.e. K ``F t + f % F + 16 (f // F)`` (F = 16 / b)."""
    hh, f_ = 8 // bits, 16 // bits
    t, h = divmod(r, hh)
    return [f_ * t + (h + e * hh) % f_ + 16 * ((h + e * hh) // f_) for e in range(4)]


# the in-block split (``slices``): when the 32-row blocks of the GEMV fit the GPU in one wave, a block's warps split
# K between them and reduce in shared memory, instead of 128-row blocks splitting K over the grid and the last one
# summing partials from global memory (~1.1-1.5 us of L2 round trips per call). H200, 200-launch graphs, cold L2
# (bench/cuda_proto/dq_rows): 4096 x 4096 W2 4.21 -> 3.83 us (16 warps of 2 chunks), W4 4.97 -> 4.51 (32 warps of
# 1 chunk); at N = 11008 and 14336 (344-448 blocks restaging all of x) the grid split stays ahead (W2 6.6 vs 7.2,
# 7.5 vs 8.0 us).
SLICE_ROWS = 32          # rows per block with the in-block split: one warp reads 32 rows' 16-byte words
MAX_SLICE_CHUNKS = 32    # K up to 4096: each thread holds its chunks' words in registers


def choose_slices(bits: int, chunks: int, n_pad: int, sms: int = 132) -> int:
    """Warps splitting K inside a block (0: split K over blocks): when the 32-row blocks are at most one per SM and
    each thread holds at most 2 chunks (1 for 4-bit words: 32 warps of 1024 threads)."""
    if n_pad // SLICE_ROWS > sms or chunks > MAX_SLICE_CHUNKS:
        return 0
    return min(chunks, 32 if bits == 4 else 16)


# programmatic dependent launch (sm_90+): launched with programmatic stream serialization, the GEMV may start
# while its predecessor still runs; it loads its weights (constant) at once and waits for the predecessor
# (``griddepcontrol.wait``: its completion and memory flush) only before it reads the activations or residual or
# writes anything. "trigger" also lets the next such kernel start at this one's entry. H200, 200-launch graphs,
# cold L2 (bench/cuda_proto/pdl), us, none / wait / trigger: 4096 x 4096 W2 (sliced) 3.82 / 3.63 / 4.01, W4 (sliced)
# 4.53 / 4.36 / 3.59; 11008 W2 6.65 / 6.50 / 7.12, W4 9.24 / 9.07 / 8.66; 14336 W2 7.58 / 7.42 / 7.26, W4 10.82 /
# 10.56 / 10.29. Every kernel launched this way waits before it exits, so waits chain: a kernel that waited has
# seen everything before its predecessor too.
PDL_ARCHS = ("sm_90", "sm_90a")
PRELUDE = r"""
// lutc dp4a GEMV (codegen/cuda/dq.py): programmatic dependent launch, no-ops before sm_90
__device__ __forceinline__ void lutc_grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void lutc_grid_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
"""


def choose_pdl(bits: int, arch: str) -> str:
    """The launch mode that measured fastest: "trigger" for 4-bit codes, "wait" for 1- and 2-bit (where letting
    the successor in early cost up to 0.5 us at N = 11008), "" before sm_90."""
    if arch not in PDL_ARCHS:
        return ""
    return "trigger" if bits == 4 else "wait"


def dq_gemv_func(p: KernelParams):
    if p.mt != 1 or not supports(p.bits, p.group_size, p.groups) or p.layout != CODE_LAYOUTS.get(p.bits):
        raise ValueError(f"the dequantizing GEMV takes one activation row per block and 1, 2 or 4-bit codes in "
                         f"groups of a multiple of {SUB}, got mt={p.mt}, bits={p.bits}, group {p.group_size}, "
                         f"layout {p.layout}")
    return _sliced_func(p) if p.slices else _split_func(p)


def _macros(p: KernelParams, nsub: int, threads: int, cpt: int):
    """The pieces both forms share, for ``nsub`` staged 32-K sub-blocks, ``threads`` threads and ``cpt`` chunks
    per thread: the activation staging, the loads of a chunk, and its dp4a dot products into ``yacc``."""
    from ..tvmscript import T

    K, B = p.k, p.bits
    HH = 8 // B                       # byte words per weight word
    FF = 16 // B                      # code fields per half word
    BYTES = ((1 << B) - 1) * 0x01010101
    SEGK, SEGS = scale_segments(p.group_size)   # K per scale inside a chunk, scales per chunk
    PASSES = -(-nsub * WORDS // threads)
    f32, i32 = "float32", "int32"
    REAL = p.real_zero   # zero points with fractions: the zero-point term in float32 (exact integer sums below 2^24)
    load_chunk = load_chunk_macro(p, f32 if REAL else i32, zero_fill=True)

    # Field h of a word: ``(w >> B h) & BYTES``, but for 2-bit codes fields h and h + 2 share one shift (``w >> 4``)
    # and the odd fields are masked in place (0x0c..: 4x their value) into a second accumulator, shifted back once
    # per sub-block: 9 instructions per 16 weights instead of 11, bit-identical sums. H100, 200-launch graphs, cold
    # L2 (bench/cuda_proto/persistent): W2 4096 / 11008 / 14336 x 4096 4.67 -> 4.62, 7.75 -> 7.58, 8.98 -> 8.83 us.
    # The same for 4-bit codes (0xf0.. in place, an unsigned-bytes dp4a) ran 1-2% slower at N = 11008 and 14336.
    PAIR = 2 if B == 2 else 1

    def code_bytes(w, h):
        if PAIR == 1:
            return T.bitwise_and(T.shift_right(w, B * h), T.int32(BYTES))
        return T.bitwise_and(T.shift_right(w, 4 * (h // 2)),
                             T.if_then_else(h % 2 == 0, T.int32(0x03030303), T.int32(0x0C0C0C0C)))

    def offset(r, e):
        """``byte_offsets(B, r)[e]`` for TIR ``r`` and ``e``."""
        f = r % HH + e * HH
        return FF * (r // HH) + f % FF + 16 * (f // FF)

    @T.macro
    def stage_x(X, XQ, XSUM, XSC, bz, c0, tid):
        """Thread ``tid`` packs one int8 word ``r`` of sub-block ``sb`` (from chunk ``c0`` on): the activations at
        the offsets ``byte_offsets(B, r)`` (for 4 bits: 4 t + h + (0, 2, 16, 18)), in the byte order of
        ``(w >> B h) & BYTES``."""
        xv = T.alloc_buffer((4,), f32, scope="local")
        qv = T.alloc_buffer((4,), i32, scope="local")
        amax = T.alloc_buffer((1,), f32, scope="local")
        qs = T.alloc_buffer((1,), i32, scope="local")
        for ps in T.unroll(PASSES):
            sb: T.let = ps * (threads // WORDS) + tid // WORDS
            r: T.let = tid % WORDS
            k0: T.let = c0 * CHUNK + sb * SUB
            for e in T.unroll(4):
                xv[e] = T.if_then_else(sb < nsub and k0 + offset(r, e) < K,
                                       T.Cast(f32, X[bz, k0 + offset(r, e)]), T.float32(0))
            amax[0] = T.max(T.max(T.fabs(xv[0]), T.fabs(xv[1])), T.max(T.fabs(xv[2]), T.fabs(xv[3])))
            for sh in T.unroll(3):   # max over the 8 lanes of the sub-block
                amax[0] = T.max(amax[0], T.call_pure_extern(
                    f32, "__shfl_xor_sync", T.uint32(0xFFFFFFFF), amax[0], 1 << sh, 32))
            inv: T.let = T.if_then_else(amax[0] > T.float32(0), T.float32(127) / amax[0], T.float32(0))
            for e in T.unroll(4):
                qv[e] = T.call_pure_extern(i32, "__float2int_rn", xv[e] * inv)
            qs[0] = qv[0] + qv[1] + qv[2] + qv[3]
            for sh in T.unroll(3):
                qs[0] = qs[0] + T.call_pure_extern(
                    i32, "__shfl_xor_sync", T.uint32(0xFFFFFFFF), qs[0], 1 << sh, 32)
            if sb < nsub:
                XQ[sb * WORDS + r] = T.bitwise_or(
                    T.bitwise_or(T.bitwise_and(qv[0], 255), T.shift_left(T.bitwise_and(qv[1], 255), 8)),
                    T.bitwise_or(T.shift_left(T.bitwise_and(qv[2], 255), 16), T.shift_left(qv[3], 24)))
                if r == 0:
                    XSUM[sb] = qs[0]
                    XSC[sb] = amax[0] / T.float32(127)

    @T.macro
    def accumulate(XQ, XSUM, XSC, wr, sl, zl, xq, dot, yacc, cc, staged):
        """Chunk slot ``cc`` of the registers (staged as chunk ``staged``): per sub-block,
        ``y += s / 2 * xs * (2 dot - (z' + 2^b - 1) sum x)``."""
        for i in T.unroll(SUBS):
            sb: T.let = staged * SUBS + i
            xq[T.Ramp(0, 1, 4)] = XQ[T.Ramp(sb * WORDS, 1, 4)]
            xq[T.Ramp(4, 1, 4)] = XQ[T.Ramp(sb * WORDS + 4, 1, 4)]
            dot[0] = T.int32(0)
            if PAIR == 2:
                dot[1] = T.int32(0)
            for t in T.unroll(B):
                for h in T.unroll(HH):
                    dot[h % PAIR] = T.call_pure_extern(i32, "__dp4a", code_bytes(wr[(cc * B + t) * 4 + i], h),
                                                       xq[t * HH + h], dot[h % PAIR])
            if PAIR == 2:
                dot[0] = dot[0] + T.shift_right(dot[1], 2)
            seg: T.let = cc * SEGS + (i * SUB) // SEGK
            if REAL:
                yacc[0] = yacc[0] + sl[seg] * T.float32(0.5) * XSC[sb] * (
                    T.Cast(f32, 2 * dot[0]) - (zl[seg] + T.float32((1 << B) - 1)) * T.Cast(f32, XSUM[sb]))
            else:
                yacc[0] = yacc[0] + sl[seg] * T.float32(0.5) * XSC[sb] * T.Cast(
                    f32, 2 * dot[0] - (zl[seg] + ((1 << B) - 1)) * XSUM[sb])

    TRIGGER, WAIT = p.pdl == "trigger", bool(p.pdl)

    @T.macro
    def grid_entry():
        if TRIGGER:
            T.evaluate(T.call_extern("void", "lutc_grid_trigger"))

    @T.macro
    def grid_wait():
        if WAIT:
            T.evaluate(T.call_extern("void", "lutc_grid_wait"))

    return stage_x, load_chunk, accumulate, grid_entry, grid_wait


def _split_func(p: KernelParams):
    """K split over blocks of 128 rows (``cps`` chunks each); the last block sums the partials (tir.store_macro)."""
    from ..tvmscript import T

    C, B, CPS = p.chunks, p.bits, p.cps
    RAGGED = C % CPS != 0
    _, SEGS = scale_segments(p.group_size)
    NSUB = CPS * SUBS                 # sub-blocks staged per block
    f32, i32 = "float32", "int32"
    store = store_macro(p)
    stage_x, load_chunk, accumulate, grid_entry, grid_wait = _macros(p, NSUB, THREADS, CPS)

    @T.macro
    def body(X, W, S, Z, P, CNT, Y, R, m, bz, by, bx, tid):
        XQ = T.alloc_buffer((NSUB * WORDS,), i32, scope="shared")
        XSUM = T.alloc_buffer((NSUB,), i32, scope="shared")
        XSC = T.alloc_buffer((NSUB,), f32, scope="shared")
        wr = T.alloc_buffer((CPS * B * 4,), i32, scope="local")  # [chunk, slot t, word i]
        sl = T.alloc_buffer((CPS * SEGS,), f32, scope="local")
        zl = T.alloc_buffer((CPS * SEGS,), f32 if p.real_zero else i32, scope="local")
        xq = T.alloc_buffer((WORDS,), i32, scope="local")
        dot = T.alloc_buffer((2,), i32, scope="local")
        yacc = T.alloc_buffer((1,), f32, scope="local")
        n: T.let = bx * ROWS + tid
        grid_entry()
        # the weights and scales of every chunk first: their HBM latency overlaps the staging (and the predecessor)
        for cc in T.unroll(CPS):
            if not RAGGED or by * CPS + cc < C:
                load_chunk(W, S, Z, wr, sl, zl, cc, by * CPS + cc, n)
        grid_wait()
        stage_x(X, XQ, XSUM, XSC, bz, by * CPS, tid)
        T.tvm_storage_sync("shared")
        yacc[0] = T.float32(0)
        for cc in T.unroll(CPS):
            if not RAGGED or by * CPS + cc < C:
                accumulate(XQ, XSUM, XSC, wr, sl, zl, xq, dot, yacc, cc, cc)
        store(yacc, P, CNT, Y, R, m, bz, by, bx, tid, n)

    return kernel_func(p, body)


def _sliced_func(p: KernelParams):
    """Blocks of 32 rows whose ``slices`` warps split K (warp w takes chunks w, w + slices, ...), the whole row of
    activations staged per block, the warps' sums added in shared memory by the first: no partials, no handoff."""
    from ..tvmscript import T

    K, C, B, N, NP, G = p.k, p.chunks, p.bits, p.n, p.n_pad, p.groups
    XDT, YDT, RES, SL = p.x_dtype, p.y_dtype, p.residual, p.slices
    CPT = -(-C // SL)                 # chunks per thread
    TH = SLICE_ROWS * SL
    NSUB = C * SUBS
    _, SEGS = scale_segments(p.group_size)
    f32, i32 = "float32", "int32"
    stage_x, load_chunk, accumulate, grid_entry, grid_wait = _macros(p, NSUB, TH, CPT)

    @T.macro
    def body(X, W, S, Z, Y, R, bz, bx, tid):
        XQ = T.alloc_buffer((NSUB * WORDS,), i32, scope="shared")
        XSUM = T.alloc_buffer((NSUB,), i32, scope="shared")
        XSC = T.alloc_buffer((NSUB,), f32, scope="shared")
        RED = T.alloc_buffer((TH,), f32, scope="shared")
        wr = T.alloc_buffer((CPT * B * 4,), i32, scope="local")
        sl = T.alloc_buffer((CPT * SEGS,), f32, scope="local")
        zl = T.alloc_buffer((CPT * SEGS,), f32 if p.real_zero else i32, scope="local")
        xq = T.alloc_buffer((WORDS,), i32, scope="local")
        dot = T.alloc_buffer((2,), i32, scope="local")
        yacc = T.alloc_buffer((1,), f32, scope="local")
        racc = T.alloc_buffer((1,), f32, scope="local")
        lane: T.let = tid % SLICE_ROWS
        wp: T.let = tid // SLICE_ROWS
        n: T.let = bx * SLICE_ROWS + lane
        grid_entry()
        for cc in T.unroll(CPT):
            if wp + SL * cc < C:
                load_chunk(W, S, Z, wr, sl, zl, cc, wp + SL * cc, n)
        grid_wait()
        stage_x(X, XQ, XSUM, XSC, bz, 0, tid)
        T.tvm_storage_sync("shared")
        yacc[0] = T.float32(0)
        for cc in T.unroll(CPT):
            if wp + SL * cc < C:
                accumulate(XQ, XSUM, XSC, wr, sl, zl, xq, dot, yacc, cc, wp + SL * cc)
        RED[tid] = yacc[0]
        T.tvm_storage_sync("shared")
        if wp == 0:
            racc[0] = RED[lane]
            for w in T.unroll(SL - 1):
                racc[0] = racc[0] + RED[(w + 1) * SLICE_ROWS + lane]
            if n < N:
                if RES:
                    Y[bz, n] = T.Cast(YDT, racc[0] + R[bz, n])
                else:
                    Y[bz, n] = T.Cast(YDT, racc[0])

    @T.prim_func
    def main(x: T.handle, w: T.handle, s: T.handle, z: T.handle, part: T.handle, cnt: T.handle, y: T.handle,
             r: T.handle):   # the arguments of tir.kernel_func (partials and counters unused: split = 1)
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        m = T.int32()
        X = T.match_buffer(x, (m, K), XDT)
        W = T.match_buffer(w, (C, B, NP, 4), "int32")
        S = T.match_buffer(s, (p.scale_rows, NP), "float16")
        Z = T.match_buffer(z, (G, NP), "int8")
        P = T.match_buffer(part, (1, m, NP), "float32")  # noqa: F841
        CNT = T.match_buffer(cnt, (m, NP // ROWS), "int32")  # noqa: F841
        Y = T.match_buffer(y, (m, N), YDT)
        R = T.match_buffer(r, (m, N) if RES else (1,), "float32")
        for bz in T.thread_binding(m, thread="blockIdx.z"):
            for bx in T.thread_binding(NP // SLICE_ROWS, thread="blockIdx.x"):
                for tid in T.thread_binding(TH, thread="threadIdx.x"):
                    body(X, W, S, Z, Y, R, bz, bx, tid)

    return main
