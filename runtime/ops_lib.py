"""The compiled ops library at run time (codegen/cpu/ops.py builds it): attention, RoPE and SwiGLU kernels
with the interface of runtime/fused.py, over numpy arrays passed through DLPack."""
from __future__ import annotations

import numpy as np

from .tvm_libs import ensure_tvm_runtime, tvm_ffi

PARALLEL_WORK = 1 << 16  # query rows x keys x heads above which attention splits heads over the thread pool


def _inner_contiguous(a: np.ndarray) -> np.ndarray:
    """TVM gets the strides, but the innermost one must be 1 (and float32)."""
    if a.dtype != np.float32 or (a.ndim and a.strides[-1] != 4):
        return np.ascontiguousarray(a, np.float32)
    return a


class CompiledOps:
    def __init__(self, path, tvm_runtime: str | None = None):
        ensure_tvm_runtime(tvm_runtime)
        mod = tvm_ffi().load_module(str(path))
        self._attention, self._attention_par = mod["attention"], mod["attention_parallel"]
        self._rope, self._swiglu = mod["rope"], mod["swiglu"]
        self._dl = tvm_ffi().from_dlpack

    def kernels(self) -> dict:
        return {"attention": self.attention, "rope": self.rope, "swiglu": self.swiglu}

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
