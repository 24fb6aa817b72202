"""The compiled ops library at run time (codegen/cpu/ops.py builds it): attention, RoPE, SwiGLU, the fused
RoPE + KV-cache append + attention block and a float linear layer, with the interface of runtime/fused.py and
runtime/kernels.py, over numpy arrays passed through DLPack."""
from __future__ import annotations

import numpy as np

from .fused import block_inputs
from .kernels import KERNELS
from .lut import aligned_empty
from .tvm_libs import ensure_tvm_runtime, tvm_ffi

PARALLEL_WORK = 1 << 16  # query rows x keys x heads above which attention splits heads over the thread pool
# cached K/V bytes from which the attention block splits KV heads over the pool even for one query row: a decode
# step reads the cache cold, and two threads keep twice the loads in flight (SmolLM2 W2 decode, 160 positions,
# 245 kB per layer: 175 -> 184 tok/s, one process, interleaved, 5 rounds)
PARALLEL_KV_BYTES = 64 << 10
MAX_HEAD_DIM = 512  # ops_kernels.c MAX_HEAD_DIM: the fused attention block's scratch row
# rows up to which a float linear layer runs the library's kernel (weights streamed once, four rows at a time) rather
# than BLAS: a decode step's lm_head. SmolLM2's (49152 x 576), one thread: 12.6 / 17 / 33 ms at 1 / 4 / 16 rows vs
# OpenBLAS 11.7 / 44 / 54 ms; above, BLAS's blocked GEMM wins.
LINEAR_ROWS = 16
# float16 weights: the library's kernel up to this many rows (a prompt's lm_head rows too), where the other way
# widens the whole weight (SmolLM2's 28 M entries: tens of ms) before its BLAS call
LINEAR_F16_ROWS = 256


def _inner_contiguous(a: np.ndarray) -> np.ndarray:
    """TVM gets the strides, but the innermost one must be 1 (and float32)."""
    if a.dtype != np.float32 or (a.ndim and a.strides[-1] != 4):
        return np.ascontiguousarray(a, np.float32)
    return a


def _block_shapes(attrs, q, k, v, cos, sin, past_k, past_v) -> tuple[int, int, int, int, int]:
    hq, hk, d = attrs["heads"], attrs["kv_heads"], attrs["head_dim"]
    b, L = q.shape[:2]
    if q.shape != (b, L, hq * d) or k.shape != (b, L, hk * d) or v.shape != k.shape or cos.shape != (L, d) \
            or sin.shape != cos.shape or past_k.shape[:2] != (b, hk) or past_k.shape[3] != d \
            or past_v.shape != past_k.shape:
        raise ValueError(f"rope_kv_attention: q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)}, cos "
                         f"{list(cos.shape)}, past {list(past_k.shape)} do not fit {hq}/{hk} heads of {d}")
    return hq, hk, d, b, L


def _block_fits(d: int) -> bool:
    """Whether the C block takes heads of ``d`` (its scratch rows; beyond, it would return an error code unread)."""
    return d <= MAX_HEAD_DIM and d % 2 == 0


def _parallel_block(L: int, p: int, hq: int, hk: int, d: int) -> bool:
    """Whether the attention block of ``L`` new rows over ``p`` cached positions splits heads over the pool."""
    return L * (p + L) * hq > PARALLEL_WORK or 8 * hk * (p + L) * d >= PARALLEL_KV_BYTES


