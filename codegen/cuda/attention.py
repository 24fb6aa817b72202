"""GQA attention as one hand-scheduled CUDA kernel (TVMScript with thread bindings): the tensor expression
this replaced, left to dlight's general rules, took ~0.3 ms per layer of a decode step (four kernels with
global intermediates over every cache position), more than all LUT matmuls of the step together.

Arguments ``(q [b, heads, s, d], k, v [b, kv_heads, capacity, d], L, n_valid [1] int64, out)``: keys and values
are read from the runtime's in-place cache buffers (no copy per step); query head h reads KV head
h // (heads / kv_heads); causal top-left or bottom-right aligned (the queries are the last ``s`` of the filled
positions). A decode step replayed from a CUDA graph spans a fixed bucket ``L`` of the cache while the filled
length ``n_valid``, read on the device, grows (runtime/cuda_graphs.py).

One block of ``THREADS`` (512) threads per query row (batch x head x query position). The keys this row may see
are a prefix of the cache, ``kmax`` = min(filled positions ``n_valid[0]``, the causal bound, the span ``L``),
taken in chunks of ``THREADS`` with an online softmax (flash-decoding without the split): each thread scores
one key against the query (in shared memory), block max and sum by warp shuffles, the running output
rescaled and accumulated with one output column per thread (``THREADS // D`` groups of threads share a
chunk's keys when D is small, summed at the end), the values read coalesced across threads.
Masked positions are never read, so unfilled cache memory (anything, NaN included) does not matter.
"""
from __future__ import annotations

# Threads per block unless params["threads"] says otherwise (a multiple of 32 up to 1024). Measured on an
# H200, 9/3 heads of 64 (bench/gpu_profile.py --attention): decode (1 query) over 256 keys 25.5 / 11.5 /
# 7.0 us with 128 / 256 / 512 threads, over 2048 keys 192 / 81 / 41 us; prefill 128 x 128 22.5 / 18.0 /
# 22.3 us. Decode steps dominate generation: 512.
THREADS = 512


