"""The CPU LUT matmul as a Python callable: checks its input, owns aligned buffers, calls the TVM library."""
from __future__ import annotations

import numpy as np

from ...passes.quantize.weight import QuantizedWeight
from .build import build_library
from .isa import best_isa, supported
from .layout import TILE, pack_cpu

ALIGN = 64  # TVM assumes 64-byte aligned buffers and emits aligned vector loads


def aligned_empty(shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n + ALIGN, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + n].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def is_aligned(a: np.ndarray) -> bool:
    return a.ctypes.data % ALIGN == 0 and a.flags.c_contiguous


class LutMatmul:
    """``y = x @ W.T`` for a quantized ``W[N, K]``: x is float [..., K] (numpy or torch), y float32 [..., N]."""

    def __init__(self, qweight: QuantizedWeight, threads: int | None = None, isa: str | None = None):
        if not isinstance(qweight, QuantizedWeight):
            raise TypeError(f"build_lut_matmul takes a lutc.QuantizedWeight, got {type(qweight).__name__}")
        if qweight.config.table_dtype != "int8":
            raise NotImplementedError("the CPU kernels use int8 tables; float tables run on target='reference'")
        self.isa = isa or best_isa()
        if not supported(self.isa):
            raise RuntimeError(f"this CPU cannot run the {self.isa} kernels")
        self.threads = threads or _default_threads()
        cw = pack_cpu(qweight)
        self.n, self.k, self.bits = cw.n, cw.k, cw.bits
        self.weights = [aligned_copy(cw.w), aligned_copy(cw.scales), aligned_copy(cw.zeros)]
        self.runs, self.groups, self.n_pad = cw.w.shape[1], cw.scales.shape[1], cw.tiles * TILE
        self.params = {"n_pad": self.n_pad, "k": cw.k, "k_pad": cw.k_pad, "runs": self.runs, "groups": self.groups,
                       "bits": cw.bits, "pairs": cw.w.shape[2], "threads": self.threads, "isa": self.isa}
        self.library = build_library(self.params)
        self._fn = _load(self.library)

    @property
    def weight_bytes(self) -> int:
        return sum(w.nbytes for w in self.weights)

    def __call__(self, x, out: np.ndarray | None = None) -> np.ndarray:
        x = _as_numpy(x)
        if x.dtype.kind != "f":
            raise TypeError(f"the LUT matmul takes float activations, got {x.dtype}")
        if x.ndim < 1 or x.shape[-1] != self.k:
            raise ValueError(f"activations must be [..., {self.k}], got shape {list(x.shape)}")
        lead = x.shape[:-1]
        m = int(np.prod(lead, dtype=np.int64))
        x2 = x.reshape(m, self.k)
        if x2.dtype != np.float32 or not is_aligned(x2):
            x2 = aligned_copy(x2.astype(np.float32, copy=False))
        tables = aligned_empty((m, self.runs, 16), np.int8)
        tscale, xsum = aligned_empty((m, self.groups), np.float32), aligned_empty((m, self.groups), np.float32)
        y = aligned_empty((m, self.n_pad), np.float32)
        if m:
            self._fn(*(_dl(a) for a in (x2, tables, tscale, xsum, *self.weights, y)))
        res = y[:, :self.n].reshape(lead + (self.n,))
        if out is not None:
            out[...] = res
            return out
        return res


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def _dl(a: np.ndarray):
    import tvm_ffi

    return tvm_ffi.from_dlpack(a)


def _load(path):
    import tvm_ffi

    from ...runtime.tvm_libs import ensure_tvm_runtime

    ensure_tvm_runtime()
    return tvm_ffi.load_module(str(path))["main"]


def _default_threads() -> int:
    import os

    return int(os.environ.get("TVM_NUM_THREADS", 0)) or (os.cpu_count() or 1)