class CompiledOps:
    def __init__(self, path, tvm_runtime: str | None = None):
        ensure_tvm_runtime(tvm_runtime)
        mod = tvm_ffi().load_module(str(path))
        self._attention, self._attention_par = mod["attention"], mod["attention_parallel"]
        self._rope, self._swiglu = mod["rope"], mod["swiglu"]
        self._block, self._block_par = mod["rope_kv_attention"], mod["rope_kv_attention_parallel"]
        # libraries of artifacts saved before the linear kernel existed: their float linear layers stay on BLAS
        self._linear = mod["linear"] if mod.implements_function("linear") else None
        self._linear_f16 = mod["linear_f16"] if mod.implements_function("linear_f16") else None
        self._dl = tvm_ffi().from_dlpack

    def kernels(self, compiled_ops: bool = True) -> dict:
        """Step kind -> kernel: the fused attention block and the float linear layer always, attention/RoPE/SwiGLU
        when ``compiled_ops``."""
        block = {"rope_kv_attention": self.rope_kv_attention, **({"linear": self.linear} if self._linear else {}),
                 **({"linear_f16": self.linear_f16} if self._linear_f16 else {})}
        return {"attention": self.attention, "rope": self.rope, "swiglu": self.swiglu, **block} if compiled_ops else block

    BOUND = ("rope_kv_attention",)   # the step kinds with a bound form (``bind_<kind>``)

    def binders(self) -> dict:
        """Step kind -> its bound form for a replayed decode step (runtime/replay.py)."""
        return {kind: getattr(self, f"bind_{kind}") for kind in self.BOUND}

    def rope_kv_attention(self, attrs, ins, kv):
        """runtime/fused.py rope_kv_attention in one C call (codegen/cpu/ops_kernels.c)."""
        q, k, v, cos, sin, past_k, past_v = block_inputs(attrs, ins)
        hq, hk, d, b, L = _block_shapes(attrs, q, k, v, cos, sin, past_k, past_v)
        if not _block_fits(d):
            from .fused import rope_kv_attention

            return rope_kv_attention(attrs, ins, kv)
        q, k, v = (_inner_contiguous(a) for a in (q, k, v))
        cos, sin = np.ascontiguousarray(cos, np.float32), np.ascontiguousarray(sin, np.float32)
        kbuf, p = kv.reserve(past_k, L)
        vbuf, _ = kv.reserve(past_v, L)
        out = np.empty((b, L, hq * d), np.float32)
        off = p if attrs.get("causal_align") == "bottom_right" else 0
        fn = self._block_par if _parallel_block(L, p, hq, hk, d) else self._block
        # numpy arrays go in as they are: tvm_ffi takes DLPack exporters (3-4 us less than 8 from_dlpack calls)
        fn(q, k, v, cos, sin, kbuf, vbuf, out, hq, p, float(attrs["scale"]), int(attrs.get("causal", False)), off)
        return [kbuf[:, :, :p + L], vbuf[:, :, :p + L], out]

    def bind_rope_kv_attention(self, attrs, ins, kv, cursor):
        """The block as a call without arguments over arrays fixed now: q/k/v, the RoPE rows and the cache
        buffers the pasts are the filled views of; the call appends at ``cursor.p`` (cache positions before the
        step). Returns it and the step's outputs [k cache buffer, v cache buffer, attention rows]."""
        from .replay import Unbindable

        q, k, v, cos, sin, past_k, past_v = block_inputs(attrs, ins)
        hq, hk, d, b, L = _block_shapes(attrs, q, k, v, cos, sin, past_k, past_v)
        kbuf, vbuf = kv.owner(past_k), kv.owner(past_v)
        if kbuf is None or vbuf is None:
            raise Unbindable("rope_kv_attention: a past is not the filled view of a cache buffer")
        if not _block_fits(d) or any(a is not _inner_contiguous(a) for a in (q, k, v)) \
                or any(not a.flags.c_contiguous or a.dtype != np.float32 for a in (cos, sin)):
            raise Unbindable("rope_kv_attention: its inputs are not in the C kernel's layout")
        out = aligned_empty((b, L, hq * d), np.float32)
        dl = self._dl
        args = tuple(dl(a) for a in (q, k, v, cos, sin, kbuf, vbuf, out))
        block, block_par = self._block, self._block_par
        scale, causal, bottom = float(attrs["scale"]), int(attrs.get("causal", False)), attrs.get("causal_align") == "bottom_right"

        def call():
            p = cursor.p
            fn = block_par if _parallel_block(L, p, hq, hk, d) else block
            fn(*args, hq, p, scale, causal, p if bottom else 0)
        return call, [kbuf, vbuf, out]

    def linear(self, attrs, ins, dim):
        """``x @ W.T (+ b)`` for a float32 weight ``W [N, K]``: through the library's kernel (threads from TVM's pool)
        for up to LINEAR_ROWS rows, else runtime/kernels.py's BLAS call."""
        return self._linear_step(self._linear, "linear", np.float32, LINEAR_ROWS, attrs, ins, dim)

    def linear_f16(self, attrs, ins, dim):
        """``x @ W.T (+ b)`` for a float16 weight ``W [N, K]`` (float32 in and out): through the library's kernel for
        up to LINEAR_F16_ROWS rows (the weights widened four rows at a time), else runtime/kernels.py's (a widened
        copy of the weights and one BLAS call)."""
        return self._linear_step(self._linear_f16, "linear_f16", np.float16, LINEAR_F16_ROWS, attrs, ins, dim)

    def _linear_step(self, fn, kind, wdt, max_rows, attrs, ins, dim):
        x, w = ins[0], ins[1]
        rows = x.size // x.shape[-1] if x.ndim and x.shape[-1] else 0
        if not 0 < rows <= max_rows or x.dtype != np.float32 or w.dtype != wdt or w.ndim != 2 \
                or x.shape[-1] != w.shape[1] or not w.flags.c_contiguous:
            return KERNELS[kind](attrs, ins, dim)
        x2 = _inner_contiguous(x.reshape(rows, x.shape[-1]))
        y = np.empty((rows, w.shape[0]), np.float32)
        fn(self._dl(x2), self._dl(w), self._dl(y))
        y = y.reshape(x.shape[:-1] + (w.shape[0],))
        return y + ins[2] if len(ins) > 2 else y

    def attention(self, attrs, ins, dim):
        q, k, v = (_inner_contiguous(a) for a in ins)
        b, hq, l, d = q.shape
        s = k.shape[2]
        if k.shape[0] != b or hq % k.shape[1] or v.shape != k.shape or k.shape[3] != d:
            raise ValueError(f"attention: q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)} do not fit")
        out = np.empty((b, hq, l, d), np.float32)
        scale = attrs.get("scale") or 1 / np.sqrt(d)
        causal = bool(attrs.get("causal"))
        off = s - l if attrs.get("causal_align") == "bottom_right" else 0
        fn = self._attention_par if l * s * hq > PARALLEL_WORK else self._attention
        fn(self._dl(q), self._dl(k), self._dl(v), self._dl(out), float(scale), int(causal), int(off))
        return out

    def rope(self, attrs, ins, dim):
        x, cos, sin = ins
        if x.ndim != 4 or cos.shape != x.shape[-2:] or sin.shape != cos.shape:
            from .fused import rope

            return rope(attrs, ins, dim)  # broadcast forms other than [L, D] tables: the numpy kernel
        x = _inner_contiguous(x)
        cos, sin = np.ascontiguousarray(cos, np.float32), np.ascontiguousarray(sin, np.float32)
        out = np.empty(x.shape, np.float32)
        self._rope(self._dl(x), self._dl(cos), self._dl(sin), self._dl(out))
        return out

    def swiglu(self, attrs, ins, dim):
        gate, up = ins
        if gate.shape != up.shape:
            from .fused import swiglu

            return swiglu(attrs, ins, dim)
        g, u = np.ascontiguousarray(gate, np.float32), np.ascontiguousarray(up, np.float32)
        out = np.empty(g.shape, np.float32)
        self._swiglu(self._dl(g.reshape(-1)), self._dl(u.reshape(-1)), self._dl(out.reshape(-1)))
        return out
