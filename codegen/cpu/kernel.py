"""The CPU LUT matmul as a Python callable: checks its input, owns aligned buffers, calls the TVM library."""
from __future__ import annotations

import copy

import numpy as np

from ...passes.quantize.weight import QuantizedWeight
from .build import build_library
from .isa import best_isa, supported
from .layout import TILE, pack_cpu

ALIGN = 64  # TVM assumes 64-byte aligned buffers and emits aligned vector loads
DIRECT_ROWS = 32  # inputs with more rows than this skip the copy into the aligned buffer when they can


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
    return a.flags.c_contiguous and a.__array_interface__["data"][0] % ALIGN == 0


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
        self._dl_weights = [_dl(w) for w in self.weights]
        self._work: dict[int, tuple] = {}

    @property
    def weight_bytes(self) -> int:
        return sum(w.nbytes for w in self.weights)

    def clone(self) -> "LutMatmul":
        """The same kernel over a private copy of the weights (benchmarks rotate copies to keep them cold)."""
        other = copy.copy(self)
        other.weights = [aligned_copy(w) for w in self.weights]
        other._dl_weights = [_dl(w) for w in other.weights]
        other._work = {}
        return other

    def _workspace(self, m: int):
        """Per row count: aligned input/table/output buffers and their DLPack handles, reused across calls."""
        if m not in self._work:
            bufs = [aligned_empty((m, self.k), np.float32), aligned_empty((m, self.runs, 16), np.int8),
                    aligned_empty((m, self.groups), np.float32), aligned_empty((m, self.groups), np.float32),
                    aligned_empty((m, self.n_pad), np.float32)]
            self._work[m] = (bufs, [_dl(b) for b in bufs])
        return self._work[m]

    def __call__(self, x, out: np.ndarray | None = None) -> np.ndarray:
        if type(x) is not np.ndarray:
            x = _as_numpy(x)
        shape = x.shape
        if not shape or shape[-1] != self.k:
            raise ValueError(f"activations must be [..., {self.k}], got shape {list(shape)}")
        if x.dtype != np.float32 and x.dtype.kind != "f":
            raise TypeError(f"the LUT matmul takes float activations, got {x.dtype}")
        m = x.size // self.k
        lead = shape[:-1]
        if m == 0:
            return np.zeros(lead + (self.n,), np.float32)
        bufs, dls = self._workspace(m)
        x2 = x.reshape(m, self.k)
        if m > DIRECT_ROWS and x2.dtype == np.float32 and is_aligned(x2):
            xdl = _dl(x2)  # large inputs are passed as they are when TVM can read them
        else:  # small ones are copied into the aligned buffer: cheaper than a DLPack handle, and always safe
            np.copyto(bufs[0], x2, casting="same_kind")
            xdl = dls[0]
        self._fn(xdl, dls[1], dls[2], dls[3], *self._dl_weights, dls[4])
        res = bufs[4][:, :self.n]
        if out is None:
            return res.reshape(lead + (self.n,)).copy()
        np.copyto(out.reshape(m, self.n), res)
        return out


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

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
