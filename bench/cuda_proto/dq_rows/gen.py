"""Prototype: the dp4a GEMV with K split inside the block (warps over chunks, a shared-memory reduction) instead
of over blocks (partials in global memory, the last block sums them). Writes CUDA sources for the harness."""
import os
import sys

import numpy as np

import lutc
from lutc.codegen.cuda.build import prelude
from lutc.codegen.cuda.dq import SUB, SUBS, WORDS, byte_offsets  # noqa: F401
from lutc.codegen.cuda.layout import CHUNK
from lutc.codegen.cuda.tir import load_chunk_macro, scale_segments


def dq_rows_func(p, cpt: int, rw: int = 1):
    from lutc.codegen.tvmscript import T

    K, C, B, GS, N, NP = p.k, p.chunks, p.bits, p.group_size, p.n, p.n_pad
    XDT, YDT, RES, G = p.x_dtype, p.y_dtype, p.residual, p.groups
    WARPS = -(-C // cpt)
    RB = 32 * rw
    TH = RB * WARPS
    NB = NP // RB
    HH, FF = 8 // B, 16 // B
    BYTES = ((1 << B) - 1) * 0x01010101
    SEGK, SEGS = scale_segments(GS)
    NSUB = C * SUBS
    PASSES = -(-NSUB * WORDS // TH)
    f32, i32 = "float32", "int32"
    load_chunk = load_chunk_macro(p, i32, zero_fill=True)

    def code_bytes(w, h):
        return T.bitwise_and(T.shift_right(w, B * h), T.int32(BYTES))

    def offset(r, e):
        f = r % HH + e * HH
        return FF * (r // HH) + f % FF + 16 * (f // FF)

    @T.macro
    def stage_x(X, XQ, XSUM, XSC, bz, tid):
        xv = T.alloc_buffer((4,), f32, scope="local")
        qv = T.alloc_buffer((4,), i32, scope="local")
        amax = T.alloc_buffer((1,), f32, scope="local")
        qs = T.alloc_buffer((1,), i32, scope="local")
        for ps in T.unroll(PASSES):
            sb: T.let = ps * (TH // WORDS) + tid // WORDS
            r: T.let = tid % WORDS
            k0: T.let = sb * SUB
            for e in T.unroll(4):
                xv[e] = T.if_then_else(sb < NSUB and k0 + offset(r, e) < K,
                                       T.Cast(f32, X[bz, k0 + offset(r, e)]), T.float32(0))
            amax[0] = T.max(T.max(T.fabs(xv[0]), T.fabs(xv[1])), T.max(T.fabs(xv[2]), T.fabs(xv[3])))
            for sh in T.unroll(3):
                amax[0] = T.max(amax[0], T.call_pure_extern(
                    f32, "__shfl_xor_sync", T.uint32(0xFFFFFFFF), amax[0], 1 << sh, 32))
            inv: T.let = T.if_then_else(amax[0] > T.float32(0), T.float32(127) / amax[0], T.float32(0))
            for e in T.unroll(4):
                qv[e] = T.call_pure_extern(i32, "__float2int_rn", xv[e] * inv)
            qs[0] = qv[0] + qv[1] + qv[2] + qv[3]
            for sh in T.unroll(3):
                qs[0] = qs[0] + T.call_pure_extern(
                    i32, "__shfl_xor_sync", T.uint32(0xFFFFFFFF), qs[0], 1 << sh, 32)
            if sb < NSUB:
                XQ[sb * WORDS + r] = T.bitwise_or(
                    T.bitwise_or(T.bitwise_and(qv[0], 255), T.shift_left(T.bitwise_and(qv[1], 255), 8)),
                    T.bitwise_or(T.shift_left(T.bitwise_and(qv[2], 255), 16), T.shift_left(qv[3], 24)))
                if r == 0:
                    XSUM[sb] = qs[0]
                    XSC[sb] = amax[0] / T.float32(127)

    @T.macro
    def body(X, W, S, Z, Y, R, bz, bx, tid):
        XQ = T.alloc_buffer((NSUB * WORDS,), i32, scope="shared")
        XSUM = T.alloc_buffer((NSUB,), i32, scope="shared")
        XSC = T.alloc_buffer((NSUB,), f32, scope="shared")
        RED = T.alloc_buffer((TH,), f32, scope="shared")
        wr = T.alloc_buffer((cpt * B * 4,), i32, scope="local")
        sl = T.alloc_buffer((cpt * SEGS,), f32, scope="local")
        zl = T.alloc_buffer((cpt * SEGS,), i32, scope="local")
        xq = T.alloc_buffer((WORDS,), i32, scope="local")
        dot = T.alloc_buffer((1,), i32, scope="local")
        yacc = T.alloc_buffer((1,), f32, scope="local")
        racc = T.alloc_buffer((1,), f32, scope="local")
        lane: T.let = tid % RB
        wp: T.let = tid // RB
        n: T.let = bx * RB + lane
        for cc in T.unroll(cpt):
            if wp + WARPS * cc < C:
                load_chunk(W, S, Z, wr, sl, zl, cc, wp + WARPS * cc, n)
        stage_x(X, XQ, XSUM, XSC, bz, tid)
        T.tvm_storage_sync("shared")
        yacc[0] = T.float32(0)
        for cc in T.unroll(cpt):
            if wp + WARPS * cc < C:
                for i in T.unroll(SUBS):
                    sb: T.let = (wp + WARPS * cc) * SUBS + i
                    xq[T.Ramp(0, 1, 4)] = XQ[T.Ramp(sb * WORDS, 1, 4)]
                    xq[T.Ramp(4, 1, 4)] = XQ[T.Ramp(sb * WORDS + 4, 1, 4)]
                    dot[0] = T.int32(0)
                    for t in T.unroll(B):
                        for h in T.unroll(HH):
                            dot[0] = T.call_pure_extern(i32, "__dp4a", code_bytes(wr[(cc * B + t) * 4 + i], h),
                                                        xq[t * HH + h], dot[0])
                    seg: T.let = cc * SEGS + (i * SUB) // SEGK
                    yacc[0] = yacc[0] + sl[seg] * T.float32(0.5) * XSC[sb] * T.Cast(
                        f32, 2 * dot[0] - (zl[seg] + ((1 << B) - 1)) * XSUM[sb])
        RED[tid] = yacc[0]
        T.tvm_storage_sync("shared")
        if wp == 0:
            racc[0] = RED[lane]
            for w in T.unroll(WARPS - 1):
                racc[0] = racc[0] + RED[(w + 1) * RB + lane]
            if n < N:
                if RES:
                    Y[bz, n] = T.Cast(YDT, racc[0] + R[bz, n])
                else:
                    Y[bz, n] = T.Cast(YDT, racc[0])

    @T.prim_func
    def main(x: T.handle, w: T.handle, s: T.handle, z: T.handle, part: T.handle, cnt: T.handle, y: T.handle,
             r: T.handle):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        m = T.int32()
        X = T.match_buffer(x, (m, K), XDT)
        W = T.match_buffer(w, (C, B, NP, 4), "int32")
        S = T.match_buffer(s, (G, NP), "float16")
        Z = T.match_buffer(z, (G, NP), "int8")
        P = T.match_buffer(part, (1, m, NP), "float32")
        CNT = T.match_buffer(cnt, (m, NP // 128), "int32")
        Y = T.match_buffer(y, (m, N), YDT)
        R = T.match_buffer(r, (m, N) if RES else (1,), "float32")
        for bz in T.thread_binding(m, thread="blockIdx.z"):
            for bx in T.thread_binding(NB, thread="blockIdx.x"):
                for tid in T.thread_binding(TH, thread="threadIdx.x"):
                    body(X, W, S, Z, Y, R, bz, bx, tid)

    return main


def source(p, cpt, rw=1):
    import tvm

    target = tvm.target.Target({"kind": "cuda", "arch": p.arch}, host={"kind": "llvm"})
    mod = tvm.compile(tvm.IRModule({"main": dq_rows_func(p, cpt, rw)}), target=target)
    return prelude() + mod.mod.imports[0].inspect_source()


SHAPES = [(4096, 4096, 2, 2, 1), (4096, 4096, 4, 1, 1), (4096, 4096, 2, 4, 2), (4096, 4096, 4, 2, 2),
          (14336, 4096, 2, 4, 2), (14336, 4096, 2, 4, 4), (14336, 4096, 2, 8, 4),
          (11008, 4096, 2, 4, 2), (11008, 4096, 2, 4, 4), (14336, 4096, 4, 2, 2), (14336, 4096, 4, 4, 4),
          (11008, 4096, 4, 2, 2), (11008, 4096, 4, 4, 4)]

def run(out: str, i: int, what: str) -> None:
    n, k, bits, cpt, rw = SHAPES[i]
    rng = np.random.default_rng(0)
    q = lutc.quantize_weight(rng.standard_normal((n, k)).astype(np.float32), lutc.QuantConfig(bits=bits, group_size=128))
    p = lutc.kernels.build_lut_matmul(q, target="cuda", out_dtype="float32").params(1)
    assert p.kind == "dq", p.kind
    if what == "rows":
        text, name = source(p, cpt, rw), f"rows_{n}_{bits}_t{cpt}_r{rw}.cu"
    else:
        from lutc.codegen.cuda.build import cuda_source

        text, name = cuda_source(p), f"ship_{n}_{bits}.cu"
    open(f"{out}/{name}", "w").write(text)
    print(n, k, bits, cpt, rw, what, "shipped cps", p.cps, "split", p.split, flush=True)


if __name__ == "__main__":   # one TVMScript parse per process (a second one found the first one's parser), and
    import subprocess        # through the module, not __main__ (whose globals the macro lookup walks first)

    out = sys.argv[1]
    if len(sys.argv) == 2:
        for i, (n, _, bits, *_) in enumerate(SHAPES):
            for what in ("rows", "ship"):
                if what == "rows" or not os.path.exists(f"{out}/ship_{n}_{bits}.cu"):
                    subprocess.run([sys.executable, __file__, out, str(i), what], check=True)
        sys.exit(0)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gen

    gen.run(out, int(sys.argv[2]), sys.argv[3])
