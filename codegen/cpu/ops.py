"""The ops library: TVM-generated entry points over the C kernels of ops_kernels.c (attention, RoPE, SwiGLU, the
fused RoPE + KV-cache append + attention block, and the float linear layer of a decode step).
Shapes are symbolic and inputs may be strided views (their DLPack strides become TIR variables), so one
library per ISA and thread count serves every model. Cached on disk like the LUT libraries."""
from __future__ import annotations

from pathlib import Path

from ...runtime.ops_lib import MAX_HEAD_DIM
from .build import _key, cache_dir, checked_tasks, export, refused

SOURCE = Path(__file__).with_name("ops_kernels.c")
PREFILL_ROWS = 16  # query rows from which the attention block runs its prefill kernel (blocked queries and keys)
# steps that always take their C kernel when it is built: a float linear layer too, so that a decode step's parallel
# work all goes through TVM's thread pool (BLAS threads spinning beside the pool's starve it on a 2-vCPU host)
OPS_LIBRARY_STEPS = ("rope_kv_attention", "linear", "linear_f16")
FUNCTIONS = ("attention", "attention_parallel", "rope", "swiglu", "rope_kv_attention", "rope_kv_attention_parallel",
             "linear", "linear_f16")
LIMITS = "arguments outside its limits"
ATTENTION_REFUSED = {name: refused(name, f"a head dimension above {MAX_HEAD_DIM} or odd") for name in
                     ("lutc_rope_kv_attention_f32", "lutc_rope_kv_attention_prefill_f32")}
ATTENTION_REFUSED["lutc_attention_f32"] = refused("lutc_attention_f32")


