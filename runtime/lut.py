"""The CPU LUT matmul at run time: a TVM-built library (codegen/cpu/build.py) over packed weights, with the
input checks and 64-byte aligned buffers TVM's code assumes. numpy and tvm_ffi only."""
from __future__ import annotations

import copy
import functools
import os
from typing import Callable

import numpy as np

from .isa import kernel_usable
from .tvm_libs import ensure_tvm_runtime, tvm_ffi

ALIGN = 64  # TVM assumes 64-byte aligned buffers and emits aligned vector loads
DIRECT_ROWS = 32  # inputs with more rows than this skip the copy into the aligned buffer when they can
TILE = 64
LAYOUTS = ("x86-g4-n64-v1", "x86-g4-n64-v2")  # codegen/cpu/layout.py: v1 in older artifacts
TABLE_DTYPES = {"int8": np.int8, "f32": np.float32}  # params["table"] -> dtype of the tables buffer


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


KERNEL_NEEDS = {"amx": "Intel AMX tile instructions", "vnni": "AVX-512 VNNI instructions", "madd": "AVX2"}


def missing_kernels(params: dict) -> list[str]:
    """The kernels a library's schedule runs for some row bucket (codegen/cpu/schedule.py) that this host cannot."""
    return sorted(k for k in {b.get("kernel", "lut") for b in params.get("schedule") or ()} if not kernel_usable(k))