def attention_func(params: dict):
    from ..tvmscript import T

    THREADS = params.get("threads", globals()["THREADS"])
    WARPS = THREADS // 32

    HQ, HK, D = params["heads"], params["kv_heads"], params["head_dim"]
    REP = HQ // HK
    SCALE = float(params["scale"])
    CAUSAL, BOTTOM = bool(params.get("causal")), params.get("align") == "bottom_right"
    DPT = -(-D // THREADS)      # output columns per thread
    G = max(1, THREADS // D)     # thread groups splitting a chunk's keys in the output phase (D <= 64: 2+)
    U = 4 if D % 4 == 0 else 1   # independent partial dot products (breaks the load-FMA chain)
    NU = 16                      # independent partial sums over a chunk's values (loads in flight)
    f32 = "float32"
    NEG_INF = float("-inf")

    @T.prim_func
    def main(q: T.handle, k: T.handle, v: T.handle, L: T.int32, n_valid: T.handle, o: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, s, cap = T.int32(), T.int32(), T.int32()   # 32-bit index math: a third of the instructions
        Q = T.match_buffer(q, (b, HQ, s, D), f32)
        K = T.match_buffer(k, (b, HK, cap, D), f32)
        V = T.match_buffer(v, (b, HK, cap, D), f32)
        NV = T.match_buffer(n_valid, (1,), "int64")
        O = T.match_buffer(o, (b, HQ, s, D), f32)
        for row in T.thread_binding(b * HQ * s, thread="blockIdx.x"):
            for t in T.thread_binding(THREADS, thread="threadIdx.x"):
                qs = T.alloc_buffer((D,), f32, scope="shared")
                ps = T.alloc_buffer((THREADS,), f32, scope="shared")
                red = T.alloc_buffer((WARPS,), f32, scope="shared")
                sc = T.alloc_buffer((1,), f32, scope="local")
                m = T.alloc_buffer((1,), f32, scope="local")
                lsum = T.alloc_buffer((1,), f32, scope="local")
                mc = T.alloc_buffer((1,), f32, scope="local")
                acc = T.alloc_buffer((DPT,), f32, scope="local")
                part = T.alloc_buffer((1,), f32, scope="local")
                dots = T.alloc_buffer((U,), f32, scope="local")
                kvec = T.alloc_buffer((U,), f32, scope="local")
                pv = T.alloc_buffer((NU,), f32, scope="local")
                comb = T.alloc_buffer((G * D,), f32, scope="shared")
                kb = T.alloc_buffer((1,), "int32", scope="local")
                n: T.let = T.truncdiv(row, HQ * s)    # all non-negative: plain division, no floor fix-ups
                h: T.let = T.truncmod(T.truncdiv(row, s), HQ)
                i: T.let = T.truncmod(row, s)
                kv: T.let = T.truncdiv(h, REP)
                nv: T.let = T.Cast("int32", NV[0])
                kb[0] = nv
                if CAUSAL:
                    if BOTTOM:
                        kb[0] = T.min(nv, i + nv - s + 1)
                    else:
                        kb[0] = T.min(nv, i + 1)
                kmax: T.let = T.max(T.min(kb[0], L), 0)
                for u in T.unroll(DPT):
                    if t + u * THREADS < D:
                        qs[t + u * THREADS] = Q[n, h, i, t + u * THREADS] * T.float32(SCALE)
                    acc[u] = T.float32(0)
                m[0] = T.float32(NEG_INF)
                lsum[0] = T.float32(0)
                T.tvm_storage_sync("shared")
                for c in T.serial((kmax + THREADS - 1) // THREADS):
                    j: T.let = c * THREADS + t
                    sc[0] = T.float32(NEG_INF)
                    if j < kmax:
                        for r in T.unroll(U):
                            dots[r] = T.float32(0)
                        for e in T.unroll(D // U):   # the row in 16-byte loads, all issued up front
                            if U == 4:
                                kvec[T.Ramp(0, 1, 4)] = K[n, kv, j, T.Ramp(e * 4, 1, 4)]
                            else:
                                kvec[0] = K[n, kv, j, e]
                            for r in T.unroll(U):
                                dots[r] = dots[r] + qs[e * U + r] * kvec[r]
                        sc[0] = dots[0]
                        for r in T.unroll(U - 1):
                            sc[0] = sc[0] + dots[r + 1]
                    # block max of the chunk's scores
                    mc[0] = sc[0]
                    for sh in T.unroll(5):
                        mc[0] = T.max(mc[0], T.call_pure_extern(f32, "__shfl_xor_sync", T.uint32(0xFFFFFFFF),
                                                                mc[0], 16 >> sh, 32))
                    if t % 32 == 0:
                        red[t // 32] = mc[0]
                    T.tvm_storage_sync("shared")
                    mc[0] = red[0]
                    for w in T.unroll(WARPS - 1):
                        mc[0] = T.max(mc[0], red[w + 1])
                    m_new: T.let = T.max(m[0], mc[0])
                    p: T.let = T.if_then_else(j < kmax, T.exp(sc[0] - m_new), T.float32(0))
                    ps[t] = p
                    # block sum of the chunk's probabilities
                    part[0] = p
                    for sh in T.unroll(5):
                        part[0] = part[0] + T.call_pure_extern(f32, "__shfl_xor_sync", T.uint32(0xFFFFFFFF),
                                                               part[0], 16 >> sh, 32)
                    T.tvm_storage_sync("shared")   # everyone has read red (the max) before it is reused
                    if t % 32 == 0:
                        red[t // 32] = part[0]
                    T.tvm_storage_sync("shared")
                    alpha: T.let = T.exp(m[0] - m_new)
                    part[0] = red[0]
                    for w in T.unroll(WARPS - 1):
                        part[0] = part[0] + red[w + 1]
                    lsum[0] = lsum[0] * alpha + part[0]
                    m[0] = m_new
                    n_keys: T.let = T.min(kmax - c * THREADS, THREADS)
                    # output columns: thread t takes column t % D of the keys t // D, t // D + G, ...
                    # (NU independent partial sums: NU value loads in flight per thread)
                    for u in T.unroll(DPT):
                        if t < G * D and T.truncmod(t, D) + u * THREADS < D:
                            mine: T.let = T.truncdiv(n_keys - T.truncdiv(t, D) + G - 1, G)
                            for r in T.unroll(NU):
                                pv[r] = T.float32(0)
                            for jj in T.serial(T.truncdiv(mine + NU - 1, NU)):
                                for r in T.unroll(NU):   # branch-free, so the NU loads issue back to back:
                                    # past the last key, re-read a filled row and weigh it 0 (never NaN)
                                    key: T.let = T.min(T.truncdiv(t, D) + (jj * NU + r) * G, n_keys - 1)
                                    wt: T.let = T.if_then_else(jj * NU + r < mine, ps[key], T.float32(0))
                                    pv[r] = pv[r] + wt * V[n, kv, c * THREADS + key, T.truncmod(t, D) + u * THREADS]
                            for r in T.unroll(NU - 1):
                                pv[0] = pv[0] + pv[r + 1]
                            acc[u] = acc[u] * alpha + pv[0]
                    T.tvm_storage_sync("shared")   # ps and red are rewritten by the next chunk
                if G > 1:   # the groups' partial outputs summed once, at the end
                    if t < G * D:
                        comb[t] = acc[0]
                    T.tvm_storage_sync("shared")
                    if t < D:
                        part[0] = comb[t]
                        for g in T.unroll(G - 1):
                            part[0] = part[0] + comb[t + (g + 1) * D]
                        O[n, h, i, t] = part[0] / lsum[0]
                else:
                    for u in T.unroll(DPT):
                        if t + u * THREADS < D:
                            O[n, h, i, t + u * THREADS] = acc[u] / lsum[0]

    return main