def _functions(threads: int) -> dict:
    from ..tvmscript import T

    tasks = checked_tasks()

    def call(t, name, per, count, *args):
        """C kernel ``name`` on task ``t``'s range of ``count`` heads (``per`` each)."""
        return T.call_extern("int32", name, *args, T.min(t * per, count), T.min(t * per + per, count))

    def attention_fn(parallel: int):
        @T.prim_func
        def attention(q: T.handle, k: T.handle, v: T.handle, o: T.handle, scale: T.float32, causal: T.int64,
                      off: T.int64):
            b, hq, hk, l, s, d = T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
            q0, q1, q2, k0, k1, k2, v0, v1, v2 = (T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64(),
                                                  T.int64(), T.int64(), T.int64())
            Q = T.match_buffer(q, (b, hq, l, d), "float32", strides=(q0, q1, q2, T.int64(1)))
            K = T.match_buffer(k, (b, hk, s, d), "float32", strides=(k0, k1, k2, T.int64(1)))
            V = T.match_buffer(v, (b, hk, s, d), "float32", strides=(v0, v1, v2, T.int64(1)))
            O = T.match_buffer(o, (b, hq, l, d), "float32")
            per = (hq + parallel - 1) // parallel
            tasks(parallel, call, ("lutc_attention_f32", per, hq, Q.data, q0, q1, q2, K.data, k0, k1, k2, V.data, v0,
                                   v1, v2, O.data, b, hq, hk, l, s, d, scale, causal, off),
                  ATTENTION_REFUSED["lutc_attention_f32"])
        return attention

    def args(Q, K, V, CS, SN, KC, VC, O, b, hq, hk, l, d, c, past, scale, causal, off):
        """The attention block kernels' arguments before their head range (ops_kernels.c)."""
        return (Q.data, Q.strides[0], Q.strides[1], K.data, K.strides[0], K.strides[1], V.data, V.strides[0],
                V.strides[1], CS.data, SN.data, KC.data, VC.data, O.data, b, hq, hk, l, d, c, past, scale, causal, off)

    def block_fn(parallel: int):
        @T.prim_func
        def rope_kv_attention(q: T.handle, k: T.handle, v: T.handle, cs: T.handle, sn: T.handle, kc: T.handle,
                              vc: T.handle, o: T.handle, hq: T.int64, past: T.int64, scale: T.float32,
                              causal: T.int64, off: T.int64):
            b, l, nq, nk, hk, c, d = T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
            qb, qs, kb, ks, vb, vs = T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
            Q = T.match_buffer(q, (b, l, nq), "float32", strides=(qb, qs, T.int64(1)))
            K = T.match_buffer(k, (b, l, nk), "float32", strides=(kb, ks, T.int64(1)))
            V = T.match_buffer(v, (b, l, nk), "float32", strides=(vb, vs, T.int64(1)))
            CS = T.match_buffer(cs, (l, d), "float32")
            SN = T.match_buffer(sn, (l, d), "float32")
            KC = T.match_buffer(kc, (b, hk, c, d), "float32")
            VC = T.match_buffer(vc, (b, hk, c, d), "float32")
            O = T.match_buffer(o, (b, l, nq), "float32")
            per, per_q = (hk + parallel - 1) // parallel, (hq + parallel - 1) // parallel
            block = args(Q, K, V, CS, SN, KC, VC, O, b, hq, hk, l, d, c, past, scale, causal, off)
            if l >= PREFILL_ROWS:  # query heads over the tasks: a model's few KV heads split unevenly
                tasks(parallel, call, ("lutc_rope_kv_attention_prefill_f32", per_q, hq, *block),
                      ATTENTION_REFUSED["lutc_rope_kv_attention_prefill_f32"])
            else:
                tasks(parallel, call, ("lutc_rope_kv_attention_f32", per, hk, *block),
                      ATTENTION_REFUSED["lutc_rope_kv_attention_f32"])
        return rope_kv_attention

    @T.prim_func
    def rope(x: T.handle, c: T.handle, s: T.handle, o: T.handle):
        b, h, l, d, x0, x1, x2 = T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
        X = T.match_buffer(x, (b, h, l, d), "float32", strides=(x0, x1, x2, T.int64(1)))
        C = T.match_buffer(c, (l, d), "float32")
        S = T.match_buffer(s, (l, d), "float32")
        O = T.match_buffer(o, (b, h, l, d), "float32")
        assert T.call_extern("int32", "lutc_rope_f32", X.data, x0, x1, x2, C.data, S.data, O.data, b, h, l,
                             d) == 0, refused("lutc_rope_f32", LIMITS)

    @T.prim_func
    def swiglu(g: T.handle, u: T.handle, o: T.handle):
        n = T.int64()
        G = T.match_buffer(g, (n,), "float32")
        U = T.match_buffer(u, (n,), "float32")
        O = T.match_buffer(o, (n,), "float32")
        assert T.call_extern("int32", "lutc_swiglu_f32", G.data, U.data, O.data, n) == 0, refused(
            "lutc_swiglu_f32", LIMITS)

    def linear_fn(wdt: str):
        name = f"lutc_linear_{'f32' if wdt == 'float32' else 'f16'}"

        @T.prim_func
        def linear(x: T.handle, w: T.handle, y: T.handle):
            m, n, k, xs = T.int64(), T.int64(), T.int64(), T.int64()
            X = T.match_buffer(x, (m, k), "float32", strides=(xs, T.int64(1)))
            W = T.match_buffer(w, (n, k), wdt)
            Y = T.match_buffer(y, (m, n), "float32")
            per = (n + 4 * threads - 1) // (4 * threads) * 4  # four weight rows per micro-kernel step
            tasks(threads, call, (name, per, n, X.data, xs, W.data, Y.data, m, n, k),
                  refused(name, LIMITS if wdt == "float32" else "no memory for its scratch rows"))
        return linear

    return {"linear": linear_fn("float32").with_attr("global_symbol", "linear"),
            "linear_f16": linear_fn("float16").with_attr("global_symbol", "linear_f16"),
            "attention": attention_fn(1).with_attr("global_symbol", "attention"),
            "attention_parallel": attention_fn(threads).with_attr("global_symbol", "attention_parallel"),
            "rope": rope.with_attr("global_symbol", "rope"), "swiglu": swiglu.with_attr("global_symbol", "swiglu"),
            "rope_kv_attention": block_fn(1).with_attr("global_symbol", "rope_kv_attention"),
            "rope_kv_attention_parallel": block_fn(threads).with_attr("global_symbol", "rope_kv_attention_parallel")}


def build_ops_library(isa: str, threads: int) -> Path:
    params = {"isa": isa, "threads": threads}
    lib = cache_dir() / f"lutc_ops_{_key(params, SOURCE, Path(__file__))}.so"
    return lib if lib.exists() else export(lambda: _functions(threads), isa, SOURCE, lib)