class LutKernel:
    """``y = x @ W.T`` (after an optional RMSNorm of x) for packed weights ``w, scales, zeros`` in the layout
    ``params["layout"]`` (``x86-g4-n64-v2``, codegen/cpu/layout.py; v1 in older artifacts, with their libraries);
    ``params`` are the ones the library was built for (codegen/cpu/build.py): int8 or float32 tables
    (``params["table"]``, int8 when absent). ``entry`` "tune" calls the tuning entry point, which takes
    the schedule knobs of ``self.knobs`` after the buffers (codegen/cpu/tune.py)."""

    def __init__(self, library, params: dict, w: np.ndarray, scales: np.ndarray, zeros: np.ndarray,
                 norm_weight: np.ndarray | None = None, tvm_runtime: str | None = None, entry: str = "main"):
        self.library, self.params = str(library), dict(params)
        table = params.get("table", "int8")
        if table not in TABLE_DTYPES:
            raise ValueError(f"LUT kernel tables: expected one of {sorted(TABLE_DTYPES)}, got {table!r}")
        self.table_dtype = TABLE_DTYPES[table]
        missing = missing_kernels(params)
        if missing:
            raise RuntimeError(f"this LUT kernel library runs {' and '.join(KERNEL_NEEDS[k] for k in missing)} for "
                               "some row counts (its schedule), which this CPU or OS does not offer: rebuild it here "
                               "(the default schedule takes only kernels the host runs)")
        self.knobs: tuple[int, ...] = ()
        self.n, self.k, self.bits = params["n"], params["k"], params["bits"]
        self.runs, self.groups, self.n_pad = params["runs"], params["groups"], params["n_pad"]
        layout = params.get("layout")
        if layout not in LAYOUTS:
            raise ValueError(f"LUT kernel weights: layout {layout!r} is not one this runtime reads {LAYOUTS}")
        tiles = self.n_pad // TILE
        wshape = (tiles, self.runs, params["pairs"], TILE) if layout == LAYOUTS[0] else (tiles, params["tile_bytes"])
        # with real-valued zero points the scales array holds their offsets after the scales (codegen/cpu/layout.py)
        srows = 2 * tiles if params.get("offsets") else tiles
        want = {"w": wshape, "scales": (srows, self.groups, TILE), "zeros": (tiles, self.groups, TILE)}
        for name, a, dt in (("w", w, np.uint8), ("scales", scales, np.uint16), ("zeros", zeros, np.int8)):
            shape = want[name]
            if a.shape != shape or a.dtype != dt:
                raise ValueError(f"LUT kernel {name}: expected {np.dtype(dt)} {list(shape)}, got {a.dtype} {list(a.shape)}")
        self.weights = [a if is_aligned(a) else aligned_copy(a) for a in (w, scales, zeros)]
        self.prologue = params.get("prologue", "none")
        self.fused_norm = self.prologue == "rms_norm"
        if self.fused_norm != (norm_weight is not None):
            raise ValueError("a library with an rms_norm prologue needs the norm weight, and only such a library")
        # a SwiGLU prologue reads [gate | up] rows and multiplies silu(gate) * up before building tables
        self.k_in = 2 * self.k if self.prologue == "swiglu" else self.k
        self.norm = None if norm_weight is None else aligned_copy(np.asarray(norm_weight, np.float32).reshape(self.k))
        self._fn = load_library(self.library, tvm_runtime, entry)
        self._dl_weights = [_dl(a) for a in self.weights]
        scratch = [_dl(aligned_empty((self.k,), np.float32))] if self.prologue != "none" else []
        self._dl_norm = ([] if self.norm is None else [_dl(self.norm)]) + scratch
        self._work: dict[int, tuple] = {}

    @staticmethod
    def from_spec(spec: dict, weights, library, tvm_runtime: str | None = None) -> "LutKernel":
        """From a program's ``luts`` entry: library params, weight keys and the fused norm's weight key."""
        w, s, z = (weights[k] for k in spec["weights"])
        norm = weights[spec["norm"]] if spec.get("norm") else None
        return LutKernel(library, spec["params"], w, s, z, norm, tvm_runtime=tvm_runtime)

    @property
    def weight_bytes(self) -> int:
        return sum(w.nbytes for w in self.weights)

    def clone(self) -> "LutKernel":
        """The same kernel over a private copy of the weights (benchmarks rotate copies to keep them cold)."""
        other = copy.copy(self)
        other.weights = [aligned_copy(w) for w in self.weights]
        other._dl_weights = [_dl(w) for w in other.weights]
        other._work = {}
        return other

    def _buffers(self, m: int) -> list[np.ndarray]:
        """The kernel's work buffers for ``m`` rows, aligned: tables, table scales, xsum, output."""
        return [aligned_empty((m, self.runs, 16), self.table_dtype), aligned_empty((m, self.groups), np.float32),
                aligned_empty((m, self.groups), np.float32), aligned_empty((m, self.n_pad), np.float32)]

    def _workspace(self, m: int):
        """Per row count: the aligned input buffer and the work buffers and their DLPack handles, reused across
        calls."""
        if m not in self._work:
            bufs = [aligned_empty((m, self.k_in), np.float32), *self._buffers(m)]
            self._work[m] = (bufs, [_dl(b) for b in bufs])
        return self._work[m]

    def _rows(self, x, residual) -> tuple[np.ndarray, np.ndarray | None, int, tuple]:
        """Checked ``x`` and ``residual`` as numpy arrays, the row count and the leading dims."""
        if type(x) is not np.ndarray:
            x = as_numpy(x)
        shape = x.shape
        if not shape or shape[-1] != self.k_in:
            raise ValueError(f"activations must be [..., {self.k_in}], got shape {list(shape)}")
        if x.dtype.kind != "f":
            raise TypeError(f"the LUT matmul takes float activations, got {x.dtype}")
        lead = shape[:-1]
        if residual is not None:
            if type(residual) is not np.ndarray:
                residual = as_numpy(residual)
            if residual.shape != lead + (self.n,):
                raise ValueError(f"the residual must be {list(lead + (self.n,))}, got {list(residual.shape)}")
        return x, residual, x.size // self.k_in, lead

    def __call__(self, x, out: np.ndarray | None = None, residual: np.ndarray | None = None) -> np.ndarray:
        """``x @ W.T`` (``residual +`` it when given: a decoder layer's residual connection, added while the result
        leaves the kernel's buffer, so the step needs no add and no copy of its own)."""
        x, residual, m, lead = self._rows(x, residual)
        if m == 0:
            return np.zeros(lead + (self.n,), np.float32)
        bufs, dls = self._workspace(m)
        x2 = x.reshape(m, self.k_in)
        if m > DIRECT_ROWS and x2.dtype == np.float32 and is_aligned(x2):
            xdl = _dl(x2)  # large inputs are passed as they are when TVM can read them
        else:  # small ones are copied into the aligned buffer: cheaper than a DLPack handle, and always safe
            np.copyto(bufs[0], x2, casting="same_kind")
            xdl = dls[0]
        self._fn(xdl, *self._dl_norm, dls[1], dls[2], dls[3], *self._dl_weights, dls[4], *self.knobs)
        res = bufs[4][:, :self.n]
        if residual is not None:
            if out is None:
                return np.add(res, residual.reshape(m, self.n), dtype=np.float32).reshape(residual.shape)
            np.add(res, residual.reshape(m, self.n), out=out.reshape(m, self.n), dtype=np.float32)
            return out
        if out is None:
            return res.reshape(lead + (self.n,)).copy()
        np.copyto(out.reshape(m, self.n), res)
        return out

    def bind(self, x: np.ndarray, residual: np.ndarray | None = None) -> tuple[Callable[[], None], np.ndarray]:
        """``self(x, residual=residual)`` as a call without arguments over arrays fixed now (runtime/replay.py):
        each call reads ``x`` and ``residual`` as they are then and overwrites the returned array. Buffers and
        DLPack handles are made here, once: an aligned float32 ``x`` is read in place, the result of one row
        (or of a multiple of 64 columns) is a view of the kernel's output buffer, not a copy."""
        x, residual, m, lead = self._rows(x, residual)
        if m == 0:
            return _nothing, np.zeros(lead + (self.n,), np.float32)
        work = self._buffers(m)   # its own, not the workspace: a plain call between replays must not move them
        steps = []
        if x.dtype == np.float32 and is_aligned(x):
            xdl = _dl(x.reshape(m, self.k_in))
        else:
            xbuf = aligned_empty(x.shape, np.float32)
            steps.append(functools.partial(np.copyto, xbuf, x, casting="same_kind"))
            xdl = _dl(xbuf.reshape(m, self.k_in))
        tables, sums, scales, out = (_dl(w) for w in work)
        steps.append(functools.partial(self._fn, xdl, *self._dl_norm, tables, sums, scales, *self._dl_weights, out,
                                       *self.knobs))
        res = work[3][:, :self.n].reshape(lead + (self.n,))   # a view: only the first axis is split
        if residual is not None:
            value = aligned_empty(residual.shape, np.float32)
            steps.append(functools.partial(np.add, res, residual, out=value, dtype=np.float32))
        elif m == 1 or self.n == self.n_pad:
            value = res
        else:   # rows of n of n_pad floats: compact, as the kernels that read them want
            value = aligned_empty(res.shape, np.float32)
            steps.append(functools.partial(np.copyto, value, res))
        return _chain(steps), value

def _nothing() -> None:
    pass


def _chain(calls: list[Callable[[], None]]) -> Callable[[], None]:
    """One call that makes ``calls`` in order."""
    if len(calls) == 1:
        return calls[0]
    calls = tuple(calls)

    def run():
        for c in calls:
            c()
    return run


def as_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def _dl(a: np.ndarray):
    return tvm_ffi().from_dlpack(a)


def load_library(path, tvm_runtime: str | None = None, entry: str = "main"):
    """The ``entry`` function of a TVM-built library (libtvm_runtime is loaded first, from ``tvm_runtime`` or
    the installed wheel)."""
    ensure_tvm_runtime(tvm_runtime)
    return tvm_ffi().load_module(str(path))[entry]


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
